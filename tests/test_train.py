"""Training, evaluation, devices, seeding, checkpoint reuse and the profiles."""

import numpy as np
import pytest
import torch
from torch import nn
from sklearn.metrics import confusion_matrix

from cnnlab.config import LabConfig, get_config
from cnnlab.data import Split, synthetic_cifar10
from cnnlab.device import get_device
from cnnlab.model import build_model
import cnnlab.train as train_module
from cnnlab.train import (cpu_dropout, evaluate, lr_scheduler, make_optimizer, seed_everything,
                          train_model, train_or_load)

TINY = get_config("quick", epochs=3, batch_size=64, lr=2e-3, train_size=1500, test_size=500)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_cifar10("train", n=1500, seed=0), synthetic_cifar10("test", n=500, seed=0)


@pytest.mark.slow  # about 55 s on the shared 2-core machine
def test_training_lowers_the_loss_and_beats_chance_on_held_out_data(synthetic):
    train, test = synthetic
    seed_everything(0)
    model = build_model()
    before = evaluate(model, test).accuracy
    history = train_model(model, train, TINY, eval_data=test, progress=False)
    losses = history.losses
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.7
    after = evaluate(model, test)
    assert after.accuracy > 0.5 > before + 0.2  # chance is 0.1
    assert history.epochs[-1]["test_accuracy"] == pytest.approx(after.accuracy)
    assert all(e["images_per_s"] > 0 for e in history.epochs)
    assert not model.training


def test_evaluation_matches_scikit_learn_and_a_hand_count():
    model = build_model().eval()
    data = synthetic_cifar10("test", n=200, seed=5)
    ev = evaluate(model, data, precision="fp32")
    with torch.no_grad():
        preds = model(((data.images.float() / 255) - 0.5) / 0.5).argmax(1).numpy()
    truth = data.labels.numpy()
    assert np.array_equal(ev.predictions, preds)
    assert ev.accuracy == pytest.approx((preds == truth).mean())
    cm = confusion_matrix(truth, preds, labels=range(10))
    assert np.array_equal(ev.confusion, cm)
    for c in range(10):
        assert ev.per_class_accuracy[c] == pytest.approx(((preds == c) & (truth == c)).sum()
                                                         / (truth == c).sum())


def test_evaluate_restores_training_mode():
    model = build_model().train()
    evaluate(model, synthetic_cifar10("test", n=20))
    assert model.training


def test_training_is_reproducible_with_the_same_seed(synthetic):
    train, _ = synthetic
    cfg = TINY.replace(epochs=1, train_size=300)
    small = train.subset(300, seed=0)
    outs = []
    for _ in range(2):
        seed_everything(7)
        m = build_model()
        train_model(m, small, cfg.replace(precision="fp32"), progress=False)
        outs.append(m[0].weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


def test_cpu_fallback_when_no_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    assert "CPU" in capsys.readouterr().out
    m = build_model()
    h = train_model(m, synthetic_cifar10("train", n=64), TINY.replace(epochs=1), progress=False)
    assert next(m.parameters()).device.type == "cpu" and len(h.epochs) == 1


@pytest.mark.parametrize("total, warmup", [(100, 0.2), (7, 0.2), (3, 0.0), (50, 0.5)])
def test_onecycle_schedule_is_the_lab_formula(total, warmup):
    # From lr/10 up to lr over `warm` steps, then linearly down to 0 at step `total`.
    lr = 1.5e-3
    warm = max(1, round(warmup * total))
    expected = [lr * (0.1 + 0.9 * s / warm) if s < warm
                else lr * (total - s) / max(1, total - warm) for s in range(total)]
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = lr_scheduler(optimizer, TINY.replace(lr=lr, warmup=warmup), total)
    got = []
    for _ in range(total):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-18)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # no momentum cycling
    assert lr_scheduler(optimizer, TINY.replace(schedule="constant"), total) is None


def test_train_or_load_reuses_a_matching_checkpoint(tmp_path, synthetic):
    train, test = synthetic
    cfg = TINY.replace(epochs=1, train_size=300)
    small = train.subset(300, seed=0)
    path = tmp_path / "model.pt"
    m1, info1 = train_or_load(cfg, small, test, path, device=torch.device("cpu"), progress=False)
    assert not info1["reused"] and path.exists()
    m2, info2 = train_or_load(cfg, small, test, path, device=torch.device("cpu"), progress=False)
    assert info2["reused"]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    # Another recipe retrains, and keeps the old model rather than overwriting it.
    _, info3 = train_or_load(cfg.replace(seed=1), small, test, path,
                             device=torch.device("cpu"), progress=False)
    assert not info3["reused"] and (tmp_path / "model.previous.pt").exists()


def test_profiles_and_environment_variable(monkeypatch):
    full, quick, ref = get_config("full"), get_config("quick"), get_config("reference")
    assert (full.train_size, full.test_size) == (None, None)
    assert quick.train_size < 50_000 and quick.test_size < 10_000
    assert (ref.batch_size, ref.lr, ref.epochs, ref.schedule) == (32, 1e-3, 5, "constant")
    assert (ref.label_smoothing, ref.precision) == (0.0, "fp32")
    monkeypatch.setenv("CNNLAB_PROFILE", "quick")
    assert get_config() == quick
    monkeypatch.setenv("CNNLAB_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'.*CNNLAB_PROFILE.*full, quick, reference"):
        get_config()
    with pytest.raises(ValueError, match="Unknown configuration field"):
        get_config("full", epoch=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        LabConfig(batch_size=0)
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        LabConfig(label_smoothing=1.5)
    assert LabConfig.from_dict(quick.to_dict()) == quick
    assert "batch_size" in quick.describe()


def test_empty_training_split_is_refused():
    empty = Split(torch.empty(0, 3, 32, 32, dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                  ("a",) * 10, "empty")
    with pytest.raises(ValueError, match="empty"):
        train_model(build_model(), empty, TINY, progress=False)


def test_without_a_fused_cpu_adam_the_plain_one_is_used(monkeypatch):
    # torch before 2.4 (pyproject allows 2.2) refuses fused=True for CPU parameters
    # with a RuntimeError: training must go on with the plain Adam.
    plain = torch.optim.Adam

    def old_adam(params, lr, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point "
                               "Tensors of supported devices: ['cuda', 'xpu', 'privateuseone']")
        return plain(params, lr=lr, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", old_adam)
    opt = make_optimizer(build_model(), TINY)
    assert isinstance(opt, plain) and not opt.defaults["fused"]
    # the course network's 6 layers, a weight and a bias each
    assert opt.defaults["lr"] == TINY.lr and len(opt.param_groups[0]["params"]) == 12


def test_fused_adam_on_the_cpu_takes_the_plain_adams_steps():
    # make_optimizer's fused kernel against torch's plain per-parameter loop: the
    # same 5 steps (onecycle rate included) on the course network, within fp32 rounding.
    # Each step moves a weight by up to the rate (2e-3); a handful of the 590,000
    # weights, those whose squared-gradient average is near 0, differ by about 1e-6.
    data = synthetic_cifar10("train", n=64, seed=3)
    x, y = ((data.images.float() / 255) - 0.5) / 0.5, data.labels
    models, optimizers = [], []
    for fused in (True, False):
        seed_everything(0)
        m = build_model().eval()  # eval: no dropout, so both see the same function
        opt = make_optimizer(m, TINY) if fused else torch.optim.Adam(
            m.parameters(), lr=TINY.lr, foreach=False)
        models.append(m)
        optimizers.append((opt, lr_scheduler(opt, TINY, 5)))
    assert optimizers[0][0].defaults["fused"] and not optimizers[1][0].defaults["fused"]
    for _ in range(5):
        for m, (opt, sched) in zip(models, optimizers):
            loss = torch.nn.functional.cross_entropy(m(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seed_everything(0)
    start = build_model()
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=name)
    for p, p0 in zip(models[0].parameters(), start.parameters()):
        assert (p - p0).abs().median() > 1e-3  # 100x the tolerance: the steps moved it


def test_cpu_dropout_keeps_1_minus_p_scaled_and_restores_the_layer():
    layer = nn.Dropout(0.3)
    model = nn.Sequential(nn.Identity(), layer)
    x = torch.ones(4, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with cpu_dropout(model):
        assert "forward" in vars(layer) and type(layer) is nn.Dropout
        y = model(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        kept = y != 0
        assert 0.69 < kept.float().mean().item() < 0.71  # 262,144 draws
        torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
        y.sum().backward()
        torch.testing.assert_close(x.grad, kept.float() / 0.7)  # the same mask backwards
        assert model(x.detach().bfloat16()).dtype == torch.bfloat16
        model.eval()
        assert torch.equal(model(x), x)  # eval mode: the identity
        model.train()
    assert "forward" not in vars(layer)  # torch's own forward again
    torch.manual_seed(0)
    y = model(x.detach())
    assert 0.69 < (y != 0).float().mean().item() < 0.71


def test_training_on_the_cpu_draws_every_dropout_mask_with_rand(monkeypatch):
    calls = []
    plain = train_module.rand_dropout

    def counting(layer, x):
        calls.append(layer)
        return plain(layer, x)

    monkeypatch.setattr(train_module, "rand_dropout", counting)
    model = build_model()
    data = synthetic_cifar10("train", n=128, seed=1)
    train_model(model, data, TINY.replace(epochs=1, batch_size=64), progress=False)
    dropouts = [m for m in model if isinstance(m, nn.Dropout)]
    assert len(calls) == 2 * len(dropouts) == 6  # 2 steps, the 3 dropout layers each
    assert {id(m) for m in calls} == {id(m) for m in dropouts}
    assert all("forward" not in vars(m) for m in dropouts)

    class Mine(nn.Dropout):
        pass

    model[5] = Mine(0.5)  # a subclass of the student's own keeps its forward
    calls.clear()
    train_model(model, data, TINY.replace(epochs=1, batch_size=64), progress=False)
    assert len(calls) == 4 and model[5] not in calls
