"""Threshold files and threshold sets."""

import pytest

from redy_jax.thresholds import read_thresholds, redy_policy_map, threshold_set


def test_bad_thresholds_file(tmp_path):
    p = tmp_path / "t.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_thresholds(p)
    p.write_text('{"layers": {"conv": [3, 1]}}')
    with pytest.raises(ValueError, match="ascend"):
        read_thresholds(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_thresholds(tmp_path / "missing.json")


def test_threshold_set_builds_a_policy_per_layer():
    ts = threshold_set(["a", "b"], 2.0, 4, "channel")
    assert ts["layers"]["a"] == [1.0, 2.0, 4.0, 8.0]
    pm = redy_policy_map(ts)
    assert pm.for_layer("a", "conv").granularity == "channel"
    assert pm.for_layer("c", "conv").name == "static"
    assert pm.for_layer("a", "dense").name == "redy"  # a named layer is ReDy whatever its kind
