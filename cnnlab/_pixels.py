"""Pixels and what a network sees: normalisation, and images for ``imshow``.

Below every analysis and every figure: nothing here knows a data set or a network.
The default normalisation (0.5, 0.5) maps pixels in [0, 1] to [-1, 1], the course
network's input; a :class:`cnnlab.Probe` carries any other network's mean and std.
:mod:`cnnlab.data` re-exports these names, their public home.
"""

from __future__ import annotations

import numpy as np
import torch

#: Per-channel mean and standard deviation of the normalisation (pixels in [0, 1]).
MEAN = 0.5
STD = 0.5


def normalize(images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Pixels to what the network sees.

    Args:
        images: uint8 tensor (..., C, H, W) with values 0..255, or float in [0, 1].
        mean: the network's per-channel mean of pixels in [0, 1], one number or one per
            channel (ImageNet: ``(0.485, 0.456, 0.406)``); None = :data:`MEAN` (0.5).
        std: the per-channel standard deviation, like ``mean``; None = :data:`STD` (0.5).

    Returns:
        float32 tensor of the same shape; with the course's defaults in [-1, 1]
        (black is -1).

    Raises:
        ValueError: ``mean`` or ``std`` has neither one value nor one per channel, or
            a standard deviation is not positive.
    """
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    if mean is None and std is None:
        return (x - MEAN) / STD
    mean = channel_stat(MEAN if mean is None else mean, "mean", x.shape[-3])
    std = channel_stat(STD if std is None else std, "std", x.shape[-3])
    return (x - mean.to(x.device)) / std.to(x.device)


def channel_stat(value, name: str, channels: int | None = None) -> torch.Tensor:
    """A per-channel statistic as a float32 tensor (C, 1, 1) (or (1, 1, 1) for one value).

    Raises:
        ValueError: not numbers, not one value or ``channels`` of them, or a ``std``
            that is not positive.
    """
    try:
        t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}={value!r} must be one number or one per colour channel, "
                         "e.g. (0.485, 0.456, 0.406) for ImageNet networks.") from exc
    if len(t) == 0 or (channels is not None and len(t) not in (1, channels)):
        raise ValueError(
            f"{name}={value!r} has {len(t)} values for images with {channels} channel(s): "
            f"give one number, or one per channel."
        )
    if not torch.isfinite(t).all() or (name == "std" and (t <= 0).any()):
        raise ValueError(f"{name}={value!r} must hold finite numbers"
                         + (", all > 0." if name == "std" else "."))
    return t[:, None, None]


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: network input (..., 3, H, W) to [0, 1] floats."""
    return (x.float() * STD + MEAN).clamp(0.0, 1.0)


def to_display(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images for ``imshow``: uint8 (N, 3, H, W) or (3, H, W) (tensor or array) to a
    numpy float array (N, H, W, 3) or (H, W, 3) in [0, 1]."""
    x = torch.as_tensor(images).detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else denormalize(x)
    return x.movedim(-3, -1).numpy()
