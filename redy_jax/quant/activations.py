"""Uniform activation quantisation and static per-layer calibration.

A layer's input ``x`` is quantised to unsigned ``bits``-bit codes (per layer, at most
the hardware's ``act_bits``) ``q = clip(round(x / scale) + zero_point, 0, 2**bits -
1)``, so the real value of
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
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import struct

CLIP_GRID = tuple(float(f) for f in np.linspace(0.25, 1.0, 31))
CALIBRATION_METHODS = ("mse", "minmax")


@struct.dataclass
class ActQuant:
    """Quantiser of one layer's input: ``q = clip(round(x / scale) + zero_point, 0,
    2**bits - 1)``, the real value of a code being ``(q - zero_point) * scale``.

    A pytree: ``scale``, ``zero_point``, ``bits``, ``lo`` and ``hi`` are leaves (traced
    inside the jitted pass, so changing a calibration does not recompile it); ``signed``
    is static (it decides how the layer streams its codes)."""

    scale: float
    zero_point: int
    lo: float
    hi: float
    """Clipping range in real units."""
    bits: int = 8
    """Code width [bits] (the layer streams at most ``ceil(bits / dac_bits)`` planes)."""
    signed: bool = struct.field(pytree_node=False, default=False)
    """True when the calibration inputs had negative values (a zero point, or
    two's-complement codes under sign-bit streaming)."""

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point),
                "bits": int(self.bits), "signed": bool(self.signed), "lo": float(self.lo),
                "hi": float(self.hi)}


def make_quant(lo: float, hi: float, bits: int, sign_bit: bool = False) -> ActQuant:
    """Quantiser covering ``[lo, hi]`` (lo <= 0 <= hi) with ``bits``-bit codes."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    levels = (1 << bits) - 1
    if lo == 0.0:
        return ActQuant(scale=max(hi, 1e-12) / levels, zero_point=0, signed=False, lo=0.0,
                        hi=hi, bits=bits)
    if sign_bit:  # symmetric two's complement: codes in [-2^(b-1), 2^(b-1) - 1]
        m = max(-lo, hi)
        s = max(m, 1e-12) / ((1 << (bits - 1)) - 1)
        return ActQuant(scale=s, zero_point=1 << (bits - 1), signed=True, lo=-m, hi=m,
                        bits=bits)
    scale = max(hi - lo, 1e-12) / levels
    zp = int(np.clip(np.round(-lo / scale), 0, levels))
    return ActQuant(scale=scale, zero_point=zp, signed=True, lo=lo, hi=hi, bits=bits)


def quantize(x: jnp.ndarray, q: ActQuant, nonfinite_code: int | None = None) -> jnp.ndarray:
    """Float activations -> unsigned int32 codes in ``[0, 2**q.bits)``.

    ``nonfinite_code``: the code given to an activation whose quotient ``x / scale`` is
    NaN or infinite (a NaN/inf ``x``, or ``|x|`` beyond float32's range times the scale),
    marked in the same pass as the quantisation; None: such inputs are clipped like any
    other (NaN to an undefined code)."""
    scaled = x / q.scale
    codes = jnp.round(scaled) + q.zero_point
    codes = jnp.clip(codes, 0, jnp.left_shift(1, q.bits) - 1).astype(jnp.int32)
    if nonfinite_code is None:
        return codes
    return jnp.where(jnp.isfinite(scaled), codes, jnp.int32(nonfinite_code))


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
    """Per-layer activation quantisers, keyed by module path, and how they were made."""

    layers: Mapping[str, ActQuant]
    method: str
    images: int

    def __getitem__(self, path: str) -> ActQuant:
        if path not in self.layers:
            raise KeyError(f"no calibration for layer {path!r}; calibrated layers: "
                           f"{sorted(self.layers)[:5]}...")
        return self.layers[path]

    def __hash__(self):
        return hash((tuple(sorted((k, tuple(v.to_dict().items()))
                                  for k, v in self.layers.items())), self.method, self.images))

    @property
    def structure(self) -> tuple:
        """What a compiled pass depends on: the layers and which are signed (scales, zero
        points and bits are traced values)."""
        return tuple(sorted((k, v.signed) for k, v in self.layers.items()))

    def check(self, act_bits: int, sign_bit: bool) -> Calibration:
        """Raises ValueError, naming the layer, the field and its allowed range, for a
        quantiser the hardware cannot stream (``act_bits``: the spec's code width;
        ``sign_bit``: the spec streams signed layers in two's complement): ``bits`` in
        ``[2, act_bits]``, a finite positive ``scale``, ``zero_point`` 0 on unsigned
        layers, ``2^(bits-1)`` on signed layers under sign-bit streaming (their codes
        minus it are the two's-complement values) and in ``[0, 2^bits - 1]`` otherwise.
        Returns the calibration."""
        for path, q in self.layers.items():
            bits, zp, scale = int(np.asarray(q.bits)), int(np.asarray(q.zero_point)), \
                float(np.asarray(q.scale))
            where = f"calibration of layer {path!r}:"
            if not 2 <= bits <= act_bits:
                raise ValueError(f"{where} bits must be in [2, act_bits={act_bits}], got {bits}")
            if not (np.isfinite(scale) and scale > 0):
                raise ValueError(f"{where} scale must be finite and > 0, got {scale}")
            if not q.signed:
                allowed = (0, 0)
            elif sign_bit:
                allowed = (1 << (bits - 1),) * 2
            else:
                allowed = (0, (1 << bits) - 1)
            if not allowed[0] <= zp <= allowed[1]:
                kind = ("an unsigned layer" if not q.signed else "a signed layer streamed "
                        "in two's complement (sign_bit)" if sign_bit else "a signed layer")
                raise ValueError(f"{where} zero_point of {kind} with {bits}-bit codes must be "
                                 f"in [{allowed[0]}, {allowed[1]}], got {zp} (was it "
                                 "calibrated for another spec?)")
        return self

    @property
    def bits(self) -> dict[str, int]:
        return {k: int(v.bits) for k, v in self.layers.items()}

    def with_bits(self, others: Mapping[str, Calibration]) -> Calibration:
        """Per-layer mix: layer ``p`` takes its quantiser from ``others[p]`` (e.g. the
        calibration at the bit width chosen for it), the rest from this one."""
        layers = {k: (others[k].layers[k] if k in others else v) for k, v in self.layers.items()}
        return Calibration(layers=layers, method=f"mixed({self.method})", images=self.images)

    def to_dict(self) -> dict:
        return {"method": self.method, "images": self.images,
                "layers": {k: v.to_dict() for k, v in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """The calibration :meth:`to_dict` wrote (floats round-trip exactly)."""
        return cls(layers={k: ActQuant(**v) for k, v in d["layers"].items()},
                   method=d["method"], images=d["images"])
