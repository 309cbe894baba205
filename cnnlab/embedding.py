"""Section 5 of the lab: a 2-D map of the feature space (PCA, then t-SNE).

:func:`embed` reduces the (N, 128) features to 20 dimensions with PCA, then to
2 with scikit-learn's t-SNE, with a fixed seed; results are cached in memory,
so re-running a notebook cell with the same features is instant.
:func:`trustworthiness_score` says how well the 2-D map keeps each point's
neighbours, and :func:`plot_embedding` draws it coloured by class.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ._figures import class_style, new_figure
from ._memo import remembered
from ._pixels import to_display
from ._validate import feature_array, whole_number
from .config import or_config

#: How many embeddings the in-memory cache keeps (the most recently used ones).
CACHE_SIZE = 4
_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()

#: scikit-learn's smallest allowed ``max_iter`` for TSNE.
MIN_TSNE_ITER = 250


def _as_features(features, name: str = "features") -> np.ndarray:
    source = "embed" if name == "embedding" else "extract_features"
    return feature_array(features, name, dtype=np.float32, source=source)


def check_points(embedding, labels, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``embedding`` as float32 (N, 2) and ``labels`` as an (N,) array of class numbers.

    Raises:
        ValueError: ``embedding`` is not (N, 2), ``labels`` does not have one
            class per point, or a label has no name in ``classes``.
    """
    embedding = _as_features(embedding, "embedding")
    if embedding.shape[1] != 2:
        raise ValueError(f"embedding must have shape (N, 2), got {embedding.shape}.")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.shape != (embedding.shape[0],):
        raise ValueError(
            f"labels must have one class per point, shape ({embedding.shape[0]},), got "
            f"{labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(
            f"labels run from {labels.min()} to {labels.max()}, but there are "
            f"{len(classes)} class names (labels 0 to {len(classes) - 1})."
        )
    return embedding, labels


def check_point(point, n: int) -> int:
    """``point`` as an int, checked to be one of the ``n`` points of a map (0..n-1)."""
    return whole_number(point, "point", 0, n - 1, why="is not a point of the map")


def _cache_key(features: np.ndarray, params: tuple) -> str:
    digest = hashlib.sha256()
    digest.update(repr((features.shape, params)).encode())
    digest.update(np.ascontiguousarray(features).tobytes())
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget every cached embedding."""
    _CACHE.clear()


@remembered
def embed(
    features,
    pca_dims: int | None = None,
    seed: int | None = None,
    max_iter: int | None = None,
    perplexity: float | None = None,
    cache: bool = True,
) -> np.ndarray:
    """2-D t-SNE embedding of the features, after a PCA.

    Every parameter left at None takes the configuration's value
    (:class:`cnnlab.LabConfig`: ``pca_dims``, ``seed``, ``tsne_iter``,
    ``perplexity``).

    Args:
        features: (N, D) array or tensor, e.g. the (10000, 128) test features.
        pca_dims: dimensions kept by the PCA before t-SNE, 2..min(N, D); 0
            skips the PCA; None for the configuration's (20).
        seed: random seed of the PCA and t-SNE (same seed, same map).
        max_iter: t-SNE iterations, at least 250 (scikit-learn's minimum); the
            configuration's is 500.
        perplexity: t-SNE's effective number of neighbours, below N (30).
        cache: reuse the result of an earlier call with the same features and
            parameters (the last few calls are kept in memory).

    Returns:
        float32 array (N, 2).

    Raises:
        ValueError: features not 2-D, or a parameter out of its range.

    Example:
        >>> xy = embed(features)  # (10000, 2); about 30 s on 2 CPU cores
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    config_pca, seed = or_config(pca_dims, "pca_dims"), or_config(seed, "seed")
    max_iter, perplexity = or_config(max_iter, "tsne_iter"), or_config(perplexity, "perplexity")
    features = _as_features(features)
    n, d = features.shape
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n}.")
    pca_dims = config_pca
    if pca_dims != 0:
        pca_dims = whole_number(
            pca_dims, "pca_dims", 2, min(n, d),
            why=f"is not possible for {n} points of {d} dimensions",
            advice="0 skips the PCA.",
        )
    max_iter = whole_number(
        max_iter, "max_iter", MIN_TSNE_ITER,
        advice=f"scikit-learn's t-SNE needs at least {MIN_TSNE_ITER} iterations; the lab "
               f"uses {or_config(None, 'tsne_iter')}.",
    )
    if (isinstance(perplexity, bool) or not isinstance(perplexity, numbers.Real)
            or not 0 < perplexity < n):
        raise ValueError(
            f"perplexity={perplexity!r} must be above 0 and below the number of points "
            f"({n}); 5 to 50 is usual, the lab uses 30."
        )
    params = (int(pca_dims), int(seed), max_iter, float(perplexity))
    key = _cache_key(features, params)
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].copy()
    reduced = features
    if pca_dims:
        reduced = PCA(n_components=int(pca_dims), random_state=seed).fit_transform(features)
    tsne = TSNE(
        n_components=2,
        perplexity=float(perplexity),
        max_iter=int(max_iter),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    result = tsne.fit_transform(reduced).astype(np.float32)
    if cache:
        _CACHE[key] = result.copy()
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def trustworthiness_score(
    features, embedding, n: int = 2000, seed: int = 0, n_neighbors: int = 5
) -> float:
    """How well the embedding keeps neighbours (1.0 = perfectly), on a subsample.

    scikit-learn's ``trustworthiness`` on ``n`` points drawn at random (all of
    them if there are fewer), since it costs O(N^2).

    Args:
        features: (N, D) original features.
        embedding: (N, 2) from :func:`embed`, same rows.
        n: points used.
        seed: seed of the subsample.
        n_neighbors: neighbourhood size, below half the points used.

    Returns:
        A float in [0, 1].
    """
    from sklearn.manifold import trustworthiness

    features = _as_features(features)
    embedding = _as_features(embedding, "embedding")
    if embedding.shape[0] != features.shape[0]:
        raise ValueError(
            f"embedding has {embedding.shape[0]} rows but features has "
            f"{features.shape[0]}: they must describe the same points, in the same order."
        )
    n = whole_number(n, "n", advice="It is the number of points used.")
    rows = np.arange(features.shape[0])
    if n < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    if not 1 <= n_neighbors < len(rows) / 2:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be at least 1 and below half the points "
            f"used ({len(rows)}); 5 is usual."
        )
    return float(trustworthiness(features[rows], embedding[rows], n_neighbors=n_neighbors))


def plot_embedding(
    embedding,
    labels,
    classes: Sequence[str],
    fig: Figure | None = None,
    title: str | None = None,
    *,
    shown: Sequence[int] | None = None,
    point: int | None = None,
    image=None,
) -> Figure:
    """Scatter the 2-D embedding, one colour per class, with a legend of class names.

    Args:
        embedding: (N, 2) from :func:`embed`.
        labels: (N,) int class of each point, 0..len(classes)-1.
        classes: class names in label order (``cnnlab.data.CLASSES``).
        fig: figure to draw into (cleared first); a new one if None.
        title: axes title; a default one if None.
        shown: the classes (label numbers) whose points are drawn; None for all. The
            legend keeps every class; the default title counts the points and classes shown.
        point: a point to circle (0..N-1), also when its class is not shown.
        image: with ``point``, its image (C, H, W), drawn to the right of the map and
            titled with the point's number and class.

    Returns:
        The matplotlib Figure (colours told apart with colour-vision deficiencies too:
        ``cnnlab._figures.CLASS_COLOURS``; beyond ten classes the marker changes).
    """
    embedding, labels = check_points(embedding, labels, classes)
    visible = np.ones(len(labels), bool) if shown is None else np.isin(labels, list(shown))
    if point is not None:
        point = check_point(point, len(labels))
    fig = new_figure(fig, figsize=(7.5, 6.0))
    ax = fig.add_subplot()
    size = 3 if visible.sum() > 2000 else 8
    for c, name in enumerate(classes):
        points = embedding[visible & (labels == c)]
        ax.scatter(points[:, 0], points[:, 1], s=size, label=name, alpha=0.7, linewidths=0,
                   **class_style(c))
    ax.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is None and shown is not None:
        title = (f"t-SNE of {int(visible.sum())} of {len(labels)} points "
                 f"({len(shown)} of {len(classes)} classes)")
    ax.set_title(title or f"t-SNE of {int(visible.sum())} feature vectors, coloured by class")
    if point is not None:
        ax.scatter(*embedding[point], s=160, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=3)
    if point is not None and image is not None:
        thumb = ax.inset_axes([1.02, 0.0, 0.24, 0.24])
        thumb.imshow(to_display(torch.as_tensor(np.asarray(image))))
        thumb.set_xticks([])
        thumb.set_yticks([])
        thumb.set_title(f"#{point}: {classes[int(labels[point])]}", fontsize=9)
    return fig
