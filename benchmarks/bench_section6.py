"""Benchmark: Section 6 of the lab (gradient views, synthesis, sanity checks), timed
against Captum's equivalent of each method in one run.

What it measures, on one device, in one process:

(a) The six attribution methods of ``cnnlab.attribution`` for the lab's units
    (``LabConfig.units``, 7) on each unit's own top-``--k`` test images (70 pairs),
    with the lab's settings (SmoothGrad 16 samples of noise 0.15; IG 32 trapezoid
    steps from black; Grad-CAM on conv 8, read after ReLU 9), each next to Captum's
    equivalent with Captum's default batching: ``Saliency(abs=False)``,
    ``NoiseTunnel(Saliency)``, ``IntegratedGradients(method="riemann_trapezoid")``
    rescaled by n/(n-1), ``GuidedBackprop``, ``LayerGradCam`` + bilinear upsampling,
    ``LayerGradientXActivation`` on the Flatten's input. Reported: the best of at least ``--repeats``
    turns of each, ours and Captum's in alternation (more turns for fast methods), Captum / cnnlab (>= 1 means cnnlab is no slower), and the largest
    difference of the maps relative to Captum's largest value.
(b) ``featvis.synthesize`` for the 7 units (256 Adam steps, one batch): seconds, and
    each unit's reached value beside its best test image's.
(c) ``sanity.cascading_randomization`` for every method plus occlusion and the edge
    control, on the top-``--sanity-k`` images of each unit (14 by default): seconds,
    the correlation table.
(d) ``sanity.faithfulness`` with black and blur fills on the 70 pairs, the maps of (a)
    plus occlusion, ranked by |map|: seconds, areas, share of images beating the random
    ranking; then (untimed) the same with the signed ranking.
"Section total" = (a) + (b) + (c) + (d) for cnnlab, (a) counted as each method's first
(cold) call, as a notebook pays it; the features, top-K and the
occlusion maps are Section 2-4 results it reuses (timed apart, not in the total).
Also printed, to re-check the issue's figures: dead units (maximum pre-activation
<= 0 over the test images), all-zero Grad-CAM maps, IG completeness error at 32 steps,
the contribution map's sum-back error.

On what: the model of ``--checkpoint`` (default ``~/.cache/cnnlab/checkpoints/cnnlab-full.pt``;
a seeded random network if absent, said so), the test split of ``--data`` (default
``$CNNLAB_DATA``; made-up images from ``synthetic_cifar10`` if absent, said so), on the
device ``cnnlab.train.get_device`` picks. Wall-clock seconds; run on a quiet machine.

Reproduce (about a minute on a 2-core CPU)::

    CNNLAB_DATA=/work/shared/data/cifar10-jpeg.tar.gz CNNLAB_CACHE=/work/cache/decoded \\
        .venv/bin/python benchmarks/bench_section6.py --json benchmarks/results/section6.json

Smoke run (seconds)::

    .venv/bin/python benchmarks/bench_section6.py --data '' --k 2 --sanity-k 1 \\
        --test-images 300 --steps 16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analyses import timed
from bench_train import machine

from cnnlab.activations import extract_features, top_k
from cnnlab.attribution import METHODS, attribute, integrated_gradients
from cnnlab.config import get_config
from cnnlab.data import STD, normalize, synthetic_cifar10
from cnnlab.featvis import synthesize
from cnnlab.model import build_model, load_checkpoint
from cnnlab.occlusion import occlusion_maps
from cnnlab.sanity import cascading_randomization, faithfulness, upsample
from cnnlab.train import get_device

DEFAULT_CHECKPOINT = Path.home() / ".cache" / "cnnlab" / "checkpoints" / "cnnlab-full.pt"


def captum_methods(ext, x, targets, cfg):
    """Captum's equivalent of each method: name -> function returning (N, H, W) maps."""
    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        LayerGradCam,
        LayerGradientXActivation,
        NoiseTunnel,
        Saliency,
    )

    n, steps, samples = len(x), cfg.ig_steps, cfg.smoothgrad_samples
    t = list(targets)

    def saliency():
        return Saliency(ext).attribute(x.clone().requires_grad_(), target=t, abs=False).sum(1)

    def noise_tunnel():
        torch.manual_seed(cfg.seed)  # the noise cnnlab draws with the same seed
        return NoiseTunnel(Saliency(ext)).attribute(
            x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=samples,
            stdevs=cfg.smoothgrad_noise / STD, target=t, abs=False).sum(1)

    def ig():
        out = IntegratedGradients(ext).attribute(
            x, baselines=-torch.ones_like(x), target=t, n_steps=steps,
            method="riemann_trapezoid")
        return out.sum(1) * steps / (steps - 1)

    def guided():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GuidedBackprop(ext).attribute(x.clone().requires_grad_(), target=t).sum(1)

    def gradcam():
        cam = LayerGradCam(ext, ext[9]).attribute(x, target=t, relu_attributions=True)
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0]

    def gxa():
        out = LayerGradientXActivation(ext, ext[12]).attribute(
            x, target=t, attribute_to_layer_input=True)
        return out.reshape(n, 64, 8, 8).sum(1)

    return {"gradient": saliency, "smoothgrad": noise_tunnel, "integrated_gradients": ig,
            "guided_backprop": guided, "grad_cam": gradcam, "contribution": gxa}


def timed_pair(ours, theirs, device, repeats, budget=2.0, most=60):
    """Best seconds of ``ours`` and of ``theirs``, run in turn after one warm-up each.

    At least ``repeats`` turns, more for fast methods (until each side has had about
    ``budget`` seconds, at most ``most`` turns): a 60 ms method timed 3 times on a
    shared 2-core machine gives a ratio that swings by 30 %.

    Returns:
        ``(ours_s, ours_result, theirs_s, theirs_result, ours_first_s)``, the last the
        first (cold) call of ours, the one a student's notebook pays.
    """
    first_ours, _ = timed(ours, device)
    first_theirs, _ = timed(theirs, device)
    turns = max(repeats, min(most, math.ceil(budget / max(first_ours, first_theirs, 1e-3))))
    best_ours = best_theirs = float("inf")
    for _ in range(turns):
        s, ours_result = timed(ours, device)
        best_ours = min(best_ours, s)
        s, theirs_result = timed(theirs, device)
        best_theirs = min(best_theirs, s)
    return best_ours, ours_result, best_theirs, theirs_result, first_ours


def load(args):
    notes = []
    checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else None
    if checkpoint and checkpoint.is_file():
        model, info = load_checkpoint(checkpoint)
        acc = info["metrics"].get("accuracy")
        notes.append(f"model: {checkpoint}" + (f" (test accuracy {acc:.1%})" if acc else ""))
    else:
        torch.manual_seed(0)
        model = build_model().eval()
        notes.append(f"!! no checkpoint at {checkpoint}: a seeded random network "
                     "(timings hold, agreement and fact figures do not)")
    test = None
    if args.data:
        from cnnlab.data import load_cifar10

        try:
            test = load_cifar10("test", root=args.data, download=False)
            notes.append(f"data: {args.data}, test split ({len(test)} images)")
        except Exception as exc:  # noqa: BLE001 - reported, then the made-up images
            notes.append(f"!! could not load --data {args.data} ({type(exc).__name__})")
    if test is None:
        test = synthetic_cifar10("test", n=args.test_images, seed=0)
        notes.append(f"!! made-up images (synthetic_cifar10, {len(test)}): not CIFAR-10")
    elif args.test_images and args.test_images < len(test):
        test = test.subset(args.test_images, seed=0)
        notes.append(f"   using {len(test)} of them (--test-images)")
    return model, test, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA", ""))
    parser.add_argument("--test-images", type=int, default=0,
                        help="use only this many test images (0 = all)")
    parser.add_argument("--k", type=int, default=10, help="top images per unit")
    parser.add_argument("--sanity-k", type=int, default=2,
                        help="top images per unit in the randomisation check")
    parser.add_argument("--steps", type=int, default=None,
                        help="synthesis steps (default LabConfig.featvis_steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    cfg = get_config("full")
    device = get_device(verbose=False)
    model, test, notes = load(args)
    model.to(device)
    ext = model[:14]
    print("bench_section6:", machine(), f"device {device}")
    for line in notes:
        print(line)
    units = list(cfg.units)
    result = {"machine": machine(), "notes": notes, "units": units, "k": args.k}

    # Sections 2-4 results this section reuses (not in the total).
    seconds_features, features = timed(
        lambda: extract_features(ext, test.images, progress=False), device)
    top = top_k(features, args.k)
    index = top[:, units].T.ravel()  # unit-major: unit 0's k images, then unit 1's...
    targets = np.repeat(units, args.k).tolist()
    images = test.images[torch.as_tensor(index)]
    x = normalize(images).to(device)
    seconds_occlusion, occ = timed(lambda: occlusion_maps(ext, images, units=units), device)
    occ = upsample(occ[np.arange(len(index)), np.repeat(np.arange(len(units)), args.k)],
                   (32, 32))
    dead = np.flatnonzero(features.max(0) <= 0)
    print(f"\nreused: features of {len(test)} images {seconds_features:.2f} s, occlusion of "
          f"{len(index)} pairs {seconds_occlusion:.2f} s (not in the section total)")
    print(f"dead units (max pre-activation <= 0 on these images): {len(dead)} of "
          f"{features.shape[1]}; the lab's units among them: "
          f"{[u for u in units if u in set(dead.tolist())]}")
    result["dead_units"] = dead.tolist()

    # (a) the methods, side by side with Captum.
    theirs_fns = captum_methods(ext, x, targets, cfg)
    maps, rows = {}, []
    print(f"\n(a) {len(index)} (unit, image) pairs")
    print(f"{'method':22s} {'cnnlab s':>9s} {'(cold)':>7s} {'Captum s':>9s} "
          f"{'Captum/cnnlab':>14s} {'max rel diff':>13s}")
    for method in METHODS:
        ours_s, ours, theirs_s, theirs, first_s = timed_pair(
            lambda m=method: attribute(m, ext, images, targets), theirs_fns[method], device,
            args.repeats)
        theirs = theirs.detach().cpu().numpy()
        diff = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
        maps[method] = ours
        rows.append({"method": method, "cnnlab_s": ours_s, "cnnlab_first_s": first_s,
                     "captum_s": theirs_s,
                     "ratio": theirs_s / ours_s, "max_rel_diff": diff})
        print(f"{method:22s} {ours_s:9.3f} {first_s:7.3f} {theirs_s:9.3f} "
              f"{theirs_s / ours_s:13.2f}x {diff:13.1e}")
    result["methods"] = rows
    seconds_methods = sum(r["cnnlab_first_s"] for r in rows)  # one cold call each, as in the lab

    # Facts of the issue, re-checked.
    zero_cams = int((maps["grad_cam"].reshape(len(index), -1).max(1) == 0).sum())
    with torch.no_grad():
        z = ext(x)[np.arange(len(index)), targets].cpu().numpy()
        black = ext(-torch.ones(1, 3, 32, 32, device=device))[0, targets].cpu().numpy()
    bias = ext[13].bias.detach().cpu().numpy()[targets]
    sum_err = float(np.abs(maps["contribution"].astype(np.float64).sum((1, 2)) + bias - z).max())
    ig_err = np.abs(maps["integrated_gradients"].sum((1, 2)) - (z - black))
    ig_rel = float(ig_err.sum() / np.abs(z - black).sum())
    ig_256 = integrated_gradients(ext, images, targets, steps=256).sum((1, 2))
    ig_rel_256 = float(np.abs(ig_256 - (z - black)).sum() / np.abs(z - black).sum())
    print(f"Grad-CAM all-zero maps: {zero_cams} of {len(index)}")
    print(f"contribution map: largest |sum + bias - unit| = {sum_err:.1e}")
    print(f"IG completeness: sum |sum(map) - (f(x) - f(black))| / sum |f(x) - f(black)| = "
          f"{ig_rel:.2%} at {cfg.ig_steps} steps ({ig_rel_256:.2%} at 256); worst pair "
          f"{float((ig_err / np.abs(z - black).clip(1e-6)).max()):.1%}")
    result.update(gradcam_zero_maps=zero_cams, contribution_sum_error=sum_err,
                  ig_completeness=ig_rel, ig_completeness_256=ig_rel_256)

    # (b) synthesis.
    seconds_synth, synth = timed(
        lambda: synthesize(ext, units, steps=args.steps, progress=False), device)
    best = features[:, units].max(0)
    print(f"\n(b) synthesis of {len(units)} units: {seconds_synth:.2f} s")
    for u, a, b in zip(units, synth.activation, best):
        ratio = f"{a / b:5.1f}x" if b > 0 else "  (dead unit)"
        print(f"  unit {u:3d}: synthesized {a:7.2f}, best test image {b:7.2f} {ratio}")
    result["synthesis"] = {"seconds": seconds_synth, "activation": synth.activation.tolist(),
                           "best_test": best.tolist()}

    # (c) cascading randomisation.
    ks = min(args.sanity_k, args.k)
    pick = (np.arange(len(units))[:, None] * args.k + np.arange(ks)[None]).ravel()
    seconds_rand, rand = timed(lambda: cascading_randomization(
        ext, images[torch.as_tensor(pick)], [targets[i] for i in pick]), device)
    print(f"\n(c) cascading randomisation on {len(pick)} pairs: {seconds_rand:.2f} s")
    print(f"{'':26s}" + "".join(f"{n:>11s}" for n in rand.layers))
    for method, row, count in zip(rand.methods, rand.correlation, rand.compared):
        print(f"{method:20s} ({count:3d})" + "".join(f"{v:11.2f}" for v in row))
    result["randomization"] = {"seconds": seconds_rand, "layers": rand.layers,
                               "methods": rand.methods,
                               "correlation": rand.correlation.tolist(),
                               "compared": rand.compared.tolist()}

    # (d) faithfulness.
    seconds_faith, faith_results = 0.0, {}
    all_maps = {**maps, "occlusion": occ}
    for fill in ("black", "blur"):
        s, res = timed(lambda f=fill: faithfulness(ext, images, targets, all_maps, fill=f),
                       device)
        seconds_faith += s
        faith_results[fill] = res
        print(f"\n(d) faithfulness, {fill} fill, {len(index)} pairs: {s:.2f} s")
        print(f"  {'method':22s} {'deletion':>9s} {'insertion':>10s} {'beats random':>13s}"
              f" {'(del, ins)':>12s}")
        for i, method in enumerate(res.methods):
            beats = (f"{res.beats_random[i]:12.0%}  ({res.beats_random_deletion[i]:.0%}, "
                     f"{res.beats_random_insertion[i]:.0%})" if i < len(res.methods) - 1
                     else "")
            print(f"  {method:22s} {res.deletion_area[i]:9.3f} {res.insertion_area[i]:10.3f} "
                  f"{beats}")
        result[f"faithfulness_{fill}"] = {
            "seconds": s, "methods": res.methods,
            "deletion_area": res.deletion_area.tolist(),
            "insertion_area": res.insertion_area.tolist(),
            "beats_random": res.beats_random.tolist()}

    # The same curves with the signed ranking (most positive first), outside the total:
    # the faithfulness figures may have used it.
    for fill in ("black", "blur"):
        res = faithfulness(ext, images, targets, all_maps, fill=fill, absolute=False)
        print(f"(d') signed ranking, {fill} fill: beats random (combined, deletion, insertion):")
        for i, method in enumerate(res.methods[:-1]):
            print(f"  {method:22s} {res.beats_random[i]:4.0%} {res.beats_random_deletion[i]:5.0%}"
                  f" {res.beats_random_insertion[i]:5.0%}")
        result[f"faithfulness_{fill}_signed"] = {"methods": res.methods,
                                                 "beats_random": res.beats_random.tolist()}

    total = seconds_methods + seconds_synth + seconds_rand + seconds_faith
    slower = [r["method"] for r in rows if r["ratio"] < 1]
    print(f"\nsection total: {total:.1f} s (methods {seconds_methods:.1f}, synthesis "
          f"{seconds_synth:.1f}, randomisation {seconds_rand:.1f}, faithfulness "
          f"{seconds_faith:.1f}); goal < 25 s: {'met' if total < 25 else 'NOT met'}")
    print("every method no slower than Captum's: "
          + ("yes" if not slower else f"NO ({', '.join(slower)})"))
    result["section_seconds"] = total
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(benchmark wall time {time.perf_counter() - start:.0f} s)")
