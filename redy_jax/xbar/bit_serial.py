"""Bit-serial crossbar matrix-vector products, exact and faithful.

For each input vector and row tile the hardware streams the activation codes one
DAC digit (``dac_bits``) per read cycle, least significant first. Every column
produces the analog sum ``A = sum_r digit_r * cell_r``; the ADC converts it to
``clip(round(A / step), 0, 2**adc_bits - 1) * step``. Flipped columns are
recovered as ``cell_max * U - A`` with the unit column ``U = sum_r digit_r`` (also
converted by the ADC), slices are merged by shift-and-add (``<< cell_bits * j``),
digits by ``<< dac_bits * p`` (the two's-complement sign plane is subtracted),
and the weight bias is removed as ``2**(weight_bits-1) * sum_p U_p << p``.

Two paths give the per-row-tile partial sums (V, T, N):

* :func:`faithful_partial_sums` evaluates every digit plane, column slice, ADC
  conversion and correction (32 matmuls' worth of work for 8-bit operands and 4
  slices, done as one batched einsum; nothing loops in Python).
* :func:`exact_partial_sums` is used where the spec proves no conversion can clip or
  round (``HardwareSpec.adc_is_exact``): it computes the same integers with float32
  matmuls whose operands are split so every sum stays below 2**24 (exact).

Both return int32. Where the ADC can clip the faithful path shows the error.
"""

from __future__ import annotations

import jax.numpy as jnp

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.weights import StoredWeights

_F32_EXACT = 1 << 24


def digit_planes(x: jnp.ndarray, spec: HardwareSpec, signed: bool):
    """Splits codes (..., R) into DAC digits (..., R, P) and the plane weights (P,).

    Unsigned codes: ``digit_p = (x >> p*dac_bits) & dac_max`` with weight ``2**(p*dac_bits)``.
    Signed (two's complement, ``dac_bits == 1``): the MSB plane has weight ``-2**(act_bits-1)``.
    """
    p = jnp.arange(spec.planes, dtype=jnp.int32)
    shifts = p * spec.dac_bits
    x = jnp.asarray(x, jnp.int32)
    if signed:
        x = x & ((1 << spec.act_bits) - 1)  # two's complement bit pattern
    digits = (x[..., None] >> shifts) & spec.dac_max
    weights = jnp.left_shift(1, shifts)
    if signed:
        weights = weights.at[-1].set(-weights[-1])
    return digits, weights


def adc(v: jnp.ndarray, spec: HardwareSpec) -> jnp.ndarray:
    """ADC transfer: analog column sums (float, >= 0) -> digital values (int32)."""
    code = jnp.clip(jnp.round(v / spec.adc_step), 0, spec.adc_max_code)
    return code.astype(jnp.int32) * spec.adc_step


def faithful_partial_sums(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                          signed: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Bit-plane model of every crossbar read.

    Args:
      x_tiles: int32 (V, T, R) activation codes per row tile (zero in padding rows).
      w: stored weights for the same tiling.
      signed: codes are two's complement (sign-bit streaming) rather than unsigned.

    Returns:
      ``(partial, saturated)``: int32 (V, T, N) partial sums as the hardware produces
      them, and int32 (V,) the number of conversions (columns and unit columns,
      summed over planes) that clipped at the ADC's full scale.
    """
    digits, pw = digit_planes(x_tiles, spec, signed)  # (V, T, R, P)
    d = digits.astype(jnp.float32)
    analog = jnp.einsum("vtrp,trns->vtpns", d, w.cells)  # column sums
    unit = d.sum(axis=2)  # (V, T, P): unit column (all cells at level 1)
    dig = adc(analog, spec)
    dig_unit = adc(unit, spec)
    fs = spec.adc_full_scale
    saturated = ((analog > fs).sum(axis=(1, 2, 3, 4)) + (unit > fs).sum(axis=(1, 2)))
    # Undo flipped columns with the unit column: sum d*(cmax - c) = cmax*U - A.
    dig = jnp.where(w.flipped[None, :, None], spec.cell_max * dig_unit[..., None, None] - dig,
                    dig)
    slice_w = jnp.left_shift(1, jnp.arange(spec.slices, dtype=jnp.int32) * spec.cell_bits)
    per_plane = jnp.einsum("vtpns,s->vtpn", dig, slice_w)
    biased = jnp.einsum("vtpn,p->vtn", per_plane, pw)
    input_sum = jnp.einsum("vtp,p->vt", dig_unit, pw)
    partial = biased - (1 << (spec.weight_bits - 1)) * input_sum[..., None]
    return partial.astype(jnp.int32), saturated.astype(jnp.int32)


def _split_bits(spec: HardwareSpec, rows: int, signed: bool) -> int:
    """Largest weight chunk (bits) keeping ``rows * max|x| * max chunk`` below 2**24."""
    xmax = (1 << (spec.act_bits - 1)) if signed else (1 << spec.act_bits) - 1
    s = spec.weight_bits
    while s > 1 and rows * xmax * ((1 << s) - 1) >= _F32_EXACT:
        s -= 1
    return s


def exact_partial_sums(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                       signed: bool) -> jnp.ndarray:
    """Exact integer partial sums (V, T, N) via float32 matmuls on split weights.

    Equal to :func:`faithful_partial_sums` whenever ``spec.adc_is_exact(rows)``.
    """
    rows = x_tiles.shape[-1]
    u = w.codes + (1 << (spec.weight_bits - 1))  # unsigned, [0, 2**weight_bits)
    s = _split_bits(spec, rows, signed)
    x = x_tiles.astype(jnp.float32)
    total = jnp.zeros(x_tiles.shape[:2] + (w.codes.shape[-1],), jnp.int32)
    for lo in range(0, spec.weight_bits, s):  # static: 1 chunk for 8-bit at 128 rows
        chunk = ((u >> lo) & ((1 << s) - 1)).astype(jnp.float32)
        part = jnp.einsum("vtr,trn->vtn", x, chunk).astype(jnp.int32)
        total = total + (part << lo)
    input_sum = x_tiles.sum(axis=-1)
    return total - (1 << (spec.weight_bits - 1)) * input_sum[..., None]
