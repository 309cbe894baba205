"""The whole lab, headless, on a tiny synthetic run: every figure, summary.json, index.html."""

import html
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from cnnlab.config import get_config
from cnnlab.data import synthetic_cifar10
from cnnlab.lab import FIGURES, run_lab

TINY = get_config("quick", train_size=1000, test_size=300, epochs=3, batch_size=50,
                  tsne_iter=250,
                  units=(0, 5, 127), top_k=4,
                  smoothgrad_samples=4, ig_steps=8, featvis_steps=16, faithfulness_steps=4)

# The module's fixture trains a model and runs every stage of the lab: about 30 s in CI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    train = synthetic_cifar10("train", n=1000)
    test = synthetic_cifar10("test", n=300)
    summary = run_lab(TINY, train, test, out / "figures", checkpoint=out / "model.pt",
                      device=torch.device("cpu"), progress=False)
    return out, summary


def test_every_figure_is_written_and_drawn(lab_run):
    out, _ = lab_run
    for stem in FIGURES:
        img = mpimg.imread(out / "figures" / f"{stem}.png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, stem
        assert img[..., :3].std() > 0.05, f"{stem}.png looks blank"
    assert not list((out / "figures").glob("*.tmp*"))


def test_summary_has_the_numbers_and_timings(lab_run):
    out, summary = lab_run
    on_disk = json.loads((out / "figures" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert set(summary["per_class_accuracy"]) == set(synthetic_cifar10("test", n=10).classes)
    assert summary["feature_shape"] == [300, 128]
    assert 0.5 < summary["trustworthiness"] <= 1.0
    assert set(summary["seconds"]) == {"train", "evaluate", "filters", "features", "firing",
                                       "top_k", "occlusion", "tsne", "confusion",
                                       "unit_views", "sanity", "faithfulness"}
    assert all(v >= 0 for v in summary["seconds"].values())
    assert summary["peak_rss_mb"] > 0
    # The model learned the synthetic classes well above chance (0.1).
    assert summary["accuracy"] > 0.3


def test_index_html_shows_every_figure(lab_run):
    out, summary = lab_run
    page = (out / "figures" / "index.html").read_text()
    for stem in FIGURES:
        assert f'src="{stem}.png"' in page
    assert f"{summary['accuracy']:.1%}" in page


def test_index_html_gives_every_figure_its_title_as_alternative_text(lab_run):
    out, summary = lab_run
    page = (out / "figures" / "index.html").read_text()
    images = re.findall(r"<img\b[^>]*>", page)
    alts = dict(re.findall(r'<img src="([^"]*)" alt="([^"]*)">', page))
    assert len(alts) == len(images)  # every image has an alt attribute
    alts = {html.unescape(name): html.unescape(alt) for name, alt in alts.items()}
    assert set(alts) == {f"{stem}.png" for stem in FIGURES}
    assert alts == summary["figure_alt"]
    for name, alt in alts.items():  # words about the figure, not its file name
        assert alt and name not in alt and len(alt.split()) >= 3, (name, alt)
    # the figure's own title, as drawn (the confusion matrix names its accuracy)
    assert f"overall accuracy {summary['accuracy']:.1%}" in alts["confusion.png"]
    assert alts["randomization.png"].startswith("Cascading randomisation")


def test_describe_reads_alt_text_then_titles():
    from matplotlib.figure import Figure

    from cnnlab._figures import LabFigure, describe, set_alt

    fig = LabFigure()
    assert describe(fig) == "" and repr(fig).startswith("<LabFigure size")
    for title in ("left", "right", "left", "", "four", "five"):
        fig.add_subplot().set_title(title)
    assert describe(fig) == "left; right; four"
    fig.suptitle("The  whole\nfigure")
    assert describe(fig) == "The whole figure" and repr(fig) == "<Figure: The whole figure>"
    assert describe(set_alt(Figure(), "said")) == "said"


def test_second_run_reuses_the_checkpoint(lab_run, tmp_path):
    out, first = lab_run
    train = synthetic_cifar10("train", n=1000)
    test = synthetic_cifar10("test", n=300)
    second = run_lab(TINY, train, test, tmp_path, checkpoint=out / "model.pt",
                     device=torch.device("cpu"), progress=False)
    assert second["model_reused"] and not first["model_reused"]
    assert second["accuracy"] == pytest.approx(first["accuracy"])
    assert np.isclose(second["trustworthiness"], first["trustworthiness"])


def test_summary_has_the_dead_units_the_sanity_check_and_faithfulness(lab_run):
    from cnnlab.activations import dead_units, extract_features
    from cnnlab.model import load_checkpoint

    out, summary = lab_run
    model, _ = load_checkpoint(out / "model.pt")
    test = synthetic_cifar10("test", n=300)
    features = extract_features(model[:14], test.images, progress=False)
    assert summary["dead_units"] == dead_units(features).tolist()
    assert summary["dead_fraction"] == pytest.approx(len(summary["dead_units"]) / 128)

    sanity = summary["sanity"]
    assert sanity["layers"][0] == "trained" and len(sanity["layers"]) == 6  # 5 weight layers
    for method, row in sanity["correlation"].items():
        assert len(row) == len(sanity["layers"])
        if sanity["images_compared"][method]:
            assert row[0] == pytest.approx(1.0), method  # the trained maps against themselves
    assert {"gradient", "guided_backprop", "occlusion", "edges"} <= set(sanity["correlation"])
    # The edge detector does not look at the weights at all: it never decorrelates.
    assert sanity["correlation"]["edges"] == pytest.approx([1.0] * 6)

    for fill in ("black", "blur"):
        areas = summary["faithfulness"][fill]
        assert set(areas) == {"occlusion", "gradient", "smoothgrad", "integrated_gradients",
                              "guided_backprop", "grad_cam", "contribution", "random"}
        assert "beats_random" not in areas["random"]
        assert all(0.0 <= a["beats_random"] <= 1.0 for m, a in areas.items() if m != "random")

    views = summary["unit_views"]
    assert set(views) == {"0", "5", "127"}
    top = features[:, [0, 5, 127]].max(axis=0)
    for u, best in zip(("0", "5", "127"), top):
        assert views[u]["best_activation"] == pytest.approx(float(best), abs=0.05)


def test_index_html_shows_the_section_6_tables(lab_run):
    out, summary = lab_run
    page = (out / "figures" / "index.html").read_text()
    assert "Sanity check" in page and "guided_backprop" in page and "Faithfulness" in page
    assert f"{len(summary['dead_units'])} of 128" in page
    corr = summary["sanity"]["correlation"]["gradient"][-1]
    assert f"<td>{corr:.2f}</td>" in page


@pytest.mark.parametrize("layer", ["", "4"])
def test_the_lab_at_a_network_s_outputs_names_them_by_class_and_builds_one_probe(
        tmp_path, monkeypatch, layer):
    """A tiny network of your own read at its outputs (one per class of the data), as
    layer '' or by the name of the Linear that gives them ("4"): one Probe is built, named
    by the data's classes; its figures title the columns by class and the captions speak
    of the network's outputs, not of "layer ''"."""
    import cnnlab.lab as lab
    from cnnlab.probe import Probe

    built, figures = [], {}

    class CountedProbe(Probe):
        def __init__(self, *args, **kwargs):
            built.append((args[1:], kwargs.get("classes")))
            super().__init__(*args, **kwargs)

    def keep(name, plot):
        def plot_and_keep(*args, **kwargs):
            figures[name] = plot(*args, **kwargs)
            return figures[name]
        return plot_and_keep

    monkeypatch.setattr(lab, "Probe", CountedProbe)
    for name in ("plot_top_k", "plot_occlusion", "plot_unit_views"):
        monkeypatch.setattr(lab, name, keep(name, getattr(lab, name)))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 10))
    train, test = synthetic_cifar10("train", n=40), synthetic_cifar10("test", n=30)
    config = get_config("quick", units=(3, 8), top_k=3, tsne_points=30, tsne_iter=250,
                        smoothgrad_samples=2, ig_steps=4, featvis_steps=4,
                        faithfulness_steps=2)
    summary = run_lab(config, train, test, tmp_path, device=torch.device("cpu"),
                      progress=False, network=lab.Network(net, "tiny", layer=layer))
    assert built == [((layer,), test.classes)]
    assert summary["classes"] == list(test.classes)
    names = [f"class {test.classes[u]!r}" for u in (3, 8)]
    for name in ("plot_top_k", "plot_occlusion"):
        assert [ax.get_title() for ax in figures[name].axes[:2]] == names, name
    rows = [ax.get_ylabel().split(" (dead)")[0] for ax in figures["plot_unit_views"].axes
            if ax.get_ylabel()]
    assert rows == names
    captions = summary["figures"]
    assert "each chosen output of the network most" in captions["top_k.png"]
    assert "10 outputs of the network fires" in captions["firing.png"]
    assert "10-d outputs of the network" in captions["tsne.png"]
    assert "layer ''" not in " ".join(captions.values()) and "of layer " not in captions["tsne.png"]


def test_the_lab_cascades_a_block_at_a_time_only_on_deep_networks(resnet):
    """ResNet-18 read at layer4 (20 weight layers under it) is randomised a block at a
    time; at layer3 (15) and on the course network (5), a layer at a time as before."""
    from cnnlab.lab import cascade_by
    from cnnlab.model import build_model, unit_layer
    from cnnlab.probe import Probe

    assert cascade_by(Probe(resnet, "layer4"), (3, 32, 32)) == "block"
    assert cascade_by(Probe(resnet, "layer3"), (3, 32, 32)) == "layer"
    course = build_model()
    assert cascade_by(Probe(course, unit_layer(course)), (3, 32, 32)) == "layer"
