"""One Conv / Dense layer on crossbars: quantise, plan, execute, dequantise.

The float input is quantised to static ``act_bits`` codes; the layer's precision
policy sees the statistics it asks for and returns a :class:`~redy_jax.xbar.plan.Plan`
for every group of the batch; the plan is executed by the fastest strategy that gives
the hardware's result, and the integer outputs are dequantised:
``y = (sum (q - zp) * w_q) * x_scale * w_scale + bias``. Grouped and depthwise convs
map every group to its own crossbars.

Strategies (one module each), chosen from the mode and the plan alone:

========================================  ==========================================
exact ADC, conv, static codes              :func:`~redy_jax.xbar.conv.static_conv`
exact ADC, conv, per-image requantised     :func:`~redy_jax.xbar.conv.channel_conv`
exact ADC, conv, per-window requantised    :func:`~redy_jax.xbar.window_conv.window_conv`
faithful ADC, relaxed plans, dense layers  :func:`~redy_jax.xbar.tiled.tiled_layer`
========================================  ==========================================

With an exact ADC (and a hard plan) the events follow from the plan in closed form;
otherwise they are counted while streaming (saturations, relaxed planes).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.quant.activations import ActQuant, quantize
from redy_jax.xbar.conv import ConvShape, channel_conv, static_conv
from redy_jax.xbar.engine import Counts, count_events, resolve_mode
from redy_jax.xbar.exact import HIGHEST
from redy_jax.xbar.layout import Tiling, tile
from redy_jax.xbar.lowering import conv_geometry, tap_major_rows
from redy_jax.xbar.plan import GroupSums, LayerContext, Plan, Policy
from redy_jax.xbar.statistics import NONFINITE_CODE, conv_sums, nonfinite, tile_sums
from redy_jax.xbar.tiled import combine_groups, nt_histogram, tiled_layer
from redy_jax.xbar.weights import quantize_weights, store_weights
from redy_jax.xbar.window_conv import window_conv

LAYER_KINDS = ("conv", "depthwise", "grouped", "dense")


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


def count_plan(plan: Plan, tiling: Tiling, spec: HardwareSpec, ctx: LayerContext,
               groups: int):
    """Events of a hard plan with an exact ADC, in closed form: counts per image and the
    (n, t) histogram. Plan leaves (G, images * vectors_per_image, ...)."""
    v = ctx.images * ctx.vectors_per_image
    count = lambda p, images=ctx.images: count_events(
        p, tiling, spec, vectors=v, layer_bits=ctx.bits, zero_point=ctx.zero_point,
        images=images)
    layer_planes = -(-jnp.asarray(ctx.bits, jnp.int32) // spec.dac_bits)
    first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
    if plan.planes is None and plan.unit_ops is None:  # every group streams every plane
        counts = count(first(plan))
        cycles = counts.cycles
        counts = jax.tree_util.tree_map(lambda a: a * groups, counts).replace(cycles=cycles)
        hist = nt_histogram(None, None, spec, v * groups * tiling.n_row_tiles, layer_planes)
        return counts, hist
    if groups == 1:  # counted per image directly
        p = first(plan)
        return count(p), nt_histogram(p.planes, p.shifts, spec)
    # groups run in parallel: a vector's latency is its slowest group's, so counts are
    # combined per vector before they are summed per image
    per_group = jax.vmap(lambda p: (count(p, None), nt_histogram(p.planes, p.shifts, spec)))
    counts, hist = combine_groups(*per_group(plan))
    return counts.sum_groups(ctx.images), hist


def _reads_padded_codes(plan: Plan, exact: bool, kind: str) -> bool:
    """Whether the product of ``plan`` (its static structure) reads the spatially
    padded codes: everything but the native-convolution paths (static codes, or codes
    requantised per image)."""
    native = exact and plan.relaxation is None and kind != "dense" and (
        not plan.requantizes or plan.granularity == "channel")
    return not native


def _straight_through(y, x, w2, w_codes, w_scale, bias, kind, shape: ConvShape | None):
    """Hardware values forward, the float layer's gradient backward: the straight-through
    estimator that lets a loss on the logits reach earlier layers through activation
    quantisation and integer arithmetic (threshold tuning), and the float kernel ``w2``
    (K, Cout) through weight quantisation (training through the simulator). The backward
    product uses the dequantised weights (the values the hardware holds)."""
    w_deq = w_codes.astype(jnp.float32) * w_scale
    w = w2 + lax.stop_gradient(w_deq - w2)  # value: dequantised; gradient: to the kernel
    if kind == "dense":
        ref = jnp.matmul(x.reshape(-1, w.shape[0]), w, precision=HIGHEST)
    else:
        ref = lax.conv_general_dilated(x, shape.hwio(w), shape.strides, shape.pads,
                                       rhs_dilation=shape.dilation,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=shape.groups, precision=HIGHEST)
    if bias is not None:
        ref = ref + bias
    ref = ref.reshape(y.shape)
    return y + (ref - lax.stop_gradient(ref))


def crossbar_layer(x, kernel, bias, *, kind: str, path: str, quant: ActQuant, policy: Policy,
                   spec: HardwareSpec, mode: str, strides=(1, 1), padding="VALID",
                   kernel_dilation=(1, 1), groups: int = 1, ste: bool = False,
                   capture: dict | None = None):
    """Simulates ``y = conv(x, kernel) + bias`` (or dense) on crossbars.

    Args:
      x: float input, NHWC for convs, (B, Din) for dense.
      kernel: HWIO conv kernel (kh, kw, Cin/groups, Cout) or dense (Din, Dout).
      policy: a precision policy (the :class:`~redy_jax.xbar.plan.Policy` protocol).
      mode: ``auto`` / ``exact`` / ``faithful`` / ``bit_plane`` (see
        :func:`~redy_jax.xbar.resolve_mode`).
      ste: add straight-through gradients w.r.t. ``x`` and the kernel (see
        ``_straight_through``).
      capture: when a dict, filled with the layer's ``input``, ``codes``, integer
        ``outputs`` and float ``output``.
    Returns:
      ``(y, record, info)``: float output like the float layer, a :class:`LayerRecord`
      and static :class:`LayerInfo`.
    """
    b = x.shape[0]
    sign_bit = spec.signed_encoding == "sign_bit" and quant.signed
    # zero-point layers centre their codes digitally; others stream them as they are
    zp = quant.zero_point if (quant.signed and not sign_bit) else 0
    # With statistics, NaN/inf inputs get a code no real one comes near and the
    # statistics' per-pixel minimum reveals them (a separate check, another pass over
    # the input, cost LZS on ResNet-20 ~10% of its pass); without, a check of their own.
    streamed = quantize(x, quant, NONFINITE_CODE if policy.statistics else None)
    if kind == "dense":
        kh = kw = 1
        cin_g, cout = kernel.shape
        shape, out_hw = None, x.shape[1:-1]
    else:
        kh, kw, cin_g, cout = kernel.shape
        pads, out_hw = conv_geometry(x.shape[1:3], (kh, kw), strides, padding, kernel_dilation)
        shape = ConvShape((kh, kw), cin_g, cout, groups, tuple(strides),
                          tuple(kernel_dilation), pads, out_hw)
    taps = kh * kw
    k, n = cin_g * taps, cout // groups
    # (Cin_g, kh, kw) row order per group, i.e. channel-major like the patches.
    w2 = jnp.transpose(kernel.reshape(kh, kw, cin_g, cout), (2, 0, 1, 3)).reshape(k, cout)
    w_codes, w_scale = quantize_weights(w2, spec.weight_bits)
    tiling = tile(k, n, spec, taps)
    m = math.prod(out_hw)
    resolved = resolve_mode(mode, tiling, spec)
    exact = resolved == "exact"
    ctx = LayerContext(path=path, kind=kind, tiling=tiling, spec=spec, images=b,
                       vectors_per_image=m, signed=quant.signed, sign_bit=sign_bit,
                       bits=quant.bits)

    # Streamed codes: two's complement values q - zp under sign-bit streaming; spatial
    # padding streams the code of a real zero.
    xs = streamed - quant.zero_point if sign_bit else streamed
    x_codes = xs  # unpadded: a native convolution pads the centred codes itself
    if kind != "dense":
        xs = jnp.pad(xs, ((0, 0), *shape.pads, (0, 0)), constant_values=zp)

    # The policy's decisions for every group of the batch, from statistics (no im2col).
    if not policy.statistics:
        plan = policy.plan(None, ctx)
        plan = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (groups, *a.shape)), plan)
    else:
        decide = jax.vmap(lambda sm: policy.plan(sm, ctx))  # leaves (G, B * m, ...)
        if kind == "dense":
            t, r = tiling.n_row_tiles, tiling.rows_per_tile
            xt = jnp.pad(xs.reshape(b * m, groups, cin_g), ((0, 0), (0, 0), (0, t * r - k)))
            sums = jax.vmap(lambda a: tile_sums(a.reshape(b * m, t, r), tiling), 1)(xt)
            lowest = jnp.min(sums.min)
        else:
            # From the padded codes when the product reads them anyway (window ReDy,
            # the bit-serial paths), else from the unpadded codes (their per-pixel
            # statistics padded instead: no padded copy of the input).
            stats = lambda codes, **pad: conv_sums(codes, tiling, groups, cin_g, (kh, kw),
                                                   shape.strides, shape.dilation,
                                                   spec.act_bits, **pad)
            shaped = jax.ShapeDtypeStruct((groups, b * m, tiling.n_row_tiles), jnp.float32)
            plan_shape = jax.eval_shape(decide, GroupSums(*(shaped,) * 4))
            if _reads_padded_codes(plan_shape, exact, kind):
                sums, lowest = stats(xs)
            else:
                sums, lowest = stats(x_codes, pads=shape.pads, pad_code=zp)
        plan = decide(sums)
    bad = nonfinite(lowest) if policy.statistics else ~jnp.all(jnp.isfinite(x))

    hard = plan.relaxation is None
    if exact and hard:
        counts, hist = count_plan(plan, tiling, spec, ctx, groups)
    if exact and hard and kind != "dense":
        if not plan.requantizes:
            y_int = static_conv(x_codes, w_codes, shape, zp, sign_bit, spec.act_bits,
                                spec.weight_bits)
        elif plan.granularity == "channel":
            y_int = channel_conv(x_codes, plan, w_codes, tiling, shape, zp, sign_bit,
                                 spec.act_bits, spec.weight_bits)
        else:
            y_int = window_conv(xs, plan, w_codes, tiling, shape, zp, sign_bit,
                                spec.act_bits, spec.weight_bits)
    else:
        w_rows = w_codes
        if kind != "dense":  # the row order of lowered_tiles (tap-major in each tile)
            w_rows = w_codes[tap_major_rows(cin_g, taps, tiling.rows_per_tile // taps)]
        wg = jnp.transpose(w_rows.reshape(k, groups, n), (1, 0, 2))  # (G, K, N)
        stored = jax.vmap(lambda w: store_weights(w, tiling, spec))(wg)
        y_int, c_counts, c_hist = tiled_layer(
            xs, plan, stored, tiling, spec, kind=kind, groups=groups, cin_g=cin_g,
            kernel=(kh, kw), strides=tuple(strides), dilation=tuple(kernel_dilation),
            out_hw=out_hw, exact=exact, ctx=ctx, zero_point=zp, count=not (exact and hard),
            prune=resolved == "faithful")
        if not (exact and hard):
            counts, hist = c_counts, c_hist
    y = y_int.astype(jnp.float32) * (quant.scale * w_scale)
    if bias is not None:
        y = y + bias
    if ste:
        y = _straight_through(y, x, w2, w_codes, w_scale, bias, kind, shape)
    if capture is not None:
        capture.update(input=x, codes=quantize(x, quant), outputs=y_int, output=y)
    record = LayerRecord(counts=counts, nt_hist=hist, nonfinite=bad)
    info = LayerInfo(kind=kind, k=k, n=n, groups=groups, taps=taps, vectors_per_image=m,
                     crossbars=groups * tiling.crossbars, macs_per_image=m * groups * k * n)
    return y, record, info


__all__ = ["LAYER_KINDS", "LayerInfo", "LayerRecord", "count_plan", "crossbar_layer"]
