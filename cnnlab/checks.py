"""Answer checks for the lab's exercises (notebook test cells and the autograder).

Each ``check_exercise_N`` returns quietly (after printing a one-line
confirmation) when the answer is right, and raises ``AssertionError`` with a
hint when it is wrong. The hints point at what to look at; they never state the
answer.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from ._inference import evaluating
from .activations import validate_units
from .model import N_UNITS, model_device


def _fail(message: str) -> None:
    raise AssertionError(message)


def _first(model: nn.Module, kind: type) -> tuple[int, nn.Module]:
    for i, layer in enumerate(model.children()):
        if isinstance(layer, kind):
            return i, layer
    raise ValueError(f"The model has no {kind.__name__} layer; pass the course network.")


def _numeric_tensor(answer, name: str, what: str) -> torch.Tensor:
    """``answer`` as a tensor (a NumPy array of numbers is converted), or a teaching
    failure that asks for ``what`` as a tensor."""
    if isinstance(answer, np.ndarray):
        if answer.dtype == object or not np.issubdtype(answer.dtype, np.number):
            _fail(f"{name} is an array of {answer.dtype}; give {what} as a tensor of "
                  "numbers.")
        answer = torch.from_numpy(np.ascontiguousarray(answer))
    if not isinstance(answer, torch.Tensor):
        _fail(f"{name} is a {type(answer).__name__}; give {what} as a tensor "
              "(or a NumPy array).")
    return answer


def check_exercise_1(answer, model: nn.Module) -> None:
    """Exercise 1: the number of filters of the first conv layer.

    Accepts an int, a NumPy integer or a 0-d integer tensor.
    """
    if answer is None or answer is Ellipsis:
        _fail("answer is still empty: replace None (or ...) with your answer, a number.")
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1 or answer.dtype.is_floating_point or answer.dtype == torch.bool:
            _fail(f"answer is a tensor {tuple(answer.shape)} of {answer.dtype}; give a "
                  "single whole number.")
        answer = answer.item()
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, numbers.Integral):
        _fail(f"answer = {answer!r} ({type(answer).__name__}) is not a whole number. "
              "A number of filters is an int, like 7.")
    _, conv = _first(model, nn.Conv2d)
    if answer == conv.out_channels:
        print("Exercise 1: correct.")
        return
    if answer == conv.in_channels:
        _fail(f"{answer} is the number of channels each filter sees (the input's RGB "
              "channels), not the number of filters. Look at the other channel count "
              "printed for model[0].")
    other = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    if answer in other:
        _fail(f"{answer} is the number of filters of a later conv layer. Look at the "
              "first one, model[0].")
    _fail(f"{answer} is not the number of filters of the first conv layer. Print "
          "model[0] or model[0].weight.shape: one of the numbers is the filter count.")


def check_exercise_2(answer, model: nn.Module) -> None:
    """Exercise 2: the weights of the second conv layer, ``model[2].weight``.

    Accepts the parameter itself, ``.data``, ``.detach()``, ``.cpu()`` copies (any
    device; compared after moving to the CPU) or a NumPy array of the same values.
    """
    expected = model[2].weight.detach().cpu()
    if answer is None or answer is Ellipsis:
        _fail("answer is still empty: replace None (or ...) with the weights of the "
              "second conv layer.")
    if isinstance(answer, nn.Module):
        _fail(f"answer is the layer {answer!r} itself; the exercise asks for its weights, "
              "an attribute of the layer.")
    value = _numeric_tensor(answer, "answer", "the weights").detach().cpu()
    first = model[0].weight.detach().cpu()
    if value.shape == first.shape and torch.equal(value.to(first.dtype), first):
        _fail("That is the first layer's weights (model[0]). The second conv layer is "
              "further down the network: print model to find its index.")
    if getattr(model[2], "bias", None) is not None and value.shape == model[2].bias.shape:
        _fail("That looks like a bias vector (one number per filter). The exercise asks "
              "for the weights: 4 dimensions, one small kernel per filter and input channel.")
    if value.shape != expected.shape:
        _fail(f"answer has shape {tuple(value.shape)}, but the weights of the second conv "
              "layer have a different shape. Print model to find the second Conv2d and "
              "take its .weight.")
    if not torch.equal(value.to(expected.dtype), expected):
        _fail("answer has the right shape but not the right values: take the weights "
              "from the trained model itself rather than building a new tensor.")
    print("Exercise 2: correct.")


def check_exercise_4(extractor, model: nn.Module) -> None:
    """Exercise 4: a feature extractor that ends with the first ``nn.Linear``.

    Runs both on a fixed random batch (2, 3, 32, 32) in eval mode (modes are
    restored) and requires the extractor's output to equal ``model[:idx + 1]``'s,
    where ``idx`` is the first ``nn.Linear``. Any slice or copy computing that is
    accepted.
    """
    if extractor is None or extractor is Ellipsis:
        _fail("extractor is still empty: replace None (or ...) with a slice of model.")
    if not isinstance(extractor, nn.Module):
        _fail(f"extractor is a {type(extractor).__name__}, not a network. Build it by "
              "slicing the model, which gives an nn.Sequential.")
    idx, linear = _first(model, nn.Linear)
    device = model_device(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with evaluating(model, extractor), torch.inference_mode():
        expected = model[: idx + 1](x)
        try:
            got, error = extractor(x.to(model_device(extractor))), None
        except Exception as exc:  # the student's extractor fails on images
            got, error = None, exc
        if error is not None:
            first_line = str(error).splitlines()[0] if str(error) else ""
            _fail(f"Running extractor on a batch of images of shape (2, 3, 32, 32) failed "
                  f"with {type(error).__name__}: {first_line}. The extractor must take "
                  "images, so it must start at the first layer, model[0].")
        if not isinstance(got, torch.Tensor):
            _fail(f"extractor returned a {type(got).__name__}, not a tensor of features.")
        got = got.detach().to(device)
        if got.ndim != 2:
            _fail(f"extractor returns shape {tuple(got.shape)}: feature maps, not a "
                  f"vector per image. It stops too early: keep going until the first "
                  "Linear layer.")
        if got.shape[1] != expected.shape[1]:
            n = got.shape[1]
            where = (
                "it stops before the Linear layer" if n > expected.shape[1]
                else "it goes past the first Linear layer"
            )
            _fail(f"extractor's output has {n} features per image, but the first Linear "
                  f"layer has {linear.out_features} units: {where}.")
        if not torch.allclose(got.float(), expected.float(), rtol=1e-5, atol=1e-6):
            _fail("extractor's output has the right size but different values: it goes "
                  "past the Linear layer (the layers after it change the values), or does "
                  "not use the model's trained weights. End exactly at the first Linear "
                  "layer.")
    print("Exercise 4: correct.")


def check_exercise_5(units, n_units: int = N_UNITS) -> None:
    """Exercise 5: a list of unit numbers that are all valid for the layer.

    The same checks as :func:`cnnlab.activations.validate_units`, with its
    message turned into an ``AssertionError``.
    """
    try:
        validate_units(units, n_units)
    except (TypeError, ValueError) as exc:
        raise AssertionError(str(exc)) from None
    print("Exercise 5: correct.")


def _as_float_tensor(answer, name: str) -> torch.Tensor:
    """A student's array or tensor as a float64 CPU tensor, or a teaching failure."""
    if answer is None or answer is Ellipsis:
        _fail(f"{name} is still empty: replace None (or ...) with your answer.")
    answer = _numeric_tensor(answer, name, "the map")
    if answer.dtype == torch.bool or answer.is_complex():
        _fail(f"{name} holds {answer.dtype} values; it must hold real numbers.")
    return answer.detach().cpu().double()


def _exercise_8_reference(model: nn.Module, image, unit: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps (D, C, H, W) of every unit per input channel, the bias (D,), the
    pre-activations (D,), the input feature maps (C, H, W)), all float64 on the CPU."""
    from .data import normalize

    idx, linear = _first(model, nn.Linear)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor) or image.shape[-3:] != (3, 32, 32) or (
        image.ndim == 4 and image.shape[0] != 1) or image.ndim not in (3, 4):
        raise ValueError(
            f"image must be one test image, a uint8 tensor (3, 32, 32) such as "
            f"test.images[i], got {getattr(image, 'shape', type(image).__name__)}."
        )
    device = model_device(model)
    x = image.reshape(1, 3, 32, 32).to(device)
    x = normalize(x) if x.dtype == torch.uint8 else x.float()
    with evaluating(model), torch.inference_mode():
        feature_maps = model[: idx - 1](x)[0].double().cpu()  # (C, H, W): before Flatten
        value = model[: idx + 1](x)[0].double().cpu()  # (D,) the units, before the ReLU
    weight = linear.weight.detach().double().cpu()
    bias = (linear.bias.detach().double().cpu() if linear.bias is not None
            else torch.zeros(linear.out_features, dtype=torch.float64))
    if weight.shape[1] != feature_maps.numel():
        raise ValueError("The Linear layer does not take the flattened feature maps; pass "
                         "the course network.")
    validate_units(unit, linear.out_features, name="unit")
    maps = weight.view(-1, *feature_maps.shape) * feature_maps  # (D, C, H, W)
    return maps, bias, value, feature_maps


def check_exercise_8(contribution, model: nn.Module, image, unit: int) -> None:
    """Exercise 8: one unit's contribution map over the 8x8 input of the Linear layer.

    The unit's value is ``W[unit] . a + b[unit]``, where ``a`` is the flattened
    (64, 8, 8) feature maps. Summing the products ``W[unit] * a`` over the 64
    channels leaves an (8, 8) map whose total plus the bias is the unit's value.

    Accepts an (8, 8) or (1, 8, 8) tensor or NumPy array (any float dtype or
    device, with or without gradients). Checks, in order: shape, finite values,
    the known slips (another unit, the opposite sign, rows and columns swapped,
    the bias folded in, the image not normalised), that its sum plus the bias is
    the unit's value on the image, and that it equals the reference map. The
    messages never show the map.

    Args:
        contribution: the student's map.
        model: the trained course network (its mode is restored afterwards).
        image: uint8 (3, 32, 32), the test image (``test.images[ex8_index]``).
        unit: the unit of ``Linear(4096, 128)``, 0..127.

    Raises:
        AssertionError: the answer is wrong, with a hint.
        ValueError: ``image`` or ``unit`` is not valid (a problem of the set-up,
            not of the answer).
    """
    maps, bias, value, feature_maps = _exercise_8_reference(model, image, unit)
    reference = maps[unit].sum(0)  # (H, W)
    height, width = reference.shape
    channels = feature_maps.shape[0]
    answer = _as_float_tensor(contribution, "contribution")
    shape = tuple(answer.shape)
    if shape == (1, height, width):
        answer = answer[0]
    elif shape != (height, width):
        if shape == (channels, height, width) or shape == (1, channels, height, width):
            hint = (f"that is one map per input channel ({channels} of them). Add them up "
                    "over the channel dimension to get one map.")
        elif answer.numel() == channels * height * width:
            hint = (f"that holds {answer.numel()} numbers, one per input of the Linear "
                    f"layer. Arrange them as ({channels}, {height}, {width}) with .view "
                    "and add them up over the channels.")
        elif answer.numel() == maps.shape[0]:
            hint = ("that has one number per unit of the layer: it looks like the layer's "
                    "output. The exercise asks for one unit's map over its input.")
        else:
            hint = (f"the Linear layer's input is {channels} feature maps of {height}x"
                    f"{width}, and the map has one number per position.")
        _fail(f"contribution has shape {shape}, expected ({height}, {width}): {hint}")
    if not torch.isfinite(answer).all():
        _fail("contribution holds NaN or infinite values: check the arithmetic that "
              "made it (a division?), and compute it from the model's weights and the "
              "image's feature maps only.")

    scale = float(reference.abs().max()) + 1e-6

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale))

    if same(answer, reference):
        print("Exercise 8: correct. Your map plus the bias adds up to the unit's value.")
        return
    others = [u for u in range(maps.shape[0]) if u != unit and same(answer, maps[u].sum(0))]
    if others:
        _fail(f"contribution is the map of another unit, not of unit {unit}: take the "
              f"weights of row {unit} of the Linear layer.")
    if same(answer, -reference):
        _fail("contribution has the opposite sign everywhere. A positive value must mean "
              "that the position raises the unit: multiply the weights by the feature "
              "maps, without a minus sign.")
    if same(answer, reference.T):
        _fail("contribution has its rows and columns swapped. Flatten lays the input out "
              "as (channel, row, column): reshape the weights to (channels, rows, "
              "columns) in that order, with no transpose.")
    gap = float(answer.sum() - reference.sum())
    if abs(gap - float(bias[unit])) <= 1e-3 * (abs(float(bias[unit])) + scale):
        _fail("contribution adds up to the unit's whole value: the bias is already in it. "
              "The bias belongs to no position of the input; leave it out of the map "
              "(the unit's value is the map's sum plus the bias).")
    raw = image if isinstance(image, torch.Tensor) else torch.from_numpy(image)
    if raw.dtype == torch.uint8:
        for unnormalised in (raw.float(), raw.float() / 255):
            probe = _exercise_8_reference(model, unnormalised, unit)  # floats: as given
            if same(answer, probe[0][unit].sum(0)):
                _fail("contribution was computed on the image as stored, not as the "
                      "network sees it: pass the image through cnnlab.normalize first "
                      "(and add a batch dimension with [None]).")
    total = float(answer.sum()) + float(bias[unit])
    if abs(total - float(value[unit])) > 1e-3 * (abs(float(value[unit])) + scale):
        _fail(f"contribution does not add up to the unit: its sum plus the bias of unit "
              f"{unit} is {total:.4f}, but the unit's value on this image is "
              f"{float(value[unit]):.4f}. Multiply the unit's weights by the feature maps "
              "that enter the Linear layer (the model up to the Flatten, in eval mode, "
              "on the normalised image) and sum over the channels only.")
    _fail("contribution adds up to the unit's value, but its positions are not right: "
          "the products of weights and feature maps must stay where they are; sum them "
          "over the channels only, without moving, sorting or smoothing them.")
