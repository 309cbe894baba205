"""Section 6's "one unit, every view": the arrays against the functions they come from,
and the figure against the arrays (on views built by hand)."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnnlab import attribution
from cnnlab.activations import extract_features, feature_extractor, plot_top_k, top_k
from cnnlab.data import normalize, to_display
from cnnlab.model import build_model
from cnnlab.occlusion import masked_images, top_k_occlusion
from cnnlab.views import DEFAULT_VIEWS, MAP_VIEWS, TITLES, UnitViews, plot_unit_views, unit_views

UNITS = [3, 7]
#: Few noise draws, path steps and synthesis steps: the same code, quickly.
FAST = {"smoothgrad": {"n_samples": 4}, "integrated_gradients": {"steps": 8},
        "synthesized": {"steps": 8}}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model().eval()
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    features = extract_features(model[:14], images, progress=False, precision="fp32")
    return model, images, features, top_k(features, 4)


@pytest.fixture(scope="module")
def views(setup):
    model, images, _, top = setup
    return unit_views(model, images, top, UNITS, k=3, synthesize=False,
                      method_options=FAST)


def test_unit_views_hold_each_unit_top_images_and_their_values(setup, views):
    _, images, features, top = setup
    assert views.units == UNITS and views.k == 3
    np.testing.assert_array_equal(views.indices, top[:3, UNITS].T)
    for j, u in enumerate(UNITS):
        assert torch.equal(views.images[j], images[torch.as_tensor(top[:3, u])])
        np.testing.assert_allclose(views.activation[j], features[top[:3, u], u], atol=1e-5)


def test_every_map_equals_its_method_on_the_same_images(setup, views):
    model, images, _, top = setup
    extractor = feature_extractor(model)
    assert set(views.maps) == set(MAP_VIEWS)
    for method in MAP_VIEWS:
        options = dict(FAST.get(method, {}))
        if method == "smoothgrad":
            options["seed"] = 0  # the lab's seed, which unit_views passes
        # One call over the units' images in row order (SmoothGrad's noise is drawn
        # per image of that batch).
        batch = images[torch.as_tensor(top[:3, UNITS].T.reshape(-1))]
        expected = attribution.attribute(method, extractor, batch, [3, 3, 3, 7, 7, 7],
                                         **options)
        np.testing.assert_allclose(views.maps[method].reshape(expected.shape), expected,
                                   atol=1e-6, err_msg=method)
    assert views.maps["contribution"].shape == (2, 3, 8, 8)
    assert views.maps["gradient"].shape == (2, 3, 32, 32)


def test_contribution_maps_sum_back_to_the_unit_with_its_bias(setup, views):
    model, *_ = setup
    np.testing.assert_allclose(views.bias, model[13].bias.detach().numpy()[UNITS])
    totals = views.maps["contribution"].sum(axis=(2, 3)) + views.bias[:, None]
    np.testing.assert_allclose(totals, views.activation, atol=1e-4)


def test_occlusion_maps_are_section_4s(setup, views):
    model, images, _, top = setup
    expected = top_k_occlusion(model[:14], images, top[:3], UNITS)  # (K, U, G, G)
    np.testing.assert_allclose(views.occlusion, expected.transpose(1, 0, 2, 3), atol=1e-6)


def test_section_4s_occlusion_maps_are_reused_as_given(setup, views):
    model, images, _, top = setup
    given = top_k_occlusion(model[:14], images, top, UNITS)  # all 4 top images
    given[:, 1] += 100.0  # marks them: computing them again would not give these
    again = unit_views(model, images, top, UNITS, k=3, methods=["contribution"],
                       synthesize=False, occlusion=given)
    np.testing.assert_array_equal(again.occlusion, given[:3].transpose(1, 0, 2, 3))
    with pytest.raises(ValueError, match=r"occlusion has shape \(4, 1, 7, 7\); expected "
                                         r"\(4, 2, G, G\)"):
        unit_views(model, images, top, UNITS, k=3, methods=[], synthesize=False,
                   occlusion=given[:, :1])


def test_the_extractor_gives_the_same_views_as_the_model(setup, views):
    model, images, _, top = setup
    again = unit_views(model[:14], images, top, UNITS, k=3, methods=["contribution"],
                       synthesize=False)
    assert list(again.maps) == ["contribution"]
    np.testing.assert_allclose(again.maps["contribution"], views.maps["contribution"])


def test_synthesized_images_report_the_activation_they_reach(setup):
    model, images, _, top = setup
    got = unit_views(model, images, top, UNITS, k=1, methods=[], method_options=FAST)
    assert got.synthesized.dtype == torch.uint8 and got.synthesized.shape == (2, 3, 32, 32)
    with torch.no_grad():
        reached = model[:14](normalize(got.synthesized))[:, UNITS].diagonal().numpy()
    np.testing.assert_allclose(got.synthesized_activation, reached, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"units": [128]}, ValueError, "units[0] = 128 is not a unit of this layer"),
        ({"k": 5}, ValueError, "k=5 images per unit is not possible with 4 images"),
        ({"methods": ["saliency"]}, ValueError, "methods ['saliency'] are not known"),
        ({"methods": "gradients"}, ValueError, "methods ['gradients'] are not known"),
    ],
)
def test_unit_views_rejects_bad_arguments(setup, kwargs, error, words):
    model, images, _, top = setup
    arguments = {"units": UNITS, "synthesize": False, **kwargs}
    with pytest.raises(error) as info:
        unit_views(model, images, top, **arguments)
    assert words in str(info.value)


# --- plot_unit_views, on views made by hand ------------------------------------------


def hand_views(k: int = 4) -> UnitViews:
    """Two units: unit 2 live, unit 9 dead (negative on every top image). Grad-CAM is
    all zero for unit 9; the other maps are ramps a person can check."""
    generator = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (2, k, 3, 32, 32), dtype=torch.uint8, generator=generator)
    ramp = np.arange(32 * 32, dtype=np.float32).reshape(32, 32) - 500
    maps = {m: np.stack([np.stack([ramp * (r + 1) * (j + 1) for r in range(k)])
                         for j in range(2)]) for m in MAP_VIEWS if m != "contribution"}
    maps["grad_cam"][1] = 0.0
    maps["contribution"] = np.arange(2 * k * 64, dtype=np.float32).reshape(2, k, 8, 8) - 50
    occlusion = np.zeros((2, k, 7, 7), dtype=np.float32)
    occlusion[:, :, 1, 1] = 1.0
    return UnitViews(
        units=[2, 9], indices=np.arange(2 * k).reshape(2, k), images=images,
        activation=np.array([[3.0, 2.0, 1.5, 1.0][:k], [-0.2, -0.3, -0.4, -0.5][:k]],
                            dtype=np.float32),
        bias=np.zeros(2, dtype=np.float32), occlusion=occlusion, maps=maps,
        synthesized=images[:, 0].clone(), synthesized_activation=np.array([6.5, 1.25],
                                                                          dtype=np.float32),
    )


def _arrays(ax) -> list[np.ndarray]:
    return [np.asarray(im.get_array()) for im in ax.get_images()]


def test_one_row_per_unit_and_one_column_per_view():
    views = hand_views()
    fig = plot_unit_views(views, n_best=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * (3 + len(DEFAULT_VIEWS))
    top_titles = [ax.get_title() for ax in fig.axes[3:3 + len(DEFAULT_VIEWS)]]
    assert top_titles == [TITLES[v] for v in DEFAULT_VIEWS]
    assert fig.axes[0].get_ylabel() == "unit 2"
    assert fig.axes[3 + len(DEFAULT_VIEWS)].get_ylabel() == "unit 9 (dead)"


def test_cells_show_the_arrays_of_the_picked_image():
    views = hand_views()
    show = ("occlusion", "contribution", "grad_cam", "synthesized")
    fig = plot_unit_views(views, image=2, show=show, n_best=2)
    row = fig.axes[: 2 + len(show)]  # unit 2
    pictures = to_display(views.images[0])
    np.testing.assert_array_equal(_arrays(row[0])[0], pictures[0])  # best images lead
    np.testing.assert_array_equal(_arrays(row[1])[0], pictures[1])
    assert row[0].get_title() == "#1: +3.00"
    expected_mask = masked_images(pictures[2:3], views.occlusion[0, 2:3])[0]
    np.testing.assert_array_equal(_arrays(row[2])[0], expected_mask)
    grey, overlay = _arrays(row[3])
    np.testing.assert_allclose(grey, pictures[2].mean(axis=2))
    np.testing.assert_array_equal(overlay, views.maps["contribution"][0, 2])
    np.testing.assert_array_equal(_arrays(row[5])[0], to_display(views.synthesized[0]))
    assert "reaches +6.50" in row[5].get_xlabel() and "+3.00" in row[5].get_xlabel()
    dead_row = fig.axes[2 + len(show):]
    assert dead_row[4].get_xlabel() == "all zero"  # unit 9's Grad-CAM
    assert row[4].get_xlabel() == ""


def test_a_subset_of_units_and_views():
    views = hand_views()
    fig = plot_unit_views(views, units=[9], show="gradient", n_best=0)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "unit 9 (dead)"
    np.testing.assert_array_equal(_arrays(ax)[1], views.maps["gradient"][1, 0])


def test_without_synthesis_the_default_leaves_that_column_out():
    views = hand_views()
    bare = UnitViews(**{**views.__dict__, "synthesized": None,
                        "synthesized_activation": None})
    fig = plot_unit_views(bare, n_best=1)
    assert len(fig.axes) == 2 * (1 + len(DEFAULT_VIEWS) - 1)
    with pytest.raises(ValueError, match=r"views \['synthesized'\] were not computed"):
        plot_unit_views(bare, show=["synthesized"])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"units": [3]}, "unit 3 is not among the units these views were computed for"),
        ({"image": 4}, "image=4 is not a rank of the top images: use an integer from 0 to 3"),
        ({"show": ["saliency"]}, "views ['saliency'] are not known"),
        ({"n_best": 5}, "n_best=5 must be an integer from 0 to 4"),
        ({"units": []}, "units is empty"),
    ],
)
def test_plot_unit_views_explains_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        plot_unit_views(hand_views(), **kwargs)
    assert words in str(info.value)


def test_uncomputed_maps_are_explained():
    views = hand_views()
    partial = UnitViews(**{**views.__dict__, "maps": {"gradient": views.maps["gradient"]}})
    plot_unit_views(partial, show=["gradient"])
    with pytest.raises(ValueError, match=r"views \['smoothgrad'\] were not computed"):
        plot_unit_views(partial, show=["gradient", "smoothgrad"])


def test_batch_lays_out_the_views_unit_by_unit():
    views = hand_views()
    images, targets, maps = views.batch(2)
    assert targets == [2, 2, 9, 9]
    assert torch.equal(images[3], views.images[1, 1])
    assert set(maps) == {"occlusion", *MAP_VIEWS}
    np.testing.assert_array_equal(maps["contribution"][2], views.maps["contribution"][1, 0])
    np.testing.assert_array_equal(maps["occlusion"][1], views.occlusion[0, 1])
    assert views.batch()[0].shape == (8, 3, 32, 32)
    with pytest.raises(ValueError, match="n=5 must be an integer from 1 to 4"):
        views.batch(5)


def test_unit_views_of_a_probe_inside_a_resnet_on_non_square_images(resnet):
    """A layer is a name: the views of layer3's channels on 40x56 images, every array
    against the probe's own values and methods."""
    from cnnlab.probe import Probe

    probe = Probe(resnet, "layer3", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = torch.randint(0, 256, (10, 3, 40, 56), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    features = extract_features(probe, images, progress=False, precision="fp32")
    top = top_k(features, 3)
    views = unit_views(probe, images, top, [5, 200], k=2, methods=["gradient", "contribution"],
                       method_options={"synthesized": {"steps": 2, "like": images}})
    assert views.images.shape == (2, 2, 3, 40, 56)
    assert np.array_equal(views.indices, top[:2, [5, 200]].T)
    best = features[views.indices, np.array([[5], [200]])]
    np.testing.assert_allclose(views.activation, best, rtol=1e-4, atol=1e-5)
    # layer3 is no Linear: no bias, and the title does not claim an exact split
    assert not views.exact and not views.bias.any()
    # the contribution map is read at layer3 itself (3x4 on 40x56), and sums to the unit
    assert views.maps["contribution"].shape == (2, 2, 3, 4)
    np.testing.assert_allclose(views.maps["contribution"].sum(axis=(2, 3)), views.activation,
                               rtol=1e-4, atol=1e-5)
    grad = attribution.gradient(probe, views.images[1], [200, 200])
    np.testing.assert_allclose(views.maps["gradient"][1], grad, rtol=1e-5, atol=1e-7)
    assert views.occlusion.shape[:2] == (2, 2)
    assert views.synthesized.shape == (2, 3, 40, 56)
    fig = plot_unit_views(views, n_best=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "contribution\n(3x4)" in titles


def test_course_views_claim_the_exact_8x8_contribution(views):
    assert views.exact and views.maps["contribution"].shape[-2:] == (8, 8)
    fig = plot_unit_views(views, show=["contribution"], n_best=0)
    assert fig.axes[0].get_title() == TITLES["contribution"] == "contribution\n(8x8, exact)"


def test_the_lab_figure_shows_guided_backprop_for_exercise_9():
    views = hand_views()
    fig = plot_unit_views(views, n_best=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert TITLES["guided_backprop"] in titles
    panel = fig.axes[titles.index(TITLES["guided_backprop"])]
    np.testing.assert_array_equal(_arrays(panel)[1], views.maps["guided_backprop"][0, 0])


def test_the_outputs_of_a_network_are_named_by_class_in_every_unit_figure():
    """A tiny network read at its outputs (layer '') with class names: the top-K grid,
    the occlusion grid and the every-view rows are titled by class, not "unit u"."""
    from cnnlab.occlusion import plot_occlusion
    from cnnlab.probe import Probe

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3))
    probe = Probe(net, "", classes=["ant", "bee", "cow"])
    images = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    top = top_k(extract_features(probe, images, progress=False, precision="fp32"), 2)
    views = unit_views(probe, images, top, [2, 1], methods=["gradient"], synthesize=False,
                       size=5, stride=3)
    assert views.classes == ("ant", "bee", "cow")
    fig = plot_top_k(images, top, [2, 1], classes=probe.classes)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["class 'cow'", "class 'bee'"]
    fig = plot_occlusion(images, top, [2, 1], views.occlusion.transpose(1, 0, 2, 3),
                         classes=probe.classes)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["class 'cow'", "class 'bee'"]
    fig = plot_unit_views(views, n_best=1)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert [lab.split(" (dead)")[0] for lab in labels] == ["class 'cow'", "class 'bee'"]
    assert fig._suptitle.get_text().startswith("One class, every view")
    assert views.of_unit(1).classes == probe.classes


def test_the_course_network_s_units_keep_their_numbers(views):
    """The default course probe (its 128 units) has no class names: rows say "unit u"
    and the title is the lab's, as before."""
    assert views.classes is None
    fig = plot_unit_views(views, n_best=1)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert [lab.split(" (dead)")[0] for lab in labels] == ["unit 3", "unit 7"]
    assert fig._suptitle.get_text() == ("One unit, every view: the maps are on each unit's "
                                        "best image (red raises the unit, blue lowers it)")
