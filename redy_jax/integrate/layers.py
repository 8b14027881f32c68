"""One Conv / Dense layer through the crossbar engine.

The float input is quantised to static ``act_bits`` codes, lowered by im2col (conv) in
channel-major row order, handed to the layer's precision policy per row tile, run
through :func:`redy_jax.xbar.run_tiles`, and dequantised:
``y = (sum (q - zp) * w_q) * x_scale * w_scale + bias``. Grouped and depthwise convs
map every group to its own crossbars (vmapped over groups).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.base import GroupSums, LayerContext, Static, tile_sums
from redy_jax.policy.redy import effective_values
from redy_jax.quant.activations import ActQuant, quantize
from redy_jax.xbar.bit_serial import (
    even_blocks,
    exact_matmul,
    exact_rows,
    exact_weight_parts,
)
from redy_jax.xbar.engine import Counts, count_events, resolve_mode, run_tiles
from redy_jax.xbar.layout import tile
from redy_jax.xbar.lowering import im2col, tap_slices
from redy_jax.xbar.weights import quantize_weights, store_weights


class LayerRecord(NamedTuple):
    """What one simulated layer reports for a batch (arrays are per image, shape (B,))."""

    counts: Counts
    nt_hist: jnp.ndarray  # int32 (P+1, P+1): groups streaming n planes with t LSBs dropped
    nonfinite: jnp.ndarray  # bool: the layer's input had NaN/inf


class LayerInfo(NamedTuple):
    """Static facts of a mapped layer."""

    kind: str
    k: int  # rows per group (Cin_g * kh * kw)
    n: int  # outputs per group
    groups: int
    taps: int
    vectors_per_image: int
    crossbars: int
    macs_per_image: int


def _nt_hist(planes, shifts, spec: HardwareSpec, full: int = 0):
    p = spec.planes + 1
    if planes is None:  # every group streamed all planes, no shift
        return jnp.zeros((p, p), jnp.int32).at[p - 1, 0].set(full)
    t = jnp.zeros_like(planes) if shifts is None else jnp.clip(shifts, 0, p - 1)
    idx = jnp.clip(planes, 0, p - 1) * p + t
    return jnp.bincount(idx.reshape(-1), length=p * p).reshape(p, p).astype(jnp.int32)


def _code_bound(spec: HardwareSpec, sign_bit: bool, requantized: bool) -> int:
    """Bound on |x| of the values a layer multiplies: centred codes (two's complement
    under sign-bit streaming), plus, for requantised groups, the rounding of
    ``(q' << t) + offset``: ``|(q' << t) + off| <= max|q| + 2^(t-1)`` with
    ``t <= act_bits - 1`` (rounding half up)."""
    bound = (1 << (spec.act_bits - 1)) if sign_bit else (1 << spec.act_bits) - 1
    return bound + (1 << (spec.act_bits - 2)) if requantized else bound


def _stream_group(x_tiles, plan, stored, tiling, spec, policy, ctx, mode, sign_bit,
                  count: bool):
    """Streams one group's codes as planned: ``x_tiles`` (V, T, R) streamed codes (two's
    complement values under sign-bit streaming; padding rows arbitrary, their weights
    are zero), the policy's ``plan`` for these vectors and the crossbar image ``stored``
    -> (y_int (V, N), counts per vector or None, nt_hist or None). ``count``: count the
    events here (faithful ADC: saturations; relaxed plans: soft planes)."""
    v = x_tiles.shape[0]
    w_flat = stored.codes.reshape(-1, tiling.n)  # (T * R, N), zero in padding rows
    exact = resolve_mode(mode, tiling, spec) == "exact"
    sel = policy.apply(x_tiles, plan, ctx)
    counts = hist = None
    if exact:
        # With an exact ADC the crossbar computes sum_t (q'_t . w_t) << t_t, and the
        # digital offsets add off_t * colsum_t: together ((q' << t) + off) . w.
        eff = sel.codes if sel.shifts is None else sel.codes << sel.shifts[..., None]
        if sel.offsets is not None:
            eff = eff + sel.offsets[..., None]
        x_max = _code_bound(spec, sign_bit,
                            sel.shifts is not None or sel.offsets is not None)
        y = exact_matmul(eff.reshape(v, -1), w_flat, spec, signed=sign_bit, x_max=x_max)
        if sel.eff_soft is not None:  # tuning: hard forward, relaxed gradient
            y_soft = sel.eff_soft.reshape(v, -1) @ w_flat.astype(jnp.float32)
            y = y.astype(jnp.float32) + (y_soft - lax.stop_gradient(y_soft))
        if count:
            counts = count_events(sel.planes, tiling, spec, None, sel.unit_ops)
    else:
        if sel.eff_soft is not None:
            raise ValueError("a relaxed (temperature > 0) ReDy policy needs an exact ADC "
                             "(mode='exact' or 'auto' on a spec whose ADC cannot clip)")
        y, counts = run_tiles(sel.codes, stored, tiling, spec, signed=sign_bit,
                              mode=mode, planes=sel.planes, shifts=sel.shifts,
                              redy_unit_ops=sel.unit_ops)
        if sel.offsets is not None:  # per-group zero points, restored per row tile
            y = y + jnp.einsum("vt,tn->vn", sel.offsets, stored.codes.sum(axis=1))
    if count:
        hist = _nt_hist(sel.planes.astype(jnp.int32), sel.shifts, spec)
    if not sign_bit and ctx.zero_point:
        y = y - ctx.zero_point * stored.col_sum
    return y, counts, hist


def _combine_groups(counts, hist):
    """Per-group counts (G, V) and histograms (G, ...) -> the layer's: groups occupy
    separate crossbars and run in parallel, so events add and latency is the slowest's."""
    cycles = counts.cycles.max(axis=0)
    counts = jax.tree_util.tree_map(lambda a: a.sum(axis=0), counts).replace(cycles=cycles)
    return counts, hist.sum(axis=0)


def _tile_pieces(a, cin: int, ct: int) -> list:
    """The ``cin`` channels (last axis) of ``a`` as at most two pieces shaped
    (..., tiles, width), with the row tiles each covers: the channels of whole row tiles
    of ``ct`` channels (width ct), then those of a partial last tile (one tile). Always
    two array operations whatever the number of tiles, and no channel padding."""
    full = cin // ct
    pieces = [(a[..., :full * ct].reshape(*a.shape[:-1], full, ct), slice(0, full))
              ] if full else []
    if cin > full * ct:
        pieces.append((a[..., full * ct:][..., None, :], slice(full, full + 1)))
    return pieces


def _conv_sums(xp, tiling, groups, cin_g, kernel, strides, dilation,
               act_bits: int) -> GroupSums:
    """Window-level :class:`GroupSums` of a convolution, without im2col: per pixel, the
    sums / max / min over each row tile's channels, then pooled over the kernel window.
    ``xp``: (B, Hp, Wp, G * Cin_g) spatially padded streamed codes (|code| <
    2^act_bits). Returns each field as (G, B * Ho * Wo, T), float32."""
    b, hp, wp, _ = xp.shape
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // tiling.taps
    # int32 while a group's sum of squares fits (exact, and ~1.2-2x faster on XLA:CPU
    # than float32), else float32
    small = tiling.rows_per_tile * (1 << (2 * act_bits)) < 2**31
    xf = xp.astype(jnp.int32 if small else jnp.float32).reshape(b, hp, wp, groups, cin_g)
    # Tile pieces (no channel padding: reducing a padded (..., T, ct) reshape was ~8x
    # slower on XLA:CPU; no per-tile slices: a trace that grew with T, also ~1-2x slower).
    parts = [a for a, _ in _tile_pieces(xf, cin_g, ct)]

    def stack(f):  # (B, Hp, Wp, G, T)
        out = [f(a) for a in parts]
        return out[0] if len(out) == 1 else jnp.concatenate(out, axis=-1)

    s1, s2 = stack(lambda a: a.sum(-1)), stack(lambda a: (a * a).sum(-1))
    mx, mn = stack(lambda a: a.max(-1)), stack(lambda a: a.min(-1))
    ho = (hp - (kernel[0] - 1) * dilation[0] - 1) // strides[0] + 1
    wo = (wp - (kernel[1] - 1) * dilation[1] - 1) // strides[1] + 1

    def pool(a, op):
        """Reduces (B, Hp, Wp, G, T) over each kernel window with ``op``: one strided
        slice per kernel tap (static unroll; XLA fuses it into one loop, far faster on
        CPU than ``lax.reduce_window``)."""
        out = None
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                r0, c0 = i * dilation[0], j * dilation[1]
                sl = lax.slice(a, (0, r0, c0, 0, 0),
                               (b, r0 + (ho - 1) * strides[0] + 1,
                                c0 + (wo - 1) * strides[1] + 1, groups, t),
                               (1, strides[0], strides[1], 1, 1))
                out = sl if out is None else op(out, sl)
        return out

    fields = (pool(s1, lax.add), pool(s2, lax.add), pool(mx, lax.max), pool(mn, lax.min))
    per_group = lambda a: jnp.transpose(a, (3, 0, 1, 2, 4)).reshape(groups, -1, t)
    return GroupSums(*(per_group(a).astype(jnp.float32) for a in fields))


def _exact_int_conv(x, w_codes, kshape, strides, padding, dilation, groups, x_max, spec):
    """Exact int32 convolution of integer inputs ``x`` (|x| <= x_max; NHWC) with the
    integer weight matrix ``w_codes`` (K, Cout) in channel-major row order, by XLA's
    convolution on float32 operands: over blocks of input channels small enough that
    float32 sums them exactly with whole weights (int32 sum of the blocks; cheaper than
    a weight split, which repeats the whole convolution per part), else per weight part
    (see :func:`exact_weight_parts`)."""
    kh, kw, cin_g, cout = kshape
    w = jnp.transpose(w_codes.reshape(cin_g, kh, kw, cout), (1, 2, 0, 3))  # HWIO
    xf = x.astype(jnp.float32)
    conv = lambda a, k: lax.conv_general_dilated(
        a, k.astype(jnp.float32), strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=lax.Precision.HIGHEST).astype(jnp.int32)
    per_ch = exact_rows(x_max, spec.weight_bits) // (kh * kw)
    if per_ch >= 1:
        xg = xf.reshape(*xf.shape[:-1], groups, cin_g)
        y = 0
        for lo, hi in even_blocks(cin_g, per_ch):
            xb = xg[..., lo:hi].reshape(*xf.shape[:-1], groups * (hi - lo))
            y = y + conv(xb, w[:, :, lo:hi])
        return y
    y = 0
    for part in exact_weight_parts(w, kh * kw * cin_g, x_max, spec.weight_bits):
        y = y + conv(xf, part)
    return y


def _static_exact_conv(codes, w_codes, zp, tiling, spec, kshape, strides, padding,
                       dilation, groups):
    """Static policy, exact ADC: the crossbars compute the integer convolution of the
    zero-point-centred codes, so XLA's convolution on those integers gives the same
    int32 outputs without im2col; the events are closed-form (every group streams every
    plane).

    Returns ``(y_int, counts per image, nt_hist)``."""
    b = codes.shape[0]
    # Centred codes (also the two's-complement values under sign-bit streaming);
    # |x| <= 2**act_bits - 1 and padding is a real zero.
    y_int = _exact_int_conv(codes - zp, w_codes, kshape, strides, padding, dilation, groups,
                            (1 << spec.act_bits) - 1, spec)
    m = y_int.shape[1] * y_int.shape[2]
    counts = count_events(None, tiling, spec, vectors=b * m)
    cycles = counts.cycles
    counts = jax.tree_util.tree_map(lambda a: a * groups, counts).replace(cycles=cycles)
    hist = _nt_hist(None, None, spec, full=b * m * groups * tiling.n_row_tiles)
    return y_int, counts.sum_groups(b), hist


def _per_image_requantized_conv(xs, plan, policy, ctx, w_codes, kshape, strides, dilation,
                                groups, zp, sign_bit, spec):
    """Exact outputs of a policy whose groups are per image (``channel`` granularity):
    every input pixel of a row tile's channels is requantised the same way wherever a
    window reads it, so the effective codes are a per-image, per-channel map of the
    input and one native convolution replaces im2col. ``xs``: spatially padded streamed
    codes (B, Hp, Wp, G * Cin_g); plan leaves (G, B * m, ...)."""
    b = xs.shape[0]
    kh, kw, cin_g, cout = kshape
    t, ct = ctx.tiling.n_row_tiles, ctx.tiling.rows_per_tile // ctx.tiling.taps
    first = lambda a: a.reshape(groups, b, -1, t)[:, :, 0]  # (G, B, T): same for all m
    x = xs.reshape(b, -1, groups, cin_g)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, t * ct - cin_g)))
    x = jnp.moveaxis(x.reshape(b, -1, groups, t, ct), 2, 0)  # (G, B, P, T, ct)
    offsets = (first(plan.offsets) if plan.offsets is not None
               else jnp.zeros((groups, b, t), jnp.int32))
    shifts, bits = first(plan.shifts), first(plan.bits)
    per = lambda a: a[:, :, None, :]  # (G, B, 1, T): broadcast over pixels
    codes = jax.vmap(lambda xg, o, sh, n: policy.requantize(xg, ctx, o, sh, n))(
        x, per(offsets), per(shifts), per(bits))
    eff = (codes << per(shifts)[..., None]) + per(offsets)[..., None]
    eff = jnp.moveaxis(eff, 0, 2).reshape(b, *xs.shape[1:3], groups, t * ct)[..., :cin_g]
    eff = eff.reshape(xs.shape)
    if not sign_bit:
        eff = eff - zp  # centred: the zero point's column sums are removed in the conv
    return _exact_int_conv(eff, w_codes, kshape, strides, "VALID", dilation, groups,
                           _code_bound(spec, sign_bit, True), spec)


def _window_requantized_conv(xs, plan, policy, ctx_of, w_codes, kshape, strides, dilation,
                             groups, zp, sign_bit, spec, out_hw):
    """Exact outputs of a requantising policy with per-window groups (``window``
    granularity, exact ADC): every window requantises its row tiles differently, so the
    outputs need the lowered product — built here tap-major, per chunk of images (or of
    output rows when one image does not fit :data:`CHUNK_BYTES`). Each
    kernel tap's strided view of the input is requantised with the plan of the windows
    reading it (each channel takes its row tile's offset / shift / bits), the taps are
    concatenated and one matrix product with the tap-major weights gives the int32
    outputs. Row order inside a tile does not change a tile's sum, so this equals the
    channel-major crossbar rows; without channel padding or an interleaving transpose it
    is ~5-10x faster on XLA:CPU than lowering channel-major tiles. Float32 sums stay
    exact per block of taps (see ``blocks``); a channel wider than one block falls back
    to :func:`exact_matmul`'s weight split.

    ``xs``: spatially padded streamed codes (B, Hp, Wp, G * Cin_g); plan leaves
    (G, B * m, T). Returns y_int (B, *out_hw, Cout)."""
    b = xs.shape[0]
    kh, kw, cin_g, cout = kshape
    taps, n = kh * kw, cout // groups
    t, ct = ctx_of(b).tiling.n_row_tiles, ctx_of(b).tiling.rows_per_tile // taps
    # (K, Cout) channel-major rows -> per group (taps * Cin_g, n), tap-major rows.
    wt = jnp.transpose(w_codes.reshape(cin_g, taps, groups, n), (2, 1, 0, 3))
    wt = wt.reshape(groups, taps * cin_g, n)
    x_max = _code_bound(spec, sign_bit, True)
    # Blocks of taps whose products float32 sums exactly with whole weights (one matmul
    # each, int32 sum of the blocks): cheaper than splitting the weights (one matmul per
    # weight part over all rows) when K * x_max * 2^(b-1) >= 2^24 (e.g. 64 channels).
    blocks = even_blocks(taps, max(1, exact_rows(x_max, spec.weight_bits) // cin_g))
    offsets = jnp.zeros_like(plan.shifts) if plan.offsets is None else plan.offsets
    aff = jax.vmap(lambda o, sh, nb: policy.affine(ctx_of(b), o, sh, nb))(
        offsets, plan.shifts, plan.bits)
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
            tile pieces (:func:`_tile_pieces`), each broadcasting its tiles' constants
            (no per-channel copy of them)."""
            pieces = [effective_values(x, tuple(p[..., tiles, None] for p in prm))
                      .reshape(v, groups, -1)
                      for x, tiles in _tile_pieces(a.reshape(v, groups, cin_g), cin_g, ct)]
            return [e if sign_bit else e - zp for e in pieces]  # centred, like static

        effs = [eff_of(a) for a in tap_slices(xc, (kh, kw), strides, dilation)]
        mm = lambda p, w: exact_matmul(p, w, spec, signed=sign_bit, x_max=x_max)
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
        return map_image_chunks(chunk_fn, (xs, *aff), chunk)[0]
    return _map_row_blocks(chunk_fn, xs, aff, rows, out_hw[0], (kh - 1) * dilation[0] + 1,
                           strides[0])


def _map_row_blocks(fn, xs, prm, rows: int, height: int, reach: int, stride: int):
    """Applies ``fn`` (see ``_window_requantized_conv``) to blocks of ``rows`` output
    rows of every image (``lax.map`` over (image, block) pairs): the block's input rows
    with their halo (``reach``: input rows one window spans; ``stride``: input rows per
    output row) and its windows' constants. The last block is padded with zero rows
    whose outputs are dropped. ``xs`` (B, Hp, Wp, C); ``prm`` leaves (B, Ho, Wo, ...).
    Returns y (B, Ho, Wo, Cout)."""
    b = xs.shape[0]
    nb = -(-height // rows)
    rows_in = (rows - 1) * stride + reach
    need = (nb * rows - 1) * stride + reach  # input rows the padded blocks read
    xs = jnp.pad(xs, ((0, 0), (0, max(0, need - xs.shape[1])), (0, 0), (0, 0)))
    prm = tuple(jnp.pad(a, ((0, 0), (0, nb * rows - height)) + ((0, 0),) * (a.ndim - 2))
                for a in prm)

    def block(i):
        img, j = i // nb, i % nb
        xc = lax.dynamic_slice_in_dim(lax.dynamic_slice_in_dim(xs, img, 1, 0),
                                      j * rows * stride, rows_in, 1)
        pc = tuple(lax.dynamic_slice_in_dim(lax.dynamic_slice_in_dim(a, img, 1, 0),
                                            j * rows, rows, 1) for a in prm)
        return fn((xc, *pc))[0][0]

    y = lax.map(block, jnp.arange(b * nb))  # (B * nb, rows, Wo, Cout)
    return y.reshape(b, nb * rows, *y.shape[2:])[:, :height]


CHUNK_BYTES: dict[str, int | None] = {"cpu": 2**20}
"""Per backend, the size [bytes] of one chunk's lowered input (im2col patches as
float32) above which a layer's batch is streamed in chunks of images with ``lax.map``;
window-granularity ReDy goes on to blocks of output rows (with their input halo) when
even one image does not fit. Statistics and decisions are made for the whole batch
first, from per-pixel sums, so only lowering + requantisation + matmul run per chunk.
On XLA:CPU patches that stay in cache make the lowered matrix product ~1.1-2x a native
convolution instead of 5-20x (2-core development machine, ResNet-20 layer shapes;
whole-model times with 0.5-8 MiB chunks were within the machine's noise of each other,
1 MiB among the best; row blocks took window ReDy on one 224x224 ResNet-18 image from
3.2x to 1.8x float). Backends not listed (GPU, TPU) take the whole batch at once.
Results do not depend on it."""


def per_chunk(count: int, bytes_each: int) -> int:
    """How many of ``count`` items (images, or output rows of one image) of
    ``bytes_each`` lowered bytes a chunk holds on the current backend: all of them when
    it has no :data:`CHUNK_BYTES` budget, else the most that fit (at least one)."""
    budget = CHUNK_BYTES.get(jax.default_backend())
    if budget is None:
        return count
    return max(1, min(count, budget // max(1, bytes_each)))


def map_image_chunks(fn, xs, chunk: int):
    """Applies ``fn`` to the batch (leading axis of every leaf of ``xs``) in chunks of
    ``chunk`` images (``lax.map``; a remainder chunk runs once more) and stitches the
    results ``(per-image outputs, per-image counts or None, histogram or None)``:
    outputs and counts concatenate, histograms add."""
    b = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if chunk >= b:
        return fn(xs)
    n, rem = divmod(b, chunk)
    tmap = jax.tree_util.tree_map
    head = tmap(lambda a: a[:n * chunk].reshape(n, chunk, *a.shape[1:]), xs)
    y, counts, hist = lax.map(fn, head)
    flat = lambda a: a.reshape(n * chunk, *a.shape[2:])
    y, counts = flat(y), tmap(flat, counts)
    hist = None if hist is None else hist.sum(axis=0)
    if rem:
        y2, c2, h2 = fn(tmap(lambda a: a[n * chunk:], xs))
        y = jnp.concatenate([y, y2])
        counts = tmap(lambda a, c: jnp.concatenate([a, c]), counts, c2)
        hist = None if hist is None else hist + h2
    return y, counts, hist


def _straight_through(y, x, w_codes, w_scale, bias, kind, kshape, strides, padding,
                      dilation, groups):
    """Hardware values forward, the float layer's gradient (dequantised weights) backward:
    the straight-through estimator that lets a loss on the logits reach earlier layers
    through activation quantisation and integer arithmetic (used by threshold tuning)."""
    w = w_codes.astype(jnp.float32) * w_scale
    if kind == "dense":
        ref = x.reshape(-1, w.shape[0]) @ w
    else:
        kh, kw, cin_g, cout = kshape
        w = jnp.transpose(w.reshape(cin_g, kh, kw, cout), (1, 2, 0, 3))
        ref = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=groups)
    if bias is not None:
        ref = ref + bias
    ref = ref.reshape(y.shape)
    return y + (ref - lax.stop_gradient(ref))


def crossbar_layer(x, kernel, bias, *, kind: str, path: str, quant: ActQuant, policy,
                   spec: HardwareSpec, mode: str, strides=(1, 1), padding="VALID",
                   kernel_dilation=(1, 1), groups: int = 1, ste: bool = False):
    """Simulates ``y = conv(x, kernel) + bias`` (or dense) on crossbars.

    Args:
      x: float input, NHWC for convs, (B, Din) for dense.
      kernel: HWIO conv kernel (kh, kw, Cin/groups, Cout) or dense (Din, Dout).
      ste: add straight-through gradients w.r.t. ``x`` (see ``_straight_through``).
    Returns:
      ``(y, record, info)``: float output like the float layer, a :class:`LayerRecord`
      and static :class:`LayerInfo`.
    """
    b = x.shape[0]
    sign_bit = spec.signed_encoding == "sign_bit" and quant.signed
    zp = quant.zero_point if quant.signed or quant.zero_point else 0
    nonfinite = ~jnp.all(jnp.isfinite(x))
    codes = quantize(x, quant, spec.act_bits)
    if kind == "dense":
        kh = kw = 1
        cin_g, cout = kernel.shape
    else:
        kh, kw, cin_g, cout = kernel.shape
    kshape = (kh, kw, cin_g, cout)
    taps = kh * kw
    k, n = cin_g * taps, cout // groups
    # (Cin_g, kh, kw) row order per group, i.e. channel-major like the patches.
    w2 = jnp.transpose(kernel.reshape(kh, kw, cin_g, cout), (2, 0, 1, 3)).reshape(k, cout)
    w_codes, w_scale = quantize_weights(w2, spec.weight_bits)
    tiling = tile(k, n, spec, taps)
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // taps
    # Streamed codes: two's complement values q - zp under sign-bit streaming.
    pad_code = 0 if sign_bit else zp  # the code of a real zero (spatial padding)
    if kind == "dense":
        out_hw = x.shape[1:-1]
        pads = None
    else:
        eff_k = ((kh - 1) * kernel_dilation[0] + 1, (kw - 1) * kernel_dilation[1] + 1)
        pads = (lax.padtype_to_pads(x.shape[1:3], eff_k, strides, padding)
                if isinstance(padding, str) else tuple(tuple(p) for p in padding))
        out_hw = tuple((x.shape[1 + i] + sum(pads[i]) - eff_k[i]) // strides[i] + 1
                       for i in range(2))
    m = math.prod(out_hw)
    # Weights as programmed into crossbars, per group, once (outside the chunk loop).
    wg = jnp.transpose(w_codes.reshape(k, groups, n), (1, 0, 2))  # (G, K, N)
    stored = jax.vmap(lambda w: store_weights(w, tiling, spec))(wg)
    exact = resolve_mode(mode, tiling, spec) == "exact"
    relaxed = getattr(policy, "temperature", 0) > 0
    count_in_chunks = not exact or relaxed  # else the plan alone fixes every count
    ctx_of = lambda c: LayerContext(path=path, kind=kind, tiling=tiling, spec=spec, images=c,
                                    vectors_per_image=m, zero_point=zp, sign_bit=sign_bit)

    def tiles_of(xc):
        """Streamed codes (c, [Hp, Wp,] G * Cin_g) -> tiles (G, c * m, T, R): channels
        zero-padded to whole row tiles, then lowered (im2col, channel-major rows)."""
        c = xc.shape[0]
        xc = xc.reshape(c, -1, groups * cin_g) if kind == "dense" else xc
        padded = xc.reshape(*xc.shape[:-1], groups, cin_g)
        # Padding rows stream zeros: they hold no weight cells, and the digital removal
        # of the weight bias (2^(b-1) * sum of the streamed inputs) must not see them.
        padded = jnp.pad(padded, ((0, 0),) * (padded.ndim - 1) + ((0, t * ct - cin_g),)
                         ).reshape(*xc.shape[:-1], -1)
        if kind != "dense":
            padded = im2col(padded, (kh, kw), strides, "VALID", kernel_dilation)
        return jnp.moveaxis(padded.reshape(c * m, groups, t, -1), 1, 0)

    def plan_of(xs_full):
        """Decisions for every group of the batch, from statistics (no im2col for convs)."""
        ctx = ctx_of(b)
        if getattr(policy, "needs_sums", False):
            if kind == "dense":
                sums = jax.vmap(lambda xt: tile_sums(xt, ctx))(tiles_of(xs_full))
            else:
                sums = _conv_sums(xs_full, tiling, groups, cin_g, (kh, kw), strides,
                                  kernel_dilation, spec.act_bits)
        else:
            sums = None
        return jax.vmap(lambda sm: policy.plan(sm, ctx, b * m))(sums) if sums is not None \
            else jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (groups, *a.shape)),
                                        policy.plan(None, ctx, b * m))

    def stream(args):
        """A chunk of images -> (y_int (c, *out_hw, cout), counts per image, nt_hist)."""
        xc, plan_c = args
        c = xc.shape[0]
        # plan leaves (c, G, m, ...) -> (G, c * m, ...)
        plan_c = jax.tree_util.tree_map(
            lambda a: jnp.moveaxis(a, 1, 0).reshape(groups, c * m, *a.shape[3:]), plan_c)
        run = lambda xt, pl, st: _stream_group(xt, pl, st, tiling, spec, policy, ctx_of(c),
                                               mode, sign_bit, count_in_chunks)
        if groups == 1:  # a plain 2-D matmul (a batched one is ~2-3x slower on CPU)
            one = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
            out = run(tiles_of(xc)[0], one(plan_c), one(stored))
            y_int, counts, hist = jax.tree_util.tree_map(lambda a: a[None], out)
        else:
            y_int, counts, hist = jax.vmap(run)(tiles_of(xc), plan_c, stored)  # (G, V, N)
        y_int = jnp.transpose(y_int, (1, 0, 2)).reshape(c, *out_hw, cout)
        if count_in_chunks:
            counts, hist = _combine_groups(counts, hist)
            counts = counts.sum_groups(c)
        return y_int, counts, hist

    conv_exact = kind != "dense" and exact
    if conv_exact and isinstance(policy, Static):
        y_int, counts, hist = _static_exact_conv(codes, w_codes, zp, tiling, spec, kshape,
                                                 strides, padding, kernel_dilation, groups)
    else:
        xs = codes - zp if sign_bit else codes  # streamed codes
        if kind != "dense":
            xs = jnp.pad(xs, ((0, 0), *pads, (0, 0)), constant_values=pad_code)
        plan = plan_of(xs)
        if not count_in_chunks:
            per_group = jax.vmap(lambda p: (count_events(p.planes, tiling, spec, None,
                                                         p.unit_ops),
                                            _nt_hist(p.planes, p.shifts, spec)))
            counts, hist = _combine_groups(*per_group(plan))
            counts = counts.sum_groups(b)
        if conv_exact and getattr(policy, "streams_static_codes", False):
            # The policy streams the static codes unchanged (only fewer planes): with an
            # exact ADC the outputs are static 8-bit's, computed without im2col.
            y_int, _, _ = _static_exact_conv(codes, w_codes, zp, tiling, spec, kshape,
                                             strides, padding, kernel_dilation, groups)
        elif (conv_exact and not relaxed and getattr(policy, "granularity", "") == "channel"
              and hasattr(policy, "requantize")):
            y_int = _per_image_requantized_conv(xs, plan, policy, ctx_of(b), w_codes, kshape,
                                                strides, kernel_dilation, groups, zp,
                                                sign_bit, spec)
        elif (conv_exact and not relaxed and getattr(policy, "granularity", "") == "window"
              and hasattr(policy, "affine")):
            y_int = _window_requantized_conv(xs, plan, policy, ctx_of, w_codes, kshape,
                                             strides, kernel_dilation, groups, zp, sign_bit,
                                             spec, out_hw)
        else:
            # plan leaves (G, B * m, ...) -> (B, G, m, ...): chunked by image with the codes
            plan_img = jax.tree_util.tree_map(
                lambda a: jnp.moveaxis(a.reshape(groups, b, m, *a.shape[2:]), 1, 0), plan)
            chunk = per_chunk(b, m * groups * t * tiling.rows_per_tile * 4)
            y_int, c_counts, c_hist = map_image_chunks(stream, (xs, plan_img), chunk)
            if count_in_chunks:
                counts, hist = c_counts, c_hist
    y = y_int.astype(jnp.float32) * (quant.scale * w_scale)
    if bias is not None:
        y = y + bias
    if ste:
        y = _straight_through(y, x, w_codes, w_scale, bias, kind, kshape, strides, padding,
                              kernel_dilation, groups)
    record = LayerRecord(counts=counts, nt_hist=hist, nonfinite=nonfinite)
    info = LayerInfo(kind=kind, k=k, n=n, groups=groups, taps=taps, vectors_per_image=m,
                     crossbars=groups * tiling.crossbars, macs_per_image=m * groups * k * n)
    return y, record, info
