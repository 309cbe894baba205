"""Training and evaluating the course network, fast on CUDA, MPS or CPU.

The whole training split stays in memory as one uint8 tensor on the training
device; each step indexes it with a slice of a shuffled permutation and normalises
the batch there. No DataLoader, no per-sample PIL transforms. Where the hardware
is fast at it, the forward and backward passes run under bf16 (or fp16) autocast
in ``channels_last`` layout (fp16 with a ``GradScaler``); elsewhere in fp32.
:func:`cnnlab.device.choose_precision` decides which.

On the CPU two things more, measured on a 2-core AMD EPYC in fp32 (``channels_last``,
batch 32): ``nn.Dropout`` draws its masks from ``torch.rand`` during training
(:func:`cpu_dropout`; torch's ``bernoulli_`` took 13 % of a training step there), and
Adam is the fused kernel (:func:`make_optimizer`: 2.4 ms a step down to 0.9). A
``full`` training there: 871 images/s and 66.9 % against 793 images/s and 66.3 % before.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _progress
from ._inference import Runner
from ._memo import remembered
from .config import LabConfig
from .data import Split, normalize
from .device import Precision, choose_precision, get_device
from .model import model_device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (every device's) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def lr_scheduler(optimizer: torch.optim.Optimizer, config: LabConfig, total_steps: int):
    """The learning-rate schedule of ``config``, or None for a constant rate.

    ``"onecycle"`` is torch's ``OneCycleLR`` with linear ramps and no momentum
    cycling: from ``lr / 10`` up to ``lr`` over the first ``warm`` steps
    (``warm = round(warmup * total_steps)``, at least 1), then down to 0 at step
    ``total_steps``. ``OneCycleLR`` ends its ramp one step before its
    ``total_steps`` and its peak one step before ``pct_start * total_steps``,
    hence the ``+ 1`` in both (a test checks every step against the formula).
    """
    if config.schedule == "constant":
        return None
    warm = max(1, round(config.warmup * total_steps))
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps + 1,
        pct_start=(warm + 1) / (total_steps + 1), anneal_strategy="linear",
        cycle_momentum=False, div_factor=10.0, final_div_factor=float("inf"),
    )


def make_optimizer(model: nn.Module, config: LabConfig) -> torch.optim.Adam:
    """Adam with ``config``'s rate over ``model``'s parameters; on the CPU the fused
    kernel (one call for every parameter instead of about ten small ops each; the same
    update, a test compares the first steps with the plain loop's)."""
    params = list(model.parameters())
    if model_device(model).type == "cpu":
        try:
            return torch.optim.Adam(params, lr=config.lr, fused=True)
        except RuntimeError:  # torch before 2.4 has no fused Adam for the CPU
            pass
    return torch.optim.Adam(params, lr=config.lr)


def rand_dropout(layer: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s dropout with the mask drawn from ``torch.rand``: in training each
    value is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, as
    ``F.dropout`` does; in eval mode ``x`` itself.

    The same distribution as torch's, a different random stream. On a CPU it is about 3x
    faster: torch's dropout draws its mask with ``bernoulli_``, which ran one number at
    a time on the AMD EPYC measured (MKL's vectorised path is taken on Intel CPUs only),
    while ``torch.rand`` is vectorised. The mask is drawn in fp32 whatever ``x``'s dtype
    (a bf16 uniform would round values next to ``p``).
    """
    p = layer.p
    if not layer.training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x, dtype=torch.float32) >= p
    return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


@contextlib.contextmanager
def cpu_dropout(model: nn.Module):
    """While training on the CPU, every plain ``nn.Dropout`` of ``model`` runs
    :func:`rand_dropout`; its class and ``p`` stay as they are, and its own
    ``forward`` is back on exit. A layer whose ``forward`` is already overridden,
    a subclass, or a model on another device is left alone."""
    layers = []
    if model_device(model).type == "cpu":
        layers = [m for m in model.modules()
                  if type(m) is nn.Dropout and "forward" not in vars(m)]
    for layer in layers:
        layer.forward = functools.partial(rand_dropout, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               plan: Precision, label_smoothing: float = 0.0) -> torch.Tensor:
    """One optimiser step on the batch ``x`` (N, 3, H, W) float, ``y`` (N,) int64.

    The forward pass runs under ``plan``'s autocast; the loss is computed in
    fp32 and scaled by ``scaler`` (a no-op unless ``plan`` is fp16), which also
    skips the step if the scaled gradients overflowed.

    Returns:
        The batch's mean loss, a 0-d tensor (detached).
    """
    with plan.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


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
        progress: show progress: a tqdm bar with the loss and images/s in a terminal or
            notebook, one line per epoch in a log file (:mod:`cnnlab._progress`).

    Returns:
        The :class:`History`. The model is left in eval mode.
    """
    if len(data) == 0:
        raise ValueError("The training split is empty: nothing to train on.")
    device = model_device(model)
    plan = choose_precision(device, config.precision)
    fmt = plan.memory_format
    model.to(memory_format=fmt)
    images = data.images.to(device)
    labels = data.labels.to(device)
    n = len(data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = lr_scheduler(optimizer, config, total)
    scaler = plan.grad_scaler()
    if progress:
        print(f"Training on {device}: {plan.describe()}.")
    gen = torch.Generator().manual_seed(config.seed)
    history = History()
    # A bar in a terminal or notebook; in a log file one line per epoch (cnnlab._progress).
    steps = _progress.bar(show=progress, total=total, unit="step", desc="training")
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            start = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            with cpu_dropout(model):  # on the CPU, masks from torch.rand: rand_dropout
                for i in range(steps_per_epoch):
                    idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                    x = normalize(images[idx]).contiguous(memory_format=fmt)
                    loss = train_step(model, x, labels[idx], optimizer, scaler, plan,
                                      config.label_smoothing)
                    if scheduler is not None:
                        scheduler.step()
                    loss_sum += loss * len(idx)
                    if progress and (i % 25 == 0 or i == steps_per_epoch - 1):
                        done = min(n, (i + 1) * config.batch_size)
                        rate = done / max(time.perf_counter() - start, 1e-9)
                        steps.set_postfix(epoch=f"{epoch}/{config.epochs}",
                                          loss=f"{loss.item():.3f}", img_s=f"{rate:,.0f}",
                                          refresh=False)
                    steps.update(1)
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
            _progress.line(
                f"training epoch {epoch}/{config.epochs}: loss {entry['loss']:.3f}, "
                f"{entry['images_per_s']:,.0f} images/s, {seconds:.1f} s"
                + (f", test accuracy {entry['test_accuracy']:.1%}" if eval_data else ""),
                show=progress)
    finally:
        steps.close()
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

    def to_dict(self) -> dict:
        """``accuracy`` and ``per_class_accuracy`` as plain types (for JSON)."""
        return {"accuracy": self.accuracy,
                "per_class_accuracy": self.per_class_accuracy.tolist()}


def predict(model: nn.Module, images: torch.Tensor, precision: str | None = None,
            batch_size: int = 1000, mean=None, std=None) -> torch.Tensor:
    """Logits (N, C) float32 on the CPU for uint8 images (N, 3, H, W).

    ``precision`` None is the configuration's; ``mean`` and ``std`` the network's
    normalisation (None: the course's 0.5, see :func:`cnnlab.data.normalize`). The
    model's train/eval mode is restored afterwards.
    """
    if len(images) == 0:
        return torch.empty(0, 0)
    runner = Runner.of(model, precision)

    def forward(start: int, stop: int) -> torch.Tensor:
        x = normalize(images[start:stop].to(runner.device), mean, std)
        return model(runner.layout(x)).float().cpu()

    with runner.inference(model):
        return runner.batched(forward, len(images), batch_size)


@remembered
def evaluate(model: nn.Module, data: Split, precision: str | None = None,
             mean=None, std=None) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of ``model`` on ``data``.

    The confusion matrix is scikit-learn's ``confusion_matrix``; ``precision``
    None is the configuration's; ``mean``, ``std`` as for :func:`predict`.
    """
    from sklearn.metrics import confusion_matrix

    if len(data) == 0:
        raise ValueError("The evaluation split is empty: nothing to evaluate.")
    preds = predict(model, data.images, precision, mean=mean, std=std).argmax(1).numpy()
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
                   "label_smoothing", "seed")


def same_recipe(saved: LabConfig | None, config: LabConfig) -> bool:
    """Whether a checkpoint's config ``saved`` trains the same weights as ``config``
    (every field of :data:`TRAINING_FIELDS` equal; a checkpoint without one never is)."""
    return saved is not None and all(
        getattr(saved, f) == getattr(config, f) for f in TRAINING_FIELDS)


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
) -> tuple[nn.Module, dict]:
    """Reuse a saved model trained with the same recipe, or train and save one.

    A checkpoint is reused when its training fields (:data:`TRAINING_FIELDS`) and
    its data source match ``config`` and ``train``. Otherwise a new model is trained;
    an existing checkpoint that does not match is kept as ``<name>.previous.pt``
    rather than overwritten.

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
            same = same_recipe(info["config"], config) and (
                info["metrics"].get("train_source") == _plain_source(train.source))
            if same:
                print(f"Reusing the model saved in {path} "
                      f"(test accuracy {info['metrics'].get('accuracy', float('nan')):.1%}).")
                return model, {**info, "reused": True, "checkpoint": str(path)}
            keep = path.with_name(path.stem + ".previous" + path.suffix)
            print(f"{path} was trained with another recipe or data; keeping it as {keep}.")
            path.replace(keep)
    seed_everything(config.seed)
    model = build_model(len(train.classes)).to(device)
    history = train_model(model, train, config, progress=progress)
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
