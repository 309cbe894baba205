"""The whole lab, headless: train (or reuse) the network, then write every figure.

:func:`run_lab` follows the notebook's sections in order and writes, into one
folder, a PNG per figure, ``summary.json`` (accuracy, per-class accuracy,
the fraction of dead units, t-SNE trustworthiness, section 6's sanity
correlations and faithfulness areas, the seconds of every stage) and ``index.html`` showing
them all. ``cnnlab lab`` calls it. On a trained network of your own (a :class:`Network`,
``cnnlab lab --model``) every section reads it through a :class:`cnnlab.Probe` at a named
layer; a section that cannot apply is skipped with a line saying why.
"""

from __future__ import annotations

import html
import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._figures import describe
from ._io import atomic_write
from .activations import extract_features, firing_stats, plot_firing, plot_top_k, top_k
from .attribution import relu_calls
from .config import LabConfig, using
from .data import MEAN, STD, Split
from .device import get_device
from .embedding import embed, plot_embedding, trustworthiness_score
from .filters import (activation_maps, conv_layers, conv_weight, plot_activation_maps,
                      plot_filters)
from .metrics import plot_confusion
from .model import unit_layer
from .occlusion import plot_occlusion, scaled_occluder, top_k_occlusion
from .pretrained import load_pretrained
from .probe import Probe, last_spatial_layer, reads_output
from .sanity import (
    FILLS,
    SANITY_METHODS,
    cascading_randomization,
    faithfulness,
    weight_layers,
    plot_faithfulness,
    plot_randomization,
)
from .train import evaluate, predict, train_or_load
from .views import MAP_VIEWS, plot_unit_views, unit_views

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
    "faithfulness_black": "Section 7 (optional). Deletion and insertion curves with a black "
    "fill: the unit's value as the pixels each map ranks highest are painted black (or are "
    "the only ones kept), against a random ranking.",
    "faithfulness_blur": "Section 7 (optional). The same curves with a blurred copy of the "
    "image as the fill: which method looks faithful depends on what removing a pixel means.",
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def _save(fig, path: Path) -> None:
    """Write a figure atomically (an interrupted run never leaves half a PNG)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


#: Captions of the lab's figures on a network of your own (``cnnlab lab --model``).
NETWORK_FIGURES = {
    "filters_conv1": "The filters of the first conv layer ({conv1}).",
    "filters_conv2": "The filters of the second conv layer ({conv2}), input channel 0 in grey.",
    "activation_maps": "The feature maps of layer {maps_layer} for one test image.",
    "firing": "How often each of the {units} {units_of} fires (is positive) on "
    "the test images (a conv layer's channels averaged over positions), and its largest "
    "value.",
    "top_k": "The test images that excite each chosen {unit_of} most, best first.",
    "occlusion": "The same images, dimmed where hiding a {occluder}x{occluder} patch changed "
    "the unit least.",
    "tsne": "t-SNE map of the {units}-d {units_of} on the test images, one "
    "colour per class.",
    "confusion": "Confusion matrix on the test images, with per-class accuracy.",
    "unit_views": "One unit, every view: each chosen unit's best test images, then occlusion, "
    "gradient, SmoothGrad, Integrated Gradients, Grad-CAM and the contribution map "
    "(gradient x activation) on its best image, and an image synthesized to excite it.",
    "randomization": "The sanity check (cascading randomization) over the conv and Linear "
    "layers that {reader} reads, from the top down{by_block}.",
    "faithfulness_black": "Deletion and insertion curves with a black fill.",
    "faithfulness_blur": "Deletion and insertion curves with a blurred copy as the fill.",
}


@dataclass
class Network:
    """A network of your own for :func:`run_lab`, with its trained weights loaded.

    Attributes:
        model: the network, taking images (N, C, H, W) normalised with ``mean``, ``std``.
        name: how it was named (``"resnet18"``, ``"mypkg.nets:small"``), for the summary.
        layer: the layer whose units the lab reads, a name from ``named_modules()``;
            None = the last layer with a spatial output
            (:func:`cnnlab.probe.last_spatial_layer`); ``""`` (or the layer they come
            from, as a ResNet's ``"fc"``) = the network's outputs, named by the data's
            classes when there is one output per class.
        mean, std: the per-channel normalisation it was trained with (None: 0.5).
        weights: the file the weights came from, for the summary.
    """

    model: nn.Module
    name: str
    layer: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    weights: str = ""


def run_lab(
    config: LabConfig,
    train: Split,
    test: Split,
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    retrain: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    network: Network | None = None,
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
        network: a trained network of your own, read at its :class:`Network` layer;
            None = the course network (trained or reused), read at its 128 units.
            A section that does not apply to it is skipped with a line saying why
            (``summary["skipped"]``).
        pretrained: use the course model shipped with cnnlab
            (:func:`cnnlab.pretrained.load_pretrained`) instead of training; ``config``
            then sets the analyses only.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ValueError: ``pretrained`` together with ``checkpoint``, ``retrain`` or ``network``.
    """
    given = [f"{k}={v!r}" for k, v in (("checkpoint", checkpoint), ("retrain", retrain),
                                       ("network", network and network.name)) if v]
    if pretrained and given:
        raise ValueError(
            f"pretrained=True uses the weights shipped with cnnlab, so {' and '.join(given)} "
            "would do nothing: drop it (--checkpoint, --retrain, --model), or drop "
            "pretrained (--pretrained).")
    with using(config):  # every default below is this config's, not $CNNLAB_PROFILE's
        return _run_lab(config, train, test, out, checkpoint, retrain, device, progress,
                        network, pretrained)


def maps_layer(model: nn.Module) -> str:
    """Where the lab draws activation maps: after the first conv layer's ReLU when a
    ``ReLU`` module comes right after it in ``named_modules()`` (``"1"`` in the course
    network), else the first conv layer itself (``"conv1"`` in a ResNet).

    Raises:
        ValueError: the model has no Conv2d.
    """
    named = [(name, m) for name, m in model.named_modules() if name]
    for i, (name, m) in enumerate(named):
        if isinstance(m, nn.Conv2d):
            after = named[i + 1] if i + 1 < len(named) else None
            return after[0] if after and isinstance(after[1], nn.ReLU) else name
    raise ValueError(f"{type(model).__name__} has no Conv2d layer: no feature maps to draw.")


def lab_units(config_units, n_units: int) -> list[int]:
    """The profile's units that the layer has; the first ones when it has none of them."""
    units = [u for u in config_units if u < n_units]
    return units or list(range(min(len(config_units), n_units)))


def tsne_settings(config: LabConfig, n: int, dims: int) -> tuple[int, float]:
    """``(pca_dims, perplexity)`` for t-SNE of ``n`` points of ``dims`` units: the
    profile's, unless the data are too few for them (then said in a line): no PCA when
    there are not more units (or points) than its dimensions, and a perplexity below
    a third of the points."""
    pca_dims = config.pca_dims if config.pca_dims < min(n, dims) else 0
    perplexity = min(config.perplexity, (n - 1) / 3)
    if (pca_dims, perplexity) != (config.pca_dims, config.perplexity):
        print(f"[tsne] {n} points of {dims} units: PCA to {pca_dims or 'no'} dimensions "
              f"(profile: {config.pca_dims}), perplexity {perplexity:.1f} (profile: "
              f"{config.perplexity})", flush=True)
    return pca_dims, perplexity


#: Above this many weight layers under the probe's layer (ResNet-18's 20 at layer4), the
#: sanity check re-initialises a top-level block a step (``by="block"``: 5 steps instead
#: of 20, each recomputing every method); the course network (5) and ResNet-18 up to its
#: layer3 (15) keep Adebayo et al.'s cascade, a layer a step.
CASCADE_LAYERS_AT_MOST = 16


def cascade_by(probe: Probe, input_size) -> str:
    """How the lab's sanity check steps down the network: ``"layer"``, or ``"block"``
    when the probe reads more than :data:`CASCADE_LAYERS_AT_MOST` weight layers."""
    return "block" if len(weight_layers(probe, input_size)) > CASCADE_LAYERS_AT_MOST else "layer"


def _run_lab(config, train, test, out, checkpoint, retrain, device, progress,
             network, pretrained) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or get_device()
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    written: list[str] = []
    titles: dict[str, str] = {}  # stem -> the figure's own title, its alternative text

    @contextmanager
    def stage(name: str):
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 3)
        print(f"[{name}] {seconds[name]:.1f} s", flush=True)

    def save(fig, stem: str) -> None:
        _save(fig, out / f"{stem}.png")
        written.append(stem)
        titles[stem] = describe(fig)

    def skip(stem: str, why: str) -> None:
        skipped[stem] = why
        print(f"[{stem}] skipped: {why}", flush=True)

    image_shape = tuple(test.images.shape[1:])
    if network is None:
        with stage("train"):
            if pretrained:
                model, info = load_pretrained(device)
                print(f"Using the course model shipped with cnnlab ({info['checkpoint']}): "
                      "no training.", flush=True)
            else:
                model, info = train_or_load(config, train, test, checkpoint, retrain, device,
                                            progress)
        # just trained: it was evaluated on the classes; reused or shipped: one image tells
        n_out = (len(test.classes) if info.get("evaluation") is not None
                 else predict(model, test.images[:1], config.precision).shape[1])
        probe = Probe(model, unit_layer(model))
        like = None  # the course's CIFAR-10 colours, as the notebook's synthesis
    else:
        with stage("load"):
            model = network.model.to(device).eval()
            layer = (last_spatial_layer(model, image_shape) if network.layer is None
                     else network.layer)
            n_out = predict(model, test.images[:1], config.precision, mean=network.mean,
                            std=network.std).shape[1]
            # read at its outputs ('' or the layer they come from, as a ResNet's fc), one per
            # class: the data's folders name them
            classes = (test.classes if n_out == len(test.classes) and reads_output(model, layer)
                       else None)
            probe = Probe(model, layer, mean=network.mean, std=network.std, classes=classes)
            info = {"metrics": {}, "reused": True, "checkpoint": network.weights}
        like = train.images
        named = "" if probe.classes is None else f" (the classes {', '.join(probe.classes)})"
        print(f"reading {network.name} at layer {probe.layer!r}{named} on images of shape "
              f"{image_shape}", flush=True)
    with stage("evaluate"):  # already done when the model was just trained
        result = info.get("evaluation")
        if n_out == len(test.classes):
            result = result or evaluate(model, test, config.precision, probe.mean, probe.std)
        else:
            skip("confusion", f"the network has {n_out} outputs and the data "
                 f"{len(test.classes)} classes, so its outputs are not these classes "
                 "(give --num-classes to match)")
    with stage("filters"):
        convs = conv_layers(model)
        for stem, i, what in (("filters_conv1", 0, "{c} input channels"),
                              ("filters_conv2", 1, "input channel 0")):
            if i < len(convs):
                weight = conv_weight(model, convs[i])
                title = f"Filters of conv layer {convs[i]} ({what})".format(c=weight.shape[1])
                save(plot_filters(weight, title=title), stem)
            else:
                skip(stem, f"the network has {len(convs)} Conv2d layer(s)")
        if convs:
            where = maps_layer(model)
            maps = activation_maps(probe, test.images[0], layer=where)
            save(plot_activation_maps(maps, title=f"Feature maps after layer {where} for a "
                                      f"test {test.classes[test.labels[0]]}"),
                 "activation_maps")
        else:
            skip("activation_maps", "the network has no Conv2d layer")
    with stage("features"):
        features = extract_features(probe, test.images, progress=progress,
                                    precision=config.precision)
        units = (list(config.units) if network is None
                 else lab_units(config.units, features.shape[1]))
    with stage("firing"):
        firing = firing_stats(features)
        save(plot_firing(firing, units), "firing")
    with stage("top_k"):
        top = top_k(features, config.top_k)
        save(plot_top_k(test.images, top, units, classes=probe.classes), "top_k")
    with stage("occlusion"):
        # the occluder scaled to the image (the profile's 11 and 4 on 32x32), fp32
        occluder = scaled_occluder(*image_shape[1:])
        omaps = top_k_occlusion(probe, test.images, top, units, size=occluder[0],
                                stride=occluder[1])
        save(plot_occlusion(test.images, top, units, omaps, sigma=config.sigma,
                            threshold=config.threshold, classes=probe.classes), "occlusion")
    with stage("tsne"):
        n = min(config.tsne_points or len(test), len(test))
        pca_dims, perplexity = tsne_settings(config, n, features.shape[1])
        emb = embed(features[:n], pca_dims=pca_dims, seed=config.seed,
                    max_iter=config.tsne_iter, perplexity=perplexity)
        trust = trustworthiness_score(features[:n], emb, seed=config.seed)
        save(plot_embedding(emb, test.labels[:n].numpy(), test.classes,
                            title=f"t-SNE of {n} test images (trustworthiness {trust:.3f})"),
             "tsne")
    with stage("confusion"):
        if result is not None:
            save(plot_confusion(result.confusion, test.classes, result.per_class_accuracy),
                 "confusion")
    with stage("unit_views"):
        methods = list(MAP_VIEWS)
        if not relu_calls(probe, test.images[:1]):
            methods.remove("guided_backprop")
            skip("guided_backprop", f"no ReLU runs before layer {probe.layer}, so guided "
                 "backprop would be the plain gradient")
        views = unit_views(probe, test.images, top, units, methods=methods, seed=config.seed,
                           progress=progress, occlusion=omaps,
                           method_options={"synthesized": {"like": like}})
        save(plot_unit_views(views), "unit_views")
    with stage("sanity"):
        # the 2 best images of every unit, as in the notebook: every method is
        # recomputed for each randomized copy of the network
        randomization = cascading_randomization(
            probe, *views.batch(2)[:2], seed=config.seed,
            methods=[m for m in SANITY_METHODS if m in methods or m not in MAP_VIEWS],
            by=cascade_by(probe, image_shape))
        save(plot_randomization(randomization), "randomization")
    with stage("faithfulness"):
        images6, targets6, maps6 = views.batch()
        faithful = {fill: faithfulness(probe, images6, targets6, maps6, fill=fill,
                                       seed=config.seed) for fill in FILLS}
        for fill, curves in faithful.items():
            save(plot_faithfulness(curves), f"faithfulness_{fill}")

    history = info["metrics"].get("history", [])
    if network is None:
        captions = FIGURES
    else:
        outputs = probe.reads_output  # "layer ''" reads badly: they are the network's outputs
        facts = {"unit_of": "output of the network" if outputs else f"unit of layer {probe.layer}",
                 "units_of": "outputs of the network" if outputs
                 else f"units of layer {probe.layer}",
                 "reader": "the network's output" if outputs else f"layer {probe.layer}",
                 "units": features.shape[1], "occluder": occluder[0],
                 "by_block": ", a top-level block (all its conv and Linear layers) a step"
                 if randomization.by == "block" else "",
                 "maps_layer": maps_layer(model) if convs else "",
                 "conv1": convs[0] if convs else "", "conv2": convs[1] if len(convs) > 1 else ""}
        captions = {stem: text.format(**facts) for stem, text in NETWORK_FIGURES.items()}
    summary = {
        "profile": config.profile,
        "config": config.to_dict(),
        "device": str(device),
        "network": "course" if network is None else network.name,
        "layer": probe.layer,
        "classes": None if probe.classes is None else list(probe.classes),
        "mean": list(probe.mean or [MEAN]),
        "std": list(probe.std or [STD]),
        "image_shape": list(image_shape),
        "units": units,
        "train_source": train.source,
        "test_source": test.source,
        "train_images": len(train),
        "test_images": len(test),
        "model_reused": info["reused"],
        "pretrained": pretrained,
        "checkpoint": info["checkpoint"],
        "accuracy": None if result is None else result.accuracy,
        "per_class_accuracy": {} if result is None else dict(
            zip(test.classes, result.per_class_accuracy.tolist())),
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
            "by": randomization.by,
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
        "figures": {f"{stem}.png": captions[stem] for stem in captions if stem in written},
        "figure_alt": {f"{stem}.png": titles[stem] or captions[stem]
                       for stem in captions if stem in written},
        "skipped": skipped,
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
    accuracy = ("not measured" if summary["accuracy"] is None
                else f"<b>{summary['accuracy']:.1%}</b>")
    network = ("the course network" if summary["network"] == "course"
               else html.escape(summary["network"]))
    skipped = "".join(f"<li>{html.escape(stem)}: {html.escape(why)}</li>"
                      for stem, why in summary["skipped"].items())
    skipped = f"<p>Sections skipped:</p><ul>{skipped}</ul>" if skipped else ""
    alts = summary.get("figure_alt", {})
    figures = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(alts.get(name) or caption)}">'
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
({html.escape(summary['test_source'])}). {network} read at layer
<b>{html.escape(summary['layer'])}</b>. Test accuracy
{accuracy}; t-SNE trustworthiness {summary['trustworthiness']:.3f}.
Dead units (never positive on the test images): <b>{n_dead} of {summary['feature_shape'][1]}
({summary['dead_fraction']:.0%})</b>.</p>
{skipped}{figures}
<h2>Sanity check: correlation with the trained maps</h2>
<p>Spearman correlation of |map| with the trained network's, as {sanity.get('by', 'layer')}s
are re-initialized from the top down (mean over the chosen units' top images).</p>
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
