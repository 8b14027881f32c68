"""Bit-serial crossbar matrix-vector products, exact and faithful.

For each input vector and row tile the hardware streams the activation codes one
DAC digit (``dac_bits``) per read cycle, least significant first. Every column
produces the analog sum ``A = sum_r digit_r * cell_r``; the ADC converts it to
``clip(round(A / step), 0, 2**adc_bits - 1) * step``. Flipped columns are
recovered as ``cell_max * U - A`` with the unit column ``U = sum_r digit_r`` (also
converted by the ADC), slices are merged by shift-and-add (``<< cell_bits * j``),
digits by ``<< dac_bits * p`` (the two's-complement sign plane is subtracted),
and the weight bias is removed as ``2**(weight_bits-1) * sum_p U_p << p``.

:func:`faithful_partial_sums` evaluates every digit plane, column slice, ADC
conversion and correction (32 matmuls' worth of work for 8-bit operands and 4
slices, done as one batched product; nothing loops in Python) and returns int32
partial sums per row tile (V, T, N). Where the ADC can clip it shows the error.
Where the spec proves no conversion can clip or round (``HardwareSpec.adc_is_exact``)
the same integers come from :mod:`redy_jax.xbar.exact` instead; with ``prune`` (the
``faithful`` mode) so do they for the input vectors whose data proves it
(:func:`may_clip`, :func:`pruned_partial_sums`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.exact import F32_EXACT, HIGHEST, code_bound, exact_tile_sums
from redy_jax.xbar.weights import StoredWeights


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
    """ADC transfer on non-negative integer column sums (int32 in, int32 out).

    ``code = clip(floor(v / step + 1/2), 0, 2**adc_bits - 1)``, value ``code * step``:
    round half up, then saturate at full scale.
    """
    v = jnp.asarray(v, jnp.int32)
    if spec.adc_step != 1:
        v = (2 * v + spec.adc_step) // (2 * spec.adc_step)
    return jnp.minimum(v, spec.adc_max_code) * spec.adc_step


def plane_packing(spec: HardwareSpec, rows: int) -> tuple[int, int]:
    """``(bits, k)``: column sums of ``rows`` rows fit in ``bits`` bits, so ``k`` digit
    planes can share one float32 operand (``k * bits <= 24``) and one matmul computes
    ``k`` planes' column sums exactly."""
    max_sum = max(rows * spec.cell_max * spec.dac_max, rows * spec.dac_max)
    bits = max(1, int(max_sum).bit_length())
    return bits, max(1, min(spec.planes, (F32_EXACT.bit_length() - 1) // bits))


FAITHFUL_BUDGET_BYTES = 256 * 2**20
"""Largest intermediate of the faithful path per chunk of vectors (column sums of every
plane, slice and column); larger layers are processed in chunks with ``lax.map``."""


def faithful_partial_sums(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                          signed: bool, budget_bytes: int | None = None,
                          last_rows: int | None = None,
                          prune: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Bit-plane model of every crossbar read, in memory-bounded chunks of vectors.

    ``last_rows``: rows of the last row tile that hold weights (``Tiling.rows_used``);
    its padding rows (which hold no cells and stream zeros, as padding rows must) are
    then left out of the model: same sums, less work (a 16-channel 3x3 layer's second
    tile uses 18 of 126 rows). When so few rows that no conversion of that tile can
    clip or round (:meth:`~redy_jax.hw.spec.HardwareSpec.adc_is_exact` of its rows: 18,
    36 or 72 rows of ResNet-20's last tiles under ISAAC), its sums are the exact
    integer product (:func:`~redy_jax.xbar.exact.exact_tile_sums`), with no
    saturation: the same integers, for a fraction of the work (the bit-plane model
    costs as much per output for a short tile as for a full one). Same results as
    one unchunked evaluation (see ``_faithful``).

    ``prune``: leave out of the bit-plane model the vectors whose conversions the data
    proves cannot clip (:func:`pruned_partial_sums`); every tile when the spec proves it
    for its rows. The same integers and saturations: only the work differs."""
    v, t, r = x_tiles.shape
    x_max = code_bound(spec.act_bits, signed)
    if prune and spec.adc_is_exact(r):
        return (exact_tile_sums(x_tiles, w.codes, x_max, spec.weight_bits),
                jnp.zeros((v,), jnp.int32))
    if last_rows is not None and last_rows < r:
        part = lambda sl, rows: StoredWeights(
            codes=w.codes[sl, :rows], cells=w.cells[sl, :rows], flipped=w.flipped[sl],
            col_sum=w.col_sum)
        x_tail = x_tiles[:, t - 1:, :last_rows]
        if spec.adc_is_exact(last_rows):
            tail = (exact_tile_sums(x_tail, w.codes[t - 1:, :last_rows], x_max,
                                    spec.weight_bits),
                    jnp.zeros((v,), jnp.int32))
        else:
            tail = faithful_partial_sums(x_tail, part(slice(t - 1, t), last_rows), spec,
                                         signed, budget_bytes, prune=prune)
        if t == 1:
            return tail
        head = faithful_partial_sums(x_tiles[:, :t - 1], part(slice(0, t - 1), r), spec,
                                     signed, budget_bytes, prune=prune)
        return jnp.concatenate([head[0], tail[0]], axis=1), head[1] + tail[1]
    n = w.codes.shape[-1]
    per_vector = 4 * t * spec.planes * spec.slices * n * 3  # int32 sums + temporaries
    chunk = max(1, (budget_bytes or FAITHFUL_BUDGET_BYTES) // per_vector)
    model = ((lambda xc: pruned_partial_sums(xc, w, spec, signed)) if prune and
             spec.adc_step == 1 else (lambda xc: _faithful(xc, w, spec, signed)))
    if v <= chunk:
        return model(x_tiles)
    chunks = -(-v // chunk)
    xp = jnp.pad(x_tiles, ((0, chunks * chunk - v), (0, 0), (0, 0)))
    partial, sat = lax.map(model, xp.reshape(chunks, chunk, *x_tiles.shape[1:]))
    return (partial.reshape(chunks * chunk, t, n)[:v], sat.reshape(-1)[:v])


PRUNED_SHARES = (64, 8)
""":func:`pruned_partial_sums` gathers the vectors the data cannot prove exact and
models them on their own in a batch of ``1 / share`` of the chunk, the smallest of
these that holds them; a chunk with more goes through the bit-plane model whole."""


def may_clip(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
             signed: bool) -> jnp.ndarray:
    """bool (V,): vectors with a conversion the data cannot prove exact.

    Per vector, row tile and digit plane, ``sum_r digit_r * max(1, cellmax_r)`` bounds
    both every column's analog sum (``cellmax_r``: the row's largest stored cell over
    its columns and slices, after flipping) and the unit column's ``sum_r digit_r``; at
    ``adc_step == 1`` a vector whose bounds all stay within the ADC's full scale has
    no conversion that clips or rounds, so its partial sums are the exact integer
    products and it saturates nothing.

    The planes' bounds are summed side by side in fields of one uint32 word (each
    field wide enough for ``R * dac_max * cell_max``, so no field carries into the
    next): ~2x faster on XLA:CPU than a (V, T, R, P) array of digits."""
    r = x_tiles.shape[-1]
    width = int(r * spec.dac_max * max(spec.cell_max, 1)).bit_length()
    per_word = max(1, 32 // width)
    row_max = jnp.maximum(w.cells.max(axis=(2, 3)), 1).astype(jnp.uint32)  # (T, R)
    x = jnp.asarray(x_tiles, jnp.int32)
    if signed:
        x = x & ((1 << spec.act_bits) - 1)  # two's complement bit pattern
    x = x.astype(jnp.uint32)
    field = np.uint32((1 << width) - 1) if width < 32 else np.uint32(0xFFFFFFFF)
    bad = jnp.zeros(x.shape[:2], bool)
    for first in range(0, spec.planes, per_word):  # static: 3 words for 8 planes, 126 rows
        planes = range(first, min(spec.planes, first + per_word))
        packed = sum(((x >> (p * spec.dac_bits)) & spec.dac_max) << (i * width)
                     for i, p in enumerate(planes))
        sums = (packed * row_max).sum(axis=-1, dtype=jnp.uint32)  # (V, T)
        for i in range(len(planes)):
            bad = bad | (((sums >> (i * width)) & field) > spec.adc_full_scale)
    return bad.any(axis=1)


def pruned_partial_sums(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                        signed: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``_faithful``'s integers and saturations, with the bit-plane model only where the
    data needs it (``adc_step == 1``): vectors that :func:`may_clip` clears are summed
    exactly (they saturate nothing); the others are gathered into the smallest batch of
    :data:`PRUNED_SHARES` that holds them and modelled on their own, or, when there are
    more, the whole chunk is modelled.

    One branch runs per call (``lax.switch``); under ``vmap`` every branch would run, so
    vmapped callers (grouped convs) use the plain model."""
    v = x_tiles.shape[0]
    x_max = code_bound(spec.act_bits, signed)
    need = may_clip(x_tiles, w, spec, signed)
    count = need.sum()
    caps = sorted({max(1, v // share) for share in PRUNED_SHARES})
    exact = lambda: exact_tile_sums(x_tiles, w.codes, x_max, spec.weight_bits)
    zeros = jnp.zeros((v,), jnp.int32)

    def gathered(cap):
        def run(_):
            idx = jnp.nonzero(need, size=cap, fill_value=v)[0]  # fill: out of range
            part, sat = _faithful(x_tiles.at[idx].get(mode="fill", fill_value=0), w, spec,
                                  signed)
            return (exact().at[idx].set(part, mode="drop"),
                    zeros.at[idx].set(sat, mode="drop"))
        return run

    # branch 0: nothing to model; i: the i-th capacity holds them; last: all of them
    branch = (count > 0).astype(jnp.int32) + sum(
        (count > cap).astype(jnp.int32) for cap in caps)
    return lax.switch(branch, (lambda _: (exact(), zeros), *map(gathered, caps),
                               lambda _: _faithful(x_tiles, w, spec, signed)), None)

def _faithful(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
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

    Column sums of ``k`` digit planes are computed by one float32 matmul on packed
    digits ``sum_i digit_i << (i * bits)`` (exact: every packed sum is < 2**24); this is
    2-3x fewer multiply-adds than one matmul per plane and gives identical integers.
    The packed sums are unpacked, converted and weighted in float32 too (power-of-two
    scalings and floors of integers below 2**24 are exact; so is the weighted sum of
    the conversions while ``min(full scale, max column sum) * sum|plane weights| *
    sum|slice weights| < 2**24``, e.g. 5.5e6 for ISAAC; else it is summed in int32): on XLA:CPU
    this is ~4x faster than the same arithmetic in int32.
    """
    v, t, r = x_tiles.shape
    n, s_count = w.codes.shape[-1], spec.slices
    digits, pw = digit_planes(x_tiles, spec, signed)  # (V, T, R, P)
    bits, k = plane_packing(spec, r)
    groups = -(-spec.planes // k)
    pad = groups * k - spec.planes
    digits = jnp.pad(digits, ((0, 0), (0, 0), (0, 0), (0, pad))).reshape(v, t, r, groups, k)
    pw = jnp.pad(pw, (0, pad))
    packed = (digits << (jnp.arange(k, dtype=jnp.int32) * bits)).sum(-1)  # (V, T, R, G)
    xp = jnp.transpose(packed, (1, 0, 3, 2)).reshape(t, v * groups, r).astype(jnp.float32)
    cells = jnp.transpose(w.cells, (0, 1, 3, 2)).reshape(t, r, s_count * n)  # slice-major
    packed_sums = jnp.matmul(xp, cells, precision=HIGHEST)  # exact: packed sums < 2^24
    packed_sums = packed_sums.reshape(t, v, groups, 1, s_count, n)
    # field i of a packed sum: floor(sum / 2^(i*bits)) mod 2^bits, all exact in float32
    scale = (2.0 ** (bits * np.arange(k))).astype(np.float32).reshape(1, 1, 1, k, 1, 1)
    high = jnp.floor(packed_sums * (1 / scale))
    analog = high - np.float32(2.0 ** bits) * jnp.floor(high * np.float32(2.0 ** -bits))
    unit = jnp.transpose(digits.reshape(v, t, r, groups * k).sum(axis=2), (1, 0, 2))  # (T,V,P)
    fs = spec.adc_full_scale
    if spec.adc_step == 1:
        dig = jnp.minimum(analog, np.float32(fs))  # (T, V, G, k, S, N)
    else:
        dig = adc(analog.astype(jnp.int32), spec).astype(jnp.float32)
    dig_unit = adc(unit, spec)
    # Flipped columns store cmax - c, so sum d*(cmax - c) = cmax*U - A:
    #   sum_s 2^(cs) value_s = sum_s coef_s * A_s + U * g,
    #   coef_s = +-2^(cs) (minus when flipped), g = cmax * sum_s flipped_s * 2^(cs).
    slice_w = jnp.left_shift(1, jnp.arange(s_count, dtype=jnp.int32) * spec.cell_bits)
    flipped = jnp.transpose(w.flipped, (0, 2, 1))  # (T, S, N)
    coef = jnp.where(flipped, -slice_w[None, :, None], slice_w[None, :, None])
    g = spec.cell_max * (flipped * slice_w[None, :, None]).sum(axis=1)  # (T, N)
    weights = (pw.reshape(groups, k)[None, None, :, :, None, None]
               * coef[:, None, None, None])  # (T, 1, G, k, S, N)
    top = min(fs, r * spec.cell_max * spec.dac_max)  # largest converted column value
    bound = (top * sum(1 << (p * spec.dac_bits) for p in range(spec.planes))
             * sum(1 << (s * spec.cell_bits) for s in range(s_count)))  # of every |partial sum|
    acc = jnp.float32 if bound < F32_EXACT else jnp.int32
    # One variadic reduction gives the weighted sum and the saturation count in one pass.
    cols, sat_cols = lax.reduce(
        (dig.astype(acc) * weights.astype(acc), (analog > fs).astype(acc)),
        (np.zeros((), acc), np.zeros((), acc)),
        lambda a, b: (a[0] + b[0], a[1] + b[1]), (2, 3, 4))  # (T, V, N) each
    input_sum = (dig_unit * pw).sum(axis=-1)  # (T, V)
    # Every crossbar of a row tile converts its own unit column (as adc_conversions
    # counts it): a clipped unit sum is one saturation per crossbar.
    crossbars = -(-n // spec.outputs_per_xbar)
    saturated = (sat_cols.astype(jnp.int32).sum(axis=(0, 2))
                 + (unit > fs).sum(axis=(0, 2)) * crossbars)
    partial = (cols.astype(jnp.int32)
               + input_sum[..., None] * (g[:, None, :] - (1 << (spec.weight_bits - 1))))
    return jnp.transpose(partial, (1, 0, 2)).astype(jnp.int32), saturated.astype(jnp.int32)
