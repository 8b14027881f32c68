"""Static per-layer activation ranges from observed calibration statistics.

The simulator observes every crossbar layer's float inputs on calibration images
(:func:`redy_jax.calibrate`); the rules that turn those observations into quantisers
live here, as pure functions:

``minmax``
    the observed range ``[min(lo, 0), max(hi, 0)]``.
``mse``
    per layer, the fraction of that range in :data:`CLIP_GRID` that minimises the sum
    of squared quantisation errors over the calibration inputs.

Layers with negative inputs get a zero point (or, with ``sign_bit`` streaming, a
symmetric two's-complement range).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from redy_jax.quant.activations import CALIBRATION_METHODS, CLIP_GRID, Calibration, make_quant


def candidate_ranges(lo: float, hi: float, sign_bit: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The ``mse`` method's candidate ranges ``(lo_i, hi_i)``: the fractions of
    :data:`CLIP_GRID` of the observed range (made symmetric under sign-bit streaming)."""
    grid = jnp.asarray(CLIP_GRID, jnp.float32)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if sign_bit and lo < 0:
        m = max(-lo, hi)
        lo, hi = -m, m
    return grid * lo, grid * hi


def fit_calibration(lo: Mapping[str, float], hi: Mapping[str, float], bits: int, *,
                    sign_bit: bool, method: str, images: int,
                    sse: Mapping[str, np.ndarray] | None = None) -> Calibration:
    """``bits``-bit quantisers from the observed range of each layer (``lo``/``hi`` by
    layer path) and, for ``method='mse'``, the summed squared error of each candidate of
    :func:`candidate_ranges` at ``bits`` bits (``sse[path]``, one entry per grid
    point)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    frac = dict.fromkeys(lo, 1.0)
    if method == "mse":
        if sse is None:
            raise ValueError("method='mse' needs the squared errors of every candidate (sse)")
        frac = {p: CLIP_GRID[int(np.argmin(sse[p]))] for p in lo}
    layers = {p: make_quant(lo[p] * frac[p], hi[p] * frac[p], bits, sign_bit) for p in lo}
    return Calibration(layers=layers, method=method, images=images)


__all__ = ["candidate_ranges", "fit_calibration"]
