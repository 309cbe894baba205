"""The ``cnnlab`` command: train the course network, or run the whole lab headless."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import DATA_ENV, PROFILE_ENV, PROFILES


def _data_flags(p: argparse.ArgumentParser) -> None:
    """Where the images come from: ``--data`` and ``--no-download``."""
    p.add_argument("--data", metavar="PATH",
                   help=f"data folder, or ImageFolder folder/.tar.gz (default: ${DATA_ENV})")
    p.add_argument("--no-download", action="store_true",
                   help="never try to download the official release")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help=f"quick, full or reference (default: ${PROFILE_ENV}, else full)")
    _data_flags(p)
    p.add_argument("--synthetic", action="store_true",
                   help="use made-up images instead of CIFAR-10 (offline smoke runs)")
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
    p_lab.add_argument("--units", type=int, nargs="+", metavar="U",
                       help="the units shown in the unit figures (default: the profile's)")
    p_lab.add_argument("--pretrained", action="store_true",
                       help="use the course model shipped with cnnlab (the full recipe, "
                       "seed 0) instead of training: every figure in about a minute")
    own = p_lab.add_argument_group(
        "your own network", "run the lab on a trained network of yours instead of the "
        "course network (--model and --weights; --data then names an ImageFolder)")
    own.add_argument("--model", metavar="NAME",
                     help="a torchvision model name (resnet18, vgg11, ...), built with "
                     "weights=None, or package.module:function returning an nn.Module")
    own.add_argument("--weights", metavar="FILE",
                     help="its trained state_dict, saved with torch.save(model.state_dict(), "
                     "FILE) (required with --model: nothing is downloaded or trained)")
    own.add_argument("--num-classes", type=int, metavar="N",
                     help="its number of outputs (default: the data's number of classes)")
    own.add_argument("--layer", metavar="NAME",
                     help="the layer whose units the lab reads, a dotted name from "
                     "named_modules() such as layer3, or '' (or the layer they come "
                     "from, such as fc) for the network's outputs, named by the data's "
                     "classes (default: the last layer with a spatial output)")
    own.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                     help="resize the images to H x W (default: their own size)")
    own.add_argument("--mean", nargs="+", metavar="M",
                     help="the per-channel mean it was trained with, pixels in [0, 1]: "
                     "0.485 0.456 0.406 or 0.485,0.456,0.406 (default: 0.5)")
    own.add_argument("--std", nargs="+", metavar="S",
                     help="the per-channel standard deviation, like --mean (default: 0.5)")
    p_ship = sub.add_parser("ship-weights", help="train the full recipe (seed 0) on the real "
                            "images and write the course model shipped in the package")
    _data_flags(p_ship)
    p_ship.add_argument("--retrain", action="store_true",
                        help="train from scratch even when a matching model is cached")
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


#: The options that only apply to a network of your own.
OWN_NETWORK = ("weights", "num_classes", "layer", "size", "mean", "std")


def _numbers(values, flag: str) -> tuple[float, ...] | None:
    """``--mean 0.485 0.456 0.406`` or ``--mean 0.485,0.456,0.406`` as floats."""
    if values is None:
        return None
    parts = [p for v in values for p in v.split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} {' '.join(values)}: give numbers, one per colour channel, "
                         "e.g. 0.485 0.456 0.406 (ImageNet's mean).") from None


def _config(args):
    """The profile's configuration with the flags' overrides, and the device."""
    from .config import get_config
    from .device import get_device

    overrides = {k: getattr(args, k, None) for k in ("seed", "epochs", "units")}
    config = get_config(args.profile, **{k: v for k, v in overrides.items() if v is not None})
    device = get_device()
    print(config.describe(device))
    return config, device


def _setup(args):
    from .data import load_lab_data

    config, device = _config(args)
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


def _network(args, n_classes: int):
    """The :class:`cnnlab.lab.Network` the flags describe."""
    from .lab import Network
    from .networks import build_network, load_weights
    from .probe import Probe

    model = build_network(args.model, args.num_classes or n_classes)
    load_weights(model, args.weights)
    mean, std = _numbers(args.mean, "--mean"), _numbers(args.std, "--std")
    # checked now, before any work: a typo names the closest layers
    layer = None if args.layer is None else Probe(model, args.layer, mean=mean, std=std).layer
    return Network(model, args.model, layer, mean, std, str(args.weights))


def _own_data(args, config):
    """The ImageFolder of ``--data`` (or the profile's data without it), subset to the
    profile's sizes and resized to ``--size``."""
    from .data import load_imagefolder, load_lab_data

    if args.data is None:
        train, test = load_lab_data(config, None, "synthetic" if args.synthetic else None,
                                    download=not args.no_download)
    else:
        train, test = (load_imagefolder(args.data, split).subset(n, config.seed)
                       for split, n in (("train", config.train_size),
                                        ("test", config.test_size)))
    if args.size:
        train, test = train.resized(args.size), test.resized(args.size)
    return train, test


def cmd_lab(args) -> int:
    from .lab import run_lab

    if args.model is None:
        given = [f"--{name.replace('_', '-')}" for name in OWN_NETWORK
                 if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to a network of your own: add "
                             "--model NAME --weights FILE (the course network uses "
                             "--checkpoint).")
        config, device, train, test = _setup(args)
        summary = run_lab(config, train, test, args.out, checkpoint=args.checkpoint,
                          retrain=args.retrain, device=device, pretrained=args.pretrained)
    else:
        if args.pretrained:
            raise ValueError(f"--pretrained is the course network's shipped model: drop it "
                             f"with --model {args.model}, or drop --model.")
        if args.weights is None:
            raise ValueError(f"--model {args.model} needs --weights FILE, its trained "
                             "state_dict: training a network of your own is not supported "
                             "yet, and random weights would show nothing learned.")
        config, device = _config(args)
        train, test = _own_data(args, config)
        print(f"data: {len(train)} training and {len(test)} test images of shape "
              f"{tuple(test.images.shape[1:])} from {test.source}")
        network = _network(args, len(test.classes))
        summary = run_lab(config, train, test, args.out, device=device, network=network)
    accuracy = ("not measured" if summary["accuracy"] is None
                else f"{summary['accuracy']:.2%}")
    print(f"test accuracy {accuracy}; figures in {args.out}/ "
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
