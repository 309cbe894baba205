"""The course model shipped in the package: its accuracy on the real test images, loading
on every device, the lab with it (no training), and the command that makes it again."""

import json
import os
from pathlib import Path

import pytest
import torch
from test_data import make_archive, make_imagefolder

from cnnlab import pretrained
from cnnlab.cli import main
from cnnlab.config import get_config
from cnnlab.data import load_cifar10, normalize, synthetic_cifar10
from cnnlab.lab import run_lab
from cnnlab.model import build_model, save_checkpoint
from cnnlab.pretrained import SHIPPED, load_pretrained, shipped_config

REAL_ARCHIVE = Path(os.environ.get("CNNLAB_DATA") or Path(__file__).resolve().parents[2]
                    / "shared" / "data" / "cifar10-jpeg.tar.gz")
REFERENCE_ACCURACY = 0.659  # the 2019 recipe on these images (README, benchmarks)


def _logits(model, images: torch.Tensor) -> torch.Tensor:
    """Plain fp32 forward pass, batch by batch, without cnnlab's predict()."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(normalize(images[i:i + 500]).to(device)).float().cpu()
                          for i in range(0, len(images), 500)])


def test_the_shipped_file_is_small_and_holds_cpu_tensors_of_the_course_network():
    assert SHIPPED.is_file(), f"{SHIPPED} is missing: {pretrained.REGENERATE}"
    size_mb = SHIPPED.stat().st_size / 1e6
    assert 1 < size_mb < 5, size_mb
    # No map_location: a tensor saved on a GPU would land there (and fail without one).
    raw = torch.load(SHIPPED, weights_only=True)
    reference = build_model().state_dict()
    assert list(raw["state_dict"]) == list(reference)
    for name, tensor in raw["state_dict"].items():
        assert tensor.device.type == "cpu" and tensor.dtype == torch.float32, name
        assert tensor.shape == reference[name].shape, name
    assert raw["config"] == shipped_config().to_dict()
    assert len(raw["metrics"]["history"]) == shipped_config().epochs
    assert "/" not in raw["metrics"]["train_source"], "no local folder is shipped"


@pytest.mark.parametrize("where", ["cpu", "cuda", "mps"])
def test_loads_into_the_course_network_on_each_map_location(where, images):
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None
                 and torch.backends.mps.is_available()}
    if not available[where]:
        pytest.skip(f"no {where} device on this machine: only the CPU load is checked here")
    model, info = load_pretrained(where)
    assert str(next(model.parameters()).device).startswith(where)
    assert not model.training and info["reused"] and info["pretrained"]
    assert info["checkpoint"] == str(SHIPPED) and info["config"] == shipped_config()
    cpu_model, _ = load_pretrained("cpu")
    torch.testing.assert_close(_logits(model, images), _logits(cpu_model, images),
                               atol=1e-3, rtol=1e-3)


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
@pytest.mark.realdata
@pytest.mark.skipif(not REAL_ARCHIVE.exists(),
                    reason=f"real CIFAR-10 archive not found at {REAL_ARCHIVE} "
                    "(set CNNLAB_DATA to check the shipped model's accuracy)")
def test_the_shipped_model_beats_the_reference_on_the_real_test_images():
    model, info = load_pretrained("cpu")
    test = load_cifar10("test", root=REAL_ARCHIVE)
    assert len(test) == 10_000
    accuracy = (_logits(model, test.images).argmax(1) == test.labels).float().mean().item()
    print(f"shipped model: {accuracy:.2%} of the 10,000 real test images")
    assert accuracy >= REFERENCE_ACCURACY
    assert accuracy == pytest.approx(info["metrics"]["accuracy"], abs=0.005)


def test_a_file_of_another_recipe_or_none_is_a_clear_error(tmp_path):
    other = save_checkpoint(tmp_path / "quick.pt", build_model(), get_config("quick"))
    with pytest.raises(ValueError, match=r"'quick'.*'full' recipe with seed 0.*--retrain"):
        load_pretrained(path=other)
    with pytest.raises(FileNotFoundError, match="cnnlab ship-weights"):
        load_pretrained(path=tmp_path / "absent.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as a cnnlab checkpoint"):
        load_pretrained(path=tmp_path / "broken.pt")


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_the_lab_with_the_shipped_model_trains_nothing(tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("the lab trained with pretrained=True")

    monkeypatch.setattr("cnnlab.train.train_model", no_training)
    monkeypatch.setattr("cnnlab.lab.train_or_load", no_training)
    monkeypatch.setenv("CNNLAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    tiny = get_config("quick", units=(0, 5), top_k=3, tsne_iter=250, smoothgrad_samples=2,
                      ig_steps=4, featvis_steps=8, faithfulness_steps=3)
    summary = run_lab(tiny, synthetic_cifar10("train", n=50), synthetic_cifar10("test", n=120),
                      tmp_path / "out", device=torch.device("cpu"), progress=False,
                      pretrained=True)
    out = capsys.readouterr().out
    assert "no training" in out and "Training on" not in out
    assert summary["pretrained"] and summary["model_reused"]
    assert summary["checkpoint"] == str(SHIPPED)
    shipped = torch.load(SHIPPED, weights_only=True)["metrics"]["history"]
    assert summary["training_history"] == shipped  # the shipped run's epochs, none new
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pretrained"] is True
    with pytest.raises(ValueError, match=r"so retrain=True would do nothing: drop it"):
        run_lab(tiny, synthetic_cifar10("train", n=50), synthetic_cifar10("test", n=120),
                tmp_path / "out2", retrain=True, pretrained=True)


def test_regenerating_trains_the_full_recipe_and_writes_a_loadable_file(tmp_path,
                                                                         monkeypatch, capsys):
    """The command that makes the shipped file, on a tiny ImageFolder archive."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    make_imagefolder(tmp_path / "copy", per_class=(4, 2))
    archive = make_archive(tmp_path / "copy", tmp_path / "tiny.tar.gz")
    out = tmp_path / "weights.pt"
    assert main(["ship-weights", "--data", str(archive), "--no-download",
                 "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, info = load_pretrained(path=out)
    metrics = info["metrics"]
    assert metrics["train_source"] == "ImageFolder copy tiny.tar.gz"
    assert len(metrics["history"]) == shipped_config().epochs
    test = load_cifar10("test", root=archive)
    right = (_logits(model, test.images).argmax(1) == test.labels).float().mean().item()
    assert right == pytest.approx(metrics["accuracy"])
    # Nothing to train on: a clear error, not a traceback.
    assert main(["ship-weights", "--data", str(tmp_path / "none"), "--no-download",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_the_command_line_switch_is_documented_and_checked(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    lab_help = capsys.readouterr().out
    assert "--pretrained" in lab_help and "shipped with cnnlab" in lab_help
    monkeypatch.setenv("CNNLAB_CHECKPOINTS", str(tmp_path))
    code = main(["lab", "--pretrained", "--checkpoint", str(tmp_path / "m.pt"), "--synthetic",
                 "--profile", "quick", "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"so checkpoint='{tmp_path / 'm.pt'}' would do nothing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.pt").exists()
