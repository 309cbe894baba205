"""Section 1 of the lab: the filters of a convolution layer, and its feature maps.

A conv layer's weight has shape (out, in, kh, kw): ``out`` filters, each a small
stack of ``in`` kernels. :func:`filter_images` turns it into pictures (colour
when ``in == 3``, since those kernels see the red, green and blue channels; grey
otherwise, one input channel at a time) and :func:`plot_filters` lays them out
in a square-ish grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ._figures import new_figure
from ._inference import evaluating, prepare_batch
from ._validate import whole_number
from .device import model_device
from .probe import Probe, find_layer, input_channels, run

SCALES = ("global", "per_filter")


def _minmax(x: np.ndarray, axis=None) -> np.ndarray:
    """Scale ``x`` to [0, 1] over ``axis``; a constant block becomes all zeros."""
    lo = x.min(axis=axis, keepdims=True)
    span = x.max(axis=axis, keepdims=True) - lo
    return np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0)


def filter_images(weight, scale: str = "global", channel: int = 0) -> np.ndarray:
    """The filters of a conv layer as images with values in [0, 1].

    Args:
        weight: conv weight of shape (out, in, kh, kw), a Tensor (any device,
            with or without grad) or an array, e.g. ``model[0].weight``.
        scale: ``"global"`` min-max scales the whole weight tensor to [0, 1] once,
            so filters can be compared; ``"per_filter"`` scales each filter (all
            its input channels) on its own. A constant block becomes 0.
        channel: for ``in != 3``, the input channel shown, 0..in-1 (ignored when
            ``in == 3``). Scaling happens before the channel is picked.

    Returns:
        float32 array (out, kh, kw, 3) in colour when ``in == 3``, else
        (out, kh, kw) in grey.

    Raises:
        ValueError: ``weight`` is not 4-D, or ``scale``/``channel`` is invalid.

    Example:
        >>> filter_images(model[0].weight).shape
        (32, 3, 3, 3)
    """
    if isinstance(weight, nn.Module):
        raise TypeError(
            f"filter_images got the layer {weight!r}; pass its weights instead, "
            "e.g. model[0].weight."
        )
    if isinstance(weight, torch.Tensor):
        w = weight.detach().cpu().float().numpy()
    else:
        w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 4:
        raise ValueError(
            f"weight has shape {tuple(w.shape)}, but conv filters have 4 dimensions "
            "(out_channels, in_channels, kernel_height, kernel_width). Pass the "
            "weight of a Conv2d layer, e.g. model[0].weight."
        )
    if 0 in w.shape:
        raise ValueError(f"weight of shape {tuple(w.shape)} holds no filters to show.")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not known; use 'global' or 'per_filter'.")
    out, n_in = w.shape[:2]
    scaled = _minmax(w) if scale == "global" else _minmax(w, axis=(1, 2, 3))
    if n_in == 3:
        return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1), dtype=np.float32)
    channel = whole_number(
        channel, "channel", 0, n_in - 1,
        why=f"is not an input channel of these filters: they have {n_in}, numbered 0 to "
            f"{n_in - 1}",
    )
    return np.ascontiguousarray(scaled[:, channel], dtype=np.float32)


def conv_layers(model: nn.Module) -> list[str]:
    """The names of the ``Conv2d`` layers of ``model``, in ``named_modules()`` order:
    the layers that have filters to show (``["0", "2", "6", "8"]`` in the course
    network, ``"conv1"``, ``"layer1.0.conv1"``, ... in a ResNet).

    Args:
        model: a network, or a :class:`cnnlab.Probe` (its network).
    """
    net = model.model if isinstance(model, Probe) else model
    return [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]


def conv_weight(model: nn.Module, layer) -> torch.Tensor:
    """The filters of a named conv layer, for :func:`filter_images` and :func:`plot_filters`.

    Args:
        model: a network, or a :class:`cnnlab.Probe` (its network).
        layer: the conv layer's name (from ``named_modules()``, e.g. ``"conv1"``) or
            the module.

    Returns:
        The detached weight (out, in, kh, kw).

    Raises:
        ValueError: an unknown name (LayerError), or a layer that is not a Conv2d.

    Example:
        >>> conv_weight(resnet, "conv1").shape
        torch.Size([64, 3, 7, 7])
    """
    net = model.model if isinstance(model, Probe) else model
    name, module = find_layer(net, layer)
    if not isinstance(module, nn.Conv2d):
        convs = conv_layers(net)
        shown = ", ".join(map(repr, convs[:8])) + (", ..." if len(convs) > 8 else "")
        raise ValueError(f"Layer {name!r} is a {type(module).__name__}, not a Conv2d: it "
                         f"has no filters. The conv layers are {shown or 'none'}.")
    return module.weight.detach()


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of a square-ish grid for ``n`` pictures.

    ``cols = ceil(sqrt(n))`` and ``rows = ceil(n / cols)``: 32 -> (6, 6), 10 -> (3, 4).

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    n = whole_number(n, "n", advice="It is the number of pictures.")
    cols = math.isqrt(n - 1) + 1  # exact ceil(sqrt(n))
    return -(-n // cols), cols


def plot_filters(
    weight,
    scale: str = "global",
    channel: int = 0,
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Show the filters of a conv layer as a grid of small images.

    Args:
        weight: conv weight (out, in, kh, kw), as for :func:`filter_images`.
        scale: ``"global"`` or ``"per_filter"``, as for :func:`filter_images`.
        channel: input channel shown when ``in != 3``.
        title: figure title; by default says how many filters and how they are shown.
        fig: figure to draw into (cleared first); a new one if None.

    Returns:
        The matplotlib Figure: one axis per grid cell, spare cells blank.

    Example:
        >>> plot_filters(model[0].weight)  # 32 colour 3x3 filters on a 6x6 grid
    """
    pictures = filter_images(weight, scale=scale, channel=channel)
    out = pictures.shape[0]
    n_in = (weight.shape if hasattr(weight, "shape") else np.shape(weight))[1]
    rows, cols = grid_shape(out)
    fig = new_figure(fig, figsize=(1.0 * cols + 0.4, 1.0 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= out:
            continue
        if pictures.ndim == 4:
            ax.imshow(pictures[i], interpolation="nearest")
        else:
            ax.imshow(pictures[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if title is None:
        kh, kw = pictures.shape[1:3]
        shown = "in colour" if n_in == 3 else f"input channel {channel} of {n_in}, in grey"
        title = f"{out} filters of {kh}x{kw} ({shown})"
    fig.suptitle(title)
    return fig


def activation_maps(model: nn.Module, image, layer) -> np.ndarray:
    """The feature maps of one image at a layer.

    Args:
        model: the network (any ``nn.Module``), or a :class:`cnnlab.Probe` (its
            network, normalised as it expects); put in eval mode for the call,
            modes restored afterwards.
        image: one image (C, H, W), uint8 pixels or float already normalised (to
            [-1, 1] for the course network); a batch of one (1, C, H, W) is
            accepted too.
        layer: a layer's name (from ``named_modules()``, e.g. ``"layer2"``) or the
            module; for an ``nn.Sequential`` also an index: the output of
            ``model[:layer + 1]``.

    Returns:
        float32 array (C', H', W'): one map per channel of that layer.

    Raises:
        ValueError: bad image shape, an unknown layer or one out of range, or a
            layer whose output is no longer a stack of maps (Flatten and later).

    Example:
        >>> activation_maps(model, test.images[0], layer="1").shape  # the first ReLU
        (32, 32, 32)
    """
    probe = model if isinstance(model, Probe) else None
    net = probe.model if probe else model
    channels = input_channels(net) or 3
    image = torch.as_tensor(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != channels:
        kind = "RGB image" if channels == 3 else "image"
        raise ValueError(
            f"image must be one {kind} of shape ({channels}, H, W), got "
            f"{tuple(image.shape)}. Pick one image from a batch with images[i]."
        )
    if isinstance(layer, (str, nn.Module)):
        name, module = find_layer(net, layer)
    else:
        if not isinstance(net, nn.Sequential):
            raise TypeError(f"layer={layer!r}: only an nn.Sequential has layers by index; "
                            "name the layer instead (cnnlab.layers lists the names).")
        n = len(net)
        index = whole_number(
            layer, "layer", 0, n - 1,
            why=f"is not a layer of this model: it has {n} layers, numbered 0 to {n - 1}",
            advice="1 is the first ReLU.",
        )
        name, module = str(index), net[index]
    device = model_device(net)
    mean, std = (probe.mean, probe.std) if probe else (None, None)
    with evaluating(net), torch.inference_mode():
        x = prepare_batch(image[None], device, False, mean, std)
        y = run(net, x, {name: module})[name]
    if y.ndim != 4:
        raise ValueError(
            f"Layer {name} ({type(module).__name__}) outputs a vector of "
            f"{y[0].numel()} values, not feature maps. Pick an earlier layer "
            "(one before the Flatten)."
        )
    return y[0].float().cpu().numpy()


def plot_activation_maps(
    maps: np.ndarray, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """Show feature maps (C, H, W) as a grid, each map with its own colour scale.

    Args:
        maps: (C, H, W) array, e.g. from :func:`activation_maps`.
        title: figure title; a default one if None.
        fig: figure to draw into (cleared first); a new one if None.

    Returns:
        The matplotlib Figure (viridis colour map; spare cells blank).
    """
    maps = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps)
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(
            f"maps must have shape (C, H, W) (one map per channel), got {maps.shape}."
        )
    rows, cols = grid_shape(maps.shape[0])
    fig = new_figure(fig, figsize=(1.0 * cols + 0.4, 1.0 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < maps.shape[0]:
            ax.imshow(maps[i], cmap="viridis", interpolation="nearest")
    fig.suptitle(title or f"{maps.shape[0]} feature maps of {maps.shape[1]}x{maps.shape[2]}")
    return fig
