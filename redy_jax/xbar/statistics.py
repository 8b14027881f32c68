"""Window-level group statistics (:class:`~redy_jax.xbar.plan.GroupSums`).

A group is the set of codes driving one crossbar row tile for one input vector. For a
dense layer the tiles are the input vector split in row tiles; for a convolution the
engine never lowers the input to compute them: per pixel, it reduces each row tile's
channels, then pools those per-pixel sums over the kernel window.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.lowering import tap_slices, tile_pieces
from redy_jax.xbar.plan import GroupSums

NONFINITE_CODE = -(2**30)
"""The code a NaN/inf activation is given where a policy reads statistics: no code of
at most 16 bits comes near it, so the smallest code of a layer's input (a by-product of
its statistics) says whether the input was finite, without another pass over it."""


def nonfinite(lowest) -> jnp.ndarray:
    """Whether the smallest code of a layer's input is :data:`NONFINITE_CODE`'s mark."""
    return lowest < NONFINITE_CODE // 2


def tile_sums(x: jnp.ndarray, tiling: Tiling) -> GroupSums:
    """:class:`GroupSums` of tiled codes (V, T, R) (padding rows excluded)."""
    rows_used = jnp.asarray(tiling.rows_used, jnp.int32)
    valid = jnp.arange(x.shape[2])[None, :] < rows_used[:, None]  # (T, R)
    xf = x.astype(jnp.float32)
    big = jnp.float32(2 ** 30)
    return GroupSums(s1=jnp.where(valid, xf, 0).sum(-1), s2=jnp.where(valid, xf * xf, 0).sum(-1),
                     max=jnp.where(valid, xf, -big).max(-1), min=jnp.where(valid, xf, big).min(-1))


def channel_stats(a: jnp.ndarray):
    """``(sum, sum of squares, max, min)`` of ``a`` over its last axis, in one pass."""
    if jnp.issubdtype(a.dtype, jnp.integer):
        info = jnp.iinfo(a.dtype)
        lo, hi = info.min, info.max
    else:
        lo, hi = -jnp.inf, jnp.inf
    init = tuple(jnp.asarray(v, a.dtype) for v in (0, 0, lo, hi))
    return lax.reduce((a, a * a, a, a), init,
                      lambda p, q: (p[0] + q[0], p[1] + q[1], jnp.maximum(p[2], q[2]),
                                    jnp.minimum(p[3], q[3])), (a.ndim - 1,))


def conv_sums(x, tiling: Tiling, groups: int, cin_g: int, kernel, strides, dilation,
              act_bits: int, pads=None, pad_code=0) -> tuple[GroupSums, jnp.ndarray]:
    """Window-level :class:`GroupSums` of a convolution, without im2col: per pixel, the
    sums / max / min over each row tile's channels, then pooled over the kernel window.

    ``x``: (B, Hp, Wp, G * Cin_g) spatially padded streamed codes (|code| <
    2^act_bits); or, with ``pads`` (``((top, bottom), (left, right))``), the unpadded
    codes, whose per-pixel statistics are padded instead with those of a pixel of
    ``pad_code`` (no padded copy of the codes, for products that do not read one).
    Returns each field as (G, B * Ho * Wo, T), float32, and the smallest code of any
    pixel (int32 or float32 scalar: :data:`NONFINITE_CODE` marks NaN/inf inputs)."""
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // tiling.taps
    # int32 while a group's sum of squares fits (exact, and ~1.2-2x faster on XLA:CPU
    # than float32), else float32
    small = tiling.rows_per_tile * (1 << (2 * act_bits)) < 2**31
    dtype = jnp.int32 if small else jnp.float32
    xf = x.astype(dtype).reshape(*x.shape[:3], groups, cin_g)
    # Tile pieces (no channel padding: reducing a padded (..., T, ct) reshape was ~8x
    # slower on XLA:CPU; no per-tile slices: a trace that grew with T, also ~1-2x slower).
    # One variadic reduction per piece: sum, sum of squares, max and min in a single pass
    # over the codes (~2x faster on XLA:CPU than four reductions).
    parts = []
    for a, _ in tile_pieces(xf, cin_g, ct):  # a: (B, H, W, G, tiles, width)
        stats = channel_stats(a)
        width = a.shape[-1]
        if pads is not None:
            # Kept a reduction of its own: XLA would otherwise fuse it, scalar per output
            # element, into the padding and concatenation below (LZS on ResNet-20, 250
            # images: 1.88x -> 1.78x the float pass).
            stats = lax.optimization_barrier(stats)
            c = jnp.asarray(pad_code, dtype)  # a padding pixel: `width` codes of pad_code
            spatial = ((0, 0), *pads, (0, 0), (0, 0))
            stats = tuple(jnp.pad(f, spatial, constant_values=v)
                          for f, v in zip(stats, (width * c, width * c * c, c, c), strict=True))
        parts.append(stats)
    s1, s2, mx, mn = (p[0] if len(parts) == 1 else jnp.concatenate(p, axis=-1)
                      for p in zip(*parts, strict=True))  # each (B, Hp, Wp, G, T)
    b, hp, wp = s1.shape[:3]

    def pool(a, op):
        """Reduces (B, Hp, Wp, G, T) over each kernel window with ``op``: one strided
        view per kernel tap (static unroll; XLA fuses it into one loop, far faster on
        CPU than ``lax.reduce_window``)."""
        views = tap_slices(a.reshape(b, hp, wp, groups * t), kernel, strides, dilation)
        out = views[0]
        for v in views[1:]:
            out = op(out, v)
        return out.reshape(*out.shape[:3], groups, t)

    fields = (pool(s1, lax.add), pool(s2, lax.add), pool(mx, lax.max), pool(mn, lax.min))
    per_group = lambda a: jnp.transpose(a, (3, 0, 1, 2, 4)).reshape(groups, -1, t)
    return GroupSums(*(per_group(a).astype(jnp.float32) for a in fields)), jnp.min(mn)


__all__ = ["NONFINITE_CODE", "channel_stats", "conv_sums", "nonfinite", "tile_sums"]
