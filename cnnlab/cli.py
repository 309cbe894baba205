"""The ``cnnlab`` command: train the course network, or run the whole lab headless."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import DATA_ENV, PROFILE_ENV, PROFILES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help=f"quick, full or reference (default: ${PROFILE_ENV}, else full)")
    p.add_argument("--data", metavar="PATH",
                   help=f"data folder, or ImageFolder folder/.tar.gz (default: ${DATA_ENV})")
    p.add_argument("--synthetic", action="store_true",
                   help="use made-up images instead of CIFAR-10 (offline smoke runs)")
    p.add_argument("--no-download", action="store_true",
                   help="never try to download the official release")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="model file to reuse or write (default: "
                   "~/.cache/cnnlab/checkpoints/cnnlab-<profile>.pt)")
    p.add_argument("--retrain", action="store_true",
                   help="train even when a matching checkpoint exists")
    p.add_argument("--seed", type=int, help="override the profile's seed")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="What a convolutional network learns: the CIFAR-10 interpretability lab.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_train = sub.add_parser("train", help="train (or reuse) the course network and evaluate it")
    _common(p_train)
    p_train.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p_lab = sub.add_parser("lab", help="run the whole lab and write every figure")
    _common(p_lab)
    p_lab.add_argument("--out", default="lab-output", metavar="DIR",
                       help="folder for the figures, summary.json and index.html")
    p_lab.add_argument("--pretrained", action="store_true",
                       help="use the course model shipped with cnnlab (the full recipe, "
                       "seed 0) instead of training: every figure in about a minute")
    p_ship = sub.add_parser("ship-weights", help="train the full recipe (seed 0) on the real "
                            "images and write the course model shipped in the package")
    p_ship.add_argument("--data", metavar="PATH",
                        help=f"CIFAR-10 folder or ImageFolder .tar.gz (default: ${DATA_ENV})")
    p_ship.add_argument("--retrain", action="store_true",
                        help="train from scratch even when a matching model is cached")
    p_ship.add_argument("--no-download", action="store_true",
                        help="never try to download the official release")
    p_ship.add_argument("--out", metavar="FILE",
                        help="file to write (default: cnnlab/weights/ in the package)")
    return parser


def cmd_ship_weights(args) -> int:
    from .pretrained import SHIPPED, regenerate

    out = Path(args.out or SHIPPED)
    metrics = regenerate(args.data, args.retrain, not args.no_download, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): test accuracy "
          f"{metrics['accuracy']:.2%} on {metrics['test_source']}")
    return 0


def _setup(args):
    from .config import get_config
    from .data import load_lab_data
    from .device import get_device

    overrides = {k: getattr(args, k) for k in ("seed", "epochs") if getattr(args, k) is not None}
    config = get_config(args.profile, **overrides)
    device = get_device()
    print(config.describe(device))
    source = "synthetic" if args.synthetic else None  # None: $CNNLAB_SOURCE, else auto
    train, test = load_lab_data(config, args.data, source, download=not args.no_download)
    print(f"data: {len(train)} training and {len(test)} test images from {train.source}")
    return config, device, train, test


def cmd_train(args) -> int:
    from .train import train_or_load

    config, device, train, test = _setup(args)
    _, info = train_or_load(config, train, test, args.checkpoint, args.retrain, device)
    m = info["metrics"]
    print(f"test accuracy: {m['accuracy']:.2%}  (model: {info['checkpoint']})")
    for name, acc in zip(train.classes, m["per_class_accuracy"]):
        print(f"  {name:11s} {acc:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return 0


def cmd_lab(args) -> int:
    from .lab import run_lab

    config, device, train, test = _setup(args)
    summary = run_lab(config, train, test, args.out, checkpoint=args.checkpoint,
                      retrain=args.retrain, device=device, pretrained=args.pretrained)
    print(f"test accuracy {summary['accuracy']:.2%}; figures in {args.out}/ "
          f"(open {Path(args.out) / 'index.html'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .data import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"train": cmd_train, "lab": cmd_lab,
                "ship-weights": cmd_ship_weights}[args.command](args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted; saved checkpoints and figures are untouched.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
