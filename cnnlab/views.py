"""Section 6 of the lab: one unit, every view.

For each chosen unit and each of its top-K test images, :func:`unit_views`
computes every explanation the lab knows, side by side: the occlusion map
(section 4), the gradient maps of :mod:`cnnlab.attribution` (gradient,
SmoothGrad, Integrated Gradients, guided backprop, Grad-CAM), the exact
contribution map of the unit over the 8x8 input of ``Linear(4096, 128)``, and an
image synthesized to excite the unit (:mod:`cnnlab.featvis`), with the
activation it reached. :func:`plot_unit_views` draws them, one row per unit, so
one can see where the methods agree and where they do not.

A unit that never fires on the test images (a *dead* unit, see
:func:`cnnlab.activations.dead_units`) still gets every view: its top images are
the least negative ones, and the synthesized image shows whether some input can
drive it positive at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ._figures import new_figure, unit_label, unit_word
from ._inference import as_image_batch
from ._memo import remembered
from ._methods import choose, method_names, registered
from ._pixels import to_display
from ._validate import class_names, whole_number
from .activations import _check_top_indices, check_k
from .config import or_config
from .occlusion import masked_images, top_k_occlusion
from .probe import Probe, input_channels, unit_layer

#: The gradient-based views, in the order the lab shows them (the registry's gradient
#: methods, :data:`cnnlab.attribution.METHODS`).
MAP_VIEWS = method_names("gradient")

#: Every view :func:`plot_unit_views` can draw, in its column order.
VIEWS = method_names("occlusion", "gradient", "synthesis")

#: What :func:`plot_unit_views` draws when ``views`` is None: the lab's figure, every
#: view (guided backprop included: Exercise 9 asks about its sharp maps).
DEFAULT_VIEWS = VIEWS

#: Column titles (the registry's).
TITLES = {name: registered(name).title for name in VIEWS}


@dataclass(frozen=True)
class UnitViews:
    """Every view of some units on their top-K images.

    Attributes:
        units: the U units, in order.
        indices: int64 (U, K), ``indices[j, r]`` is the index (into the images
            given to :func:`unit_views`) of unit ``units[j]``'s r-th best image.
        images: uint8 tensor (U, K, C, H, W), those images.
        activation: float32 (U, K), the unit's value on each of them (before the ReLU).
        bias: float32 (U,), each unit's bias when the probe's layer is a ``Linear``
            (the contribution maps then sum to ``activation - bias``); zeros otherwise.
        occlusion: float32 (U, K, Gh, Gw), the occlusion maps (7x7 on 32x32 images).
        maps: method name -> float32 (U, K, H, W) maps ((U, K, 8, 8) for
            ``"contribution"``), positive where the region raises the unit.
        synthesized: uint8 tensor (U, C, H, W) or None, an image made to excite
            each unit.
        synthesized_activation: float32 (U,) or None, the unit's value on it.
        exact: whether ``bias`` is the units' ``Linear`` bias (the probe's layer is a
            ``Linear``, as the course network's 128 units), so that each contribution
            map sums to ``activation - bias``.
        classes: the names of the probe's D units when they are a network's classes
            (:attr:`cnnlab.Probe.classes`; the figure then names each row by its
            class), else None.
    """

    units: list[int]
    indices: np.ndarray
    images: torch.Tensor
    activation: np.ndarray
    bias: np.ndarray
    occlusion: np.ndarray
    maps: dict[str, np.ndarray]
    synthesized: torch.Tensor | None = None
    synthesized_activation: np.ndarray | None = None
    exact: bool = True
    classes: tuple[str, ...] | None = None

    @property
    def k(self) -> int:
        """Top images per unit."""
        return int(self.indices.shape[1])

    def batch(self, n: int | None = None
              ) -> tuple[torch.Tensor, list[int], dict[str, np.ndarray]]:
        """The first ``n`` images of every unit as one batch, for :mod:`cnnlab.sanity`.

        Args:
            n: images per unit, 1..K; None for all K.

        Returns:
            ``(images, targets, maps)``: uint8 (U*n, 3, H, W) in row order (unit by
            unit, best image first), the unit of each image (U*n ints), and name ->
            (U*n, h, w) maps: ``"occlusion"`` and every computed method.
        """
        n = self.k if n is None else whole_number(n, "n", 1, self.k,
                                                  advice="It counts top images per unit.")
        images = self.images[:, :n].reshape(-1, *self.images.shape[2:])
        targets = [u for u in self.units for _ in range(n)]
        maps = {"occlusion": self.occlusion[:, :n], **{m: a[:, :n] for m, a in self.maps.items()}}
        return images, targets, {m: a.reshape(-1, *a.shape[2:]) for m, a in maps.items()}

    def row(self, unit: int) -> int:
        """The row of ``unit`` in every array, or a ValueError naming the units held."""
        if unit not in self.units:
            raise ValueError(
                f"unit {unit!r} is not among the units these views were computed for "
                f"({self.units}). Pick one of them, or compute its views with "
                f"unit_views(model, images, top, [{unit}])."
            )
        return self.units.index(unit)

    def of_unit(self, unit: int, k: int | None = None) -> UnitViews:
        """The views of one of the units, on its first ``k`` images (None: all K)."""
        j, k = self.row(unit), self.k if k is None else k
        pick = (slice(j, j + 1), slice(0, k))
        return UnitViews(
            units=[unit], indices=self.indices[pick], images=self.images[pick],
            activation=self.activation[pick], bias=self.bias[j:j + 1],
            occlusion=self.occlusion[pick],
            maps={name: m[pick] for name, m in self.maps.items()},
            synthesized=None if self.synthesized is None else self.synthesized[j:j + 1],
            synthesized_activation=(None if self.synthesized_activation is None
                                    else self.synthesized_activation[j:j + 1]),
            exact=self.exact, classes=self.classes,
        )


@remembered
def unit_views(
    model: nn.Module,
    images: torch.Tensor,
    top_indices: np.ndarray,
    units: Sequence[int],
    k: int | None = None,
    methods: Sequence[str] | None = None,
    synthesize: bool = True,
    size: int | None = None,
    stride: int | None = None,
    seed: int | None = None,
    progress: bool = False,
    method_options: dict[str, dict] | None = None,
    occlusion: np.ndarray | None = None,
) -> UnitViews:
    """Every view of each unit on its top-K images, as arrays.

    Args:
        model: a :class:`cnnlab.Probe` (the views are of its units, on any network
            and image size), or the course network (or its extractor ``model[:14]``):
            then the units of its first ``Linear`` layer (:func:`as_probe`).
        images: uint8 (N, C, H, W), the images ``top_indices`` points into.
        top_indices: (K', D) from :func:`cnnlab.activations.top_k`.
        units: the U units, each in 0..D-1.
        k: top images per unit, 1..K'; None for all K'.
        methods: gradient-based methods to compute (names of :data:`MAP_VIEWS`);
            None for all of them.
        synthesize: also synthesize an image per unit (:func:`cnnlab.featvis.synthesize`,
            at the images' size; give ``like=`` training images in
            ``method_options["synthesized"]`` for their colours).
        size, stride: the occluder's side and step; None for the lab's (11 and 4).
        seed: seed of SmoothGrad's noise and of the synthesis; None for the lab's.
        progress: show progress bars.
        method_options: method name -> keyword arguments for it (e.g.
            ``{"integrated_gradients": {"steps": 16}}``; ``"synthesized"`` for
            :func:`cnnlab.featvis.synthesize`'s, e.g. ``{"steps": 64}``).
        occlusion: float32 (K', U, Gh, Gw), the maps :func:`cnnlab.top_k_occlusion`
            already gave for these ``top_indices`` and ``units`` (Section 4's), reused
            instead of computed again; None computes them.

    Returns:
        A :class:`UnitViews`.

    Raises:
        ValueError: bad units, ``k``, methods or occluder settings.

    Example:
        >>> views = unit_views(model, test.images, top, [1, 14], k=3)
        >>> views.maps["contribution"].shape
        (2, 3, 8, 8)
    """
    from . import attribution

    probe = as_probe(model)
    images = as_image_batch(images, channels=input_channels(probe.model))
    top_indices, units = _check_top_indices(top_indices, units, images.shape[0])
    k = top_indices.shape[0] if k is None else check_k(k, top_indices.shape[0])
    methods = choose(methods, MAP_VIEWS)
    options = dict(method_options or {})
    seed = or_config(seed, "seed")
    top = top_indices[: int(k)]  # (K, D)
    indices = np.ascontiguousarray(top[:, units].T)  # (U, K)
    flat = torch.as_tensor(indices.reshape(-1))
    chosen = images[flat]  # (U*K, C, H, W)
    targets = np.repeat(units, k).tolist()
    values = probe.units(chosen).float().cpu().numpy()
    classes = class_names(probe.classes, values.shape[1])
    activation = values[np.arange(len(targets)), targets].reshape(len(units), k)
    bias = unit_bias(probe)
    exact = bias is not None
    bias = bias[units] if exact else np.zeros(len(units), dtype=np.float32)
    if occlusion is None:
        occlusion = top_k_occlusion(probe, images, top, units, size=size, stride=stride,
                                    progress=progress)  # (K, U, G, G)
    else:
        occlusion = _check_occlusion(occlusion, top_indices.shape[0], len(units))[: int(k)]
    maps = {}
    for name in methods:
        kwargs = dict(options.get(name, {}))
        if registered(name).seeded:
            kwargs.setdefault("seed", seed)
        m = attribution.attribute(name, probe, chosen, targets, **kwargs)
        maps[name] = m.reshape(len(units), k, *m.shape[1:])
    synthesized = synthesized_activation = None
    if synthesize:
        from .featvis import synthesize as make

        kwargs = {"seed": seed, "progress": progress, "image_size": tuple(images.shape[-2:]),
                  **options.get("synthesized", {})}
        result = make(probe, units, **kwargs)
        synthesized = result.images
        synthesized_activation = np.asarray(result.activation, dtype=np.float32)
    return UnitViews(
        units=units,
        indices=indices,
        images=chosen.reshape(len(units), k, *chosen.shape[1:]),
        activation=activation.astype(np.float32),
        bias=bias.astype(np.float32),
        occlusion=np.ascontiguousarray(occlusion.transpose(1, 0, 2, 3)),
        maps=maps,
        synthesized=synthesized,
        synthesized_activation=synthesized_activation,
        exact=exact,
        classes=classes,
    )


def as_probe(model) -> Probe:
    """``model`` as a :class:`Probe`: a probe as it is; a network (the course network or
    its extractor ``model[:14]``) read at its first ``Linear`` (:func:`cnnlab.probe.unit_layer`)."""
    return model if isinstance(model, Probe) else Probe(model, unit_layer(model))


def unit_bias(probe: Probe) -> np.ndarray | None:
    """float32 (D,): the bias of the probe's layer when it is a ``Linear``, else None."""
    module = probe.module
    if isinstance(module, nn.Linear) and module.bias is not None:
        return module.bias.detach().float().cpu().numpy()
    return None


def _check_occlusion(maps, k: int, n_units: int) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4 or maps.shape[:2] != (k, n_units):
        raise ValueError(
            f"occlusion has shape {maps.shape}; expected ({k}, {n_units}, G, G): the maps "
            "cnnlab.top_k_occlusion gave for the same top indices and units. Pass "
            "occlusion=None to compute them here."
        )
    return maps


def _check_views(views: UnitViews, names) -> tuple[str, ...]:
    if names is None:  # the lab's views, those that were computed
        return tuple(v for v in DEFAULT_VIEWS if v in views.maps or v == "occlusion"
                     or (v == "synthesized" and views.synthesized is not None))
    names = choose(names, VIEWS, "views")
    missing = [v for v in names if v in MAP_VIEWS and v not in views.maps]
    if "synthesized" in names and views.synthesized is None:
        missing.append("synthesized")
    if missing:
        raise ValueError(
            f"views {missing} were not computed: call unit_views(..., methods=...) with "
            "them (and synthesize=True for 'synthesized'), or leave them out of views."
        )
    return names


def _title(views: UnitViews, name: str) -> str:
    """A column's title; the contribution map's says its grid and whether it is exact."""
    if name != "contribution":
        return TITLES[name]
    h, w = views.maps[name].shape[-2:]
    return f"contribution\n({h}x{w}{', exact' if views.exact else ''})"


def _signed_overlay(ax, picture: np.ndarray, values: np.ndarray) -> None:
    """``values`` (h, w) as red (raises the unit) / blue (lowers it) over a faint
    grey copy of ``picture`` (H, W, 3).

    The colour scale is symmetric: full colour at the largest |value| for a coarse
    map (64 cells or fewer), at the 99th percentile of |value| for a pixel map, so
    that a few extreme pixels do not wash out the rest.
    """
    height, width = picture.shape[:2]
    ax.imshow(picture.mean(axis=2), cmap="gray", vmin=0, vmax=1, alpha=0.45)
    magnitude = np.abs(values)
    limit = float(magnitude.max() if values.size <= 64 else np.percentile(magnitude, 99))
    limit = limit if limit > 0 else float(magnitude.max()) or 1.0
    ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.7,
              interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))


def plot_unit_views(
    views: UnitViews,
    units: Sequence[int] | None = None,
    image: int = 0,
    show: Sequence[str] | None = None,
    n_best: int = 3,
    sigma: float | None = None,
    threshold: float | None = None,
    fig: Figure | None = None,
    title: str | None = None,
) -> Figure:
    """One row per unit: its best images, then every view of one of them.

    The maps are drawn in red where the region raises the unit and blue where it
    lowers it (each map on its own symmetric scale: full colour at its largest |value|,
    or its 99th percentile for pixel maps; an all-zero map, such
    as Grad-CAM's when the weighted sum is negative everywhere, is flat and says
    "all zero"); occlusion is drawn as the lab's mask of section 4; the
    synthesized image is titled with the activation it reached, beside the best
    test image's.
    Rows are labelled "unit u", or "class 'name'" when the views are of a network's
    classes (``views.classes``).

    Args:
        views: from :func:`unit_views`.
        units: the rows to draw (a subset of ``views.units``); None for all.
        image: which of each unit's top images the views are drawn on, by rank
            (0 = its best image), 0..K-1.
        show: the views to draw, names of :data:`VIEWS`; None for those of
            :data:`DEFAULT_VIEWS` that ``views`` holds.
        n_best: how many of the best images lead each row (0 for none).
        sigma, threshold: for the occlusion mask; None for the lab's (2 and 0.5).
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one if None.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a unit not in ``views``, an unknown or uncomputed view, a bad
            ``image`` rank or ``n_best``.
    """
    names = _check_views(views, show)
    rows = list(views.units) if units is None else [int(u) for u in units]
    for u in rows:
        views.row(u)
    if not rows:
        raise ValueError(f"units is empty: choose at least one of {views.units}.")
    image = whole_number(image, "image", 0, views.k - 1,
                         why="is not a rank of the top images",
                         advice="0 is each unit's best image.")
    n_best = whole_number(n_best, "n_best", 0, views.k)
    n_cols = n_best + len(names)
    if n_cols == 0:
        raise ValueError("Nothing to draw: n_best is 0 and show is empty.")
    fig = new_figure(fig, figsize=(1.25 * n_cols + 0.6, 1.45 * len(rows) + 0.9))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for i, unit in enumerate(rows):
        j = views.row(unit)
        pictures = to_display(views.images[j])  # (K, H, W, 3)
        act = views.activation[j]
        col = 0
        for r in range(n_best):
            ax = axes[i, col]
            ax.imshow(pictures[r])
            ax.set_title(f"#{r + 1}: {act[r]:+.2f}", fontsize=8)
            col += 1
        for name in names:
            ax = axes[i, col]
            col += 1
            if name == "occlusion":
                one = slice(image, image + 1)
                ax.imshow(masked_images(pictures[one], views.occlusion[j, one], sigma=sigma,
                                        threshold=threshold)[0])
            elif name == "synthesized":
                ax.imshow(to_display(views.synthesized[j]))
                reached = float(views.synthesized_activation[j])
                ax.set_xlabel(f"reaches {reached:+.2f}\n(best test {act[0]:+.2f})",
                              fontsize=8)
            else:
                values = views.maps[name][j, image]
                _signed_overlay(ax, pictures[image], values)
                if not np.any(values):
                    ax.set_xlabel("all zero", fontsize=8)
            if i == 0:
                ax.set_title(_title(views, name), fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        dead = " (dead)" if act[0] <= 0 else ""
        axes[i, 0].set_ylabel(f"{unit_label(unit, views.classes)}{dead}", fontsize=9)
    rank = "best image" if image == 0 else f"image #{image + 1}"
    word = unit_word(views.classes)
    raises = "the unit" if views.classes is None else "the class's score"
    fig.suptitle(title or f"One {word}, every view: the maps are on each {word}'s {rank} "
                 f"(red raises {raises}, blue lowers it)")
    return fig
