"""Section 6: synthesized images, the picture a unit (or a class) would like best.

Instead of searching the test set for the images that excite a unit (Section 3),
:func:`synthesize` starts from noise and changes the pixels by gradient ascent
until the unit's value is high. Raw pixel ascent only finds high-frequency noise
the network happens to respond to, so three standard regularisers (Olah et al.,
"Feature Visualization", Distill 2017) keep the image natural:

- the image is parametrised by its 2-D Fourier spectrum, each frequency scaled by
  ``1 / |f|``, so the optimiser moves coarse patterns as easily as fine ones;
- the colour channels of that parametrisation are decorrelated with the square
  root of the data's colour covariance (of the images given as ``like``, else the
  lab's data's, :data:`cnnlab.config.COLOR_SQRT`), so the optimiser works in the
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

from ._inference import as_image_batch
from ._pixels import normalize
from ._progress import bar
from .attribution import _layout, gradients_on, prepare_inputs
from .config import COLOR_SQRT, IMAGE_SIDE, or_config
from .device import model_device
from .probe import Probe, input_channels

#: Random changes every step: shift in pixels, scale factor range, rotation in degrees.
JITTER = 2
SCALE = (0.9, 1.1)
ROTATE = 10.0


@dataclass
class Synthesis:
    """Images synthesized for a list of targets.

    Attributes:
        images: uint8 tensor (U, C, H, W), one image per target, on the CPU.
        activation: float32 (U,): each target's value on its final (uint8) image.
        targets: the U units or classes, in order.
    """

    images: torch.Tensor
    activation: np.ndarray
    targets: list[int]


def fourier_scale(size: int, width: int | None = None) -> torch.Tensor:
    """``1 / |f|`` for the (size, width // 2 + 1) frequencies of a real 2-D FFT.

    ``size`` is the height, ``width`` the width (None = square). The constant term
    gets the scale of the lowest frequency, ``max(size, width)``.
    """
    width = size if width is None else width
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / max(size, width))


def colour_sqrt(images: torch.Tensor) -> torch.Tensor:
    """The square root of the images' colour covariance, as the lab's data's is
    (:data:`cnnlab.config.COLOR_SQRT`).

    Args:
        images: uint8 (N, C, H, W), the data (a sample of it is enough).

    Returns:
        float32 (C, C): ``U diag(sqrt(S))`` of the SVD of the covariance of the
        pixels in [0, 1], columns scaled so the longest has norm 1; its product
        with its transpose is the covariance up to a factor.

    Raises:
        ValueError: not uint8 images, or images of a single colour.
    """
    images = as_image_batch(images, "like", channels=None)
    if images.dtype != torch.uint8:
        raise ValueError(f"like has dtype {images.dtype}: give uint8 images (N, C, H, W) "
                         "with pixels 0..255, e.g. a sample of the training set.")
    pixels = images.permute(1, 0, 2, 3).reshape(images.shape[1], -1).double() / 255
    cov = torch.atleast_2d(torch.cov(pixels))
    u, s, _ = torch.linalg.svd(cov)
    root = u * s.sqrt()
    longest = root.norm(dim=0).max()
    if not longest > 1e-6:  # a colour's spread is far below one grey level (1 / 255)
        raise ValueError("like has a single colour: its colours have no covariance. Give "
                         "varied images from the data set.")
    return (root / longest).float()


def spectrum_to_pixels(spectrum: torch.Tensor, scale: torch.Tensor,
                       colour: torch.Tensor | None = None,
                       width: int | None = None) -> torch.Tensor:
    """Fourier parameters to images in [0, 1].

    Args:
        spectrum: float (U, C, H, W // 2 + 1, 2), real and imaginary parts.
        scale: (H, W // 2 + 1) from :func:`fourier_scale`.
        colour: (C, C) colour matrix; None = the lab's data's
            (:data:`cnnlab.config.COLOR_SQRT`, 3 channels).
        width: W; None = H (square images).

    Returns:
        float (U, C, H, W) pixels in (0, 1).
    """
    size = spectrum.shape[2]
    width = size if width is None else width
    decorrelated = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale,
                                    s=(size, width), norm="ortho") / 4.0
    colour = COLOR_SQRT if colour is None else colour
    mixed = torch.einsum("ij,ujhw->uihw", colour.to(spectrum.device), decorrelated)
    return torch.sigmoid(mixed)


def random_transform(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``JITTER`` pixels, scaled and rotated a little.

    One affine warp per image (``grid_sample``, reflected at the border).

    Args:
        pixels: float (U, C, H, W).
        generator: the CPU generator the random draws come from.

    Returns:
        float (U, C, H, W).
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
    image_size: int | Sequence[int] | None = None,
    like: torch.Tensor | None = None,
) -> Synthesis:
    """One synthesized image per target, by regularised gradient ascent.

    Args:
        model: the extractor ``model[:14]`` (targets are units; the value raised is
            the unit's pre-activation), the whole network (targets are classes;
            the logit is raised), or a :class:`cnnlab.Probe` (targets are its units;
            its normalisation turns the pixels into the network's input).
        targets: the units or classes, a list (or one int).
        steps: Adam steps; None = ``LabConfig.featvis_steps`` (256).
        lr: Adam's learning rate; None = ``LabConfig.featvis_lr`` (0.05).
        seed: seeds the starting noise and the random transforms; None =
            ``LabConfig.seed``. The same seed gives the same images.
        progress: show a progress bar over the steps (in a terminal or notebook only);
            None = show it.
        image_size: the images' side, or (H, W); None = the size of ``like``, else the
            lab's image side (:data:`cnnlab.config.IMAGE_SIDE`, 32).
        like: uint8 images (N, C, H, W) of the data the network learned from: the
            synthesized images get their channels, size (unless ``image_size``) and
            colour covariance (:func:`colour_sqrt`). None = the lab's data's colours
            (:data:`cnnlab.config.COLOR_SQRT`, CIFAR-10's), with the channels of the
            network's first conv (3 when unknown; other counts than 3 get uncorrelated
            channels).

    Returns:
        A :class:`Synthesis`: uint8 images (U, C, H, W) and the target's value on
        each final image (U,).

    Raises:
        ValueError: a target out of range, bad steps, lr or image_size.

    Example:
        >>> result = synthesize(model[:14], [1, 14, 23], seed=0)
        >>> result.images.shape, result.activation.shape
        (torch.Size([3, 3, 32, 32]), (3,))
    """
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
    net = model.model if isinstance(model, Probe) else model
    height, width, channels, colour = _image_shape(net, image_size, like)
    mean, std = (model.mean, model.std) if isinstance(model, Probe) else (None, None)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.outputs(x)[0] if isinstance(model, Probe) else model(x)

    device = model_device(net)
    blank = torch.zeros(len(targets), channels, height, width, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    with gradients_on(net):  # tensors made here are ordinary even under inference_mode
        scale = fourier_scale(height, width).to(device)
        _, t, _ = prepare_inputs(model, blank, targets)  # validates targets against the model
        spectrum = 0.01 * torch.randn(len(targets), channels, height, width // 2 + 1, 2,
                                      generator=generator)
        spectrum = spectrum.to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([spectrum], lr=float(lr))
        rows = torch.arange(len(targets), device=device)
        for _ in bar(range(steps), show=progress is not False, desc="synthesis",
                     unit="step", leave=False):
            pixels = random_transform(spectrum_to_pixels(spectrum, scale, colour, width),
                                      generator)
            value = forward(_layout(normalize(pixels, mean, std)))[rows, t]
            (spectrum.grad,) = torch.autograd.grad(-value.sum(), spectrum)
            optimizer.step()
        with torch.no_grad():
            pixels = spectrum_to_pixels(spectrum, scale, colour, width)
            images = (pixels * 255).round().clamp(0, 255).to(torch.uint8)
            activation = forward(normalize(images, mean, std))[rows, t].float()
    return Synthesis(images=images.cpu(), activation=activation.cpu().numpy(),
                     targets=[int(u) for u in t.tolist()])


def _image_shape(net: nn.Module, image_size, like) -> tuple[int, int, int, torch.Tensor]:
    """``(height, width, channels, colour matrix)`` of the images to synthesize."""
    if like is not None:
        colour = colour_sqrt(like)
        channels, size = colour.shape[0], tuple(like.shape[-2:])
    else:
        channels = input_channels(net) or 3
        colour = COLOR_SQRT if channels == 3 else torch.eye(channels)
        size = (IMAGE_SIDE, IMAGE_SIDE)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8
                                 for s in size):
        raise ValueError(f"image_size={image_size!r} must be one side or (H, W), whole "
                         "numbers of at least 8 pixels, e.g. 64 for 64x64 images.")
    return size[0], size[1], channels, colour
