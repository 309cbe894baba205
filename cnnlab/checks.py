"""Answer checks for the lab's exercises (notebook test cells and the autograder).

Each ``check_exercise_N`` returns quietly (after printing a one-line
confirmation) when the answer is right, and raises ``AssertionError`` with a
hint when it is wrong. The hints point at what to look at; they never state the
answer.
"""

from __future__ import annotations

import ast
import builtins
import numbers
import re
import sys

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


#: The names of answers that must be read from the model, not typed in, by check.
READ_NOT_TYPED = {"check_exercise_1": "n_filters"}

# Names that carry no information from the model: builtins (but those that reach any
# value by name or run code) and the modules a lesson cell may convert with.
_NO_INFORMATION = (set(dir(builtins)) - {"eval", "exec", "compile", "globals", "locals",
                                         "vars", "getattr", "__import__", "open", "input"}
                   ) | {"np", "numpy", "torch", "math"}


def _assignments(tree: ast.AST, name: str) -> list[ast.expr]:
    """The values assigned to ``name`` (``=``, ``: T =``) anywhere in ``tree``, in
    source order."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            found.append(node.value)
    return sorted(found, key=lambda v: (v.lineno, v.col_offset))


#: Magics that run the Python code they are given (``%time n = 32``, ``%%capture``).
_CODE_MAGICS = {"time", "timeit", "capture", "prun"}


def _parse_cell(source: str) -> ast.Module | None:
    """A cell's code as a syntax tree, or None. IPython magics are translated first
    (as the kernel runs them), and the code a magic of ``_CODE_MAGICS`` runs is added
    at the magic's place, so that ``%time n_filters = 32`` assigns like the line alone."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            tree = ast.parse(TransformerManager().transform_cell(source))
        except Exception:  # not Python even for IPython, or no IPython: nothing to judge
            return None
    for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call)]:
        args = call.args
        if getattr(call.func, "attr", None) in ("run_line_magic", "run_cell_magic") and \
                len(args) >= 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                       for a in args) and args[0].value in _CODE_MAGICS:
            # a line magic's options first (%timeit -n 1 -r1 code): then its code
            code = args[-1].value if call.func.attr == "run_cell_magic" else \
                re.sub(r"^\s*(?:-\w+(?:\s+\d+)?\s+)*", "", args[-1].value)
            inner = _parse_cell(code)
            for node in ast.walk(inner) if inner is not None else ():
                if hasattr(node, "lineno"):  # at the magic's place, in their own order
                    node.col_offset = call.col_offset + 1 + node.lineno * 10_000 + node.col_offset
                    node.lineno = call.lineno
            tree.body += inner.body if inner is not None else []
    return tree


def assigns(source: str, name: str) -> bool:
    """Whether the cell code ``source`` assigns ``name``."""
    tree = _parse_cell(source)
    return tree is not None and bool(_assignments(tree, name))


def typed_in(source: str, name: str) -> bool:
    """Whether the cell code ``source`` types the value of ``name`` in, rather than
    reading it from something.

    The last assignment to ``name`` in the cell is judged: it is typed in when its
    expression holds a literal and otherwise only literals, builtins (``int``,
    ``len``...), ``np``, ``torch`` and ``math``, and names the same cell assigns that
    way (``n = 32``; then ``n_filters = n``). ``32``, ``int("32")``, ``np.int64(16 * 2)`` are typed in;
    ``model[0].out_channels``, ``len(model[0].weight)`` or a name set in another cell
    are read. A cell that does not parse or does not assign ``name`` is not judged
    (False).
    """
    tree = _parse_cell(source)
    values = _assignments(tree, name) if tree is not None else []
    if not values:
        return False

    def sources(expr: ast.expr, seen: frozenset) -> list[ast.expr] | None:
        """``expr`` and the values of the names it uses, or None if it reads one."""
        used = [expr]
        for node in ast.walk(expr):
            if not isinstance(node, ast.Name) or node.id in _NO_INFORMATION:
                continue
            earlier = [v for v in _assignments(tree, node.id) if v.lineno <= expr.lineno]
            more = (sources(earlier[-1], seen | {node.id})
                    if earlier and node.id not in seen else None)
            if more is None:
                return None
            used += more
        return used

    used = sources(values[-1], frozenset({name}))
    return used is not None and any(isinstance(n, ast.Constant) and n.value is not None
                                    for e in used for n in ast.walk(e))


def _last_cell_assigning(name: str) -> str | None:
    """In an IPython kernel, the code of the last cell run that assigns ``name``;
    None elsewhere (plain Python) or when no cell did."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    history = getattr(shell, "user_ns", {}).get("In") if shell is not None else None
    return next((s for s in reversed(history or []) if assigns(s, name)), None)


def check_read_not_typed(source: str | None, name: str) -> None:
    """A teaching failure when ``source``, the cell that answers ``name``, types its
    value in (:func:`typed_in`); ``source`` None: nothing to judge.

    Raises:
        AssertionError: the value is typed in.
    """
    if source is not None and typed_in(source, name):
        _fail(f"{name} is typed in as a number. Read it from the layer instead, through "
              "one of its attributes, so that your code still answers for another "
              "network.")


def needs(*names: str) -> None:
    """Stop a lesson cell with a teaching message when a name it uses is not ready: not
    defined, because the cell above that makes it stopped (an answer not written, or not
    right yet), or still None (an answer not written).

    Looks the names up among the calling cell's globals (the notebook's variables).

    Raises:
        AssertionError: naming the names that are not ready, and what to do.

    Example:
        >>> checks.needs("features", "top")  # doctest: +SKIP
    """
    scope = sys._getframe(1).f_globals
    missing = [n for n in names if scope.get(n) is None]
    if missing:
        listed = ", ".join(f"`{n}`" for n in missing)
        one = len(missing) == 1
        _fail(f"{listed} {'is' if one else 'are'} not ready yet: the cell above that makes "
              f"{'it' if one else 'them'} stopped, or an answer it needs is still empty. Go "
              "up to the first cell that stopped with a message, fix what it says, then run "
              "the cells from there down again.")


def check_exercise_1(answer, model: nn.Module) -> None:
    """Exercise 1: the number of filters of the first conv layer.

    Accepts an int, a NumPy integer or a 0-d integer tensor, read from the layer: in
    an IPython kernel, the last cell run that assigns ``n_filters`` must not type it in
    (:func:`check_read_not_typed`; the grader applies the same rule to the submitted
    cell).
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
    name = READ_NOT_TYPED["check_exercise_1"]
    check_read_not_typed(_last_cell_assigning(name), name)
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


def check_exercise_4(extractor, model: nn.Module, quiet: bool = False) -> None:
    """Exercise 4: a feature extractor that ends with the first ``nn.Linear``.

    Runs both on a fixed random batch (2, 3, 32, 32) in eval mode (modes are
    restored) and requires the extractor's output to equal ``model[:idx + 1]``'s,
    where ``idx`` is the first ``nn.Linear``. Any slice or copy computing that is
    accepted. ``quiet``: print nothing when it is right (the lesson's features cell
    checks the extractor before it runs 10,000 images through it).
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
    if not quiet:
        print("Exercise 4: correct.")


#: Exercise 5's broken list (the 2019 lab's): its last entry counts the units from 1.
EXERCISE_5_LIST = (1, 2, 4, 14, 23, 29, N_UNITS)


def check_exercise_5(units, n_units: int = N_UNITS) -> None:
    """Exercise 5: the colleague's list with its invalid entry corrected.

    First the checks of :func:`cnnlab.activations.validate_units`, with its message
    turned into an ``AssertionError``; then the list must be the colleague's,
    ``EXERCISE_5_LIST`` with the other six units unchanged and its last entry (the
    layer's size, counted from 1) replaced by the layer's last unit. Any sequence of
    integers is accepted (list, tuple, NumPy array, tensor). The hints never name
    the answer.
    """
    try:
        given = validate_units(units, n_units)
    except (TypeError, ValueError) as exc:
        raise AssertionError(str(exc)) from None
    wanted = [*EXERCISE_5_LIST[:-1], n_units - 1]
    if len(given) != len(wanted):
        _fail(f"units has {len(given)} unit{'s' * (len(given) != 1)}, but your colleague's "
              f"list has {len(wanted)}: change only the entry the error message named, and "
              "keep the other units as they are.")
    for i, (got, want) in enumerate(zip(given[:-1], wanted[:-1], strict=True)):
        if got != want:
            _fail(f"units[{i}] = {got} is not what your colleague wrote there: change only "
                  "the entry the error message named, and keep the other units as they "
                  "are.")
    if given[-1] != wanted[-1]:
        _fail(f"units[{len(given) - 1}] = {given[-1]} is a valid unit, but your colleague "
              f"wrote {n_units} for a reason: which unit did they mean, in a layer whose "
              "units are numbered from 0?")
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


# --- Exercises 10-12: the student writes the code (a hook, a gradient, a ranking) -------


def _unit_layer(model: nn.Module) -> tuple[int, nn.Module]:
    """(index, layer) of the units: the first ``nn.Linear`` of the course network."""
    return _first(model, nn.Linear)


def _batch_of_images(images, name: str) -> torch.Tensor:
    """The set-up's uint8 image batch (N, 3, H, W), or a ValueError (not the answer's)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"{name} must be a batch of test images, a uint8 tensor (N, 3, H, "
                         f"W) such as test.images[:64], got "
                         f"{getattr(images, 'shape', type(images).__name__)}.")
    return images


def _empty(answer, name: str, what: str) -> None:
    if answer is None or answer is Ellipsis:
        _fail(f"{name} is still empty: replace None (or ...) with {what}.")


def _hooks_left(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that still have forward (pre-)hooks."""
    return [f"model[{name}]" if name.isdigit() else (name or "model")
            for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 arithmetic (and TF32 on a GPU), relative to ``b``'s scale."""
    scale = float(b.abs().max()) + 1e-6
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale))


def check_exercise_10(hooked, model: nn.Module, images) -> None:
    """Exercise 10: the output of the unit layer captured by a forward hook.

    ``hooked`` must equal the extractor's output (N, 128) on ``images`` (normalised,
    in eval mode), and no forward hook may be left on any module of ``model``.
    Accepts a tensor or NumPy array of any float dtype or device, with or without
    gradients. Checks, in order: empty, a hook still registered, a container
    instead of a tensor, the shape (the layer's input, the class scores, another
    batch), then the values (after the ReLU, on the raw image, other values).

    Args:
        hooked: the student's answer.
        model: the trained course network (its modes are restored afterwards).
        images: uint8 (N, 3, 32, 32), the set-up's batch (``ex10_images``).

    Raises:
        AssertionError: the answer is wrong, with a hint.
        ValueError: ``images`` is not a uint8 batch (a problem of the set-up).
    """
    from .data import normalize

    images = _batch_of_images(images, "images")
    _empty(hooked, "hooked", "the tensor your hook captured")
    left = _hooks_left(model)
    if left:
        _fail(f"A forward hook is still registered on {', '.join(left)}: it would run on "
              "every later forward pass of the network. Keep the handle that "
              "register_forward_hook returns and call handle.remove() once the batch has "
              "run. (Hooks from earlier runs of your cell whose handle is lost: restart "
              "the kernel and run the notebook again.)")
    if isinstance(hooked, (list, tuple)):
        _fail(f"hooked is a {type(hooked).__name__} of {len(hooked)} item(s); give the "
              "captured output as one tensor (take it out of the list, or join several "
              "batches with torch.cat).")
    if isinstance(hooked, dict):
        _fail("hooked is a dict; give the tensor stored in it, not the dict itself.")
    answer = _as_float_tensor(hooked, "hooked")
    idx, linear = _unit_layer(model)
    n = images.shape[0]
    x = normalize(images).to(model_device(model))
    with evaluating(model), torch.inference_mode():
        layer_input = model[:idx](x)
        expected = model[: idx + 1](x).double().cpu()
    shape = tuple(answer.shape)
    if shape == tuple(layer_input.shape):
        _fail(f"hooked has shape {shape}: that is what enters the layer (the hook's "
              "second argument). Capture what the layer gives out: the hook's third "
              "argument.")
    if len(shape) == 2 and shape[1] == linear.out_features and shape[0] != n:
        _fail(f"hooked has {shape[0]} rows, but ex10_images holds {n} images: run the "
              "network once on exactly that batch while the hook is registered, and "
              "keep only that run's output.")
    if shape != tuple(expected.shape):
        hint = ("one score per class: that is the network's output. Hook the layer of "
                "the units instead" if shape[-1:] == (model[-1].out_features,) else
                "one row per image, one column per unit of the Linear layer")
        _fail(f"hooked has shape {shape}, expected ({n}, {linear.out_features}): {hint}.")
    if not torch.isfinite(answer).all():
        _fail("hooked holds NaN or infinite values; store the layer's output as it is.")
    if _close(answer, expected):
        print("Exercise 10: correct. Your hook saw what the extractor gives.")
        return
    if _close(answer, expected.clamp(min=0)):
        _fail("hooked is never negative: it was captured after the ReLU that follows "
              "the layer. Register the hook on the Linear layer itself.")
    for raw in (images.float(), images.float() / 255):
        with evaluating(model), torch.inference_mode():
            probe = model[: idx + 1](raw.to(x.device)).double().cpu()
        if _close(answer, probe):
            _fail("hooked was computed on the images as stored, not as the network sees "
                  "them: pass the batch through cnnlab.normalize first.")
    _fail("hooked has the right shape but not the layer's values on these images. Run "
          "the whole network (or the extractor) in eval mode (model.eval(): Dropout "
          "changes values in training mode) on cnnlab.normalize(ex10_images), on the "
          "model's device, with the hook on the Linear layer of the units.")


def _as_indices(answer, name: str) -> torch.Tensor:
    """A student's ranking as a 1-D int64 CPU tensor, or a teaching failure."""
    _empty(answer, name, "the indices of the images")
    if isinstance(answer, tuple) and len(answer) == 2 and all(
            isinstance(a, torch.Tensor) for a in answer):
        _fail(f"{name} is a pair of tensors, as torch.topk returns (values, indices): "
              "keep its .indices only.")
    if isinstance(answer, (list, tuple, range)):
        if not all(isinstance(i, (numbers.Integral, torch.Tensor, np.generic)) for i in answer):
            _fail(f"{name} holds something other than whole numbers; give image indices "
                  "(int).")
        answer = torch.as_tensor(np.array([int(i) for i in answer], dtype=np.int64))
    answer = _numeric_tensor(answer, name, "the indices").detach().cpu()
    if answer.dtype.is_floating_point or answer.dtype == torch.bool or answer.is_complex():
        _fail(f"{name} holds {answer.dtype} values: those look like activations, not "
              "image numbers. Rank the images and keep their indices (argsort gives "
              "indices, sort gives values).")
    if answer.ndim == 2 and 1 in answer.shape:
        answer = answer.reshape(-1)
    if answer.ndim != 1:
        _fail(f"{name} has shape {tuple(answer.shape)}: give one list of image indices "
              "for the one unit, the best image first.")
    return answer.long()


def check_exercise_11(ranked, model: nn.Module, images, unit: int, k: int) -> None:
    """Exercise 11: the indices of the ``k`` images of ``images`` that activate
    ``unit`` most, best first, ranked by the student.

    The reference is :func:`cnnlab.top_k` on :func:`cnnlab.extract_features` of
    ``images`` (the lesson's ``features`` rows for them). Accepts a list, tuple,
    NumPy array or tensor of ``k`` integers; an order that differs only between
    images of (nearly) equal activation passes too.

    Args:
        ranked: the student's answer.
        model: the trained course network.
        images: uint8 (N, 3, 32, 32), the set-up's images (``ex11_images``).
        unit: the unit, 0..127.
        k: how many images, 1..N.

    Raises:
        AssertionError: the answer is wrong, with a hint.
        ValueError: ``images``, ``unit`` or ``k`` is not valid (the set-up's).
    """
    from .activations import check_k, extract_features, feature_extractor, top_k

    images = _batch_of_images(images, "images")
    n = images.shape[0]
    k = check_k(k, n)
    _, linear = _unit_layer(model)
    validate_units(unit, linear.out_features, name="unit")
    answer = _as_indices(ranked, "ranked")
    feats = extract_features(feature_extractor(model), images, progress=False)
    if len(answer) != k:
        _fail(f"ranked holds {len(answer)} indices; keep the best ex11_k = {k}, the best "
              "first.")
    if int(answer.min()) < 0 or int(answer.max()) >= n:
        _fail(f"ranked holds {int(answer.max()) if answer.max() >= n else int(answer.min())}"
              f", which is not an image of ex11_images (0 to {n - 1}). Rank the rows of "
              "those images only, the first rows of features.")
    if len(set(answer.tolist())) != k:
        _fail("ranked names an image more than once; each index must appear once.")
    reference = top_k(feats, k)
    scores = torch.from_numpy(feats[:, unit].astype(np.float64))
    got, best = scores[answer], scores[torch.from_numpy(reference[:, unit])]
    spread = float(scores.max() - scores.min()) + 1e-6
    if torch.equal(answer, torch.from_numpy(reference[:, unit])) or bool(
            ((got - best).abs() <= 1e-3 * spread).all()):
        print("Exercise 11: correct. Your ranking is cnnlab.top_k's.")
        return
    if set(answer.tolist()) == set(reference[:, unit].tolist()):
        _fail("ranked holds the right images in the wrong order: the best first, so "
              "sort by activation from the highest down (descending).")
    lowest = np.argsort(feats[:, unit], kind="stable")[:k]
    if set(answer.tolist()) == set(lowest.tolist()):
        _fail("ranked holds the images the unit likes least: argsort sorts from the "
              "lowest up (ascending). Reverse the order, or sort the negated values, "
              "before keeping the first ones.")
    for other in range(feats.shape[1]):
        if other != unit and set(answer.tolist()) == set(reference[:, other].tolist()):
            _fail(f"ranked holds another unit's best images: rank by unit {unit}, the "
                  f"column ex11_unit of the activations.")
    _fail(f"ranked is not the {k} images that activate unit {unit} most. Take that "
          "unit's activations on ex11_images (one number per image), sort them from the "
          "highest down and keep the indices of the first ex11_k.")


def _unit_input_gradients(model: nn.Module, x: torch.Tensor, units: list[int]
                          ) -> torch.Tensor:
    """d unit / d input of the ``units`` of the first ``Linear`` at one input ``x`` (1, C,
    H, W): float64 (len(units), C, H, W) on the CPU, in eval mode (modes restored)."""
    idx, _ = _unit_layer(model)
    with evaluating(model), torch.inference_mode(False), torch.enable_grad():
        batch = x.detach().clone().expand(len(units), *x.shape[1:]).clone()
        batch.requires_grad_(True)
        out = model[: idx + 1](batch)
        picked = out.gather(1, torch.tensor(units, device=out.device)[:, None])
        (grad,) = torch.autograd.grad(picked.sum(), batch)
    return grad.double().cpu()


def check_exercise_12(gradient, model: nn.Module, image, unit: int) -> None:
    """Exercise 12: the gradient of one unit with respect to the (normalised) input
    image, computed by the student with autograd.

    Accepts the gradient per colour channel, (3, 32, 32) or (1, 3, 32, 32), or
    summed over the channels as the lab's gradient map
    (:func:`cnnlab.attribution.gradient`), (32, 32) or (1, 32, 32); a tensor or NumPy
    array of any float dtype or device. Checks, in order: shape, finite values,
    equality with the reference, then the known slips for a hint (all zero, another
    unit, the pixels in [0, 1] or 0..255 instead of the normalised image, the raw
    image fed to the network, the sign lost, a class score). The messages never
    show the gradient.

    Args:
        gradient: the student's answer.
        model: the trained course network (its modes are restored afterwards).
        image: uint8 (3, 32, 32), the test image (``ex12_image``).
        unit: the unit of ``Linear(4096, 128)``, 0..127.

    Raises:
        AssertionError: the answer is wrong, with a hint.
        ValueError: ``image`` or ``unit`` is not valid (the set-up's).
    """
    from .data import STD, normalize

    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise ValueError(f"image must be one test image, a uint8 tensor (3, H, W) such as "
                         f"test.images[i], got {getattr(image, 'shape', type(image).__name__)}.")
    _, linear = _unit_layer(model)
    validate_units(unit, linear.out_features, name="unit")
    device = model_device(model)
    x = normalize(image[None]).to(device)
    answer = _as_float_tensor(gradient, "gradient")
    c, h, w = x.shape[1:]
    shape = tuple(answer.shape)
    if shape in ((c, h, w), (1, c, h, w)):
        answer, per_channel = answer.reshape(c, h, w), True
    elif shape in ((h, w), (1, h, w)):
        answer, per_channel = answer.reshape(h, w), False
    else:
        _fail(f"gradient has shape {shape}; the gradient with respect to the image has "
              f"the image's shape, ({c}, {h}, {w}) (or its channels summed, ({h}, {w})). "
              "Take it from the input tensor, not from a layer's weights or output.")
    if not torch.isfinite(answer).all():
        _fail("gradient holds NaN or infinite values; compute it by autograd alone.")

    def as_given(grads: torch.Tensor) -> torch.Tensor:  # (..., C, H, W) in the answer's form
        return grads if per_channel else grads.sum(-3)

    reference = as_given(_unit_input_gradients(model, x, [unit])[0])
    if _close(answer, reference):
        print("Exercise 12: correct. Your gradient is the lab's gradient map.")
        return
    if not answer.any():
        _fail("gradient is zero everywhere: the value you differentiated does not depend "
              "on the pixels there. Differentiate the unit itself, the output of the "
              "Linear layer before its ReLU (a negative unit after the ReLU is flat).")
    every = as_given(_unit_input_gradients(model, x, list(range(linear.out_features))))
    if any(_close(answer, every[u]) for u in range(len(every)) if u != unit):
        _fail(f"gradient is another unit's: take element [0, {unit}] (ex12_unit) of the "
              "Linear layer's output before calling backward.")
    for factor, scale_name in ((1 / STD, "[0, 1]"), (1 / (255 * STD), "0..255")):
        if _close(answer, reference * factor):
            _fail(f"gradient is taken with respect to the pixels in {scale_name}, not the "
                  "normalised image the network receives: make the normalised image the "
                  "leaf that requires the gradient (normalize first, then "
                  ".requires_grad_()).")
    for raw in (image.float() / 255, image.float()):
        if _close(answer, as_given(_unit_input_gradients(model, raw[None].to(device),
                                                         [unit])[0])):
            _fail("gradient was computed with the image as stored fed to the network: "
                  "pass it through cnnlab.normalize first (and give it a batch dimension "
                  "with [None]).")
    if _close(answer, reference.abs()) or _close(answer, -reference):
        _fail("gradient has lost its sign: keep it as autograd gives it, positive where "
              "brightening a pixel raises the unit.")
    with evaluating(model), torch.inference_mode(False), torch.enable_grad():
        xc = x.detach().clone().requires_grad_(True)
        scores = model(xc)[0]
        class_grads = [torch.autograd.grad(scores[j], xc, retain_graph=True)[0][0]
                       for j in range(scores.shape[0])]
    for g in class_grads:
        if _close(answer, as_given(g.double().cpu())):
            _fail("gradient is that of a class score (the whole network's output); the "
                  "exercise asks for one unit: stop at the Linear layer of the units.")
    _fail(f"gradient has the right shape but not the values of d unit {unit} / d image. "
          "In eval mode, make the normalised image (with a batch dimension) require "
          "gradients, run it up to the Linear layer of the units, and call backward on "
          "that unit's value (or use torch.autograd.grad).")
