"""A place in a network, by name: the one object every analysis reads a network through.

A :class:`Probe` is a network, one of its layers (a dotted name from
``model.named_modules()``, as ``"13"`` in the course network or ``"layer3"`` in a
torchvision ResNet) and the network's own input normalisation. Its *units* are the
layer's outputs for each image: a conv-like output (N, C, H, W) gives C units, each
channel averaged over the positions; an output (N, D) gives its D values.

The layer's output is read with a forward hook that exists only while one call
runs (:func:`capture`, removed on exit, also after an exception), so nothing is
left on the model. What the hook captures is a copy, so a later in-place ReLU (or
a ReLU module used twice, as in ResNet's ``BasicBlock``) cannot change it. The
forward pass stops once every layer asked for has run.

:func:`layers` lists every layer's name, type and output shape (one forward pass of
a blank image); :func:`last_spatial_layer` picks a default layer for maps.

Example:
    >>> probe = Probe(build_model(), "13")         # the course network's 128 units
    >>> probe.extractor(test.images[:4]).shape     # same values as model[:14]
    torch.Size([4, 128])
"""

from __future__ import annotations

import contextlib
import difflib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from ._inference import evaluating
from ._pixels import MEAN, STD, channel_stat, normalize
from .device import model_device

#: Module types that only resample or drop what an earlier layer computed.
RESAMPLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
              nn.Dropout, nn.Dropout2d, nn.Identity)


class LayerError(ValueError):
    """A layer name that is not in the network; the message names the closest ones."""


class _Stop(Exception):
    """Raised by a hook to end a forward pass once every wanted layer has run."""


def find_layer(model: nn.Module, layer) -> tuple[str, nn.Module]:
    """The name and module of ``layer`` in ``model``.

    Args:
        model: any network.
        layer: a dotted name from ``model.named_modules()`` (``""`` is the whole
            model: its output), or one of its submodules.

    Returns:
        ``(name, module)``.

    Raises:
        LayerError: no layer of that name; the message lists the closest names.
        TypeError: ``layer`` is neither a name nor a module of ``model`` (an index).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}.")
    how = "list them with cnnlab.layers(model, (3, H, W)) or [n for n, _ in " \
          "model.named_modules()]"
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise LayerError(f"The module {type(layer).__name__} given as layer is not part of "
                         f"this {type(model).__name__}: pass one of its own layers ({how}).")
    if isinstance(layer, bool) or not isinstance(layer, str):
        hint = f" Write layer={str(layer)!r}." if isinstance(layer, int) else ""
        raise TypeError(f"layer={layer!r} must be a layer's name (a string from "
                        f"model.named_modules()) or the module itself.{hint}")
    modules = dict(model.named_modules())
    if layer in modules:
        return layer, modules[layer]
    close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.5)
    nearest = f"The closest names are {', '.join(map(repr, close))}. " if close else ""
    raise LayerError(f"{type(model).__name__} has no layer named {layer!r}. {nearest}"
                     f"Layer names are dotted paths such as 'layer4.1.conv2': {how}.")


def unit_layer(model: nn.Module) -> str:
    """The name of the layer the lab reads by default: the first ``nn.Linear``
    (``"13"`` in the course network, the 128 units).

    Raises:
        ValueError: the model has no ``nn.Linear`` layer.
    """
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            return name
    raise ValueError(
        f"{type(model).__name__} has no nn.Linear layer; name the layer to read "
        "(cnnlab.layers(model, (C, H, W)) lists them)."
    )


def reads_output(model: nn.Module, layer: str) -> bool:
    """Whether the output of ``layer`` is the output of ``model``: ``""`` (the model
    itself), or a layer that runs once and whose output ``forward`` returns as it is (the
    course network's last ``Linear``, ``"16"``; a torchvision ResNet's ``"fc"``).

    Read from the model's code with ``torch.fx`` (the layer traced as one step), so no
    image is needed. A model that fx cannot trace (control flow on tensor values) counts
    as not: read its outputs with ``layer=""``.
    """
    if layer == "":
        return True

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return name == layer or super().is_leaf_module(module, name)

    try:
        graph = Tracer().trace(model)
    except Exception:  # fx cannot follow every forward (data-dependent branches, ...)
        return False
    calls = [node for node in graph.nodes if node.op == "call_module" and node.target == layer]
    returned = next(node for node in graph.nodes if node.op == "output").args[0]
    return len(calls) == 1 and returned is calls[0]


def first_linear_index(model: nn.Module) -> int:
    """Index of the first ``nn.Linear`` inside a Sequential (13 for the course network).

    Raises:
        ValueError: the model has no ``nn.Linear`` child.
    """
    for i, layer in enumerate(model.children()):
        if isinstance(layer, nn.Linear):
            return i
    raise ValueError(
        f"{type(model).__name__} has no nn.Linear layer among its children; "
        "expected the course network from cnnlab.build_model()."
    )


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module], stop: bool = False) -> Iterator[dict]:
    """Forward hooks that copy each module's output while the body runs.

    Each module's output of its first call in the pass is kept as a copy; the
    network goes on with a second copy, so its later in-place operations cannot
    change what was kept, and gradients flow back through the kept tensor. With
    ``stop``, the pass ends (by an exception :func:`run` catches) as soon as every
    module has run. The hooks are removed on exit, also after an exception.

    Args:
        modules: name -> module to capture.
        stop: end the forward pass once all are captured.

    Yields:
        A dict name -> captured output, filled as the pass runs.
    """
    kept: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def keep(_module, _inputs, output):
            if name in kept:
                return None  # a module used twice: its first output is the one kept
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"Layer {name!r} returns a {type(output).__name__}, not a "
                                "tensor: pick a layer whose output is one tensor.")
            kept[name] = output.clone()
            if stop and len(kept) == len(modules):
                raise _Stop
            return kept[name].clone()
        return keep

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        yield kept
    finally:
        for h in handles:
            h.remove()


def run(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]) -> dict:
    """The outputs of ``modules`` when ``model`` runs on ``x`` (stopping once all ran).

    Raises:
        ValueError: a module did not run in the forward pass, or the model could not
            run on images of this shape.
    """
    with capture(modules, stop=True) as kept:
        try:
            call(model, x)
        except _Stop:
            pass
    missing = [name for name in modules if name not in kept]
    if missing:
        raise ValueError(f"Layer(s) {missing} did not run when {type(model).__name__} ran "
                         "on these images: pick a layer its forward pass uses.")
    return kept


def call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, with a teaching error when the images do not fit the model.

    Raises:
        ValueError: a shape mismatch inside the model (the images' size is wrong).
    """
    try:
        return model(x)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, torch.OutOfMemoryError) or not any(
                word in first for word in ("shape", "size", "mat1")):
            raise  # not a question of image size
        shown = ", ".join(map(str, x.shape[1:]))
        raise ValueError(
            f"The model could not run on images of shape (N, {shown}) "
            f"({first}). The course network takes CIFAR-10 images of shape (N, 3, 32, 32): "
            "uint8 pixels 0..255, or floats already normalised to [-1, 1]."
        ) from exc


def input_channels(model: nn.Module) -> int | None:
    """The colour channels ``model`` takes: ``in_channels`` of its first layer when that
    is a conv layer (None otherwise: then any number of channels is let through)."""
    for module in model.modules():
        if not list(module.children()):  # the first leaf layer
            return module.in_channels if isinstance(module, nn.modules.conv._ConvNd) else None
    return None


def as_units(output: torch.Tensor) -> torch.Tensor:
    """A layer's output as units (N, D): positions averaged for (N, C, *spatial)."""
    if output.ndim > 2:
        return output.mean(dim=tuple(range(2, output.ndim)))
    if output.ndim == 2:
        return output
    raise ValueError(f"The layer's output has shape {tuple(output.shape)}; units need "
                     "(N, D) or (N, C, H, W).")


class Extractor(nn.Module):
    """Images to a probe's units: normalisation, the network up to the layer, averaging.

    Args (of ``forward``):
        images: uint8 (N, C, H, W) pixels 0..255 (normalised here with the probe's
            mean and std), or floats already normalised.

    Returns (of ``forward``):
        float (N, D): the layer's units.
    """

    def __init__(self, model: nn.Module, layer: str, mean, std) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.mean, self.std = mean, std

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels normalised as the network expects; floats returned as float."""
        if images.dtype == torch.uint8:
            return normalize(images, self.mean, self.std)
        return images.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        module = dict(self.model.named_modules())[self.layer]
        return as_units(run(self.model, x, {self.layer: module})[self.layer])


class Probe:
    """A network read at one named layer, with the network's own normalisation.

    Args:
        model: any ``nn.Module`` taking images (N, C, H, W).
        layer: a dotted name from ``model.named_modules()`` (``""`` = the model's
            output), or the module itself.
        mean: per-channel mean (pixels in [0, 1]) the network was trained with, one
            number or one per channel; None = the course's 0.5.
        std: per-channel standard deviation, like ``mean``; None = the course's 0.5.
        classes: names of the network's outputs in order, when they are classes and
            the probe reads them (``layer=""``, or the layer whose output the network
            returns, as ResNet's ``"fc"``: :func:`reads_output`); None = the network's
            own ``classes`` attribute if it has one (:func:`cnnlab.build_model` sets
            CIFAR-10's), else none known.

    Attributes:
        model, layer (the name), module (the layer), mean, std,
        classes: a tuple of names, or None (the units are not known to be classes),
        kind: what one unit is called in messages, ``"class"`` or ``"unit"``,
        reads_output: whether the layer's output is the network's (:func:`reads_output`),
        extractor: an ``nn.Module`` from uint8 images (N, C, H, W) to units (N, D).

    A module that runs more than once in a pass (ResNet's ``BasicBlock.relu``) is
    read at its first call: name the block (``"layer1.0"``) or a conv instead.

    Raises:
        LayerError: no layer of that name (the message names the closest ones).
        ValueError: ``classes`` given for a layer whose output is not the network's.

    Example:
        >>> probe = Probe(resnet, "layer3", mean=(0.485, 0.456, 0.406),
        ...               std=(0.229, 0.224, 0.225))
        >>> probe.units(images).shape      # (N, 256): layer3's channels
    """

    def __init__(self, model: nn.Module, layer, *, mean=None, std=None,
                 classes: Sequence[str] | None = None) -> None:
        self.model = model
        self.layer, self.module = find_layer(model, layer)
        if isinstance(classes, str):
            raise TypeError(f"classes={classes!r} must be a list of names, one per output.")
        if classes is not None and not self.reads_output:
            raise ValueError(f"classes names a network's outputs, but this probe reads layer "
                             f"{self.layer!r}: give classes only with layer='' (or the layer "
                             "whose output the network returns, as a ResNet's 'fc').")
        if classes is None and getattr(model, "classes", None) is not None and self.reads_output:
            classes = model.classes
        self.classes = None if classes is None else tuple(map(str, classes))
        # None stays None: normalize's default (0.5, 0.5)
        self.mean = None if mean is None else _stat(mean, "mean")
        self.std = None if std is None else _stat(std, "std")
        self.extractor = Extractor(model, self.layer, self.mean, self.std)

    @functools.cached_property
    def reads_output(self) -> bool:
        """Whether the layer's output is the network's output (:func:`reads_output`)."""
        return reads_output(self.model, self.layer)

    @property
    def kind(self) -> str:
        """``"class"`` when the units have class names, else ``"unit"``. A network's
        output is not always classes (the extractor ``model[:14]`` ends in units), so
        only names, given or carried by the network, make them classes."""
        return "unit" if self.classes is None else "class"

    def __repr__(self) -> str:
        return (f"Probe({type(self.model).__name__}, layer={self.layer!r}, "
                f"mean={self.mean or MEAN}, std={self.std or STD})")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N, C, H, W) as the network's input; floats returned as float."""
        return self.extractor.normalize(images)

    def outputs(self, x: torch.Tensor, layers: Sequence[str] = ()
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Units and other layers' outputs for a normalised batch, gradients kept.

        Args:
            x: float (N, C, H, W), already normalised.
            layers: names of further layers whose outputs to return.

        Returns:
            ``(units (N, D), {name: output})``. The model's mode is left as it is.
        """
        names = {self.layer: self.module}
        names.update(find_layer(self.model, name) for name in layers)
        kept = run(self.model, x, names)
        return as_units(kept[self.layer]), {name: kept[name] for name in layers}

    def units(self, images: torch.Tensor) -> torch.Tensor:
        """The units (N, D) of a batch, in eval mode without gradients (modes restored)."""
        with evaluating(self.model), torch.inference_mode():
            return self.extractor(images.to(model_device(self.model)))


def _stat(value, name: str) -> tuple[float, ...]:
    return tuple(channel_stat(value, name).flatten().tolist())


def as_extractor(extractor) -> tuple[nn.Module, tuple | None, tuple | None]:
    """``(module, mean, std)``: a Probe's extractor and its normalisation, or a plain
    module (an extractor such as ``model[:14]``) with the course's (None, None)."""
    if isinstance(extractor, Probe):
        extractor = extractor.extractor
    if isinstance(extractor, Extractor):
        return extractor, extractor.mean, extractor.std
    return extractor, None, None


@dataclass(frozen=True)
class Layer:
    """One layer of a network, as :func:`layers` lists it.

    Attributes:
        name: dotted name from ``named_modules()``.
        type: the module's class name, e.g. ``"Conv2d"``.
        shape: its output's shape for one image, e.g. ``(64, 16, 16)``; None when it
            did not run (or does not return one tensor).
        order: when its output was complete in the pass (0 first); None if it did not run.
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    order: int | None


def layers(model: nn.Module, input_size: Sequence[int]) -> list[Layer]:
    """Every layer's name, type and output shape, from one forward pass of a blank image.

    Args:
        model: any network.
        input_size: one image's shape (C, H, W), e.g. ``(3, 32, 32)``.

    Returns:
        One :class:`Layer` per submodule, in ``named_modules()`` order (the model
        itself left out). The model's modes are restored.

    Example:
        >>> [(l.name, l.shape) for l in layers(build_model(), (3, 32, 32))][:2]
        [('0', (32, 32, 32)), ('1', (32, 32, 32))]
    """
    size = tuple(int(s) for s in input_size)
    if len(size) != 3:
        raise ValueError(f"input_size={tuple(input_size)} must be one image's (C, H, W), "
                         "e.g. (3, 32, 32).")
    shapes: dict[str, tuple[tuple[int, ...] | None, int]] = {}

    def hook(name: str):
        def record(_module, _inputs, output):
            if name not in shapes:
                shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
                shapes[name] = (shape, len(shapes))
        return record

    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_hook(hook(n)) for n, m in named]
    try:
        with evaluating(model), torch.inference_mode():
            call(model, torch.zeros((1, *size), device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return [Layer(n, type(m).__name__, *shapes.get(n, (None, None))) for n, m in named]


def last_spatial_layer(model: nn.Module, input_size: Sequence[int], *,
                       resampling: bool = True, upto: str | None = None) -> str:
    """The last layer (in the forward pass) whose output has more than one position.

    torchcam's idea: maps are read at the last layer that still has a grid. With
    ``resampling=False`` pooling and dropout layers are passed over (they only
    resample or drop an earlier layer's maps): the course network then gives ``"9"``
    (the ReLU after its last conv, 64 maps of 16x16), Grad-CAM's layer; with
    ``resampling=True`` it gives ``"11"`` (8x8, the grid its first Linear reads).
    For a torchvision ResNet both give ``"layer4"``. With ``upto`` (a probe's layer),
    only the layers whose output is complete when that layer's is are candidates, the
    layer itself included: ``upto="layer3"`` gives ``"layer3"``, the last grid that
    can explain its units.

    Raises:
        ValueError: no layer has a spatial output (up to ``upto``).
    """
    listed = layers(model, input_size)
    last = None
    if upto:
        name = find_layer(model, upto)[0]
        last = next(layer.order for layer in listed if layer.name == name)
    candidates = [
        layer for layer in listed
        if layer.shape is not None and len(layer.shape) == 3 and layer.shape[1] * layer.shape[2] > 1
        and (resampling or not isinstance(model.get_submodule(layer.name), RESAMPLING))
        and (last is None or (layer.order is not None and layer.order <= last))
    ]
    if not candidates:
        where = f" up to layer {upto!r}" if upto else ""
        raise ValueError(f"{type(model).__name__} has no layer with a spatial output "
                         f"(C, H, W){where} on images of shape {tuple(input_size)}: maps "
                         "need one.")
    return max(candidates, key=lambda layer: layer.order).name
