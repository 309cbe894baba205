"""Slider explorers: the lab's figures, redrawn in place as a student moves a control.

Each explorer is its controls plus ``ipywidgets.interactive_output(draw, controls)``:
at every move the Output is cleared and ``draw`` displays the Figure of the static plot
function (:func:`~cnnlab.activations.plot_top_k`, :func:`~cnnlab.occlusion.plot_occlusion`,
:func:`~cnnlab.filters.plot_filters`, :func:`~cnnlab.embedding.plot_embedding`,
:func:`~cnnlab.views.plot_unit_views`), unchanged. Those functions check their
arguments: an explorer checks only what it needs to build its controls (a slider would
silently clamp a bad starting value), and a draw that raises shows "Could not draw: ..."
and the function's message in the Output; the next move draws again. Slow results
(occlusion passes, a unit's views) are computed once per setting and cached. Only core
ipywidgets is used (JupyterLab, Notebook 7, VS Code, Colab), imported when an explorer
is built: without it, every explorer raises an ImportError that says how to install it.

The top-K explorers (unit, occlusion, attribution) share their first arguments:
``images``, uint8 (N, C, H, W), the images the features were computed from;
``features``, their (N, D) activations (``extract_features(extractor, images)``);
``units``, the units visited or shown, each in 0..D-1; ``k``, top images per unit
(None: the configuration's ``top_k``). They raise a ValueError when ``images`` and
``features`` do not match, a unit is not a unit of the layer, or ``k`` is out of range.
Their occlusion settings (``size``, ``stride``, ``threshold``, ``sigma``, ``dim``,
``precision``) go to :func:`~cnnlab.occlusion.top_k_occlusion` and
:func:`~cnnlab.occlusion.plot_occlusion`; None is the configuration's value (the
occluder's scaled to the image, :func:`~cnnlab.occlusion.scaled_occluder`). An
``extractor`` that is a :class:`cnnlab.Probe` of a network's classes (its ``classes``)
titles each column by class, as the static figures do.

Every returned box carries ``output`` (the ``ipywidgets.Output`` drawn in), ``figure``
(the last Figure drawn, None while an error is shown), ``error`` (the exception of the
last failed draw), ``n_draws`` (figures drawn so far) and ``n_computed`` (slow results
computed so far).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from ._methods import registered
from ._validate import feature_array, whole_number
from .activations import check_k, plot_top_k, top_k, validate_units
from .config import or_config
from .embedding import check_point, plot_embedding
from .filters import conv_layers, conv_weight, plot_filters
from .occlusion import check_mask_settings, plot_occlusion, scaled_occluder, top_k_occlusion
from .probe import Probe

if TYPE_CHECKING:  # only for the annotations; imported lazily at run time
    import ipywidgets

#: What a move that fails shows in the Output, before the error message.
ERROR_PREFIX = "Could not draw: "


def _ipywidgets():
    """The ipywidgets module, or an ImportError that says how to get it."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "The interactive explorers of cnnlab need ipywidgets, which is not installed. "
            "Install it with `pip install ipywidgets` (Colab and JupyterLab 4 already have "
            "it), then restart the kernel. The static figures (plot_top_k, plot_occlusion, "
            "plot_filters, plot_embedding) work without it.") from exc
    return ipywidgets


def _shell():
    """The running IPython shell, or None (plain Python)."""
    ipython = sys.modules.get("IPython")
    return None if ipython is None else ipython.get_ipython()


def _figures_inline(shell) -> None:
    """Have ``shell`` display Figures as PNG (what ``%matplotlib inline`` sets up),
    unless it already displays them in some image format."""
    formatters = shell.display_formatter.formatters
    if not any(formatters[mime].for_type(Figure)  # the printer of that format, or None
               for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf")):
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"}, bbox_inches="tight")


def _describe(exc: Exception) -> str:
    """The error's message; its type too unless it is one of cnnlab's teaching errors."""
    message = str(exc).strip() or "(no message)"
    teaching = isinstance(exc, (ValueError, TypeError))
    return message if teaching else f"{type(exc).__name__}: {message}"


def _new_box(ipw, explorer: str, static: str, **attributes):
    """The explorer's VBox, with ``figure``, ``error``, ``n_draws``, ``status`` (the line
    shown while :func:`_computed` runs), ``n_computed`` and ``attributes``. Built outside
    a kernel, it warns that nothing will be shown and names the static plot function."""
    if getattr(_shell(), "kernel", None) is None:
        warnings.warn(
            f"{explorer} was built outside a Jupyter kernel: the widget works from code "
            f"(set its sliders' .value, read .figure), but nothing is shown on screen. "
            f"In a script, draw the static figure with cnnlab.{static}(...) and save it "
            "with fig.savefig(...).",
            stacklevel=3,
        )
    box = ipw.VBox()
    box.figure, box.error, box.n_draws, box.n_computed = None, None, 0, 0
    box.status = ipw.HTML()
    for name, value in attributes.items():
        setattr(box, name, value)
    return box


def _draw_into(box, rows: list, controls: dict, make_figure: Callable[..., Figure | None]):
    """Fill ``box``: ``rows`` (a widget, or a list of widgets side by side) above
    ``interactive_output(draw, controls)``, and draw the first figure.

    ``draw(**values)`` displays ``make_figure(**values)``, or the line
    "Could not draw: <message>" if it raises; ``make_figure`` returning None
    leaves the Output as it is.
    """
    from IPython.display import display

    shell = _shell()
    if shell is not None:
        _figures_inline(shell)

    def draw(**values) -> None:
        try:
            fig = make_figure(**values)
        except Exception as exc:  # shown to the student; the next move draws again
            box.figure, box.error = None, exc
            print(ERROR_PREFIX + _describe(exc))
            return
        if fig is not None:
            box.figure, box.error = fig, None
            box.n_draws += 1
            display(fig)

    ipw = _ipywidgets()
    box.output = ipw.interactive_output(draw, controls)
    box.children = (*(ipw.HBox(r) if isinstance(r, list) else r for r in rows), box.output)
    return box


def _slider(ipw, description: str, value, low, high, step=1):
    """A slider that sends its value when released (a drag costs one redraw):
    an IntSlider for int bounds, a FloatSlider with 2 decimals otherwise."""
    if isinstance(step, int):
        return ipw.IntSlider(value=value, min=low, max=high, step=step,
                             description=description, continuous_update=False)
    return ipw.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                           continuous_update=False, readout_format=".2f")


def _visited(units, n_units: int) -> list[int]:
    """The units a unit control visits: all ``n_units`` (``units`` None), or those given."""
    return list(range(n_units)) if units is None else validate_units(units, n_units)


def _unit_control(ipw, units, visited: list[int], first: int):
    """A slider over every unit (``units`` None), or over the listed ones."""
    if units is None:
        return _slider(ipw, "unit", first, 0, visited[-1])
    return ipw.SelectionSlider(options=visited, value=first, description="unit",
                               continuous_update=False)


def _computed(box, cache: dict, key, message: str, compute: Callable):
    """``cache[key]``, computed first (with ``message`` shown meanwhile) if missing."""
    if key not in cache:
        box.status.value = message
        try:
            cache[key] = compute()
        finally:
            box.status.value = ""
        box.n_computed += 1
    return cache[key]


def unit_explorer(
    images, features, units: Sequence[int] | None = None, k: int | None = None,
    extractor: nn.Module | None = None, *, max_k: int = 20,
    size: int | None = None, stride: int | None = None,
    threshold: float | None = None, sigma: float | None = None, precision: str = "fp32",
) -> ipywidgets.VBox:
    """A slider over the units, showing one unit's top-K images at a time.

    The figure is ``plot_top_k(images, top_k(features, K), [unit])``; with an
    ``extractor``, a toggle shows them through their occlusion masks
    (``plot_occlusion``), each unit's maps computed once.

    Args:
        images, features, units, k: as the module says (units None: the slider visits
            all D; k: images shown at first, the K slider runs 1..``max_k``).
        extractor: the network the features came from (a :class:`cnnlab.Probe` or
            ``model[:14]``); without it the mask toggle is disabled.
        max_k: largest K the slider offers (at most N).
        size, stride, threshold, sigma, precision: of the masks, as the module says.

    Returns:
        The ``ipywidgets.VBox``, with ``unit_slider``, ``k_slider``, ``mask_toggle``,
        ``top_indices`` ((max_k, D) int64; its first K rows are ``top_k(features, K)``)
        and ``mask_cache`` (unit -> (m, 1, G, G) maps of its first m images).

    Raises:
        ValueError: also for ``max_k`` out of range.

    Example:
        >>> unit_explorer(test.images, features, extractor=model[:14])
    """
    ipw = _ipywidgets()
    max_k = whole_number(max_k, "max_k", advice="The default is 20.")
    features = feature_array(features, images=images)
    k = check_k(or_config(k, "top_k"), len(features))  # the K slider's first value
    top = top_k(features, min(max(max_k, k), len(features)))  # top_k(features, K) = top[:K]
    max_k, visited = len(top), _visited(units, top.shape[1])
    classes = extractor.classes if isinstance(extractor, Probe) else None  # names the columns
    unit_slider = _unit_control(ipw, units, visited, visited[0])
    k_slider = _slider(ipw, "K", k, 1, max_k)
    mask_toggle = ipw.ToggleButton(
        value=False, description="occlusion masks", disabled=extractor is None,
        tooltip=("Show the images through their occlusion masks" if extractor is not None
                 else "Pass extractor= to unit_explorer to compute occlusion masks"))
    mask_cache: dict[int, np.ndarray] = {}
    box = _new_box(ipw, "unit_explorer", "plot_top_k", unit_slider=unit_slider,
                   k_slider=k_slider, mask_toggle=mask_toggle, top_indices=top,
                   mask_cache=mask_cache)

    def make_figure(unit, kk, masks: bool) -> Figure:
        if not masks:
            return plot_top_k(images, top[:kk], [unit], classes=classes)
        if unit in mask_cache and mask_cache[unit].shape[0] < kk:
            del mask_cache[unit]  # computed for fewer images
        maps = _computed(box, mask_cache, unit,
                         f"Computing occlusion maps of unit {unit} on {kk} images...",
                         lambda: top_k_occlusion(extractor, images, top[:kk], [unit], size=size,
                                                 stride=stride, precision=precision))
        return plot_occlusion(images, top[:kk], [unit], maps[:kk], sigma=sigma,
                              threshold=threshold, classes=classes)

    return _draw_into(box, [[unit_slider, k_slider, mask_toggle], box.status],
                      {"unit": unit_slider, "kk": k_slider, "masks": mask_toggle}, make_figure)


def occlusion_explorer(
    extractor: nn.Module, images, features, units: Sequence[int] | None = None,
    k: int | None = None, *, size: int | None = None, stride: int | None = None,
    threshold: float | None = None, sigma: float | None = None, dim: float = 0.3,
    precision: str = "fp32",
) -> ipywidgets.VBox:
    """Sliders for the occluder's size and stride and the mask's threshold and smoothing.

    The figure is ``plot_occlusion(images, top_k(features, k), units, maps, ...)`` with
    ``maps = top_k_occlusion(extractor, images, top_indices, units, size=, stride=)``,
    kept per (size, stride): moving back to a setting, or moving threshold or sigma,
    only redraws. A new (size, stride) costs about K x U x G^2 forward passes.

    Args:
        extractor: the network up to the units (a :class:`cnnlab.Probe` or ``model[:14]``).
        images, features, units, k: as the module says (units: one column each; None
            for the configuration's).
        size, stride, threshold, sigma, dim, precision: as the module says; the
            sliders start there (the stride slider goes up to half the image's side).

    Returns:
        The ``ipywidgets.VBox``, with ``size_slider``, ``stride_slider``,
        ``threshold_slider``, ``sigma_slider``, ``top_indices`` ((K, D) int64) and
        ``cache`` ((size, stride) -> (K, U, G, G) maps).

    Raises:
        ValueError: also for an invalid starting value (the sliders need valid ones).

    Example:
        >>> occlusion_explorer(model[:14], test.images, features, units=[1, 2, 4])
    """
    ipw = _ipywidgets()
    top = top_k(feature_array(features, images=images), k)
    units = validate_units(or_config(units, "units"), top.shape[1])
    classes = extractor.classes if isinstance(extractor, Probe) else None  # names the columns
    side = min(images.shape[-2:])
    size, stride = scaled_occluder(*images.shape[-2:], size, stride)
    sigma, threshold, dim = check_mask_settings(sigma, threshold, dim)

    size_slider = _slider(ipw, "occluder", size, 1, side)
    stride_slider = _slider(ipw, "stride", stride, 1, max(side // 2, stride))
    threshold_slider = _slider(ipw, "threshold", threshold, 0.0, 1.0, 0.05)
    sigma_slider = _slider(ipw, "sigma", sigma, 0.0, max(5.0, sigma), 0.25)
    cache: dict[tuple[int, int], np.ndarray] = {}
    box = _new_box(ipw, "occlusion_explorer", "plot_occlusion", size_slider=size_slider,
                   stride_slider=stride_slider, threshold_slider=threshold_slider,
                   sigma_slider=sigma_slider, top_indices=top, cache=cache)

    def make_figure(size, stride, threshold, sigma) -> Figure:
        maps = _computed(box, cache, (size, stride),
                         f"Computing occlusion maps for occluder {size}, stride {stride} "
                         f"({len(top)} images x {len(units)} units)...",
                         lambda: top_k_occlusion(extractor, images, top, units, size=size,
                                                 stride=stride, precision=precision))
        return plot_occlusion(
            images, top, units, maps, sigma=sigma, threshold=threshold, dim=dim,
            title=(f"Occluder {size}x{size}, stride {stride}: top {len(top)} images, "
                   f"bright where the mask is >= {threshold:.2f}"),
            classes=classes,
        )

    controls = {"size": size_slider, "stride": stride_slider,
                "threshold": threshold_slider, "sigma": sigma_slider}
    rows = [[size_slider, stride_slider], [threshold_slider, sigma_slider], box.status]
    return _draw_into(box, rows, controls, make_figure)


def filter_explorer(model: nn.Module) -> ipywidgets.VBox:
    """Pick a conv layer, the input channel shown and the scaling of its filters.

    The menu offers every ``nn.Conv2d`` of the model by its name from
    ``named_modules()`` (:func:`cnnlab.filters.conv_layers`, as the lab lists them):
    ``"0"`` to ``"8"`` in the course network, ``"layer1.0.conv1"`` and the like in a
    ResNet. The figure is ``plot_filters(conv_weight(model, layer), scale, channel)``,
    read from the model by name at every draw (so it follows further training). The
    channel slider runs over the layer's input channels, disabled for a layer with 3
    (its filters are in colour).

    Args:
        model: the course network, or any module with ``nn.Conv2d`` layers, nested
            or not.

    Returns:
        The ``ipywidgets.VBox``, with ``layer_dropdown`` (its ``.value`` is the layer's
        name, its labels e.g. ``"layer1.0.conv1: Conv2d(64, 64, 3x3)"``),
        ``channel_slider`` and ``scale_buttons`` (``"global"`` or ``"per_filter"``).

    Raises:
        ValueError: the model has no ``nn.Conv2d``.

    Example:
        >>> filter_explorer(model)
    """
    ipw = _ipywidgets()
    names = conv_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer, so there are no "
                         "filters to show. Pass a network with convolution layers, such as "
                         "the one from cnnlab.build_model().")
    convs = {name: model.get_submodule(name) for name in names}
    layer_dropdown = ipw.Dropdown(
        options=[(f"{name}: Conv2d({c.in_channels}, {c.out_channels}, "
                  f"{c.kernel_size[0]}x{c.kernel_size[1]})", name) for name, c in convs.items()],
        value=names[0], description="layer")
    channel_slider = _slider(ipw, "channel", 0, 0, 0)  # fitted to the layer by each draw
    scale_buttons = ipw.ToggleButtons(
        options=[("global", "global"), ("per filter", "per_filter")], value="global",
        description="scale",
        tooltips=["The whole weight tensor scaled to [0, 1] once: filters can be compared",
                  "Each filter scaled on its own: shows each one's pattern"])

    def make_figure(layer, channel, scale) -> Figure | None:
        weight = conv_weight(model, layer)
        n_in = weight.shape[1]
        channel_slider.max, channel_slider.disabled = max(n_in - 1, 0), n_in == 3
        if channel_slider.value != channel:  # clamped to the layer: that move drew it
            return None
        return plot_filters(weight, scale=scale, channel=channel)

    box = _new_box(ipw, "filter_explorer", "plot_filters", layer_dropdown=layer_dropdown,
                   channel_slider=channel_slider, scale_buttons=scale_buttons)
    return _draw_into(box, [[layer_dropdown, channel_slider], scale_buttons],
                      {"layer": layer_dropdown, "channel": channel_slider,
                       "scale": scale_buttons}, make_figure)


def embedding_explorer(embedding, labels, classes: Sequence[str], images,
                       point: int = 0) -> ipywidgets.VBox:
    """The t-SNE map with classes switched on and off, and one point's image.

    The figure is ``plot_embedding(embedding, labels, classes, shown=ticked,
    point=point, image=images[point])``: the points of the ticked classes, the chosen
    point circled and its image to the right (shown even when its class is off).

    Args:
        embedding: (N, 2) from :func:`cnnlab.embedding.embed`.
        labels: (N,) int class of each point.
        classes: class names in label order (``cnnlab.data.CLASSES``).
        images: uint8 (N, C, H, W), the images of the points, same order.
        point: index of the point shown first, 0..N-1.

    Returns:
        The ``ipywidgets.VBox``, with ``class_boxes`` (one ``Checkbox`` per class, in
        label order) and ``point_slider``.

    Raises:
        ValueError: ``images`` does not have one image per point, or ``point`` is out
            of range.

    Example:
        >>> embedding_explorer(xy, test.labels, CLASSES, test.images)
    """
    ipw = _ipywidgets()
    n = len(embedding)
    if len(images) != n:
        raise ValueError(f"embedding has {n} points but images holds {len(images)}: pass "
                         "one image per point, in the same order.")
    point_slider = _slider(ipw, "point", check_point(point, n), 0, n - 1)
    class_boxes = [ipw.Checkbox(value=True, description=name, indent=False,
                                layout=ipw.Layout(width="auto")) for name in classes]

    def make_figure(point, **ticked) -> Figure:
        shown = [c for c in range(len(class_boxes)) if ticked[f"class_{c}"]]
        if not shown:
            raise ValueError("No class is ticked: tick at least one class to see its points.")
        return plot_embedding(embedding, labels, classes, shown=shown, point=point,
                              image=images[point])

    controls = {"point": point_slider,
                **{f"class_{c}": checkbox for c, checkbox in enumerate(class_boxes)}}
    rows = [ipw.HBox(class_boxes, layout=ipw.Layout(flex_flow="row wrap")), point_slider]
    box = _new_box(ipw, "embedding_explorer", "plot_embedding", class_boxes=class_boxes,
                   point_slider=point_slider)
    return _draw_into(box, rows, controls, make_figure)


# --- Section 6: one unit, every view -------------------------------------------------


def attribution_explorer(
    model: nn.Module, images, features, units: Sequence[int] | None = None,
    k: int | None = None, views=None, *, n_best: int = 3, synthesize: bool = True,
    method_options: dict[str, dict] | None = None,
) -> ipywidgets.VBox:
    """A unit slider, a method menu and an image picker over section 6's views.

    The figure is :func:`cnnlab.views.plot_unit_views` for the unit on the slider:
    every view (or the one in the menu) of the top image picked. A unit's views are
    computed by :func:`cnnlab.views.unit_views` when the slider first reaches it (a few
    seconds), then cached; the units of ``views`` computed beforehand are not computed
    again, and the slider starts on the first of them.

    Args:
        model: the course network (or ``model[:14]``, or a :class:`cnnlab.Probe`).
        images, features, units, k: as the module says (units None: the slider visits
            all D; k: top images per unit the picker offers).
        views: a :class:`cnnlab.views.UnitViews` already computed on the same images
            and features (with at least ``k`` images per unit), or None.
        n_best: best images leading the row.
        synthesize: compute a synthesized image for each unit visited.
        method_options: passed to :func:`cnnlab.views.unit_views`.

    Returns:
        The ``ipywidgets.VBox``, with ``unit_control``, ``method_control`` (``"all"``
        or a name of :data:`cnnlab.views.VIEWS`), ``image_control`` (a rank, 0 = the
        best image), ``top_indices`` and ``cache`` (unit -> its one-unit views;
        ``n_computed`` counts those computed here).

    Raises:
        ValueError: also when ``views`` is not a UnitViews.

    Example:
        >>> attribution_explorer(model, test.images, features, units=config.units)
    """
    from .views import VIEWS, UnitViews, plot_unit_views, unit_views

    ipw = _ipywidgets()
    top = top_k(feature_array(features, images=images), k)
    k, visited = len(top), _visited(units, top.shape[1])
    if views is not None and (not isinstance(views, UnitViews) or views.k < k):
        raise ValueError(
            "views must be the UnitViews that unit_views(model, images, top, units) "
            f"returns, with at least k={k} images per unit; pass views=None to compute "
            "them here."
        )
    first = next((u for u in (views.units if views is not None else []) if u in visited),
                 visited[0])  # start where nothing needs computing
    unit_control = _unit_control(ipw, units, visited, first)
    menu = [(registered(v).title.replace("\n", " "), v) for v in VIEWS
            if synthesize or v != "synthesized"]
    method_control = ipw.Dropdown(options=[("every view", "all"), *menu], value="all",
                                  description="method")
    image_control = ipw.Dropdown(
        options=[(f"#{r + 1}" + (" (best)" if r == 0 else ""), r) for r in range(k)],
        value=0, description="image",
    )
    cache: dict[int, UnitViews] = {}
    box = _new_box(ipw, "attribution_explorer", "plot_unit_views", unit_control=unit_control,
                   method_control=method_control, image_control=image_control, top_indices=top,
                   cache=cache)

    def views_of(unit: int) -> UnitViews:
        if unit not in cache and views is not None and unit in views.units:
            cache[unit] = views.of_unit(unit, k)
        return _computed(box, cache, unit,
                         f"Computing every view of unit {unit} on its top {k} images...",
                         lambda: unit_views(model, images, top, [unit], synthesize=synthesize,
                                            method_options=method_options))

    def make_figure(unit, method, image) -> Figure:
        return plot_unit_views(views_of(int(unit)), units=[int(unit)], image=int(image),
                               show=None if method == "all" else [method],
                               n_best=min(n_best, k))

    controls = {"unit": unit_control, "method": method_control, "image": image_control}
    return _draw_into(box, [list(controls.values()), box.status], controls, make_figure)
