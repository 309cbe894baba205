"""Synthesized images: they raise their target, are reproducible, and leave the model alone."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import COLOR_SQRT, normalize
from cnnlab.featvis import (
    Synthesis,
    fourier_scale,
    random_transform,
    spectrum_to_pixels,
    synthesize,
)

UNITS = [3, 17, 64]


def value_on(net, images, targets):
    with torch.no_grad():
        return net(normalize(images))[np.arange(len(targets)), targets].numpy()


def test_synthesis_raises_each_unit_above_random_images(model):
    ext = model[:14].eval()
    result = synthesize(ext, UNITS, steps=48, seed=0, progress=False)
    assert isinstance(result, Synthesis) and result.targets == UNITS
    assert result.images.dtype == torch.uint8 and result.images.shape == (3, 3, 32, 32)
    assert result.activation.dtype == np.float32 and result.activation.shape == (3,)
    # The reported value is the unit's value on the returned uint8 image.
    np.testing.assert_allclose(result.activation, value_on(ext, result.images, UNITS),
                               rtol=1e-5, atol=1e-6)
    noise = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        random_best = ext(normalize(noise))[:, UNITS].max(0).values.numpy()
    assert (result.activation > random_best).all(), (result.activation, random_best)


def test_synthesis_of_classes_raises_the_logit(model):
    model.eval()
    classes = [0, 7]
    before = synthesize(model, classes, steps=0, seed=1, progress=False).activation
    after = synthesize(model, classes, steps=48, seed=1, progress=False).activation
    assert (after > before).all(), (before, after)


def test_the_same_seed_gives_the_same_images(model):
    ext = model[:14]
    a = synthesize(ext, UNITS, steps=8, seed=3, progress=False)
    b = synthesize(ext, UNITS, steps=8, seed=3, progress=False)
    c = synthesize(ext, UNITS, steps=8, seed=4, progress=False)
    assert torch.equal(a.images, b.images)
    np.testing.assert_array_equal(a.activation, b.activation)
    assert not torch.equal(a.images, c.images)


def test_mode_and_hooks_are_left_as_found_even_under_inference_mode(model):
    model.train()
    model[5].eval()
    before = [m.training for m in model.modules()]
    with torch.inference_mode():
        synthesize(model[:14], 2, steps=2, progress=False)
    assert [m.training for m in model.modules()] == before
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())  # weights untouched


class Boom(torch.nn.Module):
    def forward(self, x):
        raise ZeroDivisionError("planted failure")


def test_mode_is_restored_after_an_exception(model):
    net = torch.nn.Sequential(*model[:14], Boom())
    net.train()
    net[1].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(ZeroDivisionError):
        synthesize(net, [0], steps=2, progress=False)
    assert [m.training for m in net.modules()] == before


def test_bad_targets_and_settings_are_explained(model):
    with pytest.raises(ValueError, match=r"targets\[1\] = 128 .*0 to 127"):
        synthesize(model[:14], [1, 128], steps=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        synthesize(model[:14], [], steps=1, progress=False)
    with pytest.raises(ValueError, match="steps=-1"):
        synthesize(model[:14], [1], steps=-1, progress=False)
    with pytest.raises(ValueError, match="lr=0"):
        synthesize(model[:14], [1], lr=0, progress=False)


def test_fourier_scale_is_one_over_frequency():
    scale = fourier_scale(8)
    assert scale.shape == (8, 5)
    assert scale[0, 0] == 8  # the constant term gets the lowest frequency's scale
    torch.testing.assert_close(scale[0, 1], torch.tensor(8.0))  # f = 1/8
    torch.testing.assert_close(scale[0, 4], torch.tensor(2.0))  # f = 1/2, the highest
    torch.testing.assert_close(scale[4, 4], torch.tensor(2 / 2**0.5))


def test_zero_spectrum_is_mid_grey_and_pixels_stay_in_range():
    scale = fourier_scale(32)
    grey = spectrum_to_pixels(torch.zeros(2, 3, 32, 17, 2), scale)
    torch.testing.assert_close(grey, torch.full((2, 3, 32, 32), 0.5))
    loud = spectrum_to_pixels(10 * torch.randn(2, 3, 32, 17, 2), scale)
    assert loud.min() >= 0 and loud.max() <= 1


def test_colour_matrix_longest_column_has_norm_one():
    norms = COLOR_SQRT.norm(dim=0)
    assert abs(norms.max().item() - 1.0) < 1e-3
    # Brightness (all channels the same sign) is the strongest colour direction.
    assert (COLOR_SQRT[:, 0].sign() == COLOR_SQRT[0, 0].sign()).all()


def test_random_transform_keeps_a_constant_image_and_moves_a_pattern():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((4, 3, 32, 32), 0.3)
    torch.testing.assert_close(random_transform(flat, g), flat)
    square = torch.zeros(4, 3, 32, 32)
    square[:, :, 12:20, 12:20] = 1
    moved = random_transform(square, g)
    assert moved.shape == square.shape
    assert not torch.allclose(moved, square)


REAL_ARCHIVE = Path(os.environ.get("CNNLAB_DATA") or Path(__file__).resolve().parents[2]
                    / "shared" / "data" / "cifar10-jpeg.tar.gz")


@pytest.mark.realdata
@pytest.mark.slow  # reads the 50,000 training images
@pytest.mark.skipif(not REAL_ARCHIVE.exists(),
                    reason=f"real CIFAR-10 archive not found at {REAL_ARCHIVE}")
def test_colour_matrix_is_the_square_root_of_cifar_colour_covariance():
    """COLOR_SQRT @ COLOR_SQRT.T is CIFAR-10's RGB covariance, up to the column scaling."""
    from cnnlab.data import load_cifar10

    pixels = load_cifar10("train", root=REAL_ARCHIVE).images[::10].float() / 255
    cov = torch.cov(pixels.permute(1, 0, 2, 3).reshape(3, -1).double()).float()
    product = COLOR_SQRT @ COLOR_SQRT.T
    torch.testing.assert_close(product / product[0, 0], cov / cov[0, 0], atol=0.02, rtol=0)


# --- any network: a torchvision ResNet-18 at 64x64 through a Probe ---------------------


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_resnet_probe_synthesis_raises_its_units_at_the_datas_size(resnet):
    from cnnlab.probe import Probe

    probe = Probe(resnet, "layer2", **IMAGENET)
    # "Data": 64x64 images whose red and green go together, blue apart.
    g = torch.Generator().manual_seed(0)
    base = torch.rand(6, 1, 64, 64, generator=g)
    like = (255 * torch.cat([base, 0.8 * base + 0.1, torch.rand(6, 1, 64, 64, generator=g)],
                            1)).to(torch.uint8)
    units = [5, 40]
    start = synthesize(probe, units, steps=0, seed=0, progress=False, like=like)
    result = synthesize(probe, units, steps=24, seed=0, progress=False, like=like)
    assert result.images.shape == (2, 3, 64, 64) and result.images.dtype == torch.uint8
    assert (result.activation > start.activation).all(), (start.activation,
                                                         result.activation)
    # The value reported is the probe's unit on the returned uint8 image.
    np.testing.assert_allclose(result.activation, probe.units(result.images)[[0, 1], units],
                               rtol=1e-4, atol=1e-5)
    # image_size overrides the data's size; non-square images work.
    wide = synthesize(probe, units, steps=1, seed=0, progress=False, like=like,
                      image_size=(48, 80))
    assert wide.images.shape == (2, 3, 48, 80)


def test_colour_matrix_of_the_data_is_the_square_root_of_its_covariance():
    from cnnlab.featvis import colour_sqrt

    g = torch.Generator().manual_seed(1)
    base = torch.rand(4, 1, 16, 16, generator=g)
    like = (255 * torch.cat([base, 1 - 0.5 * base, torch.rand(4, 1, 16, 16, generator=g)],
                            1)).to(torch.uint8)
    root = colour_sqrt(like)
    pixels = like.permute(1, 0, 2, 3).reshape(3, -1).numpy() / 255.0
    cov = np.cov(pixels)
    product = (root @ root.T).numpy()
    np.testing.assert_allclose(product / product[0, 0], cov / cov[0, 0], atol=1e-4)
    assert abs(root.norm(dim=0).max().item() - 1) < 1e-5
    with pytest.raises(ValueError, match="single colour"):
        colour_sqrt(torch.full((2, 3, 8, 8), 7, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        colour_sqrt(like.float())


def test_one_channel_network_gets_one_channel_images_of_any_size():
    from torch import nn

    from cnnlab.probe import Probe

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    result = synthesize(Probe(net, "2", mean=0.2, std=0.3), [1, 4], steps=2, seed=0,
                        progress=False, image_size=(24, 40))
    assert result.images.shape == (2, 1, 24, 40)
    with pytest.raises(ValueError, match="image_size"):
        synthesize(net, [1], steps=1, progress=False, image_size=3)
