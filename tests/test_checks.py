"""Accept/reject tables for every exercise check."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.activations import extract_features, top_k
from cnnlab.attribution import gradient as lab_gradient
from cnnlab.checks import (check_exercise_1, check_exercise_2, check_exercise_4,
                           check_exercise_5, check_exercise_8, check_exercise_10,
                           check_exercise_11, check_exercise_12, typed_in)
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


TYPED_1 = ["n_filters = 32", 'n_filters = int("32")', "n_filters = np.int64(16 * 2)",
           "n_filters = torch.tensor(32)", "n = 32\nn_filters = n",
           "n_filters: int = 32", "n_filters = model[0].out_channels\nn_filters = 32",
           "n_filters = None\n%time n_filters = 32",  # a magic runs the line: seen through
           "%%capture\nn_filters = 32"]
READ_1 = ["n_filters = model[0].out_channels", "n_filters = model[0].weight.shape[0]",
          "n_filters = np.int64(model[0].weight.shape[0])", "n_filters = len(model[0].weight)",
          "n_filters = int(model[0].out_channels)", "conv = model[0]\nn_filters = conv.out_channels",
          "n_filters = None\n%time n_filters = model[0].out_channels",
          "n_filters = None\n### BEGIN SOLUTION\nn_filters = model[0].out_channels\n"
          "### END SOLUTION\nprint('n_filters =', n_filters)"]


@pytest.mark.parametrize("source", TYPED_1 + ["n_filters = None\n%timeit -n 1 -r1 n_filters = 32"])
def test_typed_in_finds_a_number_typed_in(source):
    assert typed_in(source, "n_filters")


@pytest.mark.parametrize("source", READ_1 + ["n_filters = None", "x = 32", "this is not code"])
def test_typed_in_accepts_a_value_read_from_something(source):
    assert not typed_in(source, "n_filters")


@pytest.fixture
def shell(model):
    """A real IPython shell (what a notebook kernel runs), with ``model`` and ``checks``."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns.update(model=model, np=np, torch=torch)
    shell.run_cell("from cnnlab import checks", store_history=True)
    yield shell
    InteractiveShell.clear_instance()


def _run_exercise_1(shell, answer_cell: str):
    """Run the answer cell then the test cell in ``shell``; the test cell's error."""
    assert shell.run_cell(answer_cell, store_history=True).success
    return shell.run_cell("checks.check_exercise_1(n_filters, model)",
                          store_history=True).error_in_exec


@pytest.mark.parametrize("answer_cell", TYPED_1)
def test_exercise_1_in_a_kernel_rejects_a_typed_number_without_the_answer(shell, answer_cell):
    error = _run_exercise_1(shell, answer_cell)
    assert isinstance(error, AssertionError)
    assert "typed in" in str(error) and "attribute" in str(error)
    assert "32" not in str(error) and "out_channels" not in str(error)


@pytest.mark.parametrize("answer_cell", READ_1)
def test_exercise_1_in_a_kernel_accepts_a_value_read_from_the_layer(shell, answer_cell,
                                                                     capsys):
    assert _run_exercise_1(shell, answer_cell) is None
    assert "Exercise 1: correct." in capsys.readouterr().out


def test_exercise_1_in_a_kernel_judges_the_last_cell_that_assigned_the_answer(shell):
    assert shell.run_cell("n_filters = 32", store_history=True).success
    assert shell.run_cell("print(n_filters)", store_history=True).success  # not an answer
    assert isinstance(_run_exercise_1(shell, "x = 1"), AssertionError)
    assert _run_exercise_1(shell, "n_filters = model[0].out_channels") is None


# --- needs: a lesson cell whose inputs an earlier cell did not make -----------------


def _cell(code: str, **variables):
    """Run ``code`` as a notebook cell would, with ``variables`` as the notebook's."""
    from cnnlab import checks

    exec(code, {"checks": checks, **variables})


def test_needs_passes_when_every_name_is_ready():
    _cell('checks.needs("features", "top")', features=np.zeros((2, 3)), top=np.zeros(2))


@pytest.mark.parametrize("variables, named", [
    ({}, ["`features`", "`top`"]),
    ({"features": np.zeros(3)}, ["`top`"]),
    ({"features": np.zeros(3), "top": None}, ["`top`"]),  # an empty answer is not ready
])
def test_needs_says_which_names_are_not_ready_and_what_to_do(variables, named):
    with pytest.raises(AssertionError) as info:
        _cell('checks.needs("features", "top")', **variables)
    message = str(info.value)
    assert all(name in message for name in named)
    assert "not ready yet" in message and "first cell that stopped" in message
    if len(named) == 1:
        assert "`features`" not in message


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


SEED_FIXED = [1, 2, 4, 14, 23, 29, 127]  # the 2019 list, its 128 corrected


@pytest.mark.parametrize("units", [SEED_FIXED, tuple(SEED_FIXED), np.array(SEED_FIXED),
                                   torch.tensor(SEED_FIXED), [np.int64(u) for u in SEED_FIXED]])
def test_exercise_5_accepts_the_seed_list_corrected(units, capsys):
    check_exercise_5(units)
    assert "Exercise 5: correct." in capsys.readouterr().out


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


@pytest.mark.parametrize(
    "units, words",
    [
        ([0], ["1 unit", "7", "only the entry"]),  # any valid list no longer passes
        ([1, 2, 4, 14, 23, 29], ["6 units", "only the entry"]),
        ([1, 2, 4, 14, 23, 29, 0], ["units[6] = 0", "wrote 128 for a reason"]),
        ([1, 2, 4, 14, 23, 29, 126], ["units[6] = 126", "numbered from 0"]),
        ([1, 2, 4, 14, 23, 30, 127], ["units[5] = 30", "keep the other units"]),
        ([0, 1, 3, 13, 22, 28, 127], ["units[0] = 0", "keep the other units"]),
        ([1, 2, 4, 14, 23, 29, 127, 5], ["8 units"]),
    ],
)
def test_exercise_5_wants_the_colleagues_list_with_only_128_corrected(units, words):
    with pytest.raises(AssertionError) as info:
        check_exercise_5(units)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "127" not in message  # the hint does not give the answer


def test_exercise_5_uses_the_layer_size():
    check_exercise_5([1, 2, 4, 14, 23, 29, 199], n_units=200)
    with pytest.raises(AssertionError, match="numbered 0 to 199"):
        check_exercise_5([1, 2, 4, 14, 23, 29, 200], n_units=200)
    with pytest.raises(AssertionError, match="wrote 200 for a reason"):
        check_exercise_5(SEED_FIXED, n_units=200)


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


# --- Exercise 10: the units' layer read by a forward hook -------------------------------


def _rejected(check, answer, *setup, words):
    """``check`` refuses ``answer`` with a hint holding every one of ``words``."""
    with pytest.raises(AssertionError) as info:
        check(answer, *setup)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.fixture
def batch():
    """A small batch of seeded uint8 images standing for ex10_images / ex11_images."""
    return torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(7))


def _run(model, images, layer, hook, *, eval_mode=True, grad=False, network=None):
    """Register ``hook`` on ``model[layer]``, run ``network`` (the whole model) on the
    normalised ``images``, remove the hook."""
    model.train(not eval_mode)
    handle = model[layer].register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            (network or model)(normalize(images))
    finally:
        handle.remove()


def _hook_list(model, images):
    out = []
    _run(model, images, 13, lambda m, i, o: out.append(o.detach()))
    return out[0]


def _hook_dict(model, images):
    store = {}

    def keep(layer, inputs, output):
        store["units"] = output

    _run(model, images, 13, keep, grad=True)  # with gradients, not detached
    return store["units"]


def _hook_closure(model, images):
    def make():
        seen = None

        def hook(layer, inputs, output):
            nonlocal seen
            seen = output.detach().clone()

        return hook, lambda: seen

    hook, read = make()
    _run(model, images, 13, hook)
    return read()


def _hook_extractor_numpy(model, images):
    out = []
    _run(model, images, 13, lambda m, i, o: out.append(o.detach()), network=model[:14])
    return out[0].numpy().astype(np.float64)


def _hook_in_batches(model, images):
    out = []
    model.eval()
    handle = model[13].register_forward_hook(lambda m, i, o: out.append(o.detach()))
    with torch.no_grad():
        for chunk in images.split(10):
            model(normalize(chunk))
    handle.remove()
    return torch.cat(out)


ACCEPTED_10 = {
    "a list": _hook_list,
    "a dict, with gradients": _hook_dict,
    "a closure": _hook_closure,
    "the extractor, numpy float64": _hook_extractor_numpy,
    "in batches, torch.cat": _hook_in_batches,
}


@pytest.mark.parametrize("name", ACCEPTED_10)
def test_exercise_10_accepts_every_honest_hook(model, batch, name, capsys):
    answer = ACCEPTED_10[name](model, batch)
    model.train()
    check_exercise_10(answer, model, batch)
    assert "Exercise 10: correct." in capsys.readouterr().out
    assert all(m.training for m in model.modules())  # modes restored


def _hook_left(model, images):
    out = []
    model.eval()
    model[13].register_forward_hook(lambda m, i, o: out.append(o.detach()))
    with torch.no_grad():
        model(normalize(images))
    return out[0]


def _hook_on(layer, part="output", eval_mode=True, raw=False):
    """A hook on ``model[layer]`` keeping its output (or input), the network run in eval
    or training mode, on normalised images or on the images as stored."""
    def make(model, images):
        out = []
        model.train(not eval_mode)
        handle = model[layer].register_forward_hook(
            lambda m, i, o: out.append((i[0] if part == "input" else o).detach()))
        with torch.no_grad():
            model(images.float() if raw else normalize(images))
        handle.remove()
        return out[0]
    return make


REJECTED_10 = {
    "hook left registered": (_hook_left, ["still registered on model[13]", "handle.remove()"]),
    "after the ReLU": (_hook_on(14), ["after the ReLU", "Linear layer itself"]),
    "the layer's input": (_hook_on(13, "input"), ["enters the layer", "third argument"]),
    "the class scores": (_hook_on(16), ["network's output", "layer of the units"]),
    "not normalised": (_hook_on(13, raw=True), ["cnnlab.normalize"]),
    "training mode": (_hook_on(13, eval_mode=False), ["eval mode", "Dropout"]),
    "the list itself": (lambda m, i: [_hook_list(m, i)], ["list", "torch.cat"]),
    "the dict itself": (lambda m, i: {"out": _hook_list(m, i)}, ["dict"]),
    "half the batch": (lambda m, i: _hook_list(m, i[:12]), ["12 rows", "24 images"]),
    "nothing": (lambda m, i: None, ["still empty"]),
}


@pytest.mark.parametrize("name", REJECTED_10)
def test_exercise_10_rejects_with_the_right_hint(model, batch, name):
    make, words = REJECTED_10[name]
    _rejected(check_exercise_10, make(model, batch), model, batch, words=words)


def test_exercise_10_answer_equals_the_extractors_output(model, batch):
    """The reference is the extractor's output: a hook anywhere else fails."""
    answer = _hook_list(model, batch)
    with torch.no_grad():
        assert torch.allclose(answer, model.eval()[:14](normalize(batch)))
    with pytest.raises(ValueError, match="uint8 tensor"):
        check_exercise_10(answer, model, batch.float())


# --- Exercise 11: one unit's top-K images, ranked by the student ------------------------

UNIT_11, K_11 = 14, 5


def _activation(model, images, unit=UNIT_11):
    return extract_features(model[:14], images, progress=False)[:, unit]


ACCEPTED_11 = {
    "np.argsort of the negated": lambda a: np.argsort(-a, kind="stable")[:K_11],
    "np.argsort reversed": lambda a: np.argsort(a)[::-1][:K_11],
    "torch.topk indices": lambda a: torch.topk(torch.from_numpy(a), K_11).indices,
    "torch.argsort descending": lambda a: torch.argsort(torch.from_numpy(a),
                                                        descending=True)[:K_11],
    "a list of ints": lambda a: [int(i) for i in np.argsort(-a)[:K_11]],
    "a list of numpy ints": lambda a: list(np.argsort(-a)[:K_11]),
    "a column (K, 1)": lambda a: np.argsort(-a)[:K_11, None],
    "sorted() by hand": lambda a: sorted(range(len(a)), key=lambda i: -a[i])[:K_11],
}


@pytest.mark.parametrize("name", ACCEPTED_11)
def test_exercise_11_accepts_every_honest_ranking(model, batch, name, capsys):
    answer = ACCEPTED_11[name](_activation(model, batch))
    check_exercise_11(answer, model, batch, UNIT_11, K_11)
    assert "Exercise 11: correct." in capsys.readouterr().out


def test_exercise_11_reference_is_cnnlab_top_k(model, batch):
    features = extract_features(model[:14], batch, progress=False)
    check_exercise_11(top_k(features, K_11)[:, UNIT_11], model, batch, UNIT_11, K_11)
    with torch.no_grad():  # a ranking of fresh fp32 activations passes too
        fresh = model.eval()[:14](normalize(batch))[:, UNIT_11]
    check_exercise_11(torch.topk(fresh, K_11).indices, model, batch, UNIT_11, K_11)


REJECTED_11 = {
    "ascending": (lambda a: np.argsort(a)[:K_11], ["likes least", "ascending"]),
    "best last": (lambda a: np.argsort(a)[-K_11:], ["wrong order", "descending"]),
    "another unit": (None, ["another unit's best images", f"unit {UNIT_11}"]),
    "topk's pair": (lambda a: torch.topk(torch.from_numpy(a), K_11), ["pair", ".indices"]),
    "the values": (lambda a: np.sort(a)[::-1][:K_11].copy(), ["activations, not image"]),
    "too few": (lambda a: np.argsort(-a)[:K_11 - 2], [f"holds {K_11 - 2} indices"]),
    "beyond the batch": (lambda a: np.argsort(-a)[:K_11] + 100, ["not an image of ex11_images"]),
    "an image twice": (lambda a: np.repeat(np.argsort(-a)[:1], K_11), ["more than once"]),
    "unrelated": (lambda a: np.arange(K_11) + 3, [f"not the {K_11} images"]),
    "nothing": (lambda a: None, ["still empty"]),
}


@pytest.mark.parametrize("name", REJECTED_11)
def test_exercise_11_rejects_with_the_right_hint(model, batch, name):
    make, words = REJECTED_11[name]
    if make is None:  # the ranking of another unit
        answer = np.argsort(-_activation(model, batch, UNIT_11 + 1))[:K_11]
    else:
        answer = make(_activation(model, batch))
    _rejected(check_exercise_11, answer, model, batch, UNIT_11, K_11, words=words)


# --- Exercise 12: the gradient of one unit with respect to the input image ---------------

UNIT_12 = 9


def _leaf(images, index=3):
    return normalize(images[index][None]).requires_grad_()


def _by_backward(model, images, unit=UNIT_12, network=None):
    model.eval()
    x = _leaf(images)
    (network or model[:14])(x)[0, unit].backward()
    return x.grad


def _by_autograd_grad(model, images):
    model.eval()
    x = _leaf(images)
    (g,) = torch.autograd.grad(model[:14](x)[0, UNIT_12], x)
    return g[0]


def _by_hand_normalised(model, images):
    model.eval()
    x = ((images[3].float() / 255 - 0.5) / 0.5).requires_grad_()
    model[:14](x[None])[0, UNIT_12].backward()
    return x.grad.numpy()


ACCEPTED_12 = {
    ".backward() (1, 3, 32, 32)": lambda m, i: _by_backward(m, i),
    "torch.autograd.grad (3, 32, 32)": _by_autograd_grad,
    "normalised by hand, numpy": _by_hand_normalised,
    "channels summed (32, 32)": lambda m, i: _by_backward(m, i)[0].sum(0),
    "the lab's map (1, 32, 32)": lambda m, i: lab_gradient(m[:14], i[3][None], UNIT_12),
}


@pytest.mark.parametrize("name", ACCEPTED_12)
def test_exercise_12_accepts_every_honest_gradient(model, images, name, capsys):
    answer = ACCEPTED_12[name](model, images)
    model.train()
    check_exercise_12(answer, model, images[3], UNIT_12)
    assert "Exercise 12: correct." in capsys.readouterr().out
    assert all(m.training for m in model.modules())


def test_exercise_12_equals_the_labs_gradient_map(model, images):
    summed = _by_backward(model, images)[0].sum(0).numpy()
    np.testing.assert_allclose(summed, lab_gradient(model[:14], images[3][None], UNIT_12)[0],
                               rtol=1e-4, atol=1e-7)


def _wrt_pixels(model, images, scale):
    model.eval()
    p = (images[3].float() / (255 / scale))[None].requires_grad_()
    model[:14](normalize(p / scale))[0, UNIT_12].backward()
    return p.grad


def _raw_fed(model, images):
    model.eval()
    x = images[3][None].float().requires_grad_()
    model[:14](x)[0, UNIT_12].backward()
    return x.grad


def _training_mode(model, images):
    model.train()
    torch.manual_seed(0)
    x = _leaf(images)
    model[:14](x)[0, UNIT_12].backward()
    return x.grad


REJECTED_12 = {
    "another unit": (lambda m, i: _by_backward(m, i, UNIT_12 + 1),
                     ["another unit", f"[0, {UNIT_12}]"]),
    "a class score": (lambda m, i: _by_backward(m, i, 2, network=m), ["class score"]),
    "pixels in [0, 1]": (lambda m, i: _wrt_pixels(m, i, 1), ["pixels in [0, 1]", "normalised"]),
    "pixels in 0..255": (lambda m, i: _wrt_pixels(m, i, 255), ["pixels in 0..255"]),
    "raw image fed": (_raw_fed, ["image as stored", "cnnlab.normalize"]),
    "absolute value": (lambda m, i: _by_backward(m, i).abs(), ["lost its sign"]),
    "training mode": (_training_mode, ["eval mode"]),
    "zeros": (lambda m, i: torch.zeros(3, 32, 32), ["zero everywhere"]),
    "a weight's gradient": (lambda m, i: torch.ones(32, 3, 3, 3), ["shape (32, 3, 3, 3)"]),
    "NaN": (lambda m, i: _by_backward(m, i) / 0 * 0, ["NaN"]),
    "nothing": (lambda m, i: None, ["still empty"]),
}


@pytest.mark.parametrize("name", REJECTED_12)
def test_exercise_12_rejects_with_the_right_hint(model, images, name):
    make, words = REJECTED_12[name]
    _rejected(check_exercise_12, make(model, images), model, images[3], UNIT_12, words=words)
