"""The grader's memo (cnnlab/_memo.py): a result saved by the solution's run is read back
only by a call whose every input is the same, and equals what that call computes.

A counting function shows when the computation really ran; the lab's own functions
(features, top-K occlusion, t-SNE, evaluation, the unit views) are recorded, read back and
compared with a fresh computation."""

import numpy as np
import pytest
import torch
from torch import nn

import cnnlab
from cnnlab import _memo
from cnnlab.config import using
from cnnlab.data import Split

CALLS = []


@_memo.remembered
def counted(model, images, units, scale=1.0):
    """A pure function of its inputs, the configuration and the random state."""
    CALLS.append(1)
    with torch.no_grad():
        out = model(cnnlab.normalize(images))[:, list(units)] * scale
    return out.numpy() + torch.rand(1).item() * cnnlab.get_config().top_k


def read_back(monkeypatch, folder):
    monkeypatch.delenv(_memo.RECORD_ENV, raising=False)
    monkeypatch.setenv(_memo.READ_ENV, str(folder))


@pytest.fixture
def memo(monkeypatch, tmp_path):
    """Recording into a fresh folder; the test switches to reading with read_back()."""
    CALLS.clear()
    monkeypatch.delenv(_memo.READ_ENV, raising=False)
    monkeypatch.setenv(_memo.RECORD_ENV, str(tmp_path))
    return tmp_path


def test_same_inputs_read_the_saved_result_and_leave_the_random_state_as_computing_would(
        memo, monkeypatch, model, images):
    torch.manual_seed(5)
    first = counted(model.eval(), images, [1, 2])
    after = torch.rand(3)
    read_back(monkeypatch, memo)
    torch.manual_seed(5)
    again = counted(model, images, [1, 2])
    assert len(CALLS) == 1  # read, not computed
    np.testing.assert_array_equal(again, first)
    assert torch.equal(torch.rand(3), after)  # the RNG moved on as the computation moves it


@pytest.mark.parametrize("change", ["pixel", "weight", "units", "scale", "config", "mode",
                                    "hook", "forward", "random", "buffer"])
def test_any_other_input_is_computed(memo, monkeypatch, model, images, change):
    model.eval()
    torch.manual_seed(5)
    counted(model, images, [1, 2])
    read_back(monkeypatch, memo)
    torch.manual_seed(5)
    args, kwargs = [model, images.clone(), [1, 2]], {}
    if change == "pixel":
        args[1][3, 2, 31, 0] ^= 1
    elif change == "weight":
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] += 1e-6
    elif change == "units":
        args[2] = [1, 3]
    elif change == "scale":
        kwargs["scale"] = 1.0 + 1e-12
    elif change == "mode":
        model[1].train()
    elif change == "hook":
        model[4].register_forward_hook(lambda *a: None)
    elif change == "forward":
        model[0].forward = model[0].forward
    elif change == "random":
        torch.manual_seed(6)
    elif change == "buffer":
        model.register_buffer("extra", torch.zeros(1))
    if change == "config":
        with using(cnnlab.get_config("quick", top_k=3)):
            counted(*args, **kwargs)
    else:
        counted(*args, **kwargs)
    assert len(CALLS) == 2, change


@pytest.mark.parametrize("form", ["tuple", "numpy", "numpy int32", "tensor", "numpy items",
                                  "by keyword", "default given"])
def test_honest_forms_of_the_same_call_read_the_saved_result(memo, monkeypatch, model, images,
                                                             form):
    """A student's units as a tuple or a NumPy vector, or an argument by keyword, is the
    solution's call: read back, not computed again."""
    model.eval()
    torch.manual_seed(5)
    first = counted(model, images, [1, 2])
    read_back(monkeypatch, memo)
    torch.manual_seed(5)
    units = {"tuple": (1, 2), "numpy": np.array([1, 2]), "numpy int32": np.array([1, 2], np.int32),
             "tensor": torch.tensor([1, 2]), "numpy items": [np.int64(1), np.int64(2)]
             }.get(form, [1, 2])
    if form == "by keyword":
        again = counted(model, units=units, images=images)
    elif form == "default given":
        again = counted(model, images, units, scale=1.0)
    else:
        again = counted(model, images, units)
    assert len(CALLS) == 1, form
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("units", [[2, 1], [1, 2, 2], np.array([[1, 2]]), [True, 2]])
def test_other_units_are_computed(memo, monkeypatch, model, images, units):
    """Another order, a repeat, a 2-D array or a bool among the units is another call."""
    model.eval()
    counted(model, images, [1, 2])
    read_back(monkeypatch, memo)
    try:
        counted(model, images, units)
    except Exception:  # noqa: BLE001 - the function itself may refuse it; it still ran
        pass
    assert len(CALLS) == 2


def test_a_module_class_of_the_students_own_is_never_keyed(memo, monkeypatch, model, images):
    class Mine(nn.Sequential):  # could compute anything in forward
        pass

    net = Mine(*model.eval())
    counted(net, images, [0])
    assert not list(memo.iterdir())  # nothing recorded for it
    read_back(monkeypatch, memo)
    counted(net, images, [0])
    assert len(CALLS) == 2


def test_damaged_or_misnamed_entries_are_computed(memo, monkeypatch, model, images):
    counted(model.eval(), images, [1])
    counted(model, images, [2])
    a, b = sorted(memo.glob("*.pt"))
    a.write_bytes(b"not a saved result")
    b.rename(b.with_name("0" * 64 + ".pt"))
    read_back(monkeypatch, memo)
    counted(model, images, [1])
    counted(model, images, [2])
    assert len(CALLS) == 4


def test_nothing_is_saved_or_read_without_the_variables(monkeypatch, tmp_path, model, images):
    CALLS.clear()
    for name in (_memo.READ_ENV, _memo.RECORD_ENV):
        monkeypatch.delenv(name, raising=False)
    counted(model.eval(), images, [1])
    counted(model, images, [1])
    assert len(CALLS) == 2


def test_the_lab_functions_read_back_what_they_computed(memo, monkeypatch, model):
    """The grading kernel's expensive cells, recorded then read back: equal to a fresh
    computation, and a different extractor (a wrong Exercise 4) gets its own result."""
    config = cnnlab.get_config("quick", tsne_iter=250, pca_dims=5, top_k=3)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    split = Split(images, torch.arange(40) % 10, cnnlab.CLASSES, "made up")
    model.eval()

    def run(extractor):
        with using(config):
            features = cnnlab.extract_features(extractor, images, progress=False)
            top = cnnlab.top_k(features, k=3)
            return dict(features=features,
                        occlusion=cnnlab.top_k_occlusion(extractor, images, top, [1, 5]),
                        xy=cnnlab.embed(features, perplexity=5.0, cache=False),
                        evaluation=cnnlab.evaluate(model, split),
                        views=cnnlab.unit_views(model, images, top, [1, 5], k=2,
                                                method_options={"synthesized": {"steps": 4}}))

    recorded = run(model[:14])
    saved = sorted(memo.glob("*.pt"))
    assert len(saved) == 5
    read_back(monkeypatch, memo)
    read = run(model[:14])
    for name in ("features", "occlusion", "xy"):
        np.testing.assert_array_equal(read[name], recorded[name])
    np.testing.assert_array_equal(read["evaluation"].confusion, recorded["evaluation"].confusion)
    assert read["evaluation"].accuracy == recorded["evaluation"].accuracy
    assert type(read["views"]) is type(recorded["views"])
    for field in ("indices", "activation", "bias", "occlusion"):
        np.testing.assert_array_equal(getattr(read["views"], field), getattr(recorded["views"], field))
    assert torch.equal(read["views"].images, recorded["views"].images)
    assert read["views"].maps.keys() == recorded["views"].maps.keys()
    for method, values in recorded["views"].maps.items():
        np.testing.assert_array_equal(read["views"].maps[method], values)
    monkeypatch.delenv(_memo.READ_ENV)
    fresh = run(model[:14])  # what computing gives, with no memo at all
    np.testing.assert_array_equal(fresh["xy"], read["xy"])
    monkeypatch.setenv(_memo.READ_ENV, str(memo))
    wrong = cnnlab.extract_features(model[:13], images, progress=False)
    assert wrong.shape[1] != recorded["features"].shape[1]
    assert sorted(memo.glob("*.pt")) == saved  # reading never writes
