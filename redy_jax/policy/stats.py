"""Group statistics a policy decides from, and bit-width arithmetic on codes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.plan import GRANULARITIES, GroupSums, LayerContext


def bits_needed(codes: jnp.ndarray, sign_bit: bool) -> jnp.ndarray:
    """Bits to represent every code: unsigned ``bit_length(max)``; two's complement
    ``1 + bit_length`` of the largest magnitude (``~x`` for negative x)."""
    codes = jnp.asarray(codes, jnp.int32)
    if sign_bit:
        return 1 + (32 - lax.clz(jnp.where(codes < 0, ~codes, codes)))
    return 32 - lax.clz(codes)


def digits_for_bits(bits: jnp.ndarray, spec: HardwareSpec) -> jnp.ndarray:
    """DAC digit planes that stream ``bits`` bits."""
    return -(-bits // spec.dac_bits)


def group_stats(sums: GroupSums, ctx: LayerContext, granularity: str):
    """``(max, min, mean, std)`` of each group: the window-level groups themselves,
    each (V, T), or (``channel``) the union of an image's windows, each (images, T)
    (:func:`per_vector` broadcasts decisions made on them back to every vector)."""
    cnt = jnp.asarray(ctx.tiling.rows_used, jnp.float32)[None, :]
    s1, s2, mx, mn = sums
    if granularity == "channel":
        b, m = ctx.images, ctx.vectors_per_image
        per_image = lambda a, op: op(a.reshape(b, m, -1), axis=1)
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


def per_vector(tree, ctx: LayerContext, granularity: str):
    """Decisions of :func:`group_stats`' groups, leaves (groups, T, ...), as leaves (V,
    T, ...) for every vector: ``channel`` decisions are repeated over each image's
    vectors (made once per image, not on per-vector copies of the image's statistics:
    the channel-ReDy ResNet-20 pass went from ~2.5x to ~1.9x the float pass)."""
    if granularity == "window":
        return tree
    m = ctx.vectors_per_image
    return jax.tree_util.tree_map(lambda a: jnp.repeat(a, m, axis=0), tree)


def unit_counts(ctx: LayerContext, granularity: str, vectors: int, meta_bits: int) -> dict:
    """The per-vector hardware work of a policy's decision unit (``Plan`` fields):

    ``unit_ops``: activations through the unit — ``window``: every activation of every
    window (K per vector); ``channel``: the feature map once (input channels per vector
    of a kernel-wide stride). ``meta_bits``: ``meta_bits`` per decided group (per
    window, or per image for ``channel``, charged to the image's first vector).
    ``stat_reads``: ``channel`` groups read the feature map once more before streaming
    (their decision needs all of it)."""
    t = ctx.tiling
    ones = jnp.ones((vectors,), jnp.int32)
    if granularity == "window":
        return {"unit_ops": ones * t.k, "meta_bits": ones * (t.n_row_tiles * meta_bits)}
    per_map = -(-t.k // t.taps)
    first = (jnp.arange(vectors) % ctx.vectors_per_image == 0).astype(jnp.int32)
    return {"unit_ops": ones * per_map, "stat_reads": ones * per_map,
            "meta_bits": first * (t.n_row_tiles * meta_bits)}


__all__ = ["bits_needed", "digits_for_bits", "group_stats", "per_vector", "unit_counts"]
