"""Occlusion maps against a plain loop, Captum, and sums a person can do by hand."""

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from matplotlib.figure import Figure
from torch import nn

from cnnlab.activations import feature_extractor, top_k
from cnnlab.data import normalize
from cnnlab._figures import alt_text
from cnnlab.occlusion import (masked_images, occluded_images, occluder_centres,
                              occlusion_mask, occlusion_maps, plot_occluded, plot_occlusion,
                              scaled_occluder, top_k_occlusion)


def loop_reference(extractor, images, units, size=11, stride=4):
    """The textbook algorithm: one occluded image at a time, black patch, clipped."""
    extractor.eval()
    x = normalize(images)
    centres = list(range(size // 2, images.shape[-1], stride))
    out = np.zeros((len(images), len(units), len(centres), len(centres)), np.float32)
    with torch.no_grad():
        for i in range(len(images)):
            base = extractor(x[i : i + 1])[0, units]
            for r, cy in enumerate(centres):
                for c, cx in enumerate(centres):
                    occluded = x[i].clone()
                    top, left = max(cy - size // 2, 0), max(cx - size // 2, 0)
                    occluded[:, top : cy - size // 2 + size, left : cx - size // 2 + size] = -1.0
                    out[i, :, r, c] = (base - extractor(occluded[None])[0, units]).numpy()
    return out


class SumOfPixels(nn.Module):
    """A one-unit 'network' whose activation is the sum of its input's values."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))  # only so the device can be found

    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True) * self.weight


class CountingWrapper(nn.Module):
    """Records the batch size of every forward pass of the wrapped module."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


# --- occluder_centres ---------------------------------------------------------


def test_default_centres_are_the_labs_5_to_29():
    assert occluder_centres().tolist() == [5, 9, 13, 17, 21, 25, 29]
    assert occluder_centres(32, 11, 2).tolist() == list(range(5, 32, 2))
    assert occluder_centres(32, 1, 1).tolist() == list(range(32))
    assert occluder_centres(32, 32, 8).tolist() == [16, 24]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"stride": 0}, ValueError, ["stride=0", "never move", "at least 1"]),
        ({"stride": -2}, ValueError, ["stride=-2", "at least 1"]),
        ({"size": 0}, ValueError, ["size=0", "at least 1"]),
        ({"size": 33}, ValueError, ["size=33", "larger than the 32x32 image", "1 to 32"]),
        ({"size": 11.0}, TypeError, ["size=11.0", "whole number"]),
    ],
)
def test_centres_errors_say_what_is_wrong_and_what_to_use(kwargs, error, words):
    with pytest.raises(error) as info:
        occluder_centres(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_scaled_occluder_scales_the_labs_to_the_shorter_side_and_checks_what_is_given():
    assert scaled_occluder(32, 32) == (11, 4)
    assert scaled_occluder(40, 56) == (14, 5)  # round(11 * 40 / 32), round(4 * 40 / 32)
    assert scaled_occluder(8, 8) == (3, 1)
    assert scaled_occluder(40, 56, 7, 3) == (7, 3)
    with pytest.raises(ValueError, match="size=41 is larger than the 40x40 image"):
        scaled_occluder(40, 56, size=41)  # fits the width, not the height
    with pytest.raises(ValueError, match="stride=0 would never move the occluder"):
        scaled_occluder(40, 56, stride=0)


# --- occlusion_maps: hand-checkable ---------------------------------------------


def test_sum_of_pixels_on_a_white_image_is_six_times_the_patch_area():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    maps = occlusion_maps(SumOfPixels(), white, precision="fp32")
    # White is +1 after normalisation, black -1: each hidden pixel of each of the
    # 3 channels lowers the sum by 2. The last row/column of patches is clipped
    # at the border (rows 24..31: 8 pixels instead of 11).
    side = np.array([11, 11, 11, 11, 11, 11, 8])
    assert maps.shape == (1, 1, 7, 7)
    np.testing.assert_allclose(maps[0, 0], 6.0 * np.outer(side, side), rtol=1e-6)


def test_fill_is_a_pixel_value_before_normalisation():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    grey = occlusion_maps(SumOfPixels(), white, fill=0.5, precision="fp32")
    same = occlusion_maps(SumOfPixels(), white, fill=1.0, precision="fp32")
    side = np.array([11, 11, 11, 11, 11, 11, 8])
    np.testing.assert_allclose(grey[0, 0], 3.0 * np.outer(side, side), rtol=1e-6)
    np.testing.assert_array_equal(same, 0.0)


# --- occlusion_maps: against independent references ------------------------------


def test_maps_equal_a_plain_loop_on_the_course_network(model, images):
    extractor = feature_extractor(model)
    units = [0, 7, 127]
    got = occlusion_maps(extractor, images[:2], units=units, precision="fp32")
    expected = loop_reference(extractor, images[:2], units)
    assert got.shape == (2, 3, 7, 7) and got.dtype == np.float32
    assert np.abs(expected).max() > 1e-3  # the test would be empty otherwise
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_maps_equal_a_plain_loop_for_another_occluder(model, images):
    extractor = feature_extractor(model)
    got = occlusion_maps(extractor, images[2:3], units=[5, 9], size=6, stride=5,
                         precision="fp32")
    expected = loop_reference(extractor, images[2:3], [5, 9], size=6, stride=5)
    assert got.shape == (1, 2, 6, 6)  # centres 3, 8, ..., 28
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def spread_over_windows(omap, size=11, stride=4, image_size=32):
    """Per pixel, the mean of the map over the occluder windows that cover it."""
    total = np.zeros((image_size, image_size))
    count = np.zeros((image_size, image_size))
    starts = [c - size // 2 for c in range(size // 2, image_size, stride)]
    for r, top in enumerate(starts):
        for c, left in enumerate(starts):
            total[top : top + size, left : left + size] += omap[r, c]
            count[top : top + size, left : left + size] += 1
    return total / count


def test_maps_agree_with_captum_occlusion(model, images):
    extractor = feature_extractor(model).eval()
    units = [3, 100]
    ours = occlusion_maps(extractor, images[:2], units=units, precision="fp32")
    x = normalize(images[:2])
    for j, unit in enumerate(units):
        theirs = Occlusion(extractor).attribute(
            x, sliding_window_shapes=(3, 11, 11), strides=(3, 4, 4), baselines=-1.0,
            target=unit, perturbations_per_eval=49,
        ).detach().numpy()
        for i in range(2):
            spread = spread_over_windows(ours[i, j])
            for channel in range(3):
                np.testing.assert_allclose(theirs[i, channel], spread, atol=1e-5, rtol=0)


# --- occlusion_maps: how it computes ------------------------------------------------


def test_one_forward_pass_per_occluded_image_in_bounded_chunks(model, images):
    counted = CountingWrapper(feature_extractor(model))
    all_units = occlusion_maps(counted, images[:3], batch_size=100, precision="fp32")
    all_sizes = list(counted.batch_sizes)
    counted.batch_sizes.clear()
    one_unit = occlusion_maps(counted, images[:3], units=[42], batch_size=100,
                              precision="fp32")
    # 3 originals + 3 x 49 occluded images, never more than 100 at a time, and
    # the same passes whether 1 or all 128 units are read.
    assert sum(all_sizes) == 3 + 3 * 49
    assert max(all_sizes) <= 100
    assert counted.batch_sizes == all_sizes
    assert all_units.shape == (3, 128, 7, 7)
    np.testing.assert_allclose(one_unit[:, 0], all_units[:, 42], atol=1e-6)


def test_chunk_size_does_not_change_the_maps(model, images):
    extractor = feature_extractor(model)
    reference = occlusion_maps(extractor, images[:2], units=[1, 2], batch_size=4096,
                               precision="fp32")
    for batch_size in (1, 7, 50):  # chunks that split images across passes
        got = occlusion_maps(extractor, images[:2], units=[1, 2], batch_size=batch_size,
                             precision="fp32")
        np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)


def test_all_128_units_of_10_images_at_stride_2(model):
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    extractor = feature_extractor(model)
    maps = occlusion_maps(extractor, images, stride=2)
    assert maps.shape == (10, 128, 14, 14) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    single = occlusion_maps(extractor, images[4:5], units=[77], stride=2, precision="fp32")
    fp32 = occlusion_maps(extractor, images[4:5], stride=2, precision="fp32")
    np.testing.assert_allclose(fp32[0, 77], single[0, 0], atol=1e-6)


def test_auto_precision_stays_close_to_fp32(model, images):
    extractor = feature_extractor(model)
    fp32 = occlusion_maps(extractor, images[:2], units=[0, 64], precision="fp32")
    auto = occlusion_maps(extractor, images[:2], units=[0, 64], precision="auto")
    assert auto.shape == fp32.shape
    assert np.corrcoef(auto.ravel(), fp32.ravel())[0, 1] > 0.98


def test_model_mode_images_and_grad_mode_are_left_alone(model, images):
    extractor = feature_extractor(model)
    model.train()
    model[5].eval()  # a mixed state must come back as it was
    before = images.clone()
    occlusion_maps(extractor, images[:1], units=[0], precision="fp32")
    assert model.training and extractor.training and not model[5].training
    assert model[11].training
    assert torch.equal(images, before)
    assert torch.is_grad_enabled()


def test_units_none_means_every_unit(model, images):
    extractor = feature_extractor(model)
    every = occlusion_maps(extractor, images[:1], precision="fp32")
    listed = occlusion_maps(extractor, images[:1], units=range(128), precision="fp32")
    np.testing.assert_array_equal(every, listed)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"units": [1, 2, 128]}, ["units[2] = 128", "numbered 0 to 127"]),
        ({"units": []}, ["units is empty"]),
        ({"size": 40}, ["size=40", "larger than the 32x32 image"]),
        ({"stride": 0}, ["stride=0", "never move"]),
        ({"fill": 255}, ["fill=255", "from 0 to 1"]),
        ({"batch_size": 0}, ["batch_size=0", "positive"]),
        ({"precision": "bf16"}, ["precision='bf16'", "'auto'", "'fp32'"]),
    ],
)
def test_bad_arguments_are_explained(model, images, kwargs, words):
    with pytest.raises(ValueError) as info:
        occlusion_maps(feature_extractor(model), images[:1], **kwargs)
    for word in words:
        assert word in str(info.value)


def test_empty_or_single_image_is_explained(model, images):
    with pytest.raises(ValueError, match="empty"):
        occlusion_maps(feature_extractor(model), images[:0])
    with pytest.raises(ValueError, match=r"images\[None\]"):
        occlusion_maps(feature_extractor(model), images[0])


# --- top_k_occlusion ---------------------------------------------------------------


def test_top_k_occlusion_gives_each_unit_its_own_images(model, images):
    extractor = feature_extractor(model)
    features = extractor.eval()(normalize(images)).detach().numpy()
    top = top_k(features, k=3)
    units = [4, 50, 4]
    got = top_k_occlusion(extractor, images, top, units, precision="fp32")
    assert got.shape == (3, 3, 7, 7)
    for j, unit in enumerate(units):
        own = occlusion_maps(extractor, images[torch.as_tensor(top[:, unit])],
                             units=[unit], precision="fp32")
        np.testing.assert_allclose(got[:, j], own[:, 0], atol=1e-5)


# --- occlusion_mask and display ----------------------------------------------------


def test_mask_of_a_single_corner_peak_by_hand():
    omap = np.zeros((7, 7))
    omap[0, 0] = 3.0
    # Without smoothing, linear resizing keeps the corner value 1.0 only at pixel
    # (0, 0); every other pixel is an interpolation towards 0.
    mask = occlusion_mask(omap, sigma=0.0, threshold=1.0, dim=0.3)
    expected = np.full((32, 32), 0.3, np.float32)
    expected[0, 0] = 1.0
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, expected)
    # The upsampled peak falls from 1 to 0 over 32/6 pixels: at threshold 0.5 the
    # bright pixels are those within about 2.7 pixels of the corner on each axis.
    half = occlusion_mask(omap, sigma=0.0, threshold=0.5)
    assert half[0, :3].tolist() == [1.0, 1.0, 1.0] and half[0, 3] == np.float32(0.3)
    assert half[3, 0] == np.float32(0.3)


def test_mask_ignores_offset_and_scale_of_the_map():
    omap = np.random.default_rng(0).normal(size=(7, 7))
    np.testing.assert_array_equal(occlusion_mask(omap), occlusion_mask(5 * omap - 2))


def test_mask_threshold_and_constant_maps():
    omap = np.random.default_rng(1).normal(size=(7, 7))
    bright = [int((occlusion_mask(omap, threshold=t) == 1).sum()) for t in (0, 0.3, 0.6, 0.9)]
    assert bright[0] == 32 * 32
    assert bright == sorted(bright, reverse=True) and bright[-1] < bright[0]
    flat = occlusion_mask(np.full((7, 7), 2.0), dim=0.25)
    np.testing.assert_array_equal(flat, 0.25)  # constant map: nothing stands out
    assert occlusion_mask(np.zeros((14, 14))).shape == (32, 32)


def test_mask_errors():
    with pytest.raises(ValueError, match="threshold=1.5"):
        occlusion_mask(np.zeros((7, 7)), threshold=1.5)
    with pytest.raises(ValueError, match=r"maps\[i, j\]"):
        occlusion_mask(np.zeros((2, 7, 7)))


def test_masked_images_multiply_pixels_by_the_mask():
    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    maps = np.random.default_rng(2).normal(size=(2, 7, 7))
    out = masked_images(white, maps, dim=0.3)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.float32
    for i in range(2):
        np.testing.assert_allclose(out[i, ..., 1], occlusion_mask(maps[i], dim=0.3))
    display = np.full((2, 32, 32, 3), 0.5, np.float32)  # already (N, H, W, 3)
    np.testing.assert_allclose(masked_images(display, maps, dim=0.3), out * 0.5)


def test_plot_occlusion_shows_each_top_image_through_its_mask(model, images):
    extractor = feature_extractor(model)
    features = extractor.eval()(normalize(images)).detach().numpy()
    top = top_k(features, k=2)
    units = [10, 20, 30]
    maps = top_k_occlusion(extractor, images, top, units, precision="fp32")
    fig = plot_occlusion(images, top, units, maps)
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["unit 10", "unit 20", "unit 30"]
    for j, unit in enumerate(units):
        expected = masked_images(images[torch.as_tensor(top[:, unit])], maps[:, j])
        for i in range(2):
            np.testing.assert_allclose(axes[i, j].get_images()[0].get_array(), expected[i])
    with pytest.raises(ValueError, match="expected \\(2, 2, G, G\\)"):
        plot_occlusion(images, top, [10, 20], maps)


def test_plot_occlusion_titles_classes_as_plot_top_k_does():
    """The class names are checked and shown as plot_top_k's (one helper for both)."""
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    top = top_k(np.random.default_rng(4).normal(size=(8, 3)), k=2)
    maps = np.zeros((2, 2, 2, 2), np.float32)
    fig = plot_occlusion(images, top, [2, 0], maps, classes=["ant", "bee", "cow"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["class 'cow'", "class 'ant'"]
    assert fig._suptitle.get_text().startswith("Top 2 images per class")
    with pytest.raises(ValueError, match="classes has 2 names for 3 units"):
        plot_occlusion(images, top, [0], maps[:, :1], classes=["ant", "bee"])
    with pytest.raises(TypeError, match="one per unit"):
        plot_occlusion(images, top, [0], maps[:, :1], classes="ant")


def test_top_indices_past_the_images_is_a_clear_error(model, images):
    top = np.full((2, 128), len(images), dtype=np.int64)  # one past the last image
    maps = np.zeros((2, 1, 7, 7), dtype=np.float32)
    with pytest.raises(ValueError, match="refers to image 6 but images has only 6"):
        plot_occlusion(images, top, [0], maps)
    with pytest.raises(ValueError, match="same images the features were computed on"):
        top_k_occlusion(feature_extractor(model), images, top, [0])


# --- the occluded images themselves ---------------------------------------------------


class Recorder(nn.Module):
    """Identity 'network' (one output per pixel) that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("shape, size, stride", [((32, 32), 11, 4), ((20, 28), 5, 6)])
def test_occluded_images_are_the_images_occlusion_maps_feeds_the_network(shape, size, stride):
    height, width = shape
    image = torch.randint(1, 256, (3, height, width), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(3))
    recorder = Recorder()
    occlusion_maps(recorder, image[None], units=[0], size=size, stride=stride,
                   batch_size=10_000)
    fed = recorder.seen[1]  # seen[0] is the unoccluded image
    grid = [len(occluder_centres(side, size, stride)) for side in shape]
    assert fed.shape[0] == grid[0] * grid[1]
    shown = occluded_images(image, size, stride)
    assert shown.dtype == torch.uint8 and shown.shape == (fed.shape[0], 3, height, width)
    # the same pixels hidden: occlusion_maps' occluded input is the fill (-1) exactly there
    hidden = (fed == -1.0).all(dim=1, keepdim=True)
    assert torch.equal(hidden.expand_as(shown), shown == 0)
    np.testing.assert_allclose(normalize(shown), fed, atol=1e-6)
    assert torch.equal(shown[~hidden.expand_as(shown)],
                       image.expand_as(shown)[~hidden.expand_as(shown)])
    # position p is the [p // Gw, p % Gw] cell of the maps: its patch sits at those centres
    p = grid[1] + 1
    top, left = (int(occluder_centres(side, size, stride)[1]) - size // 2 for side in shape)
    assert torch.equal(torch.nonzero(hidden[p, 0])[0], torch.tensor([max(top, 0),
                                                                       max(left, 0)]))


def test_occluded_images_picks_positions_and_fill():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    every = occluded_images(image, 11, 4)
    picked = occluded_images(image[None], 11, 4, positions=[0, 24, 48])
    assert torch.equal(picked, every[[0, 24, 48]])
    white = occluded_images(image, 11, 4, positions=[24], fill=1.0)[0]
    assert (white[:, 12:23, 12:23] == 255).all()  # position 24 = [3, 3]: centre 17
    assert torch.equal(white[:, :12], image[:, :12])
    assert torch.equal(white[:, :, 23:], image[:, :, 23:])


@pytest.mark.parametrize("kwargs, words", [
    ({"positions": [49]}, "numbered 0 to 48"),
    ({"positions": []}, "non-empty"),
    ({"fill": 2}, "fill"),
    ({"size": 40}, "larger than"),
])
def test_occluded_images_rejects_bad_arguments(kwargs, words):
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=words):
        occluded_images(image, **{"size": 11, "stride": 4, **kwargs})


def test_occluded_images_wants_one_uint8_image():
    with pytest.raises(ValueError, match="one uint8 image"):
        occluded_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one uint8 image"):
        occluded_images(torch.zeros(3, 32, 32))


def test_plot_occluded_one_panel_per_position_with_alt_text():
    image = torch.randint(0, 256, (3, 24, 40), dtype=torch.uint8)
    shown = occluded_images(image, 7, 8, positions=[0, 3, 7])
    fig = plot_occluded(shown, labels=["a", "b", "c"])
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    for ax, picture in zip(fig.axes, shown, strict=True):
        np.testing.assert_allclose(ax.get_images()[0].get_array(),
                                   picture.permute(1, 2, 0).numpy() / 255.0, atol=1e-6)
    alt = alt_text(fig)
    assert alt and "3 copies" in alt and "24x40" in alt
    with pytest.raises(ValueError, match="one per image"):
        plot_occluded(shown, labels=["a"])
