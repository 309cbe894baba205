"""An independent re-check of the autograded answers, outside the student's kernel.

nbgrader scores a test cell by running it in the student's own kernel, where student
code ran first and could have rebound ``model``, patched ``cnnlab.checks`` or redefined
``assert``-relevant names. So after the notebook has run, one more cell (added by the
autograder and removed again before the notebook is saved) exports the answers as plain
values: numbers, lists, tensors, and for Exercise 4 the extractor's output on the same
fixed batch that :func:`cnnlab.checks.check_exercise_4` uses. The grading process then
runs the genuine checks on those values against the course model loaded from the
checkpoint file.

A forged export cannot pass: to make the genuine check accept it, the exported value must
be the right answer for the genuine model. When nbgrader gave a test points that the
re-check does not confirm, the submission is reported as tampered.
"""

from __future__ import annotations

from pathlib import Path

#: test cell grade_id -> (the answer variable the test reads, the check in cnnlab.checks)
EXERCISES = {
    "ex1_test": ("n_filters", "check_exercise_1"),
    "ex2_test": ("conv2_weights", "check_exercise_2"),
    "ex4_test": ("extractor", "check_exercise_4"),
    "ex5_test": ("units", "check_exercise_5"),
}

#: id of the export cell (never present in a released notebook)
EXPORT_CELL_ID = "cnnlab-autograder-export"

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
                if name == "extractor":
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
            elif isinstance(v, _np.ndarray):
                if v.dtype.kind in "biuf":
                    entry = {"kind": "value", "value": _torch.as_tensor(_np.ascontiguousarray(v)),
                             "numpy": True, "list": v.tolist() if v.ndim <= 1 else None}
                else:
                    entry = {"kind": "other", "type": "ndarray of " + str(v.dtype)}
            elif isinstance(v, (bool, int, float, str, type(None))):
                entry = {"kind": "value", "value": v}
            elif isinstance(v, _np.generic):
                entry = {"kind": "value", "value": v.item(), "numpy": True}
            elif isinstance(v, (list, tuple, range)):
                items = list(v)
                ok = all(isinstance(i, (bool, int, float, _np.generic)) for i in items)
                entry = ({"kind": "value", "value": [i.item() if isinstance(i, _np.generic) else i
                                                      for i in items], "type": type(v).__name__}
                         if ok else {"kind": "other", "type": type(v).__name__ + " of objects"})
            else:
                entry = {"kind": "other", "type": type(v).__name__}
        except Exception as exc:
            entry = {"kind": "other", "type": "export failed: " + type(exc).__name__}
        out[name] = entry
    _torch.save(out, path)
_cnnlab_export(__PATH__, __NAMES__)
del _cnnlab_export
'''


def export_source(path: str | Path) -> str:
    """Code of the export cell that writes the answers to ``path``."""
    names = [name for name, _ in EXERCISES.values()]
    return _SNIPPET.replace("__PATH__", repr(str(path))).replace("__NAMES__", repr(names))


class _Replay:
    """Stands in for the student's extractor: returns the exported output for the
    exported input (the check feeds the same seeded batch)."""

    def __new__(cls, entry):
        import torch
        from torch import nn

        class Replay(nn.Module):
            def __init__(self):
                super().__init__()
                self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

            def forward(self, x):
                if entry.get("error"):
                    raise RuntimeError(entry["error"])
                if entry.get("output") is None:
                    return None
                if not torch.equal(x.cpu(), entry["input"]):
                    raise RuntimeError("the re-check's input differs from the exported one")
                return entry["output"]

        return Replay()


def recheck(path: str | Path, model) -> dict[str, tuple[bool, str]]:
    """Run the genuine checks on exported answers.

    Args:
        path: the file the export cell wrote (``torch.save`` of plain values).
        model: the course network loaded from the course checkpoint.

    Returns:
        test cell id -> (passed, message). Empty when the file is absent.
    """
    import io
    from contextlib import redirect_stdout

    import numpy as np
    import torch

    from cnnlab import checks

    path = Path(path)
    if not path.exists():
        return {}
    data = torch.load(path, weights_only=True)
    results = {}
    for test_id, (name, check_name) in EXERCISES.items():
        entry = data.get(name, {"kind": "missing"})
        kind = entry.get("kind")
        try:
            if kind == "missing":
                raise AssertionError(f"`{name}` is not defined")
            if kind == "other":
                raise AssertionError(f"`{name}` is a {entry.get('type')}")
            check = getattr(checks, check_name)
            if kind == "module":
                if name != "extractor":
                    raise AssertionError(f"`{name}` is a {entry.get('type')} network")
                value = _Replay(entry)
            else:
                value = entry["value"]
                if entry.get("numpy") and isinstance(value, torch.Tensor):
                    value = value.numpy()
                elif entry.get("numpy") and isinstance(value, (int, float, bool)):
                    value = np.array(value)[()]
            with redirect_stdout(io.StringIO()):
                if check_name == "check_exercise_5":
                    check(value)
                else:
                    check(value, model)
            results[test_id] = (True, "")
        except AssertionError as exc:
            results[test_id] = (False, str(exc).splitlines()[0] if str(exc) else "AssertionError")
        except Exception as exc:  # a value the check cannot even look at
            results[test_id] = (False, f"{type(exc).__name__}: {exc}")
    return results
