"""Fashion-MNIST as a TFDS dataset built offline from Debian's local files.

Debian's ``dataset-fashion-mnist`` package installs the four IDX files under
``/usr/share/datasets/fashion-mnist/``. Their gzip bytes differ from upstream,
so TFDS's built-in ``fashion_mnist`` checksums fail (and, offline, its download
hangs on DNS). This builder reads the local files instead, stores them as
``array_record`` (which needs no TensorFlow) and is read back through
``tfds.data_source``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


class IdxFormatError(ValueError):
    """An IDX file is truncated, has the wrong magic number or inconsistent sizes."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a (optionally gzipped) IDX file into a uint8 numpy array.

    Raises:
      FileNotFoundError: the file does not exist.
      IdxFormatError: the file is not a valid unsigned-byte IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) / EOFError
        if isinstance(e, FileNotFoundError):
            raise
        raise IdxFormatError(f"{path}: cannot be decompressed ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(f"{path}: bad IDX magic number")
    if raw[2] != 0x08:
        raise IdxFormatError(f"{path}: IDX element type {raw[2]:#x}, expected 0x08 (uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape))
    if len(raw) - header != n:
        raise IdxFormatError(
            f"{path}: payload has {len(raw) - header} bytes, header shape {shape} needs {n}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def source_dir() -> Path:
    """Directory with the raw IDX files: ``$REDY_FASHION_MNIST_DIR`` or Debian's."""
    return Path(os.environ.get("REDY_FASHION_MNIST_DIR", DEBIAN_DIR))


def read_split_files(split: str, directory: str | os.PathLike | None = None):
    """Returns (images uint8 (N, 28, 28, 1), labels int64 (N,)) read from IDX files."""
    directory = Path(directory) if directory is not None else source_dir()
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    img_name, lab_name = _FILES[split]
    img_path, lab_path = directory / img_name, directory / lab_name
    for p in (img_path, lab_path):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} not found. Install Debian's package with "
                "`apt-get install dataset-fashion-mnist`, or set REDY_FASHION_MNIST_DIR "
                "to a directory holding the four Fashion-MNIST IDX .gz files."
            )
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{directory}: images {images.shape} and labels {labels.shape} do not match"
        )
    return images[..., None], labels.astype(np.int64)


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al., 2017) prepared from local IDX files."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Built from Debian's dataset-fashion-mnist files.",
        "1.1.0": "Records keep the IDX files' order (no shuffling), so the validation "
                 "split is the training file's images 55,000-59,999.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Fashion-MNIST from local IDX files (Debian dataset-fashion-mnist).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # record i is IDX image i: splits are file ranges
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {split: self._generate_examples(split) for split in _FILES}

    def _generate_examples(self, split):
        images, labels = read_split_files(split)
        for i in range(images.shape[0]):
            yield i, {"image": images[i], "label": int(labels[i])}
