"""The general execution: lowered row tiles through the bit-plane model (or, with an
exact ADC, an exact product of the values the streamed codes stand for).

Used for every faithful (clipping or rounding) ADC, every relaxed (tuning) plan, and
dense layers. The codes are lowered to row tiles (tap-major rows inside each tile, a
partial last tile zero-padded) per chunk of images (:mod:`redy_jax.xbar.chunks`),
requantised as planned, and streamed; events are counted here when they depend on the
conversions (saturations) or on relaxed planes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.chunks import map_image_chunks, per_chunk
from redy_jax.xbar.engine import Counts, count_events, run_tiles
from redy_jax.xbar.exact import HIGHEST, code_bound, exact_matmul
from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.lowering import lowered_tiles
from redy_jax.xbar.plan import (
    LayerContext,
    Plan,
    effective_values,
    expected,
    requant_constants,
    streamed_codes,
)
from redy_jax.xbar.weights import StoredWeights


def nt_histogram(planes, shifts, spec: HardwareSpec, groups: int = 0,
                 layer_planes=None) -> jnp.ndarray:
    """int32 (P+1, P+1): groups streaming n planes with t LSBs dropped. ``planes`` None:
    ``groups`` groups all streamed the layer's ``layer_planes`` planes with no shift."""
    p = spec.planes + 1
    if planes is None:
        full = p - 1 if layer_planes is None else layer_planes
        return jnp.zeros((p, p), jnp.int32).at[full, 0].set(groups)
    t = jnp.zeros_like(planes) if shifts is None else jnp.clip(shifts, 0, p - 1)
    idx = jnp.clip(planes, 0, p - 1) * p + t
    return jnp.bincount(idx.reshape(-1), length=p * p).reshape(p, p).astype(jnp.int32)


def combine_groups(counts: Counts, hist: jnp.ndarray):
    """Per-group counts (G, V) and histograms (G, ...) -> the layer's: groups occupy
    separate crossbars and run in parallel, so events add and latency is the slowest's."""
    cycles = counts.cycles.max(axis=0)
    counts = jax.tree_util.tree_map(lambda a: a.sum(axis=0), counts).replace(cycles=cycles)
    return counts, hist.sum(axis=0)


def soft_values(x_tiles: jnp.ndarray, plan: Plan, sign_bit: bool):
    """``(planes, eff)`` of a relaxed plan: the expected planes (V, T) and effective
    values (V, T, R) under the plan's :class:`~redy_jax.xbar.plan.Relaxation`, both
    float32, with gradients only through its probabilities."""
    rx = plan.relaxation
    candidate = lambda o, t, n: effective_values(x_tiles, requant_constants(
        o[..., None], t[..., None], n[..., None], sign_bit)).astype(jnp.float32)
    eff = jax.vmap(candidate, in_axes=-1, out_axes=-1)(
        rx.offsets, rx.shifts, rx.bits)  # (V, T, R, J)
    eff = lax.stop_gradient(eff)
    planes = expected(rx.planes.astype(jnp.float32), rx.probs)
    return planes, expected(eff, rx.probs[:, :, None, :])


def stream_group(x_tiles: jnp.ndarray, plan: Plan, stored: StoredWeights, tiling: Tiling,
                 spec: HardwareSpec, *, exact: bool, ctx: LayerContext, zero_point,
                 count: bool, prune: bool = True):
    """Streams one crossbar group's codes as planned.

    Args:
      x_tiles: int32 (V, T, R) streamed codes (two's complement values under sign-bit
        streaming; padding rows arbitrary, their weights are zero).
      plan: the decisions for these vectors.
      stored: the crossbar image of this group's weights.
      ctx: the layer (``ctx.images``, ``ctx.vectors_per_image`` describe the full batch).
      zero_point: the layer's zero point (0 when it streams no zero-point codes).
      count: count the events here (faithful ADC: saturations; relaxed plans: soft
        planes).
      prune: a faithful ADC models only the reads the data cannot prove exact (see
        :func:`~redy_jax.xbar.engine.run_tiles`); False models every read.
    Returns:
      ``(y_int (V, N), counts per vector or None, nt_hist or None)``.
    """
    v = x_tiles.shape[0]
    sign_bit = ctx.sign_bit
    w_flat = stored.codes.reshape(-1, tiling.n)  # (T * R, N), zero in padding rows
    counts = hist = None
    if exact:
        # With an exact ADC the crossbar computes sum_t (q'_t . w_t) << t_t, and the
        # digital offsets add off_t * colsum_t: together ((q' << t) + off) . w.
        eff = x_tiles
        if plan.requantizes:
            consts = requant_constants(plan.offsets, plan.shifts, plan.bits, sign_bit)
            eff = effective_values(x_tiles, tuple(c[..., None] for c in consts))
        x_max = code_bound(spec.act_bits, sign_bit,
                           plan.shifts is not None or plan.offsets is not None)
        y = exact_matmul(eff.reshape(v, -1), w_flat, x_max, spec.weight_bits)
        if plan.relaxation is not None:  # tuning: hard forward, relaxed gradient
            soft_planes, eff_soft = soft_values(x_tiles, plan, sign_bit)
            y_soft = jnp.matmul(eff_soft.reshape(v, -1), w_flat.astype(jnp.float32),
                                precision=HIGHEST)
            y = y.astype(jnp.float32) + (y_soft - lax.stop_gradient(y_soft))
            plan = plan.replace(planes=plan.planes.astype(jnp.float32)
                                + (soft_planes - lax.stop_gradient(soft_planes)))
        if count:
            counts = count_events(plan, tiling, spec, vectors=v, layer_bits=ctx.bits,
                                  zero_point=ctx.zero_point)
    else:
        if plan.relaxation is not None:
            raise ValueError("a relaxed (temperature > 0) ReDy policy needs an exact ADC "
                             "(mode='exact' or 'auto' on a spec whose ADC cannot clip)")
        codes = streamed_codes(x_tiles, plan, sign_bit)
        y, counts = run_tiles(codes, stored, tiling, spec, signed=sign_bit, mode="faithful",
                              plan=plan, layer_bits=ctx.bits, zero_point=ctx.zero_point,
                              prune=prune)
        if plan.offsets is not None:  # per-group zero points, restored per row tile
            y = y + jnp.einsum("vt,tn->vn", plan.offsets, stored.codes.sum(axis=1),
                               precision=HIGHEST)
    if count:
        hist = nt_histogram(None if plan.planes is None else plan.planes.astype(jnp.int32),
                            plan.shifts, spec, v * tiling.n_row_tiles,
                            -(-jnp.asarray(ctx.bits, jnp.int32) // spec.dac_bits))
    if ctx.zero_point:
        y = y - zero_point * stored.col_sum
    return y, counts, hist


def tiled_layer(xs: jnp.ndarray, plan: Plan, stored: StoredWeights, tiling: Tiling,
                spec: HardwareSpec, *, kind: str, groups: int, cin_g: int, kernel, strides,
                dilation, out_hw, exact: bool, ctx: LayerContext, zero_point, count: bool,
                prune: bool = True):
    """A whole layer through :func:`stream_group`, in chunks of images.

    ``xs``: streamed codes (B, Hp, Wp, G * Cin_g) spatially padded for convs, (B, D) for
    dense layers; plan leaves (G, B * m, ...); ``stored`` leaves (G, ...).
    ``prune``: see :func:`stream_group`; only a single group's program prunes (under
    ``vmap`` over groups every branch of the pruned model would run).
    Returns ``(y_int (B, *out_hw, G * N), counts per image or None, hist or None)``."""
    b = xs.shape[0]
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // tiling.taps
    m = 1
    for d in out_hw:
        m *= d
    cout = groups * tiling.n

    def tiles_of(xc):
        """Streamed codes (c, [Hp, Wp,] G * Cin_g) -> tiles (G, c * m, T, R). Padding
        rows stream zeros: they hold no weight cells, and the digital removal of the
        weight bias (2^(b-1) * sum of the streamed inputs) must not see them. Conv rows
        are tap-major inside each tile (:func:`~redy_jax.xbar.lowering.lowered_tiles`;
        the weights were stored in the same order)."""
        c = xc.shape[0]
        if kind != "dense":
            lowered = lowered_tiles(xc, cin_g, ct, kernel, strides, dilation)
            return jnp.moveaxis(lowered.reshape(c * m, groups, t, -1), 1, 0)
        padded = xc.reshape(c, -1, groups, cin_g)
        padded = jnp.pad(padded, ((0, 0),) * 3 + ((0, t * ct - cin_g),))
        return jnp.moveaxis(padded.reshape(c * m, groups, t, -1), 1, 0)

    def stream(args):
        """A chunk of images -> (y_int (c, *out_hw, cout), counts per image, nt_hist)."""
        xc, plan_c = args
        c = xc.shape[0]
        # plan leaves (c, G, m, ...) -> (G, c * m, ...)
        plan_c = jax.tree_util.tree_map(
            lambda a: jnp.moveaxis(a, 1, 0).reshape(groups, c * m, *a.shape[3:]), plan_c)
        run = lambda xt, pl, st: stream_group(xt, pl, st, tiling, spec, exact=exact,
                                              ctx=ctx, zero_point=zero_point, count=count,
                                              prune=prune and groups == 1)
        if groups == 1:  # a plain 2-D matmul (a batched one is ~2-3x slower on CPU)
            one = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
            out = run(tiles_of(xc)[0], one(plan_c), one(stored))
            y_int, counts, hist = jax.tree_util.tree_map(lambda a: a[None], out)
        else:
            y_int, counts, hist = jax.vmap(run)(tiles_of(xc), plan_c, stored)  # (G, V, N)
        y_int = jnp.transpose(y_int, (1, 0, 2)).reshape(c, *out_hw, cout)
        if count:
            counts, hist = combine_groups(counts, hist)
            counts = counts.sum_groups(c)
        return y_int, counts, hist

    # plan leaves (G, B * m, ...) -> (B, G, m, ...): chunked by image with the codes
    plan_img = jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a.reshape(groups, b, m, *a.shape[2:]), 1, 0), plan)
    chunk = per_chunk(b, m * groups * t * tiling.rows_per_tile * 4)
    return map_image_chunks(stream, (xs, plan_img), chunk)


__all__ = ["combine_groups", "nt_histogram", "soft_values", "stream_group", "tiled_layer"]
