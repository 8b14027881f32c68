"""Exact-ADC convolution of a plan that requantises every window differently.

With ``window`` granularity every input vector requantises its row tiles with its own
offset / shift / bits, so the product needs the lowered input. It is built per chunk
of images (or of output rows when one image does not fit the chunk budget,
:mod:`redy_jax.xbar.chunks`) and per run of row tiles (:func:`~redy_jax.xbar.lowering.
tile_runs`: the fewest runs that one exact product each can sum, at most
:data:`RUN_TILES` tiles). A run's pieces (its whole tiles, then a partial last tile)
have the kernel taps' strided views stacked next to the channels, so each row tile's
rows are one contiguous run of its taps x channels, and sit side by side in one
operand ``(V, rows)``; one elementwise pass requantises every row with its tile's
constants (selected by the row's position) and one matrix product with the run's
weight rows (same order) gives the int32 outputs. One operand per run, not per piece,
halves the time of ResNet-20's 14x14x32 layers (a product of 36 rows for a partial tile
cost as much as one of 252). The views are sliced and stacked in the codes' narrowest
integer dtype (:func:`~redy_jax.xbar.exact.code_dtype`: 1 byte for 8-bit codes) and
converted in the requantising pass: the stacking is bound by memory traffic
(ResNet-20's 28x28x16 layer, 250 images: 17.8 ms instead of 29.6 ms lowered in
float32). That pass is integer (add, mask, clip:
:func:`~redy_jax.xbar.plan.effective_values`) and writes the product's operand:
bfloat16 where every value fits its 8-bit significand and the backend multiplies it
natively (:func:`~redy_jax.xbar.exact.product_dtype`), else float32. Row order inside
a tile does not change a tile's sum, so this equals the channel-major crossbar rows,
without channel padding or an element-interleaving transpose (~5-10x faster on XLA:CPU
than lowering channel-major tiles).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from redy_jax.xbar.chunks import WINDOW_CHUNK_BYTES, map_image_chunks, map_row_blocks, per_chunk
from redy_jax.xbar.conv import ConvShape
from redy_jax.xbar.exact import (
    code_bound,
    code_dtype,
    exact_matmul,
    exact_rows,
    product_dtype,
)
from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.lowering import tap_major_pieces, tap_major_rows, tile_piece_ranges, tile_runs
from redy_jax.xbar.plan import Plan, effective_values, requant_constants

RUN_TILES = 4
"""Most row tiles per product: a run's values select their tile's constants by position,
``tiles - 1`` selects per value (8-bit codes fit 4 tiles of 126 rows in one exact
product anyway)."""


def window_conv(xs: jnp.ndarray, plan: Plan, w_codes, tiling: Tiling, shape: ConvShape,
                zero_point: int, sign_bit: bool, act_bits: int,
                weight_bits: int) -> jnp.ndarray:
    """Outputs (B, Ho, Wo, Cout) int32. ``xs``: spatially padded streamed codes
    (B, Hp, Wp, G * Cin_g); plan leaves (G, B * m, T). Float32 sums stay exact: whole
    tiles run in runs of at most :func:`~redy_jax.xbar.exact.exact_rows` rows, and
    :func:`~redy_jax.xbar.exact.exact_matmul` splits a piece's rows into blocks (or its
    weights into parts) where even one tile's would not fit."""
    b = xs.shape[0]
    (kh, kw), cin_g, cout, groups = shape.kernel, shape.cin_g, shape.cout, shape.groups
    out_hw, taps, n = shape.out_hw, shape.taps, shape.cout // shape.groups
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // taps
    x_max = code_bound(act_bits, sign_bit, True)
    aff = requant_constants(plan.offsets, plan.shifts, plan.bits, sign_bit)
    # Requantised values q' * 2^t (q' of at most act_bits bits) without offsets or a
    # zero point to subtract have at most act_bits significant bits (bfloat16 holds 8).
    # A zero point is static 0 unless the layer is signed, where it may be traced.
    no_zero_point = sign_bit or (isinstance(zero_point, int) and zero_point == 0)
    plain = plan.offsets is None and no_zero_point
    operand = product_dtype(act_bits if plain else None, weight_bits)
    # lowered in the narrowest dtype of the codes (1 byte for 8-bit codes: the stacked
    # taps are memory-bound), requantised into the operand dtype
    xs = xs.astype(code_dtype(act_bits, sign_bit))
    # (G, B * m, T) -> (B, Ho, Wo, G, T): sliced with the input, by image or by row block
    aff = tuple(jnp.moveaxis(a.reshape(groups, b, *out_hw, t), 0, 3) for a in aff)
    # Rows in (tile, tap, channel) order, the order of the lowered patches.
    w_rows = w_codes[tap_major_rows(cin_g, taps, ct)].reshape(-1, groups, n)

    # Runs of row tiles short enough for one exact product each (RUN_TILES at most),
    # each run one operand: its pieces' lowered patches side by side.
    limit = exact_rows(x_max, weight_bits)
    runs = [tile_piece_ranges(cin_g, ct, tiles=r)
            for r in tile_runs(cin_g, ct, taps, limit, RUN_TILES)]

    def run_weights(pieces):  # (G, rows of the run, n)
        first = pieces[0][0] * ct * taps
        rows = sum((hi - lo) * width * taps for lo, hi, width in pieces)
        return jnp.transpose(w_rows[first:first + rows], (1, 0, 2))

    w_runs = [run_weights(r) for r in runs]

    def chunk_fn(args):
        """Images (c, rows_in, Wp, C) with their windows' constants (c, R, Wo, G, T) ->
        y_int (c, R, Wo, Cout): R output rows of each image. Per run of row tiles, the
        kernel taps' views of its pieces are stacked next to the channels, each tile's
        rows one contiguous run of its taps x channels, requantised with the tile's
        constants in one elementwise pass, then one exact product with the run's weight
        rows."""
        xc, *prm = args
        c, r, wo = prm[0].shape[:3]
        v = c * r * wo
        # (V, G, T), computed once: XLA would otherwise fuse the constants' arithmetic
        # (shifts of the plan) into the requantising pass, once per value, not per group
        prm = jax.lax.optimization_barrier(tuple(a.reshape(v, groups, t) for a in prm))
        mm = lambda a, w: exact_matmul(a, w, x_max, weight_bits, operand)
        y = 0
        for pieces, wr in zip(runs, w_runs, strict=True):
            x = [p.reshape(v, groups, -1) for _, p in
                 tap_major_pieces(xc, cin_g, ct, (kh, kw), shape.strides, shape.dilation,
                                  pieces)]
            x = x[0] if len(x) == 1 else jnp.concatenate(x, axis=-1)  # (V, G, rows)
            tiles = [(k, (k - pieces[0][0]) * ct * taps, width * taps)
                     for lo, hi, width in pieces for k in range(lo, hi)]
            eff = effective_values(x, tuple(_per_row(p, tiles) for p in prm))
            eff = eff if sign_bit else eff - zero_point  # centred
            eff = eff.astype(operand)  # in the requantising pass (exact: see operand)
            if groups == 1:
                y = y + mm(eff[:, 0], wr[0])[:, None]
            else:
                y = y + jax.vmap(mm, in_axes=(1, 0), out_axes=1)(eff, wr)  # (V, G, n)
        return y.reshape(c, r, wo, cout), None, None

    row_bytes = out_hw[1] * taps * groups * cin_g * 4  # lowered float32 input per row
    rows = per_chunk(out_hw[0], row_bytes, WINDOW_CHUNK_BYTES)
    if rows >= out_hw[0]:  # whole images per chunk
        chunk = per_chunk(b, out_hw[0] * row_bytes, WINDOW_CHUNK_BYTES)
        return map_image_chunks(chunk_fn, (xs, *aff), chunk, pad=True)[0]
    return map_row_blocks(chunk_fn, xs, aff, rows, out_hw[0],
                          (kh - 1) * shape.dilation[0] + 1, shape.strides[0])


def _per_row(p, tiles):
    """A tile's constant (V, G, T) as one per row of a run of ``tiles`` ``(tile, first
    row, rows)``: broadcast for one tile, else selected by the row's position."""
    if len(tiles) == 1:
        return p[..., tiles[0][0], None]
    row = jnp.arange(sum(n for _, _, n in tiles))
    out = p[..., tiles[-1][0], None]
    for k, first, n in tiles[-2::-1]:
        out = jnp.where(row < first + n, p[..., k, None], out)
    return out


__all__ = ["RUN_TILES", "window_conv"]
