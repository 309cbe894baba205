"""Results the grader computes once, from the solution, and every grading kernel reads.

Grading runs the whole lesson once per student, and most of its cost is figures whose
inputs are the same for every student whose answers are right: the same features, the
same top-K images, the same units. The grader runs the instructor's solution once with
``CNNLAB_MEMO_RECORD`` naming a folder; each function marked :func:`remembered` then saves
its result under a key made of *everything* its result depends on: every byte of every
array and tensor argument, every weight and setting of a network argument, the active
configuration, torch's and NumPy's global random states (cnnlab never draws from Python's
own), the versions of cnnlab's own source, torch,
numpy and scikit-learn, and the number of threads. Grading kernels get that folder,
read-only, as ``CNNLAB_MEMO``: a call with exactly the same inputs reads the saved result
(and leaves the random states where the computation would have); any other call (a wrong
answer gives other features, other units, another network) is computed as usual. So a
student gets time, never a result that their own inputs would not give.

Arguments are keyed as Python binds them (positional or by keyword, defaults filled in).
An argument named ``units`` is keyed by its values alone: a list, a tuple, or a NumPy or
torch vector of the same whole numbers is one key, as every remembered function reads
``units`` through :func:`cnnlab.activations.validate_units`, which makes them one list.

An argument this module cannot key for certain (an object it does not know, a network with
a hook, an overridden ``forward``, a module class of the student's own) turns the memo off
for that call. With neither variable set (a student's own notebook) the wrapper costs one
environment lookup.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

READ_ENV = "CNNLAB_MEMO"  # a folder of saved results, read-only (grading kernels)
RECORD_ENV = "CNNLAB_MEMO_RECORD"  # a folder to save results into (the solution's run)
_TRUSTED_MODULES = ("torch.nn.", "torchvision.", "cnnlab.")
_FORMAT = 2


class _Unkeyable(Exception):
    """An argument whose effect on the result cannot be keyed for certain."""


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """A digest of cnnlab's own source and of the libraries its results come from."""
    digest = hashlib.sha256(f"memo format {_FORMAT}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    versions = [torch.__version__, np.__version__, sys.version]
    try:
        import sklearn
        versions.append(sklearn.__version__)
    except ImportError:
        pass
    digest.update(repr(versions).encode())
    return digest.hexdigest()


def _feed(h, value) -> None:
    """Add ``value`` to the hash ``h``, with its type; raise _Unkeyable when unsure."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        h.update(f"<{type(value).__name__}:{value!r}>".encode())
    elif isinstance(value, np.generic):
        h.update(f"<np.{value.dtype}:{value.item()!r}>".encode())
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise _Unkeyable("an array of Python objects")
        h.update(f"<ndarray {value.dtype.str} {value.shape}>".encode())
        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
    elif isinstance(value, torch.Tensor):
        _feed_tensor(h, value)
    elif isinstance(value, (list, tuple)):
        h.update(f"<{type(value).__name__} {len(value)}>".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, (set, frozenset)):
        _feed(h, sorted(value, key=repr))
    elif isinstance(value, dict):
        h.update(f"<dict {len(value)}>".encode())
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, nn.Module):
        _feed_module(h, value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type) \
            and type(value).__module__.startswith("cnnlab."):
        h.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())
        for field in dataclasses.fields(value):
            _feed(h, field.name)
            _feed(h, getattr(value, field.name))
    else:
        raise _Unkeyable(f"an argument of type {type(value).__name__}")


def _feed_tensor(h, tensor: torch.Tensor) -> None:
    if tensor.layout != torch.strided or tensor.device.type != "cpu" or tensor.is_quantized:
        raise _Unkeyable("a tensor that is not a dense CPU tensor")
    t = tensor.detach().contiguous()
    h.update(f"<tensor {t.dtype} {tuple(t.shape)} {tensor.requires_grad}>".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def _global_hooks() -> bool:
    from torch.nn.modules import module as m
    return any(getattr(m, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks", "_global_forward_hooks_always_called"))


def _feed_module(h, model: nn.Module) -> None:
    """Every submodule's class, settings, mode and tensors; refused when a hook, an
    instance-level override or a class from outside torch, torchvision and cnnlab could
    make its output differ from what those say."""
    if _global_hooks():
        raise _Unkeyable("a global module hook")
    for name, sub in model.named_modules(remove_duplicate=False):
        cls = type(sub)
        if not cls.__module__.startswith(_TRUSTED_MODULES):
            raise _Unkeyable(f"the module class {cls.__qualname__} of {cls.__module__}")
        h.update(f"<module {name} {cls.__module__}.{cls.__qualname__}>".encode())
        for key, value in sorted(vars(sub).items()):
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            if "hook" in key:
                if value:
                    raise _Unkeyable(f"a hook on {name or 'the network'}")
                continue
            if callable(value):  # e.g. an instance's own forward
                raise _Unkeyable(f"{name or 'the network'}.{key} set to a function")
            _feed(h, key)
            _feed(h, value)
        for key, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            _feed(h, key)
            _feed(h, tensor)


def _random_states() -> tuple:
    return torch.random.get_rng_state(), np.random.get_state()


def _set_random_states(states) -> None:
    torch_state, numpy_state = states
    torch.random.set_rng_state(torch_state)
    np.random.set_state(numpy_state)


def _unit_values(units):
    """``units`` as a list of Python ints when it is a list, tuple or 1-D NumPy or torch
    vector of whole numbers (the forms validate_units reads alike), else unchanged."""
    if isinstance(units, torch.Tensor):
        if units.ndim != 1 or units.dtype.is_floating_point or units.dtype.is_complex \
                or units.dtype == torch.bool:
            return units
        return [int(u) for u in units.tolist()]
    if isinstance(units, np.ndarray):
        return [int(u) for u in units.tolist()] if units.ndim == 1 and units.dtype.kind in "iu" \
            else units
    if isinstance(units, (list, tuple)) and all(
            isinstance(u, (int, np.integer)) and not isinstance(u, (bool, np.bool_)) for u in units):
        return [int(u) for u in units]
    return units


@functools.cache
def _signature(fn) -> inspect.Signature:
    return inspect.signature(fn)


def _key(fn, args, kwargs) -> str:
    from . import config

    h = hashlib.sha256()
    h.update(f"{fn.__module__}.{fn.__qualname__} {_code_digest()}".encode())
    h.update(f"threads {torch.get_num_threads()} {torch.get_default_dtype()} "
             f"grad {torch.is_grad_enabled()}".encode())
    _feed(h, config._ACTIVE.get() or config.get_config())  # what or_config(None, ...) reads
    bound = _signature(fn).bind(*args, **kwargs)  # a call fn itself refuses: computed
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if "units" in arguments:
        arguments["units"] = _unit_values(arguments["units"])
    _feed(h, arguments)
    torch_state, numpy_state = _random_states()
    _feed(h, torch_state)
    _feed(h, [numpy_state[0], numpy_state[1], *numpy_state[2:]])
    return h.hexdigest()


# Results are stored as plain containers of tensors (torch.load with weights_only=True
# reads nothing else): arrays and cnnlab's dataclasses are tagged and rebuilt on reading.
def _pack(value):
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise _Unkeyable("a result holding Python objects")
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return {"__npscalar__": torch.from_numpy(np.asarray(value).reshape(1).copy())}
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(v) for v in value]}
    if isinstance(value, list):
        return [_pack(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unkeyable("a result dict with keys that are not strings")
        return {"__dict__": {k: _pack(v) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("cnnlab."):
        cls = type(value)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _pack(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise _Unkeyable(f"a result of type {type(value).__name__}")


def _unpack(value):
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if "__npscalar__" in value:
        return value["__npscalar__"].numpy()[0]
    if "__tuple__" in value:
        return tuple(_unpack(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _unpack(v) for k, v in value["__dict__"].items()}
    module, _, name = value["__dataclass__"].partition(":")
    if not module.startswith("cnnlab."):
        raise ValueError(f"a saved result names the class {value['__dataclass__']}")
    cls = getattr(importlib.import_module(module), name)
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"a saved result names {value['__dataclass__']}, not a dataclass")
    return cls(**{k: _unpack(v) for k, v in value["fields"].items()})


def remembered(fn):
    """Mark ``fn`` (a pure function of its arguments, the configuration and the random
    states) as one whose results the grader may save once and read back (module doc)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        read, record = os.environ.get(READ_ENV), os.environ.get(RECORD_ENV)
        if not (read or record):
            return fn(*args, **kwargs)
        try:
            key = _key(fn, args, kwargs)
        except Exception:  # _Unkeyable, or an input the function itself will refuse
            return fn(*args, **kwargs)
        if read:
            saved = _load(Path(read) / f"{key}.pt", key)
            if saved is not None:
                result, states = saved
                _set_random_states(states)
                return result
        result = fn(*args, **kwargs)
        if record:
            _save(Path(record), key, result)
        return result

    return wrapper


def _load(path: Path, key: str):
    """The saved result and the random states after it, or None (absent or unreadable)."""
    try:
        entry = torch.load(path, weights_only=True)
        if entry.get("key") != key:
            return None
        numpy_state = entry["numpy_state"]
        states = (entry["torch_state"],
                  (numpy_state[0], numpy_state[1].numpy(), *numpy_state[2:]))
        return _unpack(entry["result"]), states
    except Exception:  # a missing or damaged entry: compute instead
        return None


def _save(folder: Path, key: str, result) -> None:
    try:
        packed = _pack(result)
    except _Unkeyable:
        return
    torch_state, numpy_state = _random_states()
    entry = {"key": key, "result": packed, "torch_state": torch_state,
             "numpy_state": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()),
                             *numpy_state[2:]]}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    torch.save(entry, tmp)
    os.replace(tmp, folder / f"{key}.pt")
