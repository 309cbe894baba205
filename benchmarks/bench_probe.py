"""The Probe's cost, and the lab on another network: not a test, a measurement.

What it measures, on made-up images (``synthetic_cifar10``; the timings do not depend on
what the pictures show):

* probe: the course network's features of N images (default 2,000) through the slice
  ``model[:14]`` against ``Probe(model, "13")`` (the same values, read by a forward hook
  that stops the pass after the layer), ``precision="fp32"`` and ``"auto"``; the two are
  timed alternately, ``--repeats`` times each, and the medians compared (goal: the probe
  at most 5 % slower);
* lab: :func:`cnnlab.lab.run_lab` with the ``quick`` profile's analyses on ``--test-size``
  test images, for the course network at 32x32 (trained with the quick recipe on
  ``--train-size`` images: the ``train`` stage) and for a torchvision ResNet-18 with
  random weights (``weights=None``, 10 classes) at 64x64, read at ``layer4`` (no
  training: the lab takes it as given); the seconds of every stage of each, side by side.

Reproduce (a few minutes on a quiet 2-core CPU; ``--skip-lab`` for the probe rows only):

    python benchmarks/bench_probe.py --json benchmarks/results/probe.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_train import machine, write_json  # noqa: E402

from cnnlab import Probe, build_model, extract_features  # noqa: E402
from cnnlab.config import get_config, using  # noqa: E402
from cnnlab.data import synthetic_cifar10  # noqa: E402


def probe_cost(n: int, repeats: int) -> dict:
    """Median seconds of the slice and of the probe, per precision, and the overhead."""
    torch.manual_seed(0)
    model = build_model().eval()
    images = synthetic_cifar10("test", n=n, seed=1).images
    ways = {"slice model[:14]": model[:14], 'Probe(model, "13")': Probe(model, "13")}
    rows = {}
    for precision in ("fp32", "auto"):
        times = {name: [] for name in ways}
        warm = [extract_features(way, images[:256], progress=False, precision=precision)
                for way in ways.values()]
        if not np.allclose(warm[0], warm[1], rtol=1e-5 if precision == "fp32" else 1e-2,
                           atol=1e-5 if precision == "fp32" else 1e-2):
            raise AssertionError("the probe's features differ from the slice's")
        for _ in range(repeats):
            for name, way in ways.items():
                start = time.perf_counter()
                extract_features(way, images, progress=False, precision=precision)
                times[name].append(time.perf_counter() - start)
        slice_s, probe_s = (statistics.median(times[name]) for name in ways)
        rows[precision] = {"slice_s": round(slice_s, 4), "probe_s": round(probe_s, 4),
                           "overhead_percent": round(100 * (probe_s / slice_s - 1), 2)}
        print(f"  {precision:5s}: slice {slice_s:.3f} s, probe {probe_s:.3f} s "
              f"({rows[precision]['overhead_percent']:+.1f} %)", flush=True)
    return rows


def lab_stages(train_size: int, test_size: int) -> dict:
    """Seconds of each lab stage: the course network at 32x32, ResNet-18 at 64x64."""
    import torchvision

    from cnnlab.lab import Network, run_lab

    config = get_config("quick", train_size=train_size, test_size=test_size)
    train = synthetic_cifar10("train", n=train_size, seed=0)
    test = synthetic_cifar10("test", n=test_size, seed=1)
    torch.manual_seed(0)
    resnet = Network(model=torchvision.models.resnet18(weights=None, num_classes=10).eval(),
                     name="resnet18", layer="layer4", mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    runs = {"course network 32x32": ({}, train, test),
            "resnet18 64x64": ({"network": resnet}, train.resized((64, 64)), test.resized((64, 64)))}
    out = {}
    with tempfile.TemporaryDirectory() as tmp, using(config):
        for name, (kwargs, tr, te) in runs.items():
            print(f"lab: {name}", flush=True)
            folder = Path(tmp) / name.split()[0]
            summary = run_lab(config, tr, te, folder, checkpoint=Path(tmp) / "course.pt",
                              device=torch.device("cpu"), progress=False, **kwargs)
            out[name] = {"seconds": summary["seconds"],
                         "skipped": summary.get("skipped", {})}
    stages = list(dict.fromkeys(s for run in out.values() for s in run["seconds"]))
    names = list(out)
    print(f"\n{'stage':22s}" + "".join(f"{n:>24s}" for n in names))
    for stage in [*stages, "total"]:
        cells = []
        for n in names:
            seconds = out[n]["seconds"]
            value = sum(seconds.values()) if stage == "total" else seconds.get(stage)
            cells.append(f"{'-' if value is None else f'{value:.1f} s':>24s}")
        print(f"{stage:22s}" + "".join(cells))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images for the probe rows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--skip-lab", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine())
    print(f"probe against slicing, {args.n} images, median of {args.repeats}:")
    result = {"machine": machine(), "probe": probe_cost(args.n, args.repeats)}
    if not args.skip_lab:
        result["lab"] = lab_stages(args.train_size, args.test_size)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
