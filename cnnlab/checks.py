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
    if isinstance(answer, np.ndarray):
        if answer.dtype == object or not np.issubdtype(answer.dtype, np.number):
            _fail(f"answer is an array of {answer.dtype}; give the weight tensor.")
        answer = torch.from_numpy(np.ascontiguousarray(answer))
    if not isinstance(answer, torch.Tensor):
        _fail(f"answer is a {type(answer).__name__}; give the weights as a tensor "
              "(or a NumPy array).")
    value = answer.detach().cpu()
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
