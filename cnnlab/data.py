"""CIFAR-10 as uint8 tensors: loading, caching, normalising.

One call, :func:`load_cifar10`, gives a split as a :class:`Split` holding
``images`` (uint8, shape (N, 3, 32, 32)), ``labels`` (int64, shape (N,)) and the
class names. Sources, tried in order by ``source="auto"``:

1. the cache of already-decoded tensors (written on first load);
2. the official release through torchvision (``datasets.CIFAR10``), downloaded
   into ``root`` if it is not there yet;
3. an ImageFolder-layout copy: a folder or ``.tar.gz`` holding
   ``<split>/<class>/*.jpg|png`` (the offline archive is one).

``CNNLAB_DATA`` (or ``root=``) names the data folder, or an ImageFolder folder or
archive directly; then only the cache and that copy are tried. The ``synthetic``
source is a small made-up dataset for offline tests; it is never chosen silently.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write
from ._pixels import MEAN as MEAN  # re-exported: the public names of the data section
from ._pixels import STD as STD
from ._pixels import channel_stat as channel_stat
from ._pixels import denormalize as denormalize
from ._pixels import normalize as normalize
from ._pixels import to_display as to_display
from .config import CLASSES as CLASSES  # re-exported: the public names of CIFAR-10's facts
from .config import COLOR_SQRT as COLOR_SQRT
from .config import IMAGE_SIDE as IMAGE_SIDE
from .config import DATA_ENV

# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

CACHE_ENV = "CNNLAB_CACHE"
SPLITS = ("train", "test")
_CACHE_FORMAT = 1
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class DataError(RuntimeError):
    """CIFAR-10 could not be loaded; the message lists what was tried and the fixes."""


@dataclass
class Split:
    """One split of CIFAR-10 (or of the synthetic stand-in).

    Attributes:
        images: uint8 tensor (N, 3, 32, 32), values 0..255.
        labels: int64 tensor (N,), values 0..9 in :data:`CLASSES` order.
        classes: the class names.
        source: where the images came from, in words.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def resized(self, size) -> Split:
        """The images resized to ``size`` = (H, W) (bilinear, antialiased), uint8 kept.

        Raises:
            ValueError: ``size`` is not two whole numbers of at least 8.
        """
        size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8
                                     for s in size):
            raise ValueError(f"size={size!r} must be (H, W), whole numbers of at least 8 "
                             "pixels, e.g. (64, 64).")
        if tuple(self.images.shape[-2:]) == size:
            return self
        x = torch.nn.functional.interpolate(self.images.float(), size=size, mode="bilinear",
                                            antialias=True, align_corners=False)
        images = x.round().clamp(0, 255).to(torch.uint8)
        return Split(images, self.labels, self.classes,
                     f"{self.source} (resized to {size[0]}x{size[1]})")

    def subset(self, n: int | None, seed: int = 0) -> Split:
        """A random subset of ``n`` images (the same for the same seed); ``None`` or
        ``n >= len(self)`` returns the whole split."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset size n={n} must be at least 1.")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return Split(self.images[idx], self.labels[idx], self.classes,
                     f"{self.source} (random {n} of {len(self)}, seed {seed})")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'test'.")
    return split


def default_root() -> Path:
    """``$CNNLAB_DATA`` if set, else ``~/.cache/cnnlab/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return _user_cache() / "data"


def _user_cache() -> Path:
    """``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_imagefolder(path: Path) -> bool:
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS) and not (
        path / "cifar-10-batches-py"
    ).exists()


def _cache_dir(near: Path) -> Path:
    """Where decoded tensors go: $CNNLAB_CACHE, else beside the data when that
    folder is writable, else the user cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    folder = near if near.is_dir() else near.parent
    # Root may write anywhere, so also honour the folder's own write bits (a
    # read-only shared copy, as in CI, is r-x even for root).
    if os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return folder / "cnnlab-cache"
    return _user_cache() / "decoded"


def _source_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().data)
    h.update(labels.contiguous().numpy().data)
    return h.hexdigest()


def _write_cache(path: Path, split: Split) -> None:
    try:
        payload = {
            "format": _CACHE_FORMAT,
            "images": split.images,
            "labels": split.labels,
            "classes": list(split.classes),
            "source": split.source,
            "sha256": _digest(split.images, split.labels),
        }
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as exc:  # a read-only or full disk must not stop the lab
        warnings.warn(f"Could not write the decoded-data cache {path}: {exc}", stacklevel=3)


def _read_cache(path: Path) -> Split | None:
    """The cached split, or None when absent. A damaged cache is reported, removed
    when possible, and treated as absent (never half-loaded)."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=True)
        images, labels = d["images"], d["labels"]
        ok = (
            d.get("format") == _CACHE_FORMAT
            and images.dtype == torch.uint8
            and images.ndim == 4
            and images.shape[1:] == (3, 32, 32)
            and labels.shape == (images.shape[0],)
            and d.get("sha256") == _digest(images, labels)
        )
        if ok:
            return Split(images, labels, tuple(d["classes"]), d["source"] + " [cache]")
        problem = "its contents do not match their checksum"
    except Exception as exc:  # truncated file, not a torch file, missing keys
        problem = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"Ignoring the damaged data cache {path} ({problem}); decoding the images again.",
        stacklevel=3,
    )
    try:
        path.unlink()
    except OSError:
        pass
    return None


# -- ImageFolder copies (a folder or an archive of <split>/<class>/<image>) ----

_MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")


def _decode(data: bytes, name: str, cifar: bool = True) -> np.ndarray:
    """An image file's bytes as uint8 RGB (H, W, 3); 32x32 only when ``cifar``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{name} is not a readable image ({exc}).") from exc
    if cifar and arr.shape != (32, 32, 3):
        raise DataError(f"{name} is {arr.shape[1]}x{arr.shape[0]}, not a 32x32 CIFAR image.")
    return arr


def _collect(items, origin: str, cifar: bool = True) -> dict[str, Split]:
    """Turn (split, class, filename, bytes) items into Splits in ImageFolder order.

    ``cifar``: the ten CIFAR-10 classes at 32x32; otherwise the class folders' names
    (sorted) and any one image size.
    """
    found: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    first: dict[tuple, str] = {}  # each image shape met -> the first file of that shape
    for split, cls, fname, data in items:
        name = f"{origin}:{split}/{cls}/{fname}"
        arr = _decode(data, name, cifar)
        first.setdefault(arr.shape, name)
        if len(first) > 1:
            (a, fa), (b, fb) = first.items()
            raise DataError(
                f"The images differ in size: {fa} is {a[1]}x{a[0]} but {fb} is "
                f"{b[1]}x{b[0]}. A batch needs one size: resize them all to one "
                "(e.g. with PIL's Image.resize) before loading.")
        found.setdefault(split, {}).setdefault(cls, []).append((fname, arr))
    out = {}
    for split, by_class in found.items():
        names = sorted(by_class)
        if not cifar:
            out[split] = _split(by_class, tuple(names), f"ImageFolder {origin}")
            continue
        if tuple(names) != CLASSES:
            missing = sorted(set(CLASSES) - set(names))
            extra = sorted(set(names) - set(CLASSES))
            raise DataError(
                f"{origin}: the {split} split has class folders {names}; expected the ten "
                f"CIFAR-10 classes {list(CLASSES)}"
                + (f" (missing: {missing})" if missing else "")
                + (f" (unexpected: {extra})" if extra else "")
                + ". The copy is incomplete or is not CIFAR-10."
            )
        out[split] = _split(by_class, CLASSES, f"ImageFolder copy {origin}")
    return out


def _split(by_class: dict, classes: tuple[str, ...], source: str) -> Split:
    """A Split of ``{class: [(filename, (H, W, 3) array)]}``, labels in ``classes`` order."""
    images, labels = [], []
    for label, cls in enumerate(classes):
        for _, arr in sorted(by_class.get(cls, []), key=lambda t: t[0]):
            images.append(arr)
            labels.append(label)
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return Split(tensor, torch.tensor(labels, dtype=torch.int64), classes, source)


def load_imagefolder(root: str | os.PathLike, split: str = "train") -> Split:
    """Any image data set as an ImageFolder: ``<split>/<class>/<image>``, any one size.

    Unlike :func:`load_cifar10`, the classes are the folders' names (sorted, as
    torchvision's ``ImageFolder`` numbers them) and the images keep their own size
    (all must share one, e.g. 64x64). Images are read as RGB.

    Args:
        root: a folder, or a ``.tar.gz``/``.tgz``/``.tar`` archive, holding
            ``train/`` and ``test/`` with one folder of .jpg/.png images per class.
        split: ``"train"`` or ``"test"``.

    Returns:
        A :class:`Split`: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,),
        ``classes`` the folder names of both splits together.

    Raises:
        DataError: no such folder or archive, no images for the split, images of
            different sizes (the message names one of each), an unreadable image.

    Example:
        >>> train = load_imagefolder("tiny.tar.gz")        # doctest: +SKIP
        >>> train.images.shape, train.classes
        (torch.Size([200, 3, 64, 64]), ('cat', 'dog'))
    """
    _check_split(split)
    path = Path(root).expanduser()
    if not (_is_archive(path) or path.is_dir()):
        raise DataError(f"root={str(root)!r} is neither a folder nor a .tar.gz/.tgz/.tar "
                        "archive: give the folder (or archive) that holds train/ and test/.")
    items = _iter_archive(path) if _is_archive(path) else _iter_folder(path)
    splits = _collect(items, str(path.resolve()), cifar=False)
    if split not in splits:
        raise DataError(f"{path} holds no '{split}/<class>/<image>' files (.jpg or .png): "
                        f"it has {sorted(splits) or 'none'}.")
    classes = tuple(sorted({c for s in splits.values() for c in s.classes}))
    by_split = splits[split]
    # Number the classes over both splits, so a class missing from one split keeps
    # the same label in the other.
    remap = torch.tensor([classes.index(c) for c in by_split.classes], dtype=torch.int64)
    return Split(by_split.images, remap[by_split.labels], classes, by_split.source)


def _iter_archive(path: Path):
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                m = _MEMBER.search(member.name)
                if not m or not m.group(3).lower().endswith(_IMAGE_SUFFIXES):
                    continue
                f = tar.extractfile(member)
                yield m.group(1), m.group(2), m.group(3), f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"The archive {path} is damaged or incomplete ({type(exc).__name__}: {exc}). "
            "Copy or download it again; its sha256 should match the one its provider gives."
        ) from exc


def _iter_folder(path: Path):
    for split in SPLITS:
        base = path / split
        if not base.is_dir():
            continue
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() in _IMAGE_SUFFIXES:
                    yield split, cls_dir.name, f.name, f.read_bytes()


def _load_imagefolder(path: Path, split: str, cache: Path | None) -> Split:
    it = _iter_archive(path) if _is_archive(path) else _iter_folder(path)
    splits = _collect(it, str(path.resolve()))
    if split not in splits:
        raise DataError(f"{path} holds no '{split}/<class>/<image>' files.")
    if cache is not None:  # both splits were decoded: cache both
        for name, s in splits.items():
            _write_cache(cache / f"imagefolder-{_source_key(path)}-{name}.pt", s)
    return splits[split]


def _load_official(root: Path, split: str, download: bool) -> Split:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=(split == "train"), download=download)
    images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return Split(images, labels, tuple(ds.classes),
                 f"official CIFAR-10 release in {root.resolve()}")


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike | None = None,
    source: str = "auto",
    download: bool = True,
) -> Split:
    """Load one split of CIFAR-10 as uint8 tensors, decoding once and caching.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: a data folder, or an ImageFolder folder or ``.tar.gz`` archive of
            ``<split>/<class>/*.jpg|png``. Defaults to ``$CNNLAB_DATA``, else
            ``~/.cache/cnnlab/data``.
        source: ``"auto"`` (cache, then official release, then an ImageFolder
            copy), ``"official"``, ``"imagefolder"`` or ``"synthetic"`` (made-up
            images, see :func:`synthetic_cifar10`; only when asked for by name).
        download: allow torchvision to download the official release into ``root``.

    Returns:
        A :class:`Split` with ``images`` uint8 (N, 3, 32, 32) and ``labels`` int64 (N,).

    Raises:
        DataError: no source worked; the message lists what was tried and how to fix it.

    Example:
        >>> test = load_cifar10("test")            # doctest: +SKIP
        >>> test.images.shape
        torch.Size([10000, 3, 32, 32])
    """
    _check_split(split)
    if source not in ("auto", "official", "imagefolder", "synthetic"):
        raise ValueError(
            f"source={source!r} is not valid; use 'auto', 'official', 'imagefolder' "
            "or 'synthetic'."
        )
    if source == "synthetic":
        return synthetic_cifar10(split)
    root = Path(root).expanduser() if root is not None else default_root()
    tried: list[str] = []

    # An archive or ImageFolder folder named directly is the user's explicit choice:
    # only the cache and that copy are tried.
    direct = _is_archive(root) or _is_imagefolder(root)
    if not direct and source in ("auto", "official"):
        cache = _cache_dir(root) if root.is_dir() else None
        cached = _read_cache(cache / f"official-{split}.pt") if cache else None
        if cached is not None:
            cached.source = f"official CIFAR-10 release in {root.resolve()} [cache]"
            return cached
        try:
            root.mkdir(parents=True, exist_ok=True)
            s = _load_official(root, split, download)
            _write_cache(_cache_dir(root) / f"official-{split}.pt", s)
            return s
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            how = "download" if download else "read (download=False)"
            tried.append(f"official CIFAR-10 release, {how} into {root}: {reason}")
    if direct or source in ("auto", "imagefolder"):
        if direct:
            copies = [root]
        elif root.is_dir():
            copies = sorted(p for p in root.iterdir() if _is_archive(p) or _is_imagefolder(p))
        else:
            copies = []
        if copies:
            copy = copies[0]
            cache = _cache_dir(copy)
            cached = _read_cache(cache / f"imagefolder-{_source_key(copy)}-{split}.pt")
            if cached is None:
                return _load_imagefolder(copy, split, cache)
            # Named by this path, however the process that wrote the cache spelled it.
            cached.source = f"ImageFolder copy {copy.resolve()} [cache]"
            return cached
        tried.append(f"an ImageFolder folder or .tar.gz archive at or inside {root}: none found")

    raise DataError(
        f"Could not load the CIFAR-10 {split} split. Tried:\n"
        + "".join(f"  - {t}\n" for t in tried)
        + "Ways to fix it:\n"
        f"  1. With internet: let torchvision download it (download=True, the default), "
        f"into root or ${DATA_ENV}.\n"
        f"  2. Offline: point root= or ${DATA_ENV} at a copy: the official "
        "'cifar-10-batches-py' folder's parent, or an ImageFolder folder or .tar.gz of "
        "<split>/<class>/*.jpg|png.\n"
        "  3. To try the lab without the real images: source='synthetic' "
        "(made-up images; the results are not CIFAR-10's)."
    )


# ---------------------------------------------------------------------------
# Synthetic stand-in
# ---------------------------------------------------------------------------

SYNTHETIC_SIZES = {"train": 3000, "test": 600}


def synthetic_cifar10(split: str = "train", n: int | None = None, seed: int = 0) -> Split:
    """A small made-up dataset with CIFAR-10's shapes and ten learnable classes.

    Class ``c`` is a blob of one of ten colours over a striped background whose
    orientation also depends on ``c``, with random position, phase and noise. The
    network learns it in a few epochs, so tests and offline notebook runs exercise
    every step; the results say nothing about CIFAR-10.

    Args:
        split: ``"train"`` or ``"test"`` (different random images).
        n: number of images; default 3,000 (train) or 600 (test).
        seed: base seed.

    Returns:
        A :class:`Split` with ``images`` uint8 (n, 3, 32, 32) and balanced labels.
    """
    _check_split(split)
    n = SYNTHETIC_SIZES[split] if n is None else n
    if n < 1:
        raise ValueError(f"n={n} must be at least 1.")
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    palette = torch.tensor(
        [[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9], [0.9, 0.9, 0.1],
         [0.9, 0.1, 0.9], [0.1, 0.9, 0.9], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0],
         [0.6, 0.6, 0.6], [0.3, 0.15, 0.0]]
    )
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    angle = labels.float() * (torch.pi / 10)
    phase = torch.rand(n, generator=g) * 2 * torch.pi
    stripes = torch.sin(
        (xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]) * 0.8
        + phase[:, None, None]
    )
    cy, cx = (torch.rand(2, n, generator=g) * 16 + 8)
    blob = torch.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 40.0)
    img = 0.5 + 0.2 * stripes[:, None] + blob[:, None] * (palette[labels][:, :, None, None] - 0.5)
    img = img + 0.08 * torch.randn(n, 3, 32, 32, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return Split(images, labels.to(torch.int64), CLASSES, f"synthetic ({split}, seed {seed})")


SOURCE_ENV = "CNNLAB_SOURCE"


def load_lab_data(config, root=None, source: str | None = None, download: bool = True
                  ) -> tuple[Split, Split]:
    """The train and test splits a profile asks for (subsets for ``quick``).

    Args:
        config: a :class:`cnnlab.config.LabConfig` (``train_size``, ``test_size``,
            ``seed``).
        root, download: as for :func:`load_cifar10`.
        source: as for :func:`load_cifar10`; ``None`` reads ``$CNNLAB_SOURCE``
            (set it to ``synthetic`` to run the lab offline on made-up images),
            else ``"auto"``.

    Returns:
        ``(train, test)`` :class:`Split` objects.
    """
    return (_lab_split("train", config, root, source, download),
            _lab_split("test", config, root, source, download))


def load_lab_test(config, root=None, source: str | None = None, download: bool = True) -> Split:
    """The test split of :func:`load_lab_data` alone (the grader's re-check needs no
    training images); the same arguments."""
    return _lab_split("test", config, root, source, download)


def _lab_split(split: str, config, root, source: str | None, download: bool) -> Split:
    if source is None:
        source = os.environ.get(SOURCE_ENV) or "auto"
    size = config.train_size if split == "train" else config.test_size
    if source == "synthetic":
        return synthetic_cifar10(split, n=size, seed=config.seed)
    return load_cifar10(split, root, source, download).subset(size, config.seed)
