"""Training and evaluating the course network, fast on CUDA, MPS or CPU.

The whole training split stays in memory as one uint8 tensor on the training
device; each step indexes it with a slice of a shuffled permutation and normalises
the batch there. No DataLoader, no per-sample PIL transforms. Where the hardware
is fast at it, the forward and backward passes run under bf16 (or fp16) autocast
in ``channels_last`` layout; elsewhere in fp32.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LabConfig
from .data import Split, normalize
from .model import model_device


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
        print("No GPU found: cnnlab runs on the CPU (slower than a GPU; every profile still works).")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (every device's) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def fast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype worth using on ``device``, or None for plain fp32.

    ``precision="fp32"`` always gives None. With ``"auto"``: bf16 on CUDA cards that
    support it (fp16 on older ones), bf16 on CPUs with native bf16, and fp32
    elsewhere (MPS, and CPUs without bf16, where emulated bf16 is slower).
    """
    if precision == "fp32":
        return None
    if precision != "auto":
        raise ValueError(f"precision={precision!r} is not valid; use 'auto' or 'fp32'.")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str = "auto"):
    """Autocast context for ``device`` (a no-op where fp32 is the fast choice)."""
    dtype = fast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def memory_format(device: torch.device, precision: str = "auto") -> torch.memory_format:
    """``channels_last`` where it is measured to help (CUDA, CPU), else contiguous."""
    if device.type in ("cuda", "cpu") and precision == "auto":
        return torch.channels_last
    return torch.contiguous_format


@dataclass
class History:
    """What happened during training: one dict per epoch with ``epoch``,
    ``loss`` (mean training loss), ``seconds`` (training time of the epoch),
    ``images_per_s`` and, when evaluation data was given, ``test_accuracy``."""

    epochs: list[dict] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [e["loss"] for e in self.epochs]

    @property
    def train_seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))


def _lr_factor(config: LabConfig, total_steps: int):
    if config.schedule == "constant":
        return lambda step: 1.0
    warm = max(1, int(round(config.warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:  # linear warm-up from lr/10
            return 0.1 + 0.9 * step / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))  # linear decay

    return factor


def train_model(
    model: nn.Module,
    data: Split,
    config: LabConfig,
    eval_data: Split | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on ``data`` with the recipe of ``config``.

    Args:
        model: the course network, already on the training device.
        data: training images uint8 (N, 3, 32, 32) and labels (N,).
        config: epochs, batch size, learning rate, schedule, precision, seed.
        eval_data: when given, test accuracy is measured after every epoch
            (its time is not counted in ``seconds``).
        progress: show a tqdm progress bar with the loss and images/s.

    Returns:
        The :class:`History`. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    if len(data) == 0:
        raise ValueError("The training split is empty: nothing to train on.")
    device = model_device(model)
    fmt = memory_format(device, config.precision)
    model.to(memory_format=fmt)
    images = data.images.to(device)
    labels = data.labels.to(device)
    n = len(data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, total))
    gen = torch.Generator().manual_seed(config.seed)
    history = History()
    # In a log file (CI, nohup) redraw every 10 s instead of ten times a second.
    quiet_log = "ipykernel" not in sys.modules and not sys.stderr.isatty()
    bar = tqdm(total=total, disable=not progress, unit="step", desc="training",
               mininterval=10.0 if quiet_log else 0.1)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            start = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            for i in range(steps_per_epoch):
                idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                x = normalize(images[idx])
                if config.hflip:
                    flip = torch.rand(len(idx), generator=gen).to(device) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                x = x.contiguous(memory_format=fmt)
                y = labels[idx]
                with autocast(device, config.precision):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(idx)
                if progress and (i % 25 == 0 or i == steps_per_epoch - 1):
                    done = min(n, (i + 1) * config.batch_size)
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(epoch=f"{epoch}/{config.epochs}", loss=f"{loss.item():.3f}",
                                    img_s=f"{rate:,.0f}", refresh=False)
                bar.update(1)
            seconds = time.perf_counter() - start
            entry = {
                "epoch": epoch,
                "loss": float(loss_sum) / n,
                "seconds": seconds,
                "images_per_s": n / seconds,
            }
            if eval_data is not None:
                entry["test_accuracy"] = evaluate(model, eval_data, config.precision).accuracy
            history.epochs.append(entry)
    finally:
        bar.close()
        model.eval()
    return history


@dataclass
class Evaluation:
    """Test-set results.

    Attributes:
        accuracy: fraction of images classified right, in [0, 1].
        per_class_accuracy: (C,) fraction right per true class.
        confusion: (C, C) int counts, rows = true class, columns = predicted.
        predictions: (N,) predicted labels.
    """

    accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray

    def to_dict(self, classes=None) -> dict:
        d = {"accuracy": self.accuracy, "per_class_accuracy": self.per_class_accuracy.tolist()}
        if classes is not None:
            d["per_class_accuracy"] = dict(zip(classes, d["per_class_accuracy"]))
        return d


def predict(model: nn.Module, images: torch.Tensor, precision: str = "auto",
            batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, C) float32 on the CPU for uint8 images (N, 3, 32, 32).

    The model's train/eval mode is restored afterwards.
    """
    device = model_device(model)
    fmt = memory_format(device, precision)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), autocast(device, precision):
            for i in range(0, len(images), batch_size):
                x = normalize(images[i : i + batch_size].to(device)).contiguous(memory_format=fmt)
                out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def evaluate(model: nn.Module, data: Split, precision: str = "auto") -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of ``model`` on ``data``.

    The confusion matrix is scikit-learn's ``confusion_matrix``.
    """
    from sklearn.metrics import confusion_matrix

    if len(data) == 0:
        raise ValueError("The evaluation split is empty: nothing to evaluate.")
    preds = predict(model, data.images, precision).argmax(1).numpy()
    truth = data.labels.numpy()
    n_classes = len(data.classes)
    cm = confusion_matrix(truth, preds, labels=np.arange(n_classes))
    rows = cm.sum(1)
    per_class = np.divide(np.diag(cm), rows, out=np.zeros(n_classes), where=rows > 0)
    return Evaluation(float((preds == truth).mean()), per_class, cm, preds)


CHECKPOINT_ENV = "CNNLAB_CHECKPOINTS"
#: Fields of LabConfig that change the trained weights; a checkpoint is reused only
#: when all of them match.
TRAINING_FIELDS = ("train_size", "epochs", "batch_size", "lr", "schedule", "warmup",
                   "hflip", "label_smoothing", "seed")


def default_checkpoint(config: LabConfig, data_source: str = "") -> Path:
    """``$CNNLAB_CHECKPOINTS/cnnlab-<profile>[-synthetic].pt``; the folder defaults to
    ``~/.cache/cnnlab/checkpoints``, so the command line and a notebook opened from
    any folder share one trained model."""
    from .data import _user_cache

    folder = Path(os.environ.get(CHECKPOINT_ENV) or _user_cache() / "checkpoints")
    tag = "-synthetic" if data_source.startswith("synthetic") else ""
    return folder / f"cnnlab-{config.profile}{tag}.pt"


def train_or_load(
    config: LabConfig,
    train: Split,
    test: Split,
    checkpoint=None,
    retrain: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    eval_each_epoch: bool = False,
) -> tuple[nn.Module, dict]:
    """Reuse a saved model trained with the same recipe, or train and save one.

    A checkpoint is reused when its training fields (:data:`TRAINING_FIELDS`) and
    its data source match ``config`` and ``train``. Otherwise a new model is trained;
    an existing checkpoint that does not match is kept as ``<name>.previous.pt``
    rather than overwritten.

    Args:
        eval_each_epoch: also measure test accuracy after every epoch (into the
            history); costs one pass over ``test`` per epoch.

    Returns:
        ``(model, info)`` with the model in eval mode on ``device``, and ``info``
        holding ``metrics`` (accuracy, per-class accuracy, confusion matrix,
        history), ``reused`` (bool), ``checkpoint`` (its path) and, after training,
        ``evaluation`` (the :class:`Evaluation` on ``test``).
    """
    from .model import build_model, load_checkpoint, save_checkpoint

    device = device or get_device()
    path = Path(checkpoint) if checkpoint else default_checkpoint(config, train.source)
    if path.exists() and not retrain:
        try:
            model, info = load_checkpoint(path, map_location=device)
        except ValueError as exc:
            print(f"Not reusing {path}: {exc}")
        else:
            saved = info["config"]
            same = saved is not None and all(
                getattr(saved, f) == getattr(config, f) for f in TRAINING_FIELDS
            ) and info["metrics"].get("train_source") == _plain_source(train.source)
            if same:
                print(f"Reusing the model saved in {path} "
                      f"(test accuracy {info['metrics'].get('accuracy', float('nan')):.1%}).")
                return model, {**info, "reused": True, "checkpoint": str(path)}
            keep = path.with_name(path.stem + ".previous" + path.suffix)
            print(f"{path} was trained with another recipe or data; keeping it as {keep}.")
            path.replace(keep)
    seed_everything(config.seed)
    model = build_model(len(train.classes)).to(device)
    history = train_model(model, train, config, eval_data=test if eval_each_epoch else None,
                          progress=progress)
    result = evaluate(model, test, config.precision)
    metrics = {
        **result.to_dict(),
        "confusion": result.confusion.tolist(),
        "history": history.epochs,
        "train_seconds": history.train_seconds,
        "train_source": _plain_source(train.source),
        "test_source": _plain_source(test.source),
        "device": str(device),
    }
    save_checkpoint(path, model, config, metrics)
    return model, {"config": config, "metrics": metrics, "reused": False,
                   "checkpoint": str(path), "evaluation": result}


def _plain_source(source: str) -> str:
    return source.replace(" [cache]", "")
