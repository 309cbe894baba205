"""Loading CIFAR-10: ImageFolder archives and folders, the cache, errors, synthetic data."""

import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import (CLASSES, DataError, denormalize, load_cifar10, normalize,
                         synthetic_cifar10, to_display)

REAL_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own decoded-data cache and no CNNLAB_DATA."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_imagefolder(root: Path, per_class=(3, 2), seed=0):
    """Write train/test folders of PNGs (lossless, so pixels can be compared) and
    return the expected (images, labels) per split in ImageFolder order."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in zip(("train", "test"), per_class):
        imgs, labels = [], []
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True)
            for j in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                (d / f"{j:04d}.png").write_bytes(_png(arr))
                imgs.append(arr)
                labels.append(label)
        expected[split] = (np.stack(imgs).transpose(0, 3, 1, 2), np.array(labels))
    return expected


def make_archive(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=f"cifar10/{split}")
    return dest


def test_normalize_maps_black_to_minus_one_and_inverts():
    img = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    x = normalize(img)
    assert x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([-1.0, 1.0, 51 / 255 * 2 - 1]))
    assert torch.allclose(denormalize(x) * 255, img.float(), atol=1e-4)
    assert to_display(img[None]).shape == (1, 2, 2, 3)


def test_imagefolder_folder_gives_pixels_and_official_label_order(tmp_path):
    expected = make_imagefolder(tmp_path / "copy")
    for split in ("train", "test"):
        s = load_cifar10(split, root=tmp_path / "copy")
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32)
        assert s.classes == CLASSES
        assert np.array_equal(s.images.numpy(), expected[split][0])
        assert np.array_equal(s.labels.numpy(), expected[split][1])


def test_archive_is_read_and_cache_hit_returns_identical_tensors(tmp_path):
    expected = make_imagefolder(tmp_path / "copy")
    archive = make_archive(tmp_path / "copy", tmp_path / "mirror.tar.gz")
    first = load_cifar10("test", root=archive)
    assert "[cache]" not in first.source
    assert np.array_equal(first.images.numpy(), expected["test"][0])
    cache_files = list((tmp_path / "cache").glob("*.pt"))
    assert len(cache_files) == 2  # both splits were decoded in the one pass
    second = load_cifar10("test", root=archive)
    assert "[cache]" in second.source
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_cnnlab_data_environment_variable_names_the_archive(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "copy")
    archive = make_archive(tmp_path / "copy", tmp_path / "mirror.tar.gz")
    monkeypatch.setenv("CNNLAB_DATA", str(archive))
    assert len(load_cifar10("train")) == 30


def test_damaged_cache_is_detected_and_rebuilt(tmp_path):
    make_imagefolder(tmp_path / "copy")
    first = load_cifar10("train", root=tmp_path / "copy")
    (cache,) = [p for p in (tmp_path / "cache").glob("*-train.pt")]
    cache.write_bytes(cache.read_bytes()[:-5000])  # truncated
    with pytest.warns(UserWarning, match="damaged data cache"):
        again = load_cifar10("train", root=tmp_path / "copy")
    assert torch.equal(first.images, again.images)
    assert "[cache]" not in again.source


def test_truncated_archive_gives_clear_error(tmp_path):
    make_imagefolder(tmp_path / "copy", per_class=(20, 5))
    archive = make_archive(tmp_path / "copy", tmp_path / "mirror.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged or incomplete") as err:
        load_cifar10("train", root=archive)
    assert str(archive) in str(err.value)
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-loaded was cached


def test_archive_missing_a_class_is_refused(tmp_path):
    make_imagefolder(tmp_path / "copy")
    for f in (tmp_path / "copy" / "train" / "truck").iterdir():
        f.unlink()
    (tmp_path / "copy" / "train" / "truck").rmdir()
    with pytest.raises(DataError, match=r"missing: \['truck'\]"):
        load_cifar10("train", root=tmp_path / "copy")


def test_missing_data_root_lists_what_was_tried_and_the_fixes(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar10("test", root=tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "Tried:" in msg and "official CIFAR-10 release" in msg
    assert "ImageFolder" in msg and "CNNLAB_DATA" in msg and "synthetic" in msg


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split='validation'"):
        load_cifar10("validation")
    with pytest.raises(ValueError, match="source='internet'"):
        load_cifar10("test", source="internet")


def test_synthetic_is_explicit_deterministic_and_balanced():
    a = synthetic_cifar10("train", n=200, seed=3)
    b = synthetic_cifar10("train", n=200, seed=3)
    c = synthetic_cifar10("test", n=200, seed=3)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (200, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.bincount(a.labels).tolist() == [20] * 10
    assert a.source.startswith("synthetic")
    assert load_cifar10("test", source="synthetic").source.startswith("synthetic")


def test_the_test_split_alone_is_the_lab_datas(tmp_path):
    """load_lab_test (the grader's re-check) gives the test split of load_lab_data,
    on made-up images and on a folder of images, without reading the training images."""
    from cnnlab.config import get_config
    from cnnlab.data import load_lab_data, load_lab_test

    config = get_config("quick", train_size=50, test_size=40, seed=5)
    train, test = load_lab_data(config, source="synthetic")
    alone = load_lab_test(config, source="synthetic")
    assert torch.equal(alone.images, test.images) and torch.equal(alone.labels, test.labels)
    assert not torch.equal(train.images[:40], alone.images)
    for split, n in (("train", 12), ("test", 30)):
        for k in range(n):
            folder = tmp_path / split / CLASSES[k % 10]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 8 * k, np.uint8)).save(folder / f"{k}.png")
    _, test = load_lab_data(config, tmp_path, "imagefolder")
    alone = load_lab_test(config, tmp_path, "imagefolder")
    assert len(alone) == 30 and torch.equal(alone.images, test.images)


def test_subset_is_reproducible_and_sized():
    s = synthetic_cifar10("train", n=100)
    a, b = s.subset(30, seed=1), s.subset(30, seed=1)
    assert len(a) == 30 and torch.equal(a.images, b.images)
    assert s.subset(None) is s and s.subset(500) is s


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.exists(),
                    reason=f"real CIFAR-10 archive not found at {REAL_ARCHIVE}")
def test_real_archive_gives_official_labels_and_fast_second_load():
    test = load_cifar10("test", root=REAL_ARCHIVE)
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # ImageFolder order: the first 1000 are airplanes, the last 1000 trucks.
    assert test.labels[0] == 0 and test.labels[-1] == 9
    # Airplanes and ships are bluer than frogs on average (a sanity check of the labels).
    mean_rgb = torch.stack([test.images[test.labels == c].float().mean((0, 2, 3))
                            for c in range(10)])
    assert mean_rgb[8, 2] > mean_rgb[6, 2] and mean_rgb[0, 2] > mean_rgb[6, 2]
    start = time.perf_counter()
    again = load_cifar10("test", root=REAL_ARCHIVE)
    elapsed = time.perf_counter() - start
    assert torch.equal(again.images, test.images)
    print(f"second load of the 10,000 test images: {elapsed:.3f} s")


def test_read_only_data_folder_is_never_written_to(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    make_imagefolder(tmp_path / "shared" / "copy")
    archive = make_archive(tmp_path / "shared" / "copy", tmp_path / "shared" / "c.tar.gz")
    (tmp_path / "shared").chmod(0o555)
    try:
        load_cifar10("test", root=archive)
        assert not (tmp_path / "shared" / "cnnlab-cache").exists()
        assert list((tmp_path / "usercache" / "cnnlab" / "decoded").glob("*-test.pt"))
        assert "[cache]" in load_cifar10("test", root=archive).source
    finally:
        (tmp_path / "shared").chmod(0o755)


# --- any ImageFolder at its own size ----------------------------------------------------


def write_pngs(root, sizes=None):
    """A tiny ImageFolder of 64x64 PNGs: 2 train and 1 test image per class, each image
    a flat colour that says its class (red 'apple', blue 'sky', grey 'zebra')."""
    colours = {"zebra": (128, 128, 128), "apple": (200, 10, 10), "sky": (10, 20, 220)}
    for split, n in (("train", 2), ("test", 1)):
        for cls, rgb in colours.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                size = (sizes or {}).get((split, cls, i), (64, 64))
                Image.new("RGB", size, tuple(c + i for c in rgb)).save(
                    root / split / cls / f"{i}.png")


def test_imagefolder_of_64x64_pngs_keeps_its_size_and_its_class_names(tmp_path):
    from cnnlab.data import load_imagefolder

    write_pngs(tmp_path / "tiny")
    train = load_imagefolder(tmp_path / "tiny", "train")
    assert train.classes == ("apple", "sky", "zebra")  # sorted folder names, not CIFAR's
    assert train.images.shape == (6, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # Each image holds its class's colour: labels follow the folders.
    torch.testing.assert_close(train.images[3, :, 5, 5], torch.tensor([11, 21, 221],
                                                                      dtype=torch.uint8))
    assert (train.images[4:] >= 128).all() and (train.images[4:] <= 129).all()
    with tarfile.open(tmp_path / "tiny.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "tiny", arcname="tiny")
    test = load_imagefolder(tmp_path / "tiny.tar.gz", "test")
    assert test.images.shape == (3, 3, 64, 64) and test.labels.tolist() == [0, 1, 2]
    assert torch.equal(test.images, load_imagefolder(tmp_path / "tiny", "test").images)


def test_imagefolder_of_mixed_sizes_or_nothing_is_explained(tmp_path):
    from cnnlab.data import load_imagefolder

    write_pngs(tmp_path / "mixed", sizes={("train", "sky", 1): (48, 64)})
    with pytest.raises(DataError, match=r"differ in size.*64x64.*sky/1.png is 48x64"):
        load_imagefolder(tmp_path / "mixed", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no 'test/<class>/<image>'"):
        load_imagefolder(tmp_path / "empty", "test")
    with pytest.raises(DataError, match="neither a folder nor"):
        load_imagefolder(tmp_path / "nowhere.zip", "test")


def test_resized_keeps_labels_and_resizes_non_square_images():
    from cnnlab.data import Split

    images = torch.zeros((2, 3, 40, 56), dtype=torch.uint8)
    images[:, :, :, 28:] = 200  # right half bright
    split = Split(images, torch.tensor([0, 1]), ("a", "b"), "made here")
    small = split.resized((20, 28))
    assert small.images.shape == (2, 3, 20, 28) and small.images.dtype == torch.uint8
    assert torch.equal(small.labels, split.labels) and small.classes == split.classes
    assert small.images[..., :13].max() == 0 and small.images[..., 15:].min() == 200
    assert "resized to 20x28" in small.source
    assert split.resized((40, 56)) is split
    with pytest.raises(ValueError, match=r"size=\(4, 4\) must be \(H, W\)"):
        split.resized((4, 4))
