"""Grading on Dask, as an instructor runs it: a small class (right, wrong, blank, a forger,
one whose kernel exits) on a short lesson (the set-up and Exercises 1, 2, 4 and 5 of the
real one: what is tested here is the engine, not the lesson) graded by ``cnnlab_grade.py
grade --jobs 1`` (one local worker process) into a course's SQLite gradebook, then the
same class by ``grade --scheduler`` into a second course whose gradebook is a PostgreSQL
server of the test's own (``setup --db-url``), on a scheduler and two workers started as
separate ``dask scheduler`` / ``dask worker`` commands, one of them killed while it grades.

Both runs must give every student the same score, status, flag and report line, and the
gradebooks as many rows; the killed worker's student is graded again elsewhere and every
student is written once; grading two students again changes nothing and adds no row. A
worker whose bubblewrap is refused its user namespace (a fake ``bwrap`` failing as
Docker's seccomp profile makes it fail) refuses to grade with the cause and the fix, not a
traceback. Where PostgreSQL cannot run, the second course is SQLite and the test of the
shared database says why it skips. The guide's Slurm example (dask-jobqueue's
``SLURMCluster``) runs as written, at one job of one worker, against a fake ``sbatch``, and
``grade --scheduler`` on the address it prints grades a student as the serial run did.

Cost: five short submissions twice, two again and one on the Slurm example's worker (the
untrained course model, made-up images), about ten seconds each; skips, saying why, where
bubblewrap cannot make a sandbox (the Slurm test: where dask-jobqueue is not installed).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader")
pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))
import sandbox  # noqa: E402
import test_autograder as lab  # noqa: E402 (its submissions, checkpoint and runner)

A = lab.A
CLASS = ("right", "wrong", "blank", "forger", "exit")
pytestmark = [m for m in lab.pytestmark if m.name != "slow"]
slow = pytest.mark.slow  # the class graded twice: about three minutes on 2 idle cores
#: the cells of the short lesson: the set-up, then Exercises 1, 2, 4 (with the features it
#: makes) and 5, markdown left out
SHORT = ("setup", "network", "ex1_answer", "ex1_test", "ex2_answer", "ex2_test", "ex4_answer",
         "features", "ex4_test", "ex5_answer", "ex5_test")
FULL = dict(ex1=1, ex2=1, ex4=2, ex5=1)
#: student -> (status, points, {exercise: points}, phrases of its report line) on it
CASES = {"right": ("graded", 5, FULL, []),
         "wrong": ("graded", 3, dict(ex1=0, ex2=1, ex4=2, ex5=0), []),
         "blank": ("graded", 0, dict(ex1=0, ex2=0, ex4=0, ex5=0), ["left blank"]),
         "forger": ("tampered", 3, dict(ex1=0, ex2=1, ex4=2, ex5=0),
                    ["ex5_test passed inside the notebook but the re-check"]),
         "exit": ("ungradable", None, {}, ["the kernel died", "ex2_answer"])}
SECCOMP = ("bwrap: No permissions to create new namespace, likely because the kernel does "
           "not allow non-privileged user namespaces. On e.g. debian this can be enabled "
           "with 'sysctl kernel.unprivileged_userns_clone=1'.")



def WRONG():
    return lab.right(ex1_answer="n_filters = 3", ex5_answer="units = [1, 2, 4, 14, 23, 29, 128]")


def _fake_bwrap(folder: Path) -> Path:
    """A folder whose ``bwrap`` fails the way Docker's default seccomp profile makes it."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "bwrap"
    fake.write_text(f"#!/bin/sh\necho \"{SECCOMP}\" >&2\nexit 1\n")
    fake.chmod(0o755)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``dask ARGS`` in a session of its own (so that it and its workers can be stopped)."""
    return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _cluster(base: Path, env: dict, workers: int, name: str) -> tuple[str, list]:
    """A scheduler and ``workers`` workers, each its own ``dask`` command."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = [_dask(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                    "--no-dashboard"], env, base / f"{name}-scheduler.log")]
    time.sleep(3)
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "autograder"), env["PYTHONPATH"]])}
    procs += [_dask(["worker", address, "--nthreads", "1", "--no-dashboard", "--name",
                     f"{name}-{k}"], env, base / f"{name}-worker-{k}.log")
              for k in range(workers)]
    return address, procs


#: the guide's Slurm example at one job of one worker (5 GB: the guide's 4.5 GB a worker, rounded up), each
#: replaced once: a changed guide fails here rather than going untested
SLURM_SMALL = {"cores=8": "cores=1", "processes=8": "processes=1", 'memory="36GB"': 'memory="5GB"',
               "jobs=4": "jobs=1"}
#: what the test's Python runs after the guide's lines: the job script saved, the cluster
#: held until the test has graded (a line on stdin), then closed as an instructor would
SLURM_AFTER = """
import sys
from pathlib import Path
Path(sys.argv[1] + ".part").write_text(cluster.job_script())
Path(sys.argv[1] + ".part").rename(sys.argv[1])
sys.stdin.readline()
cluster.close()
print("closed", flush=True)
"""


def _guide_slurm() -> str:
    """The ```python block under **Slurm** in the instructor guide, at SLURM_SMALL's sizes."""
    guide = (ROOT / "autograder" / "README.md").read_text()
    found = re.search(r"^\*\*Slurm\*\*.*?^```python\n(.*?)^```", guide, re.S | re.M)
    assert found, "autograder/README.md has no ```python block under **Slurm**"
    code = found.group(1)
    for old, new in SLURM_SMALL.items():
        assert code.count(old) == 1, f"the guide's Slurm example no longer has {old} once:\n{code}"
        code = code.replace(old, new)
    return code


def _fake_slurm(folder: Path) -> Path:
    """A folder with ``sbatch`` and ``scancel`` as Slurm answers them, without Slurm: sbatch
    keeps a copy of the job script (dask-jobqueue deletes its own) and runs it at once in
    the background, in a session of its own, its output to ``job-N.log``, ``#SBATCH`` lines
    ignored; scancel sends SIGTERM to that session (Slurm's first signal), noting the job."""
    bin_ = folder / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "sbatch").write_text(f"""#!/bin/sh
set -e
cd "{folder}"
n=$(( $(cat last 2>/dev/null || echo 1000) + 1 ))
echo $n > last
cp "$1" job-$n.sh
CNNLAB_FAKE_SLURM="{folder}" SLURM_JOB_ID=$n setsid sh -c 'echo $$ > "$1.pid"; exec bash "$1"' \
    sh job-$n.sh > job-$n.log 2>&1 < /dev/null &
while [ ! -s job-$n.sh.pid ]; do sleep 0.1; done
echo "Submitted batch job $n"
""")
    (bin_ / "scancel").write_text(f"""#!/bin/sh
cd "{folder}"
for n in "$@"; do echo $n >> cancelled; kill -TERM -- "-$(cat job-$n.sh.pid)"; done
""")
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    return bin_


def _slurm_jobs_processes(folder: Path) -> list:
    """The processes of _fake_slurm's jobs: in a job's session, or with its mark."""
    import psutil
    sessions = {int(p.read_text()) for p in folder.glob("job-*.sh.pid")}
    found = []
    for proc in psutil.process_iter():
        try:
            if (os.getsid(proc.pid) in sessions
                    or proc.environ().get("CNNLAB_FAKE_SLURM") == str(folder)):
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _rows(course: Path) -> dict[str, dict]:
    with open(course / "reports" / "grades.csv") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def _gradebook_rows(course: Path, db_url: str | None = None) -> dict[str, int]:
    """Rows per table of the course gradebook (students, submissions, grades, comments):
    its ``gradebook.db``, or the database at ``db_url``."""
    import sqlalchemy
    engine = sqlalchemy.create_engine(db_url or f"sqlite:///{course / 'gradebook.db'}")
    try:
        with engine.connect() as db:
            return {t: db.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                    for t in ("student", "submitted_assignment", "submitted_notebook", "grade",
                              "comment")}
    finally:
        engine.dispose()


def _kill_a_grading_worker(workers: list[subprocess.Popen], timeout: float = 600):
    """SIGKILL a worker process (under its nanny) while a kernel of its grading runs,
    a few seconds into it; returns the student it was grading. The kernel is found by
    its launcher's command line (``sandbox.py COURSE/grading/runtime/STUDENT/kernel.json``),
    the worker above it (an nbgrader run forked by the worker's fork server, or started
    by the worker itself) as the ancestor whose parent is a nanny."""
    import psutil
    nannies = {p.pid for p in workers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            cmd = proc.info["cmdline"] or []
            found = [a for a in cmd if a.endswith("kernel.json") and "/grading/runtime/" in a]
            if not found or time.time() - proc.info["create_time"] < 3:
                continue
            try:
                worker = next((p for p in proc.parents() if p.ppid() in nannies), None)
                if worker is None:
                    continue
                worker.kill()
            except psutil.Error:
                continue
            return Path(found[0]).parent.name
        time.sleep(0.5)
    raise AssertionError("no worker was seen grading")


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian's package, else on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own: a temporary folder, a free port, run as ``nobody``
    when the tests run as root (PostgreSQL refuses root); stopped and removed after.
    Gives its URL, or the reason there is none (the class is then graded on SQLite)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        yield None, "psycopg2 is not installed (pip install psycopg2-binary)"
        return
    server = _postgres_bin()
    if server is None:
        yield None, "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        return
    import pwd
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    as_user = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    port, data = _free_port(), folder / "data"
    try:
        subprocess.run([*as_user, server / "initdb", "-D", data, "-U", "cnnlab", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, server / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w",
                        "-o", f"-p {port} -k {folder} -h 127.0.0.1", "start"], check=True,
                       capture_output=True, timeout=120)
        yield f"postgresql+psycopg2://cnnlab@127.0.0.1:{port}/postgres", None
    finally:
        subprocess.run([*as_user, server / "pg_ctl", "-D", data, "-m", "fast", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def class_graded(tmp_path_factory, postgres):
    base = tmp_path_factory.mktemp("dask")
    course, shared = base / "course", base / "shared"
    db_url, no_db = postgres
    env = {**os.environ,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("CNNLAB_DATA", None)
    (base / "probe" / "checkpoints").mkdir(parents=True)
    problems = sandbox.self_check({**sandbox.DEFAULTS, "checkpoints": str(base / "probe" / "checkpoints"),
                                   "course_root": str(base / "probe"), "kernel_memory_mb": 2048})
    if problems:
        pytest.skip("bubblewrap cannot make the grading sandbox here: " + "; ".join(problems))
    (base / "model").mkdir()
    ckpt = subprocess.run([sys.executable, "-c", lab.PSEUDO_PRETRAINED, str(base / "model")], env=env,
                          capture_output=True, text=True, check=True, timeout=600
                          ).stdout.strip().splitlines()[-1]
    solutions = base / "solutions" / lab.SOLUTION.name
    solutions.parent.mkdir()
    lesson = nbformat.read(lab.SOLUTION, as_version=4)
    lesson.cells = [c for c in lesson.cells if c.get("id") in SHORT]
    assert [c.id for c in lesson.cells] == list(SHORT), "a cell of the short lesson is gone"
    nbformat.write(lesson, solutions)
    setup = ["--checkpoint", ckpt, "--synthetic", "--kernel-memory", "2048", "--solutions",
             str(solutions), "--student-cell-timeout", "60",
             "--instructor-cell-timeout", "120", "--submission-timeout", "240"]
    # the self-check (the solution and the blank release graded, then forgotten) runs here,
    # on the short lesson; the second course and test_autograder.py's class skip it
    checked = lab._run(["setup", str(course), *setup], env, timeout=600).stdout
    setup.append("--no-self-check")
    lab._release["path"] = course / "release" / A / f"{A}.ipynb"
    subs = base / "submissions"
    for sid in CLASS:  # wrong without an endless loop: 60 s per cell, few interrupted
        make = {"wrong": WRONG}.get(sid) or lab.SUBMISSIONS[sid]
        (subs / sid).mkdir(parents=True)
        nbformat.write(make(), subs / sid / f"{A}.ipynb")

    serial = lab._run(["grade", str(course), "--submissions", str(subs), "--jobs", "1"], env,
                      timeout=900).stdout
    first, first_rows = _rows(course), _gradebook_rows(course)
    # the same class on a cluster into one PostgreSQL gradebook (SQLite where there is none)
    lab._run(["setup", str(shared), *(["--db-url", db_url] if db_url else []), *setup], env,
             timeout=600)
    address, procs = _cluster(base, env, 2, "lab")
    try:
        grading = subprocess.Popen([sys.executable, str(lab.GRADE), "grade", str(shared),
                                    "--submissions", str(subs), "--scheduler", address], env=env,
                                   text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        killed = _kill_a_grading_worker(procs[1:])
        distributed, errors = grading.communicate(timeout=900)
        print(distributed, errors[-3000:])
        assert grading.returncode == 0, distributed[-3000:] + errors[-3000:]
    finally:
        _stop(procs)
    second, second_rows = _rows(shared), _gradebook_rows(shared, db_url)
    # graded again (two local workers): no score changes, no row is added
    lab._run(["grade", str(shared), "--jobs", "2", "--student", "blank", "--student", "wrong"],
             env, timeout=600)
    return dict(course=course, shared=shared, db_url=db_url, no_db=no_db, base=base, env=env,
                checked=checked,
                serial=serial, first=first, setup=setup, submissions=subs,
                first_rows=first_rows, distributed=distributed, killed=killed,
                second=second, second_rows=second_rows,
                third=_rows(shared), third_rows=_gradebook_rows(shared, db_url))


@slow
def test_serial_grades_are_the_lessons(class_graded):
    """--jobs 1 (one local Dask worker) grades each student as test_autograder.py's class
    run does on the whole lesson, for the exercises the short one has."""
    for sid in CLASS:
        status, score, per_ex, phrases = CASES[sid]
        row = class_graded["first"][sid]
        text = row["details"] + " | " + row["notes"]
        assert row["status"] == status, text
        auto = next(k for k in row if k.startswith("autograded_of_"))
        assert lab._num(row[auto]) == score, (sid, text)
        assert set(per_ex) <= set(row), (sid, sorted(row))
        for ex, points in per_ex.items():
            assert lab._num(row[ex]) == points, (sid, ex, text)
        for phrase in phrases:
            assert phrase in text, (sid, phrase, text)


@slow
def test_setup_grades_the_solution_and_the_blank_release_then_forgets_them(class_graded):
    """Setup's self-check: full marks for the solution, none for the blank release, and
    neither is a student of the course afterwards (the cluster's course, set up without
    the check, has the same rows and as many in its gradebook: the test below)."""
    assert re.search(r"solution 5(\.0)?/5, blank release 0(\.0)?/5 \(\d+ s for both",
                     class_graded["checked"]), class_graded["checked"]
    assert sorted(class_graded["first"]) == sorted(CLASS)


@slow
def test_two_dask_workers_grade_as_one(class_graded):
    """Every score, status, flag and report note equal on the cluster (into PostgreSQL) and
    serially (into SQLite), with as many gradebook rows; a re-run changed no score and
    added no row."""
    assert class_graded["second"] == class_graded["first"]
    assert class_graded["second_rows"] == class_graded["first_rows"]
    assert class_graded["first_rows"]["submitted_assignment"] == 4  # "exit": no grades
    assert class_graded["third"] == class_graded["second"]
    assert class_graded["third_rows"] == class_graded["second_rows"]


@slow
def test_a_killed_worker_costs_a_rerun_and_each_student_is_written_once(class_graded):
    lines = [ln for ln in class_graded["distributed"].splitlines()
             if re.match(r"^  (\S+): (graded|tampered|ungradable)\b", ln)]
    said = [ln.split(":")[0].strip() for ln in lines]
    assert sorted(said) == sorted(CLASS), lines  # once each, the killed one included
    assert class_graded["killed"] in CLASS  # and graded as serially (the test above)


@slow
def test_a_worker_without_user_namespaces_refuses_with_the_fix(class_graded, tmp_path):
    """The coordinator's sandbox holds, the only worker's does not: it refuses, saying why
    and what to do, and nothing is graded."""
    env = class_graded["env"]
    fake = {**env, "PATH": os.pathsep.join([str(_fake_bwrap(tmp_path / "bin")), env["PATH"]])}
    address, procs = _cluster(tmp_path, fake, 1, "docker")
    before = _gradebook_rows(class_graded["course"])
    try:
        run = subprocess.run([sys.executable, str(lab.GRADE), "grade", str(class_graded["course"]),
                              "--scheduler", address, "--student", "right"], env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        _stop(procs)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    for phrase in ("cannot grade", "No permissions to create new namespace", "seccomp",
                   "kernel.apparmor_restrict_unprivileged_userns", "user.max_user_namespaces"):
        assert phrase in run.stderr, (phrase, run.stderr)
    assert _gradebook_rows(class_graded["course"]) == before


@slow
@pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None,
                    reason="dask-jobqueue is not installed (pip install -e \".[instructor]\")")
def test_the_guides_slurm_workers_grade_as_one(class_graded, tmp_path):
    """The guide's Slurm example run as written (one job of one worker instead of 4 of 8)
    by dask-jobqueue against a fake ``sbatch``, from the guide's clone in ``$HOME/cnnlab``
    (this checkout, by a link in the job's home); ``grade --scheduler`` with the address it
    prints grades a student as the serial run did. Its job script puts the autograder
    folder on ``PYTHONPATH`` and starts one-thread workers; the worker imports this
    checkout's grading code and cnnlab; once the cluster is closed, no process of its job is
    left."""
    import psutil
    from distributed import Client
    env, course = class_graded["env"], class_graded["course"]
    slurm, home = tmp_path / "slurm", tmp_path / "home"
    home.mkdir()
    (home / "cnnlab").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "cluster.py").write_text(_guide_slurm() + SLURM_AFTER)
    login = {**env, "HOME": str(home),
             "PATH": os.pathsep.join([str(_fake_slurm(slurm)), env["PATH"]])}
    out = tmp_path / "cluster.out"
    before = _gradebook_rows(course)
    driver = subprocess.Popen([sys.executable, "-u", str(tmp_path / "cluster.py"),
                               str(tmp_path / "job.sh")], cwd=tmp_path, env=login,
                              stdin=subprocess.PIPE, stdout=open(out, "wb"),
                              stderr=open(tmp_path / "cluster.err", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "job.sh").exists() and driver.poll() is None:
            assert time.monotonic() < deadline, (tmp_path / "cluster.err").read_text()[-3000:]
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "cluster.err").read_text()[-3000:]
        address = out.read_text().split()[0]  # what the guide's print() printed
        assert re.fullmatch(r"tcp://[\w.-]+:\d+", address), out.read_text()
        script = (tmp_path / "job.sh").read_text()
        (export,) = [ln for ln in script.splitlines() if ln.startswith("export PYTHONPATH=")]
        said = subprocess.run(["bash", "-c", f'{export}; printf %s "$PYTHONPATH"'],
                              env={"HOME": str(home), "PATH": env["PATH"]}, capture_output=True,
                              text=True, check=True).stdout
        assert Path(said.split(os.pathsep)[0]).resolve() == ROOT / "autograder", (export, said)
        assert re.search(rf"-m (distributed\.cli\.dask_worker|dask worker) {re.escape(address)} "
                         r".*--nthreads 1\b", script), script
        assert (slurm / "last").read_text().split() == ["1001"], "not one job submitted"

        run = lab._run(["grade", str(course), "--scheduler", address, "--student", "right"],
                       env, timeout=600)
        assert re.search(r"^  right: graded\b", run.stdout, re.M), run.stdout
        with Client(address, timeout=30) as client:
            where = client.run(lambda: [importlib.util.find_spec(m).origin
                                        for m in ("cnnlab_grade", "cnnlab")])
        assert [[Path(p).resolve() for p in w] for w in where.values()] == [
            [ROOT / "autograder" / "cnnlab_grade.py", ROOT / "cnnlab" / "__init__.py"]], where
        assert _rows(course) == class_graded["first"]
        assert _gradebook_rows(course) == before == class_graded["first_rows"]

        driver.communicate(b"\n", timeout=120)
        assert driver.returncode == 0, (tmp_path / "cluster.err").read_text()[-3000:]
        assert (slurm / "cancelled").read_text().split() == ["1001"]
        deadline = time.monotonic() + 60  # Slurm would send SIGKILL after its KillWait (30 s)
        while _slurm_jobs_processes(slurm) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [(p.pid, p.cmdline()) for p in _slurm_jobs_processes(slurm)]
        assert not left, left
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for proc in _slurm_jobs_processes(slurm):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        job_log = slurm / "job-1001.log"
        print(job_log.read_text()[-4000:] if job_log.exists() else "no job ran")


def test_bwrap_refused_its_namespace_is_explained(tmp_path, monkeypatch):
    """The self-check (run by setup, grade and every worker) names the causes and fixes."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(_fake_bwrap(tmp_path / "bin")),
                                                 os.environ["PATH"]]))
    assert shutil.which("bwrap") == str(tmp_path / "bin" / "bwrap")
    (tmp_path / "checkpoints").mkdir()
    problems = sandbox.self_check({**sandbox.DEFAULTS, "checkpoints": str(tmp_path / "checkpoints"),
                                   "course_root": str(tmp_path), "kernel_memory_mb": 512})
    assert len(problems) == 1 and "No permissions to create new namespace" in problems[0]
    assert "seccomp" in problems[0] and "user.max_user_namespaces" in problems[0]


@slow
def test_the_shared_gradebook_is_postgresql_and_nbgrader_reads_it(class_graded, tmp_path):
    """setup --db-url: the cluster's course has no gradebook.db; its grades are in the
    PostgreSQL database, and nbgrader export reads there what the report says."""
    if class_graded["db_url"] is None:
        pytest.skip(class_graded["no_db"])
    course, env = class_graded["shared"], class_graded["env"]
    assert not (course / "gradebook.db").exists()
    assert _gradebook_rows(course, class_graded["db_url"])["grade"] > 0
    run = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", str(tmp_path / "e.csv")],
                         cwd=course, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(tmp_path / "e.csv") as f:
        assert {r["student"]: r for r in csv.DictReader(f)} == class_graded["third"]


@pytest.mark.filterwarnings("ignore:Object of type")  # SQLAlchemy on nbgrader's autoflush
def test_the_workers_gradebook_is_the_assignment_at_the_courses_schema(tmp_path, monkeypatch):
    """What each worker grades in (``assignment_gradebook``): the course's assignment, its
    cells and points, and no student, at the schema version nbgrader's own ``alembic heads``
    gives, without starting alembic (6 s of every grading run)."""
    import cnnlab_grade
    from nbgrader import api
    from sqlalchemy import text
    settings = {**sandbox.DEFAULTS, "course_root": str(tmp_path), "db_url": None}
    asked, ask = [], api.get_alembic_version
    monkeypatch.setattr(api, "get_alembic_version", lambda: asked.append(ask()) or asked[-1])
    with api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", settings["course_id"]) as gb:
        gb.add_assignment(A)
        gb.add_notebook(A, A)
        gb.add_grade_cell("ex1_test", A, A, max_score=2, cell_type="code")
        gb.add_solution_cell("ex1_answer", A, A)
        gb.add_source_cell("ex1_test", A, A, cell_type="code", locked=True, source="x = 1",
                           checksum="c")
        gb.add_student("alice")
        gb.add_submission(A, "alice")
    (head,) = asked  # the course gradebook, made by nbgrader as ``setup`` makes it
    monkeypatch.setattr(api, "get_alembic_version", lambda: pytest.fail("alembic was started"))
    cnnlab_grade.assignment_gradebook(settings, tmp_path / "worker.db")
    with api.Gradebook(f"sqlite:///{tmp_path / 'worker.db'}", settings["course_id"]) as gb:
        notebook = gb.find_notebook(A, A)
        assert {c.name: c.max_score for c in notebook.grade_cells} == {"ex1_test": 2}
        assert [c.name for c in notebook.solution_cells] == ["ex1_answer"]
        assert [(c.name, c.locked, c.source) for c in notebook.source_cells] == [
            ("ex1_test", True, "x = 1")]
        assert gb.students == []
        assert gb.db.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
