"""Precision policies: how many digit planes each group of activations streams.

A policy sees a layer's static ``act_bits`` codes, tiled per crossbar row tile
(V vectors x T row tiles x R rows), optionally with their per-group statistics
(:class:`GroupSums`), and returns a :class:`Selection`: the codes
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


class Plan(NamedTuple):
    """A policy's per-group decision, made from statistics alone (no codes needed), so a
    layer can decide for the whole batch at once and stream the codes chunk by chunk.
    Every field is (V, T) except ``unit_ops`` (V,); None where the policy has none."""

    planes: jnp.ndarray  # int32 digit planes streamed per group
    sums: GroupSums | None = None  # the statistics it was made from (relaxed tuning)
    shifts: jnp.ndarray | None = None
    offsets: jnp.ndarray | None = None
    bits: jnp.ndarray | None = None  # int32 bits n kept per group (codes clipped to n)
    unit_ops: jnp.ndarray | None = None


def bits_needed(codes: jnp.ndarray, sign_bit: bool) -> jnp.ndarray:
    """Bits to represent every code: unsigned ``bit_length(max)``; two's complement
    ``1 + bit_length`` of the largest magnitude (``~x`` for negative x)."""
    codes = jnp.asarray(codes, jnp.int32)
    if sign_bit:
        return 1 + (32 - lax.clz(jnp.where(codes < 0, ~codes, codes)))
    return 32 - lax.clz(codes)


class GroupSums(NamedTuple):
    """Sufficient statistics of every window-level group (vector, row tile), each (V, T)
    float32 (exact: codes are small integers): sum, sum of squares, max and min of the
    group's codes, padding rows excluded. Layers compute them without materialising the
    tiles where they can (convolutions: per-pixel sums pooled over the kernel window)."""

    s1: jnp.ndarray
    s2: jnp.ndarray
    max: jnp.ndarray
    min: jnp.ndarray


def tile_sums(x: jnp.ndarray, ctx: LayerContext) -> GroupSums:
    """:class:`GroupSums` of tiled codes (V, T, R)."""
    rows_used = jnp.asarray(ctx.tiling.rows_used, jnp.int32)
    valid = jnp.arange(x.shape[2])[None, :] < rows_used[:, None]  # (T, R)
    xf = x.astype(jnp.float32)
    big = jnp.float32(2 ** 30)
    return GroupSums(s1=jnp.where(valid, xf, 0).sum(-1), s2=jnp.where(valid, xf * xf, 0).sum(-1),
                     max=jnp.where(valid, xf, -big).max(-1), min=jnp.where(valid, xf, big).min(-1))


def group_stats(sums: GroupSums, ctx: LayerContext, granularity: str):
    """``(max, min, mean, std)`` of each group, each (V, T): the window-level groups
    themselves, or (``channel``) the union of an image's windows, broadcast back to
    every vector of that image."""
    cnt = jnp.asarray(ctx.tiling.rows_used, jnp.float32)[None, :]
    s1, s2, mx, mn = sums
    if granularity == "channel":
        b, m = ctx.images, ctx.vectors_per_image
        per_image = lambda a, op: jnp.repeat(op(a.reshape(b, m, -1), axis=1), m, axis=0)
        s1, s2 = per_image(s1, jnp.sum), per_image(s2, jnp.sum)
        mx, mn = per_image(mx, jnp.max), per_image(mn, jnp.min)
        cnt = cnt * m
    elif granularity != "window":
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    mean = s1 / cnt
    amax = 1 << ctx.spec.act_bits
    if granularity == "window" and ctx.tiling.rows_per_tile ** 2 * amax * amax < 2 ** 31:
        # cnt^2 var = cnt * s2 - s1^2 exactly in int32 (s1, s2 are exact integers here),
        # so the std — and a ReDy decision at a threshold — does not depend on how XLA
        # fuses or orders float operations.
        n = jnp.asarray(ctx.tiling.rows_used, jnp.int32)[None, :]
        var_num = n * s2.astype(jnp.int32) - jnp.square(s1.astype(jnp.int32))
        std = jnp.sqrt(var_num.astype(jnp.float32)) / cnt
    else:
        std = jnp.sqrt(jnp.maximum(s2 / cnt - mean * mean, 0.0))
    return mx, mn, mean, std


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

    needs_sums = False

    def plan(self, sums: GroupSums | None, ctx: LayerContext, vectors: int = 0) -> Plan:
        return Plan(jnp.full((vectors, ctx.tiling.n_row_tiles), ctx.spec.planes, jnp.int32))

    def apply(self, x: jnp.ndarray, plan: Plan, ctx: LayerContext) -> Selection:
        return Selection(x, plan.planes)

    def select(self, x: jnp.ndarray, ctx: LayerContext,
               sums: GroupSums | None = None) -> Selection:
        return self.apply(x, self.plan(None, ctx, x.shape[0]), ctx)


@struct.dataclass
class LeadingZeroSkip:
    """Lossless: each group streams only the bits its largest code needs (no LSB drop)."""

    granularity: str = struct.field(pytree_node=False, default="window")
    name: str = struct.field(pytree_node=False, default="lzs")

    needs_sums = True
    streams_static_codes = True  # lossless: only the planes streamed change

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"LeadingZeroSkip.granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")

    def select(self, x: jnp.ndarray, ctx: LayerContext,
               sums: GroupSums | None = None) -> Selection:
        """``sums``: the groups' statistics when the caller has them (else from ``x``)."""
        return self.apply(x, self.plan(tile_sums(x, ctx) if sums is None else sums, ctx), ctx)

    def apply(self, x: jnp.ndarray, plan: Plan, ctx: LayerContext) -> Selection:
        return Selection(x, plan.planes)

    def plan(self, sums: GroupSums, ctx: LayerContext, vectors: int = 0) -> Plan:
        mx, mn, _, _ = group_stats(sums, ctx, self.granularity)
        # bits_needed is monotone in the code (and, two's complement, in -code): the
        # group needs what its extreme codes need.
        bits = bits_needed(mx.astype(jnp.int32), ctx.sign_bit)
        if ctx.sign_bit:
            bits = jnp.maximum(bits, bits_needed(mn.astype(jnp.int32), True))
        planes = jnp.minimum(digits_for_bits(bits, ctx.spec), ctx.spec.planes).astype(jnp.int32)
        return Plan(planes)


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
