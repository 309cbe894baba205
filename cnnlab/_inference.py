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
from ._progress import bar
from ._validate import is_whole as is_whole  # re-exported for the analyses
from .config import or_config
from .device import choose_precision, model_device


class Runner:
    """How the analyses run a network on one device: precision and memory layout,
    decided once (by :func:`cnnlab.device.choose_precision`), then used by every batch.

    Args:
        device: where the network and its inputs are.
        precision: ``"auto"`` or ``"fp32"``; None is the configuration's.

    Attributes:
        device, plan (the :class:`cnnlab.device.Precision`).
    """

    def __init__(self, device: torch.device, precision: str | None = None) -> None:
        self.device = device
        self.plan = choose_precision(device, or_config(precision, "precision"))

    @classmethod
    def of(cls, module: nn.Module, precision: str | None = None) -> Runner:
        """A runner on the device of ``module``'s parameters."""
        return cls(model_device(module), precision)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (N, C, H, W) in the plan's memory layout (same values);
        other shapes unchanged."""
        if x.ndim == 4 and self.plan.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
        """:func:`prepare_batch` on this device, in this layout."""
        return prepare_batch(images, self.device, self.plan.channels_last, mean, std)

    @contextlib.contextmanager
    def inference(self, *modules: nn.Module) -> Iterator[None]:
        """Eval mode (restored after), no autograd, and the plan's autocast."""
        with evaluating(*modules), torch.inference_mode(), self.plan.autocast():
            yield

    def batched(self, forward, n: int, batch_size: int, progress: bool = False,
                desc: str = "batches") -> torch.Tensor:
        """``forward(start, stop)`` for consecutive batches of ``n`` items, concatenated.

        Args:
            forward: maps a range of item numbers to a tensor (stop - start, ...).
            n: how many items; batch_size: items per call.
            progress: show a progress bar (desc names it).

        Returns:
            The outputs, concatenated along the first dimension (an empty 1-D tensor
            on the device when ``n`` is 0).
        """
        if n == 0:
            return torch.empty(0, device=self.device)
        starts = bar(range(0, n, batch_size), show=progress, desc=desc, unit="batch")
        return torch.cat([forward(start, min(start + batch_size, n)) for start in starts])


def use_channels_last(device: torch.device, precision: str | None = None) -> bool:
    """Whether :class:`Runner` lays inputs out ``channels_last`` on ``device``."""
    return Runner(device, precision).plan.channels_last


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
