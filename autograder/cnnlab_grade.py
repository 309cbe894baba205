#!/usr/bin/env python
"""The cnnlab instructor command: set up the nbgrader course, grade submissions, report.

    python autograder/cnnlab_grade.py setup  COURSE [--synthetic | --data PATH] [--profile quick]
    python autograder/cnnlab_grade.py grade  COURSE [--submissions DIR] [--student ID ...]
    python autograder/cnnlab_grade.py report COURSE

``setup`` makes the nbgrader course folder COURSE (outside any git checkout): it copies
the configuration, puts ``solutions/cnn_interpretability.ipynb`` in ``source/``, runs
``nbgrader generate_assignment`` (release in ``release/``, gradebook ``gradebook.db``),
checks the release against ``lessons/``, trains (or reuses) the course model once into
``COURSE/checkpoints/``, and grades the solution and the blank release as a self-check.

``grade`` copies ``DIR/<student>/<notebook>.ipynb`` into ``submitted/`` (or takes what
``nbgrader collect`` put there), repairs stripped nbgrader metadata from the release,
records edited or deleted locked cells and student code that reaches into the grading,
autograds every submission in a separate process under an overall time limit, re-checks
the autograded answers outside the student's kernel, and writes the report.

``report`` rewrites ``COURSE/reports/grades.csv`` and ``report.txt`` from the gradebook
(run it again after manual grading in formgrader to include the written answers).

Every submission ends in one of three statuses: ``graded``; ``tampered`` (locked cells
edited or deleted, grading metadata changed, or code that rebinds or patches what the
tests use; the score is computed on the restored notebook and any test the re-check
refutes gets 0); ``ungradable`` (dead kernel, a cell that ignores interrupts, the overall
time limit, no readable notebook): no score, never a silent 0.

POSIX only (process groups). See autograder/README.md for the whole workflow.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import nbformat  # noqa: E402

from integrity import check_and_repair, protected_names  # noqa: E402

ASSIGNMENT = "cnn_interpretability"
COURSE_ID = "cnnlab"
COURSE_FILES = ("nbgrader_config.py", "cnnlab_nbgrader.py", "recheck.py")
SELF_CHECK = ("selfcheck-solution", "selfcheck-blank")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
WORKER_START_S = 120  # allowance for the grading process to start (imports, database)


class GradingError(RuntimeError):
    """A problem the instructor must fix before grading can go on."""


# ---------------------------------------------------------------------------
# course folder
# ---------------------------------------------------------------------------

def _settings_path(course: Path) -> Path:
    return course / "cnnlab_course.json"


def load_settings(course: Path) -> dict:
    path = _settings_path(course)
    if not path.exists():
        raise GradingError(f"{course} is not a cnnlab course folder (no {path.name}); "
                           f"run: python {Path(__file__).name} setup {course}")
    from cnnlab_nbgrader import load_settings as _load
    return _load(course)


def _inside_git(path: Path) -> Path | None:
    for p in [path, *path.parents]:
        if (p / ".git").exists():
            return p
    return None


def _nbgrader_env(settings: dict | None = None) -> dict:
    """Environment for nbgrader subprocesses: the venv's bin on PATH (nbgrader runs
    alembic from PATH) and the kernel's variables."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if settings:
        from cnnlab_nbgrader import kernel_environment
        env.update(kernel_environment(settings))
    return env


def _ensure_cnnlab_importable() -> str | None:
    """Import path of cnnlab when it is not installed (a checkout), else None."""
    if importlib.util.find_spec("cnnlab") is not None:
        return None
    if (REPO / "cnnlab" / "__init__.py").exists():
        sys.path.insert(0, str(REPO))
        return str(REPO)
    raise GradingError("cnnlab is not installed: pip install -e . in the repository first.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cells_signature(nb) -> list:
    """What must agree between two releases: every cell's type, id, source and nbgrader
    metadata (outputs and execution counts are cleared in a release anyway)."""
    return [(c.cell_type, c.get("id"), c.source, c.get("metadata", {}).get("nbgrader"))
            for c in nb.cells]


def compare_release(release: Path, lessons: Path) -> list[str]:
    """Differences between the generated release and the committed lesson."""
    a = nbformat.read(release, as_version=4)
    b = nbformat.read(lessons, as_version=4)
    sa, sb = cells_signature(a), cells_signature(b)
    diffs = []
    if len(sa) != len(sb):
        diffs.append(f"{len(sa)} cells in the release, {len(sb)} in {lessons}")
    for k, (x, y) in enumerate(zip(sa, sb)):
        if x != y:
            what = [n for n, u, v in zip(("type", "id", "source", "nbgrader metadata"), x, y)
                    if u != v]
            diffs.append(f"cell {k + 1} ({x[1]}): {', '.join(what)} differ")
    return diffs


def solution_submission(release, source):
    """The release with every answer cell holding the solution's answer: what a
    perfect student hands in (solution delimiters removed)."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    answers = {}
    for c in source.cells:
        meta = c.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in c.source.splitlines()
                     if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            answers[meta["grade_id"]] = "\n".join(lines)
    for c in nb.cells:
        gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers:
            c.source = answers[gid]
    return nb


def setup(args) -> int:
    course = Path(args.course).expanduser().resolve()
    git = _inside_git(course)
    if git and not args.allow_inside_git:
        raise GradingError(
            f"{course} is inside the git checkout {git}: the gradebook and student work must "
            "stay out of version control. Pick a folder elsewhere (or --allow-inside-git).")
    solutions = Path(args.solutions).resolve()
    if not solutions.exists():
        raise GradingError(f"No solution notebook at {solutions}.")
    cnnlab_path = _ensure_cnnlab_importable()
    course.mkdir(parents=True, exist_ok=True)
    for name in COURSE_FILES:
        shutil.copy2(HERE / name, course / name)
    src = course / "source" / ASSIGNMENT
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy2(solutions, src / f"{ASSIGNMENT}.ipynb")

    data = args.data or (None if args.synthetic else os.environ.get("CNNLAB_DATA"))
    settings = {
        "course_id": COURSE_ID,
        "assignment": ASSIGNMENT,
        "profile": args.profile,
        "source": "synthetic" if args.synthetic else "auto",
        "data": str(Path(data).expanduser().resolve()) if data else None,
        "cache": os.environ.get("CNNLAB_CACHE"),
        "checkpoints": str(course / "checkpoints"),
        "cnnlab_path": cnnlab_path,
        "instructor_cell_timeout": args.instructor_cell_timeout,
        "student_cell_timeout": args.student_cell_timeout,
        "submission_timeout": args.submission_timeout,
        "solutions": str(solutions),
    }
    _settings_path(course).write_text(json.dumps(settings, indent=2))

    print(f"[1/4] nbgrader generate_assignment {ASSIGNMENT} (course {course})", flush=True)
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT,
                          "--force"], cwd=course, env=_nbgrader_env(settings),
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise GradingError("nbgrader generate_assignment failed:\n" + run.stdout + run.stderr)
    release = course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    lessons = solutions.parent.parent / "lessons" / f"{ASSIGNMENT}.ipynb"
    if lessons.exists():
        diffs = compare_release(release, lessons)
        if diffs:
            print(f"WARNING: the release differs from {lessons} (regenerate the lessons):")
            for d in diffs[:10]:
                print("   ", d)
        else:
            print(f"      release == {lessons}")

    print(f"[2/4] the course model ({args.profile} profile), trained once for every "
          "submission", flush=True)
    os.environ.update(_nbgrader_env(settings))  # this process loads data like the kernel
    import cnnlab
    from cnnlab.train import default_checkpoint
    config = cnnlab.get_config(args.profile)
    train, test = cnnlab.load_lab_data(config, settings["data"], settings["source"])
    path = default_checkpoint(config, train.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        shutil.copy2(args.checkpoint, path)
    _, info = cnnlab.train_or_load(config, train, test, path, progress=True)
    settings["checkpoint"] = str(path)
    settings["model_accuracy"] = info["metrics"].get("accuracy")
    settings["release_sha256"] = _sha256(release)
    _settings_path(course).write_text(json.dumps(settings, indent=2))
    print(f"      {path} ({'reused' if info['reused'] else 'trained'}; test accuracy "
          f"{info['metrics'].get('accuracy', float('nan')):.1%})")

    if args.no_self_check:
        print("[3/4] self-check skipped")
    else:
        print("[3/4] self-check: grading the solution and the blank release", flush=True)
        self_check(course, settings)
    print(f"[4/4] ready. Students get {release}\n      Next: python "
          f"{os.path.relpath(Path(__file__).resolve())} grade {course} --submissions DIR")
    return 0


def self_check(course: Path, settings: dict) -> dict:
    """Grade the solution (must pass every test) and the blank release (must pass none),
    then remove both from the gradebook. Raises GradingError on any surprise."""
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    source = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    ckpt_dir = Path(settings["checkpoints"])
    before = {p.name: _sha256(p) for p in ckpt_dir.iterdir() if p.is_file()}
    notebooks = {SELF_CHECK[0]: solution_submission(release, source), SELF_CHECK[1]: release}
    for sid, nb in notebooks.items():
        dest = course / "submitted" / sid / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dest)
    try:
        results = grade_students(course, settings, list(SELF_CHECK), quiet=True)
        rows = {r["student"]: r for r in build_rows(course, settings, list(SELF_CHECK))}
        problems = []
        sol, blank = rows[SELF_CHECK[0]], rows[SELF_CHECK[1]]
        for name, row in (("solution", sol), ("blank release", blank)):
            if row["status"] != "graded":
                problems.append(f"the {name} was {row['status']}: {row['details']}")
        if sol["auto"] != sol["auto_max"]:
            problems.append(f"the solution scored {sol['auto']}/{sol['auto_max']}: "
                            f"{sol['per_cell']} {sol['details']}")
        if blank["auto"] not in (0, 0.0):
            problems.append(f"the blank release scored {blank['auto']}: {blank['per_cell']}")
        missing = [t for t, (ok, _) in results[SELF_CHECK[0]].get("recheck", {}).items() if not ok]
        if missing or not results[SELF_CHECK[0]].get("recheck"):
            problems.append("the independent re-check did not confirm the solution's answers "
                            f"({missing or 'no export'}): does the notebook load the course "
                            "checkpoint?")
        after = {p.name: _sha256(p) for p in ckpt_dir.iterdir() if p.is_file()}
        if after != before:
            problems.append(f"grading changed {ckpt_dir}: the notebook retrained the model "
                            "instead of reusing the course checkpoint")
        record = {"checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "passed": not problems, "problems": problems,
                  "solution": {**sol, "seconds": results[SELF_CHECK[0]]["grading"].get("seconds"),
                               "recheck": results[SELF_CHECK[0]].get("recheck")},
                  "blank": {**blank, "seconds": results[SELF_CHECK[1]]["grading"].get("seconds")}}
        (course / "cnnlab" / "selfcheck.json").write_text(json.dumps(record, indent=1, default=str))
        if sol["auto"] is not None and blank["auto"] is not None:
            print(f"      solution {sol['auto']:g}/{sol['auto_max']:g} (autograded in "
                  f"{record['solution']['seconds']:.1f} s), blank release "
                  f"{blank['auto']:g}/{blank['auto_max']:g}")
        if problems:
            raise GradingError("Self-check failed:\n  " + "\n  ".join(problems))
        return results
    finally:
        forget_students(course, settings, list(SELF_CHECK))


def forget_students(course: Path, settings: dict, students: list[str]) -> None:
    """Remove students from the gradebook and from every course folder."""
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(_db_url(course), settings["course_id"]) as gb:
        for sid in students:
            try:
                gb.remove_submission(settings["assignment"], sid)
            except MissingEntry:
                pass
            try:
                gb.remove_student(sid)
            except MissingEntry:
                pass
    for sid in students:
        for folder in ("submitted", "autograded", "feedback"):
            shutil.rmtree(course / folder / sid, ignore_errors=True)
        for sub in ("status", "answers", "progress", "originals", "logs"):
            for p in (course / "cnnlab" / sub).glob(f"{sid}.*"):
                p.unlink()


def _db_url(course: Path) -> str:
    return f"sqlite:///{course / 'gradebook.db'}"


# ---------------------------------------------------------------------------
# collecting and preparing submissions
# ---------------------------------------------------------------------------

def _status_path(course: Path, sid: str) -> Path:
    return course / "cnnlab" / "status" / f"{sid}.json"


def _read_status(course: Path, sid: str) -> dict:
    p = _status_path(course, sid)
    return json.loads(p.read_text()) if p.exists() else {"student": sid}


def _write_status(course: Path, sid: str, status: dict) -> None:
    p = _status_path(course, sid)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(status, indent=1, default=str))


def collect(course: Path, settings: dict, folder: Path) -> list[str]:
    """Copy ``folder/<student>/<notebook>.ipynb`` into ``submitted/``; returns the ids."""
    assignment = settings["assignment"]
    students = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        sid = entry.name
        if not STUDENT_ID.match(sid) or sid in SELF_CHECK:
            print(f"skipping {entry}: not a usable student id (letters, digits, . _ @ + -)")
            continue
        students.append(sid)
        notebooks = sorted(p for p in entry.rglob("*.ipynb")
                           if ".ipynb_checkpoints" not in p.parts)
        exact = [p for p in notebooks if p.name == f"{assignment}.ipynb"]
        chosen = exact[0] if len(exact) == 1 else notebooks[0] if len(notebooks) == 1 else None
        status = {"student": sid, "collected_from": str(entry),
                  "refuted": _read_status(course, sid).get("refuted") or []}
        dest_dir = course / "submitted" / sid / assignment
        if chosen is None:
            why = ("no notebook in the submission folder" if not notebooks else
                   f"{len(notebooks)} notebooks, none named {assignment}.ipynb: "
                   + ", ".join(p.name for p in notebooks))
            status["collect_problem"] = why
            shutil.rmtree(dest_dir, ignore_errors=True)
            _write_status(course, sid, status)
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(chosen, dest_dir / f"{assignment}.ipynb")
        original = course / "cnnlab" / "originals" / f"{sid}.ipynb"
        original.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(chosen, original)
        status["notebook"] = chosen.name
        status["original_sha256"] = _sha256(original)
        _write_status(course, sid, status)
    return students


def submitted_students(course: Path, settings: dict) -> list[str]:
    """Students with a submission folder or a recorded collection problem."""
    ids = set()
    sub = course / "submitted"
    if sub.exists():
        ids |= {p.name for p in sub.iterdir() if (p / settings["assignment"]).is_dir()}
    status_dir = course / "cnnlab" / "status"
    if status_dir.exists():
        ids |= {p.stem for p in status_dir.glob("*.json")}
    return sorted(ids - set(SELF_CHECK))


def prepare(course: Path, settings: dict, sid: str, release, protected) -> dict:
    """Repair and check one submission in place; returns its status record."""
    assignment = settings["assignment"]
    status = _read_status(course, sid)
    for key in ("integrity", "grading", "recheck", "refuted", "cell_errors", "environment"):
        status.pop(key, None)
    path = course / "submitted" / sid / assignment / f"{assignment}.ipynb"
    original = course / "cnnlab" / "originals" / f"{sid}.ipynb"
    if not path.exists():
        status["grading"] = {"outcome": "not-run", "reason": status.get("collect_problem")
                             or f"no {assignment}.ipynb in submitted/{sid}/"}
        return status
    # a notebook that is not the one we repaired last time is a new original
    if status.get("repaired_sha256") != _sha256(path) or not original.exists():
        original.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, original)
        status["original_sha256"] = _sha256(original)
    try:
        nb = nbformat.read(original, as_version=4)
    except Exception as exc:  # not JSON, not a notebook
        status["grading"] = {"outcome": "not-run",
                             "reason": f"not a readable notebook ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:120] if str(exc) else ''})"}
        return status
    try:
        repaired, integrity = check_and_repair(nb, release, protected)
        nbformat.write(repaired, path)
    except Exception as exc:  # a notebook too damaged to repair must not stop the others
        status["grading"] = {"outcome": "not-run",
                             "reason": f"the notebook could not be repaired ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:120] if str(exc) else ''})"}
        return status
    status["integrity"] = integrity.to_dict()
    status["repaired_sha256"] = _sha256(path)
    return status


# ---------------------------------------------------------------------------
# autograding in a separate process, under a time limit
# ---------------------------------------------------------------------------

def _worker(course: str, fd: str, students: list[str]) -> int:
    """Autograde ``students`` one by one with nbgrader's API; report on file descriptor fd."""
    fd_n = int(fd)
    os.set_inheritable(fd_n, False)  # the kernels must not write to it
    out = os.fdopen(fd_n, "w", buffering=1)
    os.chdir(course)

    def send(**msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=course).load_config()
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    assignment = load_settings(Path(course))["assignment"]
    for sid in students:
        send(event="start", student=sid, t=time.time())
        start = time.perf_counter()
        result = api.autograde(assignment, sid, force=True, create=True)
        send(event="done", student=sid, success=bool(result.get("success")),
             log=result.get("log", "")[-20000:], error=result.get("error", "")[-5000:],
             seconds=time.perf_counter() - start)
    return 0


def _kill_tree(pid: int) -> None:
    """Kill a process and every descendant (kernels run in their own sessions)."""
    try:
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
    except ImportError:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _classify_failure(text: str) -> str:
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died (the notebook crashed, ran out of memory or called exit)"
    if ("Timeout waiting for IOPub" in text or "UnresponsiveKernelError" in text
            or "CellTimeoutError" in text or "became unresponsive" in text):
        return "a cell did not stop when interrupted at its time limit (it ignores interrupts)"
    if "kernel_info" in text or "Kernel didn't respond" in text:
        return "the kernel did not start"
    if "ValidationError" in text or "failed to validate" in text:
        return "nbgrader could not read the notebook's metadata"
    errors = [ln.strip() for ln in text.splitlines()
              if re.match(r"^\s*[\w.]*(Error|Exception)\b.*:", ln) and "NbGraderException" not in ln]
    last = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "nbgrader failed: " + ((errors or last or ["no message"])[-1][:200])


def _environment_files(course: Path, settings: dict) -> list[Path]:
    import cnnlab
    files = sorted(Path(cnnlab.__file__).parent.glob("*.py"))
    files += [course / n for n in COURSE_FILES] + [_settings_path(course)]
    files += [course / "source" / settings["assignment"] / f"{settings['assignment']}.ipynb",
              course / "release" / settings["assignment"] / f"{settings['assignment']}.ipynb"]
    if settings.get("checkpoint"):
        files.append(Path(settings["checkpoint"]))
    return files


def _fingerprint(files: list[Path]) -> dict:
    return {str(p): (_sha256(p) if p.exists() else None) for p in files}


def run_autograde(course: Path, settings: dict, students: list[str], limit: float,
                  log_path: Path, on_result=None) -> dict[str, dict]:
    """Autograde students in worker processes; each submission gets ``limit`` seconds.

    A submission over its limit has its worker and kernels killed, is recorded as
    timed out, and the remaining students go to a fresh worker. ``on_result(student,
    outcome)`` is called after each; when it returns True grading stops and the rest
    are recorded as not run. Returns student -> {"outcome": "graded" | "failed" |
    "killed" | "crashed" | "not-run", ...}.
    """
    results: dict[str, dict] = {}
    queue = list(students)
    stopped = {"by": None}

    def record(sid, outcome):
        results[sid] = outcome
        queue.remove(sid)
        if on_result and on_result(sid, outcome):
            stopped["by"] = sid

    env = _nbgrader_env(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        while queue:
            r, w = os.pipe()
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "_worker", str(course), str(w),
                 *queue], pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env=env, cwd=course)
            os.close(w)
            buf = b""
            current, deadline = None, time.monotonic() + WORKER_START_S + limit
            eof = False
            while not eof:
                wait = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([r], [], [], min(wait, 1.0))
                if ready:
                    chunk = os.read(r, 65536)
                    if not chunk:
                        eof = True
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            continue
                        if msg.get("event") == "start" and msg.get("student") in queue:
                            current = msg["student"]
                            started = time.monotonic()
                            deadline = started + limit
                        elif msg.get("event") == "done" and msg.get("student") == current:
                            outcome = {"outcome": "graded" if msg["success"] else "failed",
                                       "seconds": round(msg["seconds"], 2)}
                            if not msg["success"]:
                                outcome["reason"] = _classify_failure(
                                    msg.get("log", "") + "\n" + msg.get("error", ""))
                            _save_log(course, current, msg.get("log", "") + msg.get("error", ""))
                            record(current, outcome)
                            current = None
                            deadline = time.monotonic() + limit + 30
                            if stopped["by"]:
                                _kill_tree(proc.pid)
                                eof = True
                                break
                elif time.monotonic() >= deadline:
                    _kill_tree(proc.pid)
                    if current is None:  # the worker hung between submissions
                        current = queue[0]
                    record(current, {"outcome": "killed", "seconds": round(limit, 1),
                                     "reason": f"stopped at the time limit of {limit:g} s for "
                                               "one submission"})
                    current = None
                    break
            os.close(r)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
            if stopped["by"]:
                for sid in list(queue):
                    results[sid] = {"outcome": "not-run", "reason": "grading stopped: the "
                                    f"grading environment was modified while grading {stopped['by']}"}
                queue.clear()
            elif eof and queue:
                _kill_tree(proc.pid)  # kernels left behind
                record(current or queue[0], {
                    "outcome": "crashed",
                    "reason": f"the grading process exited ({proc.returncode}); see {log_path}"})
    return results


def _save_log(course: Path, sid: str, text: str) -> None:
    p = course / "cnnlab" / "logs" / f"{sid}.log"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _cell_problems(course: Path, settings: dict, sid: str) -> list[dict]:
    """Errors and interrupted cells in the autograded notebook."""
    a = settings["assignment"]
    path = course / "autograded" / sid / a / f"{a}.ipynb"
    if not path.exists():
        return []
    nb = nbformat.read(path, as_version=4)
    out = []
    for k, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if not errors:
            continue
        meta = c.get("metadata", {}).get("nbgrader", {})
        name = meta.get("grade_id") or f"cell {k + 1}"
        timed_out = any(o.get("ename") == "CellTimeoutError" for o in errors)
        out.append({"cell": name, "error": errors[0].get("ename"), "timed_out": timed_out,
                    "test": bool(meta.get("grade") and not meta.get("solution"))})
    return out


def _check_course_model(settings: dict) -> None:
    """The course model must still be the one the notebook will reuse; a model that
    no longer matches the profile (cnnlab updated since setup) would be retrained in
    every submission, and renamed away by the first."""
    from cnnlab import get_config, load_checkpoint
    from cnnlab.train import TRAINING_FIELDS

    path = Path(settings.get("checkpoint") or "")
    if not path.is_file():
        raise GradingError(f"The course model {path} is missing: rerun setup.")
    _, info = load_checkpoint(path)
    config = get_config(settings["profile"])
    saved = info.get("config")
    differ = [f for f in TRAINING_FIELDS if saved is None or getattr(saved, f) != getattr(config, f)]
    if differ:
        raise GradingError(
            f"The course model {path} was trained with other settings ({', '.join(differ)}) "
            f"than cnnlab's current {settings['profile']!r} profile (was cnnlab updated "
            "since setup?): every notebook would retrain it. Rerun setup.")


def _course_model(settings: dict):
    from cnnlab import get_device, load_checkpoint
    model, _ = load_checkpoint(settings["checkpoint"], map_location=get_device(verbose=False))
    return model


def grade_students(course: Path, settings: dict, students: list[str], limit: float | None = None,
                   quiet: bool = False) -> dict[str, dict]:
    """Prepare, autograde, re-check and record ``students``; returns their status records."""
    from cnnlab_nbgrader import answers_path, progress_path
    from recheck import recheck

    _ensure_cnnlab_importable()
    for name in COURSE_FILES:  # the course runs this checkout's grading code
        if _sha256(HERE / name) != _sha256(course / name):
            shutil.copy2(HERE / name, course / name)
            print(f"Updated {course / name} from {HERE / name}")
    a = settings["assignment"]
    release = nbformat.read(course / "release" / a / f"{a}.ipynb", as_version=4)
    source = nbformat.read(course / "source" / a / f"{a}.ipynb", as_version=4)
    if settings.get("release_sha256") and _sha256(course / "release" / a / f"{a}.ipynb") != \
            settings["release_sha256"]:
        raise GradingError("release/ changed since setup: rerun setup.")
    protected = protected_names(release, source)
    _check_course_model(settings)
    limit = float(limit or settings["submission_timeout"])
    statuses = {}
    for sid in students:
        statuses[sid] = prepare(course, settings, sid, release, protected)
        _clear_overrides(course, settings, sid, statuses[sid])
    gradable = [s for s in students if "grading" not in statuses[s]]
    files = _environment_files(course, settings)
    baseline = _fingerprint(files)
    changed_env: dict[str, list[str]] = {}

    def after_each(sid, outcome) -> bool:
        """Print progress; stop everything if the grading environment was modified."""
        if not quiet:
            print(f"  {sid}: {outcome['outcome']} ({outcome.get('seconds', '?')} s)", flush=True)
        now = _fingerprint(files)
        diff = [str(p) for p in files if now[str(p)] != baseline[str(p)]]
        if diff:
            changed_env[sid] = diff
            print(f"STOPPING: grading {sid} modified {', '.join(diff)}. Restore them (rerun "
                  "setup, reinstall cnnlab) before grading the others.", file=sys.stderr)
            return True
        return False

    if not quiet and gradable:
        print(f"Autograding {len(gradable)} submissions (at most {limit:g} s each)...", flush=True)
    results = run_autograde(course, settings, gradable, limit,
                            course / "cnnlab" / "grading.log", after_each)
    model = None
    for sid in gradable:
        st = statuses[sid]
        out = results.get(sid, {"outcome": "not-run", "reason": "not graded"})
        prog = progress_path(course, sid)
        if out["outcome"] in ("failed", "killed", "crashed") and prog.exists():
            out["cell"] = json.loads(prog.read_text()).get("cell")
        st["grading"] = out
        if sid in changed_env:
            st["environment"] = changed_env[sid]
        if out["outcome"] != "graded":
            shutil.rmtree(course / "autograded" / sid, ignore_errors=True)
            continue
        st["cell_errors"] = _cell_problems(course, settings, sid)
        if model is None:
            model = _course_model(settings)
        st["recheck"] = recheck(answers_path(course, sid), model)
        st["refuted"] = _apply_recheck(course, settings, sid, st["recheck"])
    for sid in students:
        st = statuses[sid]
        st["graded_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        _write_status(course, sid, st)
    return statuses


def _apply_recheck(course: Path, settings: dict, sid: str, rechecked: dict) -> list[str]:
    """Tests nbgrader passed but the re-check refutes: set to 0 in the gradebook (a manual
    override the instructor sees in formgrader). Returns their ids."""
    from nbgrader.api import Gradebook
    refuted = []
    with Gradebook(_db_url(course), settings["course_id"]) as gb:
        nb = gb.find_submission_notebook(settings["assignment"], settings["assignment"], sid)
        for g in nb.grades:
            ok, _ = rechecked.get(g.name, (True, ""))
            if g.auto_score and not ok:
                g.manual_score = 0.0
                refuted.append(g.name)
        gb.db.commit()
    return refuted


def _clear_overrides(course: Path, settings: dict, sid: str, status: dict) -> None:
    """Undo the overrides of a previous run before grading again."""
    previous = _read_status(course, sid).get("refuted") or []
    if not previous:
        return
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(_db_url(course), settings["course_id"]) as gb:
        try:
            nb = gb.find_submission_notebook(settings["assignment"], settings["assignment"], sid)
        except MissingEntry:
            return
        for g in nb.grades:
            if g.name in previous:
                g.manual_score = None
        gb.db.commit()


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def _exercise(name: str) -> str:
    m = re.match(r"(ex\d+)_", name)
    return m.group(1) if m else name


def build_rows(course: Path, settings: dict, students: list[str]) -> list[dict]:
    """One row per student: status, scores per exercise, details."""
    from nbgrader.api import Gradebook, MissingEntry
    a = settings["assignment"]
    rows = []
    with Gradebook(_db_url(course), settings["course_id"]) as gb:
        nb_def = gb.find_notebook(a, a)
        solution_names = {c.name for c in nb_def.solution_cells}
        grade_cells = sorted(nb_def.grade_cells, key=lambda c: _exercise(c.name))
        auto_cells = [c for c in grade_cells if c.name not in solution_names]
        manual_cells = [c for c in grade_cells if c.name in solution_names]
        for sid in students:
            st = _read_status(course, sid)
            grading = st.get("grading", {"outcome": "not-run", "reason": "not graded yet"})
            integ = st.get("integrity") or {}
            from integrity import Integrity
            integrity = Integrity(**integ) if integ else Integrity()
            row = {"student": sid, "auto_max": sum(c.max_score for c in auto_cells),
                   "manual_max": sum(c.max_score for c in manual_cells), "per_cell": {},
                   "auto": None, "manual": None, "total": None}
            details, notes = [], []
            try:
                sub = gb.find_submission_notebook(a, a, sid) if grading["outcome"] == "graded" \
                    else None
            except MissingEntry:
                sub = None
            if grading["outcome"] != "graded" or sub is None:
                status = "ungradable"
                reason = grading.get("reason", "not graded")
                if grading.get("cell"):
                    reason += f" (running {grading['cell']})"
                details.append(reason)
            else:
                grades = {g.name: g for g in sub.grades}
                auto = 0.0
                unscored = []
                for c in auto_cells:
                    g = grades[c.name]
                    if g.score is None or (g.needs_manual_grade and g.manual_score is None):
                        unscored.append(c.name)
                        row["per_cell"][_exercise(c.name)] = None
                        continue
                    row["per_cell"][_exercise(c.name)] = g.score
                    auto += g.score
                row["auto"] = None if unscored else auto
                manual = 0.0
                for c in manual_cells:
                    g = grades[c.name]
                    row["per_cell"][_exercise(c.name)] = g.score if not g.needs_manual_grade \
                        or g.manual_score is not None else None
                    manual = None if manual is None or row["per_cell"][_exercise(c.name)] is None \
                        else manual + g.score
                row["manual"] = manual
                row["total"] = None if manual is None or unscored else auto + manual
                status = "graded"
                if unscored:  # nbgrader left a test without a score: never show it as 0
                    status = "ungradable"
                    details.append("nbgrader left " + ", ".join(unscored) + " without a score")
            tamper = integrity.tamper_details()
            for t in st.get("refuted") or []:
                msg = (st.get("recheck") or {}).get(t, [False, ""])[1]
                msg = msg if len(msg) <= 90 else msg[:87].rsplit(" ", 1)[0] + "..."
                tamper.append(f"{t} passed inside the notebook but the independent re-check "
                              f"fails it (\"{msg}\"): set to 0")
            if status == "graded" and row["auto"] and not st.get("recheck"):
                tamper.append("the answers could not be re-checked outside the notebook (its "
                              "export cell failed): the points are unconfirmed")
            if st.get("environment"):
                tamper.append("modified the grading environment: " + ", ".join(st["environment"]))
            if tamper and status == "graded":
                status = "tampered"
            if status == "ungradable" and tamper:
                details.extend("also: " + t for t in tamper)
            else:
                details.extend(tamper)
            notes.extend(integrity.repair_details())
            raised: dict[str, list[str]] = {}
            blank = []
            for e in st.get("cell_errors") or []:
                if e["timed_out"]:
                    notes.append(f"{e['cell']} interrupted at its time limit")
                elif e["error"] == "NotImplementedError" and e["cell"].endswith("_answer"):
                    blank.append(e["cell"])  # the release's stub, left as it was
                elif not e["test"]:
                    raised.setdefault(e["error"], []).append(e["cell"])
            if blank:
                notes.append("left blank: " + ", ".join(blank))
            notes.extend(f"{', '.join(cells)} raised {error}" for error, cells in raised.items())
            row.update(status=status, details="; ".join(details), notes="; ".join(notes),
                       seconds=grading.get("seconds"))
            rows.append(row)
    return rows


def _fmt(x) -> str:
    if x is None:
        return ""
    return f"{x:g}" if isinstance(x, float) else str(x)


def _columns(course: Path, settings: dict) -> tuple[list[str], list[str]]:
    """Exercise labels of the autograded tests and of the written answers, in order."""
    from nbgrader.api import Gradebook
    a = settings["assignment"]
    with Gradebook(_db_url(course), settings["course_id"]) as gb:
        nb = gb.find_notebook(a, a)
        solutions = {c.name for c in nb.solution_cells}
        key = lambda e: (len(e), e)  # noqa: E731 (ex2 before ex10)
        auto = sorted({_exercise(c.name) for c in nb.grade_cells if c.name not in solutions}, key=key)
        written = sorted({_exercise(c.name) for c in nb.grade_cells if c.name in solutions}, key=key)
    return auto, written


def write_report(course: Path, settings: dict, students: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``reports/grades.csv`` and ``reports/report.txt``; returns their paths."""
    students = submitted_students(course, settings) if students is None else students
    rows = build_rows(course, settings, students)
    auto_ex, written_ex = _columns(course, settings)
    out = course / "reports"
    out.mkdir(exist_ok=True)
    csv_path = out / "grades.csv"
    auto_max = rows[0]["auto_max"] if rows else 0
    manual_max = rows[0]["manual_max"] if rows else 0
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "status", f"autograded_of_{auto_max:g}", *auto_ex,
                    f"written_of_{manual_max:g}", *written_ex,
                    f"total_of_{auto_max + manual_max:g}", "details", "notes"])
        for r in rows:
            w.writerow([r["student"], r["status"], _fmt(r["auto"]),
                        *[_fmt(r["per_cell"].get(e)) for e in auto_ex], _fmt(r["manual"]),
                        *[_fmt(r["per_cell"].get(e)) for e in written_ex], _fmt(r["total"]),
                        r["details"], r["notes"]])
    lines = [f"cnnlab autograding report: {settings['assignment']}, "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {len(rows)} submissions",
             f"(profile {settings['profile']}; autograded out of {auto_max:g}; written answers "
             f"out of {manual_max:g}, '-' until graded in formgrader: run `report` again then)",
             ""]
    head = (f"{'student':20s} {'status':10s} {'auto':>5s} "
            + " ".join(f"{e:>4s}" for e in auto_ex) + " | " + f"{'written':>7s} "
            + " ".join(f"{e:>4s}" for e in written_ex) + f" {'total':>6s}")
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['student'][:20]:20s} {r['status']:10s} {_fmt(r['auto']) or '-':>5s} "
                     + " ".join(f"{_fmt(r['per_cell'].get(e)) or '-':>4s}" for e in auto_ex)
                     + " | " + f"{_fmt(r['manual']) or '-':>7s} "
                     + " ".join(f"{_fmt(r['per_cell'].get(e)) or '-':>4s}" for e in written_ex)
                     + f" {_fmt(r['total']) or '-':>6s}")
    for title, key in (("Could not be graded (no score: fix and grade again, or grade by hand)",
                        "ungradable"),
                       ("Tampered (scored on the restored notebook; review in formgrader)",
                        "tampered")):
        chosen = [r for r in rows if r["status"] == key]
        if chosen:
            lines += ["", title + ":"]
            lines += [f"  {r['student']}: {r['details']}" for r in chosen]
    noted = [r for r in rows if r["notes"]]
    if noted:
        lines += ["", "Notes (repairs, errors and interrupted cells; scores stand):"]
        lines += [f"  {r['student']}: {r['notes']}" for r in noted]
    txt_path = out / "report.txt"
    txt_path.write_text("\n".join(lines) + "\n")
    return csv_path, txt_path


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

def grade(args) -> int:
    course = Path(args.course).expanduser().resolve()
    settings = load_settings(course)
    collected = []
    if args.submissions:
        collected = collect(course, settings, Path(args.submissions).expanduser().resolve())
        print(f"Collected {len(collected)} submissions from {args.submissions}")
    students = args.student or (collected if args.submissions else
                                submitted_students(course, settings))
    if not students:
        raise GradingError(f"No submissions in {course / 'submitted'} (use --submissions DIR).")
    grade_students(course, settings, students, args.submission_timeout)
    csv_path, txt_path = write_report(course, settings)
    print(txt_path.read_text())
    print(f"Wrote {csv_path} and {txt_path}")
    return 0


def report(args) -> int:
    course = Path(args.course).expanduser().resolve()
    settings = load_settings(course)
    csv_path, txt_path = write_report(course, settings)
    print(txt_path.read_text())
    print(f"Wrote {csv_path} and {txt_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnlab_grade.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="make the course folder, release the lab, train the model")
    s.add_argument("course", help="the nbgrader course folder to create (outside git)")
    s.add_argument("--solutions", default=str(REPO / "solutions" / f"{ASSIGNMENT}.ipynb"),
                   help="the instructor notebook (default: solutions/%(prog)s.ipynb)".replace(
                       "%(prog)s", ASSIGNMENT))
    s.add_argument("--profile", default="quick", help="cnnlab profile for grading (quick)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--data", help="CIFAR-10 folder or ImageFolder archive (default: "
                                  "$CNNLAB_DATA, else the official download)")
    g.add_argument("--synthetic", action="store_true", help="made-up images (trials, CI)")
    s.add_argument("--checkpoint", help="an existing model file to use instead of training")
    s.add_argument("--instructor-cell-timeout", type=int, default=300, metavar="S",
                   help="seconds for one locked (instructor) cell (300)")
    s.add_argument("--student-cell-timeout", type=int, default=60, metavar="S",
                   help="seconds for one student cell before it is interrupted (60)")
    s.add_argument("--submission-timeout", type=int, default=600, metavar="S",
                   help="seconds for a whole submission before it is killed (600)")
    s.add_argument("--no-self-check", action="store_true",
                   help="skip grading the solution and the blank release")
    s.add_argument("--allow-inside-git", action="store_true", help=argparse.SUPPRESS)
    gr = sub.add_parser("grade", help="repair, autograde and report the submissions")
    gr.add_argument("course")
    gr.add_argument("--submissions", metavar="DIR",
                    help="folder of <student>/<notebook>.ipynb to collect first")
    gr.add_argument("--student", action="append", metavar="ID",
                    help="grade only this student (repeatable)")
    gr.add_argument("--submission-timeout", type=float, metavar="S",
                    help="override the course's limit for one submission")
    r = sub.add_parser("report", help="rewrite reports/grades.csv and report.txt")
    r.add_argument("course")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker(argv[1], argv[2], argv[3:])
    args = build_parser().parse_args(argv)
    try:
        return {"setup": setup, "grade": grade, "report": report}[args.command](args)
    except GradingError as exc:
        print(f"cnnlab_grade.py {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
