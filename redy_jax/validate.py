"""Input checks shared by every public entry point: a bad input is an error that names
what is wrong and what is allowed, never a silently wrong number."""

from __future__ import annotations

import jax
import numpy as np


def check_images(images, name: str = "images") -> np.ndarray:
    """Float model inputs (B, ...), non-empty and finite -> float32 numpy.

    The dtype is checked before any conversion: uint8 pixels are not model inputs (they
    need ``redy_jax.data.normalize``), and casting them would give wrong accuracy."""
    if isinstance(images, jax.core.Tracer):
        raise TypeError(f"{name} is traced: inside jax transformations use "
                        "redy_jax.simulator")
    if isinstance(images, (str, bytes)) or images is None:
        raise TypeError(f"{name} must be an array of float model inputs (B, ...), got "
                        f"{type(images).__name__}")
    a = np.asarray(images)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be float model inputs (normalised), got dtype "
                         f"{a.dtype}; use redy_jax.data.normalize on uint8 images")
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, ...), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(f"{name} contain {int(bad.sum())} NaN/inf values (first at index "
                         f"{tuple(int(i) for i in idx)})")
    return np.asarray(a, np.float32)


def check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """Integer class labels (n,), non-negative -> int64 numpy."""
    a = np.asarray(labels)
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer class labels, got dtype "
                         f"{a.dtype} and shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"images ({n}) and {name} ({len(a)}) differ in length")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be >= 0, found {int(a.min())}")
    return a.astype(np.int64)


def check_variables(variables, name: str = "variables") -> None:
    """Every parameter and statistic is finite; else a ValueError names the first bad
    one by path (a NaN weight would otherwise quantise to a zero channel silently)."""
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    for path, leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            return
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating):
            bad = ~np.isfinite(a)
            if bad.any():
                where = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                raise ValueError(f"{name}: {where} holds {int(bad.sum())} NaN/inf value(s) "
                                 f"of {a.size}; a model with non-finite weights or "
                                 "statistics cannot be simulated")


__all__ = ["check_images", "check_labels", "check_variables"]
