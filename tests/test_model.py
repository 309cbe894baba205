"""The course network's layers, parameter count and checkpoints."""

import os

import pytest
import torch
from torch import nn

from cnnlab.config import get_config
from cnnlab.model import build_model, first_linear_index, load_checkpoint, save_checkpoint


def test_layer_list_matches_the_lab_spec():
    m = build_model()
    expected = [
        (nn.Conv2d, (3, 32)), (nn.ReLU, None), (nn.Conv2d, (32, 32)), (nn.ReLU, None),
        (nn.MaxPool2d, None), (nn.Dropout, None), (nn.Conv2d, (32, 64)), (nn.ReLU, None),
        (nn.Conv2d, (64, 64)), (nn.ReLU, None), (nn.MaxPool2d, None), (nn.Dropout, None),
        (nn.Flatten, None), (nn.Linear, (4096, 128)), (nn.ReLU, None), (nn.Dropout, None),
        (nn.Linear, (128, 10)),
    ]
    assert len(m) == len(expected)
    for i, (layer, (kind, io)) in enumerate(zip(m, expected)):
        assert type(layer) is kind, f"layer {i}"
        if kind is nn.Conv2d:
            assert (layer.in_channels, layer.out_channels) == io
            assert layer.kernel_size == (3, 3) and layer.padding == (1, 1)
        if kind is nn.Linear:
            assert (layer.in_features, layer.out_features) == io
        if kind is nn.Dropout:
            assert layer.p == 0.5
        if kind is nn.MaxPool2d:
            assert layer.kernel_size == 2 and layer.stride == 2
    assert [i for i, layer in enumerate(m) if isinstance(layer, nn.Conv2d)] == [0, 2, 6, 8]


def test_parameter_count_by_hand():
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    expected = conv(3, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64) \
        + 4096 * 128 + 128 + 128 * 10 + 10
    assert sum(p.numel() for p in build_model().parameters()) == expected == 591_274


def test_first_linear_index_and_output_shapes():
    m = build_model().eval()
    assert first_linear_index(m) == 13
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10)
    assert m[:14](x).shape == (2, 128)
    with pytest.raises(ValueError, match="no nn.Linear"):
        first_linear_index(nn.Sequential(nn.ReLU()))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    m = build_model().eval()
    cfg = get_config("quick")
    path = save_checkpoint(tmp_path / "m.pt", m, cfg, {"accuracy": 0.5})
    loaded, info = load_checkpoint(path)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(m(x), loaded(x))
    assert info["config"] == cfg
    assert info["metrics"]["accuracy"] == 0.5
    assert info["versions"]["torch"] == torch.__version__
    assert not loaded.training


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    torch.manual_seed(0)
    first = build_model().eval()
    save_checkpoint(path, first)
    before = path.read_bytes()

    def crash(*args, **kwargs):  # the process dies half-way through writing
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, build_model())
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # no temp file left behind
    monkeypatch.undo()
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(first(x), loaded(x))


def test_damaged_or_missing_checkpoint_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cnnlab train"):
        load_checkpoint(tmp_path / "nothing.pt")
    path = save_checkpoint(tmp_path / "m.pt", build_model())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="Delete it and train again"):
        load_checkpoint(path)
    # A pickled whole model is refused (weights_only loading), with the same advice.
    torch.save(build_model(), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="Delete it and train again"):
        load_checkpoint(tmp_path / "whole.pt")
