"""The command line: help, clear errors, and a tiny synthetic training run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env_extra=None, cwd=None):
    """``python -m cnnlab ARGS``; its default checkpoint folder is a fresh one (the run's
    shared folder holds the lesson's model, which a lab on other data would replace)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cnnlab-cli-checkpoints-") as checkpoints:
        env = {**os.environ, "CNNLAB_CHECKPOINTS": checkpoints, **(env_extra or {})}
        return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True,
                              text=True, cwd=cwd or ROOT, env=env, timeout=600)


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
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


# --- cnnlab lab on a network of your own -------------------------------------------------

CLASSES = ("ant", "bee", "cow")


def _image_folder(root: Path, n: int = 8, size=(40, 56)) -> Path:
    """train/ and test/ with ``n`` PNGs per class, each class brighter in its own channel."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 176, (*size, 3), dtype=np.uint8)
                pixels[..., c] += 80
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _resnet_weights(path: Path, num_classes: int = 3) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    """A 3-class image folder of 40x56 images and a ResNet-18 state_dict for it."""
    root = tmp_path_factory.mktemp("own")
    return _image_folder(root / "data"), _resnet_weights(root / "resnet18.pt")


@pytest.fixture(scope="module")
def own_lab(own_network, tmp_path_factory):
    data, weights = own_network
    out = tmp_path_factory.mktemp("own-lab") / "figures"
    r = run("lab", "--profile", "quick", "--model", "resnet18", "--weights", str(weights),
            "--num-classes", "3", "--data", str(data), "--layer", "layer3",
            "--mean", "0.485,0.456,0.406", "--std", "0.229", "0.224", "0.225",
            "--units", "2", "4", "--out", str(out), env_extra={"CNNLAB_SOURCE": ""})
    return r, out


@pytest.mark.slow
def test_lab_on_a_resnet_writes_every_figure_of_its_own_network(own_lab):
    import matplotlib.image as mpimg

    from cnnlab.lab import FIGURES

    r, out = own_lab
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # every section applies to a ResNet-18 with 3 outputs on 3 classes: none skipped
    assert summary["skipped"] == {}
    assert set(summary["figures"]) == {f"{stem}.png" for stem in FIGURES}
    for name in summary["figures"]:
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        img = mpimg.imread(out / name)
        assert img.shape[0] > 100 and img.shape[1] > 100, name
        assert img[..., :3].std() > 0.05, f"{name} looks blank"
    page = (out / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in summary["figures"])
    assert "layer3" in page and "resnet18" in page


@pytest.mark.slow
def test_lab_on_a_resnet_reads_the_layer_and_normalisation_it_was_given(own_lab):
    r, out = own_lab
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"] == "resnet18" and summary["layer"] == "layer3"
    assert summary["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert summary["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert summary["image_shape"] == [3, 40, 56]
    assert summary["feature_shape"] == [24, 256]  # layer3's 256 channels, 3 x 8 test images
    assert summary["units"] == [2, 4] and set(summary["unit_views"]) == {"2", "4"}
    assert set(summary["per_class_accuracy"]) == set(CLASSES)
    assert summary["classes"] is None  # layer3's units are not the classes
    # the sanity check re-initialises only what layer3 reads: no layer4 and no fc
    layers = summary["sanity"]["layers"]
    assert layers[0] == "trained" and layers[1].startswith("layer3.")
    assert not any(name.startswith(("layer4", "fc")) for name in layers)
    assert "conv1 Conv2d" in layers
    assert "layer3" in r.stdout


@pytest.mark.slow
def test_lab_on_a_resnet_values_are_the_probes(own_lab, own_network):
    """The best activation of each unit in summary.json is the probe's value, computed
    here independently with torchvision's feature extractor."""
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    from cnnlab.data import load_imagefolder, normalize

    _, out = own_lab
    data, weights = own_network
    summary = json.loads((out / "summary.json").read_text())
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    model.load_state_dict(torch.load(weights, weights_only=True))
    reader = create_feature_extractor(model.eval(), {"layer3": "out"})
    test = load_imagefolder(data, "test")
    x = normalize(test.images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        units = reader(x)["out"].mean(dim=(2, 3))
    for unit, views in summary["unit_views"].items():
        best = float(units[:, int(unit)].max())
        assert views["best_activation"] == pytest.approx(best, rel=1e-4, abs=1e-5)


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_lab_with_an_unknown_model_lists_the_valid_names(own_network, tmp_path):
    data, weights = own_network
    r = run("lab", "--model", "resnet81", "--weights", str(weights), "--data", str(data),
            "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'resnet81' is not a torchvision" in r.stderr
    assert "The closest are resnet18" in r.stderr and "vgg11" in r.stderr


@pytest.mark.slow  # about 5-10 s (a kernel, a subprocess or 10,000 images)
def test_lab_with_a_misspelt_layer_names_the_closest_layers(own_network, tmp_path):
    data, weights = own_network
    r = run("lab", "--model", "resnet18", "--weights", str(weights), "--data", str(data),
            "--layer", "layer_3", "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no layer named 'layer_3'" in r.stderr and "'layer3'" in r.stderr
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.slow  # three runs of the command (12-15 s)
def test_lab_with_weights_of_another_network_says_which_keys_differ(own_network, tmp_path):
    data, _ = own_network
    ten = _resnet_weights(tmp_path / "ten.pt", num_classes=10)
    r = run("lab", "--model", "resnet18", "--weights", str(ten), "--data", str(data),
            "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "does not fit this ResNet" in r.stderr
    assert "fc.weight (10, 512) in the file, (3, 512) in the model" in r.stderr
    r = run("lab", "--model", "resnet34", "--weights", str(ten), "--num-classes", "10",
            "--data", str(data), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "missing from the file: layer1.2.conv1.weight" in r.stderr


@pytest.mark.slow  # three runs of the command (12-15 s)
def test_lab_flags_of_your_own_network_need_model_and_weights(own_network, tmp_path):
    data, _ = own_network
    r = run("lab", "--layer", "layer3", "--out", str(tmp_path))
    assert r.returncode == 2 and "--layer only apply to a network of your own" in r.stderr
    r = run("lab", "--model", "resnet18", "--data", str(data), "--out", str(tmp_path))
    assert r.returncode == 2 and "--model resnet18 needs --weights FILE" in r.stderr
    r = run("lab", "--model", "resnet18", "--weights", str(tmp_path / "none.pt"),
            "--data", str(data), "--out", str(tmp_path))
    assert r.returncode == 2 and "no such file" in r.stderr


TINY_NET = '''
import torch.nn.functional as F
from torch import nn


class OneConv(nn.Module):
    """One conv layer, a functional ReLU, global pooling and a classifier."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, padding=2)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))
'''


def _tiny_network(folder: Path, num_classes: int) -> tuple[str, ...]:
    """``my_nets.py`` (TINY_NET) and a state_dict of its OneConv written to ``folder``:
    the flags ``--model my_nets:OneConv --weights FILE`` (``folder`` on PYTHONPATH)."""
    import importlib.util

    import torch

    (folder / "my_nets.py").write_text(TINY_NET)
    spec = importlib.util.spec_from_file_location("my_nets", folder / "my_nets.py")
    my_nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(my_nets)
    torch.manual_seed(0)
    torch.save(my_nets.OneConv(num_classes=num_classes).state_dict(), folder / "w.pt")
    return "--model", "my_nets:OneConv", "--weights", str(folder / "w.pt")


@pytest.mark.slow  # three runs of the command (12-15 s)
def test_lab_on_a_network_of_your_own_says_which_sections_do_not_apply(own_network,
                                                                        tmp_path):
    """A function of yours with one conv layer and 5 outputs for 3 classes: the second
    conv's filters, the confusion matrix and guided backprop (no ReLU before the conv)
    are skipped, each with its reason; every other figure is written; the default layer
    is the last one with a spatial output."""
    data, _ = own_network
    out = tmp_path / "out"
    r = run("lab", "--profile", "quick", *_tiny_network(tmp_path, 5), "--num-classes", "5",
            "--data", str(data), "--size", "32", "48", "--units", "1", "6", "--out", str(out),
            env_extra={"PYTHONPATH": f"{tmp_path}:{ROOT}", "CNNLAB_SOURCE": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "conv" and summary["image_shape"] == [3, 32, 48]
    assert set(summary["skipped"]) == {"filters_conv2", "confusion", "guided_backprop"}
    assert "no ReLU runs before layer conv" in summary["skipped"]["guided_backprop"]
    assert "guided_backprop" not in summary["sanity"]["correlation"]
    assert "guided_backprop" not in summary["faithfulness"]["black"]
    assert "1 Conv2d layer" in summary["skipped"]["filters_conv2"]
    assert "5 outputs and the data 3 classes" in summary["skipped"]["confusion"]
    assert "[confusion] skipped: the network has 5 outputs" in r.stdout
    assert summary["accuracy"] is None and "test accuracy not measured" in r.stdout
    written = {p.name for p in out.glob("*.png")}
    assert written == set(summary["figures"]) and len(written) == 10
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in written)
    page = (out / "index.html").read_text()
    assert "Sections skipped" in page and "filters_conv2" in page


@pytest.mark.slow  # one run of the command on 24 small images (about 10 s)
def test_lab_reading_the_outputs_of_your_network_names_them_by_the_datas_classes(
        own_network, tmp_path):
    """``--layer fc``, the layer whose output the network returns, reads the network's
    outputs as ``--layer ''`` does (tests/test_lab.py runs both): with one output per class
    of the ImageFolder, the lab's probe names them by the data's folders (ant, bee, cow),
    so its targets are classes; at an inner layer (the ResNet's layer3) they stay units."""
    data, _ = own_network
    out = tmp_path / "out"
    r = run("lab", "--profile", "quick", *_tiny_network(tmp_path, 3), "--layer", "fc",
            "--data", str(data), "--size", "16", "24", "--units", "1", "--out", str(out),
            env_extra={"PYTHONPATH": f"{tmp_path}:{ROOT}", "CNNLAB_SOURCE": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "fc" and summary["feature_shape"] == [24, 3]
    assert summary["classes"] == list(CLASSES)
    assert "at layer 'fc' (the classes ant, bee, cow)" in r.stdout
    assert "confusion" not in summary["skipped"]
