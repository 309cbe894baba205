"""Private helpers shared by the analyses: fast inference, eval mode, image batches.

The analyses (feature extraction, occlusion, activation maps) run the network
many times without gradients, in the precision and layout
:func:`cnnlab.device.choose_precision` decides, exactly as training does;
``precision="fp32"`` always gives plain fp32 in the default layout, which is what
the tests compare. :func:`evaluating` puts models in eval mode and restores every
submodule's mode afterwards; :func:`as_image_batch` checks an image batch with
messages a student can act on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ._pixels import normalize
from ._validate import is_whole as is_whole  # re-exported for the analyses
from .config import or_config
from .device import choose_precision


def inference_context(
    device: torch.device, precision: str | None = None
) -> contextlib.AbstractContextManager:
    """Autocast for fast inference on ``device`` (see :func:`choose_precision`), or a
    no-op; ``precision`` None is the configuration's."""
    return choose_precision(device, or_config(precision, "precision")).autocast()


def use_channels_last(device: torch.device, precision: str | None = None) -> bool:
    """Whether inputs should be laid out ``channels_last`` (see :func:`choose_precision`)."""
    return choose_precision(device, or_config(precision, "precision")).channels_last


def as_image_batch(images, what: str = "images", channels: int | None = 3) -> torch.Tensor:
    """Images as a tensor (N, C, H, W), with a teaching error otherwise.

    ``channels`` is the number of colour channels the network takes (3 for the course
    network, see :func:`cnnlab.probe.input_channels`); None accepts any.
    """
    c = "C" if channels is None else channels
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{what} must be a tensor of shape (N, {c}, H, W), got {type(images).__name__}."
        )
    if images.ndim == 3 and (channels is None or images.shape[0] == channels):
        raise ValueError(
            f"{what} has shape {tuple(images.shape)}: that is one image. Pass a batch "
            f"of shape (N, {c}, H, W); for a single image use {what}[None]."
        )
    if images.ndim != 4 or (channels is not None and images.shape[1] != channels):
        kind = " (N RGB images)" if channels == 3 else ""
        raise ValueError(
            f"{what} must have shape (N, {c}, H, W){kind}, got "
            f"{tuple(images.shape)}."
        )
    if images.shape[0] == 0:
        raise ValueError(
            f"{what} is empty (shape {tuple(images.shape)}): there is nothing to "
            "analyse. Check the slice or subset that produced it."
        )
    return images


def prepare_batch(
    images: torch.Tensor, device: torch.device, channels_last: bool, mean=None, std=None
) -> torch.Tensor:
    """Move a batch to ``device`` and normalise it if it is uint8 pixels.

    uint8 (N, C, H, W) is normalised on the device (moving uint8 is four times
    cheaper than float) with ``mean`` and ``std`` (None: the course's, to [-1, 1];
    see :func:`cnnlab._pixels.normalize`); a float tensor is taken as already
    normalised. Returns float32, ``channels_last`` when asked.
    """
    x = images.to(device, non_blocking=True)
    x = normalize(x, mean, std) if x.dtype == torch.uint8 else x.float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put every module (and all their submodules) in eval mode, then restore.

    Each submodule gets back its own ``training`` flag, so a model whose parts
    were in mixed modes is left exactly as it was, even if the body raises.
    """
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag
