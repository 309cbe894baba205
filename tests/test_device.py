"""The precision decision (faked GPUs and CPUs) and the fp16 + GradScaler step, run for real."""

import copy

import pytest
import torch

from cnnlab import device as device_mod
from cnnlab.config import get_config
from cnnlab.data import normalize, synthetic_cifar10
from cnnlab.device import choose_precision
from cnnlab.train import train_model, train_step

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "capability, dtype, scaler",
    [
        ((9, 0), torch.bfloat16, False),  # H100
        ((8, 0), torch.bfloat16, False),  # A100
        ((8, 6), torch.bfloat16, False),  # RTX 30xx
        ((7, 5), torch.float16, True),  # T4, Colab's usual card: bf16 only emulated
        ((7, 0), torch.float16, True),  # V100
        ((6, 1), None, False),  # P100 / GTX 10xx
    ],
)
def test_cuda_precision_follows_the_compute_capability(monkeypatch, capability, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch reports bf16 on every one of these cards (counting emulation): it must not matter.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    plan = choose_precision(CUDA)
    assert (plan.dtype, plan.needs_grad_scaler) == (dtype, scaler)
    assert plan.channels_last
    assert f"{capability[0]}.{capability[1]}" in plan.describe()
    assert choose_precision(CUDA, "fp32").dtype is None  # fp32 asked: whatever the card


def test_cpu_uses_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: False)
    plan = choose_precision(CPU)
    assert plan.dtype is None and plan.channels_last and not plan.needs_grad_scaler
    assert plan.describe() == "fp32, channels_last (CPU without native bf16)"
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    assert choose_precision(CPU).dtype is torch.bfloat16
    fp32 = choose_precision(CPU, "fp32")
    assert (fp32.dtype, fp32.memory_format) == (None, torch.contiguous_format)
    assert choose_precision(torch.device("mps")).dtype is None


def test_unknown_precision_is_refused_by_the_config_and_the_decision():
    with pytest.raises(ValueError, match="precision='half' is not known.*'auto'.*'fp32'"):
        choose_precision(CPU, "half")
    with pytest.raises(ValueError, match="precision='half' is not known"):
        get_config("quick", precision="half")


def test_the_choice_is_printed_with_the_config(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    text = get_config("quick").describe(CPU)
    assert text.splitlines()[-1].endswith(": bf16 autocast, channels_last (CPU with native bf16)")
    assert "fp32 (asked for fp32)" in get_config("reference").describe(CPU)


def fp16_plan() -> device_mod.Precision:
    """What a T4 gets, on the CPU: torch has fp16 autocast and GradScaler("cpu")."""
    return device_mod.Precision("cpu", torch.float16, torch.channels_last, "test: fp16 on CPU")


def small_network() -> torch.nn.Sequential:
    """Conv, ReLU, pooling, Linear: the course network's kinds of layers, small, because
    fp16 on a CPU is slow (two steps of the course network took 35 s here)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10),
    )


def test_fp16_step_with_grad_scaler_runs_on_the_cpu():
    torch.manual_seed(0)
    model = small_network().to(memory_format=torch.channels_last)
    before = copy.deepcopy(model.state_dict())
    data = synthetic_cifar10("train", n=16, seed=0)
    x = normalize(data.images).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    plan = fp16_plan()
    scaler = plan.grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16
    with plan.autocast():  # the forward pass really runs in fp16
        assert model(x).dtype == torch.float16
    for _ in range(2):
        loss = train_step(model, x, data.labels, optimizer, scaler, plan, 0.1)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
    changed = [name for name, value in model.state_dict().items()
               if not torch.equal(value, before[name])]
    assert changed == list(before)  # every weight and bias moved
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_training_with_the_fp16_plan_lowers_the_loss(monkeypatch):
    monkeypatch.setattr("cnnlab.train.choose_precision", lambda device, precision: fp16_plan())
    torch.manual_seed(0)
    model = small_network()
    config = get_config("quick", epochs=3, batch_size=32, lr=1e-2)
    history = train_model(model, synthetic_cifar10("train", n=256, seed=0), config,
                          progress=False)
    assert all(torch.isfinite(torch.tensor(history.losses)))
    assert history.losses[1] < history.losses[0]
