"""Section 6 of the lab: which pixels a unit (or a class) relies on, by gradients.

Occlusion (Section 4) asks "what happens if I hide this patch?". The methods here
ask the network directly, through its gradients, and give one map per image:

- :func:`gradient` (saliency): how fast the target changes as each pixel brightens;
- :func:`smoothgrad`: the same, averaged over noisy copies of the image;
- :func:`integrated_gradients`: gradients summed along the straight path from a
  black image to the image, so the map adds up to the change of the target;
- :func:`guided_backprop`: gradients with every negative signal stopped at each
  ReLU on the way back (sharp pictures, but it fails the sanity check of
  :mod:`cnnlab.sanity`: it hardly depends on the weights);
- :func:`grad_cam`: a conv layer's feature maps weighted by their mean gradient;
- :func:`contribution_map`: the exact share of each of the 8x8 positions feeding
  the first ``Linear`` layer in a unit's value (HiResCAM).

"model" is either the unit extractor ``model[:14]`` (output (N, 128); a target is a
unit) or the whole network (output (N, 10); a target is a class). Every map is a
float32 array (N, H, W) (``contribution_map``: (N, 8, 8)) whose positive values
mark pixels that raise the target. The colour channels are summed: a pixel's
value is the effect of brightening it in all three channels at once. Gradients
are taken with respect to the normalised input in [-1, 1] (one pixel step of
1/255 is 2/255 there). Gradients are switched on locally, so these functions also
work when called under ``torch.inference_mode()``; the model is put in eval mode
for the call and every submodule's mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._inference import (as_image_batch, evaluating, is_whole, prepare_batch,
                         use_channels_last)
from .config import or_config
from .data import CLASSES, MEAN, STD
from .model import first_linear_index, model_device

#: The methods :func:`attribute` knows, in the order the lab shows them.
METHODS = (
    "gradient",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "grad_cam",
    "contribution",
)

#: The black image the occluder and Integrated Gradients use, in normalised units.
BLACK = (0.0 - MEAN) / STD


# --- shared plumbing ------------------------------------------------------------


@contextlib.contextmanager
def gradients_on(model: nn.Module) -> Iterator[None]:
    """Eval mode and autograd on for the body, whatever the caller switched off.

    Works inside ``torch.inference_mode()`` and ``torch.no_grad()``; every
    submodule's train/eval flag is restored afterwards, also after an exception.
    """
    with evaluating(model), torch.inference_mode(False), torch.enable_grad():
        yield


def _kind(n_out: int) -> str:
    """What a target of a model with ``n_out`` outputs is called."""
    return "class" if n_out == len(CLASSES) else "unit"


def prepare_inputs(model: nn.Module, images, targets) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check and convert the three common arguments.

    The number of outputs is read from a Sequential's final ``nn.Linear`` when it
    ends with one (no forward pass), else from a forward pass of one image.

    Returns:
        ``(x, t, n_out)``: float32 (N, 3, H, W) normalised images on the model's
        device (ordinary tensors, even when ``images`` was made under inference
        mode), int64 (N,) targets, and the model's number of outputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch nn.Module (the extractor model[:14] or the whole "
            f"network), got {type(model).__name__}."
        )
    images = as_image_batch(images)
    x = prepare_batch(images, model_device(model), channels_last=False)
    if x.is_inference():
        x = x.clone()  # an ordinary tensor autograd can record
    last = model[-1] if isinstance(model, nn.Sequential) and len(model) else None
    if isinstance(last, nn.Linear):
        n_out = last.out_features
    else:
        with evaluating(model), torch.no_grad():  # eval: no dropout draws from the RNG
            n_out = forward(model, x[:1]).shape[1]
    return x, _targets(targets, x.shape[0], n_out).to(x.device), n_out


def forward(model: nn.Module, x: torch.Tensor, image_shape: tuple | None = None
            ) -> torch.Tensor:
    """``model(x)`` with a teaching error when the images do not fit the model.

    ``image_shape`` is the images' shape to name in the error when ``x`` is not the
    images themselves (the input of a later layer); None = ``x.shape``.

    Returns:
        The output (B, D).

    Raises:
        ValueError: the model cannot run on images of this shape, or its output is
            not (B, D).
    """
    try:
        out = model(x)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, torch.OutOfMemoryError) or not any(
                word in first for word in ("shape", "size", "mat1")):
            raise  # not a question of image size
        shown = ", ".join(map(str, (image_shape or x.shape)[1:]))
        raise ValueError(
            f"The model could not run on images of shape (N, {shown}) "
            f"({first}). The course network takes CIFAR-10 images of shape (N, 3, 32, 32): "
            "uint8 pixels 0..255, or floats already normalised to [-1, 1]."
        ) from exc
    if out.ndim != 2:
        raise ValueError(
            f"The model's output has shape {tuple(out.shape)}; expected (N, D): pass the "
            "extractor model[:14] (D = 128 units) or the whole network (D = 10 classes)."
        )
    return out


def _targets(targets, n: int, n_out: int) -> torch.Tensor:
    """One valid target per image as int64 (N,); an int is used for every image."""
    kind = _kind(n_out)
    valid = f"a {kind} number from 0 to {n_out - 1}"
    if kind == "class":
        valid += " (" + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)) + ")"
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        targets = targets.tolist()  # a 0-d array gives a plain number
    if isinstance(targets, (str, bytes)):
        raise TypeError(f"targets={targets!r} is text: each target is {valid}, without quotes.")
    if isinstance(targets, (Sequence, range)):
        entries = list(targets)
        if len(entries) != n:
            raise ValueError(
                f"targets has {len(entries)} entries for {n} images: give one {kind} per "
                f"image, or a single int to use the same {kind} for all of them."
            )
    else:
        entries = [targets] * n
    for i, t in enumerate(entries):
        if not is_whole(t):
            raise TypeError(
                f"targets[{i}] = {t!r} is not a whole number: each target is {valid}."
            )
        if not 0 <= t < n_out:
            raise ValueError(
                f"targets[{i}] = {t} is out of range: this model has {n_out} outputs, so "
                f"each target is {valid}. Fix that entry (numbering starts at 0, and "
                f"negative numbers do not count from the end)."
            )
    return torch.tensor([int(t) for t in entries], dtype=torch.int64)


def _batch(batch_size: int | None) -> int:
    batch_size = or_config(batch_size, "attribution_batch")
    if not is_whole(batch_size, 1):
        raise ValueError(
            f"batch_size={batch_size!r} must be a positive integer (images per backward "
            f"pass; the lab uses {or_config(None, 'attribution_batch')})."
        )
    return int(batch_size)


def _selected_grad(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d out[i, t[i]] / d x[i], out[i, t[i]])`` for a batch: grads (B, ...) and (B,).

    Images do not interact in eval mode, so the gradient of the sum over the batch
    is every image's own gradient.
    """
    x = _layout(x).detach().requires_grad_(True)
    value = forward(model, x).gather(1, t[:, None])[:, 0]
    (grad,) = torch.autograd.grad(value.sum(), x)
    return grad, value.detach()


def _layout(x: torch.Tensor) -> torch.Tensor:
    """An image batch in the memory layout the lab computes in on its device.

    ``channels_last`` where :func:`cnnlab.device.choose_precision` picks it (CUDA and
    the CPU under ``precision="auto"``): about 25 % faster for these small convs on
    the CPU. The values are the same computation, laid out differently.
    """
    if x.ndim == 4 and use_channels_last(x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _to_numpy(maps: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(maps.detach().float().cpu().numpy(), dtype=np.float32)


def _check_sequential(model: nn.Module, what: str) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"{what} needs an nn.Sequential it can split at a layer index, got "
            f"{type(model).__name__}. Pass the course network or its extractor model[:14]."
        )
    return model


def _split_at(model: nn.Sequential, index: int, x: torch.Tensor, t: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model[:index + 1]`` and ``model[index + 1:]`` on a batch.

    Returns:
        ``(A, dA)``: the output of layer ``index`` (B, C, h, w) and the gradient of
        each image's target with respect to it, same shape.
    """
    with torch.no_grad():
        acts = model[: index + 1](_layout(x))
    acts.requires_grad_(True)
    value = forward(model[index + 1 :], acts, tuple(x.shape)).gather(1, t[:, None])
    (grad,) = torch.autograd.grad(value.sum(), acts)
    return acts.detach(), grad


# --- the methods ----------------------------------------------------------------


def gradient(model: nn.Module, images, targets, batch_size: int | None = None) -> np.ndarray:
    """Saliency: the gradient of the target with respect to each pixel.

    ``map[i, y, x] = sum_c d f_t(x_i) / d x_i[c, y, x]``: how fast the target grows as
    pixel (y, x) brightens in all three channels (normalised units).

    Args:
        model: the extractor ``model[:14]`` (targets are units) or the whole network
            (targets are classes).
        images: uint8 (N, 3, H, W) pixels, or floats already normalised to [-1, 1].
        targets: one unit/class per image, or one int for all.
        batch_size: images per backward pass; None = ``LabConfig.attribution_batch``.

    Returns:
        float32 (N, H, W); positive = brightening the pixel raises the target.

    Raises:
        ValueError: badly shaped images, a target out of range, wrong number of targets.

    Example:
        >>> gradient(model[:14], test.images[:4], 14).shape
        (4, 32, 32)
    """
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        maps = [
            _selected_grad(model, x[s : s + batch_size], t[s : s + batch_size])[0].sum(1)
            for s in range(0, len(x), batch_size)
        ]
    return _to_numpy(torch.cat(maps))


def smoothgrad_noise(shape: tuple[int, ...], n_samples: int, std: float, seed: int,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The Gaussian noise SmoothGrad adds: (N, n_samples, *shape[1:]), seeded.

    Drawn in one call of ``torch.normal`` from a generator seeded with ``seed``, in
    image-major order (all samples of image 0 first), which is also the order of
    Captum's ``NoiseTunnel`` after ``torch.manual_seed(seed)``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    size = (shape[0], n_samples, *shape[1:])
    return torch.normal(0.0, float(std), size, generator=generator).to(device)


def smoothgrad(
    model: nn.Module,
    images,
    targets,
    n_samples: int | None = None,
    noise: float | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies.

    ``map = mean over s of gradient(x + e_s)`` with ``e_s ~ N(0, sigma^2)`` per
    pixel and channel; averaging removes the speckle a single gradient has.

    Args:
        model, images, targets: as for :func:`gradient`.
        n_samples: noisy copies per image; None = ``LabConfig.smoothgrad_samples``.
        noise: standard deviation of the noise in pixel units (fraction of the 0..255
            range); None = ``LabConfig.smoothgrad_noise``. In normalised units it is
            ``noise / 0.5``.
        seed: seeds the noise; None = ``LabConfig.seed``.
        batch_size: noisy images per backward pass; None = ``LabConfig.attribution_batch``.

    Returns:
        float32 (N, H, W); positive = brightening the pixel raises the target, on average.

    Raises:
        ValueError: as for :func:`gradient`, or a bad ``n_samples``/``noise``.
    """
    n_samples = or_config(n_samples, "smoothgrad_samples")
    noise, seed = or_config(noise, "smoothgrad_noise"), or_config(seed, "seed")
    if not is_whole(n_samples, 1):
        raise ValueError(f"n_samples={n_samples!r} must be a positive integer (the lab uses "
                         f"{or_config(None, 'smoothgrad_samples')}).")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise={noise!r} must be a standard deviation >= 0 in pixel units "
                         f"(the lab uses {or_config(None, 'smoothgrad_noise')}, 15 % of the range).")
    if not is_whole(seed):
        raise TypeError(f"seed={seed!r} must be an integer.")
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        draws = smoothgrad_noise(tuple(x.shape), int(n_samples), noise / STD, seed, x.device)
        per_chunk = max(1, batch_size // n_samples)  # whole images per backward pass
        maps = []
        for s in range(0, len(x), per_chunk):
            xb, eb = x[s : s + per_chunk], draws[s : s + per_chunk]  # (b, ...), (b, S, ...)
            noisy = (xb[:, None] + eb).flatten(0, 1)  # (b * S, 3, H, W)
            grad, _ = _selected_grad(model, noisy, t[s : s + per_chunk].repeat_interleave(
                n_samples))
            maps.append(grad.unflatten(0, (len(xb), n_samples)).mean(1).sum(1))
    return _to_numpy(torch.cat(maps))


def trapezoid_weights(steps: int) -> torch.Tensor:
    """Weights (steps,) of the trapezoid rule on [0, 1] at ``linspace(0, 1, steps)``.

    Half weight at both ends; they sum to 1 (Captum's ``riemann_trapezoid`` uses
    ``1/steps`` instead of ``1/(steps - 1)``, so its weights sum to (steps-1)/steps).
    """
    w = torch.full((steps,), 1.0 / (steps - 1))
    w[0] = w[-1] = 0.5 / (steps - 1)
    return w


def integrated_gradients(
    model: nn.Module,
    images,
    targets,
    steps: int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017) from a black image.

    ``map = sum_c (x - b) * integral_0^1 grad f_t(b + a (x - b)) da``, the integral
    by the trapezoid rule at ``steps`` points, the baseline ``b`` the black image
    (pixel 0, normalised -1, the occluder's fill). Completeness: the map sums to
    ``f_t(x) - f_t(b)`` up to the quadrature error.

    Args:
        model, images, targets: as for :func:`gradient`.
        steps: points on the path, both ends included, at least 2; None =
            ``LabConfig.ig_steps``.
        batch_size: path points per backward pass; None = ``LabConfig.attribution_batch``.

    Returns:
        float32 (N, H, W); positive = the pixel, brought from black to its value,
        raised the target.

    Raises:
        ValueError: as for :func:`gradient`, or ``steps`` < 2.
    """
    steps = or_config(steps, "ig_steps")
    if not is_whole(steps, 2):
        raise ValueError(f"steps={steps!r} must be an integer of at least 2 (both ends of "
                         f"the path; the lab uses {or_config(None, 'ig_steps')}).")
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        alphas = torch.linspace(0.0, 1.0, steps, device=x.device)
        weights = trapezoid_weights(steps).to(x.device)
        per_chunk = max(1, batch_size // steps)
        maps = []
        for s in range(0, len(x), per_chunk):
            delta = x[s : s + per_chunk] - BLACK  # (b, 3, H, W)
            path = BLACK + alphas[None, :, None, None, None] * delta[:, None]  # (b, S, ...)
            grad, _ = _selected_grad(model, path.flatten(0, 1),
                                     t[s : s + per_chunk].repeat_interleave(steps))
            grad = grad.unflatten(0, (len(delta), steps))
            mean_grad = (weights[None, :, None, None, None] * grad).sum(1)
            maps.append((delta * mean_grad).sum(1))
    return _to_numpy(torch.cat(maps))


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only the positive part of the gradient through."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[int]:
    """Make every ``nn.ReLU`` guided: its output passes through :class:`_PositiveGradient`.

    On the way back the gradient is first clamped at 0, then the ReLU's own
    backward keeps it only where the ReLU's input was positive: together, guided
    backpropagation's rule. The forward hooks are removed on exit, also after an
    exception. Yields the number of ReLU modules hooked.
    """
    handles = [
        m.register_forward_hook(lambda _m, _inputs, out: _PositiveGradient.apply(out))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def guided_backprop(model: nn.Module, images, targets, batch_size: int | None = None
                    ) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2015).

    The gradient, except that at every ``nn.ReLU`` only positive gradients pass
    back (and only where the ReLU's input was positive). The maps look like crisp
    edges, but they change little when the weights are randomised
    (:func:`cnnlab.sanity.cascading_randomization`): they show the image more than
    the network. Kept in the lab as the method that fails that test.

    Args:
        model, images, targets, batch_size: as for :func:`gradient`.

    Returns:
        float32 (N, H, W), summed over the colour channels; positive = raises the target.

    Raises:
        ValueError: as for :func:`gradient`, or a model without ``nn.ReLU`` modules.
    """
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        with _guided_relus(model) as n_relus:
            if n_relus == 0:
                raise ValueError(
                    "guided_backprop changes the backward pass of nn.ReLU modules, and "
                    "this model has none (a functional relu cannot be guided). Use the "
                    "course network or its extractor."
                )
            maps = [
                _selected_grad(model, x[s : s + batch_size], t[s : s + batch_size])[0].sum(1)
                for s in range(0, len(x), batch_size)
            ]
    return _to_numpy(torch.cat(maps))


def _check_conv_layer(model: nn.Sequential, layer) -> int:
    """``layer`` checked to be a Conv2d of ``model``; None = its last Conv2d."""
    convs = [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]
    valid = f"the conv layers of this model are {convs}" if convs else "it has no Conv2d"
    if layer is None:
        if not convs:
            raise ValueError(f"grad_cam needs a conv layer, and {valid}.")
        return convs[-1]
    if not is_whole(layer):
        raise TypeError(f"layer={layer!r} must be the index of a conv layer; {valid}.")
    if not 0 <= layer < len(model):
        raise ValueError(
            f"layer={layer} is not a layer of this model: it has {len(model)} layers, "
            f"numbered 0 to {len(model) - 1}; {valid}. The lab uses the last one "
            "(8 in the course network)."
        )
    if not isinstance(model[layer], nn.Conv2d):
        raise TypeError(
            f"layer={layer} is a {type(model[layer]).__name__}, not a conv layer: Grad-CAM "
            f"weights a conv layer's feature maps. Pick one of {convs} (the lab uses "
            "the last one)."
        )
    return int(layer)


def grad_cam(model: nn.Module, images, targets, layer: int | None = None,
             batch_size: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) on a conv layer, upsampled to the image.

    With ``A`` the layer's rectified feature maps (the output of the ``nn.ReLU``
    right after the conv, when there is one: ``model[9]`` for the default conv
    ``model[8]``) and ``w_k`` the mean over positions of ``d f_t / d A_k``:
    ``map = ReLU(sum_k w_k A_k)``, resized bilinearly from (h, w) to (H, W).

    Many maps are all zero here: for the lab's units on ``model[8]`` the weighted
    sum is negative everywhere for a large share of the top images (see the lab's
    benchmark). :func:`contribution_map` is the exact alternative.

    Args:
        model, images, targets, batch_size: as for :func:`gradient` (an nn.Sequential).
        layer: index of a ``Conv2d`` in the Sequential; None = ``LabConfig.gradcam_layer``,
            whose default None means the last conv layer (8: 16x16 maps).

    Returns:
        float32 (N, H, W), >= 0; larger = that region raises the target more.

    Raises:
        ValueError: as for :func:`gradient`, or ``layer`` out of range.
        TypeError: ``layer`` is not a conv layer.
    """
    model = _check_sequential(model, "grad_cam")
    layer = or_config(layer, "gradcam_layer")
    layer = _check_conv_layer(model, layer)
    if layer + 1 < len(model) and isinstance(model[layer + 1], nn.ReLU):
        layer += 1  # the rectified maps
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        maps = []
        for s in range(0, len(x), batch_size):
            acts, grad = _split_at(model, layer, x[s : s + batch_size], t[s : s + batch_size])
            weights = grad.mean(dim=(2, 3), keepdim=True)  # (b, C, 1, 1)
            cam = F.relu((weights * acts).sum(1, keepdim=True))  # (b, 1, h, w)
            maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0])
    return _to_numpy(torch.cat(maps))


def _flatten_index(model: nn.Sequential) -> int:
    """Index of the ``nn.Flatten`` right before the first Linear, with teaching errors."""
    linear = first_linear_index(model)
    if linear == 0 or not isinstance(model[linear - 1], nn.Flatten):
        raise ValueError(
            "contribution_map needs the course network's layout: an nn.Flatten right "
            f"before the first nn.Linear (layers 12 and 13); layer {linear} is the first "
            f"Linear but layer {linear - 1} is not a Flatten."
        )
    return linear - 1


def contribution_map(model: nn.Module, images, targets, batch_size: int | None = None
                     ) -> np.ndarray:
    """The exact contribution of each position of the first Linear's input grid.

    The first ``Linear(4096, 128)`` reads ``A``, the (64, 8, 8) feature maps that its
    Flatten lays out in a row. Unit u's pre-activation is
    ``z_u = sum_{c,y,x} W[u, c, y, x] A[c, y, x] + b_u``, so the map
    ``M[y, x] = sum_c W[u, c, y, x] A[c, y, x]`` splits ``z_u - b_u`` exactly over the
    8x8 positions: ``M.sum() + b_u == z_u`` (HiResCAM; Captum's
    ``LayerGradientXActivation`` on the Flatten's input).

    For the whole network (a class target) the map is the same gradient times ``A``:
    everything after ``A`` is linear once the ReLU pattern is fixed, so the map sums
    to the logit minus the biases' share
    (``b_c + sum_u V[c, u] [z_u > 0] b_u``, with V the last Linear's weight).

    Args:
        model, images, targets, batch_size: as for :func:`gradient` (an nn.Sequential
            with an ``nn.Flatten`` right before its first ``nn.Linear``).

    Returns:
        float32 (N, h, w), (N, 8, 8) for the course network; positive = that region
        raises the target.

    Raises:
        ValueError: as for :func:`gradient`, or a model without Flatten + Linear.

    Example:
        >>> m = contribution_map(model[:14], test.images[:1], 14)
        >>> m.sum() + model[13].bias[14].item()  # == model[:14](x)[0, 14]
    """
    model = _check_sequential(model, "contribution_map")
    flatten = _flatten_index(model)
    linear = flatten + 1
    batch_size = _batch(batch_size)
    with gradients_on(model):
        x, t, _ = prepare_inputs(model, images, targets)
        maps = []
        for s in range(0, len(x), batch_size):
            xb, tb = x[s : s + batch_size], t[s : s + batch_size]
            if linear == len(model) - 1:  # the extractor: the weights are the gradient
                with torch.no_grad():
                    acts = model[:flatten](_layout(xb))  # (b, C, h, w)
                if acts[0].numel() != model[linear].in_features:
                    forward(model, xb)  # raises the error that explains the image size
                grad = model[linear].weight[tb].detach().view_as(acts)
            else:
                acts, grad = _split_at(model, flatten - 1, xb, tb)
            maps.append((grad * acts).sum(1))
    return _to_numpy(torch.cat(maps))


#: Method name -> function, for :func:`attribute`.
_FUNCTIONS = {
    "gradient": gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "grad_cam": grad_cam,
    "contribution": contribution_map,
}


def attribute(method: str, model: nn.Module, images, targets, **kwargs) -> np.ndarray:
    """Any of the methods by name.

    Args:
        method: one of :data:`METHODS`.
        model, images, targets: as for :func:`gradient`.
        **kwargs: the method's own options (``n_samples``, ``steps``, ``layer``, ...).

    Returns:
        The method's float32 maps, (N, H, W) or (N, 8, 8) for ``"contribution"``.

    Raises:
        ValueError: unknown method, or whatever the method raises.
        TypeError: an option the method does not have.

    Example:
        >>> attribute("integrated_gradients", model[:14], images, 14, steps=16)
    """
    if method not in _FUNCTIONS:
        raise ValueError(
            f"method={method!r} is not known. Choose one of {', '.join(METHODS)}."
        )
    function = _FUNCTIONS[method]
    options = list(inspect.signature(function).parameters)[3:]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(
            f"{method} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(options)}."
        )
    return function(model, images, targets, **kwargs)
