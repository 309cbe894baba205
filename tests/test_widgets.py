"""The slider explorers of cnnlab.widgets, driven from Python.

Each test builds an explorer on a tiny random model and 20 random images, sets
its controls' ``.value`` as a front end would, and checks what was drawn against
the static plot function called directly: the arrays of the AxesImages must be
equal. What the Output would show is read through IPython's own capture
(``capture_output`` on an IPython shell): the same ``clear_output`` and
``display`` calls that a kernel routes into the Output widget.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from cnnlab import widgets  # noqa: E402
from cnnlab.activations import extract_features, feature_extractor, plot_top_k, top_k  # noqa: E402
from cnnlab.data import to_display  # noqa: E402
from cnnlab.filters import filter_images, plot_filters  # noqa: E402
from cnnlab.model import build_model  # noqa: E402
from cnnlab.occlusion import plot_occlusion, top_k_occlusion  # noqa: E402

# Building a widget outside a kernel warns once per explorer; one test checks it.
pytestmark = pytest.mark.filterwarnings("ignore:.*outside a Jupyter kernel:UserWarning")

N_IMAGES = 20
#: What IPython writes when an output is cleared (``DisplayPublisher.clear_output``).
CLEAR = "\x1b[2K\r"


@pytest.fixture(scope="module")
def shell():
    """An IPython shell without a kernel, as in a terminal IPython session."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    yield shell
    InteractiveShell.clear_instance()


class Screen:
    """What the explorers displayed (IPython's capture) and printed (pytest's capsys)."""

    def __init__(self, captured, capsys):
        self.captured, self.capsys, self.text = captured, capsys, ""

    @property
    def outputs(self) -> list:
        return self.captured.outputs  # emptied by every clear_output, as an Output is

    @property
    def stdout(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text


@pytest.fixture
def screen(shell, capsys):
    from IPython.utils.capture import capture_output

    with capture_output(stdout=False, stderr=False) as captured:
        yield Screen(captured, capsys)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model().eval()


@pytest.fixture(scope="module")
def extractor(model):
    return feature_extractor(model)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def features(extractor, images):
    return extract_features(extractor, images, progress=False, precision="fp32")


def drawn(fig) -> list[np.ndarray]:
    """The image data of every AxesImage of the figure, axes in order."""
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.get_images()]


def assert_same_images(fig, expected_fig) -> None:
    got, expected = drawn(fig), drawn(expected_fig)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def printed_since_clear(screen) -> str:
    return screen.stdout.rsplit(CLEAR, 1)[-1]


def shown_png(screen) -> bytes:
    """The PNG the Output shows since it was last cleared; fails if it shows anything else."""
    (item,) = screen.outputs  # exactly one output: the figure replaced in place
    assert printed_since_clear(screen) == ""
    return item.data["image/png"]


def shown_text(screen) -> str:
    """The text the Output shows since it was last cleared; fails if it shows a figure."""
    assert screen.outputs == []
    return printed_since_clear(screen)


def other_unit(features, k: int, unit: int) -> int:
    """A unit whose top-k images differ from ``unit``'s, so a redraw must change."""
    top = top_k(features, k)
    return next(u for u in range(top.shape[1]) if not np.array_equal(top[:, u], top[:, unit]))


# --- unit_explorer -------------------------------------------------------------


def test_unit_explorer_draws_the_static_top_k_of_the_unit_on_the_slider(
    screen, images, features
):
    box = widgets.unit_explorer(images, features, k=4)
    assert box.unit_slider.value == 0
    assert (box.unit_slider.min, box.unit_slider.max) == (0, features.shape[1] - 1)
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 4), [0]))
    first_png = shown_png(screen)

    unit = other_unit(features, 4, 0)
    box.unit_slider.value = unit
    assert box.n_draws == 2  # one redraw per move, nothing more
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 4), [unit]))
    assert shown_png(screen) != first_png  # the Output holds the new figure only


def test_k_slider_redraws_with_k_rows(images, features):
    box = widgets.unit_explorer(images, features, k=3, max_k=6)
    assert (box.k_slider.min, box.k_slider.max) == (1, 6)
    for k in range(1, 7):  # the slider's array is a prefix of every smaller top_k
        np.testing.assert_array_equal(box.top_indices[:k], top_k(features, k))
    box.unit_slider.value = 5
    box.k_slider.value = 6
    assert len(drawn(box.figure)) == 6
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 6), [5]))
    box.k_slider.value = 2
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 2), [5]))


def test_unit_explorer_with_a_unit_list_visits_only_those_units(images, features):
    box = widgets.unit_explorer(images, features, units=np.array([3, 9, 14]), k=2)
    assert list(box.unit_slider.options) == [3, 9, 14]
    box.unit_slider.value = 14
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 2), [14]))
    assert box.figure.axes[0].get_title() == "unit 14"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": [1, 2, 128]}, r"units\[2\] = 128 is not a unit of this layer"),
        ({"units": []}, "is empty"),
        ({"k": 21}, "k=21 images per unit is not possible with 20 images"),
        ({"max_k": 0}, "max_k=0 must be a positive integer"),
    ],
)
def test_unit_explorer_rejects_bad_arguments_with_a_clear_message(
    images, features, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        widgets.unit_explorer(images, features, **kwargs)


def test_unit_explorer_rejects_features_of_other_images(images, features):
    with pytest.raises(ValueError, match="images holds 19 images but features has 20 rows"):
        widgets.unit_explorer(images[:19], features)


def test_mask_toggle_draws_the_static_occlusion_figure_and_caches_per_unit(
    extractor, images, features
):
    box = widgets.unit_explorer(
        images, features, k=2, extractor=extractor, size=11, stride=8,
        threshold=0.7, sigma=1.0, precision="fp32",
    )
    plain = box.figure
    box.mask_toggle.value = True
    assert box.n_computed == 1
    top = top_k(features, 2)
    maps = top_k_occlusion(extractor, images, top, [0], size=11, stride=8, precision="fp32")
    expected = plot_occlusion(images, top, [0], maps, sigma=1.0, threshold=0.7)
    assert_same_images(box.figure, expected)
    assert not all(np.array_equal(a, b) for a, b in zip(drawn(box.figure), drawn(plain)))

    box.mask_toggle.value = False
    assert_same_images(box.figure, plot_top_k(images, top, [0]))
    box.mask_toggle.value = True
    assert box.n_computed == 1  # the unit's maps came from the cache
    box.unit_slider.value = 1
    assert box.n_computed == 2 and set(box.mask_cache) == {0, 1}
    box.k_slider.value = 1  # fewer images: a slice of the cached maps
    assert box.n_computed == 2
    assert len(drawn(box.figure)) == 1


def test_mask_toggle_is_disabled_without_an_extractor(images, features):
    box = widgets.unit_explorer(images, features, k=2)
    assert box.mask_toggle.disabled
    assert "extractor=" in box.mask_toggle.tooltip


def test_error_in_a_move_is_shown_and_the_next_move_draws_again(
    screen, model, images, features
):
    broken = model[1:14]  # starts at the ReLU: the next conv gets 3 channels, not 32
    box = widgets.unit_explorer(images, features, k=2, extractor=broken, precision="fp32")
    box.mask_toggle.value = True
    text = shown_text(screen)
    assert text.startswith("Could not draw: RuntimeError")
    assert box.figure is None and isinstance(box.error, RuntimeError)

    box.mask_toggle.value = False
    assert box.error is None
    assert_same_images(box.figure, plot_top_k(images, top_k(features, 2), [0]))
    shown_png(screen)


# --- occlusion_explorer --------------------------------------------------------


@pytest.fixture
def occlusion_box(screen, extractor, images, features):
    return widgets.occlusion_explorer(
        extractor, images, features, units=[0, 5], k=2, size=11, stride=8,
        threshold=0.5, sigma=2.0, precision="fp32",
    )


def expected_occlusion(extractor, images, features, size, stride, threshold, sigma):
    top = top_k(features, 2)
    maps = top_k_occlusion(extractor, images, top, [0, 5], size=size, stride=stride,
                           precision="fp32")
    return plot_occlusion(images, top, [0, 5], maps, sigma=sigma, threshold=threshold)


def test_occlusion_explorer_draws_the_static_figure(occlusion_box, extractor, images, features):
    box = occlusion_box
    assert box.n_computed == 1 and list(box.cache) == [(11, 8)]
    assert box.cache[(11, 8)].shape == (2, 2, 4, 4)
    assert_same_images(box.figure, expected_occlusion(extractor, images, features, 11, 8, 0.5, 2.0))


def test_threshold_and_sigma_moves_redraw_without_recomputing(
    occlusion_box, extractor, images, features
):
    box = occlusion_box
    before = drawn(box.figure)
    box.threshold_slider.value = 0.8
    assert box.n_computed == 1 and box.n_draws == 2
    assert_same_images(box.figure, expected_occlusion(extractor, images, features, 11, 8, 0.8, 2.0))
    assert not all(np.array_equal(a, b) for a, b in zip(drawn(box.figure), before))
    box.sigma_slider.value = 0.5
    assert box.n_computed == 1 and box.n_draws == 3
    assert_same_images(box.figure, expected_occlusion(extractor, images, features, 11, 8, 0.8, 0.5))


def test_size_and_stride_moves_compute_once_per_setting(occlusion_box, extractor, images, features):
    box = occlusion_box
    box.size_slider.value = 7
    assert box.n_computed == 2
    assert_same_images(box.figure, expected_occlusion(extractor, images, features, 7, 8, 0.5, 2.0))
    box.stride_slider.value = 12
    assert box.n_computed == 3 and box.cache[(7, 12)].shape == (2, 2, 3, 3)
    box.stride_slider.value = 8
    box.size_slider.value = 11
    assert box.n_computed == 3  # both settings were cached
    assert_same_images(box.figure, expected_occlusion(extractor, images, features, 11, 8, 0.5, 2.0))


def test_occlusion_cache_keeps_every_setting_seen(extractor, images, features):
    box = widgets.occlusion_explorer(
        extractor, images, features, units=[0], k=1, stride=16, precision="fp32"
    )
    assert box.stride_slider.max == 16  # half the 32-pixel image
    box.size_slider.value = 5
    box.size_slider.value = 3
    box.size_slider.value = 11
    assert list(box.cache) == [(11, 16), (5, 16), (3, 16)] and box.n_computed == 3


def test_invalid_occluder_size_is_shown_and_the_next_move_draws(screen, occlusion_box):
    box = occlusion_box
    box.size_slider.max = 40  # beyond the 32-pixel image; the default slider stops at 32
    box.size_slider.value = 40
    text = shown_text(screen)
    assert text.startswith("Could not draw: size=40 is larger than the 32x32 image")
    assert box.figure is None and isinstance(box.error, ValueError)
    assert (40, 8) not in box.cache

    box.size_slider.value = 9
    assert box.error is None and box.figure is not None
    assert box.n_computed == 2
    shown_png(screen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": [4, 128]}, r"units\[1\] = 128 is not a unit"),
        ({"size": 40}, "size=40 is larger than the 32x32 image"),
        ({"stride": 0}, "stride=0 would never move the occluder"),
        ({"threshold": 1.5}, "threshold=1.5 must be a number from 0 to 1"),
    ],
)
def test_occlusion_explorer_rejects_bad_starting_values(
    extractor, images, features, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        widgets.occlusion_explorer(extractor, images, features, **kwargs)


def test_occlusion_explorer_scales_the_occluder_to_non_square_images(screen):
    """On 40x56 images the occluder starts at the lab's 11 and 4 scaled to the shorter
    side (as top_k_occlusion's default), and the sliders stop at that side."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pictures = torch.randint(0, 256, (6, 3, 40, 56), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(5))
    feats = extract_features(net, pictures, progress=False, precision="fp32")
    box = widgets.occlusion_explorer(net, pictures, feats, units=[0, 3], k=2, precision="fp32")
    assert (box.size_slider.value, box.stride_slider.value) == (14, 5)
    assert (box.size_slider.max, box.stride_slider.max) == (40, 20)
    assert list(box.cache) == [(14, 5)] and box.figure is not None
    top = top_k(feats, 2)
    maps = top_k_occlusion(net, pictures, top, [0, 3], precision="fp32")  # its defaults
    assert_same_images(box.figure, plot_occlusion(pictures, top, [0, 3], maps))
    with pytest.raises(ValueError, match="size=41 is larger than the 40x40 image"):
        widgets.occlusion_explorer(net, pictures, feats, units=[0], k=2, size=41)


def test_explorers_of_a_probe_at_the_network_s_output_title_columns_by_class(model, images):
    """Read at the course network's last layer by name, the units are CIFAR-10's classes:
    the explorers' figures say class 'cat' where the static ones do."""
    from cnnlab.probe import Probe

    probe = Probe(model, "16")
    feats = extract_features(probe, images, progress=False, precision="fp32")
    box = widgets.unit_explorer(images, feats, units=[3], k=2, extractor=probe,
                                stride=8, precision="fp32")
    assert box.figure.axes[0].get_title() == "class 'cat'"
    box.mask_toggle.value = True
    assert box.figure.axes[0].get_title() == "class 'cat'" and box.n_computed == 1
    box = widgets.occlusion_explorer(probe, images, feats, units=[3, 5], k=2, stride=8,
                                     precision="fp32")
    assert [ax.get_title() for ax in box.figure.axes[:2]] == ["class 'cat'", "class 'dog'"]
    inner = Probe(model, "13")  # the 128 units
    box = widgets.unit_explorer(images, extract_features(inner, images, progress=False),
                                units=[3], k=2, extractor=inner)
    assert box.figure.axes[0].get_title() == "unit 3"


# --- filter_explorer -----------------------------------------------------------


def test_filter_explorer_offers_the_conv_layers_of_the_course_network(model):
    box = widgets.filter_explorer(model)
    assert [value for _, value in box.layer_dropdown.options] == ["0", "2", "6", "8"]
    assert box.layer_dropdown.label == "0: Conv2d(3, 32, 3x3)"
    assert box.channel_slider.disabled  # 3 input channels: shown in colour
    assert_same_images(box.figure, plot_filters(model[0].weight))
    assert drawn(box.figure)[0].shape == (3, 3, 3)


def test_filter_explorer_follows_layer_channel_and_scale():
    torch.manual_seed(0)  # a small stand-in: conv layers 0, 2, 3 with 3, 4, 5 inputs
    small = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3), torch.nn.Conv2d(5, 3, 3),
    )
    box = widgets.filter_explorer(small)

    def expect(layer: str, scale: str = "global", channel: int = 0) -> None:
        pictures = filter_images(small.get_submodule(layer).weight, scale=scale,
                                 channel=channel)
        got = drawn(box.figure)
        assert len(got) == len(pictures)
        for a, b in zip(got, pictures):
            np.testing.assert_array_equal(a, b)

    assert [value for _, value in box.layer_dropdown.options] == ["0", "2", "3"]
    box.layer_dropdown.value = "2"
    assert box.n_draws == 2  # fitting the channel slider to the layer did not draw again
    assert not box.channel_slider.disabled and box.channel_slider.max == 3
    expect("2")
    assert_same_images(box.figure, plot_filters(small[2].weight))

    box.channel_slider.value = 3
    box.scale_buttons.value = "per_filter"
    assert box.n_draws == 4
    expect("2", "per_filter", 3)

    box.layer_dropdown.value = "3"  # 5 input channels: the channel is kept
    assert (box.channel_slider.value, box.channel_slider.max) == (3, 4)
    expect("3", "per_filter", 3)
    box.channel_slider.value = 4
    box.layer_dropdown.value = "2"  # 4 input channels: channel 4 becomes 3, drawn once
    assert box.channel_slider.value == 3 and box.n_draws == 7
    expect("2", "per_filter", 3)
    box.layer_dropdown.value = "0"
    assert box.channel_slider.disabled
    expect("0", "per_filter")


def test_filter_explorer_lists_a_resnets_nested_conv_layers_by_name(resnet):
    box = widgets.filter_explorer(resnet)
    names = [value for _, value in box.layer_dropdown.options]
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert names[-1] == "layer4.1.conv2" and "layer2.0.downsample.0" in names
    assert len(names) == 20  # the stem's, 4 per stage and 3 downsampling 1x1 convs
    assert box.layer_dropdown.label == "conv1: Conv2d(3, 64, 7x7)"
    assert box.channel_slider.disabled
    assert_same_images(box.figure, plot_filters(resnet.conv1.weight))

    box.layer_dropdown.value = "layer1.0.conv1"  # 64 input channels, drawn in grey
    assert box.layer_dropdown.label == "layer1.0.conv1: Conv2d(64, 64, 3x3)"
    assert not box.channel_slider.disabled and box.channel_slider.max == 63
    box.channel_slider.value = 40
    assert_same_images(box.figure, plot_filters(resnet.layer1[0].conv1.weight, channel=40))
    assert box.n_draws == 3


def test_filter_explorer_needs_conv_layers():
    with pytest.raises(ValueError, match="Sequential has no nn.Conv2d layer.*convolution"):
        widgets.filter_explorer(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# --- embedding_explorer --------------------------------------------------------


def test_embedding_explorer_hides_classes_and_shows_the_chosen_point(screen, images):
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(N_IMAGES, 2)).astype(np.float32)
    labels = np.arange(N_IMAGES) % 4  # 5 points in each of 4 classes
    classes = ["a", "b", "c", "d"]
    box = widgets.embedding_explorer(xy, labels, classes, images)

    def points_drawn() -> int:
        return sum(len(c.get_offsets()) for c in box.figure.axes[0].collections)

    def thumbnail() -> np.ndarray:
        (inset,) = box.figure.axes[0].child_axes
        (picture,) = inset.get_images()
        return np.asarray(picture.get_array()), inset.get_title()

    assert points_drawn() == N_IMAGES + 1  # every point, and the ring around point 0
    np.testing.assert_array_equal(thumbnail()[0], to_display(images[0]))
    box.class_boxes[1].value = False
    assert points_drawn() == N_IMAGES - 5 + 1
    box.point_slider.value = 7
    picture, title = thumbnail()
    np.testing.assert_array_equal(picture, to_display(images[7]))
    assert title == "#7: d"

    for checkbox in box.class_boxes:
        checkbox.value = False
    assert shown_text(screen).startswith("Could not draw: No class is ticked")
    box.class_boxes[2].value = True
    assert points_drawn() == 5 + 1


def test_embedding_explorer_shows_plot_embeddings_error_for_bad_labels(screen, images):
    """The explorer leaves the points' checks to plot_embedding: its message is shown."""
    xy = np.zeros((N_IMAGES, 2), np.float32)
    box = widgets.embedding_explorer(xy, np.zeros(N_IMAGES - 1, int), ["a", "b"], images)
    text = shown_text(screen)
    assert text.startswith("Could not draw: labels must have one class per point, "
                           f"shape ({N_IMAGES},), got ({N_IMAGES - 1},)")
    assert box.figure is None and isinstance(box.error, ValueError)
    with pytest.raises(ValueError, match="embedding has 20 points but images holds 19"):
        widgets.embedding_explorer(xy, np.zeros(N_IMAGES, int), ["a"], images[:19])
    with pytest.raises(ValueError, match="point=20 is not a point of the map"):
        widgets.embedding_explorer(xy, np.zeros(N_IMAGES, int), ["a"], images, point=20)


# --- behaviour outside Jupyter ---------------------------------------------------


def test_no_figures_pile_up_in_pyplot(screen, images, features):
    plt = pytest.importorskip("matplotlib.pyplot")
    open_before = plt.get_fignums()
    box = widgets.unit_explorer(images, features, k=2)
    for unit in (1, 2, 3):
        box.unit_slider.value = unit
    assert plt.get_fignums() == open_before
    shown_png(screen)  # one figure shown, the last


@pytest.mark.filterwarnings("default")
def test_building_outside_a_kernel_warns_how_to_draw_instead(images, features):
    with pytest.warns(UserWarning, match=r"outside a Jupyter kernel.*cnnlab\.plot_top_k"):
        widgets.unit_explorer(images, features, k=2)


def test_without_ipywidgets_explorers_say_how_to_install_it(monkeypatch, images, features):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        widgets.unit_explorer(images, features)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        widgets.filter_explorer(build_model())
    # The static figure still works.
    assert len(drawn(plot_top_k(images, top_k(features, 2), [0]))) == 2


def test_cnnlab_widgets_imports_without_ipywidgets(monkeypatch):
    import cnnlab

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "cnnlab.widgets")  # restored after the test
    monkeypatch.setattr(cnnlab, "widgets", widgets)
    fresh = importlib.import_module("cnnlab.widgets")  # runs the module's code again
    assert fresh is not widgets
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        fresh.filter_explorer(build_model())


# --- attribution_explorer (section 6) ---------------------------------------------

#: Few noise draws and path steps: the same code, quickly.
FAST_VIEWS = {"smoothgrad": {"n_samples": 4}, "integrated_gradients": {"steps": 8}}


def _expected_views(model, images, features, unit, k):
    from cnnlab.views import unit_views

    return unit_views(model, images, top_k(features, k), [unit], synthesize=False,
                      method_options=FAST_VIEWS)


def test_attribution_explorer_draws_plot_unit_views_for_each_control(model, images, features):
    from cnnlab.views import plot_unit_views

    box = widgets.attribution_explorer(model, images, features, units=[4, 11], k=3,
                                       synthesize=False, method_options=FAST_VIEWS)
    assert box.n_draws == 1 and box.n_computed == 1 and box.error is None
    assert list(box.unit_control.options) == [4, 11]
    assert "synthesized" not in [v for _, v in box.method_control.options]
    views_4 = _expected_views(model, images, features, 4, 3)
    assert_same_images(box.figure, plot_unit_views(views_4, n_best=3))

    box.method_control.value = "contribution"
    assert box.n_draws == 2 and box.n_computed == 1  # only redrawn
    assert_same_images(box.figure, plot_unit_views(views_4, show=["contribution"], n_best=3))
    box.image_control.value = 2
    assert_same_images(box.figure, plot_unit_views(views_4, image=2, show=["contribution"],
                                                   n_best=3))

    box.unit_control.value = 11
    assert box.n_computed == 2 and set(box.cache) == {4, 11}
    views_11 = _expected_views(model, images, features, 11, 3)
    assert_same_images(box.figure, plot_unit_views(views_11, image=2, show=["contribution"],
                                                   n_best=3))
    box.unit_control.value = 4  # cached
    assert box.n_computed == 2 and box.n_draws == 5


def test_attribution_explorer_reuses_views_computed_before(model, images, features):
    from cnnlab.views import unit_views

    views = unit_views(model, images, top_k(features, 4), [2, 6], synthesize=False,
                       method_options=FAST_VIEWS)
    box = widgets.attribution_explorer(model, images, features, units=[1, 2, 6], k=3,
                                       views=views, synthesize=False)
    assert box.unit_control.value == 2  # the first unit already computed
    box.unit_control.value = 6
    assert box.n_computed == 0 and box.n_draws == 2
    np.testing.assert_array_equal(box.cache[6].maps["gradient"][0],
                                  views.maps["gradient"][1, :3])


def test_a_failed_draw_is_shown_and_the_next_move_draws(model, images, features, capsys):
    box = widgets.attribution_explorer(model, images, features, units=[4], k=2,
                                       synthesize=False, method_options=FAST_VIEWS)
    box.image_control.options = [*box.image_control.options, ("#9", 8)]  # past k = 2
    capsys.readouterr()
    box.image_control.value = 8
    assert "Could not draw: image=8 is not a rank of the top images" in capsys.readouterr().out
    assert box.figure is None and isinstance(box.error, ValueError)
    box.image_control.value = 1
    assert box.error is None and box.figure is not None and box.n_draws == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": [1, 128]}, r"units\[1\] = 128 is not a unit of this layer"),
        ({"k": 21}, "k=21 images per unit is not possible with 20 images"),
        ({"views": "unit views"}, "views must be the UnitViews"),
    ],
)
def test_attribution_explorer_rejects_bad_arguments(model, images, features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        widgets.attribution_explorer(model, images, features, synthesize=False, **kwargs)


def test_unit_explorer_finds_the_top_images_once(images, features, monkeypatch):
    """The K slider's (max_k, D) top indices come from one top_k call, not one for the
    first K and another for the slider."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1:] + tuple(kwargs.values()))
        return top_k(*args, **kwargs)

    monkeypatch.setattr(widgets, "top_k", counted)
    box = widgets.unit_explorer(images, features, k=3, max_k=6)
    assert calls == [(6,)]
    np.testing.assert_array_equal(box.top_indices, top_k(features, 6))
    assert (box.k_slider.value, box.k_slider.max) == (3, 6)
