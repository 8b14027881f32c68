"""Lowering of convolutions to crossbar matrix products (im2col)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def tap_slices(xp, kernel, strides, dilation=(1, 1)) -> list:
    """The ``kh * kw`` strided views of an already padded NHWC ``xp`` that a VALID
    convolution reads, one per kernel tap in (row, column) order, each
    (B, Ho, Wo, C): tap (i, j) of output pixel (r, c) is ``xp[:, r * sh + i * dh,
    c * sw + j * dw]``. Pure data movement."""
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
    kernel tap fastest), by strided slicing (pure data movement, no arithmetic).

    ``pad_value`` fills the padding: the code of a real zero (the zero point).
    """
    kh, kw = kernel
    if isinstance(padding, str):
        eff = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
        padding = lax.padtype_to_pads(x.shape[1:3], eff, strides, padding)
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    taps = tap_slices(xp, kernel, strides, dilation)
    return jnp.stack(taps, axis=-1).reshape(*taps[0].shape[:3], -1)
