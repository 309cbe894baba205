"""The one configuration object: profiles, and which values the lab's defaults read."""

import pytest

from cnnlab import attribution
from cnnlab.config import LabConfig, get_config, or_config, using


def test_defaults_follow_the_profile_of_the_environment(monkeypatch):
    monkeypatch.setenv("CNNLAB_PROFILE", "full")
    assert or_config(None, "ig_steps") == LabConfig().ig_steps == 32
    monkeypatch.setenv("CNNLAB_PROFILE", "quick")
    assert or_config(None, "ig_steps") == get_config("quick").ig_steps
    assert or_config(7, "ig_steps") == 7  # a value given is a value kept


def test_using_makes_a_config_the_defaults_and_restores_after_an_error(monkeypatch):
    monkeypatch.setenv("CNNLAB_PROFILE", "full")
    outer, inner = get_config("quick", ig_steps=5), get_config("full", ig_steps=9)
    with pytest.raises(RuntimeError), using(outer):
        assert or_config(None, "ig_steps") == 5
        with using(inner):
            assert or_config(None, "ig_steps") == 9
        assert or_config(None, "ig_steps") == 5
        raise RuntimeError("interrupted")
    assert or_config(None, "ig_steps") == 32


def test_a_function_called_under_using_reads_its_values(images):
    """The steps a function is called with show in its teaching error's advice."""
    with using(get_config("full", ig_steps=11)), \
            pytest.raises(ValueError, match="the lab uses 11"):
        attribution.integrated_gradients(attribution_model(), images, 0, steps=1)


def attribution_model():
    from torch import nn
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))


def test_using_takes_a_lab_config_only():
    with pytest.raises(TypeError, match="using\\(\\) takes a LabConfig"), using("quick"):
        pass
