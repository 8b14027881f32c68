"""One-pass simulation: ``evaluate(model, variables, images, spec, policy)``.

One jit-compiled pass of an unmodified Flax model returns its logits (hence accuracy)
and, for every Conv/Dense layer mapped to crossbars, per-image event counts, the
(n, t) histogram of the precision policy, and (on the host) energy per component,
mean streamed bits and cycles.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from redy_jax.energy.report import Report
from redy_jax.hw.spec import HardwareSpec
from redy_jax.integrate.intercept import crossbar_interceptor, observe_interceptor
from redy_jax.policy.map import PolicyMap, as_policy_map
from redy_jax.quant.activations import CALIBRATION_METHODS, Calibration, fake_quant_error
from redy_jax.quant.calibration import candidate_ranges, fit_calibration
from redy_jax.xbar.engine import MODES
from redy_jax.xbar.layer import LayerInfo, LayerRecord


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
              bits: int | None = None, batch_size: int = 256) -> Calibration:
    """Static per-layer activation quantisers from calibration images (float pass).

    ``bits``: the code width of every layer (default ``spec.act_bits``; fewer for static
    k-bit precision, mixed per layer with :meth:`Calibration.with_bits`).

    ``method='minmax'`` covers the observed range; ``'mse'`` picks, per layer, the
    fraction of that range (``CLIP_GRID``) that minimises the quantisation MSE.
    Layers with negative inputs get a zero point (or a symmetric range for
    ``spec.signed_encoding='sign_bit'``).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    bits = spec.act_bits if bits is None else bits
    if not (isinstance(bits, int) and 2 <= bits <= spec.act_bits):
        raise ValueError(f"bits must be an integer in [2, act_bits={spec.act_bits}], "
                         f"got {bits!r}")
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
    total = None
    if method == "mse":
        cand = {p: candidate_ranges(lo[p], hi[p], sign_bit) for p in lo}
        sse = observed(lambda p, a, c: fake_quant_error(a, c[p][0], c[p][1], bits))
        for b in batches:
            e = jax.device_get(sse(variables, b, cand))
            total = e if total is None else {p: total[p] + e[p] for p in total}
    return fit_calibration(lo, hi, bits, sign_bit=sign_bit, method=method,
                           images=len(images), sse=total)


# ---------------------------------------------------------------- the pass
class Traces:
    """What tracing a pass learns: the static :class:`LayerInfo` of every mapped layer
    for each input shape (images without the batch axis), and how often it was traced
    (compiled): once per input shape and batch size."""

    def __init__(self):
        self.by_shape: dict[tuple, dict[str, LayerInfo]] = {}
        self.count = 0

    def layers(self, image_shape) -> dict[str, LayerInfo]:
        """The layers of the pass for images of ``image_shape`` (without the batch)."""
        return self.by_shape[tuple(image_shape)]


def simulate_fn(model: nn.Module, spec: HardwareSpec, calibration: Calibration, mode: str,
                ste: bool = False):
    """The jitted pass ``(variables, policy_map, images) -> (logits, records)`` for
    ``calibration``, and the :class:`Traces` it fills when traced. Compiled once per
    input shape and calibration *structure* (layers, signedness): calibrations that
    differ only in scales, zero points or bit widths share one compiled pass.
    ``ste``: straight-through gradients through every simulated layer (forward values
    unchanged), for gradient-based tuning."""
    run, traces = _compiled_pass(model, spec, calibration.structure, mode, ste)
    quants = dict(calibration.layers)
    return (lambda variables, policies, images: run(variables, policies, quants, images),
            traces)


@functools.lru_cache(maxsize=64)
def _compiled_pass(model: nn.Module, spec: HardwareSpec, structure: tuple, mode: str,
                   ste: bool):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    traces = Traces()

    @jax.jit
    def run(variables, policies: PolicyMap, quants, images):
        records: dict[str, LayerRecord] = {}
        layer_infos: dict[str, LayerInfo] = {}
        with nn.intercept_methods(crossbar_interceptor(records, layer_infos, quants,
                                                       policies, spec, mode, ste)):
            logits = _apply(model, variables, images)
        traces.by_shape[tuple(images.shape[1:])] = layer_infos
        traces.count += 1
        return logits, records

    return run, traces


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
    if policies.default.crossbar or policies.rules:
        raise ValueError("calibration is required for crossbar policies: pass "
                         "calibration=redy_jax.calibrate(model, variables, calib_images, spec)")
    return Calibration(layers={}, method="none", images=0)


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
    run, traces = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec),
                              mode)
    sharding = data_sharding() if shard else None
    if sharding is not None and images.shape[0] % len(sharding.mesh.devices.flat):
        sharding = None
    logits, records = run(variables, policies, _shard(np.asarray(images, np.float32), sharding))
    _raise_nonfinite(records)
    return logits, Report.from_records(records, traces.layers(images.shape[1:]), spec,
                                       int(images.shape[0]))


def _raise_nonfinite(records) -> None:
    for path, rec in records.items():
        if bool(rec.nonfinite):
            raise FloatingPointError(f"layer '{path}' received NaN/inf activations")


@dataclasses.dataclass
class DatasetResult:
    """Accuracy, mean cross-entropy and the :class:`Report` of a labelled set."""

    accuracy: float
    report: Report
    images: int
    correct: int
    loss: float = float("nan")
    """Mean cross-entropy of the logits [nats] (a smoother signal than accuracy)."""

    def summary(self, distribution: bool = False) -> dict[str, Any]:
        r = self.report.to_dict(distribution=distribution)
        return {"images": self.images, "accuracy": self.accuracy, "loss": self.loss,
                **{k: v for k, v in r.items() if k != "images"}}


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
    run, traces = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec),
                              mode)
    report, correct, nll = None, 0, 0.0
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
        out = np.asarray(logits, np.float64)[:m]
        correct += int(np.sum(np.argmax(out, -1) == y))
        top = out.max(-1, keepdims=True)
        logp = out - top - np.log(np.exp(out - top).sum(-1, keepdims=True))
        nll += float(-logp[np.arange(m), y].sum())
        batch_report = Report.from_records(records, traces.layers(x.shape[1:]), spec, m,
                                           valid)
        report = batch_report if report is None else report.merge(batch_report)
        bar.update(m)
        bar.set_postfix(acc=f"{correct / (start + m):.4f}")
    bar.close()
    return DatasetResult(accuracy=correct / n, report=report, images=n, correct=correct,
                         loss=nll / n)


__all__ = ["DatasetResult", "Traces", "calibrate", "data_sharding", "evaluate", "evaluate_dataset",
           "simulate_fn"]
