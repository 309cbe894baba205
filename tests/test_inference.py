"""The one batched runner (cnnlab._inference.Runner): precision and memory layout are
decided there once, and routing the analyses through it leaves their values unchanged."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab._inference import Runner
from cnnlab.activations import extract_features, feature_extractor
from cnnlab.data import normalize
from cnnlab.device import choose_precision
from cnnlab.model import build_model
from cnnlab.train import predict

PACKAGE = Path(__file__).resolve().parents[1] / "cnnlab"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model()


@pytest.fixture(scope="module")
def pixels():
    return torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(3))


def test_batched_is_one_pass_cut_into_batches_and_empty_for_nothing():
    values = torch.arange(23.0)[:, None] * torch.ones(1, 4)
    runner = Runner(torch.device("cpu"), "fp32")
    calls = []

    def forward(start, stop):
        calls.append((start, stop))
        return values[start:stop] * 2

    assert torch.equal(runner.batched(forward, 23, 5), values * 2)
    assert calls == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert runner.batched(forward, 0, 5).shape == (0,)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_the_plan_is_choose_precisions_and_layout_keeps_the_values(precision):
    runner = Runner(torch.device("cpu"), precision)
    plan = choose_precision(torch.device("cpu"), precision)
    assert runner.plan == plan
    x = torch.randn(2, 3, 5, 6)
    laid = runner.layout(x)
    assert torch.equal(laid, x)
    assert laid.is_contiguous(memory_format=plan.memory_format)
    one = x[0]
    assert runner.layout(one) is one  # not an image batch: unchanged


def test_features_in_fp32_are_the_extractors_own_values(net, pixels):
    extractor = feature_extractor(net).eval()
    with torch.no_grad():
        expected = extractor(normalize(pixels)).numpy()
    got = extract_features(extractor, pixels, batch_size=3, progress=False, precision="fp32")
    assert got.dtype == np.float32 and got.shape == (7, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_features_under_auto_are_the_plans_autocast_and_layout(net, pixels):
    extractor = feature_extractor(net).eval()
    plan = choose_precision(torch.device("cpu"), "auto")
    with torch.inference_mode(), plan.autocast():
        x = normalize(pixels).contiguous(memory_format=plan.memory_format)
        expected = extractor(x).float().numpy()
    got = extract_features(extractor, pixels, batch_size=7, progress=False, precision="auto")
    np.testing.assert_array_equal(got, expected)


def test_predict_is_the_network_on_normalised_pixels_and_restores_every_mode(net, pixels):
    net.train()
    net[5].eval()
    with torch.no_grad():
        net.eval()
        expected = net(normalize(pixels))
        net.train()
        net[5].eval()
    got = predict(net, pixels, precision="fp32", batch_size=4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert net.training and not net[5].training and net[0].training
    assert predict(net, pixels[:0], precision="fp32").shape == (0, 0)


def test_only_the_runner_and_training_decide_precision_and_layout():
    """``choose_precision`` and ``channels_last`` appear in the runner, the device
    module (their definition), the config's description and training: nowhere else."""
    allowed = {"_inference.py", "device.py", "config.py", "train.py"}
    deciders = sorted(p.name for p in PACKAGE.glob("*.py")
                      if re.search(r"choose_precision\(|memory_format=torch\.channels_last",
                                   p.read_text()) and p.name not in allowed)
    assert deciders == []
