"""Progress suited to where it is shown: a bar in a terminal, one line per epoch or stage
in a log file or pipe (cnnlab._progress holds the rule). tests/test_cli.py checks the
command line into a pipe."""

import io
import re
import sys

import pytest
import torch

from cnnlab import _progress
from cnnlab.config import get_config
from cnnlab.data import synthetic_cifar10
from cnnlab.model import build_model
from cnnlab.train import train_model

TINY = get_config("quick", epochs=3, batch_size=50)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_kernel(monkeypatch):
    """Outside a Jupyter kernel, whatever other tests imported."""
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


def _train(epochs=3):
    torch.manual_seed(0)
    return train_model(build_model(), synthetic_cifar10("train", n=200), TINY.replace(
        epochs=epochs), progress=True)


def test_in_a_log_file_training_writes_one_plain_line_per_epoch(no_kernel, monkeypatch):
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    history = _train()
    text = out.getvalue() + err.getvalue()
    assert "\r" not in text
    epochs = re.findall(r"^training epoch (\d)/3: loss (\d+\.\d+), .* images/s, .* s$", text,
                        re.MULTILINE)
    assert [int(e) for e, _ in epochs] == [1, 2, 3]
    assert [float(loss) for _, loss in epochs] == pytest.approx(history.losses, abs=5e-4)


def test_in_a_terminal_training_draws_a_bar_and_no_epoch_lines(no_kernel, monkeypatch):
    term, out = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(sys, "stdout", out)
    _train()
    assert "\r" in term.getvalue() and "training" in term.getvalue()
    assert "12/12" in term.getvalue()  # 200 images in batches of 50, 3 epochs: 12 steps
    assert "training epoch" not in out.getvalue() + term.getvalue()


def test_progress_false_is_silent_everywhere(no_kernel, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stderr", Terminal())
    train_model(build_model(), synthetic_cifar10("train", n=100), TINY.replace(epochs=1),
                progress=False)
    assert sys.stderr.getvalue() == ""
    monkeypatch.undo()
    _progress.line("x", show=False)
    assert capsys.readouterr().out == ""


def test_the_rule(no_kernel, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not _progress.interactive()
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert _progress.interactive()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # any module: "in a kernel"
    assert _progress.interactive()

