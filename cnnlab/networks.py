"""Your own network for the lab: a torchvision model by name or a function of yours, with
its saved weights.

``cnnlab lab --model resnet18 --weights W.pt`` builds the network with
:func:`build_network` (torchvision models are built with ``weights=None``: nothing
is ever downloaded) and loads a ``state_dict`` into it with :func:`load_weights`,
which says which keys or shapes differ when the file does not fit the network.

Example:
    >>> model = build_network("resnet18", num_classes=3)
    >>> load_weights(model, "resnet18-3classes.pt")      # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


class NetworkError(ValueError):
    """A network that cannot be built, or weights that do not fit it."""


def torchvision_models() -> list[str]:
    """The names of torchvision's classification models (``resnet18``, ``vgg11``, ...)."""
    import torchvision.models as models

    return sorted(models.list_models(module=models))


def build_network(spec: str, num_classes: int | None = None) -> nn.Module:
    """A network with fresh (random) weights, from a name.

    Args:
        spec: a torchvision classification model's name (``"resnet18"``), or
            ``"package.module:function"``, a function of yours returning an
            ``nn.Module``.
        num_classes: the number of outputs, passed as ``num_classes=`` (to your
            function too); None keeps the model's default (1000 for torchvision's).

    Returns:
        The network, in eval mode, on the CPU.

    Raises:
        NetworkError: an unknown name (the message lists the valid ones and the
            closest), a module or function that cannot be found, a function that
            fails or does not return an ``nn.Module``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise NetworkError(f"--model {spec!r} must name a network: a torchvision model "
                           "such as 'resnet18', or 'package.module:function'.")
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    if ":" in spec:
        model = _call_function(spec, kwargs)
    else:
        import torchvision.models as models

        names = torchvision_models()
        if spec not in names:
            close = difflib.get_close_matches(spec, names, n=4, cutoff=0.5)
            nearest = f" The closest are {', '.join(close)}." if close else ""
            raise NetworkError(
                f"--model {spec!r} is not a torchvision classification model.{nearest} "
                f"Valid names: {', '.join(names)}. For a network of your own, give "
                "'package.module:function' (a function returning an nn.Module).")
        try:
            model = models.get_model(spec, weights=None, **kwargs)
        except (TypeError, ValueError) as exc:
            raise NetworkError(f"torchvision could not build {spec!r} with {kwargs}: "
                               f"{exc}") from exc
    if not isinstance(model, nn.Module):
        raise NetworkError(f"--model {spec!r} returned a {type(model).__name__}, not a "
                           "torch nn.Module: the function must return the network.")
    return model.eval()


def _call_function(spec: str, kwargs: dict) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NetworkError(
            f"--model {spec!r}: cannot import the module {module_name!r} ({exc}). Run "
            "from the folder that holds it, or put that folder on PYTHONPATH.") from exc
    function = module
    for part in attr.split("."):
        function = getattr(function, part, None)
        if function is None:
            found = [n for n in dir(module) if not n.startswith("_")
                     and callable(getattr(module, n))]
            raise NetworkError(f"--model {spec!r}: {module_name} has no {attr!r}; its "
                               f"callables are {', '.join(found) or 'none'}.")
    if not callable(function):
        raise NetworkError(f"--model {spec!r}: {attr!r} is not a function or class.")
    try:
        return function(**kwargs)
    except TypeError as exc:
        raise NetworkError(f"--model {spec!r}: calling {attr}(**{kwargs}) failed ({exc}). "
                           "The function must accept num_classes= when --num-classes "
                           "is given.") from exc


def _shown(keys: list[str], limit: int = 6) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``state_dict`` saved with ``torch.save(model.state_dict(), path)``.

    A dict holding the weights under ``"state_dict"`` or ``"model"`` (as training
    scripts often save them) and the ``module.`` prefix of ``nn.DataParallel`` are
    accepted too. The file is read with ``weights_only=True`` (no code runs).

    Args:
        model: the network, built as the weights' network was.
        path: the file.

    Returns:
        ``model``, with the weights loaded, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        NetworkError: not a state_dict, or keys or shapes that differ from the
            model's (the message names them).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--weights {str(path)!r}: no such file. Save the weights "
                                "with torch.save(model.state_dict(), PATH).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean: not a state_dict
        raise NetworkError(f"--weights {str(path)!r} could not be read as a PyTorch file "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                           "). Save it with torch.save(model.state_dict(), PATH).") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise NetworkError(f"--weights {str(path)!r} holds a {type(state).__name__}, not a "
                           "state_dict (names -> tensors). Save it with "
                           "torch.save(model.state_dict(), PATH).")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = ([f"missing from the file: {_shown(missing)}"] if missing else []) + (
            [f"not in the model: {_shown(unexpected)}"] if unexpected else []) + (
            [f"shapes differ: {_shown(shapes, 4)}"] if shapes else [])
        raise NetworkError(
            f"--weights {str(path)!r} does not fit this {type(model).__name__}: "
            + "; ".join(parts) + ". Check --model and --num-classes (they must build the "
            "network the weights were saved from).")
    model.load_state_dict(state)
    return model.eval()
