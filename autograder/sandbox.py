#!/usr/bin/env python
"""The bubblewrap sandbox every student kernel of the cnnlab course runs in.

The course's kernelspec (``COURSE/kernels/cnnlab-sandbox/kernel.json``, written by
``cnnlab_grade.py setup``) has ``argv = [python, COURSE/sandbox.py, {connection_file}]``:
this file, run as a program, wraps the kernel in ``bwrap`` with

- no network at all (a new network namespace: no loopback either; the kernel talks to
  nbgrader over Unix sockets, ``KernelManager.transport = "ipc"``, in its runtime folder);
- a cleared environment: only the variables of :func:`kernel_environment`;
- ``/usr``, ``/etc``, the Python installation and cnnlab read-only; a private ``/tmp``
  and ``$HOME`` (``/home/student``, empty, the working directory; not the notebook's
  folder, whose copy being graded holds the hidden tests);
- one fresh writable runtime folder per kernel (the connection file, the sockets, the
  exported answers), made by :class:`SandboxKernelManager`;
- nothing else of the course: only the course model and the data, read-only;
- new PID, IPC and UTS namespaces: every process, detached ones too, dies with the kernel;
- memory and process limits (:func:`limited`): ``systemd-run --scope`` where systemd runs,
  else a cgroup per kernel made directly (as root, where ``/sys/fs/cgroup`` is writable),
  else rlimits (``RLIMIT_DATA``, not ``RLIMIT_AS``: torch reserves ~4.5 GB of address
  space at import; ``RLIMIT_NPROC`` for ``nobody`` when started as root);
- started as root, the kernel drops to ``nobody`` (uid 65534).

``--no-sandbox`` grading (``CNNLAB_NO_SANDBOX=1``) starts the kernel without bwrap, with
the same environment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import bounds
import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import Integer, default

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "cnnlab-sandbox"
HOME = "/home/student"
NOBODY = 65534
SETTINGS_FILE = "cnnlab_course.json"
RUNTIME_ENV = "CNNLAB_RUNTIME_DIR"  # set by the grader: the folder of the next kernel
NO_SANDBOX_ENV = "CNNLAB_NO_SANDBOX"
LIMITS_FILE = "limits.json"  # written by the wrapper beside (not in) the runtime folder

INSTALL = """bubblewrap (bwrap) is needed to grade safely. Install it:
  Debian/Ubuntu:  sudo apt-get install bubblewrap
  Fedora:         sudo dnf install bubblewrap
  Arch:           sudo pacman -S bubblewrap
(On Ubuntu 23.10 and later AppArmor blocks unprivileged user namespaces: run grading as
root, or allow them with `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`.)
Then run setup again. To grade without it, at your own risk, pass --no-sandbox."""

USERNS_REFUSED = """bubblewrap may not create the user namespace it needs: unprivileged user
namespaces are refused here, by one of
  - a container's seccomp profile (Docker's default; Kubernetes' RuntimeDefault): grade on a
    VM or lab machine, or give the grading container a profile that allows unshare and
    clone with CLONE_NEWUSER (Docker: --security-opt seccomp=PROFILE.json; Kubernetes:
    securityContext.seccompProfile: autograder/README.md, "Grading on many machines");
  - AppArmor (Ubuntu 23.10 and later, 24.04): sudo sysctl
    kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for bwrap;
  - the kernel: sudo sysctl user.max_user_namespaces=15000 (0 turns them off; older
    Debian kernels also need kernel.unprivileged_userns_clone=1).
Then start the worker again. To grade without it, at your own risk, pass --no-sandbox."""


def explain_bwrap_failure(stderr: str) -> str:
    """Why bwrap did not start, from its error output, and how to fix it."""
    last = (stderr.strip().splitlines() or ["no message"])[-1]
    namespaces = re.search(r"namespace|uid map|unshare", stderr, re.IGNORECASE)
    return (f"bubblewrap could not start a sandbox here: {last}\n"
            + (USERNS_REFUSED if namespaces else INSTALL))


class SandboxError(RuntimeError):
    """The sandbox cannot be used here (the message says how to fix it)."""


def refuse_unsupported_os() -> None:
    """macOS and Windows have no bubblewrap: say what to do instead."""
    if sys.platform != "linux":
        raise SandboxError(
            f"Grading runs student code in a Linux sandbox (bubblewrap); this is "
            f"{platform.system() or sys.platform}. Grade in a Linux virtual machine or "
            "container (e.g. `docker run -it --privileged debian:12`, or a Linux VM in "
            "UTM, VirtualBox or WSL 2) and follow autograder/README.md there.")


# ---------------------------------------------------------------------------
# what the kernel sees
# ---------------------------------------------------------------------------

DEFAULTS = {
    "course_id": "cnnlab", "assignment": "cnn_interpretability", "profile": "quick",
    "instructor_cell_timeout": 300, "student_cell_timeout": 60, "submission_timeout": 600,
    "run_after_last_test": False, "kernel_memory_mb": 4096, "kernel_tasks": 256,
    "kernel_threads": 1, "sandbox": True,
    # what a submission may hand in and produce (see bounds.py and cnnlab_nbgrader.py)
    "max_submission_mb": 20, "max_cells": 2000, "max_cell_output_mb": 4,
    "max_output_mb": 32, "max_kernel_log_kb": 256, "max_runtime_mb": 256,
    "max_message_mb": 16,
    "feedback_timeout": 300, "max_feedback_mb": 64,
}


def load_settings(folder: str | os.PathLike = HERE) -> dict:
    """The course's settings (``cnnlab_course.json`` over :data:`DEFAULTS`)."""
    settings = dict(DEFAULTS)
    path = Path(folder) / SETTINGS_FILE
    if path.exists():
        settings.update(json.loads(path.read_text()))
    settings["course_root"] = str(Path(folder).resolve())
    return settings


def kernel_environment(settings: dict, runtime: str | None = None) -> dict[str, str]:
    """The whole environment of a grading kernel (an allow-list)."""
    python_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg", "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(settings.get("kernel_threads") or 1),
        "MKL_NUM_THREADS": str(settings.get("kernel_threads") or 1),
        "CNNLAB_PROFILE": settings["profile"],
        "CNNLAB_SOURCE": settings.get("source") or "auto",
        "CNNLAB_CHECKPOINTS": settings["checkpoints"],
    }
    for key, name in (("data", "CNNLAB_DATA"), ("cache", "CNNLAB_CACHE")):
        if settings.get(key):
            env[name] = settings[key]
    if settings.get("memo"):
        env["CNNLAB_MEMO"] = str(memo_dir(settings))
    if runtime:
        env["CNNLAB_RUNTIME"] = runtime
    env["PYTHONPATH"] = str(_cnnlab_dir().parent)  # the cnnlab the grader uses, bound alone
    return env


def memo_dir(settings: dict) -> Path:
    """Where setup saves what the solution computed for every kernel to read
    (cnnlab/_memo.py): inside the checkpoints folder, so bound read-only with the model."""
    return Path(settings["checkpoints"]) / "memo"


def _cnnlab_dir() -> Path:
    spec = importlib.util.find_spec("cnnlab")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError("cnnlab is not importable by the grader: pip install it first.")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def read_only_inputs(settings: dict) -> list[Path]:
    """Folders bound read-only: the Python installation, cnnlab, the model, the data."""
    paths = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths |= {Path(p).resolve() for p in sys.path
              if p and Path(p).is_dir() and Path(p).name in ("site-packages", "dist-packages")}
    paths.add(_cnnlab_dir())
    paths.add(Path(settings["checkpoints"]).resolve())
    for key in ("data", "cache"):
        if settings.get(key) and Path(settings[key]).exists():
            paths.add(Path(settings[key]).resolve())
    course = Path(settings["course_root"]).resolve()
    for p in paths:  # a folder holding the course or the grader would show them all
        for secret in (course, HERE):
            if p == secret or p in secret.parents:
                raise SandboxError(
                    f"{p} (Python, cnnlab, data or model) contains {secret}: the sandbox "
                    "would show it to students. Keep the course folder and the grading "
                    "tools outside the Python installation and the data folders.")
    system = {Path(p) for p in ("/usr", "/etc", "/opt")} & {p for p in paths}
    return sorted(p for p in paths - system if not any(q in p.parents for q in paths - {p}))


def _dirs(path: Path, made: set) -> list[str]:
    """bwrap arguments making every parent of ``path`` a traversable (0755) folder."""
    out = []
    for parent in reversed(path.parents):
        if str(parent) != "/" and parent not in made and not str(parent).startswith("/usr"):
            made.add(parent)
            out += ["--perms", "0755", "--dir", str(parent)]
    return out


def bwrap_args(settings: dict, runtime: Path) -> list[str]:
    """The bwrap command line up to (not including) the program to run."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bwrap not found.\n" + INSTALL)
    root = os.geteuid() == 0
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
            "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--clearenv"]
    if root:  # kept only to drop to nobody inside (see run_kernel)
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"]
    for name, value in kernel_environment(settings, str(runtime)).items():
        args += ["--setenv", name, value]
    args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / link
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm",
             "--size", str(512 << 20), "--perms", "1777", "--tmpfs", "/tmp",
             "--size", str(512 << 20), "--perms", "1777", "--tmpfs", HOME]
    made: set = set()
    for p in read_only_inputs(settings):
        args += _dirs(p, made) + ["--ro-bind", str(p), str(p)]
    # not the notebook's folder: the copy there being graded holds the hidden tests
    return args + _dirs(runtime, made) + ["--bind", str(runtime), str(runtime), "--chdir", HOME]


# The kernel drops from root to nobody inside the sandbox (after bwrap's mounts).
_DROP = (f"import os, sys; os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY}); "
         "os.execv(sys.argv[1], sys.argv[1:])")


def sandboxed(settings: dict, runtime: Path, command: list[str]) -> list[str]:
    """``command`` wrapped in the sandbox (and, as root, dropped to nobody)."""
    drop = [sys.executable, "-c", _DROP] if os.geteuid() == 0 else []
    return bwrap_args(settings, runtime) + ["--", *drop, *command]


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def _cgroup_roots() -> list[Path]:
    """Writable memory and pids cgroup hierarchies (v2 unified, or v1), as root; else []."""
    base = Path("/sys/fs/cgroup")
    if os.geteuid() != 0:
        return []
    if (base / "cgroup.controllers").exists():
        ok = {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split())
        return [base] if ok and os.access(base, os.W_OK) else []
    roots = [base / "memory", base / "pids"]
    return roots if all(d.is_dir() and os.access(d, os.W_OK) for d in roots) else []


def limit_method() -> str:
    """How memory and tasks are limited here: "systemd-run", "cgroup" or "rlimit"."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
        return "systemd-run"
    return "cgroup" if _cgroup_roots() else "rlimit"


def describe_limits(settings: dict) -> str:
    mem, tasks = settings["kernel_memory_mb"], settings["kernel_tasks"]
    return {"systemd-run": f"systemd-run --scope (MemoryMax={mem}M, TasksMax={tasks})",
            "cgroup": f"a cgroup per kernel (memory {mem} MB, {tasks} tasks)",
            "rlimit": f"rlimits (RLIMIT_DATA {mem} MB" + (
                f", RLIMIT_NPROC {tasks} for user nobody)" if os.geteuid() == 0 else
                "; process count not limited: run as root or under systemd for that)"),
            }[limit_method()]


def _rlimits(settings: dict) -> None:
    mem = settings["kernel_memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    if os.geteuid() == 0:  # counted per user: nobody runs only the kernels
        n = settings["kernel_tasks"] * max(1, int(os.environ.get("CNNLAB_JOBS", "1")))
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


def limited(settings: dict, command: list[str]):
    """``(command, preexec_fn, cgroups)``: ``command`` under the memory and process limits,
    and the cgroups made for it (for :func:`end_cgroups` once it has ended)."""
    method, roots = limit_method(), _cgroup_roots()
    mem, tasks = settings["kernel_memory_mb"], settings["kernel_tasks"]
    if method == "systemd-run":
        user = [] if os.geteuid() == 0 else ["--user"]
        return ["systemd-run", "--scope", "--quiet", *user, "-p", f"MemoryMax={mem}M",
                "-p", f"TasksMax={tasks}", "--", *command], None, []
    if method == "rlimit":
        return command, lambda: _rlimits(settings), []
    for stale in (g for root in roots for g in root.glob("cnnlab-*")):  # of killed wrappers
        if not Path("/proc", stale.name.split("-")[1]).exists():
            with contextlib.suppress(OSError):  # still holds processes
                stale.rmdir()
    groups = [root / f"cnnlab-{os.getpid()}-{uuid.uuid4().hex[:6]}" for root in roots]
    for group in groups:
        group.mkdir()
        for name, value in (("memory.max", mem << 20), ("memory.limit_in_bytes", mem << 20),
                            ("pids.max", tasks)):
            if (group / name).exists():
                (group / name).write_text(str(value))

    def join():  # in the child, before it starts the sandbox
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))
    return command, join, groups


def end_cgroups(groups: list[Path]) -> float | None:
    """The peak memory (MB) of a finished kernel's cgroups, which are then removed."""
    peak = None
    for group in groups:
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            with contextlib.suppress(OSError, ValueError):
                peak = int((group / name).read_text()) / 2**20
        for _ in range(20):  # the sandbox's last processes may still be leaving
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    return peak


# ---------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------

class BoundedKernelClient(AsyncKernelClient):
    """A kernel client whose sockets refuse a message part over ``max_message_bytes``:
    ZMQ drops it, with the connection, before any of it is read into the grader's memory
    (one ``print`` of a huge string is one message, whatever the output budget says).
    ZMQ does not connect again after that; :meth:`reconnect_iopub_if_refused` does, after
    the cell, and what the kernel sent in between is lost."""

    max_message_bytes = Integer(DEFAULTS["max_message_mb"] << 20)
    _iopub_events = None

    @default("context")
    def _bounded_context(self):
        self._created_context = True
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        return context

    def connect_iopub(self, identity=None):
        socket = super().connect_iopub(identity)
        events = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._iopub_events = (socket, zmq.Socket.shadow(events.underlying), events)
        return socket

    def iopub_refused(self) -> bool:
        """Whether the IOPub connection was dropped (ZMQ does not make it again after a
        message over the limit) and not yet made again."""
        return self._iopub_events is not None and bool(self._iopub_events[1].poll(0))

    def reconnect_iopub_if_refused(self) -> bool:
        """Whether the IOPub connection was dropped; if so, a new one is made, so that
        later cells are heard."""
        if not self.iopub_refused():
            return False
        socket, _, events = self._iopub_events
        with contextlib.suppress(zmq.ZMQError):
            socket.disable_monitor()
        events.close(linger=0)
        self._iopub_events = None
        if self._iopub_channel is not None:
            self._iopub_channel.close()
            self._iopub_channel = None
        self.iopub_channel  # noqa: B018 (connects again)
        time.sleep(0.2)  # a subscriber hears nothing published before it is connected
        return True


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that puts each kernel's connection file and Unix sockets in a
    fresh runtime folder (``$CNNLAB_RUNTIME_DIR``, else a new one), bound into the sandbox,
    and talks to the kernel through a :class:`BoundedKernelClient`."""

    max_message_bytes = Integer(DEFAULTS["max_message_mb"] << 20)

    @default("client_factory")
    def _bounded_client(self):
        return BoundedKernelClient

    def client(self, **kwargs):
        return super().client(**{"max_message_bytes": self.max_message_bytes, **kwargs})

    async def _async_pre_start_kernel(self, **kw):
        runtime = Path(os.environ.get(RUNTIME_ENV) or
                       Path(HERE) / "grading" / "runtime" / uuid.uuid4().hex)
        runtime.mkdir(parents=True, exist_ok=True)
        self.transport = "ipc"
        self.connection_file = str(runtime / "kernel.json")
        self.ip = str(runtime / "ipc")
        return await super()._async_pre_start_kernel(**kw)


def write_kernelspec(course: Path) -> Path:
    """``COURSE/kernels/cnnlab-sandbox/kernel.json`` (found through ``JUPYTER_PATH``)."""
    folder = course / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, str(course / "sandbox.py"), "{connection_file}"],
            "display_name": "cnnlab grading sandbox", "language": "python",
            "interrupt_mode": "message", "metadata": {"debugger": False}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


def run_kernel(connection_file: str) -> int:
    """The kernelspec's program: start ipykernel in the sandbox and wait for it.

    The kernel's stdout and stderr reach this program's (the grading worker's log) only
    up to ``max_kernel_log_kb`` each; its files are limited to ``max_runtime_mb`` each
    (``RLIMIT_FSIZE``) and its runtime folder, measured every half second, to
    ``max_runtime_mb`` in all: past it the kernel is killed and the reason recorded."""
    settings = load_settings()
    runtime = Path(connection_file).resolve().parent
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", str(runtime / "kernel.json")]
    env, groups = None, []
    if os.environ.get(NO_SANDBOX_ENV) == "1":
        env = kernel_environment(settings, str(runtime))
        env["HOME"] = env["TMPDIR"] = str(runtime)
        command, preexec = kernel, None
    else:
        if os.geteuid() == 0:  # nobody must use the folder, its sockets and the file
            for p in (runtime, runtime / "kernel.json"):
                os.chown(p, NOBODY, NOBODY)
        command, preexec, groups = limited(settings, sandboxed(settings, runtime, kernel))
    proc = subprocess.Popen(command, preexec_fn=_with_file_limit(settings, preexec), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    copiers = _capped_copies(proc, settings["max_kernel_log_kb"] << 10)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    if env is not None:  # unsandboxed, the kernel shares our process group: its own
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts reach it directly
    killed = _watch_runtime(proc, runtime, settings["max_runtime_mb"] << 20)
    rc = proc.wait()
    for thread in copiers:
        thread.join(timeout=5)
    peak_mb = end_cgroups(groups)  # the cgroup's peak counts every process of the sandbox
    if peak_mb is None:
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record = {"method": limit_method(), "peak_rss_mb": round(peak_mb, 1), "exit": rc,
              "killed": killed}
    try:  # beside the runtime folder: out of the kernel's reach
        (runtime.parent / f"{runtime.name}.{LIMITS_FILE}").write_text(json.dumps(record))
    except OSError:
        pass
    return rc


def _with_file_limit(settings: dict, preexec):
    """``preexec`` followed by ``RLIMIT_FSIZE`` = ``max_runtime_mb`` (a kernel's write
    past it fails with EFBIG: Python ignores SIGXFSZ)."""
    limit = settings["max_runtime_mb"] << 20

    def run():
        if preexec is not None:
            preexec()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return run


def _capped_copies(proc, max_bytes: int) -> list:
    """Threads copying the kernel's stdout and stderr to ours, ``max_bytes`` each."""
    threads = []
    for source, dest in ((proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer)):
        t = threading.Thread(target=bounds.copy_capped, daemon=True,
                             args=(source, dest, max_bytes, "the kernel's output"))
        t.start()
        threads.append(t)
    return threads


def folder_use(folder: Path, max_entries: int = 100_000) -> tuple[int, int]:
    """(bytes on disk, entries) under ``folder``, links not followed; counting stops
    past ``max_entries``."""
    used = entries = 0
    stack = [folder]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    entries += 1
                    with contextlib.suppress(OSError):
                        st = e.stat(follow_symlinks=False)
                        used += st.st_blocks * 512
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
        except OSError:
            continue
    return used, entries


def _watch_runtime(proc, runtime: Path, max_bytes: int, max_entries: int = 10_000):
    """Wait for ``proc``; kill it if its runtime folder grows past ``max_bytes`` or
    ``max_entries``. Returns the reason it was killed, or None."""
    while True:
        try:
            proc.wait(timeout=0.5)
            return None
        except subprocess.TimeoutExpired:
            pass
        used, entries = folder_use(runtime, max_entries)
        if used > max_bytes or entries > max_entries:
            proc.kill()
            return (f"its runtime folder reached {used >> 20} MB in {entries} entries, over "
                    f"the limit of {max_bytes >> 20} MB and {max_entries} entries")


# ---------------------------------------------------------------------------
# self-check
# ---------------------------------------------------------------------------

_PROBE = r'''
import json, os, socket, sys
port, secret, site = sys.argv[1:]


def works(action):
    try:
        action()
        return True
    except OSError:
        return False


seen = {"uid": os.getuid(), "env": sorted(os.environ), "home": os.listdir(os.environ["HOME"]),
        "course": os.path.exists(secret), "visible": sorted(os.listdir(os.path.dirname(secret))),
        "tcp": works(lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=3)),
        "dns": works(lambda: socket.getaddrinfo("pypi.org", 443)),
        "usr": works(lambda: open("/usr/cnnlab-probe", "w")),
        "site": works(lambda: open(site + "/cnnlab-probe.pth", "w"))}
import torch  # noqa: E402,F401 (the kernels need it)
print("CNNLAB-PROBE " + json.dumps(seen))
'''


def self_check(settings: dict) -> list[str]:
    """Run a probe in the sandbox; returns the problems (empty when all is well)."""
    refuse_unsupported_os()
    course = Path(settings["course_root"]).resolve()
    runtime = course / "grading" / "runtime" / f"selfcheck-{uuid.uuid4().hex[:6]}"
    runtime.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(runtime, NOBODY, NOBODY)
    listener = socket.create_server(("127.0.0.1", 0))
    site = next(p for p in sys.path if p.endswith("site-packages"))
    secret = course / "gradebook.db"
    probe = [sys.executable, "-c", _PROBE, str(listener.getsockname()[1]), str(secret), site]
    groups = []
    try:
        command, preexec, groups = limited(settings, sandboxed(settings, runtime, probe))
        run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             preexec_fn=preexec)
    except SandboxError as exc:
        return [str(exc)]
    finally:
        listener.close()
        end_cgroups(groups)
        shutil.rmtree(runtime, ignore_errors=True)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("CNNLAB-PROBE ")]
    if run.returncode != 0 or not lines:
        return [explain_bwrap_failure(run.stderr)]
    seen = json.loads(lines[0][len("CNNLAB-PROBE "):])
    problems = [f"the sandbox {what}" for key, what in (
        ("tcp", "reached a TCP port on 127.0.0.1"), ("dns", "resolved a name"),
        ("course", f"saw {secret}"), ("usr", "wrote into /usr"),
        ("site", f"wrote into {site}")) if seen[key]]
    if os.geteuid() == 0 and seen["uid"] != NOBODY:
        problems.append(f"the kernel runs as uid {seen['uid']}, not nobody")
    extra = set(seen["env"]) - set(kernel_environment(settings, "x")) - {"PWD", "SHLVL", "_"}
    if extra:
        problems.append("the kernel inherited " + ", ".join(sorted(extra)))
    if seen["home"]:
        problems.append(f"the private $HOME is not empty: {seen['home']}")
    if set(seen["visible"]) - {"checkpoints", "grading", "cache"}:
        problems.append(f"the sandbox shows {course}/: {seen['visible']}")
    return problems


if __name__ == "__main__":
    sys.exit(run_kernel(sys.argv[1]))
