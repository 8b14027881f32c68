"""Exact-ADC convolution of a plan that requantises every window differently.

With ``window`` granularity every input vector requantises its row tiles with its own
offset / shift / bits, so the product needs the lowered input. It is built tap-major,
per chunk of images (or of output rows when one image does not fit the chunk budget,
:mod:`redy_jax.xbar.chunks`): each kernel tap's strided view of the input is
requantised with the plan of the windows reading it (each channel takes its row tile's
constants), the taps are concatenated and one matrix product with the tap-major
weights gives the int32 outputs. Row order inside a tile does not change a tile's sum,
so this equals the channel-major crossbar rows; without channel padding or an
interleaving transpose it is ~5-10x faster on XLA:CPU than lowering channel-major
tiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from redy_jax.xbar.chunks import map_image_chunks, map_row_blocks, per_chunk
from redy_jax.xbar.conv import ConvShape
from redy_jax.xbar.exact import code_bound, even_blocks, exact_matmul, exact_rows
from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.lowering import tap_slices, tile_pieces
from redy_jax.xbar.plan import Plan, affine, effective_values


def window_conv(xs: jnp.ndarray, plan: Plan, w_codes, tiling: Tiling, shape: ConvShape,
                zero_point: int, sign_bit: bool, act_bits: int,
                weight_bits: int) -> jnp.ndarray:
    """Outputs (B, Ho, Wo, Cout) int32. ``xs``: spatially padded streamed codes
    (B, Hp, Wp, G * Cin_g); plan leaves (G, B * m, T). Float32 sums stay exact per block
    of taps (see ``blocks``); a channel wider than one block is split further by
    :func:`~redy_jax.xbar.exact.exact_matmul`."""
    b = xs.shape[0]
    (kh, kw), cin_g, cout, groups = shape.kernel, shape.cin_g, shape.cout, shape.groups
    out_hw, taps, n = shape.out_hw, shape.taps, shape.cout // shape.groups
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // taps
    # (K, Cout) channel-major rows -> per group (taps * Cin_g, n), tap-major rows.
    wt = jnp.transpose(w_codes.reshape(cin_g, taps, groups, n), (2, 1, 0, 3))
    wt = wt.reshape(groups, taps * cin_g, n)
    x_max = code_bound(act_bits, sign_bit, True)
    # Blocks of taps whose products float32 sums exactly with whole weights (one matmul
    # each, int32 sum of the blocks): cheaper than splitting the weights (one matmul per
    # weight part over all rows) when K * x_max * 2^(b-1) >= 2^24 (e.g. 64 channels).
    blocks = even_blocks(taps, max(1, exact_rows(x_max, weight_bits) // cin_g))
    offsets = jnp.zeros_like(plan.shifts) if plan.offsets is None else plan.offsets
    aff = affine(offsets, plan.shifts, plan.bits, sign_bit)
    # (G, B * m, T) -> (B, Ho, Wo, G, T): sliced with the input, by image or by row block
    aff = tuple(jnp.moveaxis(a.reshape(groups, b, *out_hw, t), 0, 3) for a in aff)

    def chunk_fn(args):
        """Images (c, rows_in, Wp, C) with their windows' constants (c, R, Wo, G, T) ->
        y_int (c, R, Wo, Cout): R output rows of each image."""
        xc, *prm = args
        c, r, wo = prm[0].shape[:3]
        v = c * r * wo
        prm = tuple(a.reshape(v, groups, t) for a in prm)  # (V, G, T)

        def eff_of(a):
            """One tap's view (c, R, Wo, G * Cin_g) -> float32 values (V, G, Cin_g) in
            tile pieces (:func:`~redy_jax.xbar.lowering.tile_pieces`), each broadcasting
            its tiles' constants (no per-channel copy of them)."""
            pieces = [effective_values(x, tuple(p[..., tiles, None] for p in prm))
                      .reshape(v, groups, -1)
                      for x, tiles in tile_pieces(a.reshape(v, groups, cin_g), cin_g, ct)]
            return [e if sign_bit else e - zero_point for e in pieces]  # centred

        effs = [eff_of(a) for a in tap_slices(xc, (kh, kw), shape.strides, shape.dilation)]
        mm = lambda p, w: exact_matmul(p, w, x_max, weight_bits)
        y = 0
        for lo, hi in blocks:  # (V, G, taps_b * Cin_g) tap-major patches of a block of taps
            patches = jnp.concatenate([e for tap in effs[lo:hi] for e in tap], axis=-1)
            rows = (hi - lo) * cin_g
            wb = wt[:, lo * cin_g:hi * cin_g]
            if groups == 1:
                yb = mm(patches.reshape(v, rows), wb[0])[:, None]
            else:
                yb = jax.vmap(mm, out_axes=1)(jnp.moveaxis(patches, 1, 0), wb)
            y = y + yb  # (V, G, n) int32
        return y.reshape(c, r, wo, cout), None, None

    row_bytes = out_hw[1] * taps * groups * cin_g * 4  # lowered float32 input per row
    rows = per_chunk(out_hw[0], row_bytes)
    if rows >= out_hw[0]:  # whole images per chunk
        chunk = per_chunk(b, out_hw[0] * row_bytes)
        return map_image_chunks(chunk_fn, (xs, *aff), chunk, pad=True)[0]
    return map_row_blocks(chunk_fn, xs, aff, rows, out_hw[0],
                          (kh - 1) * shape.dilation[0] + 1, shape.strides[0])


__all__ = ["window_conv"]
