"""Precision policies: float, static 8-bit, leading-zero skipping, ReDy."""

from redy_jax.policy.base import (
    GRANULARITIES,
    Float,
    LayerContext,
    LeadingZeroSkip,
    PolicyMap,
    Selection,
    Static,
    as_policy_map,
    bits_needed,
)

__all__ = ["GRANULARITIES", "Float", "LayerContext", "LeadingZeroSkip", "PolicyMap",
           "Selection", "Static", "as_policy_map", "bits_needed"]
