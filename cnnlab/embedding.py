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

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from ._figures import new_figure
from ._inference import is_whole

#: How many embeddings the in-memory cache keeps (the most recently used ones).
CACHE_SIZE = 4
_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()

#: scikit-learn's smallest allowed ``max_iter`` for TSNE.
MIN_TSNE_ITER = 250


def _as_features(features, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty (N, D) array, one row per image, got shape "
            f"{features.shape}."
        )
    return features


def _cache_key(features: np.ndarray, params: tuple) -> str:
    digest = hashlib.sha256()
    digest.update(repr((features.shape, params)).encode())
    digest.update(np.ascontiguousarray(features).tobytes())
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget every cached embedding."""
    _CACHE.clear()


def embed(
    features,
    pca_dims: int | None = 20,
    seed: int = 0,
    max_iter: int = 800,
    perplexity: float = 30.0,
    cache: bool = True,
) -> np.ndarray:
    """2-D t-SNE embedding of the features, after a PCA.

    Args:
        features: (N, D) array or tensor, e.g. the (10000, 128) test features.
        pca_dims: dimensions kept by the PCA before t-SNE, 2..min(N, D); None
            skips the PCA.
        seed: random seed of the PCA and t-SNE (same seed, same map).
        max_iter: t-SNE iterations, at least 250 (scikit-learn's minimum).
        perplexity: t-SNE's effective number of neighbours, below N.
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

    features = _as_features(features)
    n, d = features.shape
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n}.")
    if pca_dims is not None and (not is_whole(pca_dims, 2) or pca_dims > min(n, d)):
        raise ValueError(
            f"pca_dims={pca_dims!r} is not possible for {n} points of {d} dimensions: "
            f"use an integer from 2 to {min(n, d)}, or None to skip the PCA."
        )
    if not is_whole(max_iter, MIN_TSNE_ITER):
        raise ValueError(
            f"max_iter={max_iter!r}: scikit-learn's t-SNE needs at least "
            f"{MIN_TSNE_ITER} iterations (the lab uses 800)."
        )
    if not isinstance(perplexity, numbers.Real) or not 0 < perplexity < n:
        raise ValueError(
            f"perplexity={perplexity!r} must be above 0 and below the number of points "
            f"({n}); 5 to 50 is usual, the lab uses 30."
        )
    params = (None if pca_dims is None else int(pca_dims), int(seed), int(max_iter),
              float(perplexity))
    key = _cache_key(features, params)
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].copy()
    reduced = features
    if pca_dims is not None:
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
    if not is_whole(n, 1):
        raise ValueError(f"n={n!r} must be a positive number of points.")
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
) -> Figure:
    """Scatter the 2-D embedding, one colour per class, with a legend of class names.

    Args:
        embedding: (N, 2) from :func:`embed`.
        labels: (N,) int class of each point, 0..len(classes)-1.
        classes: class names in label order (``cnnlab.data.CLASSES``).
        fig: figure to draw into (cleared first); a new one if None.
        title: axes title; a default one if None.

    Returns:
        The matplotlib Figure (colours from the "tab10" colour map).
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
    cmap = matplotlib.colormaps["tab10"]
    fig = new_figure(fig, figsize=(7.5, 6.0))
    ax = fig.add_subplot()
    size = 3 if len(labels) > 2000 else 8
    for c, name in enumerate(classes):
        points = embedding[labels == c]
        ax.scatter(points[:, 0], points[:, 1], s=size, color=cmap(c % cmap.N),
                   label=name, alpha=0.7, linewidths=0)
    ax.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(labels)} feature vectors, coloured by class")
    return fig
