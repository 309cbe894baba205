"""Where the lab computes, and in which precision: one decision for training and analyses.

:func:`get_device` picks CUDA, then Apple's MPS, then the CPU.
:func:`choose_precision` decides, once, how the network runs on that device:
the autocast dtype, the memory layout and whether training needs a
``GradScaler``. Training (:mod:`cnnlab.train`) and the analyses (features,
occlusion) ask it and nothing else.

With ``precision="auto"``:

- CUDA, compute capability >= 8.0 (A100, RTX 30xx and later): bf16 autocast,
  native on those cards;
- CUDA 7.x (V100, T4, Colab's usual GPU): fp16 autocast with
  ``torch.amp.GradScaler``; torch also reports bf16 there, but emulated and slow;
- older CUDA cards: fp32;
- CPU: bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else fp32;
- MPS: fp32.

``channels_last`` goes with ``"auto"`` on CUDA and the CPU (it was faster here in
fp32 too). ``precision="fp32"`` is always plain fp32 in the default layout.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

#: The values of every ``precision`` argument (see :func:`cnnlab.device.choose_precision`).
PRECISIONS = ("auto", "fp32")


def check_precision(precision) -> None:
    """Raise a ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not known. Use 'auto' (bf16 or fp16 where the "
            "hardware computes it fast, else fp32) or 'fp32' (always exact fp32)."
        )


def get_device(verbose: bool = True) -> torch.device:
    """The fastest device present: CUDA, then Apple's MPS, then the CPU.

    Args:
        verbose: print a one-line notice when falling back to the CPU.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    if verbose:
        print("No GPU found: cnnlab runs on the CPU (slower than a GPU; every profile "
              "still works).")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    """How the network runs on one device (what :func:`choose_precision` decided).

    Attributes:
        device_type: ``"cuda"``, ``"cpu"`` or ``"mps"``.
        dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``), or None
            for plain fp32.
        memory_format: ``torch.channels_last`` or ``torch.contiguous_format``.
        reason: why, in a few words (shown when training starts).
    """

    device_type: str
    dtype: torch.dtype | None
    memory_format: torch.memory_format
    reason: str

    @property
    def name(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients can underflow: training scales the loss (``GradScaler``)."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` with :attr:`dtype`, or a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A ``GradScaler`` for training, enabled only for fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)

    def describe(self) -> str:
        """One line, e.g. ``"bf16 autocast, channels_last (CPU with native bf16)"``."""
        parts = ["fp32" if self.dtype is None else f"{self.name} autocast"]
        if self.needs_grad_scaler:
            parts.append("GradScaler")
        if self.channels_last:
            parts.append("channels_last")
        return f"{', '.join(parts)} ({self.reason})"


def choose_precision(device: torch.device | str, precision: str = "auto") -> Precision:
    """Decide the autocast dtype, memory layout and loss scaling for ``device``.

    Args:
        device: where the network runs (e.g. ``model_device(model)``).
        precision: ``"auto"`` (what the hardware is fast at, see the module
            docstring) or ``"fp32"`` (always plain fp32, default layout).

    Returns:
        The :class:`Precision`.

    Raises:
        ValueError: ``precision`` is neither ``"auto"`` nor ``"fp32"``.

    Example:
        >>> choose_precision(torch.device("cpu"), "fp32").describe()
        'fp32 (asked for fp32)'
    """
    check_precision(precision)
    device = torch.device(device)
    kind = device.type
    contiguous, last = torch.contiguous_format, torch.channels_last
    if precision == "fp32":
        return Precision(kind, None, contiguous, "asked for fp32")
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        cc = f"CUDA compute capability {major}.{minor}"
        if major >= 8:
            return Precision(kind, torch.bfloat16, last, f"{cc}: native bf16")
        if major == 7:
            return Precision(kind, torch.float16, last, f"{cc}: fp16, bf16 only emulated")
        return Precision(kind, None, last, f"{cc}: no fast half precision")
    if kind == "cpu":
        if cpu_has_fast_bf16():
            return Precision(kind, torch.bfloat16, last, "CPU with native bf16")
        return Precision(kind, None, last, "CPU without native bf16")
    return Precision(kind, None, contiguous, f"{kind}: fp32")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
