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
  following links
  (:func:`read_export`). A network answer (``extractor``) is exported as its output on
  the fixed probe batch the checks use, and replayed.

The genuine checks (the grader's own ``cnnlab.checks``) then judge those values.
"""

from __future__ import annotations

import ast
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

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


def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def _visible(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS")[0]


def _top_assignments(source_nb) -> dict[str, ast.stmt]:
    """name -> its last top-level assignment in a locked, ungraded code cell."""
    out = {}
    for c in source_nb.cells:
        meta = _nbg(c)
        if c.cell_type != "code" or not meta.get("locked") or meta.get("grade"):
            continue
        try:
            tree = ast.parse(c.source)
        except SyntaxError:  # IPython magics: such cells define nothing we need
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                for t in node.targets:
                    out[t.id] = node
    return out


def _answer_names(source_nb) -> set[str]:
    """Names the solution cells bind (student answers, whatever locked cells say)."""
    names = set()
    for c in source_nb.cells:
        if c.cell_type == "code" and _nbg(c).get("solution"):
            try:
                tree = ast.parse(c.source)
            except SyntaxError:
                continue
            names |= {n.id for n in ast.walk(tree)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def exercises(source_nb) -> list[Exercise]:
    """The autograded exercises of the instructor's notebook, in order."""
    answer_names = _answer_names(source_nb)
    defined = {k: v for k, v in _top_assignments(source_nb).items() if k not in answer_names}
    found = []
    for c in source_nb.cells:
        meta = _nbg(c)
        if c.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        try:
            tree = ast.parse(_visible(c.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
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

    defined = {k: v for k, v in _top_assignments(source_nb).items()
               if k not in _answer_names(source_nb)}
    env = {"model": model, "cnnlab": cnnlab, "checks": checks, "np": np, "torch": torch}
    order: list[str] = []

    def need(name):
        if name in order or name in env and name != "test":
            return
        if name == "test":
            env["test"] = load_test()
            return
        for n in ast.walk(defined[name].value):
            if isinstance(n, ast.Name) and (n.id in defined or n.id == "test"):
                need(n.id)
        order.append(name)

    for name in names:
        need(name)
    for name in order:
        node = defined[name]
        value = eval(compile(ast.Expression(node.value), "<instructor>", "eval"), env)
        for t in node.targets:
            env[t.id] = value
    return {n: env[n] for n in names}


_SNIPPET = '''\
# Added by the cnnlab autograder after the notebook ran; removed before it is saved.
def _cnnlab_export(path, names):
    import numpy as _np
    import torch as _torch
    g = globals()
    out = {}
    for name in names:
        if name not in g:
            out[name] = {"kind": "missing"}
            continue
        v = g[name]
        try:
            if isinstance(v, _torch.nn.Module):
                entry = {"kind": "module", "type": type(v).__name__}
                x = _torch.randn(2, 3, 32, 32, generator=_torch.Generator().manual_seed(0))
                dev = next((p.device for p in v.parameters()), _torch.device("cpu"))
                flags = [(m, m.training) for m in v.modules()]
                try:
                    v.eval()
                    with _torch.inference_mode():
                        y = v(x.to(dev))
                    entry["input"] = x
                    entry["output"] = y.detach().float().cpu() if isinstance(y, _torch.Tensor) else None
                except Exception as exc:
                    entry["error"] = type(exc).__name__ + ": " + str(exc)[:200]
                finally:
                    for m, f in flags:
                        m.training = f
            elif isinstance(v, _torch.Tensor):
                entry = {"kind": "value", "value": v.detach().cpu().clone()}
            elif isinstance(v, _np.ndarray) and v.dtype.kind in "biuf":
                entry = {"kind": "value", "value": _torch.as_tensor(_np.ascontiguousarray(v)),
                         "numpy": True}
            elif isinstance(v, (bool, int, float, str, type(None))):
                entry = {"kind": "value", "value": v}
            elif isinstance(v, _np.generic):
                entry = {"kind": "value", "value": v.item(), "numpy": True}
            elif isinstance(v, (list, tuple, range)) and all(
                    isinstance(i, (bool, int, float, _np.generic)) for i in v):
                entry = {"kind": "value", "value": [i.item() if isinstance(i, _np.generic) else i
                                                    for i in v], "type": type(v).__name__}
            else:
                entry = {"kind": "other", "type": type(v).__name__}
        except Exception as exc:
            entry = {"kind": "other", "type": "export failed: " + type(exc).__name__}
        out[name] = entry
    _torch.save(out, path)
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


def _replay(entry):
    """A module that gives the exported output for the exported probe batch."""
    import torch
    from torch import nn

    class Replay(nn.Module):
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


def _value(name: str, entry: dict):
    import numpy as np
    import torch

    kind = entry.get("kind")
    if kind == "missing":
        raise AssertionError(f"`{name}` is not defined")
    if kind == "other":
        raise AssertionError(f"`{name}` is a {entry.get('type')}")
    if kind == "module":
        return _replay(entry)
    value = entry["value"]
    if entry.get("numpy") and isinstance(value, torch.Tensor):
        return value.numpy()
    if entry.get("numpy"):
        return np.array(value)[()]
    if entry.get("type") == "tuple":
        return tuple(value)
    return value


def recheck(exported: dict, found: list[Exercise], trusted: dict
            ) -> dict[str, tuple[bool, str]]:
    """Judge the exported answers (test id -> the export after that test, or None) with
    the genuine checks: test id -> (passed, message)."""
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
            results[ex.test_id] = (True, "")
        except AssertionError as exc:
            results[ex.test_id] = (False, (str(exc).splitlines() or ["AssertionError"])[0])
        except Exception as exc:  # a value the check cannot even look at
            results[ex.test_id] = (False, f"{type(exc).__name__}: {exc}"[:200])
    return results
