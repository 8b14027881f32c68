"""Precision policies: float, static, leading-zero skipping, ReDy.

A policy implements the engine's protocol (:class:`redy_jax.xbar.plan.Policy`): it
says whether it needs the window-level group statistics and returns a
:class:`~redy_jax.xbar.plan.Plan` for every group; the engine executes it. Policies are
``flax.struct`` pytrees: configuration is static (part of the jit cache key),
thresholds are arrays (traced, differentiable).
"""

from redy_jax.policy.map import PolicyMap, as_policy_map, policy_from_dict
from redy_jax.policy.redy import STATISTICS, ReDy, lossless, thresholds_from_scale
from redy_jax.policy.static import Float, LeadingZeroSkip, Static
from redy_jax.policy.stats import bits_needed, digits_for_bits, group_stats
from redy_jax.xbar.plan import GRANULARITIES, GroupSums, LayerContext, Plan, Policy

__all__ = ["GRANULARITIES", "STATISTICS", "Float", "GroupSums", "LayerContext",
           "LeadingZeroSkip", "Plan", "Policy", "PolicyMap", "ReDy", "Static",
           "as_policy_map", "bits_needed", "digits_for_bits", "group_stats", "lossless",
           "policy_from_dict", "thresholds_from_scale"]
