"""Section 6: synthesized images, the picture a unit (or a class) would like best.

Instead of searching the test set for the images that excite a unit (Section 3),
:func:`synthesize` starts from noise and changes the pixels by gradient ascent
until the unit's value is high. Raw pixel ascent only finds high-frequency noise
the network happens to respond to, so three standard regularisers (Olah et al.,
"Feature Visualization", Distill 2017) keep the image natural:

- the image is parametrised by its 2-D Fourier spectrum, each frequency scaled by
  ``1 / |f|``, so the optimiser moves coarse patterns as easily as fine ones;
- the three colour channels of that parametrisation are decorrelated with the
  square root of CIFAR-10's RGB covariance, so the optimiser works in the
  dataset's own colour directions (a sigmoid then keeps pixels in [0, 1]);
- every step sees the image randomly shifted, scaled and rotated a little, so
  only patterns that survive those changes grow.

Every target gets its own image, and all of them are optimised together in one
batch, with Adam. Nothing here depends on torch-lucent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attribution import _layout, gradients_on, prepare_inputs
from .config import or_config
from .data import normalize
from .model import model_device


#: Square root of the RGB covariance of CIFAR-10's 50,000 training images (pixels
#: in [0, 1]), ``U diag(sqrt(S))`` of its SVD, columns scaled so the longest has norm 1
#: (measured on the project's JPEG copy; a test re-derives it where the data is).
#: Column 0 is brightness (all channels together), 1 red-versus-blue, 2 green.
COLOR_SQRT = torch.tensor([
    [-0.2312, 0.0787, 0.0227],
    [-0.2391, 0.0061, -0.0420],
    [-0.2475, -0.0794, 0.0193],
]) / 0.4145

#: Random changes every step: shift in pixels, scale factor range, rotation in degrees.
JITTER = 2
SCALE = (0.9, 1.1)
ROTATE = 10.0


@dataclass
class Synthesis:
    """Images synthesized for a list of targets.

    Attributes:
        images: uint8 tensor (U, 3, H, W), one image per target, on the CPU.
        activation: float32 (U,): each target's value on its final (uint8) image.
        targets: the U units or classes, in order.
    """

    images: torch.Tensor
    activation: np.ndarray
    targets: list[int]


def fourier_scale(size: int) -> torch.Tensor:
    """``1 / |f|`` for the (size, size // 2 + 1) frequencies of a real 2-D FFT.

    The constant term gets the scale of the lowest frequency, ``size``.
    """
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)


def spectrum_to_pixels(spectrum: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Fourier parameters to images in [0, 1].

    Args:
        spectrum: float (U, 3, S, S // 2 + 1, 2), real and imaginary parts.
        scale: (S, S // 2 + 1) from :func:`fourier_scale`.

    Returns:
        float (U, 3, S, S) pixels in (0, 1).
    """
    size = spectrum.shape[2]
    decorrelated = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale,
                                    s=(size, size), norm="ortho") / 4.0
    colour = torch.einsum("ij,ujhw->uihw", COLOR_SQRT.to(spectrum.device), decorrelated)
    return torch.sigmoid(colour)


def random_transform(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``JITTER`` pixels, scaled and rotated a little.

    One affine warp per image (``grid_sample``, reflected at the border).

    Args:
        pixels: float (U, 3, H, W).
        generator: the CPU generator the random draws come from.

    Returns:
        float (U, 3, H, W).
    """
    n, _, height, width = pixels.shape
    draw = torch.rand(n, 4, generator=generator).to(pixels.device)
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * draw[:, 0]
    angle = math.radians(ROTATE) * (2 * draw[:, 1] - 1)
    shift = (2 * draw[:, 2:] - 1) * JITTER * 2 / torch.tensor([width, height],
                                                             device=pixels.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (U, 2, 3)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, padding_mode="reflection", align_corners=False)


def synthesize(
    model: nn.Module,
    targets: Sequence[int] | int,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    image_size: int = 32,
) -> Synthesis:
    """One synthesized image per target, by regularised gradient ascent.

    Args:
        model: the extractor ``model[:14]`` (targets are units; the value raised is
            the unit's pre-activation) or the whole network (targets are classes;
            the logit is raised).
        targets: the units or classes, a list (or one int).
        steps: Adam steps; None = ``LabConfig.featvis_steps`` (256).
        lr: Adam's learning rate; None = ``LabConfig.featvis_lr`` (0.05).
        seed: seeds the starting noise and the random transforms; None =
            ``LabConfig.seed``. The same seed gives the same images.
        progress: show a tqdm bar over the steps; None = show it.
        image_size: side of the images (32 for CIFAR-10).

    Returns:
        A :class:`Synthesis`: uint8 images (U, 3, 32, 32) and the target's value on
        each final image (U,).

    Raises:
        ValueError: a target out of range, bad steps or lr.

    Example:
        >>> result = synthesize(model[:14], [1, 14, 23], seed=0)
        >>> result.images.shape, result.activation.shape
        (torch.Size([3, 3, 32, 32]), (3,))
    """
    from tqdm.auto import tqdm

    steps = or_config(steps, "featvis_steps")
    lr = or_config(lr, "featvis_lr")
    seed = or_config(seed, "seed")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a whole number >= 0 (the lab uses "
                         f"{or_config(None, 'featvis_steps')}).")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr={lr!r} must be a positive learning rate (the lab uses "
                         f"{or_config(None, 'featvis_lr')}).")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed={seed!r} must be an integer.")
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        targets = targets.tolist()
    targets = list(targets) if isinstance(targets, (Sequence, range)) else [targets]
    if not targets:
        raise ValueError("targets is empty: give at least one unit or class, e.g. [1, 14].")
    device = model_device(model)
    blank = torch.zeros(len(targets), 3, image_size, image_size, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    with gradients_on(model):  # tensors made here are ordinary even under inference_mode
        scale = fourier_scale(image_size).to(device)
        _, t, _ = prepare_inputs(model, blank, targets)  # validates targets against the model
        spectrum = 0.01 * torch.randn(len(targets), 3, image_size, image_size // 2 + 1, 2,
                                      generator=generator)
        spectrum = spectrum.to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([spectrum], lr=float(lr))
        rows = torch.arange(len(targets), device=device)
        for _ in tqdm(range(steps), disable=progress is False, desc="synthesis",
                      unit="step", leave=False):
            pixels = random_transform(spectrum_to_pixels(spectrum, scale), generator)
            value = model(_layout(normalize(pixels)))[rows, t]
            (spectrum.grad,) = torch.autograd.grad(-value.sum(), spectrum)
            optimizer.step()
        with torch.no_grad():
            pixels = spectrum_to_pixels(spectrum, scale)
            images = (pixels * 255).round().clamp(0, 255).to(torch.uint8)
            activation = model(normalize(images))[rows, t].float()
    return Synthesis(images=images.cpu(), activation=activation.cpu().numpy(),
                     targets=[int(u) for u in t.tolist()])
