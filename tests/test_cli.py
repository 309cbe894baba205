"""The command line: help, clear errors, and a tiny synthetic training run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=600)


def test_help_of_each_command():
    for cmd in ("train", "lab"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "--profile" in r.stdout and "--data" in r.stdout


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path):
    r = run("train", "--profile", "quick", "--no-download", "--data", str(tmp_path / "none"),
            env_extra={"CNNLAB_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2
    assert "Could not load the CIFAR-10" in r.stderr and "Traceback" not in r.stderr


def test_bad_profile_is_a_clear_error(tmp_path):
    r = run("train", env_extra={"CNNLAB_PROFILE": "fastest"})
    assert r.returncode == 2 and "Valid profiles: full, quick, reference" in r.stderr


@pytest.mark.slow
def test_train_on_synthetic_data_writes_model_and_metrics(tmp_path):
    r = run("train", "--profile", "quick", "--synthetic", "--epochs", "1",
            "--checkpoint", str(tmp_path / "m.pt"), "--json", str(tmp_path / "m.json"),
            env_extra={"CNNLAB_SOURCE": ""})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.pt").exists()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["accuracy"] > 0.3 and len(metrics["history"]) == 1
    assert "profile 'quick'" in r.stdout and "test accuracy" in r.stdout
    # Into a pipe: one plain line per epoch, never a bar's carriage returns.
    assert "\r" not in r.stdout + r.stderr
    assert re.findall(r"^training epoch (\d)/1: ", r.stdout, re.MULTILINE) == ["1"]
