"""Precision policies: how many digit planes each group of activations streams.

A policy sees a layer's static ``act_bits`` codes, tiled per crossbar row tile
(V vectors x T row tiles x R rows), and returns a :class:`Selection`: the codes
actually streamed (shifted right by ``t`` LSBs), the digit planes ``n`` streamed
per group, the shifts ``t`` and the activations its hardware unit processed.

A *group* is the set of activations driving one row tile: per input vector
(``granularity='window'``) or per image over all vectors of the layer
(``granularity='channel'``).

Policies are ``flax.struct`` pytrees: configuration is static (part of the jit
cache key), thresholds are arrays (traced, differentiable).
"""

from __future__ import annotations

import fnmatch
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.layout import Tiling

GRANULARITIES = ("window", "channel")


class LayerContext(NamedTuple):
    """What a policy knows about the layer it is applied to (static)."""

    path: str
    kind: str  # "conv", "depthwise", "grouped", "dense"
    tiling: Tiling
    spec: HardwareSpec
    images: int
    vectors_per_image: int
    zero_point: int
    sign_bit: bool


class Selection(NamedTuple):
    """A policy's decision for one layer.

    The value a streamed code stands for is ``offsets + codes << shifts`` (per group),
    so the layer output is ``sum_t (partial_t << shift_t) + offset_t * colsum_t``.
    """

    codes: jnp.ndarray  # int32 (V, T, R) streamed codes
    planes: jnp.ndarray  # int32 (V, T) digit planes streamed per group
    shifts: jnp.ndarray | None = None  # int32 (V, T) LSBs dropped per group
    unit_ops: jnp.ndarray | None = None  # int32 (V,) activations through the ReDy unit
    offsets: jnp.ndarray | None = None  # int32 (V, T) per-group zero point (digital)
    eff_soft: jnp.ndarray | None = None  # float (V, T, R) relaxed effective codes (tuning)


def bits_needed(codes: jnp.ndarray, sign_bit: bool) -> jnp.ndarray:
    """Bits to represent every code: unsigned ``bit_length(max)``; two's complement
    ``1 + bit_length`` of the largest magnitude (``~x`` for negative x)."""
    codes = jnp.asarray(codes, jnp.int32)
    if sign_bit:
        return 1 + (32 - lax.clz(jnp.where(codes < 0, ~codes, codes)))
    return 32 - lax.clz(codes)


def group_reduce(x: jnp.ndarray, ctx: LayerContext, granularity: str, op) -> jnp.ndarray:
    """Reduces (V, T, R) over each group's activations -> (V, T) (broadcast per vector)."""
    if granularity == "window":
        return op(x, axis=2)
    b, m = ctx.images, ctx.vectors_per_image
    g = op(x.reshape(b, m, *x.shape[1:]), axis=(1, 3))  # (B, T)
    return jnp.repeat(g, m, axis=0)


def digits_for_bits(bits: jnp.ndarray, spec: HardwareSpec) -> jnp.ndarray:
    return -(-bits // spec.dac_bits)


@struct.dataclass
class Float:
    """The layer runs in float (no crossbar, no events): the accuracy reference."""

    name: str = struct.field(pytree_node=False, default="float")


@struct.dataclass
class Static:
    """ISAAC-like baseline: every group streams all ``act_bits`` bits."""

    name: str = struct.field(pytree_node=False, default="static")

    def select(self, x: jnp.ndarray, ctx: LayerContext) -> Selection:
        v, t = x.shape[:2]
        return Selection(x, jnp.full((v, t), ctx.spec.planes, jnp.int32))


@struct.dataclass
class LeadingZeroSkip:
    """Lossless: each group streams only the bits its largest code needs (no LSB drop)."""

    granularity: str = struct.field(pytree_node=False, default="window")
    name: str = struct.field(pytree_node=False, default="lzs")

    def select(self, x: jnp.ndarray, ctx: LayerContext) -> Selection:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")
        bits = bits_needed(x, ctx.sign_bit)
        bits = group_reduce(bits, ctx, self.granularity, jnp.max)
        planes = jnp.minimum(digits_for_bits(bits, ctx.spec), ctx.spec.planes).astype(jnp.int32)
        return Selection(x, planes)


@jax.tree_util.register_pytree_node_class
class PolicyMap:
    """Per-layer policy by module path: the first matching ``fnmatch`` pattern in
    ``rules`` (a sequence of ``(pattern, policy)``) wins, else ``default`` (or
    ``dense_default`` / ``depthwise_default`` for those layer kinds, when set: the paper
    treats conv layers only). A pytree: patterns are static, policies are children."""

    def __init__(self, default, rules=(), dense_default=None, depthwise_default=None):
        self.default = default
        self.rules = tuple((str(p), q) for p, q in rules)
        self.dense_default = dense_default
        self.depthwise_default = depthwise_default

    def tree_flatten(self):
        patterns = tuple(p for p, _ in self.rules)
        children = (self.default, tuple(q for _, q in self.rules), self.dense_default,
                    self.depthwise_default)
        return children, patterns

    @classmethod
    def tree_unflatten(cls, patterns, children):
        default, policies, dense, depthwise = children
        return cls(default, tuple(zip(patterns, policies, strict=True)), dense, depthwise)

    def for_layer(self, path: str, kind: str):
        for pattern, policy in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return policy
        if kind == "dense" and self.dense_default is not None:
            return self.dense_default
        if kind == "depthwise" and self.depthwise_default is not None:
            return self.depthwise_default
        return self.default

    def __repr__(self):
        return (f"PolicyMap(default={self.default!r}, rules={len(self.rules)}, "
                f"dense_default={self.dense_default!r}, "
                f"depthwise_default={self.depthwise_default!r})")


def as_policy_map(policy) -> PolicyMap:
    """A single policy applies to every layer; a PolicyMap passes through."""
    return policy if isinstance(policy, PolicyMap) else PolicyMap(default=policy)
