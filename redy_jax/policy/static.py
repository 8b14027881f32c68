"""The float reference, static precision and lossless leading-zero skipping."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from redy_jax.policy.stats import (
    bits_needed,
    digits_for_bits,
    group_stats,
    per_vector,
    unit_counts,
)
from redy_jax.xbar.plan import GRANULARITIES, GroupSums, LayerContext, Plan


@struct.dataclass
class Float:
    """The layer runs in float (no crossbar, no events): the accuracy reference."""

    name: str = struct.field(pytree_node=False, default="float")

    crossbar = False
    statistics = False

    def to_dict(self) -> dict:
        return {"kind": "float"}

    def plan(self, sums, ctx):  # pragma: no cover - never asked: crossbar is False
        raise TypeError("the Float policy runs layers in float; it has no crossbar plan")


@struct.dataclass
class Static:
    """ISAAC-like baseline: every group streams all of its layer's code bits (the
    calibration's ``bits``: 8 for the ISAAC baseline, fewer for static k-bit or
    per-layer mixed precision)."""

    name: str = struct.field(pytree_node=False, default="static")

    crossbar = True
    statistics = False

    def to_dict(self) -> dict:
        return {"kind": "static"}

    def plan(self, sums: GroupSums | None, ctx: LayerContext) -> Plan:
        return Plan()


@struct.dataclass
class LeadingZeroSkip:
    """Lossless: each group streams only the bits its largest code needs (no LSB drop).

    The detector (an OR-reduction of the group's codes) sees every activation of every
    group (``lzs_unit_ops``); the planes n of each group are sent to its crossbars
    (``redy_meta_bits / 2`` bits per group); ``channel`` groups read the input feature
    map once more before streaming."""

    granularity: str = struct.field(pytree_node=False, default="window")
    name: str = struct.field(pytree_node=False, default="lzs")

    crossbar = True
    statistics = True

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"LeadingZeroSkip.granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")

    def to_dict(self) -> dict:
        return {"kind": "lzs", "granularity": self.granularity}

    def plan(self, sums: GroupSums, ctx: LayerContext) -> Plan:
        mx, mn, _, _ = group_stats(sums, ctx, self.granularity)
        # bits_needed is monotone in the code (and, two's complement, in -code): the
        # group needs what its extreme codes need.
        bits = bits_needed(mx.astype(jnp.int32), ctx.sign_bit)
        if ctx.sign_bit:
            bits = jnp.maximum(bits, bits_needed(mn.astype(jnp.int32), True))
        planes = jnp.minimum(digits_for_bits(bits, ctx.spec),
                             digits_for_bits(ctx.bits, ctx.spec)).astype(jnp.int32)
        planes = per_vector(planes, ctx, self.granularity)
        return Plan(planes=planes, granularity=self.granularity, unit="lzs",
                    **unit_counts(ctx, self.granularity, planes.shape[0],
                                  ctx.spec.redy_meta_bits // 2))


__all__ = ["Float", "LeadingZeroSkip", "Static"]
