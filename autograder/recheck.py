"""The re-check of autograded answers outside the student's kernel.

nbgrader scores a test cell inside the student's kernel, where the student's code ran
first and could have rebound ``model`` or replaced a check. So the grader re-judges every
autograded exercise itself, with values it trusts:

- what each test checks is read from the instructor's notebook: the visible part of a
  test cell calls ``checks.check_exercise_N(arg, ...)`` (:func:`exercises`), so new
  exercises are picked up from the notebook's nbgrader metadata alone;
- ``model`` is the course network loaded from the course checkpoint; names the
  instructor's locked cells define (``ex8_unit = 5``, ``ex8_image = test.images[...]``)
  are evaluated from the instructor's source, with ``test`` the data the grader loads;
- every other argument is the student's answer, exported right after its test cell (so
  as the test saw it) by a cell the grader adds (:func:`export_source`; removed again
  before the notebook is saved) into the kernel's runtime folder, read back without
  following links (:func:`read_export`). A network answer (``extractor``) is exported
  as its output on the fixed probe batch the checks use, and replayed.

The genuine checks (the grader's own ``cnnlab.checks``) then judge those values. An
answer that must be read from the model, not typed in (``checks.READ_NOT_TYPED``:
``n_filters``), is also judged on the submitted notebook's code, without running it: the
last cell before the test that assigns it (:func:`answer_source`), by the rule the kernel's
check applies to the cell it ran (``checks.check_read_not_typed``).
"""

from __future__ import annotations

import ast
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from repair import nbgrader_meta

EXPORT_CELL_ID = "cnnlab-autograder-export"  # + "-<test id>"
MAX_EXPORT_BYTES = 64 << 20
TRUSTED_GLOBALS = ("model", "test", "cnnlab", "checks", "np", "torch")


@dataclass
class Exercise:
    test_id: str  # the test cell's grade_id
    check: str  # name of the function in cnnlab.checks
    args: list  # argument names, in order
    answers: list  # those the student's kernel must export
    points: float


def _parse(source: str) -> list[ast.stmt]:
    try:
        return ast.parse(source).body
    except SyntaxError:  # IPython magics: such cells define nothing we need
        return []


def _instructor_definitions(source_nb) -> dict[str, ast.Assign]:
    """name -> its last top-level assignment in a locked, ungraded code cell, for the
    names no solution cell binds (those are the student's answers, whatever locked cells
    say)."""
    defined, answers = {}, set()
    for c in source_nb.cells:
        meta = nbgrader_meta(c)
        if c.cell_type != "code":
            continue
        if meta.get("solution"):
            answers |= {n.id for stmt in _parse(c.source) for n in ast.walk(stmt)
                        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        elif meta.get("locked") and not meta.get("grade"):
            for node in _parse(c.source):
                if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name)
                                                        for t in node.targets):
                    defined.update((t.id, node) for t in node.targets)
    return {k: v for k, v in defined.items() if k not in answers}


def exercises(source_nb) -> list[Exercise]:
    """The autograded exercises of the instructor's notebook, in order."""
    defined = _instructor_definitions(source_nb)
    found = []
    for c in source_nb.cells:
        meta = nbgrader_meta(c)
        if c.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        visible = c.source.split("### BEGIN HIDDEN TESTS")[0]
        for node in (n for stmt in _parse(visible) for n in ast.walk(stmt)):
            f = getattr(node, "func", None)
            name = getattr(f, "attr", None) or getattr(f, "id", None)
            if isinstance(node, ast.Call) and name and name.startswith("check_exercise_") \
                    and all(isinstance(a, ast.Name) for a in node.args):
                args = [a.id for a in node.args]
                answers = [a for a in args if a not in TRUSTED_GLOBALS and a not in defined]
                found.append(Exercise(meta["grade_id"], name, args, answers,
                                      float(meta.get("points", 0))))
                break
    return found


def trusted_values(source_nb, names: set[str], model, load_test) -> dict:
    """Evaluate the instructor's definitions of ``names`` (and what they use)."""
    import numpy as np
    import torch

    import cnnlab
    from cnnlab import checks

    defined = _instructor_definitions(source_nb)
    env = {"model": model, "cnnlab": cnnlab, "checks": checks, "np": np, "torch": torch}
    order: list[str] = []

    def need(name):
        if name == "test" and name not in env:
            env["test"] = load_test()
        elif name not in order and name not in env:
            for n in ast.walk(defined[name].value):
                if isinstance(n, ast.Name) and (n.id in defined or n.id == "test"):
                    need(n.id)
            order.append(name)

    for name in names:
        need(name)
    for name in order:
        node = defined[name]
        value = eval(compile(ast.Expression(node.value), "<instructor>", "eval"), env)
        env.update((t.id, value) for t in node.targets)
    return {n: env[n] for n in names}


_SNIPPET = '''\
# Added by the cnnlab autograder after the notebook ran; removed before it is saved.
def _cnnlab_export(path, names):
    import numpy as np
    import torch

    def entry(v):
        if isinstance(v, torch.nn.Module):  # its output on the checks' fixed probe batch
            out = {"kind": "module", "type": type(v).__name__}
            x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            dev = next((p.device for p in v.parameters()), torch.device("cpu"))
            flags = [(m, m.training) for m in v.modules()]
            try:
                v.eval()
                with torch.inference_mode():
                    y = v(x.to(dev))
                out["input"] = x
                out["output"] = y.detach().float().cpu() if isinstance(y, torch.Tensor) else None
            except Exception as exc:
                out["error"] = type(exc).__name__ + ": " + str(exc)[:200]
            finally:
                for m, f in flags:
                    m.training = f
            return out
        if isinstance(v, torch.Tensor):
            return {"kind": "value", "value": v.detach().cpu().clone()}
        if isinstance(v, (np.ndarray, np.generic)) and v.dtype.kind in "biuf":
            return {"kind": "value", "value": torch.as_tensor(np.array(v, order="C")),
                    "numpy": True}
        if isinstance(v, (bool, int, float, str, type(None))):
            return {"kind": "value", "value": v}
        if isinstance(v, (list, tuple, range)) and all(
                isinstance(i, (bool, int, float, np.generic)) for i in v):
            items = [i.item() if isinstance(i, np.generic) else i for i in v]
            return {"kind": "value", "value": tuple(items) if isinstance(v, tuple) else items}
        return {"kind": "other", "type": type(v).__name__}

    out = {}
    for name in names:
        try:
            out[name] = entry(globals()[name]) if name in globals() else {"kind": "missing"}
        except Exception as exc:
            out[name] = {"kind": "other", "type": "export failed: " + type(exc).__name__}
    torch.save(out, path)
_cnnlab_export(__PATH__, __NAMES__)
del _cnnlab_export
'''


def export_source(path: str | Path, names: list[str]) -> str:
    """Code of the export cell that writes the answers ``names`` to ``path``."""
    return _SNIPPET.replace("__PATH__", repr(str(path))).replace("__NAMES__", repr(names))


def read_export(path: Path) -> dict | None:
    """The exported answers, or None: a regular file only (no link, fifo or device
    followed), at most 64 MB, plain tensors and values only (``weights_only``)."""
    import torch

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_EXPORT_BYTES:
            return None
        data = f.read(MAX_EXPORT_BYTES + 1)
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True)
    except Exception:
        return None
    return loaded if isinstance(loaded, dict) else None


def _value(name: str, entry: dict):
    """The answer an export entry stands for (a replaying module for a network)."""
    import torch
    from torch import nn

    kind = entry.get("kind")
    if kind == "missing":
        raise AssertionError(f"`{name}` is not defined")
    if kind == "other":
        raise AssertionError(f"`{name}` is a {entry.get('type')}")
    if kind != "module":
        return entry["value"].numpy()[()] if entry.get("numpy") else entry["value"]

    class Replay(nn.Module):  # the exported output, for the exported probe batch only
        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

        def forward(self, x):
            if entry.get("error"):
                raise RuntimeError(entry["error"])
            if not torch.equal(x.cpu(), entry.get("input", torch.zeros(0))):
                raise RuntimeError("the re-check's input differs from the exported one")
            return entry.get("output")

    return Replay()


def answer_source(submitted, test_id: str, name: str) -> str | None:
    """The code of the last cell before the test cell ``test_id`` of the submitted
    notebook that assigns ``name`` (the cell the kernel ran last for it), or None."""
    from cnnlab import checks

    before = []
    for c in submitted.cells:
        if nbgrader_meta(c).get("grade_id") == test_id:
            break
        if c.cell_type == "code" and checks.assigns(c.source, name):
            before.append(c.source)
    return before[-1] if before else None


def recheck(exported: dict, found: list[Exercise], trusted: dict, submitted
            ) -> dict[str, tuple[bool, str]]:
    """Judge the exported answers (test id -> the export after that test, or None) with
    the genuine checks, and the code of answers read, not typed, in the ``submitted``
    notebook: test id -> (passed, message)."""
    from contextlib import redirect_stdout

    from cnnlab import checks

    results = {}
    for ex in found:
        try:
            answers = exported.get(ex.test_id)
            if answers is None:
                raise AssertionError("no answers came back from the kernel to re-check")
            values = [trusted[a] if a not in ex.answers else
                      _value(a, answers.get(a, {"kind": "missing"})) for a in ex.args]
            with redirect_stdout(io.StringIO()):
                getattr(checks, ex.check)(*values)
            if ex.check in checks.READ_NOT_TYPED:
                name = checks.READ_NOT_TYPED[ex.check]
                checks.check_read_not_typed(answer_source(submitted, ex.test_id, name), name)
            results[ex.test_id] = (True, "")
        except AssertionError as exc:
            results[ex.test_id] = (False, (str(exc).splitlines() or ["AssertionError"])[0])
        except Exception as exc:  # a value the check cannot even look at
            results[ex.test_id] = (False, f"{type(exc).__name__}: {exc}"[:200])
    return results
