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
import numpy as np
from jax import lax

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
    return bits, max(1, min(spec.planes, 24 // bits))


FAITHFUL_BUDGET_BYTES = 256 * 2**20
"""Largest intermediate of the faithful path per chunk of vectors (column sums of every
plane, slice and column); larger layers are processed in chunks with ``lax.map``."""


def faithful_partial_sums(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                          signed: bool, budget_bytes: int | None = None,
                          last_rows: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Bit-plane model of every crossbar read, in memory-bounded chunks of vectors.

    ``last_rows``: rows of the last row tile that hold weights (``Tiling.rows_used``);
    its padding rows (which hold no cells and stream zeros, as padding rows must) are
    then left out of the model: same sums, less work (a 16-channel 3x3 layer's second
    tile uses 18 of 126 rows). Same results as one unchunked evaluation (see
    ``_faithful``)."""
    v, t, r = x_tiles.shape
    if last_rows is not None and last_rows < r:
        part = lambda sl, rows: StoredWeights(
            codes=w.codes[sl, :rows], cells=w.cells[sl, :rows], flipped=w.flipped[sl],
            col_sum=w.col_sum)
        tail = faithful_partial_sums(x_tiles[:, t - 1:, :last_rows], part(slice(t - 1, t),
                                     last_rows), spec, signed, budget_bytes)
        if t == 1:
            return tail
        head = faithful_partial_sums(x_tiles[:, :t - 1], part(slice(0, t - 1), r), spec,
                                     signed, budget_bytes)
        return jnp.concatenate([head[0], tail[0]], axis=1), head[1] + tail[1]
    n = w.codes.shape[-1]
    per_vector = 4 * t * spec.planes * spec.slices * n * 3  # int32 sums + temporaries
    chunk = max(1, (budget_bytes or FAITHFUL_BUDGET_BYTES) // per_vector)
    if v <= chunk:
        return _faithful(x_tiles, w, spec, signed)
    chunks = -(-v // chunk)
    xp = jnp.pad(x_tiles, ((0, chunks * chunk - v), (0, 0), (0, 0)))
    partial, sat = lax.map(lambda xc: _faithful(xc, w, spec, signed),
                           xp.reshape(chunks, chunk, *x_tiles.shape[1:]))
    return (partial.reshape(chunks * chunk, t, n)[:v], sat.reshape(-1)[:v])


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
    packed_sums = jnp.matmul(xp, cells).reshape(t, v, groups, 1, s_count, n)
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
    acc = jnp.float32 if bound < _F32_EXACT else jnp.int32
    # One variadic reduction gives the weighted sum and the saturation count in one pass.
    cols, sat_cols = lax.reduce(
        (dig.astype(acc) * weights.astype(acc), (analog > fs).astype(acc)),
        (np.zeros((), acc), np.zeros((), acc)),
        lambda a, b: (a[0] + b[0], a[1] + b[1]), (2, 3, 4))  # (T, V, N) each
    input_sum = (dig_unit * pw).sum(axis=-1)  # (T, V)
    saturated = sat_cols.astype(jnp.int32).sum(axis=(0, 2)) + (unit > fs).sum(axis=(0, 2))
    partial = (cols.astype(jnp.int32)
               + input_sum[..., None] * (g[:, None, :] - (1 << (spec.weight_bits - 1))))
    return jnp.transpose(partial, (1, 0, 2)).astype(jnp.int32), saturated.astype(jnp.int32)


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


def exact_outputs(x_tiles: jnp.ndarray, w: StoredWeights, spec: HardwareSpec,
                  signed: bool) -> jnp.ndarray:
    """Exact outputs (V, N) summed over all row tiles (no per-tile shifts).

    Consecutive row tiles are merged into one float32 matmul as long as every sum stays
    below 2**24 (for 8-bit operands and 128 rows: 4 tiles, K = 512 per matmul).
    """
    v, t, r = x_tiles.shape
    xmax = (1 << (spec.act_bits - 1)) if signed else (1 << spec.act_bits) - 1
    wmax = 1 << (spec.weight_bits - 1)
    per = max(1, min(t, (_F32_EXACT - 1) // (r * xmax * wmax)))
    if r * xmax * wmax >= _F32_EXACT:  # even one tile would not be exact
        return exact_partial_sums(x_tiles, w, spec, signed).sum(axis=1)
    chunks = -(-t // per)
    pad = chunks * per - t
    x = jnp.pad(x_tiles, ((0, 0), (0, pad), (0, 0))).reshape(v, chunks, per * r)
    wc = jnp.pad(w.codes, ((0, pad), (0, 0), (0, 0))).reshape(chunks, per * r, -1)
    if chunks == 1:
        return (x[:, 0].astype(jnp.float32) @ wc[0].astype(jnp.float32)).astype(jnp.int32)
    part = jnp.einsum("vcr,crn->vcn", x.astype(jnp.float32), wc.astype(jnp.float32))
    return part.astype(jnp.int32).sum(axis=1)


def exact_rows(x_max: int, weight_bits: int) -> int:
    """Most rows whose products with whole ``weight_bits`` weights float32 sums exactly
    (``rows * x_max * 2^(weight_bits-1) < 2^24``); 0 when not even one row."""
    return (_F32_EXACT - 1) // (x_max << (weight_bits - 1))


def even_blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` bounds of the fewest near-equal blocks of ``n`` items, each at most
    ``size`` (>= 1) long."""
    count = -(-n // size)
    return [(i * n // count, (i + 1) * n // count) for i in range(count)]


def exact_weight_parts(w: jnp.ndarray, rows: int, x_max: int, weight_bits: int) -> list:
    """Splits integer weights into parts ``w = sum_j p_j`` with ``p_j`` a multiple of
    ``2^e_j`` whose quotient is small enough that ``rows * x_max * |p_j / 2^e_j| < 2^24``:
    every partial sum of ``x . p_j`` is then a multiple of ``2^e_j`` below ``2^(24+e_j)``,
    exact in float32 whatever the summation order."""
    limit = 1 << 24
    bound = 1 << (weight_bits - 1)
    if rows * x_max * bound < limit:
        return [w]
    s = 1
    while rows * x_max * ((1 << (s + 1)) - 1) < limit:
        s += 1
    if rows * x_max * ((1 << s) - 1) >= limit:
        raise ValueError(f"a layer of {rows} rows with inputs up to {x_max} cannot be summed "
                         "exactly in float32 even one weight bit at a time")
    parts, shift = [], 0
    while rows * x_max * -(-bound // (1 << shift)) >= limit:
        lo = w & (((1 << s) - 1) << shift)  # weight bits [shift, shift + s)
        parts.append(lo)
        w = w - lo
        shift += s
    return parts + [w]


def exact_matmul(x: jnp.ndarray, w_codes: jnp.ndarray, spec: HardwareSpec,
                 signed: bool, headroom_bits: int = 0,
                 x_max: int | None = None) -> jnp.ndarray:
    """Exact int32 ``x (V, K) @ w (K, N)`` with float32 matmuls whose every partial sum
    stays exact: one matmul when ``K * max|x| * max|w|`` allows, else one per weight part
    of :func:`exact_weight_parts`, recombined in int32 (rows are also chunked in the
    unrealistic case that even one weight bit at a time is too wide for K).

    ``headroom_bits``: |x| may exceed the ``act_bits`` range by this many bits;
    ``x_max``: a tighter bound on |x| when the caller knows one (e.g. ReDy's effective
    codes ``(q' << t) + offset``)."""
    v, k = x.shape
    if x_max is None:
        xmax = (1 << (spec.act_bits - 1)) if signed else (1 << spec.act_bits) - 1
        xmax = (xmax + 1) << headroom_bits
    else:
        xmax = x_max
    xf = x.astype(jnp.float32)
    w = jnp.asarray(w_codes, jnp.int32)
    per = min(k, max(1, (_F32_EXACT - 1) // xmax))  # rows one weight bit at a time allows
    chunks = -(-k // per)
    if chunks > 1:
        xc = jnp.pad(xf, ((0, 0), (0, chunks * per - k))).reshape(v, chunks, per)
    out = 0
    for part in exact_weight_parts(w, per, xmax, spec.weight_bits):
        part = part.astype(jnp.float32)
        if chunks == 1:
            out = out + (xf @ part).astype(jnp.int32)
        else:
            pc = jnp.pad(part, ((0, chunks * per - k), (0, 0))).reshape(chunks, per, -1)
            out = out + jnp.einsum("vcr,crn->vcn", xc, pc).astype(jnp.int32).sum(axis=1)
    return out
