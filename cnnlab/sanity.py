"""Sections 6 and 7: tests an explanation should pass, and which methods fail them.

Two checks, each computed as arrays, with a plot function beside it:

- :func:`cascading_randomization` (Adebayo et al., "Sanity Checks for Saliency
  Maps", 2018): re-initialise the network's weights layer by layer from the top
  down (or, coarser and cheaper on a deep network, a top-level block at a time) and
  compare each method's map with the trained network's. A map that
  explains the network must change once the weights it explains are gone. An
  edge detector of the image (model-independent by construction) is the control
  that never changes.
- :func:`faithfulness` (deletion and insertion curves, Petsiuk et al. 2018):
  remove the pixels a map ranks highest first, and watch the target fall; or
  insert them first into a blank (black or blurred) image, and watch it rise. A
  faithful map beats a random ranking of the same pixels.

The model given is never modified: both checks work on a deep copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy.stats import rankdata
from torch import nn

from ._figures import new_figure
from ._inference import Runner, as_image_batch, is_whole, prepare_batch
from ._methods import REGISTRY, choose, method_names
from .attribution import BLACK, _black, attribute, prepare_inputs
from .config import or_config
from .device import model_device
from .occlusion import occlusion_maps
from .probe import Probe, layers

#: Everything :func:`cascading_randomization` can compare: the gradient methods,
#: occlusion, and the model-independent control.
SANITY_METHODS = method_names("gradient", "occlusion", "control")

#: What each method is called in the figures (the registry's labels).
LABELS = {m.name: m.label for m in REGISTRY}


# --- maps of every kind ---------------------------------------------------------------


def edge_map(images) -> np.ndarray:
    """Sobel edge strength of the grey image: a "map" that ignores the model.

    Args:
        images: uint8 (N, C, H, W) or floats already normalised.

    Returns:
        float32 (N, H, W), the gradient magnitude of the channel mean.
    """
    x = prepare_batch(as_image_batch(images, channels=None), torch.device("cpu"),
                      channels_last=False)
    grey = x.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.norm(dim=1).numpy().astype(np.float32)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps resized to (N, *size) by bilinear interpolation (unchanged if equal)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(size):
        return maps
    big = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear")
    return big[:, 0].numpy()


def method_maps(method: str, model: nn.Module, images, targets, **kwargs) -> np.ndarray:
    """Maps of any method of :data:`SANITY_METHODS`, (N, H, W) at the image's size.

    ``"occlusion"`` runs :func:`cnnlab.occlusion.occlusion_maps` (the lab's 11x11
    black occluder, stride 4; ``precision=`` in ``kwargs``, default
    ``LabConfig.precision``: ranks hardly move in bf16) and upsamples its 7x7 maps;
    ``"contribution"`` is upsampled from 8x8; ``"edges"`` is :func:`edge_map`. Other
    ``**kwargs`` go to the gradient methods.
    """
    if method not in SANITY_METHODS:
        raise ValueError(
            f"method={method!r} is not known here. Choose from {', '.join(SANITY_METHODS)}."
        )
    x, t, _ = prepare_inputs(model, images, targets)
    size = tuple(x.shape[-2:])
    if method == "edges":
        return edge_map(x)
    if method == "occlusion":
        units = sorted(set(t.tolist()))
        precision = kwargs.get("precision", or_config(None, "precision"))  # bf16 where fast
        maps = occlusion_maps(model, x, units=units, precision=precision)  # (N, U, 7, 7)
        column = [units.index(u) for u in t.tolist()]
        return upsample(maps[np.arange(len(x)), column], size)
    kwargs.pop("precision", None)
    return upsample(attribute(method, model, x, t.cpu(), **kwargs), size)


def spearman_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of |a[i]| and |b[i]| for each image, (N,).

    Ties get their average rank. When ``a[i]`` (the reference) is constant there
    is nothing to compare: NaN. When only ``b[i]`` is constant it kept none of the
    reference's ranking: 0.
    """
    ra = rankdata(np.abs(a).reshape(len(a), -1), axis=1)
    rb = rankdata(np.abs(b).reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    na, nb = np.linalg.norm(ra, axis=1), np.linalg.norm(rb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / (na * nb)
    rho[(nb == 0) & (na > 0)] = 0.0
    rho[na == 0] = np.nan
    return rho


# --- cascading randomisation ------------------------------------------------------------


@dataclass
class Randomization:
    """Result of :func:`cascading_randomization`.

    Attributes:
        layers: names of the steps, e.g. ``["trained", "13 Linear", "8 Conv2d", ...]``
            (by block: ``["trained", "fc Linear", "layer4 (5 layers)", ...]``);
            step s has every layer named in steps 1..s re-initialised.
        methods: the methods compared, rows of ``correlation``.
        correlation: float (n_methods, n_steps): mean over images of the Spearman rank
            correlation of |map| with the trained map's |map| (1.0 at step 0; images
            whose trained map is constant, e.g. all-zero Grad-CAMs, are left out).
        compared: int (n_methods,): how many images entered each method's mean.
        by: ``"layer"`` or ``"block"``, what one step re-initialised
            (:func:`randomization_steps`).
    """

    layers: list[str]
    methods: list[str]
    correlation: np.ndarray
    compared: np.ndarray
    by: str = "layer"

    def at(self, method: str, layer: str) -> float:
        """The correlation of one method after one step, by names."""
        return float(self.correlation[self.methods.index(method), self.layers.index(layer)])


def weight_layers(model, input_size=None) -> list[tuple[str, nn.Module]]:
    """The conv and Linear layers of a network, top (output side) first, with names.

    Args:
        model: a network, or a :class:`cnnlab.Probe`: then only the layers whose
            output is complete before the probe's layer's is (the layers it reads).
        input_size: one image's (C, H, W), needed for a probe read inside the network.

    Returns:
        ``[("<dotted name> <type>", module), ...]``, reversed ``named_modules()`` order.
    """
    return [(_label(name, m), m) for name, m in _weight_layers(model, input_size)]


#: How :func:`cascading_randomization` steps down the network.
CASCADES = ("layer", "block")


def randomization_steps(model, input_size=None, by: str = "layer"
                        ) -> list[tuple[str, list[nn.Module]]]:
    """The steps of the cascade, top first: a name and the layers each re-initialises.

    Both ways re-initialise the same layers, :func:`weight_layers`; only the grouping
    differs.

    Args:
        model, input_size: as for :func:`weight_layers`.
        by: ``"layer"``: one conv or Linear layer a step, named as :func:`weight_layers`
            names it. ``"block"``: the layers grouped by the top-level child of the
            network that holds them (``layer4`` of a ResNet), a block a step, named by
            the child and its number of layers (``"layer4 (5 layers)"``; a block of one
            layer keeps its layer's name, ``"fc Linear"``).

    Returns:
        ``[(name, [module, ...]), ...]``, the top (output side) first.

    Raises:
        ValueError: ``by`` is neither ``"layer"`` nor ``"block"``.
    """
    if by not in CASCADES:
        raise ValueError(f"by={by!r} is not a way to cascade: use 'layer' (one conv or "
                         "Linear layer a step, as Adebayo et al.) or 'block' (a top-level "
                         "block of the network a step: fewer, coarser steps).")
    found = _weight_layers(model, input_size)
    if by == "layer":
        return [(_label(name, m), [m]) for name, m in found]
    blocks: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, m in found:  # top first, so the blocks are too
        blocks.setdefault(name.split(".")[0], []).append((name, m))
    return [(_label(*members[0]) if len(members) == 1
             else f"{block} ({len(members)} layers)", [m for _, m in members])
            for block, members in blocks.items()]


def _label(name: str, module: nn.Module) -> str:
    """A weight layer's name in the cascade: ``"layer4.1.conv2 Conv2d"``."""
    return f"{name} {type(module).__name__}"


def _weight_layers(model, input_size) -> list[tuple[str, nn.Module]]:
    """``[(dotted name, module), ...]`` of :func:`weight_layers`, top first."""
    probe = model if isinstance(model, Probe) else None
    net = model.model if probe else model
    found = [(name, m) for name, m in net.named_modules()
             if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if probe is not None and probe.layer != "":
        if input_size is None:
            raise ValueError("weight_layers of a Probe inside the network needs "
                             "input_size=(C, H, W) to see which layers feed its layer.")
        order = {layer.name: layer.order for layer in layers(net, input_size)}
        below = order[probe.layer]
        found = [(name, m) for name, m in found
                 if order.get(name) is not None and order[name] <= below]
    return found[::-1]


def cascading_randomization(
    model: nn.Module,
    images,
    targets,
    methods: Sequence[str] | None = None,
    seed: int | None = None,
    by: str = "layer",
) -> Randomization:
    """Re-initialise the layers from the top down and watch each method's maps.

    Step 0 is the trained network; step s re-initialises one more weight layer
    (``reset_parameters()``, PyTorch's default initialisation), from the last
    ``Linear`` (or conv) down to the first conv layer, in reversed
    ``named_modules()`` order; for a probe, only the layers its layer reads. At each step every
    method's maps are compared with its trained maps by :func:`spearman_abs`.
    ``by="layer"`` is Adebayo et al.'s cascade, one layer a step (on a ResNet-18, 21
    steps, each recomputing every method); ``by="block"`` re-initialises the same
    layers a top-level block at a time (``fc``, ``layer4``, ..., ``conv1``: 6 steps),
    coarser: it shows which block a map depends on, not which layer
    (:func:`randomization_steps`).
    A method whose correlation stays high does not depend on what the network
    learned (guided backprop here); the edge-detector control stays at 1.0.

    Args:
        model: the extractor ``model[:14]``, the whole network, or a
            :class:`cnnlab.Probe` (its units are the targets); deep-copied, never
            changed.
        images: uint8 (N, C, H, W) or floats already normalised.
        targets: one unit/class per image, or one int.
        methods: names from :data:`SANITY_METHODS`; None = all of them.
        seed: seeds the re-initialisation; None = ``LabConfig.seed``. The global
            random state is left as it was.
        by: ``"layer"`` or ``"block"``, a step's extent (:func:`randomization_steps`).

    Returns:
        A :class:`Randomization` with ``correlation`` (n_methods, 1 + n_steps).

    Raises:
        ValueError: unknown method or ``by``, bad images or targets (as for the methods).

    Example:
        >>> r = cascading_randomization(model[:14], images, 14, methods=["gradient"])
        >>> r.layers
        ['trained', '13 Linear', '8 Conv2d', '6 Conv2d', '2 Conv2d', '0 Conv2d']
    """
    methods = list(choose(methods, SANITY_METHODS, empty=False))
    seed = or_config(seed, "seed")
    if not is_whole(seed):
        raise TypeError(f"seed={seed!r} must be an integer.")
    x, t, _ = prepare_inputs(model, images, targets)
    net = copy.deepcopy(model)
    steps = randomization_steps(net, tuple(x.shape[1:]), by)
    trained = {m: method_maps(m, net, x, t.cpu()) for m in methods}
    names, rho = ["trained"], [np.ones((len(methods), len(x)))]
    for step, (name, group) in enumerate(steps, start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + step)
            for layer in group:
                layer.reset_parameters()
        names.append(name)
        rho.append(np.stack([spearman_abs(trained[m], method_maps(m, net, x, t.cpu()))
                             for m in methods]))
    rho = np.stack(rho, axis=1)  # (n_methods, n_steps, N)
    # Images whose trained map is constant (an all-zero Grad-CAM) have no ranking to
    # keep or lose: they are left out of that method's means, at every step.
    valid = np.stack([np.ptp(np.abs(trained[m]).reshape(len(x), -1), axis=1) > 0
                      for m in methods])  # (n_methods, N)
    compared = valid.sum(1)
    total = np.where(valid[:, None], np.nan_to_num(rho), 0.0).sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(compared[:, None] > 0, total / compared[:, None], np.nan)
    return Randomization(layers=names, methods=methods,
                         correlation=mean.astype(np.float32), compared=compared, by=by)


# --- faithfulness -----------------------------------------------------------------------


@dataclass
class Faithfulness:
    """Result of :func:`faithfulness`; rows are ``methods``, the random ranking last.

    Attributes:
        methods: the maps' names, then ``"random"``.
        fill: ``"black"`` or ``"blur"``.
        fractions: float (n_steps + 1,): share of the pixels removed/inserted, 0..1.
        deletion: float (n_methods + 1, n_steps + 1): the target's value, averaged over
            images, as the top-ranked pixels are replaced by the fill (lower = faithful).
        insertion: same shape: the value as the top-ranked pixels are put back into the
            fill image (higher = faithful).
        deletion_area, insertion_area: float (n_methods + 1,): mean area under each
            curve (trapezoid rule over ``fractions``).
        beats_random_deletion, beats_random_insertion: float (n_methods,): share of the
            images where the method's area beats the random ranking's on that image.
        beats_random: float (n_methods,): share of the images where the method's
            insertion area minus deletion area beats the random ranking's. "Beats"
            means by more than float noise (1e-5 relative).
    """

    methods: list[str]
    fill: str
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_area: np.ndarray
    insertion_area: np.ndarray
    beats_random_deletion: np.ndarray
    beats_random_insertion: np.ndarray
    beats_random: np.ndarray


FILLS = ("black", "blur")


def fill_images(x: torch.Tensor, fill: str, sigma: float | None = None,
                black: float | torch.Tensor = BLACK) -> torch.Tensor:
    """What removed pixels become: black or the image blurred (Gaussian, sigma px).

    Args:
        x: float (N, C, H, W) normalised images.
        fill: ``"black"`` or ``"blur"``.
        sigma: blur in pixels; None = ``LabConfig.blur_sigma``.
        black: pixel 0 in the network's normalised units, a number or (C, 1, 1);
            the course's -1 by default.

    Returns:
        float (N, C, H, W).
    """
    if fill == "black":
        if isinstance(black, torch.Tensor):
            return black.to(x.device, x.dtype).expand_as(x).clone()
        return torch.full_like(x, black)
    sigma = float(or_config(sigma, "blur_sigma"))
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def faithfulness(
    model: nn.Module,
    images,
    targets,
    maps: Mapping[str, np.ndarray],
    fill: str = "black",
    steps: int | None = None,
    seed: int | None = None,
    absolute: bool = True,
    batch_size: int | None = None,
    precision: str | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of each map's pixel ranking against a random one.

    Pixels are ranked by |map| (``absolute=True``, as the sanity check does) or by
    the signed map, highest first; ties (an all-zero Grad-CAM) are broken by the
    random ranking, so a map without information scores like random. At fraction
    ``k / steps`` the top ``round(k / steps * H * W)`` pixels (all three channels) are replaced
    by the fill (deletion) or are the only ones kept from the image (insertion).

    Args:
        model: the extractor, the whole network, or a :class:`cnnlab.Probe` (its
            units are the targets; its normalisation gives black); deep-copied, eval
            mode on the copy.
        images: uint8 (N, C, H, W) or floats already normalised.
        targets: one unit/class per image, or one int.
        maps: name -> (N, h, w) maps of these images and targets (e.g. from
            :func:`cnnlab.attribution.attribute`); smaller maps are upsampled.
        fill: ``"black"`` (pixel 0, the occluder's) or ``"blur"`` (the image blurred).
        steps: points of each curve minus one; None = ``LabConfig.faithfulness_steps``.
        seed: seeds the random ranking; None = ``LabConfig.seed``.
        absolute: rank by |map| (True) or by the signed map.
        batch_size: images per forward pass; None = 128.
        precision: ``"auto"`` (bf16 where fast: these are forward passes only) or
            ``"fp32"``; None = ``LabConfig.precision``.

    Returns:
        A :class:`Faithfulness`.

    Raises:
        ValueError: unknown fill, maps of the wrong shape, bad steps.
    """
    if fill not in FILLS:
        raise ValueError(f"fill={fill!r} is not known; use 'black' or 'blur'.")
    steps = or_config(steps, "faithfulness_steps")
    if not is_whole(steps, 1):
        raise ValueError(f"steps={steps!r} must be a positive integer (the lab uses "
                         f"{or_config(None, 'faithfulness_steps')}).")
    seed = or_config(seed, "seed")
    batch_size = 128 if batch_size is None else batch_size
    precision = or_config(precision, "precision")
    if not isinstance(maps, Mapping) or not maps:
        raise TypeError("maps must be a non-empty dict: method name -> (N, h, w) maps.")
    x, t, _ = prepare_inputs(model, images, targets)
    n, _, height, width = x.shape
    names = list(maps)
    scores = []
    for name in names:
        m = np.asarray(maps[name], dtype=np.float32)
        if m.ndim != 3 or m.shape[0] != n:
            raise ValueError(
                f"maps[{name!r}] has shape {m.shape}; expected ({n}, h, w), one map per "
                "image, in the order of images and targets."
            )
        m = upsample(m, (height, width))
        scores.append(np.abs(m) if absolute else m)
    rng = np.random.default_rng(seed)
    scores.append(rng.random((n, height, width)))  # the random ranking
    # rank[r, i, p] = position of pixel p in row r's order (0 = first removed).
    flat = np.stack(scores).reshape(len(scores), n, -1)
    order = np.lexsort((np.broadcast_to(-flat[-1], flat.shape), -flat), axis=2)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(height * width)[None, None], axis=2)
    counts = np.round(np.linspace(0, 1, steps + 1) * height * width)

    probe = copy.deepcopy(model) if isinstance(model, Probe) else None
    net = probe.model if probe else copy.deepcopy(model)
    device = model_device(net)
    runner = Runner(device, precision)
    rank_t = torch.from_numpy(rank).to(device)
    counts_t = torch.from_numpy(counts).to(device)
    black = BLACK if probe is None else _black(probe, x.shape[1], device)
    base = fill_images(x, fill, black=black)
    n_rows, inner = len(scores), steps - 1
    total = n_rows * n * inner  # one (row, image, inner point) per masked image

    def run(batch: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        batch = runner.layout(batch)
        out = net(batch) if probe is None else probe.outputs(batch)[0]
        return out.float()[torch.arange(len(which)), t[which]]

    values = {}
    with runner.inference(net):
        # Both curves of every row start or end at f(image) and f(fill image): computed
        # once per image instead of once per row and curve (a sixth of the passes).
        whole = torch.arange(n, device=device)
        ends = [runner.batched(lambda a, b, source=source: run(source[a:b], whole[a:b]),
                               n, batch_size)
                for source in (x, base)]
        for kind in ("deletion", "insertion"):

            def masked(start: int, stop: int, kind=kind) -> torch.Tensor:
                idx = torch.arange(start, stop, device=device)
                row, img = idx // (n * inner), (idx // inner) % n
                point = idx % inner + 1
                top = (rank_t[row, img] < counts_t[point, None]).view(-1, 1, height, width)
                keep_fill = top if kind == "deletion" else ~top
                return run(torch.where(keep_fill, base[img], x[img]), img)

            out = runner.batched(masked, total, batch_size)
            first, last = ends if kind == "deletion" else ends[::-1]
            curve = torch.empty(n_rows, n, steps + 1, device=device)
            curve[:, :, 0], curve[:, :, -1] = first, last
            curve[:, :, 1:-1] = out.view(n_rows, n, inner)
            values[kind] = curve.cpu().numpy().astype(np.float64)
    fractions = counts / (height * width)
    widths = np.diff(fractions)
    area = {k: ((v[..., 1:] + v[..., :-1]) / 2 * widths).sum(2)  # trapezoid rule, (R, N)
            for k, v in values.items()}
    net_area = area["insertion"] - area["deletion"]

    def beats(a: np.ndarray, lower: bool = False) -> np.ndarray:
        """Share of images where a row beats the random row by more than float noise."""
        gain = (a[-1] - a[:-1]) if lower else (a[:-1] - a[-1])  # (R - 1, N)
        return (gain > 1e-5 * (np.abs(a[-1]) + 1e-3)).mean(1)

    return Faithfulness(
        methods=[*names, "random"],
        fill=fill,
        fractions=fractions.astype(np.float32),
        deletion=values["deletion"].mean(1).astype(np.float32),
        insertion=values["insertion"].mean(1).astype(np.float32),
        deletion_area=area["deletion"].mean(1).astype(np.float32),
        insertion_area=area["insertion"].mean(1).astype(np.float32),
        beats_random_deletion=beats(area["deletion"], lower=True),
        beats_random_insertion=beats(area["insertion"]),
        beats_random=beats(net_area),
    )


# --- figures ----------------------------------------------------------------------------


def plot_randomization(result: Randomization, fig: Figure | None = None,
                       title: str | None = None) -> Figure:
    """One line per method: rank correlation with the trained map at each step.

    Args:
        result: from :func:`cascading_randomization`.
        fig: figure to draw into (cleared first); a new one if None.
        title: axes title; a default one if None.

    Returns:
        The matplotlib Figure.
    """
    fig = new_figure(fig, figsize=(9.0, 4.5))
    ax = fig.add_subplot()
    steps = np.arange(len(result.layers))
    for method, row in zip(result.methods, result.correlation):
        style = {"ls": "--", "color": "grey"} if method == "edges" else {"marker": "o"}
        ax.plot(steps, row, label=LABELS.get(method, method), **style)
    ax.set_xticks(steps, ["trained"] + [f"+ {n}" for n in result.layers[1:]],
                  rotation=30, ha="right")
    ax.set_ylim(-0.15, 1.05)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel(f"{result.by}s re-initialised, from the top down")
    ax.set_ylabel("Spearman correlation of |map| with the trained one")
    ax.set_title(title or "Cascading randomisation: maps that stay the same ignore the weights")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_faithfulness(result: Faithfulness, fig: Figure | None = None,
                      title: str | None = None) -> Figure:
    """Deletion (left) and insertion (right) curves, the random ranking dashed.

    Args:
        result: from :func:`faithfulness`.
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one if None.

    Returns:
        The matplotlib Figure, two axes.
    """
    fig = new_figure(fig, figsize=(10, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    percent = 100 * result.fractions
    for ax, kind, better in ((axes[0], "deletion", "lower"), (axes[1], "insertion", "higher")):
        curves, areas = getattr(result, kind), getattr(result, f"{kind}_area")
        for method, curve, a in zip(result.methods, curves, areas):
            style = {"ls": "--", "color": "black"} if method == "random" else {}
            ax.plot(percent, curve, label=f"{LABELS.get(method, method)} ({a:.2f})", **style)
        ax.set_xlabel(f"% of pixels {'removed' if kind == 'deletion' else 'inserted'}, "
                      "most important first")
        ax.set_title(f"{kind} ({better} area is better)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("target value (mean over images)")
    fig.suptitle(title or f"Faithfulness with a {result.fill} fill")
    return fig
