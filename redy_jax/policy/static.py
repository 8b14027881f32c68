"""The float reference, static precision and lossless leading-zero skipping."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from redy_jax.policy.stats import bits_needed, digits_for_bits, group_stats
from redy_jax.xbar.plan import GRANULARITIES, GroupSums, LayerContext, Plan


@struct.dataclass
class Float:
    """The layer runs in float (no crossbar, no events): the accuracy reference."""

    name: str = struct.field(pytree_node=False, default="float")

    crossbar = False
    statistics = False

    def plan(self, sums, ctx):  # pragma: no cover - never asked: crossbar is False
        raise TypeError("the Float policy runs layers in float; it has no crossbar plan")


@struct.dataclass
class Static:
    """ISAAC-like baseline: every group streams all ``act_bits`` bits."""

    name: str = struct.field(pytree_node=False, default="static")

    crossbar = True
    statistics = False

    def plan(self, sums: GroupSums | None, ctx: LayerContext) -> Plan:
        return Plan()


@struct.dataclass
class LeadingZeroSkip:
    """Lossless: each group streams only the bits its largest code needs (no LSB drop)."""

    granularity: str = struct.field(pytree_node=False, default="window")
    name: str = struct.field(pytree_node=False, default="lzs")

    crossbar = True
    statistics = True

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"LeadingZeroSkip.granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")

    def plan(self, sums: GroupSums, ctx: LayerContext) -> Plan:
        mx, mn, _, _ = group_stats(sums, ctx, self.granularity)
        # bits_needed is monotone in the code (and, two's complement, in -code): the
        # group needs what its extreme codes need.
        bits = bits_needed(mx.astype(jnp.int32), ctx.sign_bit)
        if ctx.sign_bit:
            bits = jnp.maximum(bits, bits_needed(mn.astype(jnp.int32), True))
        planes = jnp.minimum(digits_for_bits(bits, ctx.spec), ctx.spec.planes).astype(jnp.int32)
        return Plan(planes=planes, granularity=self.granularity)


__all__ = ["Float", "LeadingZeroSkip", "Static"]
