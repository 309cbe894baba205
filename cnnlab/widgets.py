"""Slider explorers: the lab's figures, redrawn in place as a student moves a slider.

Each explorer is a function returning an ``ipywidgets.VBox``: a row of controls
above one ``Output`` widget. At every move the Output is cleared
(``clear_output(wait=True)``, so it never flickers or piles up figures) and shows
the Figure of the matching static function, unchanged:

- :func:`unit_explorer`: one unit's top-K images (:func:`~cnnlab.activations.plot_top_k`),
  or seen through their occlusion masks (:func:`~cnnlab.occlusion.plot_occlusion`);
- :func:`occlusion_explorer`: occluder size, stride, threshold and smoothing of
  :func:`~cnnlab.occlusion.plot_occlusion`;
- :func:`filter_explorer`: the filters of each conv layer (:func:`~cnnlab.filters.plot_filters`);
- :func:`embedding_explorer`: the t-SNE map (:func:`~cnnlab.embedding.plot_embedding`)
  with classes switched on and off and one point's image.

Slow results (occlusion passes) are computed once per setting and cached; moves
that only change how a result is shown (threshold, smoothing) only redraw. An
error raised while drawing is shown in the Output as "Could not draw: ...", and
the next move draws again.

Only core ipywidgets are used, so the explorers run in JupyterLab, Notebook 7,
VS Code and Colab without a custom widget manager. ipywidgets is imported when an
explorer is built, not when ``cnnlab`` is imported: without it, the explorers
raise an ImportError saying how to install it, and the static figures still work.

Besides its controls, every returned box carries these attributes:

- ``output``: the ``ipywidgets.Output`` the figure is drawn in;
- ``figure``: the last Figure drawn (``None`` while an error message is shown);
- ``error``: the exception of the last failed draw, ``None`` after a good one;
- ``n_draws``: how many figures have been drawn so far.
"""

from __future__ import annotations

import base64
import io
import numbers
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .activations import _feature_array, plot_top_k, top_k, validate_units
from .config import get_config
from .embedding import plot_embedding
from .filters import plot_filters
from .occlusion import occluder_centres, plot_occlusion, top_k_occlusion

if TYPE_CHECKING:  # only for the annotations; imported lazily at run time
    import ipywidgets

#: What a slider move that fails shows in the Output, before the error message.
ERROR_PREFIX = "Could not draw: "

_INSTALL_HINT = (
    "The interactive explorers of cnnlab need ipywidgets, which is not installed. "
    "Install it with `pip install ipywidgets` (Colab and JupyterLab 4 already have "
    "it), then restart the kernel. The static figures (plot_top_k, plot_occlusion, "
    "plot_filters, plot_embedding) work without it."
)

#: What a bad ``features`` argument's error says after "a non-empty (N, D) array".
_FEATURES_ADVICE = ", one row per image (e.g. from extract_features)"


def _ipywidgets():
    """The ipywidgets module, or an ImportError that says how to get it."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return ipywidgets


def _in_kernel() -> bool:
    """True inside a running Jupyter kernel (where an Output widget can capture)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _warn_outside_kernel(explorer: str, static: str) -> None:
    if not _in_kernel():
        warnings.warn(
            f"{explorer} was built outside a Jupyter kernel: the widget works from code "
            f"(set its sliders' .value, read .figure), but nothing is shown on screen. "
            f"In a script, draw the static figure with cnnlab.{static}(...) and save it "
            "with fig.savefig(...).",
            stacklevel=3,
        )


def _config_value(value, field: str):
    """``value``, or the configuration's ``field`` when ``value`` is None."""
    return getattr(get_config(), field) if value is None else value


def _check_same_images(images, features: np.ndarray) -> None:
    n_images = len(images)
    if n_images != features.shape[0]:
        raise ValueError(
            f"images holds {n_images} images but features has {features.shape[0]} rows: "
            "pass the images the features were computed from, e.g. "
            "features = extract_features(extractor, images)."
        )


def _check_k(k, n: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise ValueError(
            f"{name}={k!r} images per unit is not possible with {n} images: use an "
            f"integer from 1 to {n}."
        )
    return int(k)


def _check_occlusion_settings(image_size: int, size, stride, threshold, sigma) -> None:
    """Raise the teaching ValueError now rather than at the first draw (or a clamped slider)."""
    occluder_centres(image_size, size, stride)  # validates size and stride
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
        0 <= threshold <= 1
    ):
        raise ValueError(
            f"threshold={threshold!r} must be a number from 0 to 1 (the lab uses 0.5)."
        )
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or sigma < 0:
        raise ValueError(f"sigma={sigma!r} must be a number of pixels >= 0 (the lab uses 2).")


def _figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, cropped like Jupyter's inline backend does."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _release(fig: Figure) -> None:
    """Drop ``fig`` from pyplot's list of open figures, if pyplot tracks it."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


class _Canvas:
    """Draws figures into one Output widget, in place, and remembers the last one.

    In a kernel, the Output is used as a context manager (``clear_output(wait=True)``
    then ``display``), the form every front end (Colab included) supports. Outside
    a kernel nothing can capture, so the Output's ``outputs`` are replaced directly:
    tests and scripts read the same content a notebook would show.
    """

    def __init__(self, box: ipywidgets.VBox, output: ipywidgets.Output):
        self.box = box
        self.output = output
        box.output = output
        box.figure = None
        box.error = None
        box.n_draws = 0

    def draw(self, make_figure: Callable[[], Figure]) -> bool:
        """Replace the Output's content with the figure ``make_figure`` returns.

        Returns:
            True if it was drawn; False if an error message is shown instead.
        """
        fig = None
        try:
            fig = make_figure()
            png = _figure_png(fig)
        except Exception as exc:  # shown to the student; the next move tries again
            if fig is not None:
                _release(fig)
            self.box.figure = None
            self.box.error = exc
            self.show_text(ERROR_PREFIX + _describe(exc))
            return False
        _release(fig)
        self.box.figure = fig
        self.box.error = None
        self.box.n_draws += 1
        self._replace(
            {
                "output_type": "display_data",
                "data": {
                    "image/png": base64.b64encode(png).decode("ascii"),
                    "text/plain": repr(fig),
                },
                "metadata": {},
            }
        )
        return True

    def show_text(self, text: str) -> None:
        """Replace the Output's content with a line of text."""
        self._replace({"output_type": "stream", "name": "stdout", "text": text + "\n"})

    def _replace(self, item: dict) -> None:
        if _in_kernel():
            from IPython.display import clear_output, display

            with self.output:
                clear_output(wait=True)
                if item["output_type"] == "stream":
                    print(item["text"], end="")
                else:
                    display(item["data"], raw=True)
        else:
            self.output.outputs = (item,)


def _describe(exc: Exception) -> str:
    """The error's message; its type too unless it is one of cnnlab's teaching errors."""
    message = str(exc).strip() or "(no message)"
    if isinstance(exc, (ValueError, TypeError)):
        return message
    return f"{type(exc).__name__}: {message}"


def _int_slider(ipw, description: str, value: int, low: int, high: int):
    """An IntSlider that sends its value when released: a drag costs one redraw."""
    return ipw.IntSlider(
        value=value, min=low, max=high, step=1, description=description,
        continuous_update=False,
    )


def _float_slider(ipw, description: str, value: float, low: float, high: float, step: float):
    """A FloatSlider that sends its value when released, shown with 2 decimals."""
    return ipw.FloatSlider(
        value=value, min=low, max=high, step=step, description=description,
        continuous_update=False, readout_format=".2f",
    )


def unit_explorer(
    images,
    features,
    units: Sequence[int] | None = None,
    k: int | None = None,
    extractor: nn.Module | None = None,
    *,
    max_k: int = 20,
    size: int | None = None,
    stride: int | None = None,
    threshold: float | None = None,
    sigma: float | None = None,
    precision: str = "fp32",
) -> ipywidgets.VBox:
    """A slider over the units, showing one unit's top-K images at a time.

    The figure is ``plot_top_k(images, top_k(features, K), [unit])``. With an
    ``extractor``, a toggle shows the same images through their occlusion masks
    (``plot_occlusion``); a unit's maps are computed the first time they are
    asked for, then cached.

    Args:
        images: uint8 (N, 3, H, W), the images the features were computed from.
        features: (N, D) activations, e.g. ``extract_features(extractor, images)``.
        units: the units the slider visits, each in 0..D-1; None for all D.
        k: images shown at first (the K slider goes from 1 to ``max_k``); None
            for the configuration's ``top_k`` (10).
        extractor: the network the features came from, e.g. ``model[:14]``;
            needed for the occlusion masks (the toggle is disabled without it).
        max_k: largest K the slider offers (at most N).
        size, stride: occluder side and step in pixels; None for the
            configuration's (11 and 4).
        threshold, sigma: mask threshold in [0, 1] and Gaussian smoothing in
            pixels; None for the configuration's (0.5 and 2).
        precision: ``"auto"`` or ``"fp32"``, for the occlusion passes.

    Returns:
        An ``ipywidgets.VBox`` to display. Besides ``output``, ``figure``,
        ``error`` and ``n_draws`` (see the module docstring) it has
        ``unit_slider`` (its ``.value`` is a unit number), ``k_slider``,
        ``mask_toggle``, ``top_indices`` (the (max_k, D) int64 array of
        ``top_k``; the first K rows are ``top_k(features, K)``),
        ``mask_cache`` (unit -> (m, 1, G, G) maps of its first m images) and
        ``n_computed`` (occlusion passes run).

    Raises:
        ImportError: ipywidgets is not installed.
        ValueError: ``images`` and ``features`` do not match, a unit is not a
            unit of the layer, ``k``/``max_k`` is out of range, or an occlusion
            setting is invalid (size larger than the image, stride 0, ...).

    Example:
        >>> unit_explorer(test.images, features, extractor=model[:14])
    """
    ipw = _ipywidgets()
    features = _feature_array(features, _FEATURES_ADVICE)
    _check_same_images(images, features)
    n, n_units = features.shape
    k = _check_k(_config_value(k, "top_k"), n)
    if isinstance(max_k, bool) or not isinstance(max_k, numbers.Integral) or max_k < 1:
        raise ValueError(f"max_k={max_k!r} must be a positive integer, e.g. 20.")
    max_k = min(max(int(max_k), k), n)  # the K slider's range: 1..max_k
    visited = list(range(n_units)) if units is None else validate_units(units, n_units)
    size = _config_value(size, "occluder")
    stride = _config_value(stride, "stride")
    threshold = _config_value(threshold, "threshold")
    sigma = _config_value(sigma, "sigma")
    _check_occlusion_settings(int(images.shape[-1]), size, stride, threshold, sigma)
    _warn_outside_kernel("unit_explorer", "plot_top_k")

    top = top_k(features, max_k)  # (max_k, D); its first K rows are top_k(features, K)
    if units is None:
        unit_slider = _int_slider(ipw, "unit", 0, 0, n_units - 1)
    else:
        unit_slider = ipw.SelectionSlider(
            options=visited, value=visited[0], description="unit", continuous_update=False
        )
    k_slider = _int_slider(ipw, "K", k, 1, max_k)
    mask_toggle = ipw.ToggleButton(
        value=False,
        description="occlusion masks",
        disabled=extractor is None,
        tooltip=(
            "Show the images through their occlusion masks"
            if extractor is not None
            else "Pass extractor= to unit_explorer to compute occlusion masks"
        ),
    )
    status = ipw.HTML()
    output = ipw.Output()
    box = ipw.VBox(
        [ipw.HBox([unit_slider, k_slider, mask_toggle]), status, output]
    )
    canvas = _Canvas(box, output)
    box.unit_slider, box.k_slider, box.mask_toggle = unit_slider, k_slider, mask_toggle
    box.top_indices = top
    box.mask_cache = {}
    box.n_computed = 0

    def unit_maps(unit: int, kk: int) -> np.ndarray:
        cached = box.mask_cache.get(unit)
        if cached is not None and cached.shape[0] >= kk:
            return cached[:kk]
        status.value = f"Computing occlusion maps of unit {unit} on {kk} images..."
        try:
            maps = top_k_occlusion(
                extractor, images, top[:kk], [unit], size=size, stride=stride,
                precision=precision, progress=False,
            )
        finally:
            status.value = ""
        box.mask_cache[unit] = maps
        box.n_computed += 1
        return maps

    def make_figure() -> Figure:
        unit, kk = int(unit_slider.value), int(k_slider.value)
        if mask_toggle.value:
            return plot_occlusion(
                images, unit_maps(unit, kk), [unit], top[:kk], sigma=sigma,
                threshold=threshold,
                title=f"Unit {unit}: top {kk} images, dimmed where occlusion mattered least",
            )
        return plot_top_k(images, top[:kk], [unit], title=f"Unit {unit}: top {kk} images")

    def redraw(_change=None) -> None:
        canvas.draw(make_figure)

    for control in (unit_slider, k_slider, mask_toggle):
        control.observe(redraw, names="value")
    redraw()
    return box


def occlusion_explorer(
    extractor: nn.Module,
    images,
    features,
    units: Sequence[int] | None = None,
    k: int | None = None,
    *,
    size: int | None = None,
    stride: int | None = None,
    threshold: float | None = None,
    sigma: float | None = None,
    dim: float = 0.3,
    max_stride: int = 16,
    precision: str = "fp32",
    cache_size: int = 16,
) -> ipywidgets.VBox:
    """Sliders for the occluder's size and stride and the mask's threshold and smoothing.

    The figure is ``plot_occlusion(images, maps, units, top_k(features, k), ...)``
    with ``maps = top_k_occlusion(extractor, images, top_indices, units, size=,
    stride=)``. The occlusion passes are cached per (size, stride): moving back to
    a setting seen before, or moving threshold or sigma, only redraws.

    Each new (size, stride) costs about K x U x G^2 forward passes (70 x 49 for
    the lab's 7 units, K = 10, size 11, stride 4; G grows as the stride shrinks).

    Args:
        extractor: the network up to the units, e.g. ``model[:14]``.
        images: uint8 (N, 3, H, W), the images the features were computed from.
        features: (N, D) activations of those images through ``extractor``.
        units: the units shown, one column each; None for the configuration's.
        k: top images per unit (rows); None for the configuration's ``top_k``.
        size, stride, threshold, sigma: starting values; None for the
            configuration's (11, 4, 0.5, 2).
        dim: brightness of the pixels below the threshold, in [0, 1].
        max_stride: largest stride the slider offers.
        precision: ``"auto"`` or ``"fp32"``, for the occlusion passes.
        cache_size: how many (size, stride) settings stay cached (the most
            recently used).

    Returns:
        An ``ipywidgets.VBox`` to display. Besides ``output``, ``figure``,
        ``error`` and ``n_draws`` (see the module docstring) it has
        ``size_slider``, ``stride_slider``, ``threshold_slider``,
        ``sigma_slider``, ``top_indices`` ((K, D) int64), ``cache`` (an
        OrderedDict (size, stride) -> (K, U, G, G) maps) and ``n_computed``
        (occlusion passes run).

    Raises:
        ImportError: ipywidgets is not installed.
        ValueError: ``images`` and ``features`` do not match, a unit is not a
            unit of the layer, ``k`` is out of range, or a starting value is
            invalid (size larger than the image, stride 0, threshold outside [0, 1]).

    Example:
        >>> occlusion_explorer(model[:14], test.images, features, units=[1, 2, 4])
    """
    ipw = _ipywidgets()
    features = _feature_array(features, _FEATURES_ADVICE)
    _check_same_images(images, features)
    n, n_units = features.shape
    units = validate_units(_config_value(units, "units"), n_units)
    k = _check_k(_config_value(k, "top_k"), n)
    size = _config_value(size, "occluder")
    stride = _config_value(stride, "stride")
    threshold = _config_value(threshold, "threshold")
    sigma = _config_value(sigma, "sigma")
    image_size = int(images.shape[-1])
    _check_occlusion_settings(image_size, size, stride, threshold, sigma)
    for name, value in (("max_stride", max_stride), ("cache_size", cache_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    _warn_outside_kernel("occlusion_explorer", "plot_occlusion")

    top = top_k(features, k)
    size_slider = _int_slider(ipw, "occluder", size, 1, image_size)
    stride_slider = _int_slider(ipw, "stride", stride, 1, max(max_stride, stride))
    threshold_slider = _float_slider(ipw, "threshold", threshold, 0.0, 1.0, 0.05)
    sigma_slider = _float_slider(ipw, "sigma", sigma, 0.0, max(5.0, sigma), 0.25)
    status = ipw.HTML()
    output = ipw.Output()
    box = ipw.VBox(
        [
            ipw.HBox([size_slider, stride_slider]),
            ipw.HBox([threshold_slider, sigma_slider]),
            status,
            output,
        ]
    )
    canvas = _Canvas(box, output)
    box.size_slider, box.stride_slider = size_slider, stride_slider
    box.threshold_slider, box.sigma_slider = threshold_slider, sigma_slider
    box.top_indices = top
    box.cache = OrderedDict()
    box.n_computed = 0

    def maps_for(key: tuple[int, int]) -> np.ndarray:
        if key in box.cache:
            box.cache.move_to_end(key)
            return box.cache[key]
        status.value = (
            f"Computing occlusion maps for occluder {key[0]}, stride {key[1]} "
            f"({k} images x {len(units)} units)..."
        )
        try:
            maps = top_k_occlusion(
                extractor, images, top, units, size=key[0], stride=key[1],
                precision=precision, progress=False,
            )
        finally:
            status.value = ""
        box.cache[key] = maps
        box.n_computed += 1
        while len(box.cache) > cache_size:
            box.cache.popitem(last=False)
        return maps

    def make_figure() -> Figure:
        key = (int(size_slider.value), int(stride_slider.value))
        return plot_occlusion(
            images, maps_for(key), units, top, sigma=float(sigma_slider.value),
            threshold=float(threshold_slider.value), dim=dim,
            title=(
                f"Occluder {key[0]}x{key[0]}, stride {key[1]}: top {k} images, "
                f"bright where the mask is >= {threshold_slider.value:.2f}"
            ),
        )

    def redraw(_change=None) -> None:
        canvas.draw(make_figure)

    for control in (size_slider, stride_slider, threshold_slider, sigma_slider):
        control.observe(redraw, names="value")
    redraw()
    return box


def filter_explorer(model: nn.Module) -> ipywidgets.VBox:
    """Pick a conv layer, the input channel shown and the scaling of its filters.

    The figure is ``plot_filters(layer.weight, scale, channel)``, read from the
    model at every draw (so it follows further training). The channel slider
    runs over the layer's input channels and is disabled for a layer with 3
    (its filters are shown in colour).

    Args:
        model: the course network (conv layers at indices 0, 2, 6 and 8), or any
            module whose children include ``nn.Conv2d`` layers.

    Returns:
        An ``ipywidgets.VBox`` to display. Besides ``output``, ``figure``,
        ``error`` and ``n_draws`` (see the module docstring) it has
        ``layer_dropdown`` (its ``.value`` is the layer's index in the model),
        ``channel_slider`` and ``scale_buttons`` (``"global"`` or
        ``"per_filter"``).

    Raises:
        ImportError: ipywidgets is not installed.
        ValueError: the model has no ``nn.Conv2d`` child.

    Example:
        >>> filter_explorer(model)
    """
    ipw = _ipywidgets()
    layers = list(model.children())
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d among its children, so there are "
            "no filters to show. Pass the network from cnnlab.build_model()."
        )
    _warn_outside_kernel("filter_explorer", "plot_filters")

    def label(i: int) -> str:
        conv = layers[i]
        kh, kw = conv.kernel_size
        return f"model[{i}]: Conv2d({conv.in_channels}, {conv.out_channels}, {kh}x{kw})"

    layer_dropdown = ipw.Dropdown(
        options=[(label(i), i) for i in convs], value=convs[0], description="layer"
    )
    channel_slider = _int_slider(ipw, "channel", 0, 0, 0)
    scale_buttons = ipw.ToggleButtons(
        options=[("global", "global"), ("per filter", "per_filter")],
        value="global",
        description="scale",
        tooltips=[
            "The whole weight tensor scaled to [0, 1] once: filters can be compared",
            "Each filter scaled on its own: shows each one's pattern",
        ],
    )
    output = ipw.Output()
    box = ipw.VBox(
        [ipw.HBox([layer_dropdown, channel_slider]), scale_buttons, output]
    )
    canvas = _Canvas(box, output)
    box.layer_dropdown, box.channel_slider = layer_dropdown, channel_slider
    box.scale_buttons = scale_buttons
    adjusting = [False]  # True while the channel slider is fitted to a new layer

    def fit_channel_slider() -> None:
        n_in = layers[layer_dropdown.value].in_channels
        adjusting[0] = True
        try:
            channel_slider.value = min(channel_slider.value, n_in - 1)
            channel_slider.max = max(n_in - 1, 0)
            channel_slider.disabled = n_in == 3
        finally:
            adjusting[0] = False

    def make_figure() -> Figure:
        layer = layers[layer_dropdown.value]
        return plot_filters(
            layer.weight, scale=scale_buttons.value, channel=int(channel_slider.value)
        )

    def redraw(_change=None) -> None:
        if not adjusting[0]:
            canvas.draw(make_figure)

    def layer_changed(_change) -> None:
        fit_channel_slider()
        redraw()

    layer_dropdown.observe(layer_changed, names="value")
    channel_slider.observe(redraw, names="value")
    scale_buttons.observe(redraw, names="value")
    fit_channel_slider()
    redraw()
    return box


def embedding_explorer(
    embedding,
    labels,
    classes: Sequence[str],
    images,
    point: int = 0,
) -> ipywidgets.VBox:
    """The t-SNE map with classes switched on and off, and one point's image.

    The figure is ``plot_embedding`` of the points of the ticked classes; the
    chosen point is circled on it and its image is shown to the right, titled
    with its index and class (it is shown even when its class is switched off).

    Args:
        embedding: (N, 2) from :func:`cnnlab.embedding.embed`.
        labels: (N,) int class of each point.
        classes: class names in label order (``cnnlab.data.CLASSES``).
        images: uint8 (N, 3, H, W), the images of the points, same order.
        point: index of the point shown first, 0..N-1.

    Returns:
        An ``ipywidgets.VBox`` to display. Besides ``output``, ``figure``,
        ``error`` and ``n_draws`` (see the module docstring) it has
        ``class_boxes`` (one ``Checkbox`` per class, in label order) and
        ``point_slider``.

    Raises:
        ImportError: ipywidgets is not installed.
        ValueError: the arrays do not have one row per point, or ``point`` is
            out of range.

    Example:
        >>> embedding_explorer(xy, test.labels, CLASSES, test.images)
    """
    from .data import to_display

    ipw = _ipywidgets()
    if isinstance(embedding, torch.Tensor):
        embedding = embedding.detach().cpu().numpy()
    embedding = np.asarray(embedding)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if embedding.ndim != 2 or embedding.shape[1] != 2 or embedding.shape[0] == 0:
        raise ValueError(f"embedding must have shape (N, 2), got {embedding.shape}.")
    n = embedding.shape[0]
    if labels.shape != (n,) or len(images) != n:
        raise ValueError(
            f"embedding has {n} points, labels has shape {labels.shape} and images holds "
            f"{len(images)}: pass one label and one image per point, in the same order."
        )
    if isinstance(point, bool) or not isinstance(point, numbers.Integral) or not 0 <= point < n:
        raise ValueError(f"point={point!r} must be a point index from 0 to {n - 1}.")
    classes = list(classes)
    _warn_outside_kernel("embedding_explorer", "plot_embedding")

    class_boxes = [
        ipw.Checkbox(value=True, description=name, indent=False,
                     layout=ipw.Layout(width="auto"))
        for name in classes
    ]
    point_slider = _int_slider(ipw, "point", int(point), 0, n - 1)
    output = ipw.Output()
    box = ipw.VBox(
        [
            ipw.HBox(class_boxes, layout=ipw.Layout(flex_flow="row wrap")),
            point_slider,
            output,
        ]
    )
    canvas = _Canvas(box, output)
    box.class_boxes, box.point_slider = class_boxes, point_slider

    def make_figure() -> Figure:
        shown = [c for c, checkbox in enumerate(class_boxes) if checkbox.value]
        if not shown:
            raise ValueError("No class is ticked: tick at least one class to see its points.")
        keep = np.isin(labels, shown)
        fig = plot_embedding(
            embedding[keep], labels[keep], classes,
            title=f"t-SNE of {int(keep.sum())} of {n} points "
                  f"({len(shown)} of {len(classes)} classes)",
        )
        ax = fig.axes[0]
        i = int(point_slider.value)
        x, y = embedding[i]
        ax.scatter([x], [y], s=160, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=3)
        thumb = ax.inset_axes([1.02, 0.0, 0.24, 0.24])
        thumb.imshow(to_display(torch.as_tensor(np.asarray(images[i]))))
        thumb.set_xticks([])
        thumb.set_yticks([])
        thumb.set_title(f"#{i}: {classes[int(labels[i])]}", fontsize=9)
        return fig

    def redraw(_change=None) -> None:
        canvas.draw(make_figure)

    for control in (*class_boxes, point_slider):
        control.observe(redraw, names="value")
    redraw()
    return box


# --- Section 6: one unit, every view -------------------------------------------------


def attribution_explorer(
    model: nn.Module,
    images,
    features,
    units: Sequence[int] | None = None,
    k: int | None = None,
    views=None,
    *,
    n_best: int = 3,
    synthesize: bool = True,
    method_options: dict[str, dict] | None = None,
) -> ipywidgets.VBox:
    """A unit slider, a method menu and an image picker over section 6's views.

    The figure is :func:`cnnlab.views.plot_unit_views` for the unit on the
    slider: every view (or the one picked in the menu) of the top image picked.
    A unit's views are computed by :func:`cnnlab.views.unit_views` the first time
    the slider reaches it (a few seconds: the gradient methods, occlusion and, with
    ``synthesize``, an image made for the unit), then cached; the units of a
    ``views`` computed beforehand are not computed again, and the slider starts
    on the first of them.

    The controls are wired with ``ipywidgets.interactive_output(draw, controls)``:
    ``draw`` calls the plot function, and a failing draw shows "Could not
    draw: ..." in place of the figure (the next move draws again).

    Args:
        model: the course network (or its extractor ``model[:14]``).
        images: uint8 (N, 3, H, W), the images the features were computed from.
        features: (N, D) activations of those images, e.g.
            ``extract_features(model[:14], images)``.
        units: the units the slider visits, each in 0..D-1; None for all D.
        k: top images per unit the picker offers; None for the configuration's
            ``top_k`` (10).
        views: a :class:`cnnlab.views.UnitViews` already computed for some units
            on the same images and features (with at least ``k`` images), or None.
        n_best: best images leading the row.
        synthesize: compute a synthesized image for each unit visited.
        method_options: passed to :func:`cnnlab.views.unit_views`.

    Returns:
        An ``ipywidgets.VBox`` to display. It has ``unit_control`` (its ``.value`` is
        a unit number), ``method_control`` (``"all"`` or a name of
        :data:`cnnlab.views.VIEWS`), ``image_control`` (a rank, 0 = the best
        image), ``output``, ``figure`` (the last Figure drawn, None after a failed
        draw), ``error`` (the exception of the last failed draw, else None),
        ``n_draws`` (figures drawn), ``cache`` (unit -> its one-unit views) and
        ``n_computed`` (units whose views were computed here).

    Raises:
        ImportError: ipywidgets is not installed.
        ValueError: ``images`` and ``features`` do not match, a unit is not a unit
            of the layer, or ``k`` is out of range.

    Example:
        >>> attribution_explorer(model, test.images, features, units=config.units)
    """
    from .views import TITLES, VIEWS, UnitViews, plot_unit_views, unit_views

    ipw = _ipywidgets()
    features = _feature_array(features, _FEATURES_ADVICE)
    _check_same_images(images, features)
    n, n_units = features.shape
    k = _check_k(_config_value(k, "top_k"), n)
    visited = list(range(n_units)) if units is None else validate_units(units, n_units)
    if views is not None and (not isinstance(views, UnitViews) or views.k < k):
        raise ValueError(
            "views must be the UnitViews that unit_views(model, images, top, units) "
            f"returns, with at least k={k} images per unit; pass views=None to compute "
            "them here."
        )
    _warn_outside_kernel("attribution_explorer", "plot_unit_views")
    top = top_k(features, k)

    first = next((u for u in (views.units if views is not None else []) if u in visited),
                 visited[0])  # start where nothing needs computing
    if units is None:
        unit_control = _int_slider(ipw, "unit", first, 0, n_units - 1)
    else:
        unit_control = ipw.SelectionSlider(options=visited, value=first,
                                           description="unit", continuous_update=False)
    menu = [("every view", "all")] + [(TITLES[v].replace("\n", " "), v) for v in VIEWS]
    if not synthesize:
        menu = [item for item in menu if item[1] != "synthesized"]
    method_control = ipw.Dropdown(options=menu, value="all", description="method")
    image_control = ipw.Dropdown(
        options=[(f"#{r + 1}" + (" (best)" if r == 0 else ""), r) for r in range(k)],
        value=0, description="image",
    )
    status = ipw.HTML()
    controls = {"unit": unit_control, "method": method_control, "image": image_control}
    box_children = [ipw.HBox(list(controls.values())), status]
    cache: dict[int, UnitViews] = {}

    def views_of(unit: int) -> UnitViews:
        if unit in cache:
            return cache[unit]
        if views is not None and unit in views.units:
            cache[unit] = _one_unit(views, unit, k)
            return cache[unit]
        status.value = f"Computing every view of unit {unit} on its top {k} images..."
        try:
            cache[unit] = unit_views(model, images, top, [unit], synthesize=synthesize,
                                     method_options=method_options)
        finally:
            status.value = ""
        box.n_computed += 1
        return cache[unit]

    def draw(unit, method, image) -> None:
        from IPython.display import display

        try:
            fig = plot_unit_views(
                views_of(int(unit)), units=[int(unit)], image=int(image),
                show=None if method == "all" else [method], n_best=min(n_best, k),
            )
        except Exception as exc:  # shown to the student; the next move tries again
            box.figure, box.error = None, exc
            print(ERROR_PREFIX + _describe(exc))
            return
        _release(fig)
        box.figure, box.error = fig, None
        box.n_draws += 1
        if _in_kernel():
            display(fig)

    box = ipw.VBox(box_children)
    box.unit_control, box.method_control, box.image_control = (
        unit_control, method_control, image_control)
    box.top_indices, box.cache = top, cache
    box.figure, box.error, box.n_draws, box.n_computed = None, None, 0, 0
    box.output = ipw.interactive_output(draw, controls)  # draws once, then at every move
    box.children = (*box_children, box.output)
    return box


def _one_unit(views, unit: int, k: int):
    """The rows of ``views`` for one unit (first ``k`` images), as a UnitViews."""
    from .views import UnitViews

    j = views.row(unit)
    return UnitViews(
        units=[unit], indices=views.indices[j:j + 1, :k], images=views.images[j:j + 1, :k],
        activation=views.activation[j:j + 1, :k], bias=views.bias[j:j + 1],
        occlusion=views.occlusion[j:j + 1, :k],
        maps={name: m[j:j + 1, :k] for name, m in views.maps.items()},
        synthesized=None if views.synthesized is None else views.synthesized[j:j + 1],
        synthesized_activation=(None if views.synthesized_activation is None
                                else views.synthesized_activation[j:j + 1]),
    )
