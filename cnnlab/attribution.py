"""Section 6 of the lab: which pixels a unit (or a class) relies on, by gradients.

Occlusion (Section 4) asks "what happens if I hide this patch?". The methods here
ask the network directly, through its gradients, and give one map per image:

- :func:`gradient` (saliency): how fast the target changes as each pixel brightens;
- :func:`smoothgrad`: the same, averaged over noisy copies of the image;
- :func:`integrated_gradients`: gradients summed along the straight path from a
  black image to the image, so the map adds up to the change of the target;
- :func:`guided_backprop`: gradients with every negative signal stopped at each
  ReLU on the way back (sharp pictures; put it through the sanity check of
  :mod:`cnnlab.sanity` before trusting them);
- :func:`grad_cam`: a layer's feature maps weighted by their mean gradient;
- :func:`contribution_map`: gradient x activation at a layer, each position's
  share of the target (exact for the 8x8 positions feeding the course network's
  first ``Linear``: HiResCAM).

"model" is a :class:`cnnlab.Probe` (a target is one of its units: a channel of its
layer, averaged over positions, or an output) or a network, read at its output:
the unit extractor ``model[:14]`` (output (N, 128); a target is a unit) or the
whole network (output (N, 10); a target is a class when the network carries class
names, :attr:`cnnlab.Probe.classes`). Targets are one per image (or
one int for all). Every map is a float32 array (N, H, W) (``contribution_map``:
(N, h, w), the layer's grid) whose positive values mark pixels that raise the
target. The colour channels are summed: a pixel's value is the effect of
brightening it in all channels at once. Gradients are taken with respect to the
normalised input (the course network's is in [-1, 1]: one pixel step of 1/255 is
2/255 there). Gradients are switched on locally, so these functions also work when
called under ``torch.inference_mode()``; the model is put in eval mode for the
call, every submodule's mode is restored afterwards, and the hooks that read a
layer exist only during the call.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._inference import Runner, as_image_batch, evaluating, is_whole, prepare_batch
from ._methods import method_names, registered
from ._pixels import MEAN, STD
from .config import or_config
from .device import model_device
from .probe import Probe, find_layer, input_channels, last_spatial_layer

#: The methods :func:`attribute` knows, in the order the lab shows them (the gradient
#: methods of the registry, :mod:`cnnlab._methods`).
METHODS = method_names("gradient")

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


def _probe(model) -> Probe:
    """``model`` as a :class:`Probe`: a probe as it is, a network read at its output."""
    if isinstance(model, Probe):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch nn.Module (the extractor model[:14] or the whole "
            f"network) or a cnnlab.Probe, got {type(model).__name__}."
        )
    return Probe(model, "")


def prepare_inputs(model, images, targets) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check and convert the three common arguments.

    ``model`` is a network (its output holds the targets) or a :class:`Probe` (its
    units do). The number of targets is read from a Sequential's final ``nn.Linear``
    when the network ends with one (no forward pass), else from a forward pass of
    one image.

    Returns:
        ``(x, t, n_out)``: float32 (N, C, H, W) normalised images on the model's
        device (ordinary tensors, even when ``images`` was made under inference
        mode), int64 (N,) targets, and the number of units or classes.
    """
    probe = _probe(model)
    images = as_image_batch(images, channels=input_channels(probe.model))
    x = prepare_batch(images, model_device(probe.model), channels_last=False,
                      mean=probe.mean, std=probe.std)
    if x.is_inference():
        x = x.clone()  # an ordinary tensor autograd can record
    net = probe.model
    last = net[-1] if isinstance(net, nn.Sequential) and len(net) else None
    if probe.layer == "" and isinstance(last, nn.Linear):
        n_out = last.out_features
    else:
        with evaluating(net), torch.no_grad():  # eval: no dropout draws from the RNG
            n_out = probe.outputs(x[:1])[0].shape[1]
    return x, _targets(targets, x.shape[0], n_out, probe).to(x.device), n_out


def _targets(targets, n: int, n_out: int, probe: Probe) -> torch.Tensor:
    """One valid target per image as int64 (N,); an int is used for every image.

    The messages call a target what ``probe`` calls its units (:attr:`Probe.kind`)
    and list the class names it knows.
    """
    kind, classes = probe.kind, probe.classes
    valid = f"a {kind} number from 0 to {n_out - 1}"
    if classes is not None:
        if len(classes) != n_out:
            raise ValueError(f"{len(classes)} class names were given for a network with "
                             f"{n_out} outputs: give one name per output.")
        valid += " (" + ", ".join(f"{i} {c}" for i, c in enumerate(classes)) + ")"
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
    value = _probe(model).outputs(x)[0].gather(1, t[:, None])[:, 0]
    (grad,) = torch.autograd.grad(value.sum(), x)
    return grad, value.detach()


def _layout(x: torch.Tensor) -> torch.Tensor:
    """An image batch in the memory layout the lab computes in on its device.

    ``channels_last`` where :func:`cnnlab.device.choose_precision` picks it (CUDA and
    the CPU under ``precision="auto"``): about 25 % faster for these small convs on
    the CPU. The values are the same computation, laid out differently.
    """
    return Runner(x.device).layout(x)


def _to_numpy(maps: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(maps.detach().float().cpu().numpy(), dtype=np.float32)


def _check_sequential(model: nn.Module, what: str) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"{what} needs an nn.Sequential to find a layer by its index, got "
            f"{type(model).__name__}. Name the layer instead (a string from "
            "model.named_modules(), e.g. 'layer4'; cnnlab.layers lists them)."
        )
    return model


def _black(probe: Probe, channels: int, device: torch.device) -> torch.Tensor:
    """The black image (pixel 0) in the probe's normalised units: (C, 1, 1)."""
    return probe.normalize(torch.zeros((channels, 1, 1), dtype=torch.uint8)).to(device)


def _pixel_std(probe: Probe) -> float | torch.Tensor:
    """The normalisation's std: a number, or (C, 1, 1) per channel."""
    return STD if probe.std is None else torch.tensor(probe.std)[:, None, None]


# --- the methods ----------------------------------------------------------------


def gradient(model: nn.Module, images, targets, batch_size: int | None = None) -> np.ndarray:
    """Saliency: the gradient of the target with respect to each pixel.

    ``map[i, y, x] = sum_c d f_t(x_i) / d x_i[c, y, x]``: how fast the target grows as
    pixel (y, x) brightens in all three channels (normalised units).

    Args:
        model: a :class:`cnnlab.Probe` (targets are its units), or a network read at
            its output: the extractor ``model[:14]`` (targets are units) or the
            whole network (targets are classes).
        images: uint8 (N, C, H, W) pixels, or floats already normalised (the course
            network: (N, 3, H, W) in [-1, 1]).
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
    probe = _probe(model)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        maps = [
            _selected_grad(probe, x[s : s + batch_size], t[s : s + batch_size])[0].sum(1)
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
            ``noise / 0.5`` (``noise / std`` for a probe's per-channel std).
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
    probe = _probe(model)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        std = _pixel_std(probe)
        if isinstance(std, float):
            draws = smoothgrad_noise(tuple(x.shape), int(n_samples), noise / std, seed, x.device)
        else:  # one std per channel: unit noise, scaled channel by channel
            draws = smoothgrad_noise(tuple(x.shape), int(n_samples), 1.0, seed, x.device)
            draws = draws * (noise / std).to(x.device)
        per_chunk = max(1, batch_size // n_samples)  # whole images per backward pass
        maps = []
        for s in range(0, len(x), per_chunk):
            xb, eb = x[s : s + per_chunk], draws[s : s + per_chunk]  # (b, ...), (b, S, ...)
            noisy = (xb[:, None] + eb).flatten(0, 1)  # (b * S, 3, H, W)
            grad, _ = _selected_grad(probe, noisy, t[s : s + per_chunk].repeat_interleave(
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
    probe = _probe(model)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        black = _black(probe, x.shape[1], x.device)
        alphas = torch.linspace(0.0, 1.0, steps, device=x.device)
        weights = trapezoid_weights(steps).to(x.device)
        per_chunk = max(1, batch_size // steps)
        maps = []
        for s in range(0, len(x), per_chunk):
            delta = x[s : s + per_chunk] - black  # (b, C, H, W)
            path = black + alphas[None, :, None, None, None] * delta[:, None]  # (b, S, ...)
            grad, _ = _selected_grad(probe, path.flatten(0, 1),
                                     t[s : s + per_chunk].repeat_interleave(steps))
            grad = grad.unflatten(0, (len(delta), steps))
            mean_grad = (weights[None, :, None, None, None] * grad).sum(1)
            maps.append((delta * mean_grad).sum(1))
    return _to_numpy(torch.cat(maps))


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes a gradient only where it is positive and the
    ReLU's output was (guided backpropagation's rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.where(y > 0, grad.clamp(min=0), 0.0)


class _GuidedRelus(TorchFunctionMode):
    """While active, every call of ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` is guided.

    The rule applies to each call, not to each module: a ReLU module used twice (as
    ResNet's ``BasicBlock.relu``) is guided both times, and ReLUs called as functions
    in ``forward`` are guided too. An in-place call (``nn.ReLU(inplace=True)``) gives
    a new tensor instead, which its caller uses. ``calls`` counts the guided calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.relu, torch.relu, torch.Tensor.relu) and isinstance(args[0], torch.Tensor):
            self.calls += 1
            return _GuidedReLU.apply(args[0])
        return func(*args, **kwargs)


def relu_calls(model, images) -> int:
    """How many ReLU calls (modules or functions) run before the probe's layer gives its
    output for ``images`` (N, C, H, W); :func:`guided_backprop` needs at least one.

    Args:
        model: a :class:`cnnlab.Probe`, or a network read at its output.
        images: uint8 pixels, or floats already normalised.
    """
    probe = _probe(model)
    x, _, _ = prepare_inputs(probe, images, 0)
    with evaluating(probe.model), torch.no_grad(), _GuidedRelus() as guided:
        probe.outputs(x)
    return guided.calls


def guided_backprop(model: nn.Module, images, targets, batch_size: int | None = None
                    ) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2015).

    The gradient, except that at every ReLU only positive gradients pass back (and
    only where the ReLU's input was positive). Every call of a ReLU is guided, so a
    ReLU module used twice (ResNet's blocks) and functional ReLUs are handled
    (in-place ``relu_`` calls are not). The maps look like crisp edges, but they
    change little when the weights are randomised
    (:func:`cnnlab.sanity.cascading_randomization`): they show the image more than
    the network. Kept in the lab as the method that fails that test.

    Args:
        model, images, targets, batch_size: as for :func:`gradient`.

    Returns:
        float32 (N, H, W), summed over the colour channels; positive = raises the target.

    Raises:
        ValueError: as for :func:`gradient`, or a model in which no ReLU runs.
    """
    batch_size = _batch(batch_size)
    probe = _probe(model)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        maps = []
        for s in range(0, len(x), batch_size):
            with _GuidedRelus() as guided:
                maps.append(_selected_grad(probe, x[s : s + batch_size],
                                           t[s : s + batch_size])[0].sum(1))
            if guided.calls == 0:
                raise ValueError(
                    "guided_backprop changes the backward pass of the ReLUs, and this "
                    "model has none (no ReLU ran in its forward pass). Use a network "
                    "with ReLUs, such as the course network or its extractor."
                )
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


def _map_layer(probe: Probe, layer, image_size: tuple[int, ...], what: str,
               resampling: bool) -> str:
    """The name of the layer a map method reads, from a name, a module or None.

    None is :func:`cnnlab.probe.last_spatial_layer` on images of ``image_size``, up to
    the probe's layer (a later layer cannot explain its units).
    An integer (the course's old way, for an ``nn.Sequential``) is the index of a
    conv layer, read after the ``nn.ReLU`` that follows it when there is one.
    """
    if layer is None:
        return last_spatial_layer(probe.model, image_size, resampling=resampling,
                                  upto=probe.layer or None)
    if is_whole(layer) and not isinstance(layer, str):
        net = _check_sequential(probe.model, what)
        index = _check_conv_layer(net, layer)
        if index + 1 < len(net) and isinstance(net[index + 1], nn.ReLU):
            index += 1  # the rectified maps
        return str(index)
    return find_layer(probe.model, layer)[0]


def _layer_grad(probe: Probe, layer: str, x: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's output A (B, C, h, w) and the gradient of each image's target by it."""
    units, kept = probe.outputs(_layout(x), [layer])
    acts = kept[layer]
    if acts.ndim != 4:
        raise ValueError(
            f"Layer {layer!r} outputs shape {tuple(acts.shape)}, not feature maps "
            "(N, C, h, w): pick a layer before the network flattens its maps "
            "(cnnlab.layers lists each layer's output shape)."
        )
    value = units.gather(1, t[:, None])
    (grad,) = torch.autograd.grad(value.sum(), acts, allow_unused=True)
    if grad is None:
        raise ValueError(
            f"Layer {layer!r} runs after the probe's layer {probe.layer!r}, so it cannot "
            "explain it: pick a layer that comes before."
        )
    return acts.detach(), grad


def grad_cam(model: nn.Module, images, targets, layer=None,
             batch_size: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at a named layer, upsampled to the image.

    With ``A`` the layer's feature maps and ``w_k`` the mean over positions of
    ``d f_t / d A_k``: ``map = ReLU(sum_k w_k A_k)``, resized bilinearly from (h, w)
    to (H, W) (Captum's ``LayerGradCam`` with ``relu_attributions=True``, then
    ``LayerAttribution.interpolate(..., "bilinear")``).

    Many maps are all zero here: for the lab's units on the course network the
    weighted sum is negative everywhere for a large share of the top images (see
    the lab's benchmark). :func:`contribution_map` is the exact alternative.

    Args:
        model, images, targets, batch_size: as for :func:`gradient`.
        layer: a layer's name (from ``named_modules()``) or the module; None =
            ``LabConfig.gradcam_layer``, whose default None means the last layer
            with a spatial output, pooling and dropout passed over
            (:func:`cnnlab.probe.last_spatial_layer`; ``"9"``, 64 maps of 16x16, in
            the course network; ``"layer4"`` in a ResNet). For an ``nn.Sequential``
            an integer is the index of a conv layer, read after its ReLU.

    Returns:
        float32 (N, H, W), >= 0; larger = that region raises the target more.

    Raises:
        ValueError: as for :func:`gradient`, an unknown layer (LayerError), or a layer
            without feature maps or after the probe's layer.
        TypeError: an integer ``layer`` that is not a conv layer.
    """
    probe = _probe(model)
    images = as_image_batch(images, channels=input_channels(probe.model))
    layer = _map_layer(probe, or_config(layer, "gradcam_layer"), tuple(images.shape[1:]),
                       "grad_cam", resampling=False)
    batch_size = _batch(batch_size)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        maps = []
        for s in range(0, len(x), batch_size):
            acts, grad = _layer_grad(probe, layer, x[s : s + batch_size], t[s : s + batch_size])
            weights = grad.mean(dim=(2, 3), keepdim=True)  # (b, C, 1, 1)
            cam = F.relu((weights * acts).sum(1, keepdim=True))  # (b, 1, h, w)
            maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0])
    return _to_numpy(torch.cat(maps))


def contribution_map(model: nn.Module, images, targets, batch_size: int | None = None,
                     layer=None) -> np.ndarray:
    """Gradient x activation at a named layer: each position's share of the target.

    ``M[y, x] = sum_c A[c, y, x] * d f_t / d A[c, y, x]`` with ``A`` the layer's
    output (Captum's ``LayerGradientXActivation``, summed over channels; HiResCAM).

    Exact where the path from ``A`` to the target is linear: then
    ``M.sum() + b == f_t``, with ``b`` the biases on the way. So for the course
    network's default layer (``"11"``, the (64, 8, 8) maps its Flatten lays out for
    ``Linear(4096, 128)``): ``M.sum() + b_u == z_u`` for unit u, and for a ResNet's
    ``"layer4"`` (avgpool + fc) ``M.sum() + b_c == logit_c``. Through ReLUs the map
    is exact once their on/off pattern is fixed: for a class of the course network
    it sums to the logit minus the biases' share
    (``b_c + sum_u V[c, u] [z_u > 0] b_u``, V the last Linear's weight). Where
    nonlinear layers other than ReLU and max pooling lie between ``A`` and the
    target (BatchNorm in train mode, sigmoids, attention) it is only the first-order
    (Taylor) share.

    Args:
        model, images, targets, batch_size: as for :func:`gradient`.
        layer: a layer's name or module; None = the last layer with a spatial output
            (:func:`cnnlab.probe.last_spatial_layer`, pooling included).

    Returns:
        float32 (N, h, w), (N, 8, 8) for the course network; positive = that region
        raises the target.

    Raises:
        ValueError: as for :func:`gradient`, an unknown layer, or a layer without
            feature maps or after the probe's layer.

    Example:
        >>> contribution_map(model, test.images[:4], 3).shape  # class 3 (cat)
        (4, 8, 8)
    """
    probe = _probe(model)
    images = as_image_batch(images, channels=input_channels(probe.model))
    layer = _map_layer(probe, layer, tuple(images.shape[1:]), "contribution_map",
                       resampling=True)
    batch_size = _batch(batch_size)
    with gradients_on(probe.model):
        x, t, _ = prepare_inputs(probe, images, targets)
        maps = []
        for s in range(0, len(x), batch_size):
            acts, grad = _layer_grad(probe, layer, x[s : s + batch_size], t[s : s + batch_size])
            maps.append((grad * acts).sum(1))
    return _to_numpy(torch.cat(maps))


#: Method name -> function, for :func:`attribute` (the registry names the function).
_FUNCTIONS = {name: globals()[registered(name).function] for name in METHODS}


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
