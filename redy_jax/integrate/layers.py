"""One Conv / Dense layer through the crossbar engine.

The float input is quantised to static ``act_bits`` codes, lowered by im2col (conv) in
channel-major row order, handed to the layer's precision policy per row tile, run
through :func:`redy_jax.xbar.run_tiles`, and dequantised:
``y = (sum (q - zp) * w_q) * x_scale * w_scale + bias``. Grouped and depthwise convs
map every group to its own crossbars (vmapped over groups).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.base import LayerContext, Static
from redy_jax.quant.activations import ActQuant, quantize
from redy_jax.xbar.bit_serial import exact_matmul
from redy_jax.xbar.engine import Counts, count_events, resolve_mode, run_tiles, to_tiles
from redy_jax.xbar.layout import tile
from redy_jax.xbar.lowering import im2col
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


def _run_group(x_codes, w_codes, tiling, spec, policy, ctx, mode, sign_bit):
    """One group: x_codes (V, K) unsigned codes, w_codes (K, N) -> (y_int, counts, hist)."""
    stored = store_weights(w_codes, tiling, spec)
    if sign_bit:  # stream two's complement values q - 2^(b-1)
        x_codes = x_codes - ctx.zero_point
    exact = resolve_mode(mode, tiling, spec) == "exact"
    if isinstance(policy, Static) and exact:
        # Every group streams all planes and the ADC is exact: the outputs are the
        # exact integer product; no need to split the vector into row tiles.
        y = exact_matmul(x_codes, w_codes, spec, signed=sign_bit)
        counts = count_events(None, tiling, spec, vectors=x_codes.shape[0])
        hist = _nt_hist(None, None, spec, full=x_codes.shape[0] * tiling.n_row_tiles)
    else:
        x_tiles = to_tiles(x_codes, tiling)
        sel = policy.select(x_tiles, ctx)
        hist = _nt_hist(sel.planes.astype(jnp.int32), sel.shifts, spec)
        if exact:
            # With an exact ADC the crossbar computes sum_t (q'_t . w_t) << t_t, and the
            # digital offsets add off_t * colsum_t: together ((q' << t) + off) . w.
            eff = sel.codes if sel.shifts is None else sel.codes << sel.shifts[..., None]
            if sel.offsets is not None:
                eff = eff + sel.offsets[..., None]
            eff = eff.reshape(eff.shape[0], -1)[:, :tiling.k]
            y = exact_matmul(eff, w_codes, spec, signed=sign_bit, headroom_bits=1)
            counts = count_events(sel.planes, tiling, spec, None, sel.unit_ops)
            if sel.eff_soft is not None:  # tuning: hard forward, relaxed gradient
                soft = sel.eff_soft.reshape(eff.shape[0], -1)[:, :tiling.k]
                y_soft = soft @ w_codes.astype(jnp.float32)
                y = y.astype(jnp.float32) + (y_soft - lax.stop_gradient(y_soft))
        else:
            if sel.eff_soft is not None:
                raise ValueError("a relaxed (temperature > 0) ReDy policy needs an exact ADC "
                                 "(mode='exact' or 'auto' on a spec whose ADC cannot clip)")
            y, counts = run_tiles(sel.codes, stored, tiling, spec, signed=sign_bit,
                                  mode=mode, planes=sel.planes, shifts=sel.shifts,
                                  redy_unit_ops=sel.unit_ops)
            if sel.offsets is not None:  # per-group zero points, restored per row tile
                y = y + jnp.einsum("vt,tn->vn", sel.offsets, stored.codes.sum(axis=1))
    if not sign_bit and ctx.zero_point:
        y = y - ctx.zero_point * stored.col_sum
    return y, counts, hist


def _static_exact_conv(codes, w_codes, w_scale, bias, quant, zp, tiling, spec, kshape,
                       strides, padding, dilation, groups, kind, nonfinite):
    """Static policy, exact ADC: the crossbars compute the integer convolution of the
    zero-point-centred codes, so XLA's convolution on those integers (float32, operands
    split so every sum stays below 2**24) gives the same int32 outputs without im2col;
    the events are closed-form (every group streams every plane)."""
    kh, kw, cin_g, cout = kshape
    b = codes.shape[0]
    # Centred codes (also the two's-complement values under sign-bit streaming);
    # |x| <= 2**act_bits - 1 and padding is a real zero.
    x = (codes - zp).astype(jnp.float32)
    w = jnp.transpose(w_codes.reshape(cin_g, kh, kw, cout), (1, 2, 0, 3))  # HWIO
    conv = lambda wf: lax.conv_general_dilated(
        x, wf.astype(jnp.float32), strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=lax.Precision.HIGHEST)
    bound = tiling.k * ((1 << spec.act_bits) - 1) * (1 << (spec.weight_bits - 1))
    if bound < (1 << 24):
        y_int = conv(w).astype(jnp.int32)
    else:  # w = 16 * hi + lo, lo in [0, 15]: each partial sum stays exact
        lo = w & 15
        y_int = (conv(w - lo).astype(jnp.int32) + conv(lo).astype(jnp.int32))
    m = y_int.shape[1] * y_int.shape[2]
    y = y_int.astype(jnp.float32) * (quant.scale * w_scale)
    if bias is not None:
        y = y + bias
    counts = count_events(None, tiling, spec, vectors=b * m)
    cycles = counts.cycles
    counts = jax.tree_util.tree_map(lambda a: a * groups, counts).replace(cycles=cycles)
    hist = _nt_hist(None, None, spec, full=b * m * groups * tiling.n_row_tiles)
    record = LayerRecord(counts=counts.sum_groups(b), nt_hist=hist, nonfinite=nonfinite)
    info = LayerInfo(kind=kind, k=tiling.k, n=tiling.n, groups=groups, taps=kh * kw,
                     vectors_per_image=m, crossbars=groups * tiling.crossbars,
                     macs_per_image=m * groups * tiling.k * tiling.n)
    return y, record, info


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
        patches = codes.reshape(b, -1, cin_g)  # (B, M, K): M = prod of middle dims
        out_hw = x.shape[1:-1]
    else:
        kh, kw, cin_g, cout = kernel.shape
        patches = None
    taps = kh * kw
    k, n = cin_g * taps, cout // groups
    # (Cin_g, kh, kw) row order per group, i.e. channel-major like the patches.
    w2 = jnp.transpose(kernel.reshape(kh, kw, cin_g, cout), (2, 0, 1, 3)).reshape(k, cout)
    w_codes, w_scale = quantize_weights(w2, spec.weight_bits)
    tiling = tile(k, n, spec, taps)
    if kind != "dense":
        if isinstance(policy, Static) and resolve_mode(mode, tiling, spec) == "exact":
            y, record, info = _static_exact_conv(
                codes, w_codes, w_scale, bias, quant, zp, tiling, spec, (kh, kw, cin_g, cout),
                strides, padding, kernel_dilation, groups, kind, nonfinite)
            if ste:
                y = _straight_through(y, x, w_codes, w_scale, bias, kind,
                                      (kh, kw, cin_g, cout), strides, padding,
                                      kernel_dilation, groups)
            return y, record, info
        patches = im2col(codes, (kh, kw), strides, padding, kernel_dilation, pad_value=zp)
        out_hw = patches.shape[1:3]
        patches = patches.reshape(b, -1, groups * k)
    m = patches.shape[1]
    ctx = LayerContext(path=path, kind=kind, tiling=tiling, spec=spec, images=b,
                       vectors_per_image=m, zero_point=zp, sign_bit=sign_bit)
    xg = jnp.transpose(patches.reshape(b * m, groups, k), (1, 0, 2))  # (G, V, K)
    wg = jnp.transpose(w_codes.reshape(k, groups, n), (1, 0, 2))  # (G, K, N)
    run = lambda xc, wc: _run_group(xc, wc, tiling, spec, policy, ctx, mode, sign_bit)
    if groups == 1:
        y_int, counts, hist = run(xg[0], wg[0])
        y_int = y_int[:, None]
    else:
        y_int, counts, hist = jax.vmap(run)(xg, wg)  # (G, V, N), counts (G, V)
        y_int = jnp.transpose(y_int, (1, 0, 2))
        # Groups occupy separate crossbars and run in parallel: events add, latency is
        # that of the slowest group.
        cycles = counts.cycles.max(axis=0)
        counts = jax.tree_util.tree_map(lambda a: a.sum(axis=0), counts).replace(cycles=cycles)
        hist = hist.sum(axis=0)
    y = y_int.reshape(b * m, cout).astype(jnp.float32) * (quant.scale * w_scale)
    if bias is not None:
        y = y + bias
    y = y.reshape((b, *out_hw, cout))
    if ste:
        y = _straight_through(y, x, w_codes, w_scale, bias, kind, (kh, kw, cin_g, cout),
                              strides, padding, kernel_dilation, groups)
    record = LayerRecord(counts=counts.sum_groups(b), nt_hist=hist, nonfinite=nonfinite)
    info = LayerInfo(kind=kind, k=k, n=n, groups=groups, taps=taps, vectors_per_image=m,
                     crossbars=groups * tiling.crossbars, macs_per_image=m * groups * k * n)
    return y, record, info
