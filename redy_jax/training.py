"""Training helpers: a drop-in ``conv_general_dilated`` that trains faster on XLA:CPU.

XLA:CPU is slow at small-channel convolutions and especially at their kernel
gradients (16->16 channels at 28x28: forward 9 ms, kernel gradient 110-190 ms).
Here a dense conv is computed as one matmul over im2col patches (forward),
``patches^T @ dy`` (kernel gradient) and ``dy @ W^T`` scattered back per kernel
tap (input gradient); a depthwise conv keeps XLA's forward and input gradient
and computes its kernel gradient per tap. Values equal ``lax.conv_general_dilated``
up to float rounding; training with it changes speed only (measured on a ResNet-20
train step at batch 128: 2.17 s -> 1.60 s; small MobileNetV2: 3.9 s -> 2.6 s).

Use in a model: ``conv=functools.partial(nn.Conv, conv_general_dilated=fast_conv)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.xbar.lowering import tap_slices

_DN = ("NHWC", "HWIO", "NHWC")


def _pad(x, pads):
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


# ---- dense conv: im2col matmuls in forward and both gradients ----
def _dense_fwd_impl(x, w, s, pads):
    kh, kw, cin, cout = w.shape
    taps = tap_slices(_pad(x, pads), (kh, kw), s)
    ho, wo = taps[0].shape[1:3]
    patches = jnp.concatenate(taps, -1)
    y = patches.reshape(-1, kh * kw * cin) @ w.reshape(kh * kw * cin, cout)
    return y.reshape(x.shape[0], ho, wo, cout), patches


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense_conv(x, w, s, pads):
    return _dense_fwd_impl(x, w, s, pads)[0]


def _dense_fwd(x, w, s, pads):
    y, patches = _dense_fwd_impl(x, w, s, pads)
    return y, (x.shape, patches, w)


def _dense_bwd(s, pads, res, g):
    xshape, patches, w = res
    kh, kw, cin, cout = w.shape
    n, ho, wo, _ = g.shape
    g2 = g.reshape(-1, cout)
    dw = (patches.reshape(-1, kh * kw * cin).T @ g2).reshape(w.shape)
    dp = (g2 @ w.reshape(-1, cout).T).reshape(n, ho, wo, kh * kw, cin)
    hp, wp = xshape[1] + sum(pads[0]), xshape[2] + sum(pads[1])
    dxp = jnp.zeros((n, hp, wp, cin), g.dtype)
    for k in range(kh * kw):  # static unroll over kernel taps
        i, j = divmod(k, kw)
        dxp = dxp.at[:, i:i + (ho - 1) * s[0] + 1:s[0], j:j + (wo - 1) * s[1] + 1:s[1], :].add(
            dp[:, :, :, k])
    return dxp[:, pads[0][0]:hp - pads[0][1], pads[1][0]:wp - pads[1][1], :], dw


_dense_conv.defvjp(_dense_fwd, _dense_bwd)


# ---- depthwise conv: XLA forward / input gradient, per-tap kernel gradient ----
def _dw_impl(x, w, s, pads):
    return lax.conv_general_dilated(x, w, s, pads, dimension_numbers=_DN,
                                    feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_conv(x, w, s, pads):
    return _dw_impl(x, w, s, pads)


def _dw_fwd(x, w, s, pads):
    return _dw_impl(x, w, s, pads), (x, w)


def _dw_bwd(s, pads, res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda x_: _dw_impl(x_, w, s, pads), x)
    (dx,) = vjp_x(g)
    kh, kw = w.shape[:2]
    taps = tap_slices(_pad(x, pads), (kh, kw), s)
    dw = jnp.stack([jnp.einsum("nhwc,nhwc->c", t, g) for t in taps]).reshape(w.shape)
    return dx, dw


_depthwise_conv.defvjp(_dw_fwd, _dw_bwd)


def fast_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, batch_group_count=1,
              precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated``'s signature. Undilated NHWC/HWIO 2-D convs, dense or
    depthwise, take the fast path; anything else falls back to ``lax``."""
    fallback = functools.partial(
        lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
    if lhs.ndim != 4:
        return fallback()
    if dimension_numbers is not None:
        if dimension_numbers != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN):
            return fallback()
    dilated = any(d != 1 for d in (lhs_dilation or ())) or any(
        d != 1 for d in (rhs_dilation or ()))
    cin = lhs.shape[-1]
    depthwise = feature_group_count == cin and rhs.shape[2] == 1 and rhs.shape[3] == cin
    if dilated or batch_group_count != 1 or not (feature_group_count == 1 or depthwise):
        return fallback()
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    strides = tuple(int(v) for v in window_strides)
    if depthwise and cin > 1:
        return _depthwise_conv(lhs, rhs, strides, pads)
    return _dense_conv(lhs, rhs, strides, pads)
