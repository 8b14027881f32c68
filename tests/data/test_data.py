import gzip

import numpy as np
import pytest

from redy_jax import data
from redy_jax.data.fashion_mnist import IdxFormatError, read_idx, read_split_files


def _idx(path, arr, magic_type=0x08, gz=True):
    header = bytes([0, 0, magic_type, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


def test_read_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    _idx(tmp_path / "b", a, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), a)
    (tmp_path / "t.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x09abc"))
    with pytest.raises(IdxFormatError, match="payload has 3 bytes"):
        read_idx(tmp_path / "t.gz")
    _idx(tmp_path / "f.gz", a, magic_type=0x0D)
    with pytest.raises(IdxFormatError, match="element type"):
        read_idx(tmp_path / "f.gz")
    (tmp_path / "z.gz").write_bytes(b"not gzip at all")
    with pytest.raises(IdxFormatError, match="cannot be decompressed"):
        read_idx(tmp_path / "z.gz")


def test_missing_fashion_mnist_files_explain_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        read_split_files("test", tmp_path)
    with pytest.raises(ValueError, match="split"):
        read_split_files("validation", tmp_path)


def test_local_builder_on_a_stand_in(tmp_path, monkeypatch):
    """The offline TFDS builder prepares array_record files from IDX files (a 20-image
    stand-in here) and reads them back without TensorFlow."""
    rng = np.random.default_rng(0)
    for img, lab in (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                     ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        _idx(tmp_path / img, rng.integers(0, 256, (20, 28, 28)))
        _idx(tmp_path / lab, rng.integers(0, 10, (20,)))
    monkeypatch.setenv("REDY_FASHION_MNIST_DIR", str(tmp_path))
    ds = data.load("fashion_mnist", "test", limit=7, data_dir=tmp_path / "tfds")
    assert ds.images.shape == (7, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (7,) and ds.num_classes == 10
    expected = read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert ds.labels.tolist() == expected[:7].tolist()  # records keep the file order
    with pytest.raises(ValueError, match="too few to hold out a validation split"):
        data.load("fashion_mnist", "validation", data_dir=tmp_path / "tfds")


def test_real_fashion_mnist_test_split():
    ds = data.load("fashion_mnist", "test")
    assert ds.images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    x = data.normalize(ds.images[:100], ds.mean, ds.std)
    assert x.dtype == np.float32 and x.min() < 0 < x.max()


def test_validation_split_is_the_training_file_tail_and_disjoint_from_train():
    from redy_jax.data.fashion_mnist import read_split_files

    images, labels = read_split_files("train")
    tr, va = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "validation")
    assert len(tr.labels) == 55000 and len(va.labels) == data.VALIDATION_IMAGES["fashion_mnist"]
    np.testing.assert_array_equal(va.images, images[55000:])
    np.testing.assert_array_equal(va.labels, labels[55000:])
    np.testing.assert_array_equal(tr.images[-3:], images[54997:55000])
    r = data.split_ranges("fashion_mnist")
    assert r["train"] == {"source": "train", "start": 0, "stop": 55000}
    assert r["validation"] == {"source": "train", "start": 55000, "stop": 60000}
    assert data.split_ranges("fashion_mnist", limit=100)["train"]["stop"] == 100


def test_digits_is_a_tiny_real_dataset():
    tr, va, te = (data.load("digits", s) for s in ("train", "validation", "test"))
    assert tr.images.shape[1:] == (8, 8, 1)
    assert len(tr.labels) + len(va.labels) + len(te.labels) == 1797
    assert len(va.labels) == data.VALIDATION_IMAGES["digits"]


def test_unknown_dataset_and_bad_limit():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("mnist_plus")
    with pytest.raises(ValueError, match="limit"):
        data.load("digits", limit=0)
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("digits", "val")


def _stand_in(tmp_path):
    rng = np.random.default_rng(0)
    for img, lab in (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                     ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        _idx(tmp_path / img, rng.integers(0, 256, (20, 28, 28)))
        _idx(tmp_path / lab, rng.integers(0, 10, (20,)))


def test_a_build_finished_by_another_process_after_the_builder_was_made(tmp_path, monkeypatch):
    """The race CI hit: this process makes its builder (the dataset is not there, so its
    info has no splits), another process then finishes preparing, and ``is_prepared``
    says yes. The builder handed back must know the splits (it used to raise KeyError
    "splits is empty")."""
    from redy_jax.data import loaders
    from redy_jax.data.fashion_mnist import FashionMnistLocal

    src = tmp_path / "idx"
    src.mkdir()
    _stand_in(src)
    monkeypatch.setenv("REDY_FASHION_MNIST_DIR", str(src))
    d = tmp_path / "tfds"
    real = FashionMnistLocal.is_prepared
    raced = []

    def other_process_finishes_first(self):
        if not raced:
            raced.append(True)
            FashionMnistLocal(data_dir=str(d), file_format="array_record").download_and_prepare()
        return real(self)

    monkeypatch.setattr(FashionMnistLocal, "is_prepared", other_process_finishes_first)
    builder = loaders._fashion_mnist_builder(d)
    assert raced
    assert len(builder.as_data_source(split="test")) == 20


def test_concurrent_first_builds_and_a_killed_build_are_safe(tmp_path):
    """Two processes preparing the dataset at once both succeed (3 trials; the loser
    used to die renaming TFDS's incomplete folder), and a folder left by a killed build
    is not tripped over."""
    import os
    import subprocess
    import sys

    src = tmp_path / "idx"
    src.mkdir()
    _stand_in(src)
    code = ("from redy_jax import data; import sys; "
            "print(len(data.load('fashion_mnist', 'test', data_dir=sys.argv[1]).labels))")
    env = {**os.environ, "REDY_FASHION_MNIST_DIR": str(src)}
    for trial in range(3):
        d = tmp_path / f"tfds{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(d)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-2000:]
            assert out.strip() == "20"
    d = tmp_path / "killed"
    stale = d / "fashion_mnist_local" / "incomplete.ABC123"
    stale.mkdir(parents=True)
    (stale / "half.array_record").write_bytes(b"\x00" * 10)
    monkey = {**env}
    r = subprocess.run([sys.executable, "-c", code, str(d)], env=monkey, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not stale.exists()
