import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redy_jax import checkpoint
from redy_jax.checkpoint import CheckpointError
from redy_jax.models import LeNet5


@pytest.fixture
def saved(tmp_path):
    m = LeNet5()
    v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    path = checkpoint.save(tmp_path / "lenet", v, {"model": "lenet5", "epochs": 0})
    return m, v, path


def test_roundtrip_is_exact(saved):
    _, v, path = saved
    restored, record = checkpoint.load(path, v)
    assert record["model"] == "lenet5" and len(record["sha256"]) == 64
    for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(restored),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_files_are_named(tmp_path, saved):
    with pytest.raises(CheckpointError, match="nope.msgpack does not exist"):
        checkpoint.load(tmp_path / "nope.msgpack")
    _, _, path = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="record .*lenet.json"):
        checkpoint.load(path)


def test_corrupt_file_is_detected(saved):
    _, _, path = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="lenet.msgpack is corrupt: sha256"):
        checkpoint.load(path)


def test_truncated_file_is_detected(saved):
    _, _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)


def test_shape_mismatch_names_parameter(saved):
    _, _, path = saved
    other = LeNet5(num_classes=7).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(CheckpointError, match="fc3.*shape"):
        checkpoint.load(path, other)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    checkpoint.atomic_write_json(target, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        checkpoint.atomic_write_json(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("model", ["lenet5", "resnet20", "vgg8", "mobilenetv2"])
def test_shipped_records_name_disjoint_train_and_validation_ranges(model):
    """No validation image was trained on: the record's train range ends where the
    validation range (the training file's last 5,000 images) begins."""
    import json

    from redy_jax import data

    record = json.loads(checkpoint.shipped(model).with_suffix(".json").read_text())
    sp = record["splits"]
    assert sp == data.split_ranges("fashion_mnist") or sp["train"]["stop"] < 55000
    assert sp["train"]["source"] == sp["validation"]["source"] == "train"
    assert sp["train"]["stop"] <= sp["validation"]["start"]
    assert sp["validation"]["stop"] - sp["validation"]["start"] == 5000
    assert "float_validation_accuracy" in record and "float_test_accuracy" in record
