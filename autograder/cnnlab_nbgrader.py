"""The nbgrader side of the cnnlab course: what ``nbgrader_config.py`` plugs into nbgrader.

- :func:`cell_timeout`: a per-cell time limit, long for the instructor's locked cells
  (set-up, plots), short for student cells (answers and any cell a student added).
- :class:`ExportAnswers` / :class:`DropExport`: add, after the notebook's last cell, the
  cell that exports the answers for the independent re-check (see ``recheck.py``), then
  remove it again before the autograded notebook is saved.
- :class:`HideHiddenTests`: in generated feedback, remove the hidden tests from the
  test cells and cut tracebacks in them down to their last line (which holds the
  checks' teaching message), so that no hidden test is shown to the student.
- :func:`load_settings` / :func:`kernel_environment`: the course's settings
  (``cnnlab_course.json``, written by ``cnnlab_grade.py setup``) and the environment
  the grading kernel needs: profile, checkpoint folder, data.

This file is copied into the course folder beside ``nbgrader_config.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nbformat.v4 import new_code_cell
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import Bool, Unicode

from recheck import EXPORT_CELL_ID, export_source

SETTINGS_FILE = "cnnlab_course.json"

#: Defaults when the course has no settings file yet.
DEFAULTS = {
    "course_id": "cnnlab",
    "assignment": "cnn_interpretability",
    "profile": "quick",
    "instructor_cell_timeout": 300,  # s; set-up, plots, t-SNE under the quick profile
    "student_cell_timeout": 60,  # s; an answer is a line or two and a plot
    "submission_timeout": 600,  # s; the whole submission (enforced by cnnlab_grade.py)
    "run_after_last_test": False,  # run the instructor's cells after the last test cell?
}

#: nbclient skips code cells with this tag (``Execute.skip_cells_with_tag``).
SKIP_TAG = "skip-execution"
_SKIPPED = "cnnlab_autograder_skipped"


def load_settings(folder: str | os.PathLike) -> dict:
    """The course settings: ``DEFAULTS`` updated with ``<folder>/cnnlab_course.json``."""
    settings = dict(DEFAULTS)
    path = Path(folder) / SETTINGS_FILE
    if path.exists():
        settings.update(json.loads(path.read_text()))
    settings["course_root"] = str(Path(folder).resolve())
    return settings


def kernel_environment(settings: dict) -> dict[str, str]:
    """Environment variables for the grading kernel (it inherits nbgrader's)."""
    env = {
        "CNNLAB_PROFILE": settings["profile"],
        "MPLBACKEND": "Agg",  # no GUI backend while grading
        "TQDM_DISABLE": "1",  # no progress bars in autograded notebooks
    }
    if settings.get("checkpoints"):
        env["CNNLAB_CHECKPOINTS"] = settings["checkpoints"]
    env["CNNLAB_SOURCE"] = settings.get("source") or "auto"
    if settings.get("data"):
        env["CNNLAB_DATA"] = settings["data"]
    if settings.get("cache"):
        env["CNNLAB_CACHE"] = settings["cache"]
    if settings.get("cnnlab_path"):  # cnnlab imported from a checkout, not installed
        parts = [settings["cnnlab_path"]] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p and p != settings["cnnlab_path"]]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def cell_timeout(settings: dict):
    """``Execute.timeout_func``: seconds allowed for one cell, by who wrote it."""
    instructor = int(settings["instructor_cell_timeout"])
    student = int(settings["student_cell_timeout"])

    def timeout(cell) -> int:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        return instructor if meta.get("locked") else student

    return timeout


def answers_path(course_root: str | os.PathLike, student: str) -> Path:
    """Where the export cell of ``student``'s notebook writes its answers."""
    return Path(course_root) / "cnnlab" / "answers" / f"{student}.pt"


def progress_path(course_root: str | os.PathLike, student: str) -> Path:
    """Where the cell being executed for ``student`` is noted (to name a cell that hangs
    or kills the kernel: nbgrader's log does not say which)."""
    return Path(course_root) / "cnnlab" / "progress" / f"{student}.json"


_progress: dict = {"path": None}


def note_cell(cell=None, cell_index=None, **_):
    """``Execute.on_cell_execute`` hook: record which cell starts running."""
    path = _progress["path"]
    if path is None or cell is None:
        return
    name = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or cell.get("id")
    path.write_text(json.dumps({"cell": name, "index": cell_index, "started": time.time()}))


class ExportAnswers(NbGraderPreprocessor):
    """Append the answer-export cell (autograde phase, before ``Execute``).

    Unless ``run_after_last_test`` is set, the code cells after the last autograded
    test cell are tagged to be skipped: no score depends on them, and in this lab they
    hold the slowest cells (occlusion, t-SNE, the explorers).
    """

    course_root = Unicode(help="The course folder (its cnnlab/answers/ receives the exports)."
                          ).tag(config=True)
    run_after_last_test = Bool(False, help="Also run the code cells after the last test cell."
                               ).tag(config=True)

    def preprocess(self, nb, resources):
        course = self.course_root or os.getcwd()
        student = resources["nbgrader"]["student"]
        path = answers_path(course, student)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        progress = progress_path(course, student)
        progress.parent.mkdir(parents=True, exist_ok=True)
        progress.unlink(missing_ok=True)
        _progress["path"] = progress
        if not self.run_after_last_test:
            tests = [k for k, c in enumerate(nb.cells) if _is_test(c)]
            for c in nb.cells[tests[-1] + 1:] if tests else []:
                tags = c.setdefault("metadata", {}).setdefault("tags", [])
                if c.cell_type == "code" and SKIP_TAG not in tags:
                    tags.append(SKIP_TAG)
                    c.metadata[_SKIPPED] = True
        cell = new_code_cell(export_source(path))
        cell.id = EXPORT_CELL_ID
        nb.cells = [c for c in nb.cells if c.get("id") != EXPORT_CELL_ID] + [cell]
        return nb, resources


class DropExport(NbGraderPreprocessor):
    """Remove the answer-export cell (autograde phase, right after ``Execute``)."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if c.get("id") != EXPORT_CELL_ID]
        for c in nb.cells:
            if c.get("metadata", {}).pop(_SKIPPED, False):
                c.metadata["tags"] = [t for t in c.metadata.get("tags", []) if t != SKIP_TAG]
                if not c.metadata["tags"]:
                    del c.metadata["tags"]
        return nb, resources


def _is_test(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


class HideHiddenTests(ClearHiddenTests):
    """For feedback: drop hidden-test regions and the traceback frames that would quote them."""

    enforce_metadata = False

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and self.begin_test_delimeter in cell.source:
            self._remove_hidden_test_region(cell)
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    last = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
                    out["traceback"] = [last, "(the failing test is hidden)"]
        return cell, resources
