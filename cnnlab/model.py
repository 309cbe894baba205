"""The course network, and saving/loading it safely.

The network is a plain ``nn.Sequential`` whose indices the exercises refer to::

     0 Conv2d(3, 32, 3, padding=1)     9 ReLU
     1 ReLU                           10 MaxPool2d(2, 2)
     2 Conv2d(32, 32, 3, padding=1)   11 Dropout(0.5)
     3 ReLU                           12 Flatten
     4 MaxPool2d(2, 2)                13 Linear(8*8*64, 128)
     5 Dropout(0.5)                   14 ReLU
     6 Conv2d(32, 64, 3, padding=1)   15 Dropout(0.5)
     7 ReLU                           16 Linear(128, 10)
     8 Conv2d(64, 64, 3, padding=1)
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_write
from .config import CLASSES, LabConfig
from .device import model_device as model_device  # re-exported: its old home
from .probe import first_linear_index as first_linear_index  # re-exported
from .probe import unit_layer as unit_layer  # re-exported

#: Number of units of the first ``nn.Linear`` (the layer the lab analyses; its index
#: is :func:`first_linear_index`).
N_UNITS = 128

CHECKPOINT_FORMAT = 1


def build_model(num_classes: int = 10) -> nn.Sequential:
    """The course network for 32x32 RGB inputs normalised to [-1, 1].

    Returns:
        ``nn.Sequential`` mapping (N, 3, 32, 32) float to (N, num_classes) logits. With
        10 outputs it is CIFAR-10's network: its ``classes`` attribute names them
        (:data:`cnnlab.config.CLASSES`, read by :class:`cnnlab.Probe`); else None.
    """
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Dropout(0.5),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(8 * 8 * 64, N_UNITS),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(N_UNITS, num_classes),
    )
    model.classes = CLASSES if num_classes == len(CLASSES) else None
    return model


def _versions() -> dict:
    import numpy
    import torchvision

    return {
        "cnnlab": _installed_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(numpy.__version__),
    }


def _installed_version() -> str:
    """cnnlab's version as installed (``cnnlab.__version__`` when installed from this
    tree), read from the package metadata so that no module imports the package's face."""
    try:
        return importlib.metadata.version("cnnlab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: LabConfig | None = None,
    metrics: dict | None = None,
) -> Path:
    """Save the weights with the config, metrics and library versions, atomically.

    The file is written to a temporary name in the same folder and renamed over
    ``path`` only once complete, so an interrupted save never damages an existing
    checkpoint.

    Args:
        path: destination file (its folder is created).
        model: the trained network.
        config: the configuration it was trained with.
        metrics: plain numbers and lists (accuracy, per-class accuracy, ...).

    Returns:
        The path written.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.to_dict() if config is not None else None,
        "metrics": metrics or {},
        "versions": _versions(),
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Sequential, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Uses ``torch.load(weights_only=True)``: only tensors and plain types are read,
    never pickled code.

    Returns:
        ``(model, info)``: the network in eval mode on ``map_location``, and a dict
        with ``config`` (a :class:`LabConfig` or None), ``metrics`` and ``versions``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a cnnlab checkpoint, or is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Train one with `cnnlab train` or "
            "cnnlab.train_model(), then save it with cnnlab.save_checkpoint()."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise ValueError(
            f"{path} could not be read as a cnnlab checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Delete it and train again."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a cnnlab checkpoint of format {CHECKPOINT_FORMAT}. "
            "Delete it and train again."
        )
    model = build_model(payload["state_dict"]["16.weight"].shape[0])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    cfg = payload.get("config")
    info = {
        "config": LabConfig.from_dict(cfg) if cfg else None,
        "metrics": payload.get("metrics", {}),
        "versions": payload.get("versions", {}),
    }
    return model, info
