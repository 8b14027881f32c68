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
from redy_jax.policy.base import LayerContext
from redy_jax.quant.activations import ActQuant, quantize
from redy_jax.xbar.engine import Counts, run_tiles, to_tiles
from redy_jax.xbar.layout import tile
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


def _nt_hist(planes, shifts, spec: HardwareSpec):
    p = spec.planes + 1
    t = jnp.zeros_like(planes) if shifts is None else jnp.clip(shifts, 0, p - 1)
    idx = jnp.clip(planes, 0, p - 1) * p + t
    return jnp.bincount(idx.reshape(-1), length=p * p).reshape(p, p).astype(jnp.int32)


def _run_group(x_codes, w_codes, tiling, spec, policy, ctx, mode, sign_bit):
    """One group: x_codes (V, K) unsigned codes, w_codes (K, N) -> (y_int, counts, hist)."""
    stored = store_weights(w_codes, tiling, spec)
    x_tiles = to_tiles(x_codes, tiling)
    if sign_bit:  # stream two's complement values q - 2^(b-1)
        x_tiles = x_tiles - ctx.zero_point
    sel = policy.select(x_tiles, ctx)
    y, counts = run_tiles(sel.codes, stored, tiling, spec, signed=sign_bit, mode=mode,
                          planes=sel.planes, shifts=sel.shifts, redy_unit_ops=sel.unit_ops)
    if sel.offsets is not None:  # per-group zero points, restored digitally per row tile
        y = y + jnp.einsum("vt,tn->vn", sel.offsets, stored.codes.sum(axis=1))
    if not sign_bit and ctx.zero_point:
        y = y - ctx.zero_point * stored.col_sum
    return y, counts, _nt_hist(sel.planes, sel.shifts, spec)


def crossbar_layer(x, kernel, bias, *, kind: str, path: str, quant: ActQuant, policy,
                   spec: HardwareSpec, mode: str, strides=(1, 1), padding="VALID",
                   kernel_dilation=(1, 1), groups: int = 1):
    """Simulates ``y = conv(x, kernel) + bias`` (or dense) on crossbars.

    Args:
      x: float input, NHWC for convs, (B, Din) for dense.
      kernel: HWIO conv kernel (kh, kw, Cin/groups, Cout) or dense (Din, Dout).
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
        # im2col on real-zero-centred values, so padding holds the code of 0.0 (= zp).
        centred = (codes - zp).astype(jnp.float32)
        p = lax.conv_general_dilated_patches(
            centred, (kh, kw), strides, padding, rhs_dilation=kernel_dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # features: channel-major
        out_hw = p.shape[1:3]
        patches = (jnp.round(p).astype(jnp.int32) + zp).reshape(b, -1, groups * cin_g * kh * kw)
    m = patches.shape[1]
    taps = kh * kw
    k, n = cin_g * taps, cout // groups
    # (Cin_g, kh, kw) row order per group, i.e. channel-major like the patches.
    w2 = jnp.transpose(kernel.reshape(kh, kw, cin_g, cout), (2, 0, 1, 3)).reshape(k, cout)
    w_codes, w_scale = quantize_weights(w2, spec.weight_bits)
    tiling = tile(k, n, spec, taps)
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
    record = LayerRecord(counts=counts.sum_groups(b), nt_hist=hist, nonfinite=nonfinite)
    info = LayerInfo(kind=kind, k=k, n=n, groups=groups, taps=taps, vectors_per_image=m,
                     crossbars=groups * tiling.crossbars, macs_per_image=m * groups * k * n)
    return y, record, info
