"""Sanity checks: the randomisation curve and the deletion/insertion curves."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from cnnlab.data import normalize
from cnnlab.sanity import (
    Faithfulness,
    Randomization,
    cascading_randomization,
    edge_map,
    faithfulness,
    fill_images,
    method_maps,
    plot_faithfulness,
    plot_randomization,
    randomization_steps,
    spearman_abs,
    weight_layers,
)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- spearman_abs ---------------------------------------------------------------------


def test_spearman_abs_is_scipy_spearman_of_absolute_values():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6, 6)), rng.normal(size=(4, 6, 6))
    b[1] = -a[1] + 0.01 * b[1]  # opposite signs: the same ranking of |map|
    b[2, :3] = 0  # ties
    ours = spearman_abs(a, b)
    for i in range(4):
        assert ours[i] == pytest.approx(spearmanr(np.abs(a[i]).ravel(),
                                                  np.abs(b[i]).ravel())[0], abs=1e-12)
    assert ours[1] > 0.99


def test_spearman_abs_of_constant_maps():
    a = np.stack([np.zeros((3, 3)), np.arange(9.0).reshape(3, 3)])
    b = np.stack([np.arange(9.0).reshape(3, 3), np.ones((3, 3))])
    rho = spearman_abs(a, b)
    assert np.isnan(rho[0])  # nothing to compare with
    assert rho[1] == 0.0  # the ranking is lost


# --- cascading randomisation ---------------------------------------------------------


def test_weight_layers_go_from_the_top_down(model):
    assert [n for n, _ in weight_layers(model[:14])] == [
        "13 Linear", "8 Conv2d", "6 Conv2d", "2 Conv2d", "0 Conv2d"]


def test_randomised_maps_decorrelate_and_the_edge_control_stays_one(model, images):
    ext = model[:14]
    before, rng_before = state(model), torch.random.get_rng_state()
    result = cascading_randomization(ext, images[:4], [1, 5, 7, 3],
                                     methods=["gradient", "contribution", "edges"], seed=0)
    assert isinstance(result, Randomization)
    assert result.layers == ["trained", "13 Linear", "8 Conv2d", "6 Conv2d", "2 Conv2d",
                             "0 Conv2d"]
    assert result.correlation.shape == (3, 6)
    np.testing.assert_array_equal(result.correlation[:, 0], 1.0)
    np.testing.assert_allclose(result.correlation[2], 1.0)  # the edge detector
    assert abs(result.at("gradient", "0 Conv2d")) < 0.5
    assert abs(result.at("contribution", "0 Conv2d")) < 0.5
    assert list(result.compared) == [4, 4, 4]
    # The model given is untouched, and so is the global random state.
    assert same_state(before, state(model))
    assert torch.equal(rng_before, torch.random.get_rng_state())


def test_randomisation_is_reproducible_and_seeded(model, images):
    kw = {"methods": ["gradient"]}
    a = cascading_randomization(model[:14], images[:3], 2, seed=1, **kw)
    b = cascading_randomization(model[:14], images[:3], 2, seed=1, **kw)
    c = cascading_randomization(model[:14], images[:3], 2, seed=2, **kw)
    np.testing.assert_array_equal(a.correlation, b.correlation)
    assert not np.array_equal(a.correlation, c.correlation)


def test_all_zero_trained_maps_are_left_out():
    """A ReLU network whose Grad-CAM is zero on an image does not count that image."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2 * 32 * 32, 2))
    with torch.no_grad():  # target 0 decreases with every feature map: all CAMs are 0
        net[3].weight[0] = -net[3].weight[0].abs()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    result = cascading_randomization(net, images, 0, methods=["grad_cam", "edges"])
    assert list(result.compared) == [0, 3]
    assert np.isnan(result.correlation[0]).all()


def test_method_maps_have_the_image_size(model, images):
    for method in ("occlusion", "contribution", "edges", "grad_cam"):
        maps = method_maps(method, model[:14], images[:2], [3, 9])
        assert maps.shape == (2, 32, 32) and maps.dtype == np.float32, method


def test_edge_map_finds_a_vertical_edge():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    image[..., 4:] = 255
    edges = edge_map(image)[0]
    assert (edges[:, 3:5] > 0).all() and (edges[:, :2] == 0).all() and (edges[:, 6:] == 0).all()


def test_unknown_method_is_explained(model, images):
    with pytest.raises(ValueError, match="'lime'.*gradient.*occlusion, edges"):
        cascading_randomization(model[:14], images, 1, methods=["lime"])


# --- faithfulness ----------------------------------------------------------------------


def region_model():
    """f(x) = sum of the pixels (normalised, all channels) in rows 0-7: a known answer."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1))
    with torch.no_grad():
        w = torch.zeros(3, 32, 32)
        w[:, :8] = 1.0
        net[1].weight.copy_(w.view(1, -1))
        net[1].bias.zero_()
    return net, w.sum(0).numpy()


def test_the_true_map_beats_random_and_the_curves_end_where_they_must(images):
    net, truth = region_model()
    images = images.clone()
    images[:, :, :8] = 200  # bright where the model looks, so deleting it hurts
    maps = {"truth": np.broadcast_to(truth, (6, 32, 32)).copy()}
    result = faithfulness(net, images, 0, maps, fill="black", steps=8, precision="fp32")
    assert isinstance(result, Faithfulness) and result.methods == ["truth", "random"]
    assert result.deletion.shape == result.insertion.shape == (2, 9)
    with torch.no_grad():
        full = net(normalize(images))[:, 0].mean().item()
        black = net(-torch.ones(1, 3, 32, 32))[0, 0].item()
    for row in range(2):  # nothing removed: f(x); everything: f(black); and back
        assert result.deletion[row, 0] == pytest.approx(full, rel=1e-5)
        assert result.deletion[row, -1] == pytest.approx(black, rel=1e-5)
        assert result.insertion[row, 0] == pytest.approx(black, rel=1e-5)
        assert result.insertion[row, -1] == pytest.approx(full, rel=1e-5)
    # The region is the top quarter: after 25 % deleted, f is already at f(black).
    assert result.deletion[0, 2] == pytest.approx(black, rel=1e-5)
    assert result.beats_random_deletion[0] == 1.0
    assert result.beats_random_insertion[0] == 1.0 and result.beats_random[0] == 1.0
    widths = np.diff(result.fractions)
    area = ((result.deletion[:, 1:] + result.deletion[:, :-1]) / 2 * widths).sum(1)
    np.testing.assert_allclose(result.deletion_area, area, rtol=1e-5)


def test_curves_equal_masking_each_image_by_hand(model, images):
    """Every point of both curves, against a plain loop over images and fractions."""
    ext, steps, unit = model[:14].eval(), 5, 7
    m = np.random.default_rng(1).normal(size=(6, 32, 32))  # distinct values: no ties
    result = faithfulness(ext, images, unit, {"m": m}, fill="blur", steps=steps,
                          precision="fp32", batch_size=7)  # batches that split images
    x = normalize(images)
    fill = fill_images(x, "blur")
    deletion, insertion = np.zeros((6, steps + 1)), np.zeros((6, steps + 1))
    with torch.no_grad():
        for i in range(6):
            order = np.argsort(-np.abs(m[i]).ravel())
            for k in range(steps + 1):
                top = torch.zeros(32 * 32, dtype=torch.bool)
                top[torch.as_tensor(order[: round(k / steps * 32 * 32)].copy())] = True
                top = top.view(1, 32, 32)
                deleted = torch.where(top, fill[i], x[i])[None]
                inserted = torch.where(top, x[i], fill[i])[None]
                deletion[i, k] = ext(deleted)[0, unit].item()
                insertion[i, k] = ext(inserted)[0, unit].item()
    np.testing.assert_allclose(result.deletion[0], deletion.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.insertion[0], insertion.mean(0), rtol=1e-4, atol=1e-5)


def test_a_signed_map_pointing_the_wrong_way_loses(images):
    net, truth = region_model()
    images = images.clone()
    images[:, :, :8] = 200
    maps = {"wrong": -np.broadcast_to(truth, (6, 32, 32)).copy()}
    signed = faithfulness(net, images, 0, maps, absolute=False, steps=4, precision="fp32")
    absolute = faithfulness(net, images, 0, maps, absolute=True, steps=4, precision="fp32")
    assert signed.beats_random[0] == 0.0 and absolute.beats_random[0] == 1.0


def test_an_all_zero_map_scores_exactly_like_the_random_ranking(images):
    net, _ = region_model()
    result = faithfulness(net, images, 0, {"zero": np.zeros((6, 32, 32))}, steps=4,
                          precision="fp32")
    np.testing.assert_allclose(result.deletion[0], result.deletion[1], rtol=1e-6)
    np.testing.assert_allclose(result.insertion[0], result.insertion[1], rtol=1e-6)
    assert result.beats_random[0] == 0.0 and result.beats_random_deletion[0] == 0.0


def test_small_maps_are_upsampled_and_the_model_is_untouched(model, images):
    model.train()
    before = state(model)
    maps = {"contribution": np.random.default_rng(0).normal(size=(6, 8, 8))}
    result = faithfulness(model[:14], images, 3, maps, fill="blur", steps=2)
    assert result.fill == "blur" and result.insertion.shape == (2, 3)
    assert same_state(before, state(model)) and model.training


def test_blur_fill_is_torchvision_gaussian_blur():
    x = normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    ours = fill_images(x, "blur", sigma=2.0)
    theirs = gaussian_blur(x, kernel_size=[13, 13], sigma=[2.0, 2.0])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (fill_images(x, "black") == -1).all()


def test_bad_faithfulness_arguments_are_explained(images):
    net, truth = region_model()
    maps = {"truth": np.broadcast_to(truth, (6, 32, 32))}
    with pytest.raises(ValueError, match="fill='grey'.*'black' or 'blur'"):
        faithfulness(net, images, 0, maps, fill="grey")
    with pytest.raises(ValueError, match=r"maps\['truth'\] has shape \(3, 32, 32\).*\(6, h, w\)"):
        faithfulness(net, images, 0, {"truth": truth[None].repeat(3, 0)})
    with pytest.raises(ValueError, match="steps=0"):
        faithfulness(net, images, 0, maps, steps=0)


# --- figures ----------------------------------------------------------------------------


def test_plots_return_figures_with_one_line_per_method():
    r = Randomization(layers=["trained", "1 Linear"], methods=["gradient", "edges"],
                      correlation=np.array([[1.0, 0.2], [1.0, 1.0]], np.float32),
                      compared=np.array([3, 3]))
    fig = plot_randomization(r)
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 2 + 1  # + zero line
    f = Faithfulness(methods=["gradient", "random"], fill="black",
                     fractions=np.linspace(0, 1, 3), deletion=np.ones((2, 3)),
                     insertion=np.ones((2, 3)), deletion_area=np.ones(2),
                     insertion_area=np.ones(2), beats_random_deletion=np.ones(1),
                     beats_random_insertion=np.ones(1), beats_random=np.ones(1))
    fig = plot_faithfulness(f)
    assert isinstance(fig, Figure) and [len(ax.get_lines()) for ax in fig.axes] == [2, 2]


# --- any network: a torchvision ResNet-18 at 64x64 through a Probe ---------------------


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.fixture(scope="module")
def pictures():
    """Two uint8 RGB images of 64x64."""
    return torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(3))


def test_resnet_weight_layers_are_named_modules_from_the_top_down(resnet):
    from cnnlab.probe import Probe

    names = [name for name, _ in weight_layers(resnet)]
    assert names[0] == "fc Linear" and names[-1] == "conv1 Conv2d"
    assert "layer4.1.conv2 Conv2d" in names and "layer2.0.downsample.0 Conv2d" in names
    assert len(names) == 21  # 20 convs (17 + 3 downsampling) and fc
    # A probe inside the network: only the layers its layer reads, still top first.
    inner = [n for n, _ in weight_layers(Probe(resnet, "layer2", **IMAGENET), (3, 64, 64))]
    assert inner[0] == "layer2.1.conv2 Conv2d" and inner[-1] == "conv1 Conv2d"
    assert not any(n.startswith(("layer3", "layer4", "fc")) for n in inner)
    assert inner == [n for n in names if n.split(".")[0] in ("conv1 Conv2d", "layer1",
                                                             "layer2")]


def test_resnet_randomisation_reinitialises_named_layers_and_keeps_the_model(resnet,
                                                                             pictures):
    import copy

    from cnnlab.probe import Probe

    before = state(resnet)
    probe = Probe(resnet, "layer1", **IMAGENET)  # 64 units; 5 convs feed them
    result = cascading_randomization(probe, pictures, [3, 7],
                                     methods=["gradient", "occlusion", "edges"], seed=0)
    assert result.layers == ["trained", "layer1.1.conv2 Conv2d", "layer1.1.conv1 Conv2d",
                             "layer1.0.conv2 Conv2d", "layer1.0.conv1 Conv2d",
                             "conv1 Conv2d"]
    assert result.correlation.shape == (3, 6)
    assert same_state(state(resnet), before)  # the copy was randomised, not the model
    np.testing.assert_allclose(result.correlation[:, 0], 1.0)
    edges = result.correlation[result.methods.index("edges")]
    np.testing.assert_allclose(edges, 1.0)  # the control ignores the weights
    grad = result.correlation[result.methods.index("gradient")]
    assert grad[-1] < 0.5 < grad[0]  # all weights gone: the gradient map has changed
    # Step 1 re-initialised layer1.1.conv2 exactly as a fresh one with seed + 1 would be.
    net = copy.deepcopy(resnet)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net.layer1[1].conv2.reset_parameters()
    ref = method_maps("gradient", Probe(net, "layer1", **IMAGENET), pictures, [3, 7])
    trained = method_maps("gradient", probe, pictures, [3, 7])
    assert result.at("gradient", "layer1.1.conv2 Conv2d") == pytest.approx(
        float(np.mean(spearman_abs(trained, ref))), abs=1e-6)
    # The whole network: every named conv and fc, fc first.
    whole = cascading_randomization(resnet, pictures, [3, 7], methods=["edges"])
    assert whole.layers[:3] == ["trained", "fc Linear", "layer4.1.conv2 Conv2d"]
    assert len(whole.layers) == 22


def test_resnet_faithfulness_fills_with_the_probes_black_and_blur(resnet, pictures):
    from cnnlab.probe import Probe

    probe = Probe(resnet, "", **IMAGENET)
    x = normalize(pictures, IMAGENET["mean"], IMAGENET["std"])
    maps = {"m": np.random.default_rng(0).random((2, 64, 64))}
    for fill in ("black", "blur"):
        result = faithfulness(probe, pictures, [3, 7], maps, fill=fill, steps=2,
                              precision="fp32")
        base = fill_images(x, fill, black=normalize(
            torch.zeros(3, 1, 1, dtype=torch.uint8), IMAGENET["mean"], IMAGENET["std"]))
        with torch.no_grad():
            whole, empty = resnet(x)[[0, 1], [3, 7]], resnet(base)[[0, 1], [3, 7]]
        # Deletion starts at the images and ends at the fill; insertion the reverse.
        np.testing.assert_allclose(result.deletion[:, 0], whole.mean(), rtol=1e-5)
        np.testing.assert_allclose(result.deletion[:, -1], empty.mean(), rtol=1e-5)
        np.testing.assert_allclose(result.insertion[:, 0], empty.mean(), rtol=1e-5)
    # ImageNet's black is not the course's -1 (a pixel 0 of each channel).
    black = fill_images(x, "black", black=normalize(
        torch.zeros(3, 1, 1, dtype=torch.uint8), IMAGENET["mean"], IMAGENET["std"]))
    np.testing.assert_allclose(black[0, :, 0, 0], [-0.485 / 0.229, -0.456 / 0.224,
                                                   -0.406 / 0.225], rtol=1e-5)


def test_faithfulness_of_a_one_channel_probe_inside_the_network():
    from cnnlab.probe import Probe

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    probe = Probe(net, "3", mean=0.2, std=0.3)
    images = torch.randint(0, 256, (2, 1, 24, 40), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    result = faithfulness(probe, images, [1, 5], {"m": np.ones((2, 6, 10))}, steps=2,
                          precision="fp32")
    x = normalize(images, 0.2, 0.3)
    with torch.no_grad():
        units = net[:4](x).mean((2, 3))[[0, 1], [1, 5]]
        black = net[:4](torch.full_like(x, -0.2 / 0.3)).mean((2, 3))[[0, 1], [1, 5]]
    np.testing.assert_allclose(result.deletion[:, 0], units.mean(), rtol=1e-5)
    np.testing.assert_allclose(result.deletion[:, -1], black.mean(), rtol=1e-5)
    randomised = cascading_randomization(probe, images, [1, 5], methods=["gradient"])
    assert randomised.layers == ["trained", "2 Conv2d", "0 Conv2d"]  # not the Linear


# --- cascading by block -------------------------------------------------------------------

RESNET_BLOCKS = ["fc Linear", "layer4 (5 layers)", "layer3 (5 layers)", "layer2 (5 layers)",
                 "layer1 (4 layers)", "conv1 Conv2d"]


def test_by_block_cascades_over_the_top_level_children_and_resets_exactly_them(monkeypatch):
    """On a ResNet-18 at 32x32, by="block" takes one step per top-level child that holds
    weights, top first; after step k the conv and Linear weights of exactly the first k
    blocks differ from the trained ones (read off the copy each step's maps come from),
    and the same layers as by="layer" are re-initialised in the end."""
    import torchvision

    import cnnlab.sanity as sanity

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    trained = state(net)
    seen = []

    def maps_and_state(method, model, x, t, **kwargs):
        if method == "edges":
            seen.append(state(model))
        return method_maps(method, model, x, t, **kwargs)

    monkeypatch.setattr(sanity, "method_maps", maps_and_state)
    pictures = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(5))
    result = cascading_randomization(net, pictures, [3, 7], methods=["gradient", "edges"],
                                     seed=0, by="block")
    assert result.layers == ["trained", *RESNET_BLOCKS] and result.by == "block"
    assert result.correlation.shape == (2, 7)
    np.testing.assert_allclose(result.correlation[1], 1.0)  # the edge control
    assert same_state(state(net), trained)  # the model given is untouched
    blocks = ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
    weights = [k for k in trained if k.rsplit(".", 1)[0] in
               {name.split()[0] for name, _ in weight_layers(net)}]
    assert len(seen) == 7
    for k, after in enumerate(seen):
        changed = {key for key in trained if not torch.equal(after[key], trained[key])}
        assert changed == {key for key in weights if key.split(".")[0] in blocks[:k]}, k
    # by layer: 21 steps over the same layers
    steps = randomization_steps(net, by="layer")
    assert len(steps) == 21 and [m for _, g in steps for m in g] == \
        [m for _, g in randomization_steps(net, by="block") for m in g]


def test_by_block_of_a_probe_stops_at_its_layer_and_is_drawn_by_name(resnet):
    from cnnlab.probe import Probe

    probe = Probe(resnet, "layer2", **IMAGENET)
    steps = randomization_steps(probe, (3, 32, 32), by="block")
    assert [name for name, _ in steps] == RESNET_BLOCKS[3:]
    result = Randomization(layers=["trained", *RESNET_BLOCKS], methods=["gradient"],
                           correlation=np.linspace(1, 0, 7)[None].astype(np.float32),
                           compared=np.array([2]), by="block")
    ax = plot_randomization(result).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == \
        ["trained", *(f"+ {name}" for name in RESNET_BLOCKS)]
    assert ax.get_xlabel() == "blocks re-initialised, from the top down"
    with pytest.raises(ValueError, match="by='blocks' is not a way to cascade"):
        randomization_steps(resnet, by="blocks")


def test_the_course_network_cascades_alike_by_layer_and_by_block(model, images):
    """Each weight layer of the course network is a top-level child: by block is the
    same cascade, step for step, as the default (Adebayo et al.'s, layer by layer)."""
    kw = {"methods": ["gradient"], "seed": 0}
    by_layer = cascading_randomization(model[:14], images[:3], 2, **kw)
    by_block = cascading_randomization(model[:14], images[:3], 2, by="block", **kw)
    assert by_layer.by == "layer" and by_layer.layers == by_block.layers == [
        "trained", "13 Linear", "8 Conv2d", "6 Conv2d", "2 Conv2d", "0 Conv2d"]
    np.testing.assert_array_equal(by_layer.correlation, by_block.correlation)
