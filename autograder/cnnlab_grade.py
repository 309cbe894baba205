#!/usr/bin/env python
"""The cnnlab instructor command: what nbgrader has no place for.

    python autograder/cnnlab_grade.py setup  COURSE [--data PATH | --synthetic] [--no-sandbox]
    python autograder/cnnlab_grade.py grade  COURSE [--submissions DIR] [--jobs N | --scheduler
                                              tcp://HOST:PORT] [--no-sandbox]
    python autograder/cnnlab_grade.py report COURSE
    python autograder/cnnlab_grade.py feedback COURSE [--student ID] [--jobs N]
    python autograder/cnnlab_grade.py unpack ARCHIVE DIR

``setup`` makes the nbgrader course folder (configuration, kernelspec, release,
gradebook, the course model) and checks it: the sandbox must hold (no network, nothing
of the course visible, read-only Python), the solution must get full marks and the
blank release none. ``grade`` collects ``DIR/<student>/*.ipynb`` and grades each
student as one Dask task, on N local worker processes or on the workers of a running
Dask cluster: the worker gets the course and the submission over the wire, runs
``nbgrader autograde`` (configured by ``nbgrader_config.py``: repair, sandboxed kernel,
re-check) under a wall-clock limit in a private course folder, and sends back the
autograded notebook and the grades; this process alone writes them into the course
folder and the gradebook (``gradebook.db``, or ``setup --db-url``'s database).
``report`` writes ``reports/grades.csv`` (as ``nbgrader export`` does) and ``report.txt``.
``feedback`` runs ``nbgrader generate_feedback`` one student at a time, each under a time
limit and a size limit, so that one pathological notebook cannot stall the class.
``unpack`` extracts the regular files of an LMS archive (no links, no special files).

Linux only: student kernels run in bubblewrap (see ``sandbox.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: nbformat validates notebooks with jsonschema, whose optional checker of the "iri"
#: format builds a grammar when imported (over 2 s of every nbgrader start here). No
#: schema of nbformat or nbgrader names a format, so the checker is never used: left
#: unimported, here and in every nbgrader run this file starts (``NBGRADER``).
_UNUSED = "rfc3987_syntax"
sys.modules.setdefault(_UNUSED, None)  # an import of it then fails, as when not installed
#: ``python -m nbgrader`` with the checker above left out
NBGRADER = [sys.executable, "-c", f"import sys; sys.modules.setdefault({_UNUSED!r}, None); "
            "from nbgrader.apps.nbgraderapp import main; main()"]

import bounds  # noqa: E402
import cnnlab_nbgrader as course_lib  # noqa: E402
import nbformat  # noqa: E402
import sandbox  # noqa: E402
from repair import nbgrader_meta  # noqa: E402

A = "cnn_interpretability"
COURSE_FILES = ("nbgrader_config.py", "cnnlab_nbgrader.py", "repair.py", "recheck.py",
                "sandbox.py", "bounds.py", "inert.py")
SELF_CHECK = ("selfcheck-solution", "selfcheck-blank")
WORKER_START_S = 15  # allowance for the worker's own start (nbgrader's imports)
LOG_TAIL_BYTES = 256 << 10  # what of a worker's log is read to word why it failed
WORKER_LOG_BYTES = 2 << 20  # a worker's log keeps its first 2 MB and its last 256 kB
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
NO_SANDBOX_WARNING = ("WARNING: graded with --no-sandbox: student code ran with your "
                      "permissions, unconfined; do not trust these grades against hostile code.")


class GradingError(RuntimeError):
    """A problem the instructor must fix before grading can go on."""


def _settings(course: Path) -> dict:
    if not (course / sandbox.SETTINGS_FILE).exists():
        raise GradingError(f"{course} is not a cnnlab course folder; run: python "
                           f"{Path(__file__).name} setup {course}")
    course_lib.COURSE = course
    return sandbox.load_settings(course)


def db_url(settings: dict) -> str:
    """The course gradebook's address: ``setup --db-url`` (PostgreSQL...), else
    ``gradebook.db`` (SQLite) in the course folder."""
    return settings.get("db_url") or f"sqlite:///{Path(settings['course_root']) / 'gradebook.db'}"


def _gradebook(settings: dict, db: Path | None = None):
    """The course gradebook, or the SQLite file ``db`` (a worker's)."""
    from nbgrader.api import Gradebook
    return Gradebook(f"sqlite:///{db}" if db else db_url(settings), settings["course_id"])


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _sandbox_or_refuse(settings: dict, no_sandbox: bool) -> None:
    if no_sandbox:
        print(NO_SANDBOX_WARNING, file=sys.stderr)
        return
    try:
        problems = sandbox.self_check(settings)
    except sandbox.SandboxError as exc:
        problems = [str(exc)]
    if problems:
        raise GradingError("the grading sandbox does not hold here:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------

def solution_submission(release, source):
    """The release with every answer cell holding the solution's answer."""
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    answers = {nbgrader_meta(c)["grade_id"]: "\n".join(
        ln for ln in c.source.splitlines() if ln.strip() not in markers)
        for c in source.cells if nbgrader_meta(c).get("solution")}
    nb = copy.deepcopy(release)
    for c in nb.cells:
        c.source = answers.get(nbgrader_meta(c).get("grade_id"), c.source)
    return nb


MEMO_SCRIPT = f"import sys; sys.modules.setdefault({_UNUSED!r}, None)" + """
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=float(sys.argv[3]), kernel_name=sys.argv[4],
               resources={"metadata": {"path": sys.argv[2]}}).execute()
"""
#: the kernel the solution runs in at setup: this Python, named in a kernelspec of its own
#: (a "python3" found on the machine may be another Python, whose keys no kernel makes)
MEMO_KERNEL = "cnnlab-memo"


def _memo_kernelspec(folder: Path) -> Path:
    """``folder/kernels/cnnlab-memo/kernel.json`` starting ipykernel in this interpreter
    (the one the grading kernels run); returns ``folder`` for ``JUPYTER_PATH``."""
    spec = folder / "kernels" / MEMO_KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnnlab setup (the solution run once)", "language": "python"}))
    return folder


def run_outside_sandbox(notebook: Path, env: dict, cell_timeout: float, limit: float
                        ) -> str | None:
    """Execute ``notebook`` (the instructor's own) in its folder, in a kernel of this
    Python with ``env`` (HOME and TMPDIR: that folder); None, or why it failed."""
    folder = notebook.parent
    env = {**env, "HOME": str(folder), "TMPDIR": str(folder),
           "JUPYTER_PATH": str(_memo_kernelspec(folder / "jupyter"))}
    try:
        run = subprocess.run([sys.executable, "-c", MEMO_SCRIPT, str(notebook), str(folder),
                              str(cell_timeout), MEMO_KERNEL], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return f"it ran past {limit:g} s"
    return (run.stderr.strip().splitlines() or ["?"])[-1] if run.returncode else None


def record_memo(course: Path, settings: dict) -> str:
    """Run the solution once, outside the sandbox (it is the instructor's own code), in a
    grading kernel's environment, saving what it computes for the kernels to read
    (``cnnlab/_memo.py``); returns a line for the progress output. A failure leaves no
    memo: grading is then only slower."""
    memo = sandbox.memo_dir(settings)
    shutil.rmtree(memo, ignore_errors=True)
    settings = {**settings, "memo": False}
    release = nbformat.read(course / "release" / A / f"{A}.ipynb", 4)
    source = nbformat.read(course / "source" / A / f"{A}.ipynb", 4)
    with tempfile.TemporaryDirectory(prefix="cnnlab-memo-") as tmp:
        nbformat.write(solution_submission(release, source), Path(tmp) / "solution.ipynb")
        env = {**sandbox.kernel_environment(settings), "CNNLAB_MEMO_RECORD": str(memo)}
        start = time.monotonic()
        failed = run_outside_sandbox(Path(tmp) / "solution.ipynb", env,
                                     settings["instructor_cell_timeout"],
                                     settings["submission_timeout"] * 2)
    entries = sorted(memo.glob("*.pt")) if memo.is_dir() else []
    if failed or not entries:
        shutil.rmtree(memo, ignore_errors=True)
        return (f"not recorded ({failed or 'nothing to save'}): every kernel computes "
                "everything")
    size = sum(p.stat().st_size for p in entries) >> 20
    return (f"{len(entries)} results ({size} MB) in {time.monotonic() - start:.0f} s, "
            f"read by every kernel whose inputs are the solution's")


def setup(args) -> int:
    sandbox.refuse_unsupported_os()
    course = Path(args.course).expanduser().resolve()
    git = next((p for p in [course, *course.parents] if (p / ".git").exists()), None)
    if git and not args.allow_inside_git:
        raise GradingError(f"{course} is inside the git checkout {git}: keep the gradebook "
                           "and student work out of version control; pick another folder.")
    solutions = Path(args.solutions).resolve()
    if not solutions.exists():
        raise GradingError(f"No solution notebook at {solutions} (--solutions FILE).")
    course.mkdir(parents=True, exist_ok=True)
    os.chmod(course, 0o700)
    for name in COURSE_FILES:
        shutil.copy2(HERE / name, course / name)
    (course / "source" / A).mkdir(parents=True, exist_ok=True)
    shutil.copy2(solutions, course / "source" / A / f"{A}.ipynb")
    data = args.data or (None if args.synthetic else os.environ.get("CNNLAB_DATA"))
    settings = {**sandbox.DEFAULTS, "profile": args.profile,
                "source": "synthetic" if args.synthetic else "auto",
                "data": str(Path(data).expanduser().resolve()) if data else None,
                "cache": os.environ.get("CNNLAB_CACHE") or str(course / "cache"),
                "checkpoints": str(course / "checkpoints"),
                "instructor_cell_timeout": args.instructor_cell_timeout,
                "student_cell_timeout": args.student_cell_timeout,
                "submission_timeout": args.submission_timeout,
                "kernel_memory_mb": args.kernel_memory, "solutions": str(solutions),
                "db_url": args.db_url}
    path = course / sandbox.SETTINGS_FILE
    path.write_text(json.dumps(settings, indent=1))
    sandbox.write_kernelspec(course)

    print(f"[1/5] nbgrader generate_assignment {A} in {course}", flush=True)
    run = subprocess.run([*NBGRADER, "generate_assignment", A, "--force"],
                         cwd=course, env=_env(), capture_output=True, text=True)
    if run.returncode != 0:
        raise GradingError("nbgrader generate_assignment failed:\n" + run.stdout + run.stderr)
    release = course / "release" / A / f"{A}.ipynb"
    lessons = solutions.parent.parent / "lessons" / f"{A}.ipynb"
    if lessons.exists():
        same = _cells(release) == _cells(lessons)
        print(f"      release {'==' if same else 'DIFFERS FROM'} {lessons}")

    print(f"[2/5] the course model ({args.profile} profile), reused by every submission",
          flush=True)
    for k in ("data", "cache"):
        if settings[k]:
            os.environ[f"CNNLAB_{k.upper()}"] = settings[k]
    os.environ["CNNLAB_CHECKPOINTS"] = settings["checkpoints"]
    import cnnlab
    from cnnlab.train import default_checkpoint
    config = cnnlab.get_config(args.profile)
    train, test = cnnlab.load_lab_data(config, settings["data"], settings["source"])
    ckpt = default_checkpoint(config, train.source)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        shutil.copy2(args.checkpoint, ckpt)
    _, info = cnnlab.train_or_load(config, train, test, ckpt, progress=True)
    settings.update(checkpoint=str(ckpt), model_accuracy=info["metrics"].get("accuracy"))
    path.write_text(json.dumps(settings, indent=1))
    print(f"      {ckpt} ({'reused' if info['reused'] else 'trained'})")

    print("[3/5] the solution run once: what every kernel with the same inputs would "
          "compute", flush=True)
    if args.no_memo:
        shutil.rmtree(sandbox.memo_dir(settings), ignore_errors=True)
        line = "skipped (--no-memo): every kernel computes everything"
    else:
        line = record_memo(course, _settings(course))
    settings.update(memo=sandbox.memo_dir(settings).is_dir())
    path.write_text(json.dumps(settings, indent=1))
    print(f"      {line}")

    settings = _settings(course)
    print(f"[4/5] self-check: the sandbox ({sandbox.describe_limits(settings)}), then the "
          "solution and the blank release graded", flush=True)
    _sandbox_or_refuse(settings, args.no_sandbox)
    if not args.no_self_check:
        self_check(course, settings, args.no_sandbox)
    print(f"[5/5] ready. Students get {release}\n      Next: python "
          f"{os.path.relpath(Path(__file__).resolve())} grade {course} --submissions DIR")
    return 0


def _cells(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.get("id"), c.source, c.get("metadata", {}).get("nbgrader"))
            for c in nb.cells]


def self_check(course: Path, settings: dict, no_sandbox: bool) -> None:
    release = nbformat.read(course / "release" / A / f"{A}.ipynb", 4)
    source = nbformat.read(course / "source" / A / f"{A}.ipynb", 4)
    for sid, nb in zip(SELF_CHECK, (solution_submission(release, source), release), strict=True):
        (course / "submitted" / sid / A).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, course / "submitted" / sid / A / f"{A}.ipynb")
    try:
        start = dt.datetime.now()
        grade_students(course, settings, list(SELF_CHECK), jobs=2, no_sandbox=no_sandbox,
                       quiet=True)
        seconds = (dt.datetime.now() - start).total_seconds()
        with _gradebook(settings) as gb:
            columns, (sol, blank) = course_lib.grade_rows(gb, settings, list(SELF_CHECK))
        auto, top = columns[2], columns[2].rsplit("_", 1)[1]
        problems = [f"the {n} was {r['status']}: {r['details']}" for n, r in
                    (("solution", sol), ("blank release", blank)) if r["status"] != "graded"]
        problems += [f"the {n} scored {r[auto]}/{top}: {r}" for n, r, want in
                     (("solution", sol, top), ("blank release", blank, "0")) if r[auto] != want]
        record = {"checked_at": start.isoformat(timespec="seconds"),
                  "problems": problems, "seconds_for_two": round(seconds, 1),
                  "solution": sol, "blank": blank}
        (course / "grading" / "selfcheck.json").write_text(json.dumps(record, indent=1))
        print(f"      solution {sol[auto]}/{top}, blank release {blank[auto]}/{top} "
              f"({seconds:.0f} s for both, in parallel)")
        if problems:
            raise GradingError("self-check failed:\n  " + "\n  ".join(problems))
    finally:
        forget(course, settings, list(SELF_CHECK))


def forget(course: Path, settings: dict, students: list[str]) -> None:
    from nbgrader.api import MissingEntry
    with _gradebook(settings) as gb:
        for sid in students:
            for remove, arg in ((gb.remove_submission, (A, sid)), (gb.remove_student, (sid,))):
                try:
                    remove(*arg)
                except MissingEntry:
                    pass
    for sid in students:
        for folder in ("submitted", "autograded", "feedback", "grading/work"):
            shutil.rmtree(course / folder / sid, ignore_errors=True)
        course_lib.status_path(course, sid).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------

def _candidates(entry: Path, limit: int = 10_000) -> list[Path]:
    """The ``*.ipynb`` names (files or not) in a student's folder, links not followed,
    checkpoints skipped; at most ``limit`` entries are looked at."""
    found, seen = [], 0
    for root, dirs, files in os.walk(entry, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(dirs + files):
            seen += 1
            if seen > limit:
                raise bounds.Refused(f"over {limit} files in the submission folder")
            if name.endswith(".ipynb"):
                found.append(Path(root) / name)
    return sorted(found)


def collect(course: Path, folder: Path) -> list[str]:
    """Copy ``folder/<student>/<notebook>.ipynb`` into ``submitted/``; record its hash.

    Only regular files are read (no link, FIFO, device or folder; no hard link), at most
    ``max_submission_mb``, and only notebooks of at most ``max_cells`` cells are kept for
    grading; any other submission is recorded with its reason (``collect_problem``) and
    the others are collected all the same."""
    settings = sandbox.load_settings(course)
    max_bytes = int(settings["max_submission_mb"] * 2**20)
    students = []
    for entry in sorted(folder.iterdir()):
        sid = entry.name
        if sid.startswith(".") or not (entry.is_symlink() or entry.is_dir()):
            continue
        if not STUDENT_ID.match(sid) or sid in SELF_CHECK:
            print(f"skipping {bounds.printable(entry)}: not a usable student id "
                  "(letters, digits, . _ @ + -)")
            continue
        students.append(sid)
        dest = course / "submitted" / sid / A
        shutil.rmtree(dest, ignore_errors=True)
        original = course / "grading" / "originals" / f"{sid}.ipynb"
        original.unlink(missing_ok=True)
        try:
            chosen, data = _read_one(entry, max_bytes, settings["max_cells"])
        except bounds.Refused as why:
            course_lib.update_status(course, sid, collect_problem=str(why),
                                     collected_from=str(entry), collected_sha256=None)
            continue
        dest.mkdir(parents=True)
        original.parent.mkdir(parents=True, exist_ok=True)
        for path in (dest / f"{A}.ipynb", original):
            bounds.write_new(path, data)
        course_lib.update_status(course, sid, collect_problem=None, collected_from=str(chosen),
                                 collected_sha256=hashlib.sha256(data).hexdigest())
    return students


def _read_one(entry: Path, max_bytes: int, max_cells: int) -> tuple[Path, bytes]:
    """The notebook a student's folder holds and its bytes, or :class:`bounds.Refused`."""
    if entry.is_symlink():
        raise bounds.Refused("the student folder is a symbolic link, not a folder")
    notebooks = _candidates(entry)
    exact = [p for p in notebooks if p.name == f"{A}.ipynb"]
    chosen = exact[0] if len(exact) == 1 else notebooks[0] if len(notebooks) == 1 else None
    if chosen is None:
        raise bounds.Refused("no notebook in the submission folder" if not notebooks else
                             f"{len(notebooks)} notebooks, none named {A}.ipynb")
    name = bounds.printable(chosen.relative_to(entry), 100)
    try:
        data = bounds.read_submission(chosen, max_bytes)
    except bounds.Refused as why:
        raise bounds.Refused(f"{name} is {why}") from None
    problem = bounds.notebook_problem(data, max_cells)
    if problem:
        raise bounds.Refused(f"{name}: {problem}")
    return chosen, data


def submitted_students(course: Path) -> list[str]:
    ids = {p.parent.name for p in (course / "submitted").glob(f"*/{A}")}
    ids |= {p.stem for p in (course / "grading" / "status").glob("*.json")}
    return sorted(ids - set(SELF_CHECK))


# ---------------------------------------------------------------------------
# autograding: N workers, one gradebook writer
# ---------------------------------------------------------------------------

def _autograde(course: Path, sid: str, env: dict, limit: float) -> dict:
    """One submission through plain ``nbgrader autograde`` on its own gradebook copy
    (``grading/work/<student>/``), killed with all it started at the time limit."""
    folder = course / "grading" / "work" / sid
    command = [*NBGRADER, "autograde", A, "--student", sid, "--force",
               f"--CourseDirectory.db_url=sqlite:///{folder / 'gradebook.db'}"]
    rc, peak = _run_capped(command, course, folder / "nbgrader.log", env, limit + WORKER_START_S,
                          fork=True)
    st = course_lib.read_status(course, sid)
    if rc is None:
        out = {"outcome": "killed", "reason": f"stopped at the time limit of {limit:g} s"}
    elif rc == 0:  # nbgrader's own time, from the repair to the re-check
        seconds = st.get("rechecked_at", 0) - st.get("started_at", 0)
        out = {"outcome": "graded", "seconds": round(seconds, 1)}
    else:  # the end of the log only: a student's output may have filled it
        text = bounds.tail(folder / "nbgrader.log", LOG_TAIL_BYTES)
        out = {"outcome": "failed", "reason": _why_failed(text)}
    progress = course_lib.runtime_dir(course, sid).parent / f"{sid}.progress.json"
    limits = progress.parent / f"{sid}.{sandbox.LIMITS_FILE}"  # written by run_kernel
    record = json.loads(bounds.tail(limits, 4096) or "{}")
    killed = record.get("killed")
    if out["outcome"] == "failed" and killed:
        out["reason"] = f"the kernel was stopped: {killed}"
    limits.unlink(missing_ok=True)
    if out["outcome"] != "graded" and progress.exists():
        out["cell"] = json.loads(progress.read_text()).get("cell")
        shutil.rmtree(course / "autograded" / sid, ignore_errors=True)
    progress.unlink(missing_ok=True)
    shutil.rmtree(course_lib.runtime_dir(course, sid), ignore_errors=True)
    out["worker_peak_mb"] = round(peak / 2**20)
    out["kernel_peak_mb"] = record.get("peak_rss_mb")
    return out


#: A worker's nbgrader fork server: imports what every ``nbgrader autograde`` run needs
#: once (nbgrader, nbclient, torch for the re-check: 5-6 s of every fresh start here),
#: then forks one run per request. Single-threaded, so forking is safe (a Dask worker has
#: threads, and is daemonic: multiprocessing may not start children from it). Protocol on
#: the socket it is given (one message each): a JSON request {args, cwd, env} with the
#: fd its output goes to; it answers {"pid"}, then {"rc"} when the run ends. It exits when the worker is
#: gone (end of file on the socket); a run it started then sees its parent change and
#: stops (``cnnlab_nbgrader.exit_with_grader``: the env names this server).
FORK_SERVER = f"""
import json, os, select, socket, sys, time
sys.modules.setdefault({_UNUSED!r}, None)
import nbclient, nbgrader.apps.nbgraderapp, torch  # noqa: F401 (for every run)
sock = socket.socket(fileno=int(sys.argv[1]))  # AF_UNIX, SOCK_SEQPACKET


def answer(**message):
    sock.send(json.dumps(message).encode())


def run(job, out):
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = ["nbgrader", *job["args"]]
        nbgrader.apps.nbgraderapp.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


while True:
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
    except OSError:
        break
    if not data or not fds:
        break
    pid = os.fork()
    if pid == 0:
        sock.close()
        run(json.loads(data), fds[0])
    os.close(fds[0])
    answer(pid=pid)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if select.select([sock], [], [], 0.2)[0]:
            if not sock.recv(1, socket.MSG_PEEK):
                sys.exit(0)  # the worker is gone, and so is this server
            time.sleep(0.2)  # a request before this run's end: it waits its turn
    answer(rc=os.waitstatus_to_exitcode(status))
"""


class _ForkServer:
    """This worker process's ``FORK_SERVER``, started on its first use; one run at a
    time (``lock``). Where it cannot start or answer, runs start as plain processes."""

    lock = threading.Lock()
    _current: _ForkServer | None = None
    _failed = False
    START_S = 120  # the server's own imports, before its first answer

    def __init__(self):
        import socket
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=_env())
        theirs.close()
        self.pid = self.proc.pid

    @classmethod
    def get(cls) -> _ForkServer | None:
        if cls._failed:
            return None
        if cls._current is None or cls._current.proc.poll() is not None:
            cls._current = cls()
        return cls._current

    def _message(self, timeout: float) -> dict | None:
        """The server's next message; None after ``timeout`` seconds; EOFError if the
        server is gone."""
        import select
        if not select.select([self.sock], [], [], timeout)[0]:
            return None
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("the nbgrader fork server is gone")
        return json.loads(data)

    def start(self, args: list[str], cwd: Path, env: dict, out: int) -> int:
        """Start ``nbgrader ARGS`` in ``cwd`` with ``env``, its output into the fd
        ``out``; its pid. OSError or EOFError when the server cannot."""
        import socket
        socket.send_fds(self.sock, [json.dumps({"args": args, "cwd": str(cwd),
                                                "env": env}).encode()], [out])
        while True:  # an earlier run's end, unread (it was killed at its limit), first
            message = self._message(self.START_S)
            if message is None:
                raise EOFError("the nbgrader fork server did not answer")
            if "pid" in message:
                return message["pid"]

    def wait(self, timeout: float) -> int | None:
        """The exit status of the run started last; None while it runs."""
        message = self._message(timeout)
        return None if message is None else message.get("rc")


def _run_capped(command: list[str], cwd: Path, log: Path, env: dict, limit: float,
                fork: bool = False) -> tuple:
    """Run ``command`` (from ``cwd``, in a session of its own) for at most
    ``limit`` seconds, its output into ``log`` up to ``WORKER_LOG_BYTES`` (and its last
    ``LOG_TAIL_BYTES``); then kill all it started. ``fork``: ``command`` is an nbgrader
    command (``NBGRADER`` + its arguments), forked from this worker's fork server where it
    runs (the named grading process is then that server). Returns (exit status or None
    when killed at the limit, its peak resident memory in bytes, sampled every half
    second)."""
    import psutil
    locked = fork and _ForkServer.lock.acquire(blocking=False)  # else a plain process
    server, proc, pid, rc = None, None, None, None
    if locked:
        try:
            server = _ForkServer.get()
        except OSError:
            _ForkServer._failed = True
    try:
        with open(log, "wb") as f:
            read_end, write_end = os.pipe()
            try:
                if server is not None:
                    if course_lib.GRADER_PID_ENV in env:
                        env = {**env, course_lib.GRADER_PID_ENV: str(server.pid)}
                    try:
                        pid = server.start(command[len(NBGRADER):], cwd, env, write_end)
                    except (OSError, EOFError):
                        _ForkServer._failed = True  # plain processes from now on
                        server = None
                if pid is None:
                    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=write_end,
                                            stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                            start_new_session=True)
                    pid = proc.pid
            finally:
                os.close(write_end)
            source = os.fdopen(read_end, "rb")
            copier = threading.Thread(target=bounds.copy_capped, daemon=True, args=(
                source, f, WORKER_LOG_BYTES, "log", LOG_TAIL_BYTES))
            copier.start()
            deadline, peak = time.monotonic() + limit, 0
            try:
                while rc is None and time.monotonic() < deadline:
                    if proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            rc = proc.wait(timeout=0.5)
                    else:
                        try:
                            rc = server.wait(0.5)
                        except EOFError:  # the server died: so did its run
                            rc = -1
                    if rc is None:
                        with contextlib.suppress(psutil.Error):
                            peak = max(peak, psutil.Process(pid).memory_info().rss)
            finally:
                _kill_tree(pid)  # nothing of a submission outlives it
                copier.join(timeout=10)
                source.close()
    finally:
        if locked:
            _ForkServer.lock.release()
    return rc, peak


def _kill_tree(pid: int) -> None:
    import psutil
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def _why_failed(text: str) -> str:
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died (the notebook crashed, ran out of memory or called exit)"
    if any(s in text for s in ("UnresponsiveKernelError", "Timeout waiting for IOPub",
                               "became unresponsive")):
        return "a cell did not stop when interrupted at its time limit (it ignores interrupts)"
    if "changed after it was collected" in text:
        return "the submitted notebook changed after it was collected"
    errors = [ln.strip() for ln in text.splitlines()
              if re.match(r"^\s*[\w.]*(Error|Exception)\b.*:", ln) and "NbGrader" not in ln]
    return "nbgrader failed: " + bounds.printable((errors or ["no message"])[-1], 200)


GRADE_FIELDS = ("auto_score", "manual_score", "extra_credit", "needs_manual_grade")
COMMENT_FIELDS = ("auto_comment", "manual_comment")
#: this worker process's sandbox check, made before its first task: the problems found
_PROBED: dict[str, list[str]] = {}


def course_bundle(course: Path, settings: dict) -> dict[str, bytes]:
    """What a worker needs of the course to grade anyone, by path in the course folder:
    the grading code and settings, the source and release notebooks, the course model and
    the solution's saved results (``checkpoints/memo/``), and a gradebook holding the
    assignment and no student."""
    names = [*COURSE_FILES, sandbox.SETTINGS_FILE, f"source/{A}/{A}.ipynb",
             f"release/{A}/{A}.ipynb"]
    files = {name: (course / name).read_bytes() for name in names}
    checkpoints = Path(settings["checkpoints"])
    for p in sorted(checkpoints.rglob("*")):
        if p.is_file() and not p.is_symlink():
            files[f"checkpoints/{p.relative_to(checkpoints).as_posix()}"] = p.read_bytes()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "gradebook.db"
        assignment_gradebook(settings, db)
        files["gradebook.db"] = db.read_bytes()
    return files


def assignment_gradebook(settings: dict, db: Path) -> None:
    """Write at ``db`` a new SQLite gradebook holding the course's assignment and no
    student, stamped with the course gradebook's schema version: nbgrader, given a new
    file, asks ``alembic heads`` for it in a subprocess (about 6 s on 2 cores)."""
    import sqlite3

    from sqlalchemy import text
    with _gradebook(settings) as src:
        version = src.db.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        with contextlib.closing(sqlite3.connect(db)) as new:
            new.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            new.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (version,))
            new.commit()
        with _gradebook(settings, db) as dst:
            _copy_assignment(src, dst)


def _copy_assignment(src, dst) -> None:
    """The assignment's definition (notebooks, cells, points), without any student."""
    a = src.find_assignment(A)
    dst.update_or_create_assignment(A, duedate=a.duedate)
    for nb in a.notebooks:
        dst.update_or_create_notebook(nb.name, A, kernelspec=nb.kernelspec)
        for c in nb.grade_cells:
            dst.update_or_create_grade_cell(c.name, nb.name, A, max_score=c.max_score,
                                            cell_type=c.cell_type)
        for c in nb.task_cells:
            dst.update_or_create_task_cell(c.name, nb.name, A, max_score=c.max_score,
                                           cell_type=c.cell_type)
        for c in nb.solution_cells:
            dst.update_or_create_solution_cell(c.name, nb.name, A)
        for c in nb.source_cells:
            dst.update_or_create_source_cell(c.name, nb.name, A, cell_type=c.cell_type,
                                             locked=c.locked, source=c.source,
                                             checksum=c.checksum)


def _private_course(course: Path, bundle: dict[str, bytes]) -> dict:
    """The course folder a worker grades in: ``bundle`` written out, the settings pointed
    at this folder's course model (the data, and its cache when present, stay where the
    settings name them: the same paths on every worker)."""
    for name, data in bundle.items():
        (course / name).parent.mkdir(parents=True, exist_ok=True)
        (course / name).write_bytes(data)
    os.chmod(course, 0o700)
    settings = json.loads(bundle[sandbox.SETTINGS_FILE])
    settings.update(db_url=None, checkpoints=str(course / "checkpoints"),
                    checkpoint=str(course / "checkpoints" / Path(settings["checkpoint"]).name))
    if not (settings.get("cache") and Path(settings["cache"]).is_dir()):
        settings["cache"] = str(course / "cache")
    (course / sandbox.SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    sandbox.write_kernelspec(course)
    return sandbox.load_settings(course)


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return "this process"


def grade_task(bundle: dict[str, bytes], job: dict) -> dict:
    """One student graded on a worker, in a private course folder made from ``bundle``.

    ``job``: student, notebook (bytes), status (its grading record), limit (s), jobs,
    no_sandbox, probe (check this worker's sandbox before its first task). Returns
    {"student", "outcome", "status", "log", "autograded": {path: bytes}, "grades": the
    gradebook rows or None}, or {"refused": why, "worker"} when this worker's sandbox
    does not hold. Nothing is written outside the private folder, so
    running a task twice is harmless."""
    import tempfile
    sid = job["student"]
    root = Path(tempfile.mkdtemp(prefix="cnnlab-grade-"))
    try:
        course = root / "course"
        course.mkdir()
        settings = _private_course(course, bundle)
        if job["probe"]:
            if "problems" not in _PROBED:
                try:
                    _PROBED["problems"] = sandbox.self_check(settings)
                except sandbox.SandboxError as exc:
                    _PROBED["problems"] = [str(exc)]
            if _PROBED["problems"]:
                return {"refused": "\n".join(_PROBED["problems"]), "worker": _worker_name()}
        if settings.get("data") and settings.get("source") != "synthetic" and not Path(
                settings["data"]).exists():
            return {"refused": f"the course's data {settings['data']} is not on this worker: "
                    "copy it there at the same path", "worker": _worker_name()}
        (course / "submitted" / sid / A).mkdir(parents=True)
        (course / "submitted" / sid / A / f"{A}.ipynb").write_bytes(job["notebook"])
        course_lib.update_status(course, sid, **job["status"])
        work = course / "grading" / "work" / sid
        work.mkdir(parents=True)
        shutil.copyfile(course / "gradebook.db", work / "gradebook.db")
        env = {**_env(), "CNNLAB_JOBS": str(job["jobs"]),
               course_lib.GRADER_PID_ENV: str(os.getpid()),  # the run ends with this process
               sandbox.NO_SANDBOX_ENV: "1" if job["no_sandbox"] else "0"}
        out = _autograde(course, sid, env, job["limit"])
        out["worker"] = f"{_worker_name()}, in {course}"
        graded = course / "autograded" / sid
        result = {"student": sid, "outcome": out, "status": course_lib.read_status(course, sid),
                  "log": (work / "nbgrader.log").read_bytes(),
                  "autograded": {str(p.relative_to(graded)): p.read_bytes()
                                 for p in sorted(graded.rglob("*"))
                                 if p.is_file() and not p.is_symlink()}, "grades": None}
        if out["outcome"] == "graded":
            with _gradebook(settings, work / "gradebook.db") as gb:
                nb = gb.find_submission_notebook(A, A, sid)
                result["grades"] = {
                    "timestamp": gb.find_submission(A, sid).timestamp, "flagged": nb.flagged,
                    "grades": {g.name: {f: getattr(g, f) for f in GRADE_FIELDS}
                               for g in nb.grades},
                    "comments": {c.name: {f: getattr(c, f) for f in COMMENT_FIELDS}
                                 for c in nb.comments}}
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _store(course: Path, settings: dict, result: dict) -> dict:
    """A worker's result into the course folder and the gradebook (this process only)."""
    sid, out = result["student"], result["outcome"]
    work = course / "grading" / "work" / sid
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "nbgrader.log").write_bytes(result["log"])
    course_lib.update_status(course, sid, **result["status"])
    shutil.rmtree(course / "autograded" / sid, ignore_errors=True)
    for name, data in result["autograded"].items():
        path = course / "autograded" / sid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if result["grades"] is not None:
        _merge(settings, sid, result["grades"])
    return out


def _merge(settings: dict, sid: str, rows: dict) -> None:
    """One student's grades into the course gradebook, made or overwritten."""
    import warnings
    warnings.filterwarnings("ignore", module="nbgrader")  # SQLAlchemy's autoflush notes
    with _gradebook(settings) as gb:
        gb.update_or_create_student(sid)
        gb.update_or_create_submission(A, sid, timestamp=rows["timestamp"])
        for kind, find in (("grades", gb.find_grade), ("comments", gb.find_comment)):
            for name, fields in rows[kind].items():
                item = find(name, A, A, sid)
                for field, value in fields.items():
                    setattr(item, field, value)
        gb.find_submission_notebook(A, A, sid).flagged = rows["flagged"]
        gb.db.commit()


#: grade_task, found by name when it runs: the scheduler, which unpickles the tasks, need
#: not import cnnlab_grade (a lambda travels by value, with only ``importlib`` by name)
_GRADE_TASK = lambda bundle, job: importlib.import_module("cnnlab_grade").grade_task(  # noqa: E731
    bundle, job)


@contextlib.contextmanager
def _cluster(jobs: int, scheduler: str | None):
    """A Dask client: on ``jobs`` local worker processes, or on the cluster at
    ``scheduler`` (``tcp://HOST:PORT``), whose workers must import ``cnnlab_grade``."""
    import logging

    from distributed import Client, LocalCluster
    if scheduler is None:
        with LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                          memory_limit=0, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=30)
    except OSError as exc:
        raise GradingError(f"no Dask scheduler answers at {scheduler} ({exc}). Start one "
                           "with `dask scheduler`, and workers with `dask worker "
                           "tcp://HOST:8786 --nthreads 1` (see autograder/README.md).") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise GradingError(f"the Dask scheduler at {scheduler} has no worker after "
                               "60 s: start some with `dask worker {scheduler} --nthreads 1`"
                               ) from None
        found = client.run(lambda: importlib.util.find_spec("cnnlab_grade") is not None)
        missing = sorted(w for w, ok in found.items() if not ok)
        if missing:
            raise GradingError(f"the Dask workers {', '.join(missing)} cannot import "
                               f"cnnlab_grade: start them with PYTHONPATH={HERE} (this "
                               "checkout's autograder folder, on their machine)")
        yield client


def grade_students(course: Path, settings: dict, students: list[str], jobs: int = 1,
                   limit: float | None = None, no_sandbox: bool = False,
                   quiet: bool = False, scheduler: str | None = None) -> dict[str, dict]:
    """Autograde ``students`` on Dask, one task per student; returns student -> outcome.

    ``jobs`` local worker processes, or the workers of the cluster at ``scheduler``. The
    workers get the course and the submission over the wire and send back the autograded
    notebook and the grades; this process alone writes the course folder and the
    gradebook, once per student, as each task finishes. A task whose worker dies runs
    again on another. A cluster's workers check their sandbox before their first task;
    local ones are this machine, whose sandbox ``grade`` and ``setup`` have just checked
    (the check costs each worker about 5 s of every run)."""
    import uuid

    from distributed import as_completed
    for name in COURSE_FILES:  # the course runs this checkout's grading code
        if not (course / name).is_file() or (course / name).read_bytes() != (
                HERE / name).read_bytes():  # a course made before a file was added lacks it
            shutil.copy2(HERE / name, course / name)
    sandbox.write_kernelspec(course)
    limit = float(limit or settings["submission_timeout"])
    outcomes, queue = {}, []
    for sid in students:
        if not (course / "submitted" / sid / A / f"{A}.ipynb").exists():
            outcomes[sid] = {"outcome": "not-run", "reason": course_lib.read_status(
                course, sid).get("collect_problem") or f"no {A}.ipynb in submitted/{sid}/"}
            continue
        queue.append(sid)
    with contextlib.ExitStack() as stack:
        if queue:
            client = stack.enter_context(_cluster(jobs, scheduler))
            workers = len(client.scheduler_info()["workers"]) if scheduler else jobs
            bundle = client.scatter([course_bundle(course, settings)], broadcast=True)[0]
            running = {}
            for sid in queue:
                job = {"student": sid, "limit": limit, "jobs": max(1, workers),
                       "no_sandbox": no_sandbox, "probe": bool(scheduler) and not no_sandbox,
                       "status": course_lib.read_status(course, sid),
                       "notebook": (course / "submitted" / sid / A / f"{A}.ipynb").read_bytes()}
                running[client.submit(_GRADE_TASK, bundle, job, retries=2, pure=False,
                                      key=f"cnnlab-grade-{sid}-{uuid.uuid4().hex}")] = sid
        for done in as_completed(list(running)) if queue else []:
            sid = running[done]
            try:
                result = done.result()
            except Exception as exc:  # the cluster's failure, not the submission's
                raise GradingError(f"grading stopped: the task of {sid} failed on the Dask "
                                   f"cluster ({type(exc).__name__}: {exc}); the students "
                                   "not yet written are as before: grade again") from None
            if "refused" in result:
                raise GradingError(f"the Dask worker {result['worker']} cannot grade: "
                                   f"{result['refused']}")
            out = outcomes[sid] = _store(course, settings, result)
            if not quiet:  # the status the report will give, as soon as it is known
                if out["outcome"] != "graded":
                    said = f"ungradable ({out['reason']})"
                elif course_lib.evidence(course_lib.read_status(course, sid)):
                    said = f"tampered, evidence in the report ({out['seconds']} s)"
                else:
                    said = f"graded ({out['seconds']} s)"
                print(bounds.printable(f"  {sid}: {said}"), flush=True)
    for sid, out in outcomes.items():
        course_lib.update_status(course, sid, grading=out, sandbox=not no_sandbox,
                                 graded_at=dt.datetime.now().isoformat(timespec="seconds"))
    return outcomes


# ---------------------------------------------------------------------------
# report and commands
# ---------------------------------------------------------------------------

def write_report(course: Path, settings: dict) -> tuple[Path, Path]:
    with _gradebook(settings) as gb:
        columns, rows = course_lib.grade_rows(gb, settings, submitted_students(course))
    out = course / "reports"
    out.mkdir(exist_ok=True)
    course_lib.write_csv(out / "grades.csv", columns, rows)
    unsandboxed = [r["student"] for r in rows
                   if course_lib.read_status(course, r["student"]).get("sandbox") is False]
    lines = ([NO_SANDBOX_WARNING + f" ({len(unsandboxed)} submissions)"] if unsandboxed else [])
    lines += [f"cnnlab autograding report: {A}, {dt.datetime.now():%Y-%m-%d %H:%M}, "
              f"{len(rows)} submissions (profile {settings['profile']})",
              f"kernels: {'no sandbox' if unsandboxed else 'bubblewrap sandbox'}; limits: "
              f"{sandbox.describe_limits(settings)}", ""]
    shown = columns[:-2]
    width = {c: max([len(c), *(len(r[c] or "-") for r in rows)]) for c in shown}
    lines += [" ".join(f"{c:{width[c]}s}" for c in shown)]
    lines += [" ".join(f"{r[c] or '-':{width[c]}s}" for c in shown) for r in rows]
    for title, status, field in (
            ("Could not be graded (no score: fix, grade again or by hand)", "ungradable",
             "details"),
            ("Tampered (evidence below; review in formgrader)", "tampered", "details"),
            ("Notes (repairs, errors, interrupted cells; scores stand)", None, "notes")):
        chosen = [f"  {r['student']}: {r[field]}" for r in rows
                  if r[field] and status in (None, r["status"])]
        lines += ["", title + ":", *chosen] if chosen else []
    (out / "report.txt").write_text("\n".join(map(bounds.printable, lines)) + "\n")
    return out / "grades.csv", out / "report.txt"


# ---------------------------------------------------------------------------
# feedback
# ---------------------------------------------------------------------------

def feedback_one(course: Path, settings: dict, sid: str, limit: float) -> dict:
    """``nbgrader generate_feedback`` for one student under a time limit, its log capped;
    feedback larger than ``max_feedback_mb`` (or from an autograded notebook larger than
    that) is not kept. Returns {"outcome": "written" | "not-written", "reason", "bytes"}."""
    max_bytes = int(settings["max_feedback_mb"] * 2**20)
    source = course / "autograded" / sid / A / f"{A}.ipynb"
    html = course / "feedback" / sid / A / f"{A}.html"
    try:
        os.close(bounds.open_regular(source, max_bytes))
    except bounds.Refused as why:
        return {"outcome": "not-written", "reason": f"the autograded notebook is {why}"}
    folder = course / "grading" / "work" / sid
    folder.mkdir(parents=True, exist_ok=True)
    command = [*NBGRADER, "generate_feedback", A, "--student", sid, "--force"]
    rc, _ = _run_capped(command, course, folder / "feedback.log", _env(), limit)
    size = html.stat().st_size if html.is_file() else None
    reason = (f"stopped at the time limit of {limit:g} s" if rc is None else
              f"nbgrader failed: see {folder / 'feedback.log'}" if rc != 0 or size is None else
              f"{size} bytes, over the limit of {max_bytes}" if size > max_bytes else None)
    if reason:
        shutil.rmtree(course / "feedback" / sid, ignore_errors=True)
        return {"outcome": "not-written", "reason": reason}
    return {"outcome": "written", "bytes": size}


def feedback(args) -> int:
    """Feedback for every autograded student (or ``--student``), each under its limits."""
    course = Path(args.course).expanduser().resolve()
    settings = _settings(course)
    students = args.student or sorted(
        p.name for p in (course / "autograded").glob("*") if p.name not in SELF_CHECK)
    limit = float(args.timeout or settings["feedback_timeout"])
    print(f"Feedback for {len(students)} students, {args.jobs} at a time, "
          f"{limit:g} s each at most", flush=True)
    failed = 0
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        running = {pool.submit(feedback_one, course, settings, sid, limit): sid
                   for sid in students}
        for done in as_completed(running):
            sid, out = running[done], done.result()
            course_lib.update_status(course, sid, feedback=out)
            failed += out["outcome"] != "written"
            said = (f"{out['bytes'] / 2**20:.1f} MB" if out["outcome"] == "written" else
                    f"not written ({out['reason']})")
            print(bounds.printable(f"  {sid}: {said}"), flush=True)
    print(f"Wrote {len(students) - failed} feedback files in {course / 'feedback'}"
          + (f"; {failed} not written (see above)" if failed else ""))
    return 0


def unpack(args) -> int:
    """An LMS archive's regular files into a folder (no links, no special files)."""
    written, skipped = bounds.unpack(Path(args.archive).expanduser(),
                                     Path(args.dest).expanduser(), int(args.max_mb * 2**20))
    print(f"Unpacked {len(written)} files into {args.dest}" +
          (f"; skipped {len(skipped)}:" if skipped else ""))
    for line in skipped:
        print("  " + line)
    return 0


def grade(args) -> int:
    sandbox.refuse_unsupported_os()
    course = Path(args.course).expanduser().resolve()
    settings = _settings(course)
    _sandbox_or_refuse(settings, args.no_sandbox)
    if args.submissions:
        collected = collect(course, Path(args.submissions).expanduser().resolve())
        print(f"Collected {len(collected)} submissions from {args.submissions}")
    students = args.student or (collected if args.submissions else submitted_students(course))
    if not students:
        raise GradingError(f"No submissions in {course / 'submitted'} (use --submissions DIR).")
    where = (f"on the Dask cluster at {args.scheduler}" if args.scheduler else
             f"{args.jobs} at a time")
    print(f"Autograding {len(students)} submissions, {where}", flush=True)
    grade_students(course, settings, students, args.jobs, args.submission_timeout,
                   args.no_sandbox, scheduler=args.scheduler)
    return report(args)


def report(args) -> int:
    course = Path(args.course).expanduser().resolve()
    csv_path, txt_path = write_report(course, _settings(course))
    print(txt_path.read_text() + f"\nWrote {csv_path} and {txt_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnlab_grade.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="make and check the course folder")
    s.add_argument("course")
    s.add_argument("--solutions", default=str(REPO / "solutions" / f"{A}.ipynb"),
                   help="the instructor notebook (default: this repository's solution)")
    s.add_argument("--profile", default="quick", help="cnnlab profile for grading (quick)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--data", help="CIFAR-10 folder or ImageFolder archive ($CNNLAB_DATA)")
    g.add_argument("--synthetic", action="store_true", help="made-up images (trials, CI)")
    s.add_argument("--checkpoint", help="a model file to use instead of training")
    s.add_argument("--instructor-cell-timeout", type=int, default=300, metavar="S")
    s.add_argument("--student-cell-timeout", type=int, default=60, metavar="S")
    s.add_argument("--submission-timeout", type=int, default=600, metavar="S")
    s.add_argument("--kernel-memory", type=int, default=4096, metavar="MB",
                   help="memory limit of one student kernel (4096 MB)")
    s.add_argument("--no-self-check", action="store_true", help="skip grading the solution")
    s.add_argument("--no-memo", action="store_true",
                   help="do not save the solution's results for the kernels to read")
    s.add_argument("--db-url", metavar="URL", help="the gradebook's database, e.g. postgresql:"
                   "//USER@HOST/DB (default: gradebook.db, SQLite, in the course folder)")
    s.add_argument("--allow-inside-git", action="store_true", help=argparse.SUPPRESS)
    for cmd in (s, gr := sub.add_parser("grade", help="collect, autograde, report")):
        cmd.add_argument("--no-sandbox", action="store_true",
                         help="run student code unconfined (UNSAFE; every report says so)")
    gr.add_argument("course")
    gr.add_argument("--submissions", metavar="DIR", help="folder of <student>/<notebook>.ipynb")
    gr.add_argument("--student", action="append", metavar="ID", help="only this student")
    on = gr.add_mutually_exclusive_group()
    on.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="submissions at a time, on N local Dask worker processes")
    on.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                    help="grade on the workers of this running Dask scheduler")
    gr.add_argument("--submission-timeout", type=float, metavar="S",
                    help="override the course's wall-clock limit per submission")
    rep = sub.add_parser("report", help="rewrite reports/grades.csv and report.txt")
    rep.add_argument("course")
    un = sub.add_parser("unpack", help="an LMS archive's regular files into a folder")
    un.add_argument("archive", help="a .zip or .tar(.gz) archive")
    un.add_argument("dest", help="the folder to write (made if missing)")
    un.add_argument("--max-mb", type=float, default=sandbox.DEFAULTS["max_submission_mb"],
                    help="largest file written (20 MB)")
    fb = sub.add_parser("feedback", help="nbgrader generate_feedback, bounded per student")
    fb.add_argument("course")
    fb.add_argument("--student", action="append", metavar="ID", help="only this student")
    fb.add_argument("--jobs", type=int, default=1, metavar="N", help="students at a time")
    fb.add_argument("--timeout", type=float, metavar="S",
                    help="time limit per student (the course's feedback_timeout, 300 s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"setup": setup, "grade": grade, "report": report, "feedback": feedback,
                "unpack": unpack}[args.command](args)
    except (GradingError, sandbox.SandboxError, bounds.ArchiveError) as exc:
        print(f"cnnlab_grade.py {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
