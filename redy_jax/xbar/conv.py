"""Exact-ADC convolutions as one native convolution of effective integer inputs.

Where no conversion can clip or round, a crossbar layer computes the integer product
of the values its streamed codes stand for. When those values are a per-pixel map of
the input — the static codes themselves (static precision, leading-zero skipping) or
codes requantised per image and channel group (``channel`` granularity) — XLA's own
convolution on them gives the crossbars' outputs without lowering (float32 operands,
exact per :mod:`redy_jax.xbar.exact`). Events come from the plan (closed form).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from redy_jax.xbar.exact import HIGHEST, code_bound, exact_conv
from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.plan import Plan, effective_values, requant_constants


class ConvShape(NamedTuple):
    """Static geometry of a (grouped) 2-D convolution mapped to crossbars."""

    kernel: tuple[int, int]
    cin_g: int  # input channels per group
    cout: int
    groups: int
    strides: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def hwio(self, w_codes: jnp.ndarray) -> jnp.ndarray:
        """Weight matrix (K, Cout) in channel-major row order -> HWIO kernel."""
        kh, kw = self.kernel
        return jnp.transpose(w_codes.reshape(self.cin_g, kh, kw, self.cout), (1, 2, 0, 3))


def static_conv(xs: jnp.ndarray, w_codes, shape: ConvShape, zero_point: int,
                sign_bit: bool, act_bits: int, weight_bits: int) -> jnp.ndarray:
    """Outputs (B, Ho, Wo, Cout) int32 of a plan that streams the static codes unchanged
    (static precision, leading-zero skipping; the plan only changes the planes streamed,
    not the values): the integer convolution of the centred codes (two's-complement
    values under sign-bit streaming, else ``q - zero_point``; |x| <= 2^act_bits - 1).
    ``xs``: *unpadded* streamed codes (B, H, W, G * Cin_g): spatial padding streams the
    code of a real zero, whose centred value is 0, so the convolution pads with zeros
    itself. (Padding first and convolving VALID gives the same integers, but XLA:CPU
    cannot fold a materialised padded operand back into the convolution: up to ~4x
    slower on some shapes.)"""
    centred = xs if sign_bit else xs - zero_point
    return exact_conv(centred, shape.hwio(w_codes), shape.strides, shape.pads,
                      shape.dilation, shape.groups, (1 << act_bits) - 1, weight_bits)


def channel_conv(xs: jnp.ndarray, plan: Plan, w_codes, tiling: Tiling, shape: ConvShape,
                 zero_point: int, sign_bit: bool, act_bits: int,
                 weight_bits: int) -> jnp.ndarray:
    """Outputs of a plan whose groups are per image (``channel`` granularity): every
    input pixel of a row tile's channels is requantised the same way wherever a window
    reads it, so the effective values are a per-image, per-channel map of the input and
    one native convolution replaces im2col. ``xs``: *unpadded* streamed codes
    (B, H, W, G * Cin_g); plan leaves (G, B * m, T).

    Spatial padding streams the zero code, requantised like every pixel of its channel:
    a per-image, per-channel value ``p`` that need not be 0. The convolution of the
    padded map is computed as the zero-padded convolution of ``eff - p`` (zero at the
    padding) plus ``p`` times each output's weight sum over all taps (every window
    lies inside the padded map): the same integers, with the padding folded into the
    native convolution (a materialised padded operand is up to ~4x slower on XLA:CPU)."""
    b = xs.shape[0]
    groups, cin_g = shape.groups, shape.cin_g
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // tiling.taps
    n = shape.cout // groups
    # each tile's constants, per image, spread over its channels: (B, 1, 1, G * Cin_g)
    tile_of = np.arange(cin_g) // ct
    per_channel = lambda a: jnp.transpose(a.reshape(groups, b, -1, t)[:, :, 0][..., tile_of],
                                          (1, 0, 2)).reshape(b, 1, 1, groups * cin_g)
    aff = tuple(per_channel(a)
                for a in requant_constants(plan.offsets, plan.shifts, plan.bits, sign_bit))

    def effective(x):
        """Streamed codes -> centred effective values (int32): one elementwise pass
        with per-image, per-channel constants."""
        eff = effective_values(x, aff)
        return eff if sign_bit else eff - zero_point

    eff = effective(xs)
    pad = effective(jnp.full((b, 1, 1, groups * cin_g), zero_point, xs.dtype))  # (B,1,1,C)
    bound = code_bound(act_bits, sign_bit, True)
    y = exact_conv(eff - pad, shape.hwio(w_codes), shape.strides,
                   shape.pads, shape.dilation, groups, 2 * bound, weight_bits)
    # + p times the weight sums over taps: (B, G, Cin_g) x (Cin_g, G, n), int32 (exact)
    w_sum = w_codes.reshape(cin_g, shape.taps, groups, n).sum(axis=1)
    y_pad = jnp.einsum("bgc,cgn->bgn", pad.reshape(b, groups, cin_g), w_sum,
                       preferred_element_type=jnp.int32, precision=HIGHEST)
    return y + y_pad.reshape(b, 1, 1, shape.cout)


__all__ = ["ConvShape", "channel_conv", "static_conv"]
