"""Gradient attributions against Captum, and the properties they must have without one."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerGradCam,
    LayerGradientXActivation,
    NeuronGradient,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from cnnlab.attribution import (
    METHODS,
    attribute,
    contribution_map,
    grad_cam,
    gradient,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
    trapezoid_weights,
)
from cnnlab._inference import use_channels_last
from cnnlab.config import get_config
from cnnlab.data import normalize, synthetic_cifar10
from cnnlab.model import build_model
from cnnlab.train import train_model

UNITS = [1, 5, 7, 3, 120, 64]  # one per image of the images fixture
CLASSES = [0, 9, 3, 3, 1, 6]


@pytest.fixture
def trained_like(model):
    """The course network with a bias pushed up, so most units fire and maps are not 0."""
    with torch.no_grad():
        model[13].bias.add_(0.05)
    return model


def x_of(images):
    """The normalised images in the layout cnnlab computes in on the CPU (channels_last
    under the default precision), so that Captum runs the very same computation."""
    x = normalize(images)
    return x.contiguous(memory_format=torch.channels_last) if use_channels_last(
        torch.device("cpu")) else x


def assert_same(ours, theirs, atol=0.0):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)


def modes(model):
    return [m.training for m in model.modules()]


# --- against Captum ---------------------------------------------------------------


def test_gradient_is_captum_saliency_for_units_and_classes(model, images):
    model.eval()
    ext = model[:14]
    for net, targets in ((ext, UNITS), (model, CLASSES)):
        theirs = Saliency(net).attribute(x_of(images).requires_grad_(), target=targets,
                                         abs=False).sum(1)
        assert_same(gradient(net, images, targets), theirs)


def test_gradient_of_one_unit_is_captum_neuron_gradient(model, images):
    model.eval()
    theirs = NeuronGradient(model, model[13]).attribute(x_of(images).requires_grad_(),
                                                        neuron_selector=14).sum(1)
    assert_same(gradient(model[:14], images, 14), theirs)


def test_smoothgrad_is_captum_noise_tunnel_with_the_same_noise(model, images):
    model.eval()
    ext = model[:14]
    ours = smoothgrad(ext, images, UNITS, n_samples=5, noise=0.1, seed=7, batch_size=12)
    torch.manual_seed(7)  # Captum draws from the global generator, in the same order
    theirs = NoiseTunnel(Saliency(ext)).attribute(
        x_of(images).requires_grad_(), nt_type="smoothgrad", nt_samples=5, stdevs=0.2,
        target=UNITS, abs=False).sum(1)
    assert_same(ours, theirs, atol=1e-9)


def test_integrated_gradients_is_captum_trapezoid_rescaled(model, images):
    model.eval()
    x = x_of(images)
    for net, targets in ((model[:14], UNITS), (model, CLASSES)):
        theirs = IntegratedGradients(net).attribute(
            x, baselines=-torch.ones_like(x), target=targets, n_steps=12,
            method="riemann_trapezoid").sum(1)
        # Captum's trapezoid weights sum to (n - 1) / n, ours to 1.
        theirs = theirs.detach().numpy() * 12 / 11
        ours = integrated_gradients(net, images, targets, steps=12, batch_size=30)
        np.testing.assert_allclose(ours, theirs, rtol=0,
                                   atol=1e-6 * max(np.abs(theirs).max(), 1e-3))


def test_grad_cam_is_captum_layer_grad_cam_on_the_rectified_maps(trained_like, images):
    model = trained_like.eval()
    x = x_of(images)
    for net, targets, conv in ((model[:14], UNITS, 8), (model, CLASSES, 6)):
        theirs = LayerGradCam(net, net[conv + 1]).attribute(x, target=targets,
                                                            relu_attributions=True)
        theirs = F.interpolate(theirs, size=(32, 32), mode="bilinear")[:, 0]
        ours = grad_cam(net, images, targets, layer=conv)
        assert_same(ours, theirs)
        assert ours.min() >= 0


def test_grad_cam_on_a_conv_without_relu_uses_the_conv_output(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 3))
    theirs = LayerGradCam(net, net[0]).attribute(x_of(images), target=2, relu_attributions=True)
    assert_same(grad_cam(net, images, 2, layer=0), theirs[:, 0])


def test_guided_backprop_is_captum_guided_backprop(model, images):
    model.eval()
    with pytest.warns(UserWarning):  # Captum warns that it hooks the ReLUs
        theirs = GuidedBackprop(model[:14]).attribute(x_of(images).requires_grad_(),
                                                      target=UNITS).sum(1)
    assert_same(guided_backprop(model[:14], images, UNITS), theirs)


def test_contribution_map_is_captum_gradient_x_activation_at_the_flatten(model, images):
    model.eval()
    for net, targets in ((model[:14], UNITS), (model, CLASSES)):
        theirs = LayerGradientXActivation(net, net[12]).attribute(
            x_of(images), target=targets, attribute_to_layer_input=True)
        theirs = theirs.reshape(len(images), 64, 8, 8).sum(1)
        assert_same(contribution_map(net, images, targets), theirs, atol=1e-7)


# --- properties without an oracle -------------------------------------------------


def test_contribution_map_sums_back_to_the_unit(model, images):
    ext = model[:14]
    maps = contribution_map(ext, images, UNITS)
    assert maps.shape == (6, 8, 8)
    model.eval()
    with torch.no_grad():
        z = ext(x_of(images))
    for i, u in enumerate(UNITS):
        total = float(maps[i].astype(np.float64).sum()) + ext[13].bias[u].item()
        assert abs(total - z[i, u].item()) < 1e-5


def test_contribution_map_of_a_class_sums_to_the_logit_minus_the_bias_share(model, images):
    model.eval()
    maps = contribution_map(model, images, CLASSES)
    with torch.no_grad():
        z = model[:14](x_of(images))
        logits = model(x_of(images))
    fired = (z > 0).float()
    v, b1, b2 = model[16].weight, model[13].bias, model[16].bias
    for i, c in enumerate(CLASSES):
        bias_share = b2[c] + (v[c] * fired[i] * b1).sum()
        assert abs(maps[i].sum() + bias_share.item() - logits[i, c].item()) < 1e-5


def smooth_images(n=6, seed=1):
    """Photo-like images: bilinear blow-ups of random 4x4 colour grids, uint8 (n, 3, 32, 32)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return (F.interpolate(small, size=32, mode="bilinear") * 255).to(torch.uint8)


def completeness_error(net, images, targets, steps):
    """sum_i |sum(map_i) - (f(x_i) - f(black))| / sum_i |f(x_i) - f(black)|."""
    maps = integrated_gradients(net, images, targets, steps=steps)
    with torch.no_grad():
        gain = net(x_of(images)) - net(-torch.ones(1, 3, 32, 32))
    gain = gain[np.arange(len(images)), targets].numpy().astype(np.float64)
    return np.abs(maps.sum((1, 2)) - gain).sum() / np.abs(gain).sum()


@pytest.mark.slow  # about 12 s: 6 images at 256 steps, twice
def test_integrated_gradients_is_complete(model):
    """The maps add up to f(x) - f(black), up to the trapezoid rule's error.

    On random weights the error at 32 steps was 1.5-6 % over seeds (a random net's
    tiny outputs cross many ReLU kinks); at 256 steps it was below 0.6 %. The 2 %
    at 32 steps holds on a trained model (the next test, and benchmarks/bench_section6.py).
    """
    model.eval()
    images = smooth_images()
    for net, targets in ((model[:14], UNITS), (model, CLASSES)):
        errors = [completeness_error(net, images, targets, s) for s in (4, 32, 256)]
        assert errors[1] < 0.1 and errors[2] < 0.01, errors
        assert errors[2] < errors[1] < errors[0], errors  # the rule converges


@pytest.fixture(scope="module")
def briefly_trained():
    """The course network after one fp32 epoch on 1,024 made-up images (about 3 s), and
    16 made-up test images: a model whose units and classes respond to its inputs."""
    torch.manual_seed(0)
    model = build_model()
    config = get_config("quick", epochs=1, batch_size=32, precision="fp32")
    train_model(model, synthetic_cifar10("train", n=1024, seed=0), config, progress=False)
    return model.eval(), synthetic_cifar10("test", n=16, seed=0)


@pytest.mark.slow  # about 15-30 s: a model trained for it first
def test_integrated_gradients_is_complete_within_2_percent_at_32_steps(briefly_trained):
    """The issue's bound on a trained model: at the lab's 32 steps the maps add up to
    f(x) - f(black) within 2 %, for each image's strongest unit and for its class.
    (Measured 0.4 % and 0.4 %; the full model on its units' top images, 1.4 %.)"""
    model, test = briefly_trained
    with torch.no_grad():
        strongest = model[:14](x_of(test.images)).argmax(1).tolist()
    for net, targets in ((model[:14], strongest), (model, test.labels.tolist())):
        errors = [completeness_error(net, test.images, targets, s) for s in (8, 32)]
        assert errors[1] < 0.02, errors
        assert errors[1] < errors[0], errors


def test_trapezoid_weights_sum_to_one_with_half_ends():
    w = trapezoid_weights(5)
    torch.testing.assert_close(w, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125]))


def test_gradient_is_the_weight_sum_for_a_linear_model(images):
    """For f(x) = w . x, every method that is a gradient gives w summed over channels."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    expected = net[1].weight[1].detach().view(3, 32, 32).sum(0).numpy()
    for maps in (gradient(net, images, 1), smoothgrad(net, images, 1, n_samples=3)):
        np.testing.assert_allclose(maps, np.broadcast_to(expected, maps.shape), atol=1e-6)
    # IG of a linear model is exact: (x - black) * w.
    ig = integrated_gradients(net, images, 1, steps=2)
    delta = (x_of(images) + 1).numpy()
    want = (delta * net[1].weight[1].detach().view(3, 32, 32).numpy()).sum(1)
    np.testing.assert_allclose(ig, want, atol=1e-5)


def test_sign_convention_positive_raises_the_target(images):
    """One pixel with a positive weight gets a positive map value, a negative one negative."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1, bias=False))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight.view(3, 32, 32)[:, 3, 4] = 1.0
        net[1].weight.view(3, 32, 32)[:, 20, 21] = -2.0
    for method in ("gradient", "smoothgrad", "integrated_gradients"):
        m = attribute(method, net, images, 0)
        assert (m[:, 3, 4] > 0).all() and (m[:, 20, 21] < 0).all(), method


def test_every_method_works_under_inference_mode_and_leaves_modes_and_hooks(model, images):
    model[3].eval()  # mixed modes: all train except one ReLU
    before = modes(model)
    for method in METHODS:
        for net, targets in ((model[:14], 14), (model, CLASSES)):
            with torch.inference_mode():
                frozen = images.clone()  # an inference tensor
                maps = attribute(method, net, frozen, targets)
            side = 8 if method == "contribution" else 32
            assert maps.shape == (6, side, side) and maps.dtype == np.float32, method
            assert np.isfinite(maps).all(), method
    assert modes(model) == before
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks, m


def test_maps_do_not_depend_on_train_mode_or_batching(model, images):
    model.train()  # dropout would change the maps if eval mode were not used
    a = gradient(model[:14], images, UNITS, batch_size=2)
    b = gradient(model[:14], images, UNITS, batch_size=64)
    np.testing.assert_allclose(a, b, atol=1e-7)
    c = integrated_gradients(model[:14], images, UNITS, steps=4, batch_size=5)
    d = integrated_gradients(model[:14], images, UNITS, steps=4, batch_size=100)
    np.testing.assert_allclose(c, d, atol=1e-7)


def test_uint8_and_normalised_float_inputs_agree(model, images):
    a = gradient(model[:14], images, 3)
    b = gradient(model[:14], x_of(images), 3)
    np.testing.assert_array_equal(a, b)


def test_smoothgrad_is_reproducible_and_the_seed_matters(model, images):
    a = smoothgrad(model[:14], images[:2], 3, n_samples=4, seed=1)
    b = smoothgrad(model[:14], images[:2], 3, n_samples=4, seed=1)
    c = smoothgrad(model[:14], images[:2], 3, n_samples=4, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


class Boom(nn.Module):
    def forward(self, x):
        raise ZeroDivisionError("planted failure")


def test_modes_and_hooks_restored_after_an_exception(model, images):
    net = nn.Sequential(*model[:14], Boom())
    net.train()
    net[1].eval()
    before = modes(net)
    for method in ("gradient", "guided_backprop", "grad_cam"):
        with pytest.raises(ZeroDivisionError):
            attribute(method, net, images, 0)
        assert modes(net) == before
        assert not any(m._forward_hooks for m in net.modules())


# --- teaching errors ----------------------------------------------------------------


def test_a_unit_out_of_range_names_the_unit_and_the_range(model, images):
    with pytest.raises(ValueError, match=r"targets\[2\] = 128 .*128 outputs.*0 to 127"):
        gradient(model[:14], images, [1, 2, 128, 3, 4, 5])
    with pytest.raises(ValueError, match=r"= 10 .*class number from 0 to 9.*9 truck"):
        contribution_map(model, images, 10)
    with pytest.raises(ValueError, match="= -1 .*negative"):
        smoothgrad(model[:14], images, -1)
    with pytest.raises(TypeError, match="3.0 is not a whole number"):
        gradient(model[:14], images, 3.0)


def test_wrong_number_of_targets(model, images):
    with pytest.raises(ValueError, match="2 entries for 6 images"):
        integrated_gradients(model[:14], images, [1, 2])


def test_wrong_image_shapes_are_explained(model, images):
    with pytest.raises(ValueError, match="one image.*images\\[None\\]"):
        gradient(model[:14], images[0], 1)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        gradient(model[:14], images[:, :1], 1)
    for method in METHODS:
        with pytest.raises(ValueError, match=r"shape \(N, 3, 28, 28\).*\(N, 3, 32, 32\)"):
            attribute(method, model[:14], images[..., :28, :28], 1)


def test_grad_cam_layer_must_be_a_conv(model, images):
    with pytest.raises(TypeError, match=r"layer=9 is a ReLU.*\[0, 2, 6, 8\]"):
        grad_cam(model[:14], images, 1, layer=9)
    with pytest.raises(ValueError, match=r"layer=20 is not a layer.*0 to 13"):
        grad_cam(model[:14], images, 1, layer=20)
    with pytest.raises(TypeError, match="must be an nn.Sequential|needs an nn.Sequential"):
        grad_cam(Boom(), images, 1, layer=0)  # an index needs a Sequential; names do not
    with pytest.raises(ValueError, match="no layer with a spatial output"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), images, 1)


def test_unknown_method_lists_the_valid_ones(model, images):
    with pytest.raises(ValueError, match="'saliency' is not known.*gradient, smoothgrad"):
        attribute("saliency", model[:14], images, 1)


def test_an_option_of_another_method_is_explained(model, images):
    with pytest.raises(TypeError, match="gradient has no option 'steps'; its options are "
                                        "batch_size"):
        attribute("gradient", model[:14], images, 1, steps=8)


def test_bad_options_are_explained(model, images):
    with pytest.raises(ValueError, match="steps=1 .*at least 2"):
        integrated_gradients(model[:14], images, 1, steps=1)
    with pytest.raises(ValueError, match="n_samples=0"):
        smoothgrad(model[:14], images, 1, n_samples=0)
    with pytest.raises(ValueError, match="noise=-0.1"):
        smoothgrad(model[:14], images, 1, noise=-0.1)
