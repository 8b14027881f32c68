"""Checkpoints: one msgpack file of Flax variables plus a JSON record beside it.

``<name>.msgpack`` holds ``{'params': ..., 'batch_stats': ...}`` written by
``flax.serialization``; ``<name>.json`` records how it was made (command,
epochs, seed, float test accuracy) and the SHA-256 of the msgpack file, so a
truncated or corrupted file is detected before it silently yields wrong numbers.
Writes are atomic (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from redy_jax.files import atomic_write_bytes, atomic_write_json

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def save(path: str | os.PathLike, variables: Any, record: dict[str, Any]) -> Path:
    """Saves ``variables`` to ``path`` (.msgpack) and ``record`` (+ sha256) to ``.json``."""
    path = Path(path).with_suffix(".msgpack")
    data = flax.serialization.msgpack_serialize(
        jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(variables)))
    atomic_write_bytes(path, data)
    record = dict(record, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    atomic_write_json(path.with_suffix(".json"), record)
    return path


def load(path: str | os.PathLike, target: Any | None = None, *,
         require_record: bool = True) -> tuple[Any, dict[str, Any]]:
    """Loads variables (and the record) from ``path``.

    Args:
      path: the ``.msgpack`` file (its ``.json`` record must sit beside it).
      target: optional variables of the same structure (e.g. from ``model.init``);
        if given, shapes are checked leaf by leaf.
      require_record: False accepts a bare ``flax.serialization`` msgpack file without
        a record (a user's own checkpoint; no checksum to verify, record ``{}``).

    Raises:
      CheckpointError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if path.suffix != ".msgpack":
        path = path.with_suffix(".msgpack")
    rec_path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if not rec_path.exists():
        if require_record:
            raise CheckpointError(
                f"checkpoint record {rec_path} (needed beside {path.name}) is missing")
        record = {}
    else:
        try:
            record = json.loads(rec_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint record {rec_path} is not valid JSON: {e}") from e
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if "sha256" in record and record["sha256"] != digest:
        raise CheckpointError(
            f"checkpoint file {path} is corrupt: sha256 {digest[:12]}... does not match "
            f"{record['sha256'][:12]}... recorded in {rec_path.name} "
            f"({len(data)} bytes on disk, {record.get('bytes', '?')} recorded)")
    record = {**record, "sha256": digest}  # verified, or (no record) what was read
    try:
        state = flax.serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types
        raise CheckpointError(f"checkpoint file {path} cannot be decoded: {e}") from e
    if target is not None:
        ref = flax.serialization.to_state_dict(target)
        ref_paths = {jax.tree_util.keystr(k): v.shape
                     for k, v in jax.tree_util.tree_leaves_with_path(ref)}
        got_paths = {jax.tree_util.keystr(k): np.shape(v)
                     for k, v in jax.tree_util.tree_leaves_with_path(state)}
        missing = sorted(set(ref_paths) - set(got_paths))
        if missing:
            raise CheckpointError(f"checkpoint file {path} lacks parameters {missing[:3]}...")
        bad = [(k, got_paths[k], s) for k, s in ref_paths.items() if got_paths[k] != s]
        if bad:
            k, got, want = bad[0]
            raise CheckpointError(
                f"checkpoint file {path}: parameter {k} has shape {got}, model expects {want}")
        state = flax.serialization.from_state_dict(target, state)
    return state, record


def shipped(model: str) -> Path:
    """Path of the shipped Fashion-MNIST checkpoint of a zoo model."""
    return CHECKPOINT_DIR / f"{model}_fashion_mnist.msgpack"
