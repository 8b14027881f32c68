"""Lowering of convolutions to crossbar matrix products: kernel-tap views, im2col,
row-tile pieces of channels, output geometry. Pure data movement, no arithmetic."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax


def conv_geometry(in_hw, kernel, strides, padding, dilation=(1, 1)):
    """``(pads, out_hw)``: explicit ``((top, bottom), (left, right))`` padding and the
    output height and width of a 2-D convolution (``padding``: 'SAME', 'VALID' or
    explicit pairs)."""
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    if isinstance(padding, str):
        pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, eff, strides, padding))
    else:
        pads = tuple(tuple(int(v) for v in p) for p in padding)
    out_hw = tuple((in_hw[i] + sum(pads[i]) - eff[i]) // strides[i] + 1 for i in range(2))
    return pads, out_hw


def tap_slices(xp, kernel, strides, dilation=(1, 1)) -> list:
    """The ``kh * kw`` strided views of an already padded NHWC ``xp`` that a VALID
    convolution reads, one per kernel tap in (row, column) order, each
    (B, Ho, Wo, C): tap (i, j) of output pixel (r, c) is ``xp[:, r * sh + i * dh,
    c * sw + j * dw]``."""
    kh, kw = kernel
    ho = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    wo = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    taps = []
    for i in range(kh):  # static unroll over kernel taps
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            taps.append(lax.slice(
                xp, (0, r0, c0, 0),
                (xp.shape[0], r0 + (ho - 1) * strides[0] + 1, c0 + (wo - 1) * strides[1] + 1,
                 xp.shape[3]), (1, strides[0], strides[1], 1)))
    return taps


def im2col(x, kernel, strides, padding, dilation=(1, 1), pad_value=0):
    """Patches of NHWC ``x`` -> (B, Ho, Wo, C * kh * kw), channel-major (channel slowest,
    kernel tap fastest), by strided slicing.

    ``pad_value`` fills the padding: the code of a real zero (the zero point).
    """
    pads, _ = conv_geometry(x.shape[1:3], kernel, strides, padding, dilation)
    (pt, pb), (pl, pr) = pads
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    taps = tap_slices(xp, kernel, strides, dilation)
    return jnp.stack(taps, axis=-1).reshape(*taps[0].shape[:3], -1)


def tile_piece_ranges(cin: int, ct: int,
                      tiles: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
    """``(first tile, end tile, width)`` of the pieces that ``cin`` channels split into
    with ``ct`` channels per row tile: the channels of the whole row tiles (width
    ``ct``, one piece), then those of a partial last tile (one tile). Piece ``(lo, hi,
    width)`` holds channels ``[lo * ct, lo * ct + (hi - lo) * width)``; the pieces list
    the tiles in order. ``tiles``: only the tiles ``[first, end)``."""
    full = cin // ct
    first, end = tiles if tiles is not None else (0, -(-cin // ct))
    pieces = [(first, min(end, full), ct)] if min(end, full) > first else []
    if cin > full * ct and end > full:
        pieces.append((full, full + 1, cin - full * ct))
    return pieces


def tile_runs(cin: int, ct: int, taps: int, max_rows: int,
              max_tiles: int | None = None) -> list[tuple[int, int]]:
    """``[first, end)`` tile bounds of the fewest contiguous runs of row tiles with at most
    ``max_rows`` rows (``taps * ct`` rows per whole tile, fewer in a partial last one)
    and at most ``max_tiles`` tiles each, the largest run as small as the fewest runs
    allow. Every tile alone when not even one whole tile fits in ``max_rows``."""
    sizes = [taps * min(ct, cin - k * ct) for k in range(-(-cin // ct))]
    most = max_tiles or len(sizes)

    def greedy(cap):
        runs, lo, rows = [], 0, 0
        for k, s in enumerate(sizes):
            if k > lo and (rows + s > cap or k - lo == most):
                runs.append((lo, k))
                lo, rows = k, 0
            rows += s
        return runs + [(lo, len(sizes))]

    if max(sizes) > max_rows:
        return [(k, k + 1) for k in range(len(sizes))]
    fewest = len(greedy(max_rows))
    caps = sorted(c for c in {sum(sizes[i:j]) for i in range(len(sizes))
                              for j in range(i + 1, min(i + most, len(sizes)) + 1)}
                  if max(sizes) <= c <= max_rows)
    return greedy(next(c for c in caps if len(greedy(c)) <= fewest))


def tile_pieces(a, cin: int, ct: int) -> list:
    """The ``cin`` channels (last axis) of ``a`` as the pieces of
    :func:`tile_piece_ranges`, each shaped (..., tiles, width), with the row tiles each
    covers. Always two array operations whatever the number of tiles, and no channel
    padding."""
    return [(a[..., lo * ct:lo * ct + (hi - lo) * width].reshape(*a.shape[:-1], hi - lo,
                                                                  width), slice(lo, hi))
            for lo, hi, width in tile_piece_ranges(cin, ct)]


def tap_major_rows(cin: int, taps: int, ct: int) -> np.ndarray:
    """Row permutation (K,) from channel-major rows (``channel * taps + tap``) to the
    rows of :func:`lowered_tiles`: per row tile (``ct`` channels; the last one may hold
    fewer), tap-major (tap slowest, channel fastest). A tile keeps the same rows, only
    their order inside it changes, and no crossbar sum depends on that order."""
    order = [c * taps + tap for lo, hi, width in tile_piece_ranges(cin, ct)
             for tl in range(lo, hi) for tap in range(taps)
             for c in range(tl * ct, tl * ct + width)]
    return np.asarray(order, np.int64)


def tap_major_pieces(xp, cin: int, ct: int, kernel, strides, dilation,
                     ranges: list[tuple[int, int, int]] | None = None) -> list:
    """``[((lo, hi, width), x)]`` per tile piece (``ranges``, default
    :func:`tile_piece_ranges` of all tiles) of an already padded NHWC ``xp``
    (B, Hp, Wp, G * cin): the kernel taps' strided views of the piece's channels stacked
    next to them, ``x`` (B, Ho, Wo, G, tiles, taps, width), so each row tile's rows are
    one contiguous run in the order of :func:`tap_major_rows`. Much cheaper on XLA:CPU
    than channel-major rows (:func:`im2col`), which interleave every element; no channel
    padding."""
    b, hp, wp, c = xp.shape
    groups = c // cin
    xg = xp.reshape(b, hp, wp, groups, cin)
    out = []
    for lo, hi, width in ranges or tile_piece_ranges(cin, ct):
        piece = xg[..., lo * ct:lo * ct + (hi - lo) * width].reshape(b, hp, wp, -1)
        views = tap_slices(piece, kernel, strides, dilation)  # each (B, Ho, Wo, G*tl*w)
        out.append(((lo, hi, width),
                    jnp.stack([a.reshape(*a.shape[:3], groups, hi - lo, width)
                               for a in views], axis=5)))
    return out


def lowered_tiles(xp, cin: int, ct: int, kernel, strides, dilation) -> jnp.ndarray:
    """Row tiles (B, Ho, Wo, G, T, taps * ct) of an already padded NHWC ``xp``
    (B, Hp, Wp, G * cin): the pieces of :func:`tap_major_pieces` with a partial last
    tile zero-padded to full rows (its padding rows hold no weights and must stream
    zeros)."""
    r = kernel[0] * kernel[1] * ct  # rows of a full tile
    parts = []
    for _, x in tap_major_pieces(xp, cin, ct, kernel, strides, dilation):
        x = x.reshape(*x.shape[:5], -1)
        if x.shape[-1] < r:
            x = jnp.pad(x, ((0, 0),) * 5 + ((0, r - x.shape[-1]),))
        parts.append(x)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=4)


__all__ = ["conv_geometry", "im2col", "lowered_tiles", "tap_major_pieces", "tap_major_rows",
           "tap_slices", "tile_piece_ranges", "tile_pieces", "tile_runs"]
