"""Training benchmark: the 2019 reference pipeline, cnnlab's default and cnnlab in fp32, in one run.

What it measures, on the real CIFAR-10 images (the same decoded tensors for both):

* reference: the 2019 notebook's pipeline. A Dataset that hands out PIL images one by
  one (as ``torchvision.datasets.CIFAR10`` does), ``ToTensor`` + ``Normalize`` per
  sample, ``DataLoader(batch_size=32, shuffle=True, num_workers=2)``, Adam 1e-3,
  constant learning rate, fp32, the course network;
* cnnlab: ``cnnlab.train_model`` with the ``full`` profile (the data kept as one
  uint8 tensor, batches by permutation, bf16 autocast and ``channels_last`` where the
  CPU computes bf16 natively, a warm-up then linear-decay schedule);
* cnnlab-fp32: the same with ``precision="fp32"``: what a CPU without native bf16
  (most laptops) runs, since ``choose_precision`` picks fp32 there.

For each: training images per second, the test accuracy after every epoch, and the
training time (evaluation excluded) until the test accuracy first reaches the
reference's final accuracy. Ratios against the reference: throughput and
time-to-accuracy (the reference's whole run divided by each cnnlab row's time to
reach the same accuracy); and the default's throughput over fp32's.

Reproduce (about 15 minutes on a quiet 2-core CPU):

    CNNLAB_DATA=../shared/data/cifar10-jpeg.tar.gz \\
        python benchmarks/bench_train.py --json benchmarks/results/train.json

Without the slow reference (cnnlab default against cnnlab fp32 only, about 4 minutes):
add ``--no-reference``. A short smoke run: ``--epochs 1 --cnnlab-epochs 1 --train-size 2000``.

The fp32 limit. Every row is also given as a share of the fastest fp32 training this
CPU could do: its measured fp32 matmul peak (``torch.mm`` of two 1024x1024 matrices,
median of 30, torch's threads) over the network's cost per training image, counted from
its layers: the forward pass's multiply-adds (2 FLOP each, convolutions and linear
layers: 50 MFLOP) three times (forward, gradient of the input, gradient of the
weights), less the first convolution's input gradient, which training never computes:
148 MFLOP. The goal for a 2-core AMD EPYC took 168 GFLOP/s / 148 MFLOP = 1,135 images/s;
the peak measured 157-196 GFLOP/s there from run to run, so read the share beside the peak.
``--as-fp32-cpu`` runs cnnlab's default as a CPU without native bf16 runs it (fp32 +
``channels_last``), to measure that path on a CPU that has bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnlab.config import get_config  # noqa: E402
from cnnlab.data import load_cifar10  # noqa: E402
from cnnlab.device import choose_precision  # noqa: E402
from cnnlab.model import build_model  # noqa: E402
from cnnlab.train import evaluate, seed_everything, train_model  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from cnnlab.device import cpu_has_fast_bf16

    return (f"{cpu} ({os.cpu_count()} cores, native bf16: {cpu_has_fast_bf16()}), "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()}")


def matmul_peak(size: int = 1024, repeats: int = 30) -> float:
    """The fp32 ``torch.mm`` rate of two ``size`` x ``size`` matrices, in FLOP/s: the
    median of ``repeats`` timed products (the best one swings by 20 % on a shared
    machine)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def training_flop(model: nn.Module, side: int = 32) -> float:
    """FLOP to train on one image: 3x the forward multiply-adds of the convolutions and
    linear layers (forward, input gradient, weight gradient) less the first layer's input
    gradient, which training does not compute."""
    forward = []

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] \
                * layer.kernel_size[1]
        else:
            per_output = layer.in_features
        forward.append(2 * per_output * output[0].numel())

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, side, side))
    finally:
        for h in handles:
            h.remove()
    return 3 * sum(forward) - forward[0]


def reference_transform():
    """The notebook's per-sample transform: ``ToTensor`` then ``Normalize`` to [-1, 1]."""
    from torchvision import transforms

    return transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    )


class PILDataset(torch.utils.data.Dataset):
    """The reference's data path: one PIL image per sample, transformed per sample.

    A sample is ``(image, label)``, or the image alone when ``labels`` is None.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) like CIFAR10.data
        self.labels = None if labels is None else labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        image = self.transform(Image.fromarray(self.images[i]))
        return image if self.labels is None else (image, self.labels[i])


def write_json(path: str, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path`` (folders made) and say so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def reference_run(train, test, epochs: int, seed: int, return_model: bool = False) -> dict:
    transform = reference_transform()
    loader = torch.utils.data.DataLoader(
        PILDataset(train.images, train.labels, transform),
        batch_size=32, shuffle=True, num_workers=2, persistent_workers=True,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = torch.utils.data.DataLoader(
        PILDataset(test.images, test.labels, transform), batch_size=32, num_workers=2,
    )
    seed_everything(seed)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    out = {"epochs": []}
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        acc = correct / len(test)
        out["epochs"].append({"epoch": epoch, "seconds": seconds,
                              "images_per_s": len(train) / seconds, "test_accuracy": acc})
        print(f"  reference epoch {epoch}: {seconds:6.1f} s, {len(train) / seconds:6.0f} img/s, "
              f"test accuracy {acc:.2%}", flush=True)
    if return_model:
        out["model"] = model
    return out


def cnnlab_run(train, test, config, name: str = "cnnlab") -> dict:
    seed_everything(config.seed)
    model = build_model()
    history = train_model(model, train, config, eval_data=test, progress=False)
    for e in history.epochs:
        print(f"  {name:9s} epoch {e['epoch']}: {e['seconds']:6.1f} s, "
              f"{e['images_per_s']:6.0f} img/s, test accuracy {e['test_accuracy']:.2%}",
              flush=True)
    final = evaluate(model, test, config.precision).accuracy
    return {"epochs": history.epochs, "final_accuracy": final}


def time_to(run: dict, target: float) -> float | None:
    total = 0.0
    for e in run["epochs"]:
        total += e["seconds"]
        if e["test_accuracy"] >= target:
            return total
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="data root or ImageFolder archive (default: $CNNLAB_DATA)")
    p.add_argument("--epochs", type=int, default=5, help="reference epochs (default 5)")
    p.add_argument("--cnnlab-epochs", type=int, default=None,
                   help="cnnlab epochs (default: the full profile's)")
    p.add_argument("--train-size", type=int, default=None, help="training images (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the slow 2019 pipeline: cnnlab default against cnnlab fp32 only")
    p.add_argument("--as-fp32-cpu", action="store_true",
                   help="run cnnlab's default as on a CPU without native bf16 (fp32 + "
                        "channels_last), on a CPU that has it")
    p.add_argument("--json", help="write the figures as JSON to this path")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    print("command: python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])))
    host = machine()  # read before --as-fp32-cpu hides the CPU's bf16
    print(f"machine: {host}")
    if args.as_fp32_cpu:
        import cnnlab.device

        cnnlab.device.cpu_has_fast_bf16 = lambda: False  # read by choose_precision
        print("as a CPU without native bf16 (--as-fp32-cpu): fp32 + channels_last")
    train = load_cifar10("train", args.data).subset(args.train_size, args.seed)
    test = load_cifar10("test", args.data)
    peak, flop = matmul_peak(), training_flop(build_model())
    limit = peak / flop
    print(f"fp32 limit: matmul peak {peak / 1e9:.0f} GFLOP/s / {flop / 1e6:.0f} MFLOP per "
          f"training image = {limit:,.0f} images/s")
    print(f"data: {len(train)} training, {len(test)} test images ({test.source})")
    config = get_config("full", seed=args.seed)
    if args.cnnlab_epochs:
        config = config.replace(epochs=args.cnnlab_epochs)
    print(config.describe(torch.device("cpu")))

    runs = {}
    if not args.no_reference:
        print("reference pipeline:")
        runs["reference"] = reference_run(train, test, args.epochs, args.seed)
    plan = choose_precision(torch.device("cpu"), config.precision)
    rows = [("cnnlab", config.precision)]
    fp32 = choose_precision(torch.device("cpu"), "fp32")
    if (plan.dtype, plan.memory_format) != (fp32.dtype, fp32.memory_format):  # time fp32 too
        rows.append(("cnnlab-fp32", "fp32"))
    else:
        print(f"the default already runs fp32 on this CPU ({plan.describe()}): "
              "one cnnlab row, which is the fp32 row")
    for name, precision in rows:
        print(f"{name} (precision={precision!r}):")
        runs[name] = cnnlab_run(train, test, config.replace(precision=precision), name)

    def seconds(run: dict) -> float:
        return sum(e["seconds"] for e in run["epochs"])

    def rate(run: dict) -> float:
        return len(train) * len(run["epochs"]) / seconds(run)

    ref = runs.get("reference")
    target = ref["epochs"][-1]["test_accuracy"] if ref else None
    result = {
        "machine": host,
        "as_fp32_cpu": args.as_fp32_cpu,
        "train_images": len(train),
        "test_images": len(test),
        **runs,
        "config": config.to_dict(),
        "target_accuracy": target,
        "seconds": {name: seconds(run) for name, run in runs.items()},
        "images_per_s": {name: rate(run) for name, run in runs.items()},
        "fp32_matmul_flop_per_s": peak,
        "training_flop_per_image": flop,
        "fp32_limit_images_per_s": limit,
        "share_of_fp32_limit": {name: rate(run) / limit for name, run in runs.items()},
        "default_precision": plan.describe(),
        "default_over_fp32_throughput": (rate(runs["cnnlab"]) / rate(runs["cnnlab-fp32"])
                                         if "cnnlab-fp32" in runs else 1.0),
    }
    print()
    print(f"{'':22s}" + "".join(f"{name:>14s}" for name in runs))
    print(f"{'images/s':22s}" + "".join(f"{rate(run):14.0f}" for run in runs.values()))
    print(f"{'of the fp32 limit':22s}"
          + "".join(f"{rate(run) / limit:14.0%}" for run in runs.values()))
    print(f"{'training seconds':22s}" + "".join(f"{seconds(run):14.1f}" for run in runs.values()))
    print(f"{'final test accuracy':22s}"
          + "".join(f"{run['epochs'][-1]['test_accuracy']:14.2%}" for run in runs.values()))
    if ref:
        reach = {name: time_to(run, target) for name, run in runs.items()}
        print(f"{'s to reach ' + format(target, '.2%'):22s}"
              + "".join(f"{(t if t else float('nan')):14.1f}" for t in reach.values()))
        for name in [n for n in runs if n != "reference"]:
            ratio = seconds(ref) / reach[name] if reach[name] else None
            result[f"{name}_seconds_to_target"] = reach[name]
            result[f"{name}_throughput_ratio"] = rate(runs[name]) / rate(ref)
            result[f"{name}_time_to_accuracy_ratio"] = ratio
            print(f"{name}: throughput {rate(runs[name]) / rate(ref):.2f}x the reference; "
                  + (f"time-to-accuracy {ratio:.2f}x" if ratio else
                     "did not reach the reference's final accuracy"))
    print(f"cnnlab default / cnnlab fp32 throughput: "
          f"{result['default_over_fp32_throughput']:.2f}x")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
