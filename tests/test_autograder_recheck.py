"""autograder/recheck.py: what is re-checked, from the notebook alone, and how exports are read.

Fast (no kernel, no nbgrader run): the exercises are found in the solution notebook and
in a copy with Section 6's Exercise 8 cells; the trusted inputs are evaluated from the
instructor's cells; exported files are read only when they are plain files.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))

import recheck as rc  # noqa: E402

SOLUTION = ROOT / "solutions" / "cnn_interpretability.ipynb"
pytestmark = pytest.mark.skipif(not SOLUTION.exists(), reason="solutions/ notebook missing")


def _meta(gid, **kw):
    return {"nbgrader": {"grade_id": gid, "schema_version": 3, **kw}}


def with_exercise_8(nb):
    """The solution notebook plus Exercise 8's set-up, answer and test cells."""
    nb.cells += [
        nbformat.v4.new_code_cell("ex8_unit = 3\nex8_index = 7\nex8_image = test.images[ex8_index]",
                                  metadata=_meta("ex8_setup", locked=True)),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\ncontribution = None\n### END SOLUTION",
                                  metadata=_meta("ex8_answer", solution=True)),
        nbformat.v4.new_code_cell(
            "from cnnlab import checks\n\nchecks.check_exercise_8(contribution, model, ex8_image, "
            "ex8_unit)\n### BEGIN HIDDEN TESTS\nassert secret_thing(contribution)\n"
            "### END HIDDEN TESTS", metadata=_meta("ex8_test", grade=True, locked=True, points=2)),
    ]
    return nb


@pytest.fixture(scope="module")
def source():
    return with_exercise_8(nbformat.read(SOLUTION, as_version=4))


def test_exercises_come_from_the_notebook_metadata(source):
    found = {ex.test_id: ex for ex in rc.exercises(source)}
    assert {"ex1_test", "ex2_test", "ex4_test", "ex5_test", "ex8_test"} <= set(found)
    assert found["ex1_test"].answers == ["n_filters"]
    assert found["ex4_test"].args == ["extractor", "model"]
    # units is defined by a locked cell (the broken list) and by the answer: an answer
    assert found["ex5_test"].answers == ["units"]
    assert found["ex8_test"].answers == ["contribution"]
    assert found["ex8_test"].args == ["contribution", "model", "ex8_image", "ex8_unit"]
    assert found["ex8_test"].points == 2
    # Exercises 10-12: the student's code is the answer; the images and units are the
    # instructor's (set-up cells), so only hooked, ranked and gradient come from the kernel
    assert found["ex10_test"].args == ["hooked", "model", "ex10_images"]
    assert found["ex10_test"].answers == ["hooked"]
    assert found["ex11_test"].args == ["ranked", "model", "ex11_images", "ex11_unit", "ex11_k"]
    assert found["ex11_test"].answers == ["ranked"]
    assert found["ex12_test"].args == ["gradient", "model", "ex12_image", "ex12_unit"]
    assert found["ex12_test"].answers == ["gradient"]
    assert all(found[f"ex{n}_test"].points == 2 for n in (10, 11, 12))
    assert sum(ex.points for ex in found.values()) == 13  # 5 + Exercise 8's 2 + 3 x 2


def test_trusted_inputs_are_the_instructors_not_the_kernels(source):
    class Test:
        images = torch.arange(10 * 3 * 4 * 4, dtype=torch.uint8).view(10, 3, 4, 4)

    loads = []
    values = rc.trusted_values(source, {"ex8_image", "ex8_unit"}, model="M",
                               load_test=lambda: loads.append(1) or Test())
    assert values["ex8_unit"] == 3
    assert torch.equal(values["ex8_image"], Test.images[7])
    assert loads == [1]  # the test images are loaded once, only because ex8 needs them
    assert rc.trusted_values(source, set(), model="M", load_test=lambda: 1 / 0) == {}


def test_recheck_runs_the_genuine_checks_on_exported_values(source):
    import cnnlab
    torch.manual_seed(0)
    model = cnnlab.build_model().eval()
    found = [ex for ex in rc.exercises(source) if ex.test_id in ("ex1_test", "ex2_test", "ex5_test")]
    exported = {"ex1_test": {"n_filters": {"kind": "value", "value": 32}},
                "ex2_test": {"conv2_weights": {"kind": "value", "value": model[0].weight.detach()}},
                "ex5_test": None}  # nothing came back
    results = rc.recheck(exported, found, {"model": model}, source)
    assert results["ex1_test"] == (True, "")
    assert results["ex2_test"][0] is False and "first layer" in results["ex2_test"][1]
    assert results["ex5_test"] == (False, "no answers came back from the kernel to re-check")


def _with_answer(nb, grade_id, code):
    """A copy of ``nb`` whose cell ``grade_id`` holds ``code``."""
    import copy

    nb = copy.deepcopy(nb)
    next(c for c in nb.cells if rc.nbgrader_meta(c).get("grade_id") == grade_id).source = code
    return nb


@pytest.mark.parametrize("code, passed", [
    ("n_filters = 32", False),
    ('n_filters = int("32")', False),
    ("n = 32\nn_filters = n", False),
    ("n_filters = None\n%time n_filters = 32", False),
    ("n_filters = None\n%time n_filters = model[0].out_channels", True),
    ("n_filters = model[0].out_channels", True),
    ("n_filters = model[0].weight.shape[0]", True),
    ("import numpy as np\nn_filters = np.int64(model[0].weight.shape[0])", True),
    ("n_filters = len(model[0].weight)", True),
    ("n_filters = int(model[0].out_channels)", True),
])
def test_recheck_refutes_a_typed_in_exercise_1_from_the_submitted_code(source, code, passed):
    """The kernel exported the right number, 32: the submitted answer cell decides, by
    the rule the kernel's check applies (a faked pass of a typed 32 is refuted)."""
    import cnnlab
    torch.manual_seed(0)
    model = cnnlab.build_model().eval()
    found = [ex for ex in rc.exercises(source) if ex.test_id == "ex1_test"]
    exported = {"ex1_test": {"n_filters": {"kind": "value", "value": 32}}}
    ok, message = rc.recheck(exported, found, {"model": model},
                             _with_answer(source, "ex1_answer", code))["ex1_test"]
    assert ok is passed
    if not passed:
        assert "typed in" in message and "32" not in message


def test_recheck_judges_the_last_cell_before_the_test_that_assigns_the_answer(source):
    """A typed number in a later cell, before the test, is what the kernel ran last;
    one after the test is not what the test saw."""
    nb = _with_answer(source, "ex1_answer", "n_filters = model[0].out_channels")
    k = next(i for i, c in enumerate(nb.cells)
             if rc.nbgrader_meta(c).get("grade_id") == "ex1_test")
    after = nbformat.v4.new_code_cell("n_filters = 32")
    nb.cells.insert(k + 1, after)
    assert rc.answer_source(nb, "ex1_test", "n_filters") == "n_filters = model[0].out_channels"
    nb.cells.insert(k, nbformat.v4.new_code_cell("print(n_filters)\nn_filters = 32"))
    assert rc.answer_source(nb, "ex1_test", "n_filters") == "print(n_filters)\nn_filters = 32"
    assert rc.answer_source(nb, "ex1_test", "unassigned") is None


def test_export_cell_and_reader_round_trip(tmp_path):
    names = ["n_filters", "units", "extractor"]
    ns = {"n_filters": 32, "units": (1, 2, 127)}
    import cnnlab
    ns["extractor"] = cnnlab.build_model()[:14]
    exec(rc.export_source(tmp_path / "a.pt", names), ns)
    data = rc.read_export(tmp_path / "a.pt")
    assert data["n_filters"] == {"kind": "value", "value": 32}
    assert rc._value("units", data["units"]) == (1, 2, 127)
    assert data["extractor"]["output"].shape == (2, 128)


def test_reader_follows_no_link_and_no_fifo(tmp_path):
    target = tmp_path / "real.pt"
    torch.save({"n_filters": {"kind": "value", "value": 32}}, target)
    (tmp_path / "link.pt").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "code.pt").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle
    assert rc.read_export(target) is not None
    for name in ("link.pt", "fifo.pt", "code.pt", "missing.pt"):
        assert rc.read_export(tmp_path / name) is None


class _Images:
    """Stands for the test set the grader loads: 300 seeded uint8 images."""
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))


def _exported(ns, names):
    """What the grader's export cell writes for ``names`` of the namespace ``ns``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.pt"
        exec(rc.export_source(path, names), ns)
        return rc.read_export(path)


def test_a_faked_pass_of_each_new_exercise_is_refuted(source):
    """A kernel in which the checks were replaced (so each test cell "passed") exports
    the answers it really has: the genuine checks, on the grader's model and the
    instructor's images, accept the right ones and refute the wrong ones."""
    import numpy as np

    import cnnlab
    from cnnlab.data import normalize

    torch.manual_seed(0)
    model = cnnlab.build_model().eval()
    found = [ex for ex in rc.exercises(source) if ex.test_id in ("ex10_test", "ex11_test",
                                                                  "ex12_test")]
    assert len(found) == 3
    trusted = rc.trusted_values(source, {"ex10_images", "ex11_images", "ex11_unit", "ex11_k",
                                         "ex12_image", "ex12_unit"}, model=model,
                                load_test=lambda: _Images())
    trusted["model"] = model
    assert torch.equal(trusted["ex10_images"], _Images.images[:64])
    assert len(trusted["ex11_images"]) == 256

    with torch.no_grad():
        units = model[:14](normalize(trusted["ex10_images"]))
        activation = model[:14](normalize(trusted["ex11_images"]))[:, trusted["ex11_unit"]]
    x = normalize(trusted["ex12_image"][None]).requires_grad_()
    model[:14](x)[0, trusted["ex12_unit"]].backward()
    k = trusted["ex11_k"]
    right = {"hooked": units, "ranked": list(np.argsort(-activation.numpy())[:k]),
             "gradient": x.grad[0]}
    wrong = {"hooked": units.clamp(min=0), "ranked": np.argsort(activation.numpy())[:k],
             "gradient": 2 * x.grad[0]}

    def judge(ns):
        exported = {ex.test_id: _exported(dict(ns), ex.answers) for ex in found}
        return rc.recheck(exported, found, trusted, source)

    assert judge(right) == {f"ex{n}_test": (True, "") for n in (10, 11, 12)}
    refuted = judge(wrong)
    assert refuted["ex10_test"][0] is False and "after the ReLU" in refuted["ex10_test"][1]
    assert refuted["ex11_test"][0] is False and "likes least" in refuted["ex11_test"][1]
    assert refuted["ex12_test"][0] is False and "pixels in [0, 1]" in refuted["ex12_test"][1]
    # answers the export cannot carry as values are refuted, not trusted
    odd = judge({"hooked": [units], "ranked": torch.topk(activation, k), "gradient": None})
    assert [odd[f"ex{n}_test"][0] for n in (10, 11, 12)] == [False, False, False]
    assert "still empty" in odd["ex12_test"][1]
