"""Accept/reject tables for every exercise check."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.checks import (check_exercise_1, check_exercise_2, check_exercise_4,
                           check_exercise_5, check_exercise_8)
from cnnlab.data import normalize

# --- Exercise 1: number of filters of the first conv layer (32) -----------------------


@pytest.mark.parametrize("answer", [32, np.int64(32), torch.tensor(32)])
def test_exercise_1_accepts(model, answer, capsys):
    check_exercise_1(answer, model)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "answer, words",
    [
        (3, ["channels each filter sees"]),
        (64, ["later conv layer", "model[0]"]),
        (10, ["not the number of filters", "model[0]"]),
        (32.0, ["not a whole number"]),
        (True, ["not a whole number"]),
        (torch.tensor(32.0), ["single whole number"]),
        (None, ["still empty"]),
    ],
)
def test_exercise_1_rejects_without_giving_the_answer(model, answer, words):
    with pytest.raises(AssertionError) as info:
        check_exercise_1(answer, model)
    message = str(info.value)
    for word in words:
        assert word in message
    if not isinstance(answer, (float, torch.Tensor)):
        assert "32" not in message


# --- Exercise 2: the weights of the second conv layer --------------------------------

ACCEPTED_2 = {
    "the parameter": lambda m: m[2].weight,
    ".data": lambda m: m[2].weight.data,
    ".detach()": lambda m: m[2].weight.detach(),
    ".detach().cpu()": lambda m: m[2].weight.detach().cpu(),
    "numpy": lambda m: m[2].weight.detach().numpy(),
    "numpy float64": lambda m: m[2].weight.detach().numpy().astype(np.float64),
    "a clone": lambda m: m[2].weight.detach().clone(),
}


@pytest.mark.parametrize("name", ACCEPTED_2)
def test_exercise_2_accepts(model, name):
    check_exercise_2(ACCEPTED_2[name](model), model)


REJECTED_2 = {
    "first layer": (lambda m: m[0].weight, ["first layer's weights"]),
    "the layer": (lambda m: m[2], ["the layer", "its weights"]),
    "the bias": (lambda m: m[2].bias, ["bias"]),
    "third conv": (lambda m: m[6].weight, ["shape (64, 32, 3, 3)", ".weight"]),
    "made up": (lambda m: torch.zeros(32, 32, 3, 3), ["right shape but not the right values"]),
    "a list": (lambda m: m[2].weight.tolist(), ["list", "tensor"]),
    "nothing": (lambda m: None, ["still empty"]),
}


@pytest.mark.parametrize("name", REJECTED_2)
def test_exercise_2_rejects(model, name):
    make, words = REJECTED_2[name]
    with pytest.raises(AssertionError) as info:
        check_exercise_2(make(model), model)
    for word in words:
        assert word in str(info.value)


# --- Exercise 4: the feature extractor, model[:14] ------------------------------------

ACCEPTED_4 = {
    "model[:14]": lambda m: m[:14],
    "model[0:14]": lambda m: m[0:14],
    "model[:-3]": lambda m: m[:-3],
    "Sequential of children": lambda m: nn.Sequential(*list(m.children())[:14]),
    "deepcopy": lambda m: copy.deepcopy(m[:14]),
}


@pytest.mark.parametrize("name", ACCEPTED_4)
def test_exercise_4_accepts(model, name):
    check_exercise_4(ACCEPTED_4[name](model), model)


REJECTED_4 = {
    "model[:13]": (lambda m: m[:13], ["4096 features", "128 units", "stops before"]),
    "model[:15]": (lambda m: m[:15], ["different values", "goes past the Linear"]),
    "model[:16]": (lambda m: m[:16], ["goes past the Linear"]),
    "model": (lambda m: m, ["10 features", "goes past the first Linear"]),
    "model[13]": (lambda m: m[13], ["failed with RuntimeError", "model[0]"]),
    "model[1:14]": (lambda m: m[1:14], ["failed with RuntimeError", "model[0]"]),
    "model[:9]": (lambda m: m[:9], ["feature maps", "stops too early"]),
    "a string": (lambda m: "model[:14]", ["str", "not a network"]),
    "nothing": (lambda m: None, ["still empty"]),
    "fresh weights": (lambda m: _fresh_extractor(), ["different values"]),
}


def _fresh_extractor():
    from cnnlab.model import build_model

    torch.manual_seed(123)
    return build_model()[:14]


@pytest.mark.parametrize("name", REJECTED_4)
def test_exercise_4_rejects(model, name):
    make, words = REJECTED_4[name]
    with pytest.raises(AssertionError) as info:
        check_exercise_4(make(model), model)
    for word in words:
        assert word in str(info.value)


def test_exercise_4_restores_modes_and_accepts_a_train_mode_extractor(model):
    model.train()
    extractor = model[:14]
    check_exercise_4(extractor, model)  # dropout must not make it fail
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    check_exercise_4(model[:14], model)
    assert not any(m.training for m in model.modules())


# --- Exercise 5: a valid list of units -------------------------------------------------


@pytest.mark.parametrize("units", [[1, 2, 4, 14, 23, 29, 127], [0], range(5), (127, 0)])
def test_exercise_5_accepts(units):
    check_exercise_5(units)


@pytest.mark.parametrize(
    "units, words",
    [
        ([1, 2, 4, 14, 23, 29, 128], ["units[6] = 128 is not a unit of this layer",
                                      "numbered 0 to 127", "Replace 128"]),
        ([], ["empty"]),
        ([1, 2.5], ["units[1] = 2.5", "not a whole number"]),
        ([-3], ["units[0] = -3"]),
    ],
)
def test_exercise_5_rejects_with_the_validate_units_message(units, words):
    with pytest.raises(AssertionError) as info:
        check_exercise_5(units)
    for word in words:
        assert word in str(info.value)


def test_exercise_5_uses_the_layer_size():
    check_exercise_5([9], n_units=10)
    with pytest.raises(AssertionError, match="numbered 0 to 9"):
        check_exercise_5([10], n_units=10)


# --- Exercise 8: a unit's contribution map over the Linear layer's 8x8 input ------------

UNIT_8 = 5


def _exercise_8_case(model, unit=UNIT_8):
    """The reference answer, computed the way the notebook's solution does."""
    model.eval()
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x = normalize(image[None])
        answer = (model[13].weight[unit].view(64, 8, 8) * model[:12](x).view(64, 8, 8)).sum(0)
    return image, answer


def test_exercise_8_reference_sums_back_to_the_unit(model):
    image, answer = _exercise_8_case(model)
    with torch.no_grad():
        value = model[:14](normalize(image[None]))[0, UNIT_8]
    assert torch.isclose(answer.sum() + model[13].bias[UNIT_8], value, atol=1e-5)


ACCEPTED_8 = {
    "tensor": lambda a: a,
    "(1, 8, 8)": lambda a: a[None],
    "numpy": lambda a: a.numpy(),
    "float64": lambda a: a.double(),
    "with grad": lambda a: a.clone().requires_grad_(True),
}


@pytest.mark.parametrize("name", ACCEPTED_8)
def test_exercise_8_accepts(model, name, capsys):
    image, answer = _exercise_8_case(model)
    check_exercise_8(ACCEPTED_8[name](answer), model, image, UNIT_8)
    assert "correct" in capsys.readouterr().out


def test_exercise_8_accepts_a_train_mode_model_and_restores_it(model):
    image, answer = _exercise_8_case(model)
    model.train()
    check_exercise_8(answer, model, image, UNIT_8)
    assert all(m.training for m in model.modules())


def _other_unit_map(model, image):
    return _exercise_8_case(model, unit=UNIT_8 + 1)[1]


def _bias_spread(model, answer):
    return answer + model[13].bias[UNIT_8].detach() / 64


def _unnormalised(model, image):
    with torch.no_grad():
        a = model[:12](image[None].float()).view(64, 8, 8)
        return (model[13].weight[UNIT_8].view(64, 8, 8) * a).sum(0)


def _per_channel(model, image):
    with torch.no_grad():
        a = model[:12](normalize(image[None])).view(64, 8, 8)
        return model[13].weight[UNIT_8].view(64, 8, 8) * a


def _shuffled(answer):
    return answer.flatten()[torch.randperm(64, generator=torch.Generator().manual_seed(0))
                            ].view(8, 8)


REJECTED_8 = {
    "transposed": (lambda m, i, a: a.T, ["rows and columns swapped"]),
    "wrong sign": (lambda m, i, a: -a, ["opposite sign"]),
    "wrong unit": (lambda m, i, a: _other_unit_map(m, i), ["another unit", f"row {UNIT_8}"]),
    "bias folded in": (lambda m, i, a: _bias_spread(m, a), ["bias is already in it"]),
    "bias subtracted": (lambda m, i, a: a - m[13].bias[UNIT_8].detach() / 64,
                        ["does not add up to the unit", "plus the bias"]),
    "not normalised": (lambda m, i, a: _unnormalised(m, i), ["cnnlab.normalize"]),
    "positions moved": (lambda m, i, a: _shuffled(a), ["positions are not right"]),
    "one map per channel": (lambda m, i, a: _per_channel(m, i),
                            ["shape (64, 8, 8)", "one map per input channel"]),
    "flat 4096": (lambda m, i, a: _per_channel(m, i).flatten(),
                  ["shape (4096,)", "one per input of the Linear"]),
    "all units": (lambda m, i, a: torch.zeros(128), ["one number per unit"]),
    "8x7": (lambda m, i, a: a[:, :7], ["shape (8, 7), expected (8, 8)"]),
    "NaN": (lambda m, i, a: a / 0 * 0, ["NaN"]),
    "a list": (lambda m, i, a: a.tolist(), ["list", "tensor"]),
    "nothing": (lambda m, i, a: None, ["still empty"]),
}


@pytest.mark.parametrize("name", REJECTED_8)
def test_exercise_8_rejects_with_the_right_message(model, name):
    image, answer = _exercise_8_case(model)
    make, words = REJECTED_8[name]
    with pytest.raises(AssertionError) as info:
        check_exercise_8(make(model, image, answer), model, image, UNIT_8)
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_exercise_8_never_shows_the_map(model):
    image, answer = _exercise_8_case(model)
    wrong = [make(model, image, answer) for make, _ in REJECTED_8.values()]
    shown = [f"{v:.4f}" for v in answer.flatten().tolist()] + [
        f"{v:.3f}" for v in answer.flatten().tolist()]
    for w in wrong:
        with pytest.raises(AssertionError) as info:
            check_exercise_8(w, model, image, UNIT_8)
        assert not any(s in str(info.value) for s in shown)


def test_exercise_8_bad_setup_is_a_value_error(model):
    image, answer = _exercise_8_case(model)
    with pytest.raises(ValueError, match="unit = 128 is not a unit"):
        check_exercise_8(answer, model, image, 128)
    with pytest.raises(ValueError, match=r"one test image, a uint8 tensor \(3, 32, 32\)"):
        check_exercise_8(answer, model, image[None].repeat(2, 1, 1, 1), UNIT_8)
