"""The whole lab, headless: train (or reuse) the network, then write every figure.

:func:`run_lab` follows the notebook's sections in order and writes, into one
folder, a PNG per figure, ``summary.json`` (accuracy, per-class accuracy,
the fraction of dead units, t-SNE trustworthiness, section 6's sanity
correlations and faithfulness areas, the seconds of every stage) and ``index.html`` showing
them all. ``cnnlab lab`` calls it.
"""

from __future__ import annotations

import html
import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ._io import atomic_write
from .activations import (extract_features, feature_extractor, firing_stats, plot_firing,
                          plot_top_k, top_k)
from .config import LabConfig, using
from .data import Split
from .device import get_device
from .embedding import embed, plot_embedding, trustworthiness_score
from .filters import activation_maps, plot_activation_maps, plot_filters
from .metrics import plot_confusion
from .occlusion import plot_occlusion, top_k_occlusion
from .pretrained import load_pretrained
from .sanity import (FILLS, cascading_randomization, faithfulness, plot_faithfulness,
                     plot_randomization)
from .train import evaluate, train_or_load
from .views import plot_unit_views, unit_views

#: The figures of the lab, in notebook order: file stem -> caption.
FIGURES = {
    "filters_conv1": "Section 1. The 32 filters of the first conv layer (model[0]), in colour: "
    "each has one 3x3 kernel per RGB channel.",
    "filters_conv2": "Section 1, Exercise 2. The 32 filters of the second conv layer "
    "(model[2]); each has 32 input channels, the first of which is shown in grey.",
    "activation_maps": "Section 1. The 32 feature maps of the first conv layer (after its ReLU) "
    "for one test image.",
    "firing": "Sections 2-3. How often each of the 128 units fires (is positive) on the test "
    "images, and its largest value: the red units never fire, so their top-K images are "
    "only the least negative ones.",
    "top_k": "Section 3. The test images that excite each chosen unit of the 128-unit layer "
    "most, best first.",
    "occlusion": "Section 4. The same images, dimmed where hiding an 11x11 patch changed the "
    "unit's activation least: the bright parts are what the unit relies on.",
    "tsne": "Section 5. t-SNE map of the 128-d features of the test images, one colour per "
    "class.",
    "confusion": "Section 5, Exercise 7. Confusion matrix on the test images, with per-class "
    "accuracy: the evidence for which classes the network confuses.",
    "unit_views": "Section 6. One unit, every view: each chosen unit's best test images, then "
    "occlusion, gradient, SmoothGrad, Integrated Gradients, Grad-CAM and the exact "
    "contribution map on its best image (red raises the unit, blue lowers it), and an "
    "image synthesized to excite it, with the activation it reaches.",
    "randomization": "Section 6. The sanity check (cascading randomization): each method's maps "
    "of the same units and images, compared with the trained network's (Spearman correlation "
    "of |map|) as the layers are re-initialized from the top down. A method that stays high "
    "does not depend on what the network learned.",
    "faithfulness_black": "Section 6. Deletion and insertion curves with a black fill: the "
    "unit's value as the pixels each map ranks highest are painted black (or are the only "
    "ones kept), against a random ranking.",
    "faithfulness_blur": "Section 6. The same curves with a blurred copy of the image as the "
    "fill: which method looks faithful depends on what removing a pixel means.",
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def _save(fig, path: Path) -> None:
    """Write a figure atomically (an interrupted run never leaves half a PNG)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def run_lab(
    config: LabConfig,
    train: Split,
    test: Split,
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    retrain: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    pretrained: bool = False,
) -> dict:
    """Run every section of the lab and write its figures to ``out``.

    Args:
        config: the profile's configuration (sizes, recipe, units, occluder, t-SNE).
        train, test: the splits, already subset to the profile's sizes.
        out: output folder (created).
        checkpoint: model file to reuse or write (default: see
            :func:`cnnlab.train.default_checkpoint`).
        retrain: train even when a matching checkpoint exists.
        device: where to compute (default: :func:`cnnlab.device.get_device`).
        progress: show progress bars.
        pretrained: use the course model shipped with cnnlab
            (:func:`cnnlab.pretrained.load_pretrained`) instead of training; ``config``
            then sets the analyses only.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ValueError: ``pretrained`` together with ``checkpoint`` or ``retrain``.
    """
    given = [f"{k}={v!r}" for k, v in (("checkpoint", checkpoint), ("retrain", retrain)) if v]
    if pretrained and given:
        raise ValueError(
            f"pretrained=True uses the weights shipped with cnnlab, so {' and '.join(given)} "
            "would do nothing: drop it (--checkpoint, --retrain), or drop pretrained "
            "(--pretrained) to train.")
    with using(config):  # every default below is this config's, not $CNNLAB_PROFILE's
        return _run_lab(config, train, test, out, checkpoint, retrain, device, progress,
                        pretrained)


def _run_lab(config, train, test, out, checkpoint, retrain, device, progress,
             pretrained) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or get_device()
    seconds: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 3)
        print(f"[{name}] {seconds[name]:.1f} s", flush=True)

    with stage("train"):
        if pretrained:
            model, info = load_pretrained(device)
            print(f"Using the course model shipped with cnnlab ({info['checkpoint']}): "
                  "no training.", flush=True)
        else:
            model, info = train_or_load(config, train, test, checkpoint, retrain, device,
                                        progress)
    with stage("evaluate"):  # already done when the model was just trained
        result = info.get("evaluation") or evaluate(model, test, config.precision)
    with stage("filters"):
        _save(plot_filters(model[0].weight, title="Filters of conv layer 0 (3 input channels)"),
              out / "filters_conv1.png")
        _save(plot_filters(model[2].weight, title="Filters of conv layer 2 (input channel 0)"),
              out / "filters_conv2.png")
        maps = activation_maps(model, test.images[0], layer=1)
        _save(plot_activation_maps(
            maps, title=f"Feature maps after layer 1 for a test {test.classes[test.labels[0]]}"),
            out / "activation_maps.png")
    with stage("features"):
        extractor = feature_extractor(model)
        features = extract_features(extractor, test.images, progress=progress,
                                    precision=config.precision)
    with stage("firing"):
        firing = firing_stats(features)
        _save(plot_firing(firing, config.units), out / "firing.png")
    with stage("top_k"):
        top = top_k(features, config.top_k)
        _save(plot_top_k(test.images, top, config.units), out / "top_k.png")
    with stage("occlusion"):
        omaps = top_k_occlusion(extractor, test.images, top, config.units,
                                size=config.occluder, stride=config.stride)  # fp32
        _save(plot_occlusion(test.images, top, config.units, omaps, sigma=config.sigma,
                             threshold=config.threshold), out / "occlusion.png")
    with stage("tsne"):
        n = min(config.tsne_points or len(test), len(test))
        emb = embed(features[:n], pca_dims=config.pca_dims, seed=config.seed,
                    max_iter=config.tsne_iter, perplexity=config.perplexity)
        trust = trustworthiness_score(features[:n], emb, seed=config.seed)
        _save(plot_embedding(emb, test.labels[:n].numpy(), test.classes,
                             title=f"t-SNE of {n} test images (trustworthiness {trust:.3f})"),
              out / "tsne.png")
    with stage("confusion"):
        _save(plot_confusion(result.confusion, test.classes, result.per_class_accuracy),
              out / "confusion.png")
    with stage("unit_views"):
        views = unit_views(model, test.images, top, config.units, seed=config.seed,
                           progress=progress, occlusion=omaps)
        _save(plot_unit_views(views), out / "unit_views.png")
    with stage("sanity"):
        # the 2 best images of every unit, as in the notebook: every method is
        # recomputed for each of the 6 randomized copies of the network
        randomization = cascading_randomization(extractor, *views.batch(2)[:2],
                                                seed=config.seed)
        _save(plot_randomization(randomization), out / "randomization.png")
    with stage("faithfulness"):
        images6, targets6, maps6 = views.batch()
        faithful = {fill: faithfulness(extractor, images6, targets6, maps6, fill=fill,
                                       seed=config.seed) for fill in FILLS}
        for fill, curves in faithful.items():
            _save(plot_faithfulness(curves), out / f"faithfulness_{fill}.png")

    history = info["metrics"].get("history", [])
    summary = {
        "profile": config.profile,
        "config": config.to_dict(),
        "device": str(device),
        "train_source": train.source,
        "test_source": test.source,
        "train_images": len(train),
        "test_images": len(test),
        "model_reused": info["reused"],
        "pretrained": pretrained,
        "checkpoint": info["checkpoint"],
        "accuracy": result.accuracy,
        "per_class_accuracy": dict(zip(test.classes, result.per_class_accuracy.tolist())),
        "training_history": history,
        "feature_shape": list(features.shape),
        "dead_units": firing.dead.tolist(),
        "dead_fraction": firing.dead_fraction,
        "unit_views": {
            str(u): {"best_activation": float(views.activation[j, 0]),
                     "synthesized_activation": float(views.synthesized_activation[j])}
            for j, u in enumerate(views.units)
        },
        "trustworthiness": trust,
        "sanity": {
            "layers": list(randomization.layers),
            "correlation": {m: [round(float(c), 4) for c in row] for m, row in
                            zip(randomization.methods, randomization.correlation)},
            "images_compared": dict(zip(randomization.methods,
                                        randomization.compared.tolist())),
        },
        "faithfulness": {
            fill: {m: {"deletion_area": float(curves.deletion_area[i]),
                       "insertion_area": float(curves.insertion_area[i]),
                       **({"beats_random": float(curves.beats_random[i])}
                          if m != "random" else {})}
                   for i, m in enumerate(curves.methods)}
            for fill, curves in faithful.items()
        },
        "tsne_points": n,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "figures": {f"{stem}.png": caption for stem, caption in FIGURES.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "index.html").write_text(render_index(summary))
    return summary


def render_index(summary: dict) -> str:
    """A self-contained HTML page showing every figure with its caption and the numbers."""
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{a:.1%}</td></tr>"
        for c, a in summary["per_class_accuracy"].items()
    )
    stages = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f} s</td></tr>"
                     for k, v in summary["seconds"].items())
    sanity = summary["sanity"]
    sanity_head = "".join(f"<th>{html.escape(name)}</th>" for name in sanity["layers"])
    sanity_rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{c:.2f}</td>" for c in row) + "</tr>"
        for m, row in sanity["correlation"].items()
    )
    fills = list(summary["faithfulness"])
    faith_head = "".join(f"<th>{html.escape(fill)}: deletion</th><th>insertion</th>"
                         f"<th>beats random</th>" for fill in fills)
    faith_rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(
            f"<td>{summary['faithfulness'][f][m]['deletion_area']:.3f}</td>"
            f"<td>{summary['faithfulness'][f][m]['insertion_area']:.3f}</td>"
            + (f"<td>{summary['faithfulness'][f][m]['beats_random']:.0%}</td>"
               if "beats_random" in summary["faithfulness"][f][m] else "<td></td>")
            for f in fills) + "</tr>"
        for m in summary["faithfulness"][fills[0]]
    )
    n_dead = len(summary["dead_units"])
    figures = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in summary["figures"].items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cnnlab: the lab's figures</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #444; }} table {{ border-collapse: collapse; }}
td, th {{ padding: 0.15em 0.8em; border-bottom: 1px solid #ddd; }}
</style></head><body>
<h1>What does the network learn?</h1>
<p>Profile <b>{html.escape(summary['profile'])}</b> on {html.escape(summary['device'])};
{summary['train_images']:,} training and {summary['test_images']:,} test images
({html.escape(summary['test_source'])}). Test accuracy
<b>{summary['accuracy']:.1%}</b>; t-SNE trustworthiness {summary['trustworthiness']:.3f}.
Dead units (never positive on the test images): <b>{n_dead} of {summary['feature_shape'][1]}
({summary['dead_fraction']:.0%})</b>.</p>
{figures}
<h2>Sanity check: correlation with the trained maps</h2>
<p>Spearman correlation of |map| with the trained network's, as layers are re-initialized
from the top down (mean over the chosen units' top images).</p>
<table><tr><th>method</th>{sanity_head}</tr>{sanity_rows}</table>
<h2>Faithfulness: areas under the deletion and insertion curves</h2>
<p>Deletion: lower is better; insertion: higher is better; "beats random": the share of images
where insertion minus deletion beats a random ranking's.</p>
<table><tr><th>method</th>{faith_head}</tr>{faith_rows}</table>
<h2>Per-class accuracy</h2><table>{rows}</table>
<h2>Time per stage</h2><table>{stages}</table>
<p>Peak memory: {summary['peak_rss_mb']:.0f} MB.</p>
</body></html>
"""
