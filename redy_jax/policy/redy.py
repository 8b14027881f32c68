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
   optionally clipped at ``mean + clip_k * std``), clamped to ``[n_min, act_bits]``.
   Codes are requantised as ``clip(round((q - offset) / 2^t), 0, 2^n - 1)``.
5. Only ``n`` bit-planes are streamed for that group, with S+A shift ``i + t``.

Thresholds that are never exceeded and ``clip_k = inf`` give lossless leading-zero
skipping (with per-group offsets): the logits equal static 8-bit exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from redy_jax.policy.base import (
    GRANULARITIES,
    GroupSums,
    LayerContext,
    Plan,
    PolicyMap,
    Selection,
    Static,
    bits_needed,
    digits_for_bits,
    group_stats,
    tile_sums,
)

STATISTICS = ("std", "max", "range")


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _round_shift(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """round(x / 2^t), half up, for int32 x and per-group t (broadcast)."""
    half = jnp.where(t > 0, jnp.left_shift(1, jnp.maximum(t - 1, 0)), 0)
    return (x + half) >> t


@struct.dataclass
class ReDy:
    """ReDy policy of one layer. ``thresholds``: float32 (t_max,) ascending, in code
    units of ``statistic``; the group drops one more LSB for each threshold exceeded."""

    thresholds: jnp.ndarray
    granularity: str = struct.field(pytree_node=False, default="window")
    statistic: str = struct.field(pytree_node=False, default="std")
    n_min: int = struct.field(pytree_node=False, default=1)
    clip_k: float = struct.field(pytree_node=False, default=math.inf)
    temperature: float = struct.field(pytree_node=False, default=0.0)
    """0: the hard rule. > 0: straight-through relaxation for tuning (see ``relaxed``);
    in octaves of the statistic (log2 units)."""
    name: str = struct.field(pytree_node=False, default="redy")

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"ReDy.granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"ReDy.statistic must be one of {STATISTICS}, "
                             f"got {self.statistic!r}")
        if not (isinstance(self.n_min, int) and 1 <= self.n_min <= 16):
            raise ValueError(f"ReDy.n_min must be an integer in [1, 16], got {self.n_min!r}")
        if not self.clip_k > 0:
            raise ValueError(f"ReDy.clip_k must be > 0 (inf: no clipping), got {self.clip_k}")
        if not self.temperature >= 0:
            raise ValueError(f"ReDy.temperature must be >= 0, got {self.temperature}")

    def statistic_of(self, mx, mn, mean, std):
        return {"std": std, "max": mx, "range": mx - mn}[self.statistic]

    def shifts(self, stat: jnp.ndarray) -> jnp.ndarray:
        """Hard rule: LSBs dropped = thresholds exceeded (int32, same shape as ``stat``)."""
        thr = jnp.asarray(self.thresholds, jnp.float32)
        return (stat[..., None] > thr).sum(-1).astype(jnp.int32)

    needs_sums = True

    def decide(self, sums: GroupSums, ctx: LayerContext, t: jnp.ndarray | None = None):
        """Group statistics -> (offsets, shifts t, bits n), each (V, T)."""
        mx, mn, mean, std = group_stats(sums, ctx, self.granularity)
        use_offset = ctx.zero_point != 0 and not ctx.sign_bit
        offset = mn.astype(jnp.int32) if use_offset else jnp.zeros(mn.shape, jnp.int32)
        if t is None:
            t = self.shifts(self.statistic_of(mx, mn, mean, std))
        t = jnp.minimum(t, ctx.spec.act_bits - 1)
        top = mx
        if math.isfinite(self.clip_k):
            top = jnp.minimum(mx, jnp.ceil(mean + self.clip_k * std))
        top = top.astype(jnp.int32) - offset
        if ctx.sign_bit:
            lo = _round_shift(mn.astype(jnp.int32), t)
            n = jnp.maximum(bits_needed(_round_shift(top, t), True), bits_needed(lo, True))
        else:
            n = bits_needed(_round_shift(top, t), False)
        n = jnp.clip(n, self.n_min, ctx.spec.act_bits)
        return offset, t, n

    def plan(self, sums: GroupSums, ctx: LayerContext, vectors: int = 0) -> Plan:
        """The hard rule's decision for every group (see the module docstring)."""
        offset, t, n = self.decide(sums, ctx)
        per_vector = ctx.tiling.k if self.granularity == "window" else -(-ctx.tiling.k //
                                                                         ctx.tiling.taps)
        use_offset = ctx.zero_point != 0 and not ctx.sign_bit
        return Plan(planes=digits_for_bits(n, ctx.spec).astype(jnp.int32), sums=sums, shifts=t,
                    offsets=offset if use_offset else None, bits=n,
                    unit_ops=jnp.full((t.shape[0],), per_vector, jnp.int32))

    def apply(self, x: jnp.ndarray, plan: Plan, ctx: LayerContext) -> Selection:
        """Requantises codes (V, T, R) as planned (and relaxes them when tuning)."""
        offset = plan.offsets if plan.offsets is not None else jnp.zeros_like(plan.shifts)
        sel = Selection(self.requantize(x, ctx, offset, plan.shifts, plan.bits), plan.planes,
                        plan.shifts, plan.unit_ops, plan.offsets)
        return sel if self.temperature == 0 else self.relaxed(x, ctx, sel, plan.sums)

    def select(self, x: jnp.ndarray, ctx: LayerContext,
               sums: GroupSums | None = None) -> Selection:
        """``sums``: the groups' statistics when the caller has them (else from ``x``)."""
        return self.apply(x, self.plan(tile_sums(x, ctx) if sums is None else sums, ctx), ctx)

    def relaxed(self, x: jnp.ndarray, ctx: LayerContext, hard: Selection,
                sums: GroupSums) -> Selection:
        """Straight-through relaxation: forward values are the hard rule's, gradients are
        those of the expectation under a logistic threshold.

        The shift is treated as random with ``P(t >= i) = sigmoid((log2 stat -
        log2 thr_i) / temperature)``, i.e. the hard rule with logistic noise of scale
        ``temperature`` octaves on each threshold. Any quantity f(t) then has the exact
        expectation ``f(0) + sum_i P(t >= i) (f(i) - f(i-1))``; we take it for the planes
        streamed (hence every event count and the energy) and for the effective codes
        ``(q' << t) + offset`` (hence the logits). As the temperature goes to 0 it
        becomes the hard rule; over many groups its gradient matches a finite difference
        of the hard energy (tests/test_tune.py).
        """
        mx, mn, mean, std = group_stats(sums, ctx, self.granularity)
        stat = self.statistic_of(mx, mn, mean, std)
        log_thr = jnp.log2(jnp.maximum(jnp.asarray(self.thresholds, jnp.float32), 1e-30))
        log_stat = jnp.log2(jnp.maximum(stat, 1e-6))
        p = _sigmoid((log_stat[..., None] - log_thr) / self.temperature)  # (V, T, I)
        t_max = p.shape[-1]

        def at(tj):
            offset, t, n = self.decide(sums, ctx, t=jnp.full(stat.shape, tj, jnp.int32))
            # offset is zero where the layer uses none
            eff = (self.requantize(x, ctx, offset, t, n) << t[..., None]) + offset[..., None]
            return digits_for_bits(n, ctx.spec).astype(jnp.float32), eff.astype(jnp.float32)

        planes_t, eff_t = jax.vmap(at, out_axes=-1)(jnp.arange(t_max + 1))  # (.., I+1)
        d_planes = jnp.diff(planes_t, axis=-1)
        d_eff = jnp.diff(eff_t, axis=-1)
        planes_soft = planes_t[..., 0] + (p * d_planes).sum(-1)
        eff_soft = eff_t[..., 0] + (p[:, :, None, :] * d_eff).sum(-1)
        ste = lambda hard_v, soft_v: hard_v + (soft_v - lax.stop_gradient(soft_v))
        return hard._replace(planes=ste(hard.planes.astype(jnp.float32), planes_soft),
                             eff_soft=eff_soft)

    def requantize(self, x, ctx: LayerContext, offset, t, n) -> jnp.ndarray:
        """Streamed codes ``clip(round((x - offset) / 2^t), n bits)`` (int32), the group
        parameters (V, T) broadcast over the R rows of each group."""
        q = _round_shift(x - offset[..., None], t[..., None])
        if ctx.sign_bit:
            hi = jnp.left_shift(1, n - 1) - 1
            q = jnp.clip(q, -hi[..., None] - 1, hi[..., None])
        else:
            q = jnp.clip(q, 0, (jnp.left_shift(1, n) - 1)[..., None])
        return q.astype(jnp.int32)

    def affine(self, ctx: LayerContext, offset, t, n):
        """:meth:`requantize` as per-group float32 constants ``(off, inv, lo, hi, step)``
        (each shaped like ``t``) for :func:`effective_values`, which maps a code x to the
        value its streamed code stands for, ``(requantize(x) << t) + offset``."""
        f = lambda a: jnp.asarray(a).astype(jnp.float32)
        if ctx.sign_bit:
            hi = jnp.left_shift(1, n - 1) - 1
            lo = -hi - 1
        else:
            hi, lo = jnp.left_shift(1, n) - 1, jnp.zeros_like(n)
        return f(offset), jnp.exp2(-f(t)), f(lo), f(hi), jnp.exp2(f(t))


def effective_values(x, aff) -> jnp.ndarray:
    """``(requantize(x) << t) + offset`` in float32 from :meth:`ReDy.affine` constants
    (broadcast against ``x``): ``clip(floor((x - off) * 2^-t + 0.5), lo, hi) * 2^t + off``.
    Exact — codes are small integers and 2^+-t scalings are exact in float32 — and equal
    to the integer rule (round half up is floor(y / 2^t + 1/2); an arithmetic right shift
    floors), in a few vectorisable float operations instead of variable integer shifts."""
    off, inv, lo, hi, step = aff
    q = jnp.floor((x.astype(jnp.float32) - off) * inv + 0.5)
    return jnp.clip(q, lo, hi) * step + off


def lossless(t_max: int = 4, **kw) -> ReDy:
    """ReDy that never drops LSBs: leading-zero skipping with per-group offsets."""
    return ReDy(thresholds=jnp.full((t_max,), jnp.inf, jnp.float32), **kw)


def thresholds_from_scale(c: float, t_max: int = 4) -> np.ndarray:
    """Thresholds ``2^i / c`` (i = 1..t_max): a group drops t LSBs when its std exceeds
    ``2^t / c`` codes, i.e. when the added rounding noise (~2^t / sqrt(12)) stays a
    fraction ``~1/(c sqrt(12))`` of its spread. Larger c drops more."""
    return (2.0 ** np.arange(1, t_max + 1) / c).astype(np.float32)


def redy_policy_map(s=None, *, granularity: str = "window", thresholds=None,
                    conv_paths=None, **kw) -> PolicyMap:
    """ReDy on conv layers (per-layer thresholds), static 8-bit on dense and depthwise
    layers (the paper treats conv layers; configurable via ``rules``).

    Args:
      s: a :class:`redy_jax.runner.Setup` (used to find shipped default thresholds or to
        calibrate them when ``thresholds`` is None).
      thresholds: a ``ThresholdSet`` dict (see :func:`read_thresholds`) or None.
    """
    if thresholds is None:
        if s is None:
            raise ValueError("redy_policy_map needs thresholds or a Setup to calibrate them")
        path = default_thresholds_path(s.model_name, granularity)
        if path.exists():
            thresholds = read_thresholds(path)
        else:
            from redy_jax.policy.calibrate import calibrate_thresholds

            thresholds = calibrate_thresholds(s, granularity=granularity)
    cfg = thresholds.get("config", {})
    gran = cfg.get("granularity", granularity)
    clip_k = math.inf if cfg.get("clip_k") in (None, "inf") else float(cfg["clip_k"])
    params = dict(statistic=cfg.get("statistic", "std"), n_min=cfg.get("n_min", 1),
                  clip_k=clip_k, granularity=gran)
    params.update(kw)
    rules = tuple((p, ReDy(thresholds=jnp.asarray(v, jnp.float32), **params))
                  for p, v in thresholds["layers"].items())
    return PolicyMap(default=Static(), rules=rules, dense_default=Static(),
                     depthwise_default=Static())


def default_thresholds_path(model: str, granularity: str) -> Path:
    from redy_jax.checkpoint import CHECKPOINT_DIR

    return CHECKPOINT_DIR / f"{model}_fashion_mnist.redy_{granularity}.json"


def shipped_thresholds(model: str) -> Path:
    from redy_jax.checkpoint import CHECKPOINT_DIR

    path = CHECKPOINT_DIR / f"{model}_fashion_mnist.redy_tuned.json"
    if not path.exists():
        raise FileNotFoundError(f"no tuned thresholds shipped for {model}: {path} is missing "
                                "(produce them with `redy tune`)")
    return path


def read_thresholds(path) -> dict:
    """Reads a thresholds file: ``{"config": {...}, "layers": {path: [t1, ...]}, ...}``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"thresholds file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"thresholds file {path} is not valid JSON: {e}") from e
    if not isinstance(d, dict) or not isinstance(d.get("layers"), dict):
        raise ValueError(f"thresholds file {path} must hold an object with a 'layers' mapping")
    for k, v in d["layers"].items():
        a = np.asarray(v, np.float64)
        if a.ndim != 1 or a.size == 0 or np.isnan(a).any():
            raise ValueError(f"thresholds file {path}: layer {k!r} needs a non-empty list of "
                             f"numbers, got {v!r}")
        if np.any(np.diff(a) < 0):
            raise ValueError(f"thresholds file {path}: layer {k!r} thresholds must ascend")
    return d


def write_thresholds(path, layers: dict, config: dict, provenance: dict) -> None:
    from redy_jax.checkpoint import atomic_write_json

    atomic_write_json(path, {"config": config, "provenance": provenance,
                             "layers": {k: [float(x) for x in np.asarray(v)]
                                        for k, v in layers.items()}})


__all__ = ["ReDy", "STATISTICS", "effective_values", "lossless", "redy_policy_map",
           "read_thresholds", "thresholds_from_scale", "write_thresholds"]
