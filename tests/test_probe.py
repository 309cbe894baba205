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
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.attribution import (contribution_map, grad_cam, gradient, guided_backprop,
                                integrated_gradients)
from cnnlab.activations import extract_features, plot_top_k, top_k
from cnnlab.config import CLASSES
from cnnlab.data import normalize
from cnnlab.filters import activation_maps, conv_weight
from cnnlab.model import build_model
from cnnlab.occlusion import occlusion_maps
from cnnlab.probe import LayerError, Probe, last_spatial_layer, layers, reads_output

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
ROOT = Path(__file__).resolve().parents[1]
#: The commit before the Probe: the course network's arrays must not change from it.
BEFORE_PROBE = "793c7d5fc91d066aa584fae0b6eefc106901ea62"


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


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def target_message(model, images, target: int) -> str:
    """The message of ``gradient`` for one out-of-range target."""
    with pytest.raises(ValueError, match="out of range") as caught:
        gradient(model, images, target)
    return str(caught.value)


def test_a_target_is_a_class_only_where_class_names_are_known(model, images, resnet,
                                                              pictures):
    """Not by counting 10 outputs: a layer's 10 values are units, named outputs classes."""
    assert Probe(model, "").classes == CLASSES and Probe(model[:14], "").classes is None
    assert "a class number from 0 to 9 (0 airplane, 1 automobile," in target_message(
        model, images, 10)
    inner = target_message(Probe(model, "13"), images, 128)
    assert "a unit number from 0 to 127." in inner and "airplane" not in inner
    assert "a unit number from 0 to 127." in target_message(model[:14], images, 128)
    seven = build_model(7)
    assert seven.classes is None
    assert "a unit number from 0 to 6." in target_message(seven, images, 7)
    names = ["a", "b", "c", "d", "e", "f", "g"]
    assert "a class number from 0 to 6 (0 a, 1 b, 2 c, 3 d, 4 e, 5 f, 6 g)." in (
        target_message(Probe(seven, "", classes=names), images, 7))
    assert "a unit number from 0 to 511." in target_message(Probe(resnet, "layer4"),
                                                            pictures, 512)
    assert "a unit number from 0 to 9." in target_message(resnet, pictures, 10)
    ten = [f"c{i}" for i in range(10)]
    assert "a class number from 0 to 9 (0 c0, 1 c1," in target_message(
        Probe(resnet, "", classes=ten), pictures, 10)
    with pytest.raises(ValueError, match="7 class names .* 10 outputs"):
        gradient(Probe(resnet, "", classes=names), pictures, 0)
    with pytest.raises(ValueError, match="layer 'layer4'.*only with layer=''"):
        Probe(resnet, "layer4", classes=ten)


def test_the_layer_that_gives_the_network_s_output_names_its_classes(model, images, resnet,
                                                                     pictures, monkeypatch):
    """Read by name, the layer whose output the network returns (the course network's
    last Linear "16", a ResNet's "fc") is the network's output: its units carry the
    class names as layer '' does, in messages and figures. The layers before it (a conv,
    layer4, the pooling) stay units."""
    assert [reads_output(model, name) for name in ("", "16", "15", "13", "0")] == [
        True, True, False, False, False]
    assert Probe(model, "16").classes == CLASSES and Probe(model, "16").kind == "class"
    assert Probe(model, "13").classes is None and Probe(model, "0").kind == "unit"
    assert "a class number from 0 to 9 (0 airplane, 1 automobile," in target_message(
        Probe(model, "16"), images, 10)

    ten = tuple(f"c{i}" for i in range(10))
    fc = Probe(resnet, "fc", classes=ten, **IMAGENET)
    assert fc.reads_output and fc.classes == ten
    assert "a class number from 0 to 9 (0 c0, 1 c1," in target_message(fc, pictures, 10)
    for inner in ("layer4", "avgpool", "layer4.1.conv2"):
        assert not reads_output(resnet, inner)
        with pytest.raises(ValueError, match=f"layer '{inner}'.*only with layer=''"):
            Probe(resnet, inner, classes=ten)
    monkeypatch.setattr(resnet, "classes", ten, raising=False)  # names carried by the network
    assert Probe(resnet, "fc").classes == ten and Probe(resnet, "layer4").classes is None

    top = top_k(fc.units(pictures).numpy(), 2)
    figure = plot_top_k(pictures, top, [3, 7], classes=fc.classes)
    assert [ax.get_title() for ax in figure.axes[:2]] == ["class 'c3'", "class 'c7'"]
    layer4 = Probe(resnet, "layer4", **IMAGENET)
    figure = plot_top_k(pictures, top_k(layer4.units(pictures).numpy(), 2), [3],
                        classes=layer4.classes)
    assert figure.axes[0].get_title() == "unit 3"


class AfterFc(nn.Module):
    """A classifier whose fc output is changed (or fc called twice) before it is returned."""

    def __init__(self, twice: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 4)
        self.twice = twice

    def forward(self, x):
        x = self.fc(self.conv(x).mean(dim=(2, 3)))
        return self.fc(x) if self.twice else F.log_softmax(x, dim=1)


class Branching(nn.Module):
    """A forward that branches on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_reads_output_is_the_tensor_forward_returns():
    """The layer must give the returned tensor as it is, from its only call; a nested
    Sequential's last layer gives its parent's output too; untraceable means no."""
    assert not reads_output(AfterFc(), "fc")  # log_softmax after it
    assert not reads_output(AfterFc(twice=True), "fc")  # the returned value is its 2nd call
    nested = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(),
                           nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)))
    assert [reads_output(nested, name) for name in ("2", "2.2", "2.1", "0")] == [
        True, True, False, False]
    assert not reads_output(Branching(), "fc")
    with pytest.raises(ValueError, match="only with layer=''"):
        Probe(Branching(), "fc", classes=["a", "b"])
    assert Probe(Branching(), "", classes=["a", "b"]).classes == ("a", "b")


@pytest.mark.slow  # about 10 s: every analysis of the course network, twice
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


# --- attribution on a probe -----------------------------------------------------------


def classes_of(resnet):
    return Probe(resnet, "", **IMAGENET)


def test_resnet_grad_cam_at_layer4_is_captums_layer_grad_cam(resnet, pictures):
    targets = [1, 7, 3]
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(
        imagenet(pictures), target=targets, relu_attributions=True)
    theirs = LayerAttribution.interpolate(theirs, (64, 64), "bilinear")[:, 0]
    ours = grad_cam(classes_of(resnet), pictures, targets, layer="layer4")
    assert ours.shape == (3, 64, 64) and (theirs > 0).any()
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-4, atol=1e-6)
    default = grad_cam(classes_of(resnet), pictures, targets)  # layer4 is the default
    np.testing.assert_array_equal(default, ours)


def test_grad_cam_of_a_probe_unit_is_captums_on_that_unit(resnet, pictures):
    units = [0, 200, 31]  # channels of layer3
    r = resnet

    def layer3_units(x):  # torchvision's own modules, called by hand
        x = r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))
        return r.layer3(r.layer2(x)).mean(dim=(2, 3))

    theirs = LayerGradCam(layer3_units, r.layer2).attribute(
        imagenet(pictures), target=units, relu_attributions=True)
    theirs = LayerAttribution.interpolate(theirs, (64, 64), "bilinear")[:, 0]
    ours = grad_cam(Probe(resnet, "layer3", **IMAGENET), pictures, units, layer="layer2")
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_grad_cams_default_layer_for_a_probe_inside_the_network_is_at_or_before_it(
        resnet, pictures):
    """A probe at layer3: the default map layer is layer3 itself (layer4, the network's
    last grid, runs after it and cannot explain its units); the course network keeps 9."""
    assert last_spatial_layer(resnet, (3, 64, 64), upto="layer3") == "layer3"
    assert last_spatial_layer(resnet, (3, 64, 64), upto="layer2.0.conv1") == "layer2.0.conv1"
    assert last_spatial_layer(resnet, (3, 64, 64)) == "layer4"
    probe = Probe(resnet, "layer3", **IMAGENET)
    units = [0, 200, 31]
    np.testing.assert_array_equal(grad_cam(probe, pictures, units),
                                  grad_cam(probe, pictures, units, layer="layer3"))
    torch.manual_seed(0)
    course = build_model()
    assert last_spatial_layer(course, (3, 32, 32), resampling=False, upto="13") == "9"
    flat = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))  # no grid anywhere
    with pytest.raises(ValueError, match="no layer with a spatial output .* up to layer '1'"):
        last_spatial_layer(flat, (3, 2, 2), upto="1")


def test_resnet_guided_backprop_is_captums_on_its_reused_relus(resnet, pictures):
    targets = [4, 4, 9]
    x = imagenet(pictures).requires_grad_()
    with pytest.warns(UserWarning):  # Captum warns that it hooks the ReLUs
        theirs = GuidedBackprop(resnet).attribute(x, target=targets).sum(1)
    ours = guided_backprop(classes_of(resnet), pictures, targets)
    assert ours.shape == (3, 64, 64)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-4, atol=1e-6)
    plain = gradient(classes_of(resnet), pictures, targets)
    assert not np.allclose(ours, plain, atol=1e-6)  # guiding changed something


def test_resnet_integrated_gradients_is_complete(resnet, pictures):
    probe = classes_of(resnet)
    with torch.no_grad():
        change = probe.units(pictures) - probe.units(torch.zeros_like(pictures))
    # Each image's class that changes most from black: a relative error is only
    # meaningful away from zero (this random network's path has many ReLU kinks).
    targets = change.abs().argmax(dim=1)
    maps = integrated_gradients(probe, pictures, targets, steps=64)
    expected = change[torch.arange(3), targets].numpy()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), expected, rtol=0.02)


def test_resnet_contribution_at_layer4_sums_to_the_logit_minus_its_bias(resnet, pictures):
    probe, targets = classes_of(resnet), [0, 6, 9]
    maps = contribution_map(probe, pictures, targets)  # default: layer4, linear to fc
    assert maps.shape == (3, 2, 2)
    logits = probe.units(pictures)[torch.arange(3), targets]
    bias = resnet.fc.bias[targets].detach()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)) + bias.numpy(), logits.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_attribution_calls_that_raise_leave_no_hook_and_restore_modes(resnet, pictures):
    resnet.train()
    resnet.layer1.eval()
    before, hooks = modes(resnet), hook_count(resnet)
    probe = Probe(resnet, "layer3", **IMAGENET)
    with pytest.raises(ValueError, match="runs after the probe's layer 'layer3'"):
        grad_cam(probe, pictures, 0, layer="layer4")
    with pytest.raises(ValueError, match="2 entries for 3 images"):
        gradient(probe, pictures, [0, 1])
    with pytest.raises(LayerError, match="'layer2'"):
        contribution_map(probe, pictures, 0, layer="layer_2")
    assert modes(resnet) == before and hook_count(resnet) == hooks
    resnet.eval()


def test_tiny_functional_net_attributions_have_the_right_shapes(tiny, grey):
    for probe, targets in ((Probe(tiny, "conv2"), [0, 5, 2, 1]), (tiny, 3)):
        assert gradient(probe, grey, targets).shape == (4, 40, 56)
        assert grad_cam(probe, grey, targets).shape == (4, 40, 56)  # default: conv2
        assert integrated_gradients(probe, grey, targets, steps=4).shape == (4, 40, 56)
    guided = guided_backprop(tiny, grey, 3)  # its ReLUs are functions: guided all the same
    assert guided.shape == (4, 40, 56)
    assert not np.allclose(guided, gradient(tiny, grey, 3))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        gradient(tiny, torch.zeros((2, 3, 40, 56), dtype=torch.uint8), 0)


# --- features, top-K, occlusion, activation maps and filters on a probe ----------------


def test_course_features_through_a_probe_are_the_slices(model, images):
    by_slice = extract_features(model[:14], images, progress=False)
    by_probe = extract_features(Probe(model, "13"), images, progress=False)
    np.testing.assert_array_equal(by_probe, by_slice)


def test_resnet_features_top_k_and_activation_maps(resnet, pictures):
    probe = Probe(resnet, "layer3", **IMAGENET)
    features = extract_features(probe, pictures, batch_size=2, progress=False,
                                precision="fp32")
    np.testing.assert_allclose(features, probe.units(pictures).numpy(), rtol=1e-5, atol=1e-6)
    assert top_k(features, k=2).shape == (2, 256)
    reference = create_feature_extractor(resnet, return_nodes=["layer2"])
    with torch.no_grad():
        expected = reference(imagenet(pictures[:1]))["layer2"][0]
    maps = activation_maps(probe, pictures[0], "layer2")
    assert maps.shape == (128, 8, 8)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_resnet_occlusion_is_scaled_and_uses_the_probes_black(resnet, pictures):
    probe = Probe(resnet, "layer3", **IMAGENET)
    maps = occlusion_maps(probe, pictures[:2], units=[3, 100])
    assert maps.shape == (2, 2, 7, 7)  # 64 px: occluder 22, stride 8, centres 11..59
    hidden = pictures[1].clone()
    hidden[:, 8:30, 0:22] = 0  # row position 1 (centre 19: rows 8..29), column 0 (0..21)
    with torch.no_grad():
        units = probe.units(torch.stack([pictures[1], hidden]))[:, [3, 100]]
    np.testing.assert_allclose(maps[1, :, 1, 0], (units[0] - units[1]).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_tiny_functional_net_occlusion_and_filters(tiny, grey):
    maps = occlusion_maps(Probe(tiny, "conv2"), grey, units=[0, 4])
    assert maps.shape == (4, 2, 7, 10)  # shorter side 40: occluder 14, stride 5
    assert conv_weight(tiny, "conv1").shape == (4, 1, 3, 3)
    with pytest.raises(ValueError, match="'head' is a Linear.*'conv1', 'conv2'"):
        conv_weight(tiny, "head")


def test_relu_calls_count_every_relu_before_the_probes_layer(model, resnet, images, pictures):
    from cnnlab.attribution import relu_calls

    assert relu_calls(Probe(model, "13"), images[:2]) == 4  # the ReLUs 1, 3, 7 and 9
    assert relu_calls(Probe(model, "0"), images[:2]) == 0  # the first conv: none before it
    # the stem's ReLU, then each BasicBlock calls its one ReLU module twice
    assert relu_calls(Probe(resnet, "layer1"), pictures[:1]) == 1 + 2 * 2
    assert relu_calls(Probe(resnet, "layer1.0.conv1"), pictures[:1]) == 1
