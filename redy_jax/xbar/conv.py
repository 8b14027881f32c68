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

import jax
import jax.numpy as jnp

from redy_jax.xbar.exact import code_bound, exact_conv
from redy_jax.xbar.layout import Tiling
from redy_jax.xbar.plan import Plan, requantize


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


def static_conv(xs: jnp.ndarray, plan: Plan, w_codes, tiling: Tiling, shape: ConvShape,
                zero_point: int, sign_bit: bool, act_bits: int,
                weight_bits: int) -> jnp.ndarray:
    """Outputs (B, Ho, Wo, Cout) int32 of a plan that streams the static codes unchanged
    (static precision, leading-zero skipping): the integer convolution of the centred
    codes (two's-complement values under sign-bit streaming, else ``q - zero_point``;
    |x| <= 2^act_bits - 1, and padding is a real zero). ``xs``: spatially padded
    streamed codes (B, Hp, Wp, G * Cin_g)."""
    del plan, tiling  # the plan only changes the planes streamed, not the values
    centred = xs if sign_bit else xs - zero_point
    return exact_conv(centred, shape.hwio(w_codes), shape.strides, "VALID", shape.dilation,
                      shape.groups, (1 << act_bits) - 1, weight_bits)


def channel_conv(xs: jnp.ndarray, plan: Plan, w_codes, tiling: Tiling, shape: ConvShape,
                 zero_point: int, sign_bit: bool, act_bits: int,
                 weight_bits: int) -> jnp.ndarray:
    """Outputs of a plan whose groups are per image (``channel`` granularity): every
    input pixel of a row tile's channels is requantised the same way wherever a window
    reads it, so the effective values are a per-image, per-channel map of the input and
    one native convolution replaces im2col. ``xs``: spatially padded streamed codes
    (B, Hp, Wp, G * Cin_g); plan leaves (G, B * m, T)."""
    b = xs.shape[0]
    groups, cin_g = shape.groups, shape.cin_g
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // tiling.taps
    first = lambda a: a.reshape(groups, b, -1, t)[:, :, 0]  # (G, B, T): same for all m
    x = xs.reshape(b, -1, groups, cin_g)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, t * ct - cin_g)))
    x = jnp.moveaxis(x.reshape(b, -1, groups, t, ct), 2, 0)  # (G, B, P, T, ct)
    offsets = (first(plan.offsets) if plan.offsets is not None
               else jnp.zeros((groups, b, t), jnp.int32))
    shifts, bits = first(plan.shifts), first(plan.bits)
    per = lambda a: a[:, :, None, :]  # (G, B, 1, T): broadcast over pixels
    codes = jax.vmap(lambda xg, o, sh, n: requantize(xg, o, sh, n, sign_bit))(
        x, per(offsets), per(shifts), per(bits))
    eff = (codes << per(shifts)[..., None]) + per(offsets)[..., None]
    eff = jnp.moveaxis(eff, 0, 2).reshape(b, *xs.shape[1:3], groups, t * ct)[..., :cin_g]
    eff = eff.reshape(xs.shape)
    if not sign_bit:
        eff = eff - zero_point  # centred: the zero point's column sums are removed here
    return exact_conv(eff, shape.hwio(w_codes), shape.strides, "VALID", shape.dilation,
                      groups, code_bound(act_bits, sign_bit, True), weight_bits)


__all__ = ["ConvShape", "channel_conv", "static_conv"]
