"""The feature extractor, batched feature extraction, unit validation and top-K."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnlab.activations import (extract_features, feature_extractor, plot_top_k, top_k,
                                validate_units)
from cnnlab.data import normalize, to_display

# --- feature_extractor ----------------------------------------------------------


def test_default_extractor_is_model_up_to_the_first_linear(model):
    extractor = feature_extractor(model)
    assert len(extractor) == 14
    assert all(extractor[i] is model[i] for i in range(14))  # shares the layers
    assert isinstance(extractor[-1], nn.Linear) and extractor[-1].out_features == 128


def test_extractor_follows_later_changes_to_the_weights(model, images):
    extractor = feature_extractor(model)
    with torch.no_grad():
        model[13].bias.add_(1.0)
    x = normalize(images[:2])
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(extractor(x), model[:14](x))
        assert torch.allclose(extractor(x) - 1.0, nn.functional.linear(
            model[:13](x), model[13].weight, model[13].bias - 1.0), atol=1e-5)


def test_extractor_upto_and_its_errors(model):
    assert len(feature_extractor(model, upto=12)) == 13
    with pytest.raises(ValueError, match=r"upto=17 .* 17 layers, numbered 0 to 16"):
        feature_extractor(model, upto=17)
    with pytest.raises(TypeError, match="nn.Sequential"):
        feature_extractor(nn.Linear(3, 3))


# --- extract_features -----------------------------------------------------------------


def test_features_equal_one_plain_forward_pass(model, images):
    extractor = feature_extractor(model)
    with torch.no_grad():
        expected = model.eval()[:14](normalize(images)).numpy()
    model.train()
    for batch_size in (1, 4, 512):
        got = extract_features(extractor, images, batch_size=batch_size, progress=False,
                               precision="fp32")
        assert got.shape == (6, 128) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_features_of_normalised_floats_equal_those_of_uint8(model, images):
    extractor = feature_extractor(model)
    a = extract_features(extractor, images, progress=False, precision="fp32")
    b = extract_features(extractor, normalize(images), progress=False, precision="fp32")
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_features_use_eval_mode_and_restore_train_mode(model, images):
    extractor = feature_extractor(model)
    model.train()
    a = extract_features(extractor, images, progress=False, precision="fp32")
    b = extract_features(extractor, images, progress=False, precision="fp32")
    np.testing.assert_array_equal(a, b)  # no dropout inside
    assert model.training and all(m.training for m in model.modules())
    assert torch.is_grad_enabled()


def test_auto_precision_is_close_to_fp32(model, images):
    extractor = feature_extractor(model)
    fp32 = extract_features(extractor, images, progress=False, precision="fp32")
    auto = extract_features(extractor, images, progress=False, precision="auto")
    assert auto.dtype == np.float32
    assert np.abs(auto - fp32).max() <= 0.02 * np.abs(fp32).max()


def test_feature_maps_are_flattened(model, images):
    maps = extract_features(model[:1], images, progress=False, precision="fp32")
    assert maps.shape == (6, 32 * 32 * 32)


def test_extract_features_errors(model, images):
    extractor = feature_extractor(model)
    with pytest.raises(ValueError, match="empty"):
        extract_features(extractor, images[:0], progress=False)
    with pytest.raises(ValueError, match=r"one image.*images\[None\]"):
        extract_features(extractor, images[0], progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        extract_features(extractor, images, batch_size=0, progress=False)


# --- validate_units ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "units, expected",
    [
        ([1, 2, 4, 14, 23, 29, 127], [1, 2, 4, 14, 23, 29, 127]),
        ((0, 127), [0, 127]),
        (range(3), [0, 1, 2]),
        (np.array([5, 6]), [5, 6]),
        (torch.tensor([7, 8]), [7, 8]),
        ([np.int64(3), np.int32(4)], [3, 4]),
        (14, [14]),
        (np.int64(14), [14]),
        ([9, 9], [9, 9]),
    ],
)
def test_valid_units_are_returned_as_plain_ints(units, expected):
    got = validate_units(units, 128)
    assert got == expected
    assert all(type(u) is int for u in got)


def test_the_planted_bug_of_exercise_5_reads_like_the_lab_says():
    with pytest.raises(ValueError) as info:
        validate_units([1, 2, 4, 14, 23, 29, 128], 128)
    assert str(info.value) == (
        "units[6] = 128 is not a unit of this layer: it has 128 units, numbered 0 to 127 "
        "(units count from 0, so the last one is 127). Replace 128 with a number from "
        "0 to 127."
    )


@pytest.mark.parametrize(
    "units, error, words",
    [
        ([], ValueError, ["units is empty", "at least one unit"]),
        (128, ValueError, ["units = 128 is not a unit", "0 to 127"]),
        ([3, -1], ValueError, ["units[1] = -1", "negative numbers do not count from the end"]),
        ([3.0], TypeError, ["units[0] = 3.0", "not a whole number", "Write 3 instead"]),
        ([2.5], TypeError, ["units[0] = 2.5", "integers from 0 to 127"]),
        (np.array([1.0, 2.0]), TypeError, ["units[0] = 1.0"]),
        ([True], TypeError, ["True/False"]),
        ("14", TypeError, ["is text", "without quotes"]),
        (None, TypeError, ["units is None"]),
        ([[1, 2]], TypeError, ["units[0] = [1, 2]"]),
    ],
)
def test_invalid_units_are_explained(units, error, words):
    with pytest.raises(error) as info:
        validate_units(units, 128)
    for word in words:
        assert word in str(info.value)


def test_validate_units_uses_the_given_name_and_size():
    with pytest.raises(ValueError, match=r"chosen\[0\] = 10 .* 10 units, numbered 0 to 9"):
        validate_units([10], 10, name="chosen")


# --- top_k ----------------------------------------------------------------------------


def test_top_k_by_hand_with_ties_going_to_the_lower_index():
    features = np.array(
        [[0.0, 5.0, 1.0],
         [2.0, 1.0, 1.0],
         [1.0, 3.0, 1.0],
         [2.0, 0.0, 0.0]]
    )
    got = top_k(features, k=3)
    assert got.dtype == np.int64 and got.shape == (3, 3)
    np.testing.assert_array_equal(got, [[1, 0, 0], [3, 2, 1], [2, 1, 2]])


def test_top_k_equals_argsort_on_distinct_values():
    features = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    expected = np.argsort(features, axis=0)[::-1][:10]
    np.testing.assert_array_equal(top_k(features, k=10), expected)
    np.testing.assert_array_equal(top_k(torch.from_numpy(features), k=10), expected)


def test_top_k_with_many_ties_equals_a_python_sort():
    features = np.random.default_rng(1).integers(0, 3, size=(50, 4)).astype(np.float32)
    got = top_k(features, k=7)
    for unit in range(4):
        expected = sorted(range(50), key=lambda i: (-features[i, unit], i))[:7]
        assert got[:, unit].tolist() == expected


@pytest.mark.parametrize("k", [0, 5])
def test_top_k_rejects_impossible_k(k):
    with pytest.raises(ValueError, match=r"k=.* with 4 images: use an integer from 1 to 4"):
        top_k(np.zeros((4, 3)), k=k)


def test_top_k_rejects_a_k_that_is_not_whole():
    with pytest.raises(TypeError, match=r"k=2.0 is not a whole number .*from 1 to 4"):
        top_k(np.zeros((4, 3)), k=2.0)


def test_top_k_rejects_non_2d_features():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        top_k(np.zeros(5), k=1)


# --- plot_top_k ---------------------------------------------------------------------


def test_plot_top_k_puts_each_unit_top_images_in_its_column():
    # Image i is a flat colour whose red channel is i, so cells are easy to identify.
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    images[:, 0] = torch.arange(8, dtype=torch.uint8)[:, None, None] * 30
    features = np.random.default_rng(2).normal(size=(8, 5))
    top = top_k(features, k=3)
    fig = plot_top_k(images, top, [4, 0])
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes).reshape(3, 2)
    assert [ax.get_title() for ax in axes[0]] == ["unit 4", "unit 0"]
    for j, unit in enumerate([4, 0]):
        for i in range(3):
            shown = axes[i, j].get_images()[0].get_array()
            np.testing.assert_allclose(shown, to_display(images[top[i, unit]]))


def test_plot_top_k_explains_a_bad_unit():
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    top = top_k(np.zeros((8, 5)), k=2)
    with pytest.raises(ValueError, match=r"units\[1\] = 5 .* 5 units, numbered 0 to 4"):
        plot_top_k(images, top, [1, 5])


def test_plot_top_k_accepts_reversed_indices():
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    images[:, 1] = torch.arange(8, dtype=torch.uint8)[:, None, None] * 30
    top = top_k(np.random.default_rng(3).normal(size=(8, 2)), k=4)
    fig = plot_top_k(images, top[::-1], [1])  # least activating first
    shown = [ax.get_images()[0].get_array()[0, 0, 1] for ax in fig.axes]
    np.testing.assert_allclose(shown, [30 * i / 255 for i in top[::-1, 1]], rtol=1e-6)


# --- firing_stats, dead_units, plot_firing ----------------------------------------


def _model_with_dead_units():
    """A Linear(4, 6) on inputs in [0, 1]: units 1 and 4 get a bias of -100, so their
    value is below -96 on every input; unit 5 gets weights 0 and bias 0, so it is
    exactly 0 (which does not count as firing either). Units 0, 2 and 3 fire on
    some inputs and not on others."""
    layer = nn.Linear(4, 6)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([
            [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0, 1.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([-1.0, -100.0, 0.0, 0.1, -100.0, 0.0]))
    return layer


def test_dead_units_of_a_model_built_to_have_some():
    from cnnlab.activations import dead_units, firing_stats

    layer = _model_with_dead_units()
    x = torch.rand(50, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = layer(x)
    np.testing.assert_array_equal(dead_units(features), [1, 4, 5])
    stats = firing_stats(features.numpy())
    assert stats.n_images == 50
    assert stats.dead_fraction == pytest.approx(3 / 6)
    np.testing.assert_array_equal(stats.rate[[1, 4, 5]], 0.0)
    np.testing.assert_array_equal(stats.mean_positive[[1, 4, 5]], 0.0)
    # The live units, counted by hand.
    f = features.numpy()
    for u in (0, 2, 3):
        assert stats.rate[u] == pytest.approx((f[:, u] > 0).mean())
        assert stats.max[u] == f[:, u].max()
        assert stats.mean_positive[u] == pytest.approx(f[:, u][f[:, u] > 0].mean())
    # A dead unit's "top-K" is only its least negative images.
    best = top_k(f, 3)[:, 1]
    np.testing.assert_array_equal(np.sort(f[best, 1])[::-1], np.sort(f[:, 1])[::-1][:3])
    assert (f[best, 1] < 0).all()


def test_firing_stats_by_hand():
    from cnnlab.activations import firing_stats

    features = np.array([[1.0, -1.0, 0.0], [3.0, -2.0, 0.5], [-1.0, -3.0, 0.0],
                         [2.0, -0.5, 0.0]], dtype=np.float32)
    stats = firing_stats(features)
    np.testing.assert_allclose(stats.rate, [0.75, 0.0, 0.25])
    np.testing.assert_allclose(stats.max, [3.0, -0.5, 0.5])
    np.testing.assert_allclose(stats.mean_positive, [2.0, 0.0, 0.5])
    np.testing.assert_array_equal(stats.dead, [1])


@pytest.mark.parametrize(
    "features, words",
    [(np.zeros((0, 3)), "non-empty (N, D)"), (np.zeros(5), "non-empty (N, D)"),
     (np.array([[np.nan, 1.0]]), "NaN")],
)
def test_firing_stats_rejects_bad_features(features, words):
    from cnnlab.activations import firing_stats

    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        firing_stats(features)


def test_plot_firing_colours_the_dead_units_and_marks_the_chosen_ones():
    from cnnlab.activations import plot_firing

    layer = _model_with_dead_units()
    with torch.no_grad():
        features = layer(torch.rand(30, 4, generator=torch.Generator().manual_seed(3)))
    fig = plot_firing(features, units=[0, 4])
    assert isinstance(fig, Figure)
    rate_ax, max_ax = fig.axes
    red = [i for i, bar in enumerate(max_ax.patches)
           if np.allclose(bar.get_facecolor()[:3], (0.839, 0.153, 0.157), atol=1e-2)]
    assert red == [1, 4, 5]
    heights = [bar.get_height() for bar in max_ax.patches]
    np.testing.assert_allclose(heights, features.numpy().max(axis=0), rtol=1e-6)
    assert {t.get_text() for t in rate_ax.texts} == {"0", "4"}
    assert "3 of 6 never do" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="is not a unit of this layer"):
        plot_firing(features, units=[6])


def test_plot_top_k_titles_a_network_s_outputs_by_their_classes():
    """Given the names of the units (a probe's classes), each column says its class; the
    names must be one per unit."""
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    top = top_k(np.random.default_rng(4).normal(size=(8, 3)), k=2)
    fig = plot_top_k(images, top, [2, 0], classes=["ant", "bee", "cow"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["class 'cow'", "class 'ant'"]
    assert fig._suptitle.get_text().startswith("Top 2 images per class")
    with pytest.raises(ValueError, match="classes has 2 names for 3 units"):
        plot_top_k(images, top, [0], classes=["ant", "bee"])
    with pytest.raises(TypeError, match="one per unit"):
        plot_top_k(images, top, [0], classes="ant")
