"""One-pass simulation: ``evaluate(model, variables, images, spec, policy)``.

One jit-compiled pass of an unmodified Flax model returns its logits (hence accuracy)
and, for every Conv/Dense layer mapped to crossbars, per-image event counts, the
(n, t) histogram of the precision policy, and (on the host) energy per component,
mean streamed bits and cycles.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from redy_jax.energy.breakdown import COMPONENTS, energy_breakdown, mapped_area_mm2
from redy_jax.hw.spec import HardwareSpec
from redy_jax.integrate.intercept import crossbar_interceptor, observe_interceptor
from redy_jax.integrate.layers import LayerInfo, LayerRecord
from redy_jax.policy.base import Float, PolicyMap, as_policy_map
from redy_jax.quant.activations import (
    CALIBRATION_METHODS,
    CLIP_GRID,
    Calibration,
    fake_quant_error,
    make_quant,
)
from redy_jax.xbar.engine import COUNT_FIELDS, MODES


def _check_images(images) -> None:
    if isinstance(images, jax.core.Tracer):
        return
    a = np.asarray(images)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"images must be float model inputs (normalised), got dtype {a.dtype}; "
                         "use redy_jax.data.normalize on uint8 images")
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (B, ...), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(f"images contain {int(bad.sum())} NaN/inf values (first at index "
                         f"{tuple(int(i) for i in idx)})")


def _apply(model: nn.Module, variables, images):
    return model.apply(variables, images, train=False) if _takes_train(model) else \
        model.apply(variables, images)


@functools.cache
def _takes_train(model_type) -> bool:
    import inspect

    call = type(model_type).__call__ if isinstance(model_type, nn.Module) else model_type.__call__
    return "train" in inspect.signature(call).parameters


def _shape_error(model, images, e: Exception) -> ValueError:
    return ValueError(f"images of shape {tuple(images.shape)} do not fit model "
                      f"{type(model).__name__}: {type(e).__name__}: {e}")


_FITTING_SHAPES: set = set()


def _check_fits(model: nn.Module, variables, images) -> None:
    """Raises a ValueError naming the model if the float model rejects ``images``'
    shape (checked once per model and shape, by tracing only)."""
    key = (model, tuple(images.shape[1:]))
    if key in _FITTING_SHAPES:
        return
    spec = jax.ShapeDtypeStruct((1, *images.shape[1:]), jnp.float32)
    try:
        jax.eval_shape(lambda v, x: _apply(model, v, x), variables, spec)
    except Exception as e:  # any tracing failure means the input does not fit
        raise _shape_error(model, images, e) from None
    _FITTING_SHAPES.add(key)


# ---------------------------------------------------------------- calibration
def calibrate(model: nn.Module, variables, images, spec: HardwareSpec, *, method: str = "mse",
              batch_size: int = 256) -> Calibration:
    """Static per-layer activation quantisers from calibration images (float pass).

    ``method='minmax'`` covers the observed range; ``'mse'`` picks, per layer, the
    fraction of that range (``CLIP_GRID``) that minimises the quantisation MSE.
    Layers with negative inputs get a zero point (or a symmetric range for
    ``spec.signed_encoding='sign_bit'``).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    _check_images(images)
    _check_fits(model, variables, images)
    images = np.asarray(images, np.float32)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]

    def observed(stat: Callable):
        @jax.jit
        def run(variables, x, extra):
            out = {}

            def observe(path, a):
                out[path] = stat(path, a, extra)

            with nn.intercept_methods(observe_interceptor(observe)):
                _apply(model, variables, x)
            return out
        return run

    minmax = observed(lambda p, a, _: jnp.stack([a.min(), a.max()]))
    stats = [jax.device_get(minmax(variables, b, None)) for b in batches]
    lo = {p: min(float(s[p][0]) for s in stats) for p in stats[0]}
    hi = {p: max(float(s[p][1]) for s in stats) for p in stats[0]}
    sign_bit = spec.signed_encoding == "sign_bit"
    frac = {p: 1.0 for p in lo}
    if method == "mse":
        grid = jnp.asarray(CLIP_GRID, jnp.float32)

        def candidates(p):
            lo_p, hi_p = min(lo[p], 0.0), max(hi[p], 0.0)
            if sign_bit and lo_p < 0:
                m = max(-lo_p, hi_p)
                lo_p, hi_p = -m, m
            return grid * lo_p, grid * hi_p

        cand = {p: candidates(p) for p in lo}
        sse = observed(lambda p, a, c: fake_quant_error(a, c[p][0], c[p][1], spec.act_bits))
        total = None
        for b in batches:
            e = jax.device_get(sse(variables, b, cand))
            total = e if total is None else {p: total[p] + e[p] for p in total}
        frac = {p: CLIP_GRID[int(np.argmin(total[p]))] for p in total}
    layers = {p: make_quant(lo[p] * frac[p], hi[p] * frac[p], spec.act_bits, sign_bit)
              for p in lo}
    return Calibration(layers=layers, method=method, images=len(images), act_bits=spec.act_bits)


# ---------------------------------------------------------------- the pass
@functools.lru_cache(maxsize=64)
def simulate_fn(model: nn.Module, spec: HardwareSpec, calibration: Calibration, mode: str,
                ste: bool = False):
    """The jitted pass ``(variables, policy_map, images) -> (logits, records)`` and the
    dict of static :class:`LayerInfo` it fills when traced. Cached per configuration,
    compiled once per input shape. ``ste``: straight-through gradients through every
    simulated layer (forward values unchanged), for gradient-based tuning."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    infos: dict[str, LayerInfo] = {}

    @jax.jit
    def run(variables, policies: PolicyMap, images):
        records: dict[str, LayerRecord] = {}
        layer_infos: dict[str, LayerInfo] = {}
        with nn.intercept_methods(crossbar_interceptor(records, layer_infos, calibration,
                                                       policies, spec, mode, ste)):
            logits = _apply(model, variables, images)
        infos.clear()
        infos.update(layer_infos)
        return logits, records

    return run, infos


@dataclasses.dataclass
class LayerSummary:
    """Totals of one layer over ``images`` images (exact Python ints)."""

    info: LayerInfo
    counts: dict[str, int]
    nt_hist: np.ndarray
    images: int


@dataclasses.dataclass
class Report:
    """Per-layer and total event counts and energy for a set of images."""

    spec: HardwareSpec
    images: int
    layers: dict[str, LayerSummary]

    @classmethod
    def from_records(cls, records: Mapping[str, LayerRecord], infos: Mapping[str, LayerInfo],
                     spec: HardwareSpec, images: int, valid: np.ndarray | None = None) -> Report:
        layers = {}
        for path, rec in records.items():
            counts = {}
            for f in COUNT_FIELDS:
                a = np.asarray(getattr(rec.counts, f), np.int64)
                counts[f] = int(a[valid].sum() if valid is not None else a.sum())
            layers[path] = LayerSummary(infos[path], counts, np.asarray(rec.nt_hist, np.int64),
                                        images)
        return cls(spec, images, layers)

    def merge(self, other: Report) -> Report:
        if not self.layers:
            return other
        layers = {}
        for p, a in self.layers.items():
            b = other.layers[p]
            layers[p] = LayerSummary(a.info, {k: a.counts[k] + b.counts[k] for k in a.counts},
                                     a.nt_hist + b.nt_hist, a.images + b.images)
        return Report(self.spec, self.images + other.images, layers)

    # ---- derived figures (per image) ----
    def layer_energy_pj(self, path: str) -> dict[str, float]:
        s = self.layers[path]
        return {k: v / self.images for k, v in energy_breakdown(s.counts, self.spec).items()}

    def breakdown_pj(self) -> dict[str, float]:
        total = dict.fromkeys(COMPONENTS, 0.0)
        for p in self.layers:
            for k, v in self.layer_energy_pj(p).items():
                total[k] += v
        return total

    def energy_pj_per_image(self) -> float:
        return sum(self.breakdown_pj().values())

    def per_image(self, field: str) -> float:
        return sum(s.counts[field] for s in self.layers.values()) / max(self.images, 1)

    def mean_streamed_bits(self) -> float:
        bits = sum(s.counts["streamed_bits"] for s in self.layers.values())
        acts = sum(s.counts["activations"] for s in self.layers.values())
        return bits / max(acts, 1)

    def crossbars(self) -> int:
        return sum(s.info.crossbars for s in self.layers.values())

    def area_mm2(self) -> float:
        return mapped_area_mm2(self.crossbars(), self.spec)

    def layer_dict(self, path: str) -> dict[str, Any]:
        s = self.layers[path]
        e = self.layer_energy_pj(path)
        return {
            "kind": s.info.kind, "k": s.info.k, "n": s.info.n, "groups": s.info.groups,
            "crossbars": s.info.crossbars, "macs_per_image": s.info.macs_per_image,
            "counts_per_image": {k: v / self.images for k, v in s.counts.items()},
            "energy_pj_per_image": sum(e.values()),
            "breakdown_pj": e,
            "mean_streamed_bits": s.counts["streamed_bits"] / max(s.counts["activations"], 1),
            "cycles_per_image": s.counts["cycles"] / self.images,
            "latency_ns_per_image": s.counts["cycles"] / self.images * self.spec.t_read_ns,
            "nt_hist": s.nt_hist.tolist(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "energy_pj_per_image": self.energy_pj_per_image(),
            "breakdown_pj": self.breakdown_pj(),
            "adc_conversions_per_image": self.per_image("adc_conversions"),
            "xbar_reads_per_image": self.per_image("xbar_reads"),
            "cycles_per_image": self.per_image("cycles"),
            "latency_us_per_image": self.per_image("cycles") * self.spec.t_read_ns / 1e3,
            "adc_saturations_per_image": self.per_image("adc_saturations"),
            "mean_streamed_bits": self.mean_streamed_bits(),
            "crossbars": self.crossbars(),
            "area_mm2": self.area_mm2(),
            "layers": {p: self.layer_dict(p) for p in self.layers},
        }


def data_sharding(n_devices: int | None = None):
    """A ``NamedSharding`` splitting the batch axis over a 1-D ``('data',)`` mesh of all
    (or the first ``n_devices``) devices; None on a single device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()[: n_devices or None]
    if len(devices) < 2:
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec("data"))


def _shard(x: np.ndarray, sharding):
    """Places a batch on the mesh (the batch must divide evenly; callers pad)."""
    if sharding is None:
        return jnp.asarray(x)
    return jax.device_put(x, sharding)


def _calibration_or_none(calibration: Calibration | None, policies: PolicyMap,
                         spec: HardwareSpec) -> Calibration:
    if calibration is not None:
        return calibration
    if not (isinstance(policies.default, Float) and not policies.rules):
        raise ValueError("calibration is required for crossbar policies: pass "
                         "calibration=redy_jax.calibrate(model, variables, calib_images, spec)")
    return Calibration(layers={}, method="none", images=0, act_bits=spec.act_bits)


def evaluate(model: nn.Module, variables, images, spec: HardwareSpec, policy, *,
             calibration: Calibration | None = None, mode: str = "auto",
             shard: bool = True):
    """Runs ``model`` on ``images`` through the crossbar model in one jitted pass.

    Args:
      model: an unmodified ``flax.linen`` model; its ``nn.Conv``/``nn.Dense`` layers are
        simulated, everything else runs in float.
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      images: float model inputs (B, ...), already normalised.
      spec: the hardware.
      policy: a policy (``Static()``, ``LeadingZeroSkip()``, ``Float()``, a ReDy policy)
        or a :class:`PolicyMap` choosing one per layer path.
      calibration: static activation quantisers (:func:`calibrate`); required unless the
        policy is ``Float()``.
      mode: ``auto`` / ``exact`` / ``faithful`` (see :func:`redy_jax.crossbar_matmul`).
      shard: split the batch over all devices (a ``('data',)`` mesh) when there are
        several and the batch divides evenly; results are identical to one device.

    Returns:
      ``(logits, report)``.
    """
    _check_images(images)
    _check_fits(model, variables, images)
    policies = as_policy_map(policy)
    run, infos = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec), mode)
    sharding = data_sharding() if shard else None
    if sharding is not None and images.shape[0] % len(sharding.mesh.devices.flat):
        sharding = None
    logits, records = run(variables, policies, _shard(np.asarray(images, np.float32), sharding))
    _raise_nonfinite(records)
    return logits, Report.from_records(records, infos, spec, int(images.shape[0]))


def _raise_nonfinite(records) -> None:
    for path, rec in records.items():
        if bool(rec.nonfinite):
            raise FloatingPointError(f"layer '{path}' received NaN/inf activations")


@dataclasses.dataclass
class DatasetResult:
    accuracy: float
    report: Report
    images: int
    correct: int

    def summary(self) -> dict[str, Any]:
        r = self.report.to_dict()
        return {"images": self.images, "accuracy": self.accuracy, **{k: v for k, v in r.items()
                                                                      if k != "images"}}


def evaluate_dataset(model: nn.Module, variables, images: np.ndarray, labels: np.ndarray,
                     spec: HardwareSpec, policy, *, calibration: Calibration | None,
                     batch_size: int = 250, mode: str = "auto", progress: bool = True,
                     desc: str = "evaluate", shard: bool = True) -> DatasetResult:
    """Accuracy and energy over a split, batch by batch (one compilation: the last batch is
    padded to ``batch_size`` and its padding masked out). With several devices each batch
    is split over a ``('data',)`` mesh (``batch_size`` rounded up to a multiple of the
    device count); counts are summed across devices, results equal one device's."""
    from tqdm.auto import tqdm

    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(images)
    batch_size = min(batch_size, n)
    _check_fits(model, variables, images[:1])
    sharding = data_sharding() if shard else None
    if sharding is not None:
        d = len(sharding.mesh.devices.flat)
        batch_size = -(-batch_size // d) * d
    policies = as_policy_map(policy)
    run, infos = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec), mode)
    report, correct = None, 0
    # disable=None: shown on a terminal only, so logs and pipes stay readable.
    bar = tqdm(total=n, desc=desc, unit="img", disable=None if progress else True, leave=False)
    for start in range(0, n, batch_size):
        x = np.asarray(images[start:start + batch_size], np.float32)
        y = np.asarray(labels[start:start + batch_size])
        m = len(x)
        if m < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - m, *x.shape[1:]), x.dtype)])
        _check_images(x)
        logits, records = run(variables, policies, _shard(x, sharding))
        _raise_nonfinite(records)
        valid = np.arange(batch_size) < m
        correct += int(np.sum(np.argmax(np.asarray(logits)[:m], -1) == y))
        batch_report = Report.from_records(records, infos, spec, m, valid)
        report = batch_report if report is None else report.merge(batch_report)
        bar.update(m)
        bar.set_postfix(acc=f"{correct / (start + m):.4f}")
    bar.close()
    return DatasetResult(accuracy=correct / n, report=report, images=n, correct=correct)


__all__ = ["DatasetResult", "Report", "calibrate", "data_sharding", "evaluate",
           "evaluate_dataset", "simulate_fn"]
