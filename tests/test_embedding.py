"""PCA + t-SNE embedding, its cache, trustworthiness, and the scatter plot."""

import matplotlib
import numpy as np
import pytest
import sklearn.manifold
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from cnnlab import embedding
from cnnlab._figures import CLASS_COLOURS
from cnnlab.embedding import embed, plot_embedding, trustworthiness_score

FAST = {"pca_dims": 5, "max_iter": 400, "perplexity": 20.0}


@pytest.fixture(scope="module")
def clusters():
    """180 points in 10-D: three well separated Gaussian clusters of 60."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(3, 10))
    points = np.concatenate([c + rng.normal(size=(60, 10)) for c in centres])
    return points.astype(np.float32), np.repeat(np.arange(3), 60)


@pytest.fixture(scope="module")
def clusters_2d(clusters):
    embedding.clear_cache()
    return embed(clusters[0], seed=0, **FAST)


def test_embedding_shape_dtype_and_separation(clusters, clusters_2d):
    features, labels = clusters
    assert clusters_2d.shape == (180, 2) and clusters_2d.dtype == np.float32
    # Every point's nearest neighbour in the map belongs to its own cluster.
    d = ((clusters_2d[:, None] - clusters_2d[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).all()


def test_trustworthiness_is_high_for_tsne_and_low_for_noise(clusters, clusters_2d):
    features, _ = clusters
    good = trustworthiness_score(features, clusters_2d)
    noise = np.random.default_rng(1).normal(size=(180, 2))
    bad = trustworthiness_score(features, noise)
    assert good > 0.9
    assert bad < 0.6
    assert trustworthiness_score(features[:, :2], features[:, :2]) == pytest.approx(1.0)


def test_same_seed_same_map_without_the_cache(clusters, clusters_2d):
    again = embed(clusters[0], seed=0, cache=False, **FAST)
    np.testing.assert_array_equal(again, clusters_2d)


def test_cache_returns_the_same_map_without_running_tsne(monkeypatch, clusters):
    features = clusters[0][:60]
    calls = []

    class CountingTSNE(sklearn.manifold.TSNE):
        def fit_transform(self, X, y=None):
            calls.append(len(X))
            return super().fit_transform(X)

    monkeypatch.setattr(sklearn.manifold, "TSNE", CountingTSNE)
    embedding.clear_cache()
    first = embed(features, seed=3, **FAST)
    first[0] = 1e9  # callers may scribble on their copy
    second = embed(features, seed=3, **FAST)
    assert calls == [60]
    assert second[0, 0] != 1e9
    embed(features, seed=4, **FAST)  # another parameter: computed again
    embed(features.copy() + 1, seed=3, **FAST)  # other features: computed again
    assert calls == [60, 60, 60]
    assert len(embedding._CACHE) <= embedding.CACHE_SIZE


def test_cache_keeps_only_the_last_few(monkeypatch, clusters):
    class InstantTSNE:  # the cache policy is under test here, not t-SNE
        def __init__(self, random_state, **kwargs):
            self.seed = random_state

        def fit_transform(self, X):
            return np.full((len(X), 2), float(self.seed))

    monkeypatch.setattr(sklearn.manifold, "TSNE", InstantTSNE)
    embedding.clear_cache()
    for seed in range(embedding.CACHE_SIZE + 2):
        embed(clusters[0][:30], seed=seed, pca_dims=3, max_iter=250, perplexity=5.0)
    assert len(embedding._CACHE) == embedding.CACHE_SIZE
    # The two oldest (seeds 0 and 1) were dropped, the newest are still there.
    kept = sorted(float(v[0, 0]) for v in embedding._CACHE.values())
    assert kept == [float(s) for s in range(2, embedding.CACHE_SIZE + 2)]


def test_pca_can_be_skipped(clusters):
    xy = embed(clusters[0][:40], pca_dims=0, max_iter=250, perplexity=5.0, cache=False)
    assert xy.shape == (40, 2)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"pca_dims": 11}, ["pca_dims=11", "from 2 to 10", "0 skips the PCA"]),
        ({"max_iter": 100}, ["max_iter=100", "at least 250"]),
        ({"perplexity": 180.0}, ["perplexity=180.0", "below the number of points (180)"]),
    ],
)
def test_embed_errors(clusters, kwargs, words):
    with pytest.raises(ValueError) as info:
        embed(clusters[0], **{**FAST, **kwargs})
    for word in words:
        assert word in str(info.value)


def test_embed_rejects_non_2d_features():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        embed(np.zeros(10))


def test_trustworthiness_subsample_and_errors(clusters, clusters_2d):
    features, _ = clusters
    score = trustworthiness_score(features, clusters_2d, n=100, seed=2)
    assert 0.0 <= score <= 1.0
    with pytest.raises(ValueError, match="179 rows but features has 180"):
        trustworthiness_score(features, clusters_2d[:-1])
    with pytest.raises(ValueError, match="n_neighbors=5"):
        trustworthiness_score(features, clusters_2d, n=8)


def test_plot_embedding_colours_and_legend(clusters, clusters_2d):
    _, labels = clusters
    names = ("left", "middle", "right")
    fig = plot_embedding(clusters_2d, labels, names)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(names)
    for c, collection in enumerate(ax.collections):
        np.testing.assert_allclose(collection.get_offsets(), clusters_2d[labels == c])
        np.testing.assert_allclose(collection.get_facecolor()[0][:3],
                                   to_rgba(CLASS_COLOURS[c])[:3])


def test_plot_embedding_hides_classes_circles_a_point_and_shows_its_image():
    """What the embedding explorer draws: the ticked classes only (the legend keeps all),
    the chosen point circled even when its class is hidden, and its image beside."""
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(12, 2)).astype(np.float32)
    labels = np.arange(12) % 3
    image = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    fig = plot_embedding(xy, labels, ("a", "b", "c"), shown=[0, 2], point=4, image=image)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ax.get_title() == "t-SNE of 8 of 12 points (2 of 3 classes)"
    a, b, c, ring = ax.collections
    np.testing.assert_allclose(a.get_offsets(), xy[labels == 0])
    assert len(b.get_offsets()) == 0  # class b is hidden
    np.testing.assert_allclose(c.get_offsets(), xy[labels == 2])
    np.testing.assert_allclose(ring.get_offsets(), xy[[4]])  # point 4 is a b: still circled
    (inset,) = ax.child_axes
    assert inset.get_title() == "#4: b"
    np.testing.assert_allclose(inset.get_images()[0].get_array(),
                               image.transpose(1, 2, 0) / 255.0)
    assert not plot_embedding(xy, labels, ("a", "b", "c")).axes[0].child_axes
    with pytest.raises(ValueError, match="point=12 is not a point of the map"):
        plot_embedding(xy, labels, ("a", "b", "c"), point=12)


VISIONS = ("normal", "deuteranomaly", "protanomaly", "tritanomaly")


def closest_pair(rgb: np.ndarray, vision: str) -> float:
    """The smallest CAM02-UCS distance between two of the colours ``rgb`` (n, 3) as a
    reader with ``vision`` sees them (colorspacious's simulation at full severity)."""
    from colorspacious import cspace_convert

    if vision != "normal":
        cvd = {"name": "sRGB1+CVD", "cvd_type": vision, "severity": 100}
        rgb = np.clip(cspace_convert(rgb, cvd, "sRGB1"), 0, 1)
    ucs = cspace_convert(rgb, "sRGB1", "CAM02-UCS")
    d = np.linalg.norm(ucs[:, None] - ucs[None], axis=-1)
    return float(d[~np.eye(len(rgb), dtype=bool)].min())


def test_ten_classes_stay_apart_for_colour_blind_readers():
    """The t-SNE map's ten classes as drawn, under simulated deuteranopia, protanopia and
    tritanopia: no two closer than 15 (CAM02-UCS); tab10, the usual default, fails."""
    pytest.importorskip("colorspacious", reason="colorspacious simulates colour blindness")
    rng = np.random.default_rng(0)
    fig = plot_embedding(rng.normal(size=(100, 2)), np.arange(100) % 10, [str(c) for c in range(10)])
    drawn = np.array([c.get_facecolor()[0][:3] for c in fig.axes[0].collections])
    tab10 = np.array([matplotlib.colormaps["tab10"](c)[:3] for c in range(10)])
    for vision in VISIONS:
        assert closest_pair(drawn, vision) >= 15, vision
    assert min(closest_pair(tab10, v) for v in VISIONS[1:3]) < 5


def test_confusion_colours_darken_with_the_count_for_every_reader():
    """The confusion matrix's colour map keeps its order (lightness falls as the count
    rises) under every simulated colour-vision deficiency."""
    colorspacious = pytest.importorskip("colorspacious")
    from cnnlab.metrics import plot_confusion

    counts = np.arange(100).reshape(10, 10)
    fig = plot_confusion(counts, [str(c) for c in range(10)])
    image = next(a for a in fig.axes[0].get_images())
    ramp = image.cmap(np.linspace(0, 1, 64))[:, :3]
    for vision in VISIONS:
        rgb = ramp if vision == "normal" else np.clip(colorspacious.cspace_convert(
            ramp, {"name": "sRGB1+CVD", "cvd_type": vision, "severity": 100}, "sRGB1"), 0, 1)
        lightness = colorspacious.cspace_convert(rgb, "sRGB1", "CAM02-UCS")[:, 0]
        assert np.all(np.diff(lightness) < 0), vision


def test_plot_embedding_errors(clusters_2d):
    with pytest.raises(ValueError, match="labels run from 0 to 3"):
        plot_embedding(clusters_2d, np.arange(180) % 4, ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"shape \(180,\)"):
        plot_embedding(clusters_2d, np.zeros(10, int), ("a",))
