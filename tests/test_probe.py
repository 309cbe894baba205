"""The Probe: any network read at a named layer, against torchvision and Captum.

The networks: the course network; a random-weight torchvision ResNet-18 (10 classes)
on 64x64 images with ImageNet normalisation; a tiny 1-channel net whose ReLUs are
functional (``F.relu`` in ``forward``) on 40x56 images.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.data import normalize
from cnnlab.probe import LayerError, Probe, last_spatial_layer, layers

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
ROOT = Path(__file__).resolve().parents[1]
#: The commit before the Probe: the course network's arrays must not change from it.
BEFORE_PROBE = "793c7d5fc91d066aa584fae0b6eefc106901ea62"


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def pictures():
    """Three uint8 RGB images of 64x64."""
    return torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(2))


class Tiny(nn.Module):
    """1-channel input, functional ReLUs, no Sequential to slice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return Tiny().eval()


@pytest.fixture(scope="module")
def grey():
    """Four uint8 1-channel images of 40x56."""
    return torch.randint(0, 256, (4, 1, 40, 56), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(4))


def imagenet(images):
    return normalize(images, IMAGENET["mean"], IMAGENET["std"])


def modes(net):
    return [m.training for m in net.modules()]


def hook_count(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in net.modules())


# --- the probe itself -------------------------------------------------------------


def test_course_probe_is_the_slice_bit_for_bit(model, images):
    model.eval()
    units = Probe(model, "13").extractor(images)
    assert torch.equal(units, model[:14](normalize(images)))
    assert units.shape == (6, 128)
    same_module = Probe(model, model[13]).extractor(images)
    assert torch.equal(same_module, units)


@pytest.mark.parametrize("layer", ["layer3", "fc"])
def test_resnet_units_are_torchvisions_feature_extractor(resnet, pictures, layer):
    reference = create_feature_extractor(resnet, return_nodes=[layer])
    with torch.no_grad():
        expected = reference(imagenet(pictures))[layer]
        if expected.ndim == 4:
            expected = expected.mean(dim=(2, 3))
        units = Probe(resnet, layer, **IMAGENET).extractor(pictures)
    assert units.shape == expected.shape == (3, 256 if layer == "layer3" else 10)
    torch.testing.assert_close(units, expected, rtol=1e-5, atol=1e-5)


def test_inplace_relu_after_the_layer_does_not_change_what_was_read(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3),
                        nn.ReLU(inplace=True), nn.Flatten()).eval()
    x = normalize(images)
    probe = Probe(net, "0")
    with torch.no_grad():
        expected = net[0](x).mean(dim=(2, 3))
        assert (expected < 0).any()  # the ReLU would change these if it ran on them
        assert torch.equal(probe.extractor(images), expected)
        _, kept = Probe(net, "").outputs(x, ["0"])
    torch.testing.assert_close(kept["0"], net[0](x))  # the whole pass ran after it


def test_unknown_layer_names_the_closest_ones(resnet):
    with pytest.raises(LayerError, match=r"no layer named 'layer_4'.*'layer4'.*layers\(model"):
        Probe(resnet, "layer_4")
    with pytest.raises(ValueError, match="'layer1.0.conv1'"):  # LayerError is a ValueError
        Probe(resnet, "layer1.0.cnv1")
    with pytest.raises(TypeError, match="layer='13'"):
        Probe(nn.Sequential(*[nn.ReLU()] * 14), 13)
    with pytest.raises(LayerError, match="not part of"):
        Probe(resnet, nn.Conv2d(1, 1, 1))


def test_no_hook_is_left_and_modes_are_restored_after_a_call_that_raised(resnet):
    resnet.train()
    resnet.layer2.eval()
    before, hooks = modes(resnet), hook_count(resnet)
    probe = Probe(resnet, "layer3", **IMAGENET)
    wrong = torch.zeros((2, 1, 64, 64), dtype=torch.uint8)  # 1 channel for a 3-channel net
    with pytest.raises((RuntimeError, ValueError)):
        probe.units(wrong)
    assert modes(resnet) == before and hook_count(resnet) == hooks
    resnet.eval()


def test_layers_lists_names_types_shapes_and_the_default_map_layer(model, resnet, tiny):
    listed = {layer.name: layer for layer in layers(model, (3, 32, 32))}
    assert list(listed) == [str(i) for i in range(17)]
    assert (listed["8"].type, listed["8"].shape) == ("Conv2d", (64, 16, 16))
    assert listed["13"].shape == (128,) and listed["16"].shape == (10,)
    assert last_spatial_layer(model, (3, 32, 32)) == "11"
    assert last_spatial_layer(model, (3, 32, 32), resampling=False) == "9"
    resnet_layers = {layer.name: layer for layer in layers(resnet, (3, 64, 64))}
    assert resnet_layers["layer4"].shape == (512, 2, 2)
    assert resnet_layers["layer4"].order > resnet_layers["layer4.1.relu"].order
    assert last_spatial_layer(resnet, (3, 64, 64)) == "layer4"
    assert last_spatial_layer(tiny, (1, 40, 56)) == "conv2"
    assert hook_count(resnet) == 0


def test_tiny_functional_net_units_have_the_right_shapes(tiny, grey):
    assert Probe(tiny, "conv2").units(grey).shape == (4, 6)
    assert Probe(tiny, "head").units(grey).shape == (4, 5)
    with torch.no_grad():
        expected = tiny.conv1(normalize(grey)).mean(dim=(2, 3))
    torch.testing.assert_close(Probe(tiny, "conv1").units(grey), expected)


def test_normalisation_must_match_the_channels():
    with pytest.raises(ValueError, match="2 values for images with 3"):
        normalize(torch.zeros((1, 3, 4, 4), dtype=torch.uint8), (0.5, 0.5), 0.5)
    with pytest.raises(ValueError, match="std=0"):
        Probe(nn.Conv2d(3, 1, 1), "", std=0)


# --- the course network's arrays are those of the code before the Probe ----------------


def _course_arrays(source: Path, out: Path) -> dict[str, np.ndarray]:
    env = {"PYTHONPATH": str(source), "CNNLAB_PROFILE": "quick", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(ROOT / "tests" / "course_arrays.py"), str(out)],
                   check=True, env=env, cwd=source, timeout=300)
    with np.load(out) as saved:
        return dict(saved)


def test_course_arrays_are_unchanged_by_the_probe(tmp_path):
    old = tmp_path / "before"
    old.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_PROBE, "cnnlab"],
                                 capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the commit before the Probe ({BEFORE_PROBE[:7]}) is not in this "
                    "checkout (a shallow clone)")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    before = _course_arrays(old, tmp_path / "before.npz")
    after = _course_arrays(ROOT, tmp_path / "after.npz")
    assert sorted(before) == sorted(after) and len(before) == 15
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
