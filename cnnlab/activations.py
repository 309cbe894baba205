"""Section 2 and 3 of the lab: the feature extractor, its features, the top-K images.

The extractor is the network up to and including its first ``nn.Linear``
(``model[:14]`` for the course network): its output is the 128 "units" the lab
studies. :func:`extract_features` runs images through it in batches;
:func:`top_k` finds, for every unit, the images that excite it most;
:func:`firing_stats` and :func:`dead_units` say how often each unit fires (is
positive, so that the ReLU after the layer lets it through) and which never do.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ._figures import new_figure, unit_label, unit_word
from ._inference import Runner, as_image_batch
from ._memo import remembered
from ._pixels import to_display
from ._validate import class_names, feature_array, whole_number
from .config import or_config
from .probe import as_extractor, first_linear_index, input_channels


def feature_extractor(model: nn.Sequential, upto: int | None = None) -> nn.Sequential:
    """The layers of ``model`` up to and including index ``upto``.

    Args:
        model: the course network (an ``nn.Sequential``).
        upto: index of the last layer kept; ``None`` means the first ``nn.Linear``
            (13 for the course network, so the extractor is ``model[:14]``).

    Returns:
        ``model[:upto + 1]``, which shares its layers (and weights) with ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Sequential``.
        ValueError: ``upto`` is not a layer index of ``model``.

    Example:
        >>> extractor = feature_extractor(build_model())  # model[:14]
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"feature_extractor needs an nn.Sequential it can slice, got "
            f"{type(model).__name__}. Pass the network from cnnlab.build_model()."
        )
    if upto is None:
        upto = first_linear_index(model)
    upto = whole_number(
        upto, "upto", 0, len(model) - 1,
        why=f"is not a layer of this model: it has {len(model)} layers, numbered 0 to "
            f"{len(model) - 1}",
        advice="None means the first Linear layer.",
    )
    return model[: upto + 1]


@remembered
def extract_features(
    extractor: nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    progress: bool = True,
    precision: str | None = None,
) -> np.ndarray:
    """Run images through the extractor in batches and collect its outputs.

    Args:
        extractor: e.g. ``feature_extractor(model)``, or a :class:`cnnlab.Probe` (its
            units, normalised as its network expects); it runs on its own device
            and is put in eval mode for the call (its modes are restored afterwards).
        images: uint8 (N, C, H, W) with values 0..255 (normalised here), or a float
            tensor already normalised (to [-1, 1] for the course network).
        batch_size: images per forward pass.
        progress: show a progress bar (in a terminal or notebook only).
        precision: ``"auto"`` (bf16 autocast and channels_last where the hardware
            is fast at it, :func:`cnnlab.device.choose_precision`) or ``"fp32"``;
            None for the configuration's.

    Returns:
        float32 array (N, D): one row per image, the extractor's output flattened
        (D = 128 for the course extractor).

    Raises:
        ValueError: empty or wrongly shaped ``images``, bad ``batch_size`` or
            ``precision``.

    Example:
        >>> feats = extract_features(feature_extractor(model), test.images)  # (10000, 128)
    """
    extractor, mean, std = as_extractor(extractor)
    images = as_image_batch(images, channels=input_channels(extractor))
    batch_size = whole_number(batch_size, "batch_size", advice="The lab uses 128.")
    runner = Runner.of(extractor, precision)

    def forward(start: int, stop: int) -> torch.Tensor:
        x = runner.prepare(images[start:stop], mean, std)
        return extractor(x).float().reshape(stop - start, -1).cpu()

    with runner.inference(extractor):
        return runner.batched(forward, images.shape[0], batch_size, progress,
                              "features").numpy()


def validate_units(units, n_units: int, name: str = "units") -> list[int]:
    """Check a list of unit numbers and return it as plain ints.

    Args:
        units: one unit (an int) or a sequence of them (list, tuple, range,
            integer numpy array or tensor).
        n_units: how many units the layer has (128 for the course network).
        name: what the argument is called, for the error messages.

    Returns:
        The units as a list of Python ints, in the given order.

    Raises:
        TypeError: ``units`` is not a sequence of integers (floats, bools and
            strings are refused, even ``3.0``).
        ValueError: ``units`` is empty, or a unit is outside 0..n_units-1.

    Example:
        >>> validate_units([1, 2, 128], 128)
        Traceback (most recent call last):
        ValueError: units[2] = 128 is not a unit of this layer: it has 128 units, ...
    """
    n_units = whole_number(n_units, "n_units")
    last = n_units - 1
    example = "[1, 2, 4]" if n_units > 4 else "[0]"
    if units is None:
        raise TypeError(
            f"{name} is None: give the units to show as a list of integers from 0 to "
            f"{last}, e.g. {example}."
        )
    if isinstance(units, (str, bytes)):
        raise TypeError(
            f"{name} = {units!r} is text. Give a list of integers from 0 to {last}, "
            f"e.g. {example}, without quotes."
        )
    if isinstance(units, torch.Tensor):
        units = units.tolist()
    if isinstance(units, np.ndarray):
        units = units.tolist() if units.ndim == 0 else list(units)
    single = not isinstance(units, (Sequence, range, set, frozenset)) and not hasattr(
        units, "__iter__"
    )
    entries = [units] if single else list(units)
    if not entries:
        raise ValueError(
            f"{name} is empty: choose at least one unit, a number from 0 to {last}, "
            f"e.g. {name} = {example}."
        )
    result = []
    for i, u in enumerate(entries):
        label = name if single else f"{name}[{i}]"
        if isinstance(u, (bool, np.bool_)):
            raise TypeError(
                f"{label} = {bool(u)!r} is a True/False value, not a unit number. "
                f"Use an integer from 0 to {last}."
            )
        if not isinstance(u, numbers.Integral):
            shown = repr(u.item() if isinstance(u, np.generic) else u)
            hint = ""
            if isinstance(u, numbers.Real) and float(u).is_integer():
                hint = f" Write {int(u)} instead of {shown}."
            raise TypeError(
                f"{label} = {shown} is not a whole number ({type(u).__name__}): units are "
                f"numbered with integers from 0 to {last}.{hint}"
            )
        u = int(u)
        if not 0 <= u <= last:
            why = (
                " (negative numbers do not count from the end here)"
                if u < 0
                else f" (units count from 0, so the last one is {last})"
            )
            raise ValueError(
                f"{label} = {u} is not a unit of this layer: it has {n_units} units, "
                f"numbered 0 to {last}{why}. Replace {u} with a number from 0 to {last}."
            )
        result.append(u)
    return result


def top_k(features, k: int | None = None) -> np.ndarray:
    """For every unit, the indices of the k images that activate it most.

    Args:
        features: (N, D) array or tensor of activations (e.g. from
            :func:`extract_features`).
        k: images kept per unit, 1 <= k <= N; None for the configuration's
            ``top_k`` (10).

    Returns:
        int64 array (k, D): column ``u`` lists image indices for unit ``u``, most
        activating first; ties go to the lower image index.

    Raises:
        ValueError: ``features`` is not 2-D or empty, or ``k`` is out of range.

    Example:
        >>> top_k(np.array([[0.0, 5.0], [2.0, 1.0], [1.0, 3.0]]), k=2)
        array([[1, 0],
               [2, 2]])
    """
    features = feature_array(features)
    k = check_k(or_config(k, "top_k"), features.shape[0])
    # A stable sort of the negated values: descending, ties in index order.
    order = np.argsort(-features.astype(np.float64), axis=0, kind="stable")
    return order[:k].astype(np.int64)


def check_k(k, n: int, name: str = "k") -> int:
    """``k`` images per unit as an int, checked to be possible with ``n`` images."""
    return whole_number(k, name, 1, n,
                        why=f"images per unit is not possible with {n} images")


def _check_top_indices(top_indices, units, n_images: int | None = None
                       ) -> tuple[np.ndarray, list[int]]:
    """``top_indices`` as a contiguous (K, D) array and ``units`` validated against D;
    with ``n_images``, also that every index points at one of the images."""
    top_indices = np.ascontiguousarray(top_indices)  # no negative strides for torch
    if top_indices.ndim != 2:
        hint = (" That looks like occlusion maps: plot_occlusion takes (images, "
                "top_indices, units, maps).") if top_indices.ndim == 4 else ""
        raise ValueError(
            f"top_indices must be the (K, D) array returned by top_k, got shape "
            f"{top_indices.shape}.{hint}"
        )
    if n_images is not None and top_indices.size and top_indices.max() >= n_images:
        raise ValueError(
            f"top_indices refers to image {int(top_indices.max())} but images has only "
            f"{n_images}: pass the same images the features were computed on."
        )
    return top_indices, validate_units(units, top_indices.shape[1])


def _check_grid(images, top_indices, units, classes
                ) -> tuple[torch.Tensor, np.ndarray, list[int], tuple[str, ...] | None]:
    """The arguments of a top-K grid (:func:`plot_top_k`,
    :func:`cnnlab.occlusion.plot_occlusion`), checked: ``images`` as a batch, ``top_indices``
    and ``units`` by :func:`_check_top_indices`, ``classes`` one name per unit or None."""
    images = as_image_batch(images)
    top_indices, units = _check_top_indices(top_indices, units, images.shape[0])
    return images, top_indices, units, class_names(classes, top_indices.shape[1])


def _unit_grid(
    fig: Figure | None,
    k: int,
    units: Sequence[int],
    column: Callable[[int, int], np.ndarray],
    title: str,
    classes: Sequence[str] | None = None,
) -> Figure:
    """K rows of images, one column per unit titled "unit u" (or "class 'name'" when
    ``classes`` names the units, :func:`cnnlab._figures.unit_label`).

    ``column(j, u)`` gives column ``j`` (unit ``u``): K display images (K, H, W, 3);
    it is called column by column, after the figure is made.
    """
    fig = new_figure(fig, figsize=(1.1 * len(units) + 0.4, 1.1 * k + 0.6))
    axes = fig.subplots(k, len(units), squeeze=False)
    for j, u in enumerate(units):
        pictures = column(j, u)
        for i in range(k):
            ax = axes[i, j]
            ax.imshow(pictures[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(unit_label(u, classes), fontsize=9)
    fig.suptitle(title)
    return fig


def plot_top_k(
    images: torch.Tensor,
    top_indices: np.ndarray,
    units: Sequence[int],
    fig: Figure | None = None,
    title: str | None = None,
    classes: Sequence[str] | None = None,
) -> Figure:
    """Grid of the top-K images: K rows, one column per unit, titled "unit u".

    Args:
        images: uint8 (N, 3, H, W), the images ``top_indices`` points into.
        top_indices: (K, D) from :func:`top_k`.
        units: units to show, each in 0..D-1.
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one if None.
        classes: D names when the units are a network's classes (a probe's outputs,
            :attr:`cnnlab.Probe.classes`): each column is then titled "class 'name'";
            None numbers the units.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: bad ``top_indices`` or units, or not one class name per unit.
    """
    images, top_indices, units, classes = _check_grid(images, top_indices, units, classes)
    k = top_indices.shape[0]
    return _unit_grid(
        fig, k, units,
        lambda j, u: to_display(images[torch.as_tensor(top_indices[:, u])]),
        title or f"Top {k} images per {unit_word(classes)} (most activating at the top)",
        classes,
    )


@dataclass(frozen=True)
class Firing:
    """How often and how strongly each unit fires over a set of images.

    A unit *fires* on an image when its value is positive: the ReLU after the
    layer passes it on. A unit that never fires is *dead* on these images: the
    rest of the network never sees it, and its top-K images are only the ones
    that make it least negative.

    Attributes:
        rate: float64 (D,), the fraction of images on which each unit is > 0.
        max: float32 (D,), each unit's largest value (its best image's).
        mean_positive: float64 (D,), the mean of each unit's positive values
            (0.0 for a unit that never fires).
        n_images: N, the number of images the statistics are over.
    """

    rate: np.ndarray
    max: np.ndarray
    mean_positive: np.ndarray
    n_images: int

    @property
    def dead(self) -> np.ndarray:
        """int64 (n_dead,): the units that never fire, in increasing order."""
        return np.flatnonzero(self.max <= 0).astype(np.int64)

    @property
    def dead_fraction(self) -> float:
        """The fraction of the D units that never fire."""
        return float(len(self.dead) / len(self.max))


def firing_stats(features) -> Firing:
    """How often each unit fires (is > 0) over the images, and how much.

    Args:
        features: (N, D) array or tensor of the units' values before the ReLU
            (e.g. from :func:`extract_features` with the ``model[:14]`` extractor).

    Returns:
        A :class:`Firing` with ``rate``, ``max`` and ``mean_positive``, each (D,).

    Raises:
        ValueError: ``features`` is not a non-empty (N, D) array, or holds NaN.

    Example:
        >>> firing_stats(np.array([[1.0, -1.0], [3.0, -2.0]])).rate
        array([1., 0.])
    """
    features = feature_array(features)
    if not np.isfinite(features).all():
        raise ValueError(
            "features holds NaN or infinite values: the network's weights have "
            "diverged, or the features were not computed from images. Recompute them "
            "with extract_features(extractor, images)."
        )
    positive = features > 0
    fired = positive.sum(axis=0)
    total = np.where(positive, features, 0).sum(axis=0, dtype=np.float64)
    mean_positive = np.divide(total, fired, out=np.zeros(features.shape[1]),
                              where=fired > 0)
    return Firing(
        rate=fired / features.shape[0],
        max=features.max(axis=0).astype(np.float32),
        mean_positive=mean_positive,
        n_images=int(features.shape[0]),
    )


def dead_units(features) -> np.ndarray:
    """The units that never fire: their value is <= 0 on every image.

    Args:
        features: (N, D) array or tensor of the units' values before the ReLU.

    Returns:
        int64 array of the dead units' numbers, in increasing order (may be empty).

    Example:
        >>> dead_units(np.array([[1.0, -1.0, 0.0], [3.0, -2.0, 0.0]]))
        array([1, 2])
    """
    return firing_stats(features).dead


def plot_firing(
    features,
    units: Sequence[int] | None = None,
    fig: Figure | None = None,
    title: str | None = None,
) -> Figure:
    """Two bar charts over the units: how often each fires, and its largest value.

    Dead units (never > 0) are drawn in red in both; the ``units`` the lab shows
    are marked with their numbers.

    Args:
        features: (N, D) values before the ReLU, or a :class:`Firing` from
            :func:`firing_stats`.
        units: units to mark (validated against D); None marks none.
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one (with the number of dead units) if None.

    Returns:
        The matplotlib Figure: firing rate on top, maximum value below.
    """
    stats = features if isinstance(features, Firing) else firing_stats(features)
    n_units = len(stats.max)
    marked = [] if units is None else validate_units(units, n_units)
    dead = stats.max <= 0
    colours = np.where(dead, "tab:red", "tab:blue")
    x = np.arange(n_units)
    fig = new_figure(fig, figsize=(11, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(x, 100 * stats.rate, color=colours, width=0.9)
    top.scatter(x[dead], np.full(int(dead.sum()), 2.0), marker="^", s=12, color="tab:red",
                label="never fires", zorder=3)  # their bars have no height
    if dead.any():
        top.legend(loc="upper right", fontsize=8)
    top.set_ylabel("fires on (% of images)")
    top.set_ylim(0, 105)
    bottom.bar(x, stats.max, color=colours, width=0.9)
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("largest value")
    bottom.set_xlabel("unit (red: never fires, so its top-K images are the least negative)")
    bottom.set_xlim(-1, n_units)
    for u in marked:
        for ax, value in ((top, 100 * stats.rate[u]), (bottom, stats.max[u])):
            ax.annotate(str(u), (u, value), xytext=(0, 3 if value >= 0 else -10),
                        textcoords="offset points", ha="center", fontsize=8,
                        fontweight="bold")
    n_dead = int(dead.sum())
    fig.suptitle(title or f"How often each unit fires on {stats.n_images:,} images: "
                 f"{n_dead} of {n_units} never do")
    return fig
