"""The whole lab end to end: the 2019 notebook's steps against ``cnnlab lab``, in one run.

What it measures, on the real CIFAR-10 images, ``full`` profile sizes (50,000 train,
10,000 test):

* reference: the 2019 notebook's steps, done its way: training with per-sample PIL
  transforms, a DataLoader (batch 32, 2 workers), Adam 1e-3 for 5 epochs in fp32; test
  accuracy; the two filter grids; features of the 10,000 test images through a
  DataLoader; top-10 images per unit with ``np.argsort``; occlusion of 7 units x 10
  images with the deepcopy + ``np.vstack`` loop; PCA 20 + t-SNE (800 iterations); each
  figure saved as a PNG;
* cnnlab: ``cnnlab lab --profile full --retrain`` in a subprocess (a fresh checkpoint
  folder, so it trains), which also draws the activation maps and the confusion matrix.

Reported: the seconds of each, the ratio, each one's test accuracy, and each one's peak
resident memory (the reference runs in this process, cnnlab in a child process; both
read from ``getrusage``).

Reproduce (about 15 minutes on a quiet 2-core CPU):

    CNNLAB_DATA=../shared/data/cifar10-jpeg.tar.gz \\
        python benchmarks/bench_lab.py --json benchmarks/results/lab.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_analyses import reference_features, reference_occlusion  # noqa: E402
from bench_train import machine, reference_run, write_json  # noqa: E402

from cnnlab.config import get_config  # noqa: E402
from cnnlab.data import load_cifar10  # noqa: E402


def reference_lab(train, test, out: Path, epochs: int) -> dict:
    """The 2019 notebook's steps, in order, saving each figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    seconds = {}
    start = time.perf_counter()
    run = reference_run(train, test, epochs, seed=0, return_model=True)
    model = run.pop("model")
    seconds["train+evaluate"] = time.perf_counter() - start

    t = time.perf_counter()
    for idx in (0, 2):
        w = model[idx].weight.detach().numpy()
        w = (w - w.min()) / (w.max() - w.min())
        fig = plt.figure(figsize=(6, 6))
        for i in range(w.shape[0]):
            ax = fig.add_subplot(6, 6, i + 1)
            ax.imshow(w[i].transpose(1, 2, 0) if w.shape[1] == 3 else w[i, 0], cmap="gray")
            ax.axis("off")
        fig.savefig(out / f"ref_filters_{idx}.png")
        plt.close(fig)
    seconds["filters"] = time.perf_counter() - t

    t = time.perf_counter()
    extractor = model[:14].eval()
    features = reference_features(extractor, test.images, batch_size=32, workers=2)
    seconds["features"] = time.perf_counter() - t

    t = time.perf_counter()
    units = list(get_config("full").units)
    top = np.argsort(-features, axis=0)[:10]
    fig = plt.figure(figsize=(8, 11))
    for j, u in enumerate(units):
        for i in range(10):
            ax = fig.add_subplot(10, len(units), i * len(units) + j + 1)
            ax.imshow(test.images[top[i, u]].permute(1, 2, 0).numpy())
            ax.axis("off")
    fig.savefig(out / "ref_top_k.png")
    plt.close(fig)
    seconds["top_k"] = time.perf_counter() - t

    t = time.perf_counter()
    images = (test.images.float() / 255 - 0.5) / 0.5
    for u in units:
        reference_occlusion(extractor, images[top[:, u]].numpy(), u)
    seconds["occlusion"] = time.perf_counter() - t

    t = time.perf_counter()
    reduced = PCA(n_components=20).fit_transform(features)
    emb = TSNE(n_components=2, random_state=0, max_iter=800).fit_transform(reduced)
    fig = plt.figure(figsize=(8, 8))
    plt.scatter(emb[:, 0], emb[:, 1], c=test.labels.numpy(), cmap="tab10", s=3)
    fig.savefig(out / "ref_tsne.png")
    plt.close(fig)
    seconds["tsne"] = time.perf_counter() - t
    return {"seconds": seconds, "total_seconds": sum(seconds.values()),
            "accuracy": run["epochs"][-1]["test_accuracy"], "history": run["epochs"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="data root or ImageFolder archive (default: $CNNLAB_DATA)")
    p.add_argument("--epochs", type=int, default=5, help="reference epochs (default 5)")
    p.add_argument("--train-size", type=int, default=None,
                   help="reference training images (default all; cnnlab uses its profile)")
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--keep", metavar="DIR", help="copy cnnlab's figures and summary here")
    args = p.parse_args(argv)
    print("command: python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])))
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "CNNLAB_CHECKPOINTS": str(tmp / "ck")}
        if args.data:
            env["CNNLAB_DATA"] = args.data
        # cnnlab first, in a child process: its peak memory is its own.
        print("cnnlab lab --profile full:", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnlab", "lab", "--profile", "full",
                        "--retrain", "--out", str(tmp / "cnnlab")], env=env, check=True,
                       cwd=HERE.parent, stdout=subprocess.DEVNULL)
        ours_seconds = time.perf_counter() - start
        ours = json.loads((tmp / "cnnlab" / "summary.json").read_text())
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if args.keep:
            shutil.copytree(tmp / "cnnlab", args.keep, dirs_exist_ok=True)

        print("reference notebook steps:", flush=True)
        train = load_cifar10("train", args.data).subset(args.train_size)
        test = load_cifar10("test", args.data)
        (tmp / "ref").mkdir()
        ref = reference_lab(train, test, tmp / "ref", args.epochs)
        ref_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "machine": machine(),
        "reference": {**ref, "peak_rss_mb": ref_peak},
        "cnnlab": {"wall_seconds": ours_seconds, "stage_seconds": ours["seconds"],
                   "accuracy": ours["accuracy"], "trustworthiness": ours["trustworthiness"],
                   "peak_rss_mb": child_peak},
        "ratio": ref["total_seconds"] / ours_seconds,
    }
    print()
    print(f"{'stage':18s}{'reference s':>14s}")
    for k, v in ref["seconds"].items():
        print(f"{k:18s}{v:14.1f}")
    print(f"{'stage':18s}{'cnnlab s':>14s}")
    for k, v in ours["seconds"].items():
        print(f"{k:18s}{v:14.1f}")
    print(f"\n{'':18s}{'reference':>12s}{'cnnlab':>12s}")
    print(f"{'total seconds':18s}{ref['total_seconds']:12.1f}{ours_seconds:12.1f}"
          "   (cnnlab: the whole command, start-up and data loading included)")
    print(f"{'test accuracy':18s}{ref['accuracy']:12.2%}{ours['accuracy']:12.2%}")
    print(f"{'peak RSS (MB)':18s}{ref_peak:12.0f}{child_peak:12.0f}")
    print(f"end-to-end ratio: {result['ratio']:.2f}x")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
