"""Crossbar layer engine: tiling, bit-serial products and exact event counts.

:func:`run_tiles` is what every simulated layer calls; :func:`crossbar_matmul` is the
public integer-level entry point ``(x_codes (B, K), w_codes (K, N), spec) -> (y, counts)``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from redy_jax.hw.spec import HardwareSpec, check_spec
from redy_jax.xbar.bit_serial import faithful_partial_sums
from redy_jax.xbar.exact import code_bound, exact_matmul, exact_tile_sums
from redy_jax.xbar.layout import Tiling, tile
from redy_jax.xbar.plan import Plan
from redy_jax.xbar.weights import StoredWeights, store_weights

MODES = ("auto", "exact", "faithful", "bit_plane")
X_ENCODINGS = ("unsigned", "sign_bit", "zero_point")

COUNT_FIELDS = (
    "xbar_reads", "adc_conversions", "dac_drives", "sample_holds", "shift_adds",
    "input_register", "output_register", "edram_bits", "bus_bits", "redy_unit_ops",
    "lzs_unit_ops", "meta_bits", "digital_macs", "stat_read_bits", "xbar_vectors",
    "cycles", "streamed_bits", "activations", "adc_saturations",
)


@struct.dataclass
class Counts:
    """Event counts, one int32 entry per input vector (shape (V,)) or summed.

    xbar_reads: crossbar read cycles (one bit-plane through one crossbar).
    adc_conversions: ADC conversions (used columns + unit columns, per read).
    dac_drives: rows driven by a DAC for one bit-plane.
    sample_holds / shift_adds: one per ADC conversion.
    input_register / output_register: register traffic, one per crossbar read.
    edram_bits / bus_bits: eDRAM buffer and eDRAM-to-IMA bus traffic [bits]: the
      vector's codes at the layer's code width, its outputs at ``act_bits``.
    redy_unit_ops / lzs_unit_ops: activations through ReDy's quantisation unit / the
      leading-zero detector.
    meta_bits: per-group metadata moved to the IMAs (ReDy's n and t, to every crossbar
      of the group's row tile).
    digital_macs: output-stage multiply-adds (zero point, or ReDy group offsets, times
      column weight sums).
    stat_read_bits: extra eDRAM reads for statistics (``channel`` groups read the whole
      input feature map once before streaming).
    xbar_vectors: crossbar activations (one crossbar consuming one input vector), which
      carry the tile- and chip-level costs that do not scale with planes.
    cycles: read cycles until the vector's slowest row tile is done (latency).
    streamed_bits: activation bits streamed (sum over rows of digits x dac_bits).
    activations: activations consumed (K per vector).
    adc_saturations: conversions whose analog value exceeded the ADC full scale.
    """

    xbar_reads: jnp.ndarray
    adc_conversions: jnp.ndarray
    dac_drives: jnp.ndarray
    sample_holds: jnp.ndarray
    shift_adds: jnp.ndarray
    input_register: jnp.ndarray
    output_register: jnp.ndarray
    edram_bits: jnp.ndarray
    bus_bits: jnp.ndarray
    redy_unit_ops: jnp.ndarray
    lzs_unit_ops: jnp.ndarray
    meta_bits: jnp.ndarray
    digital_macs: jnp.ndarray
    stat_read_bits: jnp.ndarray
    xbar_vectors: jnp.ndarray
    cycles: jnp.ndarray
    streamed_bits: jnp.ndarray
    activations: jnp.ndarray
    adc_saturations: jnp.ndarray

    def as_dict(self) -> dict[str, jnp.ndarray]:
        return {f: getattr(self, f) for f in COUNT_FIELDS}

    def total(self) -> dict[str, int]:
        """Totals over all entries as exact Python ints (int64 on the host)."""
        return {f: int(np.asarray(getattr(self, f), np.int64).sum()) for f in COUNT_FIELDS}

    def sum_groups(self, groups: int) -> Counts:
        """Sums consecutive entries: (groups * m,) -> (groups,), e.g. windows -> images."""
        return jax.tree_util.tree_map(lambda a: a.reshape(groups, -1).sum(axis=1), self)


def resolve_mode(mode: str, tiling: Tiling, spec: HardwareSpec) -> str:
    """The mode a layer runs in: ``auto`` -> ``exact`` when the spec proves that no
    conversion can clip or round, else ``faithful``; the others as given.

    ``exact``: one exact integer product (only on such a spec). ``faithful``: the
    hardware's integers and ADC saturations, every read that the spec or the streamed
    data cannot prove exact through the bit-plane model, the others summed exactly
    (same results, less work). ``bit_plane``: every read through the bit-plane model,
    proven exact or not (to verify or time the model itself)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    exact_ok = spec.adc_is_exact(tiling.rows_per_tile)
    if mode == "exact" and not exact_ok:
        raise ValueError(
            f"mode='exact' needs an ADC that cannot clip: {tiling.rows_per_tile} rows need "
            f"adc_bits >= {spec.min_exact_adc_bits(tiling.rows_per_tile)} at adc_step=1, the "
            f"spec has adc_bits={spec.adc_bits}, adc_step={spec.adc_step}; use mode='faithful'")
    if mode == "auto":
        return "exact" if exact_ok else "faithful"
    return mode


def to_tiles(x_codes: jnp.ndarray, tiling: Tiling) -> jnp.ndarray:
    """(V, K) -> (V, T, R), zero-padding the last row tile."""
    v = x_codes.shape[0]
    x = jnp.pad(x_codes, ((0, 0), (0, tiling.padded_k - tiling.k)))
    return x.reshape(v, tiling.n_row_tiles, tiling.rows_per_tile)


def count_events(plan: Plan, tiling: Tiling, spec: HardwareSpec, *, vectors: int,
                 layer_bits=None, zero_point: bool = False,
                 saturated: jnp.ndarray | None = None, images: int | None = None) -> Counts:
    """Exact event counts per input vector from a policy's plan.

    Args:
      plan: ``plan.planes`` int32 (V, T) digit planes streamed per group (fewer than
        the layer's under leading-zero skipping or ReDy; float when relaxed, so counts
        stay differentiable), or None when every group streams all the layer's planes.
      vectors: V.
      layer_bits: the layer's code width (int or traced scalar; default ``act_bits``).
      zero_point: the layer streams zero-point codes (one digital multiply-add per
        output, plus one per row tile with ReDy group offsets).
      saturated: int32 (V,) ADC conversions that clipped (faithful ADC).
      images: when given, the counts summed over each image's ``V / images``
        consecutive vectors, entries (images,): the same integers as
        ``count_events(...).sum_groups(images)``, from per-image sums of the plan (every
        count is linear in the planes per vector, except ``cycles``, the slowest row
        tile's, summed after its max), i.e. a few reductions instead of one per field.
    """
    v = vectors
    per = 1 if images is None else v // images  # vectors behind one entry
    entries = v if images is None else images
    agg = ((lambda a: a) if images is None
           else lambda a: a.reshape(images, per, *a.shape[1:]).sum(axis=1))
    c = tiling.n_col_tiles
    t = tiling.n_row_tiles
    conv_per_plane = tiling.n * spec.slices + (c if spec.unit_column else 0)
    bits = spec.act_bits if layer_bits is None else layer_bits
    full = -(-jnp.asarray(bits, jnp.int32) // spec.dac_bits)  # the layer's planes
    planes = plan.planes
    if planes is None:
        dtype = jnp.int32
        sum_planes = full * t * per
        row_planes = full * tiling.k * per  # sum over row tiles of planes x rows used
        cycles = full * per
    else:
        # Float planes (a relaxed policy) keep their dtype so counts stay differentiable.
        if not jnp.issubdtype(planes.dtype, jnp.floating):
            planes = planes.astype(jnp.int32)
        dtype = planes.dtype
        rows_used = jnp.asarray(tiling.rows_used, dtype)
        cycles = agg(planes.max(axis=1))
        planes = agg(planes)  # (entries, T)
        sum_planes = planes.sum(axis=1)
        row_planes = (planes * rows_used).sum(axis=1)
    const = lambda val: jnp.broadcast_to(jnp.asarray(val, dtype), (entries,))
    each = lambda val: const(jnp.asarray(val, jnp.int32) * per)  # the same for every vector
    per_vector = lambda a: const(0) if a is None else agg(a).astype(dtype)
    reads = const(sum_planes * c)
    conversions = const(sum_planes * conv_per_plane)
    in_bits = tiling.k * jnp.asarray(bits, jnp.int32)
    macs = 0
    if zero_point:
        macs = tiling.n * ((t + 1) if plan.offsets is not None else 1)
    return Counts(
        xbar_reads=reads,
        adc_conversions=conversions,
        dac_drives=const(row_planes * c),
        sample_holds=conversions,
        shift_adds=conversions,
        input_register=reads,
        output_register=reads,
        edram_bits=each(in_bits + tiling.n * spec.act_bits),
        bus_bits=each(in_bits),
        redy_unit_ops=per_vector(plan.unit_ops if plan.unit == "redy" else None),
        lzs_unit_ops=per_vector(plan.unit_ops if plan.unit == "lzs" else None),
        meta_bits=per_vector(None if plan.meta_bits is None else plan.meta_bits * c),
        digital_macs=each(macs),
        stat_read_bits=per_vector(None if plan.stat_reads is None
                                  else plan.stat_reads * jnp.asarray(bits, jnp.int32)),
        xbar_vectors=each(t * c),
        cycles=const(cycles),
        streamed_bits=const(row_planes * spec.dac_bits),
        activations=each(tiling.k),
        adc_saturations=per_vector(saturated),
    )


def run_tiles(x_tiles: jnp.ndarray, w: StoredWeights, tiling: Tiling, spec: HardwareSpec, *,
              signed: bool, mode: str, plan: Plan = Plan(), layer_bits=None,
              zero_point: bool = False, prune: bool = True) -> tuple[jnp.ndarray, Counts]:
    """Crossbar products of tiled codes and their events.

    Args:
      x_tiles: int32 (V, T, R) streamed codes (already requantised as ``plan`` says).
      plan: the policy's plan for these vectors (default: every group streams every
        plane, no shift); ``plan.shifts`` (V, T) are the LSBs dropped per group: the
        S+A shift of plane i is i + t.
      layer_bits, zero_point: see :func:`count_events`.
      mode: see :func:`resolve_mode`.
      prune: with ``faithful``, leave the vectors the data proves exact out of the
        bit-plane model (:func:`~redy_jax.xbar.bit_serial.pruned_partial_sums`); False
        under ``vmap``, where its branches would all run.
    Returns:
      ``(y, counts)``: int32 (V, N) outputs before zero-point removal, per-vector counts.
    """
    mode = resolve_mode(mode, tiling, spec)
    v, t, r = x_tiles.shape
    saturated = None
    x_max = code_bound(spec.act_bits, signed)
    if mode == "exact" and plan.shifts is None:
        y = exact_matmul(x_tiles.reshape(v, t * r), w.codes.reshape(t * r, -1), x_max,
                         spec.weight_bits)
    else:
        if mode == "exact":
            partial = exact_tile_sums(x_tiles, w.codes, x_max, spec.weight_bits)
        else:
            partial, saturated = faithful_partial_sums(
                x_tiles, w, spec, signed, last_rows=tiling.rows_used[-1],
                prune=mode == "faithful" and prune)
        if plan.shifts is not None:
            partial = partial << plan.shifts[..., None]
        y = partial.sum(axis=1)
    return y, count_events(plan, tiling, spec, vectors=v, layer_bits=layer_bits,
                           zero_point=zero_point, saturated=saturated)


def _check_range(name: str, found, lo: int, hi: int, what: str) -> None:
    """Raises if the (min, max) ``found`` inside the jitted call fall outside [lo, hi].

    Skipped under an outer trace, where values are unknown."""
    if any(isinstance(f, jax.core.Tracer) for f in found):
        return
    fmin, fmax = (int(f) for f in found)
    if fmin < lo or fmax > hi:
        raise ValueError(f"{name} must be {what} in [{lo}, {hi}], found values in "
                         f"[{fmin}, {fmax}]")


@functools.partial(jax.jit, static_argnames=("spec", "encoding", "mode", "taps"))
def _crossbar_matmul(x_codes, w_codes, zero_point, spec, encoding, mode, taps):
    k, n = w_codes.shape
    tiling = tile(k, n, spec, taps)
    stored = store_weights(w_codes, tiling, spec)
    y, counts = run_tiles(to_tiles(x_codes.astype(jnp.int32), tiling), stored, tiling, spec,
                          signed=encoding == "sign_bit", mode=mode,
                          zero_point=encoding == "zero_point")
    if encoding == "zero_point":
        y = y - zero_point * stored.col_sum
    return y, counts, (*_min_max(x_codes), *_min_max(w_codes))


def _min_max(a: jnp.ndarray):
    """``(min, max)`` of an integer array (0 for an empty one) in one pass over it."""
    a = a.astype(jnp.int32)
    return lax.reduce((a, a), (jnp.int32(0), jnp.int32(0)),
                      lambda p, q: (jnp.minimum(p[0], q[0]), jnp.maximum(p[1], q[1])),
                      tuple(range(a.ndim)))


def crossbar_matmul(x_codes, w_codes, spec: HardwareSpec, *, x_encoding: str = "unsigned",
                    zero_point: int = 0, mode: str = "auto",
                    taps: int = 1) -> tuple[jnp.ndarray, Counts]:
    """Integer matrix product as the modelled crossbars compute it.

    Args:
      x_codes: integer activation codes (B, K). ``unsigned``: in ``[0, 2**act_bits)``;
        ``sign_bit``: two's complement in ``[-2**(act_bits-1), 2**(act_bits-1))``;
        ``zero_point``: unsigned codes ``q`` of the signed values ``q - zero_point``.
      w_codes: signed integer weight codes (K, N) in ``[-2**(weight_bits-1), 2**(weight_bits-1))``.
      spec: the hardware.
      x_encoding: how ``x_codes`` are streamed (see above).
      zero_point: subtracted from ``x_codes`` (digitally, ``zp * sum_k w``) with ``zero_point``.
      mode: ``auto`` (exact fast path when the ADC cannot clip, else faithful),
        ``exact``, ``faithful`` (the hardware's integers and saturations: every read the
        spec or the data cannot prove exact through the bit-plane model) or
        ``bit_plane`` (every read through the model); see :func:`resolve_mode`.
      taps: rows per input channel, for channel-aligned row tiles (kh*kw of a conv).

    Returns:
      ``(y, counts)``: int32 (B, N) outputs and per-row :class:`Counts` (each (B,)).
    """
    spec = check_spec(spec)
    if x_encoding not in X_ENCODINGS:
        raise ValueError(f"x_encoding must be one of {X_ENCODINGS}, got {x_encoding!r}")
    if x_encoding == "sign_bit" and spec.dac_bits != 1:
        raise ValueError("x_encoding='sign_bit' needs spec.dac_bits == 1")
    x_codes, w_codes = jnp.asarray(x_codes), jnp.asarray(w_codes)
    for name, a in (("x_codes", x_codes), ("w_codes", w_codes)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise ValueError(f"{name} must hold integer codes, got dtype {a.dtype}")
    if x_codes.shape[1] != w_codes.shape[0]:
        raise ValueError(f"x_codes (B, K) = {x_codes.shape} and w_codes (K, N) = "
                         f"{w_codes.shape} disagree on K")
    a, wb = spec.act_bits, spec.weight_bits
    if a + wb + math.ceil(math.log2(max(w_codes.shape[0], 2))) > 31:
        raise ValueError(f"act_bits + weight_bits + log2(K) = {a}+{wb}+log2({w_codes.shape[0]}) "
                         "exceeds 31: outputs would overflow int32")
    if x_encoding == "zero_point":
        _check_range("zero_point", (zero_point, zero_point), 0, (1 << a) - 1, "a code")
    y, counts, (xmin, xmax, wmin, wmax) = _crossbar_matmul(
        x_codes, w_codes, jnp.asarray(zero_point, jnp.int32), spec, x_encoding, mode, taps)
    if x_encoding == "sign_bit":
        _check_range("x_codes", (xmin, xmax), -(1 << (a - 1)), (1 << (a - 1)) - 1,
                     f"signed {a}-bit codes (act_bits)")
    else:
        _check_range("x_codes", (xmin, xmax), 0, (1 << a) - 1,
                     f"unsigned {a}-bit codes (act_bits)")
    _check_range("w_codes", (wmin, wmax), -(1 << (wb - 1)), (1 << (wb - 1)) - 1,
                 f"signed {wb}-bit codes (weight_bits)")
    return y, counts
