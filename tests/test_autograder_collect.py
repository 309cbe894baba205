"""Collection of hostile submission folders, without a kernel (issue 20, item 1 and 3).

A tiny course folder (settings, an instructor notebook holding a secret, a gradebook with
the assignment) and a submissions folder in which every student but two hands in
something that is not a notebook file: links (to the instructor's solution, to another
student, to ``/dev/zero``, dangling), a hard link to the instructor's file, a FIFO, a
device, a folder named like the notebook, a 3 GB sparse file, a notebook of 300,000
cells, a student folder that is itself a link. ``collect`` must take the two honest
notebooks, refuse each other one with its reason, copy no byte of the instructor's, and
stay small in memory and time. Then the report quotes student-controlled text escaped.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from hostile_files import ESC, HOSTILE, make_hostile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))

import bounds  # noqa: E402

A = "cnn_interpretability"
SECRET = "INSTRUCTOR-SECRET-7f3a9c"  # in the instructor's notebook only

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FIFOs, devices: Linux")


def _notebook(text: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
    return nbformat.writes(nb)


def _course(tmp: Path) -> Path:
    course = tmp / "course"
    (course / "source" / A).mkdir(parents=True)
    (course / "source" / A / f"{A}.ipynb").write_text(_notebook(SECRET))
    (course / "cnnlab_course.json").write_text(json.dumps({"course_id": "cnnlab"}))
    for name in ("nbgrader_config.py", "cnnlab_nbgrader.py", "repair.py", "recheck.py",
                 "sandbox.py", "bounds.py"):
        shutil.copy2(ROOT / "autograder" / name, course / name)
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "cnnlab") as gb:
        gb.add_assignment(A)
        gb.add_notebook(A, A)
        gb.add_grade_cell("ex1_test", A, A, max_score=1, cell_type="code")
    return course


def _submissions(tmp: Path, course: Path) -> Path:
    subs = tmp / "submissions"
    for sid in ("alice", "carol"):
        (subs / sid).mkdir(parents=True)
        (subs / sid / f"{A}.ipynb").write_text(_notebook(f"{sid}'s answer"))
    HOSTILE.update(make_hostile(subs, f"{A}.ipynb", course / "source" / A / f"{A}.ipynb",
                                "alice"))
    return subs


COLLECT = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import cnnlab_grade
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
students = cnnlab_grade.collect(Path(sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({"students": students, "seconds": time.perf_counter() - start,
                  "before_mb": before / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collect")
    course = _course(tmp)
    subs = _submissions(tmp, course)
    run = subprocess.run([sys.executable, "-c", COLLECT, str(ROOT / "autograder"), str(course),
                          str(subs)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    return dict(course=course, subs=subs, out=out, stdout=run.stdout)


def _status(course: Path, sid: str) -> dict:
    return json.loads((course / "grading" / "status" / f"{sid}.json").read_text())


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_honest_notebooks_are_collected_among_hostile_ones(collected):
    course, out = collected["course"], collected["out"]
    assert sorted(out["students"]) == sorted(["alice", "carol", *HOSTILE])
    for sid in ("alice", "carol"):
        copy = (course / "submitted" / sid / A / f"{A}.ipynb").read_text()
        assert f"{sid}'s answer" in copy
        assert (course / "grading" / "originals" / f"{sid}.ipynb").read_text() == copy
        st = _status(course, sid)
        assert st["collect_problem"] is None
        assert st["collected_sha256"] == bounds.sha256_file(
            course / "grading" / "originals" / f"{sid}.ipynb")


@pytest.mark.parametrize("sid", list(HOSTILE))
def test_each_hostile_submission_is_refused_with_its_reason(collected, sid):
    course = collected["course"]
    st = _status(course, sid)
    assert HOSTILE[sid][1] in (st["collect_problem"] or ""), st
    assert st["collected_sha256"] is None
    assert not (course / "submitted" / sid).exists()
    assert not (course / "grading" / "originals" / f"{sid}.ipynb").exists()


def test_no_byte_of_the_instructor_is_copied(collected):
    course = collected["course"]
    leaks = [p for p in course.rglob("*") if p.is_file() and "source" not in p.parts
             and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert SECRET not in collected["stdout"]


def test_collection_stays_small_and_quick(collected):
    """A 3 GB sparse file, /dev/zero and 300,000 cells: no gigabytes read or held."""
    out = collected["out"]
    assert out["peak_mb"] - out["before_mb"] < 300, out
    assert out["seconds"] < 20, out
    written = sum(p.stat().st_size for p in collected["course"].rglob("*") if p.is_file())
    assert written < 5 << 20


def test_the_report_quotes_student_text_escaped(collected):
    """A reason naming a file called ESC[1A ESC[2K is printed escaped, in report.txt
    and on the terminal: it cannot erase the lines above it."""
    import cnnlab_grade
    course = collected["course"]
    settings = cnnlab_grade._settings(course)
    outcomes = cnnlab_grade.grade_students(course, settings, list(HOSTILE))
    assert {o["outcome"] for o in outcomes.values()} == {"not-run"}
    _, txt = cnnlab_grade.write_report(course, settings)
    report = txt.read_text()
    line = next(ln for ln in report.splitlines() if ln.startswith("  escapes:"))
    assert "\x1b" not in report and "\\x1b[1A\\x1b[2K" in line
    run = subprocess.run([sys.executable, str(ROOT / "autograder" / "cnnlab_grade.py"),
                          "report", str(course)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "\x1b" not in run.stdout and "\\x1b[1A\\x1b[2K" in run.stdout


@pytest.mark.parametrize("text, shown", [
    ("plain text", "plain text"),
    ("erase\x1b[1A\x1b[2Kline", "erase\\x1b[1A\\x1b[2Kline"),
    ("cr\rbs\x08nl\n", "cr\\rbs\\x08nl\\n"),
    ("bidi \u202eevil\u202c", "bidi \\u202eevil\\u202c"),
    ("zero\u200bwidth, ok: é ü 中", "zero\\u200bwidth, ok: é ü 中"),
])
def test_printable_escapes_control_and_format_characters(text, shown):
    assert bounds.printable(text) == shown
    assert bounds.printable(bounds.printable(text)) == shown  # idempotent


def test_tail_reads_only_the_end(tmp_path):
    log = tmp_path / "log"
    with open(log, "wb") as f:
        f.seek(2 << 30)  # 2 GB of zeros before, sparse
        f.write(b"\nValueError: the end\n")
    text = bounds.tail(log, 4096)
    assert len(text) <= 4096 and text.endswith("ValueError: the end\n")


def test_copy_capped_keeps_the_budget_and_drains_the_rest():
    import io
    src = io.BytesIO(b"h" * 1000 + b"x" * (5 << 20) + b"the end")
    dest = io.BytesIO()
    cut = bounds.copy_capped(src, dest, 1000, "kernel output", keep_tail=7)
    assert cut == 5 << 20
    out = dest.getvalue()
    assert out.startswith(b"h" * 1000) and out.endswith(b"the end") and len(out) < 1200
    assert b"[kernel output: 5242880 bytes cut here" in out
    short = io.BytesIO()
    assert bounds.copy_capped(io.BytesIO(b"abc"), short, 1000) == 0
    assert short.getvalue() == b"abc"


def test_read_submission_refuses_a_file_that_grows(tmp_path):
    """The size is checked while reading, not only by fstat (a FIFO-like or growing file)."""
    path = tmp_path / "a.ipynb"
    path.write_bytes(b"x" * 100)
    assert bounds.read_submission(path, 100) == b"x" * 100
    with pytest.raises(bounds.Refused, match="over the limit"):
        bounds.read_submission(path, 99)
    start = time.perf_counter()
    with pytest.raises(bounds.Refused, match="symbolic link"):
        os.symlink("/dev/zero", tmp_path / "z.ipynb")
        bounds.sha256_file(tmp_path / "z.ipynb")
    assert time.perf_counter() - start < 1


def _zip_with_specials(path: Path) -> None:
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("alice/cnn_interpretability.ipynb", _notebook("alice's answer"))
        link = zipfile.ZipInfo("bob/cnn_interpretability.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("carol/cnn_interpretability.ipynb")
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        z.writestr(fifo, "")
        z.writestr("../escaped.ipynb", "x")
        z.writestr("/tmp/absolute.ipynb", "x")
        z.writestr("dave/bomb.ipynb", bytes(3 << 20))  # 3 MB of zeros, a few kB packed
        z.writestr(f"erin/{ESC}.ipynb", "x")


def _tar_with_specials(path: Path) -> None:
    import io
    import tarfile
    with tarfile.open(path, "w:gz") as tar:
        data = _notebook("alice's answer").encode()
        info = tarfile.TarInfo("alice/cnn_interpretability.ipynb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, kind in (("bob/cnn_interpretability.ipynb", tarfile.SYMTYPE),
                           ("carol/cnn_interpretability.ipynb", tarfile.LNKTYPE),
                           ("dave/cnn_interpretability.ipynb", tarfile.FIFOTYPE),
                           ("erin/cnn_interpretability.ipynb", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
        link = tarfile.TarInfo("frank")  # a folder that is a link, then a file through it
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        tar.addfile(link)
        info = tarfile.TarInfo("frank/cnn_interpretability.ipynb")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))


@pytest.mark.parametrize("make, suffix", [(_zip_with_specials, ".zip"),
                                          (_tar_with_specials, ".tar.gz")])
def test_unpack_writes_regular_files_only(tmp_path, make, suffix):
    archive = tmp_path / f"lms{suffix}"
    make(archive)
    dest = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "autograder" / "cnnlab_grade.py"),
                          "unpack", str(archive), str(dest), "--max-mb", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    made = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert all(not p.is_symlink() and (p.is_dir() or p.is_file()) for p in dest.rglob("*"))
    assert "alice/cnn_interpretability.ipynb" in made
    assert not any(n.startswith(("bob/", "carol/", "dave/")) for n in made), made
    if (dest / "frank").exists():  # the link was not made: its file went into a real folder
        assert (dest / "frank").is_dir() and not (dest / "frank").is_symlink()
    assert not (tmp_path / "escaped.ipynb").exists() and not Path("/tmp/absolute.ipynb").exists()
    assert "\x1b" not in run.stdout and "skipped" in run.stdout
    if suffix == ".zip":
        assert "dave/bomb.ipynb: over the limit of 1.0 MB" in run.stdout
        assert "../escaped.ipynb: its path leaves the folder" in run.stdout
        assert "a symbolic link, not a file" in run.stdout and "FIFO" in run.stdout
    else:
        for phrase in ("a symbolic link", "a hard link", "a device or FIFO"):
            assert phrase in run.stdout


def test_unpack_refuses_what_is_not_an_archive(tmp_path):
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x00junk")
    run = subprocess.run([sys.executable, str(ROOT / "autograder" / "cnnlab_grade.py"),
                          "unpack", str(tmp_path / "x.rar"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "neither a .zip nor a .tar archive" in run.stderr


def _msg(msg_type, **content):
    return {"msg_type": msg_type, "content": content, "header": {"msg_type": msg_type},
            "parent_header": {}, "metadata": {}}


def test_output_budget_cuts_without_changing_a_grade():
    """Per cell and per notebook, counted as messages come; the note says how much was
    cut; the first error of a cell is kept (shortened) so nbgrader still scores it 0."""
    import cnnlab_nbgrader as course_lib
    from nbformat.v4 import output_from_msg
    from nbgrader.utils import determine_grade

    budget = course_lib.OutputBudget(per_cell=100, total=250)
    outs = []

    def send(msg, cell=0, into=None):
        kept = budget.take(outs if into is None else into, msg, cell)
        if kept is not None:
            (outs if into is None else into).append(output_from_msg(kept))
        return kept

    assert send(_msg("stream", name="stdout", text="a" * 60)) is not None
    # a message past the room keeps its start, however the kernel batched the stream
    assert send(_msg("stream", name="stdout", text="B" + "b" * 59))["content"]["text"] == (
        "B" + "b" * 39)
    assert send(_msg("stream", name="stdout", text="c" * 60)) is None
    notes = [o for o in outs if "output cut" in o.get("text", "")]
    assert len(notes) == 1 and "80 bytes over the limit of 100 bytes per cell" in notes[0].text
    assert "".join(o.text for o in outs if o is not notes[0]) == "a" * 60 + "B" + "b" * 39
    big = _msg("error", ename="AssertionError", evalue="e" * 5000, traceback=["t"] * 99)
    error = send(big)
    assert error is not None and len(error["content"]["evalue"]) < 1100
    shortened = bounds.output_size(big["content"]) - bounds.output_size(error["content"])
    assert send(_msg("stream", name="stderr", text="d" * 60)) is None  # the grade is decided
    cell = nbformat.v4.new_code_cell("x", metadata={"nbgrader": {
        "grade": True, "solution": False, "points": 1, "grade_id": "t"}})
    cell.outputs = outs
    assert determine_grade(cell)[0] == 0  # the error still counts
    other = []
    assert len(send(_msg("stream", name="stdout", text="f" * 90), cell=1, into=other)[
        "content"]["text"]) == 90
    assert len(send(_msg("stream", name="stdout", text="f" * 90), cell=2, into=other)[
        "content"]["text"]) == 60  # 250 in all: 100 + 90 + 60
    assert send(_msg("stream", name="stdout", text="g" * 20), cell=3, into=other) is None
    assert "bytes per notebook" in other[-1].text
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", id=f"c{k}")
                                         for k in range(4)])
    assert budget.summary(nb) == [{"cell": "c0", "dropped": 140 + shortened},
                                  {"cell": "c2", "dropped": 30},
                                  {"cell": "c3", "dropped": 20}]


def test_display_updates_are_counted_in_the_budget(tmp_path, monkeypatch):
    """A display made small and then updated many times with large data (``handle.update``)
    keeps within the per-cell budget: updates that do not fit are dropped and noted; an
    update that fits replaces the data as nbclient would. A real kernel runs the cells."""
    import cnnlab_nbgrader as course_lib
    from jupyter_client.manager import AsyncKernelManager
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "cnnlab_course.json").write_text(json.dumps(
        {"max_cell_output_mb": 0.01, "max_output_mb": 1}))  # 10,485 characters a cell
    monkeypatch.setattr(course_lib, "COURSE", tmp_path)
    nb = new_notebook(cells=[
        new_code_cell("from IPython.display import display\n"
                      "h = display('small', display_id=True)\n"
                      "h.update('fits')\n"
                      "for k in range(50):\n"
                      "    h.update('x' * 100_000 + str(k))"),
        new_code_cell("g = display('a', display_id=True)\ng.update('b' * 5000)\nprint('done')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})
    runner = course_lib.SandboxedExecute(kernel_manager_class=AsyncKernelManager,
                                         kernel_name="python3", timeout=120)
    nb, _ = runner.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    first, second = nb.cells[0].outputs, nb.cells[1].outputs
    assert sum(len(json.dumps(o)) for o in first) < 12_000  # not the last 100 kB update
    assert first[0]["data"]["text/plain"] == "'fits'"  # the last update that fitted
    assert "output cut: " in first[-1]["text"] and "bytes per cell" in first[-1]["text"]
    assert second[0]["data"]["text/plain"] == "'" + "b" * 5000 + "'"  # within the budget
    assert "output cut" not in json.dumps(second) and "done" in json.dumps(second)


def _peak_while_graded(tmp_path, monkeypatch, manager) -> tuple:
    """Python's peak memory (tracemalloc) while a real kernel prints 48 MB in one message,
    and the notebook afterwards."""
    import tracemalloc

    import cnnlab_nbgrader as course_lib
    from nbformat.v4 import new_code_cell, new_notebook

    tmp_path.mkdir()
    (tmp_path / "cnnlab_course.json").write_text(json.dumps({"max_message_mb": 1}))
    monkeypatch.setattr(course_lib, "COURSE", tmp_path)
    monkeypatch.setenv("CNNLAB_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = new_notebook(cells=[
        new_code_cell("import sys, time\nsys.stdout.write('x' * (48 << 20))\nsys.stdout.flush()",
                      id="c0"),
        new_code_cell("time.sleep(1)\nprint('still talking')", id="c1"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})
    runner = course_lib.SandboxedExecute(kernel_manager_class=manager, kernel_name="python3",
                                         timeout=60, iopub_timeout=2, interrupt_on_timeout=True)
    tracemalloc.start()
    try:
        nb, _ = runner.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
        return tracemalloc.get_traced_memory()[1], nb, runner
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_a_message_over_the_limit_never_reaches_the_grader(tmp_path, monkeypatch):
    """One ``write`` of 48 MB is one kernel message: the grader's client refuses it at
    the socket (``max_message_mb``), so the grader's memory never holds it, and the kernel
    goes on being heard. The same notebook through a plain client holds it all."""
    import sandbox
    from jupyter_client.manager import AsyncKernelManager

    peak, nb, runner = _peak_while_graded(tmp_path / "bounded", monkeypatch, sandbox.SandboxKernelManager)
    assert peak < 16 << 20, peak >> 20
    assert "x" * 1000 not in json.dumps(nb.cells[0].outputs)
    assert "output lost: the kernel sent a message over the limit of 1 MB" in json.dumps(
        nb.cells[0].outputs)
    assert "still talking" in nb.cells[1].outputs[0]["text"]  # heard again
    assert runner.budget.summary(nb) == [{"cell": "c0", "dropped": 0, "lost": True}]
    plain, _, _ = _peak_while_graded(tmp_path / "plain", monkeypatch, AsyncKernelManager)
    assert plain > 48 << 20, plain >> 20  # the reference: the whole message, at least once


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_a_kernel_deaf_to_interrupts_still_stops_the_notebook(tmp_path, monkeypatch):
    """The counter-case of the refused message: a kernel that ignores the interrupt sends
    no "idle", and with no refused message nbgrader's rule holds (the notebook stops
    there, and the student is reported as not stopping), not a wait on the next cell."""
    import cnnlab_nbgrader as course_lib
    import sandbox
    from nbclient.exceptions import CellTimeoutError
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "cnnlab_course.json").write_text(json.dumps({}))
    monkeypatch.setattr(course_lib, "COURSE", tmp_path)
    monkeypatch.setenv("CNNLAB_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = new_notebook(cells=[new_code_cell(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.01)")], metadata={"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}})
    runner = course_lib.SandboxedExecute(kernel_manager_class=sandbox.SandboxKernelManager,
                                         kernel_name="python3", timeout=2, iopub_timeout=2,
                                         interrupt_on_timeout=True)
    start = time.monotonic()
    with pytest.raises(CellTimeoutError, match="Timeout waiting for IOPub output"):
        runner.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert time.monotonic() - start < 30


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_the_solution_runs_at_setup_in_this_python_whatever_python3_names(tmp_path):
    """Setup's solution run (the saved results) starts its kernel from a kernelspec of its
    own naming this interpreter. The caller's JUPYTER_PATH, here holding a "python3" that
    is another program, is replaced for the run. The system's own kernel folders are not
    tested here: the test cannot write to them."""
    import cnnlab_grade

    elsewhere = tmp_path / "elsewhere" / "kernels" / "python3"
    elsewhere.mkdir(parents=True)
    (elsewhere / "kernel.json").write_text(json.dumps(
        {"argv": ["/bin/false", "{connection_file}"], "display_name": "not this Python",
         "language": "python"}))
    (tmp_path / "run").mkdir()
    notebook = tmp_path / "run" / "solution.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys\nopen('python.txt', 'w').write(sys.executable + ' ' + os.environ['HOME'])")]),
        notebook)
    env = {"PATH": os.environ["PATH"], "JUPYTER_PATH": str(tmp_path / "elsewhere")}
    assert cnnlab_grade.run_outside_sandbox(notebook, env, 60, 120) is None
    assert (tmp_path / "run" / "python.txt").read_text() == f"{sys.executable} {tmp_path / 'run'}"
    notebook.write_text(notebook.read_text().replace("import os", "import os; raise SystemExit(3)"))
    assert cnnlab_grade.run_outside_sandbox(notebook, env, 60, 120)  # a failure is said


GRADER = """
import os, subprocess, sys, time
# the grading worker: starts "nbgrader" with its pid named, then waits to be killed
child = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]], env={
    **os.environ, "CNNLAB_GRADER_PID": str(os.getpid())})
if sys.argv[2:] != ["late"]:
    print(child.pid, flush=True)
time.sleep(600)
"""
NBGRADER = f"""
import os, subprocess, sys, time
sys.path.insert(0, {str(ROOT / "autograder")!r})
import cnnlab_nbgrader
if sys.argv[1:] == ["late"]:  # its config loads after the worker is gone
    print(os.getpid(), flush=True)
    while os.getppid() == int(os.environ["CNNLAB_GRADER_PID"]):  # not os.getppid() read
        time.sleep(0.05)  # here: the worker may be gone already
cnnlab_nbgrader.exit_with_grader(poll_s=0.1)
kernel = subprocess.Popen(["sleep", "600"], start_new_session=True)  # a kernel, its own session
print(kernel.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("grader_pid", ["named", "unset", "late"])
def test_nbgrader_started_by_a_worker_stops_with_it(grader_pid):
    """A killed worker's nbgrader run stops with its kernel; one started by someone else
    (no CNNLAB_GRADER_PID: an instructor's own command) outlives its parent. A run whose
    worker was killed before its config loaded ("late") stops before starting a kernel."""
    import psutil

    script = GRADER if grader_pid != "unset" else GRADER.replace('"CNNLAB_GRADER_PID"', '"UNUSED"')
    grader = subprocess.Popen([sys.executable, "-c", script, NBGRADER,
                               *(["late"] if grader_pid == "late" else [])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nbgrader = psutil.Process(int(grader.stdout.readline()))
    if grader_pid == "late":
        try:
            grader.kill()
            grader.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(nbgrader.pid):
                time.sleep(0.1)
            assert not _alive(nbgrader.pid)
            # it said why, and started no kernel (a kernel's pid would follow on stdout)
            assert "that started this nbgrader run is gone" in grader.stderr.read()
            assert grader.stdout.read() == ""
        finally:
            if _alive(nbgrader.pid):
                nbgrader.kill()
        return
    kernel_pid = int(grader.stdout.readline())  # nbgrader writes into the same pipe
    try:
        grader.kill()
        grader.wait()
        # it polls every 0.1 s: 2 s is plenty to see the unnamed one live on
        deadline = time.monotonic() + (10 if grader_pid == "named" else 2)
        while time.monotonic() < deadline and _alive(nbgrader.pid):
            time.sleep(0.1)
        if grader_pid == "named":
            assert not _alive(nbgrader.pid) and not _alive(kernel_pid)
        else:
            assert _alive(nbgrader.pid) and _alive(kernel_pid)
    finally:
        for pid in (nbgrader.pid, kernel_pid):
            if _alive(pid):
                psutil.Process(pid).kill()
