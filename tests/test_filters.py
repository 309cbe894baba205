"""Filter images, the grid they are shown on, and activation maps."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from cnnlab.data import normalize
from cnnlab.filters import (activation_maps, conv_layers, filter_images, grid_shape,
                            plot_activation_maps, plot_filters)
from cnnlab.probe import Probe


def colour_weight():
    """Two 3-channel filters of 1x2: value = 6 * filter + 2 * channel + column."""
    return torch.arange(12, dtype=torch.float32).reshape(2, 3, 1, 2)


# --- conv_layers -------------------------------------------------------------------


def test_conv_layers_are_named_as_named_modules_lists_them(model, resnet):
    assert conv_layers(model) == ["0", "2", "6", "8"]
    assert conv_layers(Probe(model, "13")) == ["0", "2", "6", "8"]  # the probe's network
    names = conv_layers(resnet)
    assert names[:2] == ["conv1", "layer1.0.conv1"] and names[-1] == "layer4.1.conv2"
    assert all(isinstance(resnet.get_submodule(n), torch.nn.Conv2d) for n in names)
    assert len(names) == sum(isinstance(m, torch.nn.Conv2d) for m in resnet.modules()) == 20
    assert conv_layers(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))) == []


# --- filter_images ----------------------------------------------------------------


def test_colour_filters_by_hand_with_global_scaling():
    got = filter_images(colour_weight())
    assert got.shape == (2, 1, 2, 3) and got.dtype == np.float32
    # Whole tensor 0..11 -> divide by 11; pixel (row 0, column x) of filter f
    # has colour (6f + x, 6f + 2 + x, 6f + 4 + x).
    np.testing.assert_allclose(got[0, 0], np.array([[0, 2, 4], [1, 3, 5]]) / 11)
    np.testing.assert_allclose(got[1, 0], np.array([[6, 8, 10], [7, 9, 11]]) / 11)


def test_colour_filters_by_hand_with_per_filter_scaling():
    got = filter_images(colour_weight(), scale="per_filter")
    # Each filter spans 6 consecutive values: both become 0..5 / 5.
    np.testing.assert_allclose(got[0, 0], np.array([[0, 2, 4], [1, 3, 5]]) / 5)
    np.testing.assert_allclose(got[1, 0], got[0, 0])


def test_grey_filters_of_a_32_channel_layer_scale_the_whole_tensor():
    # Filter f, channel c, pixel (y, x) holds f + 10 c + 1000 y + 100 x: the shown
    # channel alone does not reach the global minimum and maximum.
    f, c, y, x = np.meshgrid(np.arange(4), np.arange(32), np.arange(2), np.arange(2),
                             indexing="ij")
    weight = (f + 10 * c + 1000 * y + 100 * x).astype(np.float32)
    lo, hi = weight.min(), weight.max()  # 0 and 3 + 310 + 1000 + 100 = 1413
    for channel in (0, 31):
        got = filter_images(weight, channel=channel)
        assert got.shape == (4, 2, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, (weight[:, channel] - lo) / (hi - lo), rtol=1e-6)
    assert filter_images(weight, channel=0)[0, 0, 0] == 0.0
    assert filter_images(weight, channel=31).max() == pytest.approx(1.0)


def test_real_layers_give_colour_first_and_grey_second(model):
    first = filter_images(model[0].weight)  # requires grad: must still work
    second = filter_images(model[2].weight)
    assert first.shape == (32, 3, 3, 3)
    assert second.shape == (32, 3, 3)
    assert first.min() == 0.0 and first.max() == 1.0
    w = model[2].weight.detach().numpy()
    np.testing.assert_allclose(second, (w[:, 0] - w.min()) / (w.max() - w.min()), rtol=1e-5)


def test_constant_weights_become_zeros():
    np.testing.assert_array_equal(filter_images(np.ones((2, 3, 3, 3))), 0.0)


@pytest.mark.parametrize(
    "weight, kwargs, words",
    [
        (np.zeros((128, 4096)), {}, ["(128, 4096)", "4 dimensions", "model[0].weight"]),
        (np.zeros((4, 32, 3, 3)), {"channel": 32}, ["channel=32", "0 to 31"]),
        (np.zeros((4, 3, 3, 3)), {"scale": "local"}, ["scale='local'", "'per_filter'"]),
    ],
)
def test_filter_images_errors(weight, kwargs, words):
    with pytest.raises(ValueError) as info:
        filter_images(weight, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_passing_the_layer_instead_of_its_weight_is_explained(model):
    with pytest.raises(TypeError, match=r"model\[0\]\.weight"):
        filter_images(model[0])


# --- grid_shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, shape",
    [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (10, (3, 4)),
     (32, (6, 6)), (64, (8, 8)), (65, (8, 9))],
)
def test_grid_shape_table(n, shape):
    assert grid_shape(n) == shape


def test_grid_shape_holds_everything_with_less_than_one_spare_row():
    for n in range(1, 300):
        rows, cols = grid_shape(n)
        assert cols == math.ceil(math.sqrt(n))
        assert rows * cols >= n > (rows - 1) * cols


def test_grid_shape_rejects_zero():
    with pytest.raises(ValueError, match="n=0"):
        grid_shape(0)


# --- plot_filters --------------------------------------------------------------------


def test_plot_filters_colour_grid_with_blank_spare_cells(model):
    open_before = plt.get_fignums()
    fig = plot_filters(model[0].weight)
    assert isinstance(fig, Figure) and plt.get_fignums() == open_before
    assert len(fig.axes) == 36  # 6 x 6 grid for 32 filters
    expected = filter_images(model[0].weight)
    for i, ax in enumerate(fig.axes):
        assert not ax.axison
        if i < 32:
            np.testing.assert_allclose(ax.get_images()[0].get_array(), expected[i])
        else:
            assert ax.get_images() == [] and not ax.lines and not ax.collections
    assert "32 filters" in fig._suptitle.get_text()


def test_plot_filters_grey_uses_gray_from_0_to_1(model):
    fig = plot_filters(model[2].weight, channel=5, title="second layer")
    expected = filter_images(model[2].weight, channel=5)
    image = fig.axes[7].get_images()[0]
    assert image.get_cmap().name == "gray"
    assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(image.get_array(), expected[7])
    assert fig._suptitle.get_text() == "second layer"


def test_plot_filters_reuses_a_given_figure(model):
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    assert plot_filters(colour_weight(), fig=fig) is fig
    assert len(fig.axes) == 2  # 2 filters side by side: the old plot is gone
    assert all(not ax.lines for ax in fig.axes)


# --- activation maps ----------------------------------------------------------------


def test_activation_maps_equal_the_convolution_by_hand(model, images):
    x = normalize(images[0])
    conv = F.conv2d(x[None], model[0].weight, model[0].bias, padding=1)[0].detach()
    np.testing.assert_allclose(activation_maps(model, images[0], 0), conv, atol=1e-5)
    np.testing.assert_allclose(activation_maps(model, images[0], 1), conv.clamp(min=0),
                               atol=1e-5)
    np.testing.assert_allclose(activation_maps(model, x, 1), conv.clamp(min=0), atol=1e-5)


def test_activation_maps_shapes_and_mode(model, images):
    model.train()
    maps = activation_maps(model, images[:1], 4)
    assert maps.shape == (32, 16, 16) and maps.dtype == np.float32
    assert activation_maps(model, images[0], 10).shape == (64, 8, 8)
    assert model.training and torch.is_grad_enabled()


@pytest.mark.parametrize("layer, words", [(12, ["Flatten", "4096", "earlier layer"]),
                                          (17, ["layer=17", "0 to 16"])])
def test_activation_maps_errors(model, images, layer, words):
    with pytest.raises(ValueError) as info:
        activation_maps(model, images[0], layer)
    for word in words:
        assert word in str(info.value)


def test_plot_activation_maps(model, images):
    maps = activation_maps(model, images[0], 1)
    fig = plot_activation_maps(maps, title="after ReLU")
    assert isinstance(fig, Figure) and len(fig.axes) == 36
    drawn = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(drawn) == 32
    np.testing.assert_allclose(drawn[3], maps[3])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plot_activation_maps(maps[0])
