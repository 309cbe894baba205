"""The cnnlab course inside nbgrader: what ``nbgrader_config.py`` plugs into it.

Every grading path (``nbgrader autograde``, formgrader's Autograde button,
``cnnlab_grade.py grade``) runs these, so they all grade alike:

- :class:`Repair` (first of ``Autograde.sanitize_preprocessors``): checks the submission
  is the notebook collected, re-attaches stripped nbgrader metadata, restores edited
  locked cells, re-inserts deleted ones, and records what it found (``repair.py``);
- :class:`AddGradingCells` / :class:`DropGradingCells` (around ``Execute``): a cell before
  the set-up that gives the kernel the course's settings back (a student may set
  ``CNNLAB_PROFILE`` above it, as the lesson suggests), the answer export after the last
  cell, cells after the last test skipped; afterwards these are removed and the exported
  answers read from the kernel's runtime folder (``recheck.read_export``);
- :class:`Recheck` (after ``SaveAutoGrades``): the genuine checks on the exported answers
  with the course model; a test passed in the kernel but refuted here gets a manual 0,
  and a 0 this step gave earlier is lifted again when the answer now holds;
- :func:`finish` (``Autograde.post_convert_hook``): removes the runtime folder;
- :class:`HideHiddenTests` (feedback): no hidden test source, nor any output quoting one;
- :class:`AltText` (feedback): every image output gets alternative text (:func:`alt_text`);
- :class:`CnnlabExport` (``ExportApp.plugin_class``): ``nbgrader export`` writes the
  course's CSV (status, exercises, written answers, total, details).

Grading records (repairs, re-check results) go to ``COURSE/grading/status/<student>.json``,
written only by the grading process; the kernel never sees that folder.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import bounds
import inert
import nbformat
import recheck as rc
import sandbox
from nbformat.v4 import new_code_cell
from nbgrader.plugins import ExportPlugin
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor
from repair import Integrity, check_and_repair
from repair import nbgrader_meta as _nbg

#: The course folder (nbgrader_config.py sets it; by default the folder of this file).
COURSE = Path(__file__).resolve().parent
ADDED = "cnnlab_autograder_added"
SKIPPED = "cnnlab_autograder_skipped"
SKIP_TAG = "skip-execution"
PRELUDE_ID = "cnnlab-autograder-settings"

def sha256(path: Path) -> str:
    """SHA-256 of a regular file, in bounded chunks, links not followed."""
    return bounds.sha256_file(path)


#: set by ``cnnlab_grade.py`` to the pid of the grading process that starts nbgrader
GRADER_PID_ENV = "CNNLAB_GRADER_PID"


def exit_with_grader(poll_s: float = 1.0) -> None:
    """In an nbgrader run started by ``cnnlab_grade.py`` (a Dask worker): when that
    process dies (a killed worker, whose task the scheduler gives to another), stop this
    run and the kernel it started at once, instead of grading on, unseen, to the limits.
    An nbgrader command an instructor runs (``$CNNLAB_GRADER_PID`` unset) is left alone.

    A worker killed before this run read its config (nbgrader takes seconds to start)
    has left it to the system already: the run stops at once, before any kernel starts.
    A named process that is alive but not this run's parent did not start it: left alone."""
    import threading

    import psutil

    grader = os.environ.pop(GRADER_PID_ENV, None)
    if not grader or not grader.isdigit():
        return

    def stop():
        for child in psutil.Process().children(recursive=True):  # the kernel's launcher...
            try:
                child.kill()
            except psutil.Error:
                continue
        os._exit(3)

    if os.getppid() != int(grader):
        if not psutil.pid_exists(int(grader)):
            print(f"cnnlab: the grading process {grader} that started this nbgrader run is "
                  "gone (a stopped worker): this run stops; the scheduler grades this "
                  "student again elsewhere.", file=sys.stderr, flush=True)
            stop()
        return

    def watch():
        while os.getppid() == int(grader):
            time.sleep(poll_s)
        stop()

    threading.Thread(target=watch, name="cnnlab-exit-with-grader", daemon=True).start()


def status_path(course, sid: str) -> Path:
    return Path(course) / "grading" / "status" / f"{sid}.json"


def read_status(course, sid: str) -> dict:
    p = status_path(course, sid)
    return json.loads(p.read_text()) if p.exists() else {"student": sid}


def update_status(course, sid: str, **fields) -> dict:
    st = read_status(course, sid)
    st.update(fields)
    p = status_path(course, sid)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1, default=str))
    os.replace(tmp, p)
    return st


def evidence(st: dict) -> list[str]:
    """The evidence of tampering in a graded submission's status, one line each (none for
    honest work): locked cells or metadata changed, tests refuted by the re-check."""
    return Integrity(**st.get("integrity", {})).tamper_details() + [
        f"{t} passed inside the notebook but the re-check outside it fails "
        f"(\"{st['recheck'][t][1][:90]}\"): set to 0" for t in st.get("refuted") or []]


def runtime_dir(course, sid: str) -> Path:
    return Path(course) / "grading" / "runtime" / sid


def _is_test(cell) -> bool:
    m = _nbg(cell)
    return cell.get("cell_type") == "code" and bool(m.get("grade")) and not m.get("solution")


def cell_timeout(settings: dict):
    """``Execute.timeout_func``: long for the instructor's locked cells, short for students'."""
    def timeout(cell) -> int:
        locked = _nbg(cell).get("locked") or cell.get("metadata", {}).get(ADDED)
        return int(settings["instructor_cell_timeout" if locked else "student_cell_timeout"])
    return timeout


_progress: dict = {"path": None}


def note_cell(cell=None, cell_index=None, **_):
    """``Execute.on_cell_execute``: which cell runs (names the one that hangs or kills)."""
    if _progress["path"] is not None and cell is not None:
        name = _nbg(cell).get("grade_id") or cell.get("id")
        _progress["path"].write_text(json.dumps({"cell": name, "index": cell_index}))


# ---------------------------------------------------------------------------
# preprocessors
# ---------------------------------------------------------------------------

class SandboxedExecute(Execute):
    """nbgrader's Execute with the sandbox's kernel manager (Execute would force its own),
    and the output a notebook keeps bounded while it runs (:class:`OutputBudget`)."""

    @property
    def raise_on_iopub_timeout(self) -> bool:
        """nbgrader's rule (a kernel that sends no "idle" within ``iopub_timeout`` of its
        reply is stuck: the notebook stops), except after the output connection refused a
        message over ``max_message_mb``: the "idle" may have gone with it, and the cell's
        reply, with any error, came on its own channel."""
        refused = getattr(getattr(self, "kc", None), "iopub_refused", lambda: False)()
        return self._raise_on_iopub_timeout and not refused

    @raise_on_iopub_timeout.setter
    def raise_on_iopub_timeout(self, value: bool) -> None:
        self._raise_on_iopub_timeout = bool(value)

    _raise_on_iopub_timeout = True

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", sandbox.SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources, *args, **kwargs):
        s = sandbox.load_settings(COURSE)
        self.budget = OutputBudget(int(s["max_cell_output_mb"] * 2**20),
                                   int(s["max_output_mb"] * 2**20))
        try:
            return super().preprocess(nb, resources, *args, **kwargs)
        finally:
            sid = ((resources or {}).get("nbgrader") or {}).get("student")
            if sid:
                update_status(COURSE, sid, output_cut=self.budget.summary(nb) or None)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if hasattr(km, "max_message_bytes"):
            km.max_message_bytes = int(sandbox.load_settings(COURSE)["max_message_mb"] * 2**20)
        return km

    def output(self, outs, msg, display_id, cell_index):
        budget = getattr(self, "budget", None)
        kept = msg if budget is None else budget.take(outs, msg, cell_index)
        return None if kept is None else super().output(outs, kept, display_id, cell_index)

    def _update_display_id(self, display_id, msg):
        """An update of an earlier display (``display(..., display_id=...)``, then
        ``handle.update``) replaces its data: only the growth is counted, and an update
        that does not fit is dropped."""
        budget = getattr(self, "budget", None)
        places = self._display_id_map.get(display_id, {})
        if budget is None or budget.replace(self.nb, places, msg):
            super()._update_display_id(display_id, msg)

    def on_cell_executed(self, **kwargs):
        super().on_cell_executed(**kwargs)  # may append the reply's error: shrink it too
        cell = kwargs["cell"]
        if getattr(self.kc, "reconnect_iopub_if_refused", lambda: False)():
            limit = sandbox.load_settings(COURSE)["max_message_mb"]
            if hasattr(self, "budget"):
                self.budget.lost(kwargs.get("cell_index"))
            cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=(
                f"\n[output lost: the kernel sent a message over the limit of {limit} MB; "
                "the rest of this cell's output was not received]\n")))
        note = getattr(self, "budget", OutputBudget(0, 0)).cells.get(
            kwargs.get("cell_index"), {}).get("note")
        kept = [o for o in cell.get("outputs", []) if o is not note]
        if note is not None and len(kept) < len(cell.outputs):  # the note of what was cut, last
            cell.outputs = kept + [note]
        for k, out in enumerate(cell.get("outputs", [])):
            if out.get("output_type") == "error" and bounds.output_size(out) > 64 << 10:
                cell.outputs[k] = nbformat.from_dict(bounds.shrink(dict(out)))


def _decides(output_type: str, name: str | None = None) -> bool:
    """Whether an output decides a test's points in nbgrader (``determine_grade`` reads
    the first error, stderr stream or result)."""
    return output_type in ("error", "execute_result") or name == "stderr"


class OutputBudget:
    """Bytes of output a notebook keeps, per cell and in all, counted as it runs.

    Past the budget an output is dropped (a stream keeps the part that fits) and the cell
    gets one note saying how much was cut; the first output that decides a test's points
    (error, stderr, result) is kept, shrunk, so the budget never changes a grade."""

    def __init__(self, per_cell: int, total: int):
        self.per_cell, self.total, self.used, self.cells = per_cell, total, 0, {}

    def take(self, outs: list, msg: dict, cell_index: int) -> dict | None:
        """``msg`` to keep (shrunk where needed), or None to drop it."""
        size = bounds.output_size(msg.get("content"))
        cell = self._cell(cell_index)
        room = min(self.per_cell - cell["used"], self.total - self.used)
        if size <= room:
            cell["used"] += size
            self.used += size
            return msg
        content, kept = msg.get("content") or {}, None
        by_cell = self.per_cell - cell["used"] < size
        text = content.get("text")
        if msg.get("msg_type") == "stream" and isinstance(text, str) and room > 0:
            # the start of a stream is kept however the kernel batched it into messages
            kept = {**msg, "content": {**content, "text": text[:room]}}
            cell["used"] += room
            self.used += room
        elif _decides(msg.get("msg_type"), content.get("name")) and not any(
                _decides(o.get("output_type"), o.get("name")) for o in outs):
            kept = {**msg, "content": bounds.shrink(content)}
        cell["dropped"] += size - (bounds.output_size(kept["content"]) if kept else 0)
        self._note(outs, cell, by_cell)
        return kept

    def replace(self, nb, places: dict, msg: dict) -> bool:
        """Whether an update of a display fits, its new data replacing the old in every
        output of ``places`` (cell index -> output indices); counted if so, else noted."""
        size = bounds.output_size({k: v for k, v in (msg.get("content") or {}).items()
                                   if k in ("data", "metadata")})
        growth = {}
        for k, indices in places.items():
            outs = nb.cells[k].outputs
            old = sum(bounds.output_size({"data": outs[i].get("data"),
                                          "metadata": outs[i].get("metadata")})
                      for i in indices if i < len(outs))
            growth[k] = len(indices) * size - old
        cells = {k: self._cell(k) for k in growth}
        over = [k for k, g in growth.items() if cells[k]["used"] + g > self.per_cell]
        if not over and self.used + sum(growth.values()) <= self.total:
            for k, g in growth.items():
                cells[k]["used"] += g
                self.used += g
            return True
        for k in growth:
            cells[k]["dropped"] += size
            self._note(nb.cells[k].outputs, cells[k], k in over)
        return False

    def lost(self, cell_index: int) -> None:
        """A message of the cell refused at the socket (its size never read)."""
        self._cell(cell_index)["lost"] = True

    def _cell(self, cell_index: int) -> dict:
        return self.cells.setdefault(cell_index, {"used": 0, "dropped": 0, "note": None})

    def _note(self, outs: list, cell: dict, per_cell: bool) -> None:
        """The cell's one note of what was cut (added once, updated after)."""
        limit = f"{self.per_cell} bytes per cell" if per_cell else f"{self.total} bytes per notebook"
        if cell["note"] is None or all(o is not cell["note"] for o in outs):
            cell["note"] = nbformat.v4.new_output("stream", name="stdout", text="")
            outs.append(cell["note"])
        cell["note"]["text"] = f"\n[output cut: {cell['dropped']} bytes over the limit of {limit}]\n"

    def summary(self, nb) -> list[dict]:
        """The cells whose output was cut: name, bytes dropped, and whether a message over
        ``max_message_mb`` was refused (its size is never read)."""
        return [{"cell": _nbg(nb.cells[k]).get("grade_id") or nb.cells[k].get("id")
                 or f"cell {k + 1}", "dropped": c["dropped"], **({"lost": True} if c.get(
                     "lost") else {})}
                for k, c in sorted(self.cells.items())
                if (c["dropped"] or c.get("lost")) and k < len(nb.cells)]


class RecordInert(inert.MakeInert):
    """Autograde phase, last: :class:`inert.MakeInert`, and what it changed in the
    student's status (the report names it: the instructor knows what was not shown)."""

    def preprocess(self, nb, resources):
        changes = inert.make_inert(nb)
        for line in changes:
            self.log.warning("made inert: %s", line)
        sid = ((resources or {}).get("nbgrader") or {}).get("student")
        if sid:
            update_status(COURSE, sid, made_inert=changes or None)
        return nb, resources


class Repair(NbGraderPreprocessor):
    """Sanitize phase, first: the collected notebook, repaired against the release."""

    def preprocess(self, nb, resources):
        s = sandbox.load_settings(COURSE)
        sid, a = resources["nbgrader"]["student"], resources["nbgrader"]["assignment"]
        path = Path(resources["metadata"]["path"]) / f"{resources['nbgrader']['notebook']}.ipynb"
        collected = read_status(COURSE, sid).get("collected_sha256")
        if collected and path.exists() and sha256(path) != collected:
            raise RuntimeError(f"{path} changed after it was collected: collect it again")
        if len(nb.cells) > s["max_cells"]:  # a folder filled by nbgrader collect, unchecked
            raise RuntimeError(f"{len(nb.cells)} cells, over the limit of {s['max_cells']}")
        release = nbformat.read(COURSE / "release" / a / f"{a}.ipynb", as_version=4)
        repaired, found = check_and_repair(nb, release)
        update_status(COURSE, sid, integrity=asdict(found), graded_sha256=sha256(path)
                      if path.exists() else None, profile=s["profile"], grading=None,
                      recheck=None, refuted=None, cell_errors=None, output_cut=None,
                      made_inert=None,
                      started_at=time.time())
        return repaired, resources


class AddGradingCells(NbGraderPreprocessor):
    """Autograde phase, before Execute: the settings cell, the export cell, skips."""

    def preprocess(self, nb, resources):
        s = sandbox.load_settings(COURSE)
        sid, a = resources["nbgrader"]["student"], resources["nbgrader"]["assignment"]
        runtime = runtime_dir(COURSE, sid)
        shutil.rmtree(runtime, ignore_errors=True)
        runtime.mkdir(parents=True)
        os.environ[sandbox.RUNTIME_ENV] = str(runtime)
        _progress["path"] = runtime.parent / f"{sid}.progress.json"
        _progress["path"].unlink(missing_ok=True)
        source = nbformat.read(COURSE / "source" / a / f"{a}.ipynb", as_version=4)
        env = {k: v for k, v in sandbox.kernel_environment(s).items() if k.startswith("CNNLAB_")}
        prelude = new_code_cell(f"import os as _os\n_os.environ.update({env!r})\ndel _os",
                                id=PRELUDE_ID, metadata={ADDED: True})
        exports = {ex.test_id: new_code_cell(
            rc.export_source(runtime / f"{ex.test_id}.pt", ex.answers),
            id=f"{rc.EXPORT_CELL_ID}-{ex.test_id}", metadata={ADDED: True})
            for ex in rc.exercises(source)}
        tests = [k for k, c in enumerate(nb.cells) if _is_test(c)]
        for c in nb.cells[tests[-1] + 1:] if tests and not s["run_after_last_test"] else []:
            if c.cell_type == "code" and SKIP_TAG not in c.metadata.get("tags", []):
                c.metadata.setdefault("tags", []).append(SKIP_TAG)
                c.metadata[SKIPPED] = True
        first = next((k for k, c in enumerate(nb.cells)
                      if c.cell_type == "code" and _nbg(c).get("locked")), 0)
        cells = []
        for k, c in enumerate(nb.cells):
            cells += ([prelude] if k == first else []) + [c]
            if _is_test(c) and _nbg(c).get("grade_id") in exports:
                cells.append(exports[_nbg(c)["grade_id"]])
        nb.cells = cells
        return nb, resources


class DropGradingCells(NbGraderPreprocessor):
    """Autograde phase, right after Execute: remove the added cells, take the export."""

    def preprocess(self, nb, resources):
        prefix = rc.EXPORT_CELL_ID + "-"
        tests = [c.id[len(prefix):] for c in nb.cells if c.get("id", "").startswith(prefix)]
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get(ADDED)]
        for c in nb.cells:
            if c.get("metadata", {}).pop(SKIPPED, False):
                c.metadata["tags"] = [t for t in c.metadata["tags"] if t != SKIP_TAG]
                if not c.metadata["tags"]:
                    del c.metadata["tags"]
        runtime = runtime_dir(COURSE, resources["nbgrader"]["student"])
        resources["cnnlab_export"] = {t: rc.read_export(runtime / f"{t}.pt") for t in tests}
        return nb, resources


@functools.cache
def course_model(checkpoint: str):
    from cnnlab import load_checkpoint
    return load_checkpoint(checkpoint, map_location="cpu")[0].eval()


@functools.cache
def _test_images(profile: str, data: str | None, source: str):
    import cnnlab
    from cnnlab.data import load_lab_test
    return load_lab_test(cnnlab.get_config(profile), data, source)


class Recheck(NbGraderPreprocessor):
    """Autograde phase, after SaveAutoGrades: the genuine checks outside the kernel."""

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        s = sandbox.load_settings(COURSE)
        sid, a = resources["nbgrader"]["student"], resources["nbgrader"]["assignment"]
        source = nbformat.read(COURSE / "source" / a / f"{a}.ipynb", as_version=4)
        found = rc.exercises(source)
        need = {n for ex in found for n in ex.args if n not in ex.answers}
        trusted = rc.trusted_values(source, need, course_model(s["checkpoint"]), lambda: (
            _test_images(s["profile"], s.get("data"), s.get("source") or "auto")))
        results = rc.recheck(resources.get("cnnlab_export") or {}, found, trusted, nb)
        earlier = set(read_status(COURSE, sid).get("overrides") or [])  # kept by Repair
        refuted = []
        with Gradebook(resources["nbgrader"]["db_url"]) as gb:
            for ex in found:
                g = gb.find_grade(ex.test_id, resources["nbgrader"]["notebook"], a, sid)
                if g.auto_score and not results[ex.test_id][0]:
                    g.manual_score, g.needs_manual_grade = 0.0, False
                    refuted.append(ex.test_id)
                elif ex.test_id in earlier and g.manual_score == 0:  # lift our own 0
                    g.manual_score, g.needs_manual_grade = None, False
            gb.db.commit()
        update_status(COURSE, sid, recheck=results, overrides=refuted, refuted=refuted,
                      cell_errors=cell_errors(nb), rechecked_at=time.time())
        return nb, resources


def finish(assignment=None, student=None, notebooks=None, **_):
    """``Autograde.post_convert_hook``: the kernel's runtime folder goes."""
    shutil.rmtree(runtime_dir(COURSE, student), ignore_errors=True)


def cell_errors(nb) -> list[dict]:
    out = []
    for k, c in enumerate(nb.cells):
        errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if c.cell_type == "code" and errors:
            out.append({"cell": _nbg(c).get("grade_id") or f"cell {k + 1}",
                        "error": errors[0].get("ename"), "test": _is_test(c),
                        "timed_out": any(o.get("ename") == "CellTimeoutError" for o in errors)})
    return out


class HideHiddenTests(ClearHiddenTests):
    """Feedback: remove hidden tests, their tracebacks, and any output quoting them."""

    enforce_metadata = False

    def preprocess(self, nb, resources):
        hidden = set()
        for c in nb.cells:
            for block in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS",
                                    c.source, flags=re.S):
                hidden |= {ln.strip() for ln in block.splitlines() if len(ln.strip()) >= 8}
        self._hidden = hidden
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        test = self.begin_test_delimeter in cell.source
        if test:
            self._remove_hidden_test_region(cell)
        for k, out in enumerate(cell.get("outputs", [])):
            text = json.dumps(out)
            if test and out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}",
                                    "(the failing test is hidden)"]
            elif any(line in text or json.dumps(line)[1:-1] in text for line in self._hidden):
                cell.outputs[k] = nbformat.v4.new_output(
                    "stream", name="stdout", text="[output removed: it quoted a hidden test]\n")
        return cell, resources


_FIGURE_REPR = re.compile(r"^<Figure: (?P<title>.+)>$", re.S)  # cnnlab's LabFigure
_MARKUP = re.compile(r"(?P<mark>[#*_`>]+)|!?\[(?P<text>[^\]]*)\]\([^)]*\)|<[^>]*>")


def _first_sentence(markdown: str, limit: int = 200) -> str:
    """The first sentence of ``markdown`` as plain text, at most ``limit`` characters."""
    text = " ".join(_MARKUP.sub(lambda m: "" if m["mark"] else m["text"] or " ",
                                markdown).split())
    sentence = re.split(r"(?<=[.!?:])\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit - 1].rstrip() + "…"


def alt_text(output, cell_name: str, context: str) -> str:
    """Alternative text for an image output: its figure's title where its ``text/plain``
    is cnnlab's ``<Figure: title>``, its ``text/plain`` where that is not a bare repr
    (``<Figure size 640x480 with 1 Axes>``), else "Figure of cell NAME: " and the first
    sentence of the text above the cell (``context``)."""
    plain = output.get("data", {}).get("text/plain", "")
    plain = " ".join(("".join(plain) if isinstance(plain, list) else str(plain)).split())
    found = _FIGURE_REPR.match(plain)
    if found:
        return found["title"]
    if plain and not (plain.startswith("<") and plain.endswith(">")):
        return plain
    about = _first_sentence(context)
    return f"Figure of cell {cell_name}" + (f": {about}" if about else "")


def add_alt_text(nb) -> int:
    """Give every image output of ``nb`` without alternative text one (:func:`alt_text`,
    in its metadata, where nbconvert's HTML template reads it); how many were given."""
    given, context = 0, ""
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            context = cell.source
            continue
        name = _nbg(cell).get("grade_id") or cell.get("id") or f"{k + 1}"
        for output in cell.get("outputs", []):
            images = [m for m in output.get("data", {}) if m.startswith("image/")]
            meta = output.setdefault("metadata", {})
            for mime in images:
                entry = meta.setdefault(mime, {})
                if not isinstance(entry, dict) or entry.get("alt") or meta.get("alt"):
                    continue
                entry["alt"] = alt_text(output, name, context)
                given += 1
    return given


class AltText(NbGraderPreprocessor):
    """Feedback: alternative text on every image output (:func:`add_alt_text`), so the
    feedback HTML has no image without it."""

    def preprocess(self, nb, resources):
        add_alt_text(nb)
        return nb, resources


# ---------------------------------------------------------------------------
# the grade table (nbgrader export and cnnlab_grade.py report)
# ---------------------------------------------------------------------------

def _exercise(name: str) -> str:
    m = re.match(r"(ex\d+)_", name)
    return m.group(1) if m else name


def grade_rows(gb, settings: dict, students: list[str] | None = None):
    """(columns, rows): one row per student with status, points, details, notes."""
    from nbgrader.api import MissingEntry

    a = settings["assignment"]
    nb_def = gb.find_notebook(a, a)
    written_ids = {c.name for c in nb_def.solution_cells}
    cells = sorted(nb_def.grade_cells, key=lambda c: (len(_exercise(c.name)), _exercise(c.name)))
    auto = [c for c in cells if c.name not in written_ids]
    written = [c for c in cells if c.name in written_ids]
    sums = {kind: f"{kind}_of_{sum(c.max_score for c in group):g}" for kind, group in
            (("autograded", auto), ("written", written), ("total", cells))}
    columns = ["student", "status", sums["autograded"], *[_exercise(c.name) for c in auto],
               sums["written"], *[_exercise(c.name) for c in written], sums["total"],
               "details", "notes"]
    if students is None:
        students = sorted({s.id for s in gb.students} | {
            p.stem for p in (COURSE / "grading" / "status").glob("*.json")})
    rows = []
    for sid in students:
        st = read_status(COURSE, sid)
        grading = st.get("grading") or {}
        try:
            grades = {g.name: g for g in gb.find_submission_notebook(a, a, sid).grades}
        except MissingEntry:
            grades = {}
        row = {**dict.fromkeys(columns, ""), "student": sid}
        details, notes = [], []
        if grading.get("outcome", "graded") != "graded" or not grades or st.get("recheck") is None:
            row["status"] = "ungradable"
            details.append((grading.get("reason") or "not autograded") + (
                f" (running {grading['cell']})" if grading.get("cell") else ""))
        else:
            points = {c.name: _points(grades[c.name]) for c in cells}
            for c in cells:
                row[_exercise(c.name)] = _fmt(points[c.name])
            for kind, group in (("autograded", auto), ("written", written), ("total", cells)):
                got = [points[c.name] for c in group]
                row[sums[kind]] = _fmt(None if None in got else sum(got))
            details += evidence(st)
            row["status"] = "tampered" if details else "graded"
            notes += Integrity(**st.get("integrity", {})).repair_details()
            errors = st.get("cell_errors") or []
            blank = [e["cell"] for e in errors
                     if e["error"] == "NotImplementedError" and e["cell"].endswith("_answer")]
            notes += ["left blank: " + ", ".join(blank)] if blank else []
            notes += [f"{e['cell']} interrupted at its time limit" if e["timed_out"] else
                      f"{e['cell']} raised {e['error']}" for e in errors
                      if e["timed_out"] or (not e["test"] and e["cell"] not in blank)]
            notes += ["made inert for the instructor's view: " + "; ".join(
                st["made_inert"][:5]) + (" ..." if len(st["made_inert"]) > 5 else "")
                      ] if st.get("made_inert") else []
            notes += [f"output of {c['cell']} cut ({c['dropped']} bytes over the limit"
                      + ("; a message over the size limit refused)" if c.get("lost") else ")")
                      for c in st.get("output_cut") or []]
        row["details"], row["notes"] = (bounds.printable("; ".join(x), 2000)
                                        for x in (details, notes))
        rows.append(row)
    return columns, rows


def _points(g):
    """A grade's points, or None while a person still has to grade it."""
    graded = g.score is not None and not (g.needs_manual_grade and g.manual_score is None)
    return g.score if graded else None


def _fmt(x) -> str:
    return "" if x is None else f"{x:g}"


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


class CnnlabExport(ExportPlugin):
    """``nbgrader export``: the course's grade table (default ``reports/grades.csv``)."""

    def export(self, gradebook) -> None:
        settings = sandbox.load_settings(COURSE)
        columns, rows = grade_rows(gradebook, settings, [str(s) for s in self.student] or None)
        dest = Path(self.to or COURSE / "reports" / "grades.csv")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_csv(dest, columns, rows)
        self.log.info("Wrote %s (%d students)", dest, len(rows))
