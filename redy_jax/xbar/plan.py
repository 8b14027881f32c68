"""The execution protocol between precision policies and the crossbar engine.

A policy (``redy_jax.policy``) never runs crossbars itself. For each layer it states
what it needs and what it decided; the engine (:mod:`redy_jax.xbar.layer`) does the
rest, choosing the fastest execution that gives the hardware's result:

1. ``policy.statistics``: whether the policy needs the :class:`GroupSums` of every
   window-level group (the activations driving one row tile for one input vector).
   The engine computes them without lowering where it can.
2. ``policy.plan(sums, ctx) -> Plan``: the per-group decision for the whole batch —
   planes streamed, and, for a requantising policy, the group's offset, shift ``t``
   and kept bits ``n`` (the streamed code is ``clip(round((q - offset) / 2^t), n
   bits)``, standing for ``(code << t) + offset``), plus, when tuning, a
   :class:`Relaxation` over candidate decisions.
3. The engine streams the codes as planned and counts the events from the plan.

Like optax's ``GradientTransformation``, the protocol is small and every policy
implements the same two members; nothing in the engine asks which policy it runs.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax.numpy as jnp
from flax import struct

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.layout import Tiling

GRANULARITIES = ("window", "channel")
"""Which activations share one decision: ``window``, the row tile of one input vector;
``channel``, the row tile's channels over one image's whole feature map."""


class LayerContext(NamedTuple):
    """What a policy knows about the layer it is applied to."""

    path: str
    kind: str  # "conv", "depthwise", "grouped", "dense"
    tiling: Tiling
    spec: HardwareSpec
    images: int
    vectors_per_image: int
    signed: bool
    """The layer's codes carry a zero point (or are two's complement under sign_bit)."""
    sign_bit: bool
    """Codes are streamed as two's complement (a sign plane)."""
    bits: int | jnp.ndarray = 8
    """The layer's code width [bits] (<= ``spec.act_bits``; a traced scalar inside the
    simulated pass)."""

    @property
    def zero_point(self) -> bool:
        """The layer streams unsigned codes with a zero point (removed digitally)."""
        return self.signed and not self.sign_bit


class GroupSums(NamedTuple):
    """Sufficient statistics of every window-level group (vector, row tile), each (V, T)
    float32 (exact: codes are small integers): sum, sum of squares, max and min of the
    group's codes, padding rows excluded (see :mod:`redy_jax.xbar.statistics`)."""

    s1: jnp.ndarray
    s2: jnp.ndarray
    max: jnp.ndarray
    min: jnp.ndarray


@struct.dataclass
class Relaxation:
    """Candidate decisions of a relaxed (tuning) policy and their probabilities.

    Candidate ``j`` drops ``j`` LSBs; each of ``offsets``, ``shifts``, ``bits`` and
    ``planes`` is (V, T, J) and ``probs`` (V, T, J - 1) holds ``P(t >= j)`` for
    ``j = 1 .. J-1``. The engine streams the hard decision and takes gradients of the
    expectation ``f(0) + sum_j P(t >= j) (f(j) - f(j-1))`` of the planes and of the
    effective codes (see ``ReDy.plan``)."""

    offsets: jnp.ndarray
    shifts: jnp.ndarray
    bits: jnp.ndarray
    planes: jnp.ndarray
    probs: jnp.ndarray


@struct.dataclass
class Plan:
    """A policy's decision for every group of a layer's batch. Array fields are (V, T)
    except ``unit_ops`` (V,); None where the policy has none.

    ``planes``: digit planes streamed per group (None: every group streams all the
    layer's planes). ``bits``: None when the static codes are streamed unchanged
    (static, leading-zero skipping); else the group is requantised with ``offsets``
    (None: 0), ``shifts`` and ``bits``. ``unit_ops``: activations through the policy's
    decision unit, ``unit`` (``"redy"``, ``"lzs"``; static). ``meta_bits``: metadata
    bits (n, t) per vector, sent to every crossbar of the group's row tile.
    ``stat_reads``: activations read once more for statistics, per vector.
    ``granularity``: the groups the decisions cover (static)."""

    planes: jnp.ndarray | None = None
    shifts: jnp.ndarray | None = None
    offsets: jnp.ndarray | None = None
    bits: jnp.ndarray | None = None
    unit_ops: jnp.ndarray | None = None
    meta_bits: jnp.ndarray | None = None
    stat_reads: jnp.ndarray | None = None
    relaxation: Relaxation | None = None
    unit: str = struct.field(pytree_node=False, default="redy")
    granularity: str = struct.field(pytree_node=False, default="window")

    @property
    def requantizes(self) -> bool:
        """True when streamed codes differ from the static codes (static structure)."""
        return self.bits is not None


class Policy(Protocol):
    """What the engine asks of a precision policy (see the module docstring)."""

    name: str
    crossbar: bool
    """False for the float reference: the layer runs in float, no crossbar, no events."""
    statistics: bool
    """True when :meth:`plan` needs the window-level :class:`GroupSums`."""

    def plan(self, sums: GroupSums | None, ctx: LayerContext) -> Plan: ...


def round_shift(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """round(x / 2^t), half up, for int32 x and per-group t (broadcast)."""
    half = jnp.where(t > 0, jnp.left_shift(1, jnp.maximum(t - 1, 0)), 0)
    return (x + half) >> t


def code_range(bits: jnp.ndarray, sign_bit: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(lo, hi)``: the codes ``bits`` bits hold (two's complement under sign-bit)."""
    if sign_bit:
        hi = jnp.left_shift(1, bits - 1) - 1
        return -hi - 1, hi
    return jnp.zeros_like(bits), jnp.left_shift(1, bits) - 1


def requantize(x: jnp.ndarray, offsets, shifts, bits, sign_bit: bool) -> jnp.ndarray:
    """Streamed codes ``clip(round((x - offset) / 2^t), n bits)`` (int32) of codes
    ``x`` (V, T, R), the group parameters (V, T) broadcast over the R rows."""
    q = round_shift(x - offsets[..., None], shifts[..., None])
    lo, hi = code_range(bits, sign_bit)
    return jnp.clip(q, lo[..., None], hi[..., None]).astype(jnp.int32)


def streamed_codes(x_tiles: jnp.ndarray, plan: Plan, sign_bit: bool) -> jnp.ndarray:
    """The codes a plan streams for static codes ``x_tiles`` (V, T, R): requantised per
    group when the plan requantises, else unchanged."""
    if not plan.requantizes:
        return x_tiles
    offsets = jnp.zeros_like(plan.shifts) if plan.offsets is None else plan.offsets
    return requantize(x_tiles, offsets, plan.shifts, plan.bits, sign_bit)


def requant_constants(offsets, shifts, bits, sign_bit: bool):
    """:func:`requantize` as per-group int32 constants (each shaped like ``shifts``) for
    :func:`effective_values`: ``(add, mask, lo, hi, off)`` with ``add = 2^(t-1) - off``
    (0 for t = 0), ``mask = -2^t`` (clears the t LSBs), ``lo, hi`` the n-bit code range
    times 2^t; or, for unsigned codes without offsets (``offsets`` None, not
    ``sign_bit``: ``x >= 0``, ``off = lo = 0``), ``(add, mask, hi)``."""
    t = jnp.asarray(shifts).astype(jnp.int32)
    step = jnp.left_shift(1, t)
    mask, half = -step, jnp.right_shift(step, 1)
    lo, hi = (jnp.left_shift(c.astype(jnp.int32), t) for c in code_range(bits, sign_bit))
    if offsets is None and not sign_bit:
        return half, mask, hi
    off = jnp.zeros_like(t) if offsets is None else jnp.asarray(offsets).astype(jnp.int32)
    return half - off, mask, lo, hi, off


def effective_values(x, consts) -> jnp.ndarray:
    """``(requantize(x) << t) + offset`` (int32) from :func:`requant_constants`
    (broadcast against ``x``): ``clip((x - off + 2^(t-1)) & -2^t, lo 2^t, hi 2^t) +
    off``; with the unsigned, offset-free constants ``min((x + 2^(t-1)) & -2^t,
    hi 2^t)`` (the same, as ``x >= 0``). Equal to the shift rule: ``(y + 2^(t-1)) >> t
    << t`` is ``(y + 2^(t-1)) & -2^t`` in two's complement, and clipping ``q`` to
    ``[lo, hi]`` before the left shift is clipping ``q 2^t`` to ``[lo 2^t, hi 2^t]``
    after it. Three to five integer operations per value with no variable shifts: a
    few vector instructions (the float form it replaced, ``floor((x - off) 2^-t +
    1/2)``, took about twice as long on XLA:CPU)."""
    x = x.astype(jnp.int32)
    if len(consts) == 3:
        add, mask, top = consts
        return jnp.minimum((x + add) & mask, top)
    add, mask, lo, hi, off = consts
    return jnp.clip((x + add) & mask, lo, hi) + off


def expected(values: jnp.ndarray, probs: jnp.ndarray) -> jnp.ndarray:
    """``f(0) + sum_j P(t >= j) (f(j) - f(j-1))`` for ``values`` (..., J) of a quantity
    under each candidate and ``probs`` (..., J - 1) broadcast against them."""
    return values[..., 0] + (probs * jnp.diff(values, axis=-1)).sum(-1)


__all__ = ["GRANULARITIES", "GroupSums", "LayerContext", "Plan", "Policy", "Relaxation",
           "code_range", "effective_values", "expected", "requant_constants", "requantize",
           "round_shift", "streamed_codes"]
