"""Uniform activation quantisation and static per-layer calibration.

A layer's input ``x`` is quantised to unsigned ``act_bits`` codes
``q = clip(round(x / scale) + zero_point, 0, 2**act_bits - 1)``, so the real value of
a code is ``(q - zero_point) * scale``. Layers whose calibration inputs are never
negative get ``zero_point = 0``; signed layers (e.g. a normalised image, a linear
bottleneck) get an asymmetric range with a zero point (or, with
``signed_encoding='sign_bit'``, a symmetric two's-complement range).

The clipping range of each layer is chosen on a calibration split by minimising the
quantisation MSE over a grid of fractions of the observed range (``method='mse'``),
or is the observed range itself (``method='minmax'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import jax.numpy as jnp
import numpy as np

CLIP_GRID = tuple(float(f) for f in np.linspace(0.25, 1.0, 31))
CALIBRATION_METHODS = ("mse", "minmax")


@dataclass(frozen=True)
class ActQuant:
    """Static quantiser of one layer's input (hashable: a static argument of jit)."""

    scale: float
    zero_point: int
    signed: bool
    """True when the calibration inputs had negative values."""
    lo: float
    hi: float
    """Clipping range in real units."""


def make_quant(lo: float, hi: float, bits: int, sign_bit: bool = False) -> ActQuant:
    """Quantiser covering ``[lo, hi]`` (lo <= 0 <= hi) with ``bits``-bit codes."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    levels = (1 << bits) - 1
    if lo == 0.0:
        return ActQuant(scale=max(hi, 1e-12) / levels, zero_point=0, signed=False, lo=0.0, hi=hi)
    if sign_bit:  # symmetric two's complement: codes in [-2^(b-1), 2^(b-1) - 1]
        m = max(-lo, hi)
        s = max(m, 1e-12) / ((1 << (bits - 1)) - 1)
        return ActQuant(scale=s, zero_point=1 << (bits - 1), signed=True, lo=-m, hi=m)
    scale = max(hi - lo, 1e-12) / levels
    zp = int(np.clip(np.round(-lo / scale), 0, levels))
    return ActQuant(scale=scale, zero_point=zp, signed=True, lo=lo, hi=hi)


def quantize(x: jnp.ndarray, q: ActQuant, bits: int) -> jnp.ndarray:
    """Float activations -> unsigned int32 codes in ``[0, 2**bits)``."""
    codes = jnp.round(x / q.scale) + q.zero_point
    return jnp.clip(codes, 0, (1 << bits) - 1).astype(jnp.int32)


def fake_quant_error(x: jnp.ndarray, lo: jnp.ndarray, hi: jnp.ndarray, bits: int) -> jnp.ndarray:
    """Sum of squared quantisation errors of ``x`` for each candidate range (lo[i], hi[i])."""
    levels = (1 << bits) - 1
    lo = jnp.minimum(lo, 0.0)[:, None]
    hi = jnp.maximum(hi, 0.0)[:, None]
    scale = jnp.maximum(hi - lo, 1e-12) / levels
    zp = jnp.round(-lo / scale)
    xf = x.reshape(1, -1)
    xq = (jnp.clip(jnp.round(xf / scale) + zp, 0, levels) - zp) * scale
    return jnp.sum((xf - xq) ** 2, axis=1)


@dataclass(frozen=True)
class Calibration:
    """Per-layer static activation quantisers, keyed by module path."""

    layers: Mapping[str, ActQuant]
    method: str
    images: int
    act_bits: int

    def __hash__(self):
        return hash((tuple(sorted(self.layers.items())), self.method, self.images, self.act_bits))

    def __getitem__(self, path: str) -> ActQuant:
        if path not in self.layers:
            raise KeyError(f"no calibration for layer {path!r}; calibrated layers: "
                           f"{sorted(self.layers)[:5]}...")
        return self.layers[path]

    def to_dict(self) -> dict:
        return {"method": self.method, "images": self.images, "act_bits": self.act_bits,
                "layers": {k: asdict(v) for k, v in self.layers.items()}}
