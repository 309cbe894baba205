"""The course model that ships with cnnlab: the ``full`` recipe's weights, seed 0.

Training stays the lab's default, as in the 2019 lab. A student on a slow laptop, or an
instructor preparing a session, can ask for these weights instead and have every figure
without waiting for training: ``cnnlab lab --pretrained``, or ``PRETRAINED = True`` in
the notebook's set-up cell. The analyses and exercises are the same.

The file is an ordinary cnnlab checkpoint (CPU tensors, read with
``torch.load(weights_only=True)`` by :func:`cnnlab.model.load_checkpoint`, so every check
of that loader applies and any ``map_location`` works). Regenerate it, training the
``full`` profile on the real CIFAR-10 images (about 5 minutes on a 2-core CPU), with::

    cnnlab ship-weights --data PATH_TO_CIFAR10 --retrain
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from .config import LabConfig, get_config

#: The recipe and seed of the shipped weights.
RECIPE = "full"
SEED = 0
#: Where the weights live inside the installed package (pyproject.toml's package-data).
SHIPPED = Path(__file__).resolve().parent / "weights" / f"cnnlab-{RECIPE}-seed{SEED}.pt"
REGENERATE = "cnnlab ship-weights --data PATH_TO_CIFAR10 --retrain"


def shipped_config() -> LabConfig:
    """The configuration the shipped weights were trained with (``full``, seed 0)."""
    return get_config(RECIPE, seed=SEED)


def load_pretrained(map_location: str | torch.device = "cpu",
                    path: str | os.PathLike | None = None) -> tuple[nn.Sequential, dict]:
    """The course network with the shipped weights, in eval mode on ``map_location``.

    Args:
        map_location: device to load onto ("cpu", "cuda", "mps", a torch.device).
        path: another copy of the shipped file (default: the one inside the package).

    Returns:
        ``(model, info)`` as :func:`cnnlab.train.train_or_load` returns them: ``info``
        holds ``config``, ``metrics`` (accuracy, per-class accuracy, confusion matrix,
        history), ``versions``, ``reused`` (True), ``checkpoint`` (the file's path) and
        ``pretrained`` (True).

    Raises:
        FileNotFoundError: the file is missing (regenerate it, see the module's docstring).
        ValueError: the file is damaged or was not trained with the ``full`` recipe, seed 0.
    """
    from .model import load_checkpoint
    from .train import same_recipe

    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        raise FileNotFoundError(
            f"The shipped course model {path} is missing from this installation. "
            f"Reinstall cnnlab, or make it again with `{REGENERATE}`.")
    model, info = load_checkpoint(path, map_location=map_location)
    if not same_recipe(info["config"], shipped_config()):
        saved = info["config"]
        what = f"{saved.profile!r} (seed {saved.seed})" if saved else "no recorded recipe"
        raise ValueError(
            f"{path} holds weights trained with {what}, not the {RECIPE!r} recipe with "
            f"seed {SEED} that cnnlab ships. Make them again with `{REGENERATE}`.")
    return model, {**info, "reused": True, "checkpoint": str(path), "pretrained": True}


def _without_folders(source: str) -> str:
    """A data source in words with folder names dropped (no local path is shipped)."""
    return re.sub(r"\S*[/\\]", "", source)


def regenerate(data: str | os.PathLike | None = None, retrain: bool = False,
               download: bool = True, out: str | os.PathLike | None = None,
               progress: bool = True) -> dict:
    """Train (or reuse) the ``full`` recipe, seed 0, on the real images and ship it.

    The model comes from :func:`cnnlab.train.train_or_load` (so a matching model in the
    checkpoint cache is reused unless ``retrain``), is evaluated on the test images and
    saved to ``out`` with its metrics.

    Args:
        data: CIFAR-10 folder or ImageFolder archive (default: ``$CNNLAB_DATA``, else the
            official release, downloaded if ``download``).
        retrain: train from scratch even when a matching model is cached.
        download: allow downloading the official release.
        out: file to write (default: :data:`SHIPPED`).
        progress: show training progress.

    Returns:
        The metrics saved with the weights (``accuracy`` in [0, 1], ``history``, ...).

    Raises:
        cnnlab.data.DataError: no copy of CIFAR-10 was found (the message says how to fix it).
    """
    from .data import load_lab_data
    from .device import get_device
    from .model import save_checkpoint
    from .train import _plain_source, evaluate, train_or_load

    config = shipped_config()
    # "auto" never picks the made-up images, whatever $CNNLAB_SOURCE says
    train, test = load_lab_data(config, data, "auto", download=download)
    model, info = train_or_load(config, train, test, retrain=retrain, device=get_device(),
                                progress=progress)
    result = info.get("evaluation") or evaluate(model, test, config.precision)
    metrics = {**info["metrics"], **result.to_dict(), "confusion": result.confusion.tolist(),
               "train_source": _without_folders(_plain_source(train.source)),
               "test_source": _without_folders(_plain_source(test.source))}
    save_checkpoint(out or SHIPPED, model, config, metrics)  # CPU tensors
    return metrics

