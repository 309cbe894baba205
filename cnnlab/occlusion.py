"""Section 4 of the lab: which pixels a unit relies on, found by occlusion.

A square occluder (11x11 black pixels by default) slides over the image with a
stride of 4 pixels, centred at pixels 5, 9, ..., 29 on each axis (7 x 7 = 49
positions; the patch is clipped at the border). For every position, the map
records the unit's activation on the original image minus its activation on the
occluded one: large values mark regions the unit needs.

:func:`occlusion_maps` computes the maps; :func:`occlusion_mask` turns one map
into a brightness mask for display (scale to [0, 1], resize, smooth, threshold)
and :func:`plot_occlusion` shows the top-K images of some units through their
masks. :func:`occluded_images` makes the occluded copies of one image that
:func:`occlusion_maps` feeds the network, and :func:`plot_occluded` draws them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter, zoom
from torch import nn

from ._figures import new_figure, set_alt, unit_word
from ._inference import Runner, as_image_batch, prepare_batch
from ._memo import remembered
from ._pixels import normalize, to_display
from ._progress import bar
from ._validate import is_whole, number_in, whole_number
from .activations import _check_grid, _check_top_indices, _unit_grid, validate_units
from .config import IMAGE_SIDE, or_config
from .probe import as_extractor, input_channels

def occluder_centres(image_size: int = IMAGE_SIDE, size: int | None = None,
                     stride: int | None = None) -> np.ndarray:
    """Pixel coordinates of the occluder's centre along one axis.

    ``range(size // 2, image_size, stride)``: 5, 9, ..., 29 for the defaults. The
    occluder centred at ``c`` covers pixels ``c - size // 2`` to
    ``c - size // 2 + size - 1``, clipped to the image.

    Args:
        image_size: side of the image in pixels.
        size: side of the square occluder in pixels, 1..image_size; None for the
            configuration's ``occluder`` (11).
        stride: step between positions in pixels, at least 1; None for the
            configuration's (4).

    Returns:
        int64 array (G,) of centres.

    Raises:
        ValueError: ``size`` < 1 or larger than the image, ``stride`` < 1.
    """
    size, stride = or_config(size, "occluder"), or_config(stride, "stride")
    image_size = whole_number(image_size, "image_size",
                              advice=f"The lab's images have {IMAGE_SIDE}.")
    size = whole_number(
        size, "size",
        advice=f"The occluder is a square of 1 to {image_size} pixels; the lab uses 11.",
    )
    if is_whole(stride) and stride == 0:
        raise ValueError(
            "stride=0 would never move the occluder: each step would be 0 pixels, so it "
            "would stay on the same spot forever. Use a stride of at least 1 pixel "
            "(the lab uses 4)."
        )
    stride = whole_number(
        stride, "stride", advice="It is the step between positions; the lab uses 4."
    )
    if size > image_size:
        raise ValueError(
            f"size={size} is larger than the {image_size}x{image_size} image: the "
            f"occluder would hide the whole image at every position. Use a size from 1 "
            f"to {image_size} (the lab uses 11)."
        )
    return np.arange(size // 2, image_size, stride, dtype=np.int64)


def scaled_occluder(height: int, width: int, size: int | None = None,
                    stride: int | None = None) -> tuple[int, int]:
    """``(size, stride)``: those given, else the configuration's scaled to the image,
    checked to fit it.

    The configuration's 11 and 4 pixels are for the lab's images, of side
    :data:`cnnlab.config.IMAGE_SIDE` (32); on an image whose shorter side is ``s``
    they become ``round(11 s / 32)`` and ``round(4 s / 32)`` (at least 1), so the
    occluder hides the same share of any image.

    Raises:
        ValueError: as :func:`occluder_centres`: ``size`` < 1 or larger than the
            image's shorter side, ``stride`` < 1.
    """
    side = min(height, width)

    def scaled(value, field):
        if value is not None:
            return value
        return max(1, round(or_config(None, field) * side / IMAGE_SIDE))

    size, stride = scaled(size, "occluder"), scaled(stride, "stride")
    occluder_centres(side, size, stride)  # checks both
    return size, stride


def _occluder_masks(height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """Boolean masks (Gh * Gw, 1, H, W), True where the occluder is, row-major order."""

    def cover(length: int) -> torch.Tensor:  # (G, length): pixel inside the patch?
        starts = torch.from_numpy(occluder_centres(length, size, stride)) - size // 2
        pixels = torch.arange(length)
        return (pixels >= starts[:, None]) & (pixels < starts[:, None] + size)

    rows, cols = cover(height), cover(width)
    masks = rows[:, None, :, None] & cols[None, :, None, :]  # (Gh, Gw, H, W)
    return masks.reshape(-1, 1, height, width)


def occluded_images(
    image: torch.Tensor,
    size: int | None = None,
    stride: int | None = None,
    positions: Sequence[int] | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """Copies of one image with the occluder at some positions, as the network sees them.

    The patch is the one :func:`occlusion_maps` fills at the same position (the same
    masks, :func:`_occluder_masks`), painted ``round(255 * fill)`` in every channel.

    Args:
        image: uint8 (C, H, W), or a batch of one (1, C, H, W).
        size, stride: as for :func:`occlusion_maps` (None: the configuration's,
            scaled to the image by :func:`scaled_occluder`).
        positions: occluder positions, each an index in 0..Gh*Gw-1 in row-major order
            (position ``r * Gw + c`` is the ``[r, c]`` cell of a map); None for all.
        fill: the occluder's value in [0, 1]: 0 black (the lab), 1 white.

    Returns:
        uint8 tensor (P, C, H, W), one occluded copy per position, in order.

    Raises:
        ValueError: not one uint8 image, bad size, stride, fill or positions.

    Example:
        >>> occluded_images(test.images[0], 11, 4, positions=[0, 24, 48]).shape
        torch.Size([3, 3, 32, 32])
    """
    image = torch.as_tensor(image)
    if image.ndim == 3:
        image = image[None]
    image = as_image_batch(image, what="image", channels=None)
    if image.shape[0] != 1 or image.dtype != torch.uint8:
        raise ValueError(
            f"image must be one uint8 image (C, H, W), got a {image.dtype} batch of "
            f"shape {tuple(image.shape)}. Pass one image of the data set, e.g. "
            "test.images[0]."
        )
    _, _, height, width = image.shape
    size, stride = scaled_occluder(height, width, size, stride)
    masks = _occluder_masks(height, width, size, stride)  # (P, 1, H, W)
    fill = number_in(fill, "fill", 0, 1, advice="0 is black (the lab's choice), 1 white.")
    if positions is None:
        positions = range(masks.shape[0])
    positions = [int(p) if is_whole(p) else p for p in positions]
    bad = [p for p in positions if not is_whole(p) or not 0 <= p < masks.shape[0]]
    if bad or not positions:
        raise ValueError(
            f"positions {bad or list(positions)} are not occluder positions: this "
            f"{height}x{width} image with size={size} and stride={stride} has "
            f"{masks.shape[0]}, numbered 0 to {masks.shape[0] - 1} row by row. Give a "
            "non-empty list of them, or None for all."
        )
    value = torch.tensor(round(255 * float(fill)), dtype=torch.uint8)
    return torch.where(masks[positions], value, image)  # (P, C, H, W)


def plot_occluded(
    occluded: torch.Tensor,
    labels: Sequence[str] | None = None,
    fig: Figure | None = None,
    title: str | None = None,
) -> Figure:
    """Draw occluded copies of an image side by side, one panel each.

    Args:
        occluded: uint8 (P, 3, H, W), e.g. from :func:`occluded_images`.
        labels: a title per panel; None for "position p".
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one if None.

    Returns:
        The matplotlib Figure: one row of P panels, with alternative text
        (:func:`cnnlab._figures.alt_text`).
    """
    occluded = as_image_batch(occluded, what="occluded")
    count = occluded.shape[0]
    labels = [f"position {p}" for p in range(count)] if labels is None else list(labels)
    if len(labels) != count:
        raise ValueError(
            f"labels has {len(labels)} entries for {count} images: give one per image."
        )
    fig = new_figure(fig, (1.6 * count, 2.0))
    pictures = to_display(occluded)
    for ax, picture, label in zip(fig.subplots(1, count, squeeze=False)[0], pictures,
                                  labels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title or "The image as the network sees it, the occluder at each position")
    height, width = occluded.shape[2:]
    return set_alt(fig, (
        f"{count} copies of the same {height}x{width} image side by side, each with a "
        f"square patch painted over at a different place ({', '.join(labels)}), from "
        "the top left towards the bottom right."
    ))


def occlusion_maps(
    extractor: nn.Module,
    images: torch.Tensor,
    units: Sequence[int] | int | None = None,
    size: int | None = None,
    stride: int | None = None,
    fill: float = 0.0,
    batch_size: int = 64,
    precision: str = "fp32",
    progress: bool = False,
) -> np.ndarray:
    """Occlusion maps: how much each region of each image drives each unit.

    For image ``i``, unit ``units[j]`` and occluder position ``(r, c)``:
    ``maps[i, j, r, c] = act(image) - act(image with the patch at (r, c) filled)``.

    Every (image, position) pair is one occluded image and gets exactly one
    forward pass; all requested units are read from that same pass. The
    occluded images are made in chunks of ``batch_size``: a chunk picks its images
    and its positions' (1, H, W) masks and fills the patches with one broadcast
    ``torch.where`` over the 3 channels, so memory stays bounded whatever the
    number of images, units and positions. Nothing is deep-copied or stacked.

    Args:
        extractor: network whose output (N, D) holds the units, e.g.
            ``feature_extractor(model)``, or a :class:`cnnlab.Probe`; eval mode
            during the call, modes restored.
        images: uint8 (N, C, H, W) pixels, or a float tensor already normalised
            (to [-1, 1] for the course network).
        units: which of the D outputs to map (validated against D); None for all.
        size: occluder side in pixels; None for the configuration's (11 for 32x32
            images, scaled to other sizes: :func:`scaled_occluder`).
        stride: pixels between occluder positions; None for the configuration's (4,
            scaled like ``size``).
        fill: the occluder's pixel value before normalisation, in [0, 1]:
            0 is black (the lab), 0.5 grey, 1 white.
        batch_size: occluded images per forward pass (small chunks stay in the CPU's
            cache: 64 was fastest here, 2048 three times slower).
        precision: ``"fp32"`` (the default: bf16 was 3x faster here but moved the
            argmax of 2 maps in 70) or ``"auto"`` (bf16 autocast where fast).
        progress: show a progress bar over the chunks (in a terminal or notebook only).

    Returns:
        float32 array (N, U, Gh, Gw): U = len(units) (D if None), Gh and Gw the
        occluder positions per axis (7 x 7 for 32x32 images with the defaults).
        Positive values: hiding that region lowers the unit's activation.

    Raises:
        ValueError: empty or badly shaped images, bad units, size larger than
            the image, stride < 1, fill outside [0, 1], bad batch_size.

    Example:
        >>> maps = occlusion_maps(feature_extractor(model), test.images[:10], units=[14])
        >>> maps.shape
        (10, 1, 7, 7)
    """
    extractor, mean, std = as_extractor(extractor)
    images = as_image_batch(images, channels=input_channels(extractor))
    n, channels, height, width = images.shape
    size, stride = scaled_occluder(height, width, size, stride)
    masks = _occluder_masks(height, width, size, stride)
    grid = tuple(len(occluder_centres(side, size, stride)) for side in (height, width))
    fill = number_in(fill, "fill", 0, 1, advice="It is a pixel value before normalisation: "
                     "0 is black (the lab's choice), 0.5 grey, 1 white.")
    batch_size = whole_number(batch_size, "batch_size", advice="64 was fastest here.")
    runner = Runner.of(extractor, precision)
    device = runner.device
    n_pos = masks.shape[0]
    masks = masks.to(device)
    # The fill as the network sees it, channel by channel (C, 1, 1): the probe's
    # normalisation, or the default one when it has none.
    fill_value = normalize(torch.full((channels, 1, 1), float(fill)), mean, std).to(device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return extractor(runner.layout(x)).float().reshape(x.shape[0], -1)

    with runner.inference(extractor):
        x = prepare_batch(images, device, False, mean, std)  # (n, C, H, W) normalised
        base = runner.batched(lambda a, b: forward(x[a:b]), n, batch_size)
        n_units = base.shape[1]
        units = list(range(n_units)) if units is None else validate_units(units, n_units)
        picked = torch.tensor(units, device=device)
        base = base[:, picked]
        diffs = np.empty((n * n_pos, len(units)), dtype=np.float32)
        total = n * n_pos
        for start in bar(range(0, total, batch_size), show=progress, desc="occlusion",
                         unit="chunk"):
            pair = torch.arange(start, min(start + batch_size, total), device=device)
            img, pos = pair // n_pos, pair % n_pos
            occluded = torch.where(masks[pos], fill_value, x[img])  # (B, C, H, W)
            act = forward(occluded)[:, picked]
            diffs[start : start + len(pair)] = (base[img] - act).cpu().numpy()
    maps = diffs.reshape(n, grid[0], grid[1], len(units))
    return np.ascontiguousarray(maps.transpose(0, 3, 1, 2))


@remembered
def top_k_occlusion(
    extractor: nn.Module,
    images: torch.Tensor,
    top_indices: np.ndarray,
    units: Sequence[int],
    **kwargs,
) -> np.ndarray:
    """Occlusion maps of each chosen unit on its own top-K images.

    The images that appear in several units' top-K lists are occluded once:
    every distinct image goes through :func:`occlusion_maps` a single time, with
    all the chosen units read from the same forward passes.

    Args:
        extractor: as for :func:`occlusion_maps`.
        images: uint8 (N, 3, H, W), the images ``top_indices`` points into.
        top_indices: (K, D) from :func:`cnnlab.activations.top_k`.
        units: the chosen units, each in 0..D-1.
        **kwargs: ``size``, ``stride``, ``fill``, ``batch_size``, ``precision``,
            ``progress``, passed to :func:`occlusion_maps`.

    Returns:
        float32 array (K, U, Gh, Gw): ``[k, j]`` is the map of unit ``units[j]``
        on its k-th most activating image, ``images[top_indices[k, units[j]]]``;
        the layout :func:`plot_occlusion` expects.
    """
    images = as_image_batch(images, channels=input_channels(as_extractor(extractor)[0]))
    top_indices, units = _check_top_indices(top_indices, units, images.shape[0])
    chosen = top_indices[:, units]  # (K, U) image indices
    distinct, where = np.unique(chosen, return_inverse=True)
    where = where.reshape(chosen.shape)
    maps = occlusion_maps(extractor, images[torch.as_tensor(distinct)], units=units, **kwargs)
    return maps[where, np.arange(len(units))[None, :]]  # (K, U, Gh, Gw)


def check_mask_settings(sigma, threshold, dim: float = 0.3) -> tuple[float, float, float]:
    """``sigma``, ``threshold`` and ``dim`` (None: the configuration's), checked.

    Raises:
        ValueError: ``sigma`` < 0, or ``threshold`` or ``dim`` outside [0, 1].
    """
    return (
        number_in(or_config(sigma, "sigma"), "sigma", 0,
                  advice="It is the smoothing in pixels; the lab uses 2."),
        number_in(or_config(threshold, "threshold"), "threshold", 0, 1,
                  advice="The lab uses 0.5."),
        number_in(dim, "dim", 0, 1, advice="It is the brightness of the dimmed pixels."),
    )


def occlusion_mask(
    omap: np.ndarray,
    image_size: int | tuple[int, int] = IMAGE_SIDE,
    sigma: float | None = None,
    threshold: float | None = None,
    dim: float = 0.3,
) -> np.ndarray:
    """Turn one occlusion map into a brightness mask over the image.

    Steps: min-max scale the map to [0, 1]; resize it to the image with linear
    interpolation (``scipy.ndimage.zoom``, order 1); smooth it with a Gaussian of
    ``sigma`` pixels; pixels at or above ``threshold`` become 1.0, the rest ``dim``.
    A constant map (no region matters more than another) scales to all zeros, so
    with ``threshold > 0`` the whole image is dimmed.

    Args:
        omap: (G, G) map (or (Gh, Gw)), e.g. ``occlusion_maps(...)[i, j]``.
        image_size: side of the image, or (H, W).
        sigma: Gaussian smoothing in pixels (0 for none); None for the
            configuration's (2).
        threshold: in [0, 1]; larger keeps fewer pixels bright; None for the
            configuration's (0.5).
        dim: brightness of the pixels below the threshold, in [0, 1].

    Returns:
        float32 array (H, W) with values ``dim`` and 1.0.
    """
    omap = np.asarray(omap, dtype=np.float64)
    if omap.ndim != 2 or 0 in omap.shape:
        raise ValueError(
            f"omap must be one 2-D occlusion map (G, G), got shape {omap.shape}. "
            "Pick one with maps[i, j]."
        )
    if isinstance(image_size, numbers.Integral):
        image_size = (image_size, image_size)
    height, width = image_size
    sigma, threshold, dim = check_mask_settings(sigma, threshold, dim)
    lo, span = omap.min(), omap.max() - omap.min()
    scaled = (omap - lo) / span if span > 0 else np.zeros_like(omap)
    big = zoom(scaled, (height / omap.shape[0], width / omap.shape[1]), order=1)
    if big.shape != (height, width):  # zoom rounds the output size; guard all the same
        raise RuntimeError(f"zoom gave shape {big.shape}, expected {(height, width)}.")
    smooth = gaussian_filter(big, sigma) if sigma > 0 else big
    return np.where(smooth >= threshold, 1.0, dim).astype(np.float32)


def _display_images(images) -> np.ndarray:
    """uint8 (N, 3, H, W) or floats (N, H, W, 3) in [0, 1] -> float (N, H, W, 3)."""
    if isinstance(images, torch.Tensor) or (
        isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
        and images.shape[1] == 3
    ):
        images = torch.as_tensor(images)
        if images.dtype == torch.uint8:
            return to_display(images)
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 (N, 3, H, W) or display images (N, H, W, 3) in "
            f"[0, 1], got shape {images.shape}."
        )
    return images


def masked_images(images, maps: np.ndarray, **mask_kwargs) -> np.ndarray:
    """Each image multiplied by the mask of its occlusion map.

    Args:
        images: N images, uint8 (N, 3, H, W) or floats (N, H, W, 3) in [0, 1].
        maps: (N, G, G) occlusion maps, one per image.
        **mask_kwargs: ``sigma``, ``threshold``, ``dim`` for :func:`occlusion_mask`.

    Returns:
        float32 array (N, H, W, 3) in [0, 1].
    """
    pictures = _display_images(images)
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != pictures.shape[0]:
        raise ValueError(
            f"maps must hold one (G, G) map per image: expected shape "
            f"({pictures.shape[0]}, G, G), got {maps.shape}."
        )
    size = pictures.shape[1:3]
    masks = np.stack([occlusion_mask(m, image_size=size, **mask_kwargs) for m in maps])
    return (pictures * masks[..., None]).astype(np.float32)


def plot_occlusion(
    images: torch.Tensor,
    top_indices: np.ndarray,
    units: Sequence[int],
    maps: np.ndarray,
    sigma: float | None = None,
    threshold: float | None = None,
    dim: float = 0.3,
    fig: Figure | None = None,
    title: str | None = None,
    classes: Sequence[str] | None = None,
) -> Figure:
    """The top-K grid again, each image seen through its occlusion mask.

    The arguments come in :func:`cnnlab.activations.plot_top_k`'s order, then the maps.

    Args:
        images: uint8 (N, 3, H, W), the images ``top_indices`` points into.
        top_indices: (K, D) from :func:`cnnlab.activations.top_k`.
        units: the U units, one column each.
        maps: (K, U, G, G) from :func:`top_k_occlusion` for the same ``units``.
        sigma, threshold, dim: as for :func:`occlusion_mask` (None: the
            configuration's).
        fig: figure to draw into (cleared first); a new one if None.
        title: figure title; a default one if None.
        classes: D names when the units are a network's classes, as for
            :func:`cnnlab.activations.plot_top_k`; None numbers the units.

    Returns:
        The matplotlib Figure: K rows, one column per unit titled "unit u" (or
        "class 'name'").
    """
    images, top_indices, units, classes = _check_grid(images, top_indices, units, classes)
    maps = np.asarray(maps)
    k = top_indices.shape[0]
    if maps.ndim != 4 or maps.shape[:2] != (k, len(units)):
        raise ValueError(
            f"maps has shape {maps.shape}, expected ({k}, {len(units)}, G, G): one map "
            "per top-K image and unit, as top_k_occlusion(extractor, images, "
            "top_indices, units) returns for the same units."
        )
    return _unit_grid(
        fig, k, units,
        lambda j, u: masked_images(
            images[torch.as_tensor(top_indices[:, u])], maps[:, j],
            sigma=sigma, threshold=threshold, dim=dim,
        ),
        title or f"Top {k} images per {unit_word(classes)}, dimmed where occlusion "
        "mattered least",
        classes,
    )
