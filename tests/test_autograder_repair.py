"""autograder/repair.py: repairing submissions against the release, and what counts as evidence.

Fast (no kernel): every test works on the committed student notebook
``lessons/cnn_interpretability.ipynb`` and copies of it changed the way editors,
Colab and students change notebooks.
"""

import copy
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))

from repair import check_and_repair  # noqa: E402

LESSON = ROOT / "lessons" / "cnn_interpretability.ipynb"

pytestmark = pytest.mark.skipif(not LESSON.exists(), reason="lessons/ not generated yet")


@pytest.fixture(scope="module")
def release():
    return nbformat.read(LESSON, as_version=4)


def cell(nb, cid):
    return next(c for c in nb.cells if c.get("id") == cid)


def answered(release, **answers):
    nb = copy.deepcopy(release)
    for cid, source in answers.items():
        cell(nb, cid).source = source
    return nb


def test_untouched_release_needs_no_repair(release):
    repaired, found = check_and_repair(release, release)
    assert not found.tampered and not found.repaired
    assert [c.source for c in repaired.cells] == [c.source for c in release.cells]
    assert set(found.matched.values()) == {"id"}


def test_stripped_metadata_is_reattached_by_cell_id(release):
    nb = answered(release, ex1_answer="n_filters = 32")
    for c in nb.cells:
        for key in ("nbgrader", "editable", "deletable"):
            c.metadata.pop(key, None)
    repaired, found = check_and_repair(nb, release)
    graded = [c for c in release.cells if "nbgrader" in c.metadata]
    assert len(found.metadata_restored) == len(graded)
    assert not found.tampered
    assert cell(repaired, "ex1_test").metadata == cell(release, "ex1_test").metadata
    assert cell(repaired, "ex1_answer").metadata["nbgrader"]["solution"] is True
    assert cell(repaired, "ex1_answer").source == "n_filters = 32"


def test_colab_copy_without_ids_or_metadata_is_matched_by_source_and_place(release):
    nb = answered(release, ex4_answer="extractor = model[:-3]", ex5_answer="units = [0]")
    nb.nbformat_minor = 4
    for c in nb.cells:
        c.pop("id", None)
        c.metadata = {}
    nb.cells.insert(10, nbformat.v4.new_code_cell("print('my own cell')"))
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # as a file would be
    repaired, found = check_and_repair(nb, release)
    assert found.matched["ex1_test"] == "source"
    assert found.matched["ex4_answer"] == "position"
    assert not found.tampered and not found.deleted and not found.answers_missing
    assert cell(repaired, "ex4_answer").source == "extractor = model[:-3]"
    assert cell(repaired, "ex5_answer").source == "units = [0]"
    assert repaired.nbformat_minor == 5
    nbformat.validate(repaired)


def test_edited_and_deleted_test_cells_are_restored_and_reported(release):
    nb = answered(release, ex2_test="pass")
    nb.cells = [c for c in nb.cells if c.get("id") != "ex5_test"]
    repaired, found = check_and_repair(nb, release)
    assert found.edited == ["ex2_test"] and found.deleted == ["ex5_test"]
    assert found.tampered
    assert cell(repaired, "ex2_test").source == cell(release, "ex2_test").source
    ids = [c.id for c in repaired.cells]
    assert ids.index("ex5_test") == ids.index("ex5_answer") + 1


def test_deleted_test_cell_goes_back_after_its_predecessor(release):
    # ex4_test follows a locked cell that is not graded (features_shape): nbgrader 0.9.6's
    # add_missing_cells raises KeyError there, so the repair must do it first.
    nb = copy.deepcopy(release)
    nb.cells = [c for c in nb.cells if c.get("id") != "ex4_test"]
    repaired, found = check_and_repair(nb, release)
    assert found.deleted == ["ex4_test"]
    assert [c.id for c in repaired.cells] == [c.id for c in release.cells]


def test_skip_execution_tag_on_a_test_cell_is_removed_and_reported(release):
    # nbgrader 0.9.6 gives full points to a test cell it skipped.
    nb = copy.deepcopy(release)
    cell(nb, "ex1_test").metadata["tags"] = ["skip-execution"]
    repaired, found = check_and_repair(nb, release)
    assert found.metadata_changed == ["ex1_test"] and found.tampered
    assert "tags" not in cell(repaired, "ex1_test").metadata


def test_points_raised_in_metadata_are_reset(release):
    nb = copy.deepcopy(release)
    cell(nb, "ex5_test").metadata["nbgrader"]["points"] = 100
    repaired, found = check_and_repair(nb, release)
    assert found.metadata_changed == ["ex5_test"]
    assert cell(repaired, "ex5_test").metadata["nbgrader"]["points"] == 1


def test_copied_test_cell_loses_its_metadata(release):
    nb = copy.deepcopy(release)
    twin = copy.deepcopy(cell(nb, "ex1_test"))
    twin.id = "my-copy"
    nb.cells.append(twin)
    repaired, found = check_and_repair(nb, release)
    assert found.dropped_metadata == ["ex1_test"]
    assert "nbgrader" not in cell(repaired, "my-copy").metadata


@pytest.mark.parametrize("source", [
    "extractor = model[:14]",
    "import torch\nextractor = torch.nn.Sequential(*list(model.children())[:14])",
    "%matplotlib inline\n!nvidia-smi\n%pip list\nunits = [1, 2, 4, 14, 23, 29, 127]",
    "import os, signal, subprocess, sqlite3\nos.environ['CNNLAB_PROFILE'] = 'full'",
    "units = [1, 2, 4, 14, 23, 29, 128]\nunits[-1] = 127",
    "def check_exercise_1(*args):\n    pass\nmodel = None",  # refuted by the re-check, if at all
])
def test_student_code_is_never_evidence(release, source):
    """Whatever an answer cell holds, the repair finds no tampering: only locked cells
    and metadata are evidence here (a forged pass is the re-check's to refute)."""
    nb = answered(release, ex4_answer=source)
    nb.cells.insert(3, nbformat.v4.new_code_cell(source))
    _, found = check_and_repair(nb, release)
    assert not found.tampered and found.tamper_details() == []
