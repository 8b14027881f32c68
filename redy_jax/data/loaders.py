"""Dataset loading to numpy: Fashion-MNIST (offline), CIFAR-10 / ImageNet via TFDS, digits.

Everything returns a :class:`Dataset`: uint8 NHWC images, int labels and the
per-channel mean/std used by :func:`normalize`. No TensorFlow is needed: TFDS
datasets are read through ``tfds.data_source`` (array_record files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

DEFAULT_DATA_DIR = Path(os.environ.get("REDY_DATA_DIR", Path.home() / ".cache" / "redy_jax"))

# Per-channel statistics of the training splits (in [0, 1] pixel units).
_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "digits": ((0.3,), (0.4,)),
}
DATASETS = tuple(_STATS)

# Validation split: the last images of each source training split, held out of
# training (the shipped checkpoints never saw them) so that every choice (scales,
# thresholds, lambda, bit allocations) can be made without touching the test split.
# ``train`` is the source training split minus this tail.
VALIDATION_IMAGES = {"fashion_mnist": 5000, "cifar10": 5000, "imagenet2012": 10000, "digits": 287}
SPLITS = ("train", "validation", "test")


class Dataset(NamedTuple):
    """A split in memory. ``images``: uint8 (N, H, W, C); ``labels``: int32 (N,)."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    """Per-channel pixel statistics for :func:`normalize`; None when ``images`` are
    already float model inputs."""


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC -> float32 ``(x / 255 - mean) / std`` (signed: a zero point is needed)."""
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _fashion_mnist_builder(data_dir: Path):
    """The prepared offline builder. Preparation is serialised across processes by an
    exclusive lock on ``data_dir/fashion_mnist_local.lock`` (released by the OS if the
    holder is killed); a killed build's ``incomplete.*`` folder is removed first, and
    a process that waited finds the dataset ready and reuses it. A builder whose info
    was read before another process finished is made again (its splits were empty)."""
    import contextlib
    import fcntl
    import shutil
    import sys

    from redy_jax.data.fashion_mnist import FashionMnistLocal

    data_dir.mkdir(parents=True, exist_ok=True)
    builder = FashionMnistLocal(data_dir=str(data_dir), file_format="array_record")
    if builder.is_prepared():
        # A builder reads the dataset's info when it is made: if another process
        # finished preparing between that and ``is_prepared``, its splits are empty
        # and must be read again from the now complete folder.
        if builder.info.splits:
            return builder
        return FashionMnistLocal(data_dir=str(data_dir), file_format="array_record")
    with open(data_dir / "fashion_mnist_local.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            builder = FashionMnistLocal(data_dir=str(data_dir), file_format="array_record")
            if not builder.is_prepared():
                for stale in (data_dir / "fashion_mnist_local").glob("incomplete.*"):
                    shutil.rmtree(stale, ignore_errors=True)
                # TFDS prints progress on stdout: keep stdout for results (e.g. --json).
                with contextlib.redirect_stdout(sys.stderr):
                    builder.download_and_prepare()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return builder


def split_range(name: str, split: str, total: int) -> tuple[int, int]:
    """[start, stop) of ``split`` inside its source split of ``total`` examples.

    ``train`` and ``validation`` both come from the source training split (the
    validation split is its last ``VALIDATION_IMAGES[name]`` examples); ``test`` is
    the whole source test split (ImageNet's official validation split).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "test":
        return 0, total
    held = VALIDATION_IMAGES[name]
    if held >= total:
        raise ValueError(f"dataset {name!r}: the source training split has {total} examples, "
                         f"too few to hold out a validation split of {held}")
    return (0, total - held) if split == "train" else (total - held, total)


# Size of each source split, for the records of what a model was trained on.
SOURCE_SIZES = {"fashion_mnist": {"train": 60000, "test": 10000},
                "cifar10": {"train": 50000, "test": 10000},
                "digits": {"train": 1437, "test": 360}}


def split_ranges(name: str, limit: int | None = None) -> dict[str, dict]:
    """The ``train``/``validation``/``test`` ranges of ``name`` in its source files.

    Returns ``{split: {"source": "train"|"test", "start": i, "stop": j}}`` (``stop``
    exclusive); ``limit`` shortens ``train`` as ``load(..., limit=limit)`` does.
    """
    sizes = SOURCE_SIZES[name]
    out = {}
    for split in SPLITS:
        source = "test" if split == "test" else "train"
        start, stop = split_range(name, split, sizes[source])
        if split == "train" and limit is not None:
            stop = min(stop, start + limit)
        out[split] = {"source": source, "start": start, "stop": stop}
    return out


def load_npz(path: str | os.PathLike, split: str = "test", limit: int | None = None) -> Dataset:
    """A split of your own data from an ``.npz`` file.

    Arrays: ``images`` / ``labels`` (the test split), and optionally ``train_images`` /
    ``train_labels`` (calibration, tuning) and ``val_images`` / ``val_labels`` (choices).
    Images are NHWC (or NHW, given a channel axis); uint8 pixels are normalised by the
    per-channel mean and std of the training images (or of ``images`` when there are
    none); float images are taken as model inputs as they are.
    """
    path = Path(path)
    keys = {"test": ("images", "labels"), "train": ("train_images", "train_labels"),
            "validation": ("val_images", "val_labels")}
    if split not in keys:
        raise ValueError(f"split must be one of {list(keys)}, got {split!r}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"data file {path} cannot be read as .npz: {e}") from e
    with npz:
        ik, lk = keys[split]
        if ik not in npz or lk not in npz:
            raise ValueError(f"data file {path} has no {split} split: arrays {ik!r} and "
                             f"{lk!r} needed, found {sorted(npz.files)}")
        images, labels = npz[ik], npz[lk]
        stats_src = npz["train_images"] if "train_images" in npz else npz["images"]
    if images.ndim == 3:
        images, stats_src = images[..., None], (stats_src[..., None] if stats_src.ndim == 3
                                                else stats_src)
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"data file {path}: {ik} must be (N, H, W[, C]) and {lk} (N,), got "
                         f"{images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"data file {path}: {lk} must hold integer labels, got {labels.dtype}")
    if images.dtype == np.uint8:
        x = stats_src.astype(np.float32) / 255.0
        mean = tuple(float(m) for m in x.mean(axis=(0, 1, 2)))
        std = tuple(max(float(v), 1e-6) for v in x.std(axis=(0, 1, 2)))
    elif np.issubdtype(images.dtype, np.floating):
        mean, std = None, None  # already model inputs
    else:
        raise ValueError(f"data file {path}: {ik} must be uint8 pixels or float model "
                         f"inputs, got {images.dtype}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Dataset(f"npz:{path}", split, images, labels.astype(np.int32),
                   int(labels.max()) + 1 if len(labels) else 0, mean, std)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_center_crop(image: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
    """The usual ImageNet evaluation transform: the short side resized to ``resize``
    (bilinear), then a centred ``crop`` x ``crop`` window. uint8 HWC in and out."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image).squeeze() if np.asarray(image).shape[-1] == 1
                          else np.asarray(image))
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))),
                     Image.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    out = np.asarray(img.crop((left, top, left + crop, top + crop)))
    return out[..., None] if out.ndim == 2 else out


def load_image_folder(path: str | os.PathLike, *, resize: int = 256, crop: int = 224,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      limit: int | None = None) -> Dataset:
    """Images in class subfolders (``path/<class>/*.jpg``, classes sorted by name, as
    torchvision's ImageFolder), or directly in ``path`` (label 0), resized, centre-cropped
    and normalised by ``mean`` / ``std`` (per channel, in [0, 1] pixel units)."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = ([(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
              if f.suffix.lower() in exts] if classes else
             [(f, 0) for f in sorted(root.iterdir()) if f.suffix.lower() in exts])
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"image folder {root} holds no images ({', '.join(sorted(exts))})")
    images = np.stack([resize_center_crop(np.asarray(Image.open(f).convert("RGB")), resize,
                                          crop) for f, _ in files])
    labels = np.asarray([i for _, i in files], np.int32)
    return Dataset(f"folder:{root}", "test", images, labels, max(len(classes), 1),
                   tuple(mean), tuple(std))


def model_inputs(ds: Dataset) -> np.ndarray:
    """Float model inputs of a split: normalised pixels, or float images as they are."""
    if ds.mean is None:
        return np.asarray(ds.images, np.float32)
    return normalize(ds.images, ds.mean, ds.std)


def _source_to_numpy(source, start: int, stop: int, limit: int | None,
                     image_key="image", label_key="label", transform=None):
    if limit is not None:
        stop = min(stop, start + limit)
    records = source.__getitems__(list(range(start, stop)))
    transform = transform or np.asarray
    images = np.stack([transform(np.asarray(r[image_key])) for r in records])
    labels = np.asarray([int(r[label_key]) for r in records], np.int32)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


def _load_digits(split: str, limit: int | None):
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with values 0..16 -> uint8 0..255; deterministic 80/20 source split,
    # the validation split is the tail of the 80%.
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    cut = int(0.8 * len(labels))
    if split == "test":
        sl = slice(cut, None)
    else:
        start, stop = split_range("digits", split, cut)
        sl = slice(start, stop)
    images, labels = images[sl], labels[sl]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load(
    name: str = "fashion_mnist",
    split: str = "test",
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    preprocess: dict | None = None,
) -> Dataset:
    """Loads a split into memory.

    Args:
      name: one of ``DATASETS``. ``fashion_mnist`` is built offline from Debian's
        ``dataset-fashion-mnist`` files when they exist (else TFDS's own builder,
        which downloads); ``cifar10`` and ``imagenet2012`` use TFDS and must already
        be prepared in ``data_dir`` (or be downloadable); ``digits`` is sklearn's
        bundled 8x8 digits (a tiny real dataset, useful in tests).
      split: ``train``, ``validation`` (held out of ``train``: the last
        ``VALIDATION_IMAGES[name]`` images of the source training split) or ``test``
        (for imagenet2012, TFDS's official ``validation`` split).
      limit: keep the first ``limit`` examples.
      data_dir: TFDS data directory (default ``$REDY_DATA_DIR`` or ``~/.cache/redy_jax``).
      preprocess: for an image folder or imagenet2012: ``resize``, ``crop``, ``mean``,
        ``std`` (see :func:`load_image_folder`).
    """
    if str(name).endswith(".npz"):
        return load_npz(name, split, limit)
    if Path(str(name)).is_dir():
        if split != "test":
            raise ValueError(f"an image folder ({name}) holds one split: evaluate it as the "
                             "test split and calibrate on it (or use an .npz with "
                             "train_images)")
        return load_image_folder(name, limit=limit, **(preprocess or {}))
    if name not in _STATS:
        raise ValueError(f"dataset must be one of {list(DATASETS)} or a .npz file, got "
                         f"{name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    mean, std = _STATS[name]
    if name == "digits":
        images, labels = _load_digits(split, limit)
        return Dataset(name, split, images, labels, 10, mean, std)

    import tensorflow_datasets as tfds

    if name == "fashion_mnist":
        from redy_jax.data.fashion_mnist import source_dir

        if (source_dir() / "t10k-images-idx3-ubyte.gz").exists():
            builder = _fashion_mnist_builder(data_dir)
            source = builder.as_data_source(split="test" if split == "test" else "train")
            start, stop = split_range(name, split, len(source))
            images, labels = _source_to_numpy(source, start, stop, limit)
            return Dataset(name, split, images, labels, 10, mean, std)
    if split == "test":
        tfds_split = "validation" if name == "imagenet2012" else "test"
    else:
        tfds_split = "train"
    source = tfds.data_source(name, split=tfds_split, data_dir=str(data_dir))
    start, stop = split_range(name, split, len(source))
    # ImageNet images differ in size: the standard evaluation transform (256 -> 224).
    pre = dict(preprocess or {})
    transform = None
    if name == "imagenet2012":
        transform = lambda im: resize_center_crop(im, pre.get("resize", 256),  # noqa: E731
                                                  pre.get("crop", 224))
        mean, std = pre.get("mean", mean), pre.get("std", std)
    images, labels = _source_to_numpy(source, start, stop, limit, transform=transform)
    num_classes = 1000 if name == "imagenet2012" else 10
    return Dataset(name, split, images, labels, num_classes, mean, std)
