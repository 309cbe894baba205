"""Benchmark: cnnlab's analyses against the 2019 notebook's way of doing them.

What it measures, side by side in one run, on one device:

(a) Occlusion maps of 7 units (the lab's ``LabConfig.units``), each on its own
    top-10 test images (``--k``), 11x11 black occluder, stride 4 (7x7 positions). The
    reference is the notebook's algorithm: for each unit and each occluder
    position, ``copy.deepcopy`` the unit's image batch, black out the patch,
    ``np.vstack`` it onto a growing stack, then one forward pass over the whole
    stack (fp32, NCHW, under ``torch.no_grad``). cnnlab is
    ``occlusion.top_k_occlusion`` in fp32 and with ``precision="auto"``
    (bf16 autocast + channels_last where the hardware is fast at it). Reported:
    seconds, speed-up, largest absolute and relative difference of the maps
    against the reference, and how often the map's argmax position agrees.
(b) All 128 units on 10 test images (``--b-images``) at stride 2 (14x14
    positions). Reference as the notebook (one stack and one pass per unit, so
    128 stacks), timed on ``--ref-units`` units and extrapolated linearly to
    128 when fewer (said so in the table); also the reference with the stack built once and every unit
    read from its single pass. A MemoryError (or torch's "can't allocate") is
    caught and reported; the run is skipped when its estimated peak memory
    exceeds 80 % of the available memory.
(c) The floor: a bare forward pass of the extractor over as many images as
    cnnlab's occlusion runs through it (originals + occluded), in the same
    batches and precision, with no mask building; cnnlab's time is reported as a
    multiple of it.
(d) Features of the test images (10,000 with the real data): reference
    ``DataLoader`` over per-sample PIL images with ``ToTensor`` + ``Normalize``,
    batch 32, vs ``activations.extract_features`` (fp32 and auto), with the largest
    feature difference.
(e) t-SNE (PCA 20, then ``--tsne-iter`` iterations) of ``--tsne-points`` test
    features: seconds and trustworthiness (2,000-point subsample, 5 neighbours).

On what: the model of ``--checkpoint`` (else a seeded random network, said so in
the output; timings do not depend on the weights, agreement figures do), the
test split of ``--data`` (a CIFAR-10 folder or ImageFolder ``.tar.gz`` such as
``../shared/data/cifar10-jpeg.tar.gz``; without it, made-up images from
``cnnlab.data.synthetic_cifar10``, said so), on the device ``cnnlab.device.get_device``
picks (or ``--device``). Times are wall-clock seconds, best of ``--repeats`` runs for
cnnlab and the floor, one run for the (slow) references.

Reproduce (full run; several minutes on a 2-core CPU, dominated by the
reference feature extraction and the per-unit reference of (b))::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_analyses.py \\
        --data ../shared/data/cifar10-jpeg.tar.gz --checkpoint checkpoints/cnnlab-full.pt \\
        --json benchmarks/results/analyses.json

Smoke run (under a minute)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_analyses.py --images 200 --k 4 \\
        --b-images 4 --ref-units 1 --tsne-points 200 --tsne-iter 300 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train

from bench_train import PILDataset, reference_transform  # noqa: E402

from cnnlab.activations import extract_features, feature_extractor, top_k  # noqa: E402
from cnnlab.config import get_config  # noqa: E402
from cnnlab.data import MEAN, STD, normalize, synthetic_cifar10  # noqa: E402
from cnnlab.device import choose_precision, get_device  # noqa: E402
from cnnlab.embedding import embed, trustworthiness_score  # noqa: E402
from cnnlab.model import build_model, load_checkpoint, model_device  # noqa: E402
from cnnlab.occlusion import occluder_centres, occlusion_maps, top_k_occlusion  # noqa: E402

# --- the 2019 notebook's algorithms (written for this benchmark) --------------------

BLACK = (0.0 - MEAN) / STD  # a black pixel after normalisation: -1


def _reference_stack(images_np, size, stride):
    """The notebook's occlusion stack: for each occluder position (row-major), a
    ``copy.deepcopy`` of the batch with the patch blacked out, ``np.vstack``-ed on.

    images_np: normalised float32 (n, 3, H, W). Returns (stack, G): the
    position-major stack (G * G * n, 3, H, W) and G, the positions per axis.
    """
    centres = range(size // 2, images_np.shape[2], stride)
    stack = None
    for cy in centres:
        for cx in centres:
            occluded = copy.deepcopy(images_np)
            top, left = max(cy - size // 2, 0), max(cx - size // 2, 0)
            occluded[:, :, top : cy - size // 2 + size, left : cx - size // 2 + size] = BLACK
            stack = occluded if stack is None else np.vstack((stack, occluded))
    return stack, len(centres)


def reference_occlusion(extractor, images_np, unit, size=11, stride=4):
    """Occlusion maps of one unit, as the notebook computed them.

    images_np: normalised float32 (n, 3, H, W). Returns (n, G, G) float32.
    """
    n = images_np.shape[0]
    stack, g = _reference_stack(images_np, size, stride)
    device = model_device(extractor)
    with torch.no_grad():
        base = extractor(torch.from_numpy(images_np).to(device))[:, unit].cpu().numpy()
        act = extractor(torch.from_numpy(stack).to(device))[:, unit].cpu().numpy()
    act = act.reshape(g * g, n).T.reshape(n, g, g)  # the stack is position-major
    return base[:, None, None] - act


def reference_occlusion_all_units(extractor, images_np, size=11, stride=4):
    """The same stack built once, every unit read from its single pass: (n, D, G, G)."""
    n = images_np.shape[0]
    stack, g = _reference_stack(images_np, size, stride)
    device = model_device(extractor)
    with torch.no_grad():
        base = extractor(torch.from_numpy(images_np).to(device)).cpu().numpy()
        act = extractor(torch.from_numpy(stack).to(device)).cpu().numpy()
    act = act.reshape(g, g, n, -1).transpose(2, 3, 0, 1)
    return base[:, :, None, None] - act


def reference_features(extractor, images_uint8, batch_size=32, workers=0):
    """Features through a DataLoader of per-sample PIL transforms, as the notebook did."""
    from torch.utils.data import DataLoader

    device = model_device(extractor)
    out = []
    extractor.eval()
    with torch.no_grad():
        for batch in DataLoader(PILDataset(images_uint8, None, reference_transform()),
                                batch_size=batch_size, shuffle=False, num_workers=workers):
            out.append(extractor(batch.to(device)).cpu().numpy())
    return np.concatenate(out)


# --- helpers ---------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=1):
    """(best seconds over ``repeats`` runs, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def compare(ours, ref):
    """Largest abs/relative difference and argmax agreement of maps (..., G, G)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(ours - ref).max()
    flat_o = ours.reshape(-1, ours.shape[-2] * ours.shape[-1])
    flat_r = ref.reshape(-1, ref.shape[-2] * ref.shape[-1])
    return {
        "max_abs_diff": float(diff),
        "max_rel_diff": float(diff / max(np.abs(ref).max(), 1e-12)),
        "argmax_agreement": float((flat_o.argmax(1) == flat_r.argmax(1)).mean()),
    }


#: cnnlab's occlusion chunk size: the floor runs its forward passes in the same batches.
OCCLUSION_BATCH = inspect.signature(occlusion_maps).parameters["batch_size"].default


def floor_forward(extractor, n_images, batch_size, precision):
    """Forward passes over n_images random normalised images; nothing else."""
    device = model_device(extractor)
    plan = choose_precision(device, precision)
    x = torch.rand(min(n_images, batch_size), 3, 32, 32, device=device) * 2 - 1
    x = x.contiguous(memory_format=plan.memory_format)

    def run():
        with torch.inference_mode(), plan.autocast():
            done = 0
            while done < n_images:
                b = min(batch_size, n_images - done)
                extractor(x[:b])
                done += b

    return run


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reference_peak_bytes(n_stacked):
    """Rough peak of one reference pass: the float32 stack plus two conv outputs."""
    stack = n_stacked * 3 * 32 * 32 * 4
    conv = n_stacked * 32 * 32 * 32 * 4
    return stack * 2 + conv * 3  # vstack keeps old + new copy; conv out, relu, next conv


def is_oom(exc):
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate" in text or "out of memory" in text


# --- the benchmark ------------------------------------------------------------------


def load_images(args):
    if args.data:
        try:
            from cnnlab.data import load_cifar10

            test = load_cifar10("test", root=args.data, download=False)
            return test, test.source
        except Exception as exc:  # DataError, missing path, ...
            reason = str(exc).splitlines()[0]
            print(f"!! could not load --data {args.data} ({type(exc).__name__}: {reason}); "
                  "falling back to synthetic images")
    else:
        print("!! no --data given: using synthetic images (cnnlab.data.synthetic_cifar10); "
              "accuracy-free timings only")
    test = synthetic_cifar10("test", n=max(args.images, 10), seed=args.seed)
    return test, f"synthetic images, seed {args.seed} (NOT CIFAR-10)"


def load_model(args, device):
    if args.checkpoint:
        model, info = load_checkpoint(args.checkpoint, map_location=device)
        acc = info.get("metrics", {}).get("accuracy")
        accuracy = f" (test accuracy {acc:.3f})" if acc else ""
        return model, f"checkpoint {args.checkpoint}{accuracy}"
    torch.manual_seed(args.seed)
    print("!! no --checkpoint: using a randomly initialised network (timings are valid; "
          "map agreement figures describe an untrained network)")
    return build_model().to(device), f"random initialisation, seed {args.seed} (untrained)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", metavar="PATH", help="CIFAR-10 folder or ImageFolder .tar.gz")
    parser.add_argument("--checkpoint", metavar="FILE", help="trained cnnlab checkpoint")
    parser.add_argument("--images", type=int, default=10_000,
                        help="test images used for features and top-K (default all 10,000)")
    parser.add_argument("--k", type=int, default=10,
                        help="top-K images per unit in (a) (default 10, the lab's)")
    parser.add_argument("--b-images", type=int, default=10, help="images in (b) (default 10)")
    parser.add_argument("--ref-units", type=int, default=8,
                        help="units the per-unit reference of (b) is timed on (128 = all)")
    parser.add_argument("--tsne-points", type=int, default=10_000, help="points embedded in (e)")
    parser.add_argument("--tsne-iter", type=int, default=800, help="t-SNE iterations in (e)")
    parser.add_argument("--ref-workers", type=int, default=0,
                        help="DataLoader workers of the reference features (d)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N for cnnlab and floor")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="sections to skip, e.g. 'b,e'")
    parser.add_argument("--json", metavar="PATH", help="write all numbers as JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device) if args.device else get_device(verbose=False)
    config = get_config("full")
    test, data_source = load_images(args)
    images = test.images[: args.images]
    model, model_source = load_model(args, device)
    model.eval()
    extractor = feature_extractor(model)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    meta = {
        "device": str(device),
        "cpu": cpu_name(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": model_source,
        "data": data_source,
        "images": int(len(images)),
        "args": vars(args),
    }
    print(f"device {device} ({meta['cpu']}, {meta['cpu_count']} cores, "
          f"{meta['torch_threads']} torch threads), torch {torch.__version__}, "
          f"load average {meta['load_average_at_start']}")
    print(f"model: {model_source}\ndata: {data_source}, {len(images)} test images\n")
    rows, results = [], {"meta": meta}

    def row(section, method, seconds, baseline=None, note=""):
        speed = f"{baseline / seconds:.1f}x" if baseline and seconds else ""
        rows.append((section, method, seconds, speed, note))
        print(f"  {section:4s} {method:48s} {seconds:9.3f} s {speed:>8s}  {note}", flush=True)

    # (d) first: the features feed top-K, which (a) needs. -------------------------------
    if "d" not in skip:
        t_ref, f_ref = timed(lambda: reference_features(extractor, images,
                                                        workers=args.ref_workers), device)
        row("d", "reference DataLoader+PIL transforms, batch 32", t_ref)
        d = {"reference_s": t_ref}
        for precision in ("fp32", "auto"):
            t, f = timed(lambda precision=precision: extract_features(extractor, images, progress=False,
                                                  precision=precision), device, args.repeats)
            diff = float(np.abs(f - f_ref).max())
            rel = diff / float(np.abs(f_ref).max())
            row("d", f"cnnlab extract_features ({precision})", t, t_ref,
                f"max |diff| {diff:.2e} (rel {rel:.1e})")
            d[precision] = {"seconds": t, "speedup": t_ref / t, "max_abs_diff": diff,
                            "max_rel_diff": rel}
        results["d_features"] = d
    features = extract_features(extractor, images, progress=False, precision="fp32")
    k = min(args.k, len(images))
    top = top_k(features, k)
    units = list(config.units)

    # (a) 7 units x their top-10 images, stride 4 ---------------------------------------
    if "a" not in skip:
        def ref_a():
            maps = []
            for u in units:
                imgs = normalize(images[torch.as_tensor(top[:, u])]).numpy()
                maps.append(reference_occlusion(extractor, imgs, u))
            return np.stack(maps, axis=1)  # (K, U, G, G)

        t_ref, m_ref = timed(ref_a, device)
        row("a", f"reference deepcopy+vstack, {len(units)} units x {k} images", t_ref)
        a = {"reference_s": t_ref, "units": units, "k": k}
        distinct = len(np.unique(top[:, units]))
        n_forward = distinct * (1 + len(occluder_centres()) ** 2)
        for precision in ("fp32", "auto"):
            t, m = timed(lambda precision=precision: top_k_occlusion(extractor, images, top, units,
                                                 precision=precision), device, args.repeats)
            c = compare(m, m_ref)
            t_floor, _ = timed(floor_forward(extractor, n_forward, OCCLUSION_BATCH, precision), device,
                               args.repeats)
            row("a", f"cnnlab top_k_occlusion ({precision})", t, t_ref,
                f"max|diff| {c['max_abs_diff']:.1e} rel {c['max_rel_diff']:.1e} "
                f"argmax {c['argmax_agreement']:.0%}")
            row("c", f"floor: bare forward of {n_forward} images ({precision})", t_floor,
                None, f"cnnlab = {t / t_floor:.2f}x the floor")
            a[precision] = {"seconds": t, "speedup": t_ref / t, **c,
                            "floor_s": t_floor, "floor_images": n_forward,
                            "times_floor": t / t_floor}
        results["a_occlusion_7_units"] = a

    # (b) 128 units x 10 images, stride 2 ------------------------------------------------
    if "b" not in skip:
        n_b = min(args.b_images, len(images))
        imgs_b = images[:n_b]
        imgs_np = normalize(imgs_b).numpy()
        g = len(occluder_centres(32, 11, 2))
        n_stacked = n_b * g * g
        b = {"images": n_b, "positions": g * g}
        ref_units = list(range(min(args.ref_units, 128)))
        need, avail = reference_peak_bytes(n_stacked), available_memory_bytes()
        b["reference_peak_estimate_bytes"] = need
        if avail is not None and need > 0.8 * avail:
            note = f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB free"
            row("b", "reference per unit", float("nan"), None, note)
            b["reference"] = note
        else:
            try:
                t_some, _ = timed(lambda: np.stack(
                    [reference_occlusion(extractor, imgs_np, u, stride=2) for u in ref_units],
                    axis=1), device)
                t_ref = t_some * 128 / len(ref_units)
                how = ("measured" if len(ref_units) == 128
                       else f"extrapolated: measured on {len(ref_units)} of the 128 units")
                row("b", "reference per unit (as the notebook), 128 units", t_ref, None, how)
                b["reference_per_unit_s"] = t_ref
                b["reference_per_unit_how"] = how
                t_once, m_once = timed(
                    lambda: reference_occlusion_all_units(extractor, imgs_np, stride=2), device)
                row("b", "reference, stack built once, all units", t_once, None)
                b["reference_once_s"] = t_once
            except (MemoryError, RuntimeError) as exc:
                if not is_oom(exc):
                    raise
                row("b", "reference", float("nan"), None, f"out of memory: {exc}")
                b["reference"] = f"out of memory: {exc}"
                t_ref = t_once = m_once = None
        for precision in ("fp32", "auto"):
            t, m = timed(lambda precision=precision: occlusion_maps(extractor, imgs_b, stride=2,
                                                precision=precision), device, args.repeats)
            note = ""
            entry = {"seconds": t}
            if b.get("reference_once_s"):
                c = compare(m, m_once)
                entry.update(c, speedup_vs_per_unit=t_ref / t, speedup_vs_once=t_once / t)
                note = (f"vs per-unit {t_ref / t:.0f}x, vs once {t_once / t:.1f}x; "
                        f"max|diff| {c['max_abs_diff']:.1e} argmax {c['argmax_agreement']:.0%}")
            t_floor, _ = timed(floor_forward(extractor, n_b * (1 + g * g), OCCLUSION_BATCH, precision),
                               device, args.repeats)
            row("b", f"cnnlab occlusion_maps, 128 units ({precision})", t, None, note)
            row("c", f"floor: bare forward of {n_b * (1 + g * g)} images ({precision})",
                t_floor, None, f"cnnlab = {t / t_floor:.2f}x the floor")
            entry.update(floor_s=t_floor, times_floor=t / t_floor)
            b[precision] = entry
        results["b_occlusion_128_units_stride_2"] = b

    # (e) t-SNE -----------------------------------------------------------------------------
    if "e" not in skip:
        n_e = min(args.tsne_points, len(features))
        t, xy = timed(lambda: embed(features[:n_e], pca_dims=config.pca_dims, seed=args.seed,
                                    max_iter=args.tsne_iter, perplexity=config.perplexity,
                                    cache=False), device)
        trust = trustworthiness_score(features[:n_e], xy, n=2000, seed=args.seed)
        row("e", f"PCA {config.pca_dims} + t-SNE, {n_e} points, {args.tsne_iter} iter", t,
            None, f"trustworthiness {trust:.3f}")
        results["e_tsne"] = {"points": n_e, "max_iter": args.tsne_iter, "seconds": t,
                             "trustworthiness": trust}

    print("\n" + format_table(rows))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {path}")
    return results


def format_table(rows):
    head = ("sec", "method", "seconds", "speed-up", "notes")
    lines = [f"{head[0]:4s} {head[1]:48s} {head[2]:>11s} {head[3]:>8s}  {head[4]}",
             "-" * 110]
    for section, method, seconds, speed, note in rows:
        lines.append(f"{section:4s} {method:48s} {seconds:9.3f} s {speed:>8s}  {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
