"""ReDy: dynamic per-group activation precision (Sabri, Riera, Gonzalez, 2023).

This project's reading of the paper (its body is not available to us; see
docs/choices.md). For each *group* — the activations driving one crossbar row tile,
per input vector (``window``) or per image over the feature map (``channel``):

1. Statistics of the group's static ``act_bits`` codes q (padding rows excluded):
   max, mean, standard deviation, and min when the layer uses a zero point.
2. Offset: zero-point layers stream ``q - min`` (the group's own zero point, restored
   digitally as ``min * sum_r w_r`` per row tile); unsigned layers use offset 0.
3. Shift: ``t = #{i : stat > thresholds[i]}`` LSBs are dropped (group step = layer step
   x 2^t, a shift), the statistic being the group's standard deviation (or max/range).
4. Precision: ``n`` = the bits the group's maximum needs after the shift (the maximum
   optionally clipped at ``mean + clip_k * std``), clamped to ``[n_min, bits]``
   (``bits``: the layer's code width; an all-zero group streams nothing at
   ``n_min = 0``). Codes are requantised as ``clip(round((q - offset) / 2^t), 0,
   2^n - 1)``.
5. Only ``n`` bit-planes are streamed for that group, with S+A shift ``i + t``.

A shift never needs more bits than the codes it shifts, so ReDy never streams more
planes than leading-zero skipping for the same group; thresholds that are never
exceeded, ``clip_k = inf`` and ``offsets=False`` give leading-zero skipping exactly
(with ``offsets=True``, its lossless variant with per-group zero points).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from redy_jax.policy.stats import (
    bits_needed,
    digits_for_bits,
    group_stats,
    per_vector,
    unit_counts,
)
from redy_jax.xbar.plan import (
    GRANULARITIES,
    GroupSums,
    LayerContext,
    Plan,
    Relaxation,
    round_shift,
)

STATISTICS = ("std", "max", "range")
MAX_THRESHOLDS = 7
"""At most 7 thresholds: the shift t of a group is sent to the crossbars in 3 bits (half of
``HardwareSpec.redy_meta_bits``)."""


def check_thresholds(thresholds, where: str = "ReDy.thresholds") -> None:
    """Thresholds must be a 1-D list of 1..7 numbers; given as a list, tuple or numpy
    array (a file, a mapping, a constructor call) they must also ascend and hold no NaN.

    JAX arrays are checked for their shape only: the policy is a pytree, and JAX rebuilds
    it with gradients and optimiser updates in place of the thresholds (which need not
    ascend); traced values and JAX's placeholder leaves are not checked."""
    if isinstance(thresholds, jax.core.Tracer):
        return
    if isinstance(thresholds, jax.Array):
        if thresholds.ndim != 1 or not 1 <= thresholds.size <= MAX_THRESHOLDS:
            raise ValueError(f"{where} must be a list of 1 to {MAX_THRESHOLDS} thresholds (t "
                             f"is sent in 3 bits), got shape {thresholds.shape}")
        return
    if not isinstance(thresholds, list | tuple | np.ndarray):
        return
    try:
        a = np.asarray(thresholds, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} must be numbers, got {thresholds!r}") from e
    if a.ndim != 1 or not 1 <= a.size <= MAX_THRESHOLDS:
        raise ValueError(f"{where} must be a list of 1 to {MAX_THRESHOLDS} thresholds (t is "
                         f"sent in 3 bits), got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{where} must not hold NaN, got {a.tolist()}")
    if np.any(np.diff(a) < 0):
        raise ValueError(f"{where} must ascend (one more LSB dropped per threshold "
                         f"exceeded), got {a.tolist()}")


@struct.dataclass
class ReDy:
    """ReDy policy of one layer. ``thresholds``: float32 (t_max,) ascending, in code
    units of ``statistic``; the group drops one more LSB for each threshold exceeded."""

    thresholds: jnp.ndarray
    granularity: str = struct.field(pytree_node=False, default="window")
    statistic: str = struct.field(pytree_node=False, default="std")
    n_min: int = struct.field(pytree_node=False, default=0)
    offsets: bool = struct.field(pytree_node=False, default=True)
    """Zero-point layers stream ``q - min(group)`` (the group's own zero point)."""
    clip_k: float = struct.field(pytree_node=False, default=math.inf)
    temperature: float = struct.field(pytree_node=False, default=0.0)
    """0: the hard rule. > 0: straight-through relaxation for tuning (see :meth:`plan`);
    in octaves of the statistic (log2 units)."""
    name: str = struct.field(pytree_node=False, default="redy")

    crossbar = True
    statistics = True

    def __post_init__(self):
        check_thresholds(self.thresholds)
        if isinstance(self.thresholds, list | tuple | np.ndarray):  # stored as float32
            object.__setattr__(self, "thresholds", jnp.asarray(self.thresholds, jnp.float32))
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"ReDy.granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"ReDy.statistic must be one of {STATISTICS}, "
                             f"got {self.statistic!r}")
        if not (isinstance(self.n_min, int) and 0 <= self.n_min <= 16):
            raise ValueError(f"ReDy.n_min must be an integer in [0, 16], got {self.n_min!r}")
        if not self.clip_k > 0:
            raise ValueError(f"ReDy.clip_k must be > 0 (inf: no clipping), got {self.clip_k}")
        if not self.temperature >= 0:
            raise ValueError(f"ReDy.temperature must be >= 0, got {self.temperature}")

    def to_dict(self) -> dict:
        """JSON-ready (``policy_from_dict`` rebuilds it)."""
        return {"kind": "redy",
                "thresholds": [float(t) for t in np.asarray(self.thresholds).reshape(-1)],
                "granularity": self.granularity, "statistic": self.statistic,
                "n_min": self.n_min, "offsets": self.offsets,
                "clip_k": None if math.isinf(self.clip_k) else self.clip_k}

    def statistic_of(self, mx, mn, mean, std):
        return {"std": std, "max": mx, "range": mx - mn}[self.statistic]

    def shifts(self, stat: jnp.ndarray) -> jnp.ndarray:
        """Hard rule: LSBs dropped = thresholds exceeded (int32, same shape as ``stat``)."""
        thr = jnp.asarray(self.thresholds, jnp.float32)
        return (stat[..., None] > thr).sum(-1).astype(jnp.int32)

    def decide(self, stats, ctx: LayerContext, t: jnp.ndarray | None = None):
        """Group statistics ``(max, min, mean, std)`` -> (offsets, shifts t, bits n),
        each (V, T); ``t`` given: the decision with that many LSBs dropped."""
        mx, mn, mean, std = stats
        use_offset = self.offsets and ctx.zero_point
        offset = mn.astype(jnp.int32) if use_offset else jnp.zeros(mn.shape, jnp.int32)
        if t is None:
            t = self.shifts(self.statistic_of(mx, mn, mean, std))
        t = jnp.minimum(t, ctx.bits - 1)
        top = mx
        if math.isfinite(self.clip_k):
            top = jnp.minimum(mx, jnp.ceil(mean + self.clip_k * std))
        top = top.astype(jnp.int32) - offset
        if ctx.sign_bit:
            lo = round_shift(mn.astype(jnp.int32), t)
            n = jnp.maximum(bits_needed(round_shift(top, t), True), bits_needed(lo, True))
        else:
            n = bits_needed(round_shift(top, t), False)
        n = jnp.clip(n, self.n_min, ctx.bits)
        return offset, t, n

    def plan(self, sums: GroupSums, ctx: LayerContext) -> Plan:
        """The hard rule's decision for every group (see the module docstring), with,
        when ``temperature > 0``, its straight-through :class:`Relaxation`.

        The relaxation treats the shift as random with ``P(t >= i) = sigmoid((log2 stat
        - log2 thr_i) / temperature)``, i.e. the hard rule with logistic noise of scale
        ``temperature`` octaves on each threshold. Any quantity f(t) then has the exact
        expectation ``f(0) + sum_i P(t >= i) (f(i) - f(i-1))``; the engine takes it for
        the planes streamed (hence every event count and the energy) and for the
        effective codes ``(q' << t) + offset`` (hence the logits), forward values
        staying the hard rule's. As the temperature goes to 0 it becomes the hard rule;
        over many groups its gradient matches a finite difference of the hard energy
        (tests/test_tune.py).
        """
        stats = group_stats(sums, ctx, self.granularity)
        offset, t, n = self.decide(stats, ctx)
        use_offset = self.offsets and ctx.zero_point
        planes = digits_for_bits(n, ctx.spec).astype(jnp.int32)
        relaxation = None
        if self.temperature > 0:
            stat = self.statistic_of(*stats)
            log_thr = jnp.log2(jnp.maximum(jnp.asarray(self.thresholds, jnp.float32), 1e-30))
            log_stat = jnp.log2(jnp.maximum(stat, 1e-6))
            probs = jax.nn.sigmoid((log_stat[..., None] - log_thr) / self.temperature)

            def candidate(j):
                o, tj, nj = self.decide(stats, ctx, t=jnp.full(stat.shape, j, jnp.int32))
                return o, tj, nj, digits_for_bits(nj, ctx.spec)

            cand = jax.vmap(candidate, out_axes=-1)(jnp.arange(probs.shape[-1] + 1))
            relaxation = Relaxation(*cand, probs=probs)
        offset, t, n, planes, relaxation = per_vector((offset, t, n, planes, relaxation),
                                                      ctx, self.granularity)
        return Plan(planes=planes, shifts=t, offsets=offset if use_offset else None, bits=n,
                    relaxation=relaxation, granularity=self.granularity, unit="redy",
                    **unit_counts(ctx, self.granularity, t.shape[0], ctx.spec.redy_meta_bits))


def lossless(t_max: int = 4, **kw) -> ReDy:
    """ReDy that never drops LSBs: leading-zero skipping with per-group offsets."""
    return ReDy(thresholds=jnp.full((t_max,), jnp.inf, jnp.float32), **kw)


def thresholds_from_scale(c: float, t_max: int = 4) -> np.ndarray:
    """Thresholds ``2^i / c`` (i = 1..t_max): a group drops t LSBs when its std exceeds
    ``2^t / c`` codes, i.e. when the added rounding noise (~2^t / sqrt(12)) stays a
    fraction ``~1/(c sqrt(12))`` of its spread. Larger c drops more."""
    return (2.0 ** np.arange(1, t_max + 1) / c).astype(np.float32)


__all__ = ["MAX_THRESHOLDS", "STATISTICS", "ReDy", "check_thresholds", "lossless",
           "thresholds_from_scale"]
