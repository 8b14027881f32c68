"""The float32 exactness rule, and every split that keeps integer products exact.

float32 represents every integer below 2**24 exactly, so a matrix product or a
convolution of integer-valued float32 operands is exact — whatever order the backend
sums in — as long as every partial sum stays below 2**24 in magnitude. The fast
paths of the simulator compute the crossbars' integer results this way; this module
owns that rule and the ways of splitting an operation to stay inside it:

* blocks of rows (input channels for a convolution) small enough that whole weights
  fit (:func:`exact_rows`, :func:`even_blocks`): same multiply-adds as one product,
  blocks summed in int32;
* weight parts (:func:`exact_weight_parts`) when not even one row (channel) of whole
  weights fits.

Every product here runs at ``precision=HIGHEST``: at default precision some backends
(NVIDIA GPUs since Ampere) multiply float32 in TF32, whose 10-bit mantissa would round
the operands and break the argument above. Operands whose every value is an integer of
at most 8 significant bits (8-bit codes and weights, requantised codes ``q' 2^t``) are
exact in bfloat16 too; where the CPU multiplies bfloat16 natively, those products run
in it with float32 sums (:func:`product_dtype`): the same integers, the same rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

F32_EXACT = 1 << 24
"""Integers of magnitude below this are exact in float32."""

HIGHEST = lax.Precision.HIGHEST
"""The precision of every product on an exactness path (no TF32/bf16 passes)."""


def code_bound(act_bits: int, sign_bit: bool, requantized: bool = False) -> int:
    """Bound on |x| of the integer values a layer multiplies with its weights.

    Unsigned ``act_bits`` codes (or zero-point-centred ones): ``2**act_bits - 1``;
    two's complement (sign-bit streaming): ``2**(act_bits-1)``. Requantised groups
    (ReDy) multiply ``(q' << t) + offset``, which rounding (half up, ``t <= act_bits -
    1``) can push up to ``2**(act_bits-2)`` further."""
    bound = (1 << (act_bits - 1)) if sign_bit else (1 << act_bits) - 1
    return bound + (1 << (act_bits - 2)) if requantized else bound


def code_dtype(act_bits: int, sign_bit: bool):
    """The narrowest integer dtype that holds every streamed code of ``act_bits``-bit
    codes: unsigned ones (and zero-point codes) in ``[0, 2^act_bits)``, two's-complement
    ones (sign-bit streaming) in ``[-2^(act_bits-1), 2^(act_bits-1))``. Window ReDy
    lowers (stacks the taps of) its codes in it instead of float32: 1 byte per element
    instead of 4 for 8-bit codes. (Padding in it too was measured and gave nothing.)"""
    if sign_bit:
        return jnp.int8 if act_bits <= 8 else jnp.int16
    return jnp.uint8 if act_bits <= 8 else jnp.uint16


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU multiplies bfloat16 natively (x86 ``avx512_bf16`` or
    ``amx_bf16`` in Linux's ``/proc/cpuinfo`` flags); False when it cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


BF16_PRODUCTS: dict[str, bool] = {"cpu": native_bf16_cpu()}
"""Per backend, whether exact products whose operands all fit bfloat16 run in it
(:func:`product_dtype`). On CPU only where bfloat16 is native: there XLA's bfloat16
matrix product with float32 sums took 0.35-0.5x the time of the float32 one on
window ReDy's products (AMD EPYC with avx512_bf16; ResNet-20 shapes, 250 images),
and half the bytes of the requantised operand are written and read. Not on GPUs:
their bfloat16 products are not checked exact here (float32 at HIGHEST stays).
Results do not depend on it: every value is exact in either dtype."""


def product_dtype(significant_bits: int | None, weight_bits: int):
    """The dtype exact products run in on the current backend: bfloat16 when
    :data:`BF16_PRODUCTS` allows it and both operands' values are exact in it — every
    input value an integer of at most ``significant_bits`` <= 8 significant bits (None:
    no such bound) and every weight of ``weight_bits`` <= 8 bits (|w| <= 128) — else
    float32. bfloat16's 8-bit significand holds every such integer; each product of
    two is exact in float32, and sums follow the float32 rule of :func:`exact_rows`."""
    if (BF16_PRODUCTS.get(jax.default_backend()) and significant_bits is not None
            and significant_bits <= 8 and weight_bits <= 8):
        return jnp.bfloat16
    return jnp.float32


def exact_rows(x_max: int, weight_bits: int) -> int:
    """Most rows whose products with whole ``weight_bits`` weights float32 sums exactly
    (``rows * x_max * 2^(weight_bits-1) < 2^24``); 0 when not even one row."""
    return (F32_EXACT - 1) // (x_max << (weight_bits - 1))


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
    bound = 1 << (weight_bits - 1)
    if rows * x_max * bound < F32_EXACT:
        return [w]
    s = 1
    while rows * x_max * ((1 << (s + 1)) - 1) < F32_EXACT:
        s += 1
    if rows * x_max * ((1 << s) - 1) >= F32_EXACT:
        raise ValueError(f"a layer of {rows} rows with inputs up to {x_max} cannot be summed "
                         "exactly in float32 even one weight bit at a time")
    parts, shift = [], 0
    while rows * x_max * -(-bound // (1 << shift)) >= F32_EXACT:
        lo = w & (((1 << s) - 1) << shift)  # weight bits [shift, shift + s)
        parts.append(lo)
        w = w - lo
        shift += s
    return parts + [w]


def _row_blocks(k: int, x_max: int, w, weight_bits: int):
    """``(parts, blocks)``: weight parts and ``[lo, hi)`` row blocks such that every
    product ``x[blocks] @ part[blocks]`` is exact in float32 (see the module docstring)."""
    rows = exact_rows(x_max, weight_bits)
    if rows >= 1:
        return [w], even_blocks(k, rows)
    if x_max >= F32_EXACT:
        raise ValueError(f"inputs up to {x_max} cannot be multiplied exactly in float32")
    per = min(k, (F32_EXACT - 1) // x_max)  # rows that one weight bit at a time allows
    return exact_weight_parts(w, per, x_max, weight_bits), even_blocks(k, per)


def exact_matmul(x: jnp.ndarray, w: jnp.ndarray, x_max: int, weight_bits: int,
                 operand=jnp.float32) -> jnp.ndarray:
    """Exact int32 ``x (..., K) @ w (K, N)`` of integer values (|x| <= ``x_max``,
    signed ``weight_bits`` weights) with float32 sums: one product when all K rows
    fit, else blocks of :func:`exact_rows` rows summed in int32, else (not even one row
    of whole weights fits) weight parts of :func:`exact_weight_parts` over row blocks.
    ``operand``: the dtype both operands are multiplied in, float32 or, where every
    value of both is exact in it (:func:`product_dtype`), bfloat16 (products summed in
    float32 all the same: the same exactness rule)."""
    xf = x.astype(operand)
    parts, blocks = _row_blocks(x.shape[-1], x_max, jnp.asarray(w, jnp.int32), weight_bits)
    mm = lambda a, b: jnp.matmul(a, b.astype(operand), precision=HIGHEST,
                                 preferred_element_type=jnp.float32).astype(jnp.int32)
    return sum(mm(xf[..., lo:hi], p[lo:hi]) for p in parts for lo, hi in blocks)


def exact_tile_sums(x_tiles: jnp.ndarray, codes: jnp.ndarray, x_max: int,
                    weight_bits: int) -> jnp.ndarray:
    """Exact int32 partial sums (V, T, N) of every row tile: ``x_tiles`` (V, T, R) with
    the signed weight codes (T, R, N) of the same tiles, all tiles in one product per
    block of rows (the program does not grow with T)."""
    xf = x_tiles.astype(jnp.float32)
    parts, blocks = _row_blocks(x_tiles.shape[-1], x_max, jnp.asarray(codes, jnp.int32),
                                weight_bits)
    mm = lambda a, b: jnp.einsum("vtr,trn->vtn", a, b.astype(jnp.float32),
                                 precision=HIGHEST).astype(jnp.int32)
    return sum(mm(xf[..., lo:hi], p[:, lo:hi]) for p in parts for lo, hi in blocks)


def exact_conv(x: jnp.ndarray, w_hwio: jnp.ndarray, strides, padding, dilation, groups: int,
               x_max: int, weight_bits: int) -> jnp.ndarray:
    """Exact int32 NHWC convolution of integer values ``x`` (|x| <= ``x_max``) with
    integer HWIO weights, by XLA's convolution on float32 operands: over blocks of
    input channels small enough that float32 sums them exactly with whole weights
    (int32 sum of the blocks: cheaper than a weight split, which repeats the whole
    convolution per part), else per weight part (:func:`exact_weight_parts`)."""
    kh, kw, cin_g, _ = w_hwio.shape
    xf = x.astype(jnp.float32)
    conv = lambda a, k: lax.conv_general_dilated(
        a, k.astype(jnp.float32), strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=HIGHEST).astype(jnp.int32)
    per_ch = exact_rows(x_max, weight_bits) // (kh * kw)
    if per_ch >= 1:
        blocks = even_blocks(cin_g, per_ch)
        if len(blocks) == 1:
            return conv(xf, w_hwio)
        xg = xf.reshape(*xf.shape[:-1], groups, cin_g)
        y = 0
        for lo, hi in blocks:
            xb = xg[..., lo:hi].reshape(*xf.shape[:-1], groups * (hi - lo))
            y = y + conv(xb, w_hwio[:, :, lo:hi])
        return y
    y = 0
    for part in exact_weight_parts(jnp.asarray(w_hwio, jnp.int32), kh * kw * cin_g, x_max,
                                   weight_bits):
        y = y + conv(xf, part)
    return y



__all__ = ["BF16_PRODUCTS", "F32_EXACT", "HIGHEST", "code_bound", "code_dtype", "even_blocks",
           "exact_conv", "exact_matmul", "exact_rows", "exact_tile_sums", "exact_weight_parts",
           "native_bf16_cpu", "product_dtype"]
