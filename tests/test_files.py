"""Atomic writes: nothing half-written, strict JSON, file modes as open() makes them."""

import json
import os

import pytest

from redy_jax.files import atomic_write_bytes, atomic_write_json, write_csv


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert [f.name for f in p.parent.iterdir()] == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_non_finite_numbers_are_refused_and_the_old_file_kept(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(p, {"x": float("nan")})
    assert json.loads(p.read_text()) == {"x": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_csv_and_bytes(tmp_path):
    write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b,c", "1,2,", "3,,4"]
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
