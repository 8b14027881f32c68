"""One-pass simulation of an unmodified Flax model on crossbars.

* :func:`calibrate` — static per-layer activation quantisers from calibration images.
* :func:`evaluate` — one jitted pass: logits and a :class:`~redy_jax.energy.Report`
  (per layer, per image: events, energy, streamed bits, latency).
* :func:`evaluate_dataset` — the same over a labelled split, batch by batch.
* :func:`simulator` — a pure function ``f(variables, images, thresholds=None) ->
  (logits, counts)`` for your own ``jax.jit`` / ``jax.vmap`` / ``jax.grad`` / sharding.
* :func:`capture` — every crossbar layer's input, codes and outputs, for debugging
  against your own reference.

Every ``nn.Conv`` / ``nn.Dense`` call is simulated; everything else runs in float.
A module called more than once (weight sharing) is calibrated and reported per call
site: ``path``, ``path#2``, ...
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from redy_jax.energy.report import Report
from redy_jax.hw.spec import HardwareSpec, check_spec
from redy_jax.integrate.intercept import crossbar_interceptor, observe_interceptor
from redy_jax.policy.map import PolicyMap, as_policy_map
from redy_jax.policy.static import Static
from redy_jax.quant.activations import CALIBRATION_METHODS, Calibration, fake_quant_error
from redy_jax.quant.calibration import candidate_ranges, fit_calibration
from redy_jax.validate import check_images, check_labels, check_variables
from redy_jax.xbar.engine import MODES
from redy_jax.xbar.layer import LayerInfo, LayerRecord

# ---------------------------------------------------------------- running the model
INFERENCE_FLAGS = {"train": False, "training": False, "is_training": False,
                   "deterministic": True, "use_running_average": True}
"""Keyword arguments a model's ``__call__`` may take to select inference mode, and their
inference values; the first one the signature has is passed unless ``apply_kwargs``
says otherwise."""


@functools.cache
def inference_kwargs(model_type) -> tuple:
    """The inference flag of a model class, as ``((name, value),)`` (or ``()``)."""
    params = inspect.signature(model_type.__call__).parameters
    return tuple((k, v) for k, v in INFERENCE_FLAGS.items() if k in params)[:1]


def _kwargs(model: nn.Module, apply_kwargs) -> dict:
    if apply_kwargs is not None:
        return dict(apply_kwargs)
    return dict(inference_kwargs(type(model)))


def _frozen(apply_kwargs) -> tuple | None:
    """``apply_kwargs`` as a hashable cache key."""
    if apply_kwargs is None:
        return None
    try:
        key = tuple(sorted(dict(apply_kwargs).items()))
        hash(key)
    except TypeError as e:
        raise ValueError(f"apply_kwargs values must be hashable (static), got {apply_kwargs!r}"
                         ) from e
    return key


def _apply(model: nn.Module, variables, images, apply_kwargs=None):
    try:
        return model.apply(variables, images, **_kwargs(model, apply_kwargs))
    except flax.errors.ModifyScopeVariableError as e:
        raise ValueError(
            f"model {type(model).__name__} tried to update a variable during evaluation "
            f"({e}); run it in inference mode: pass apply_kwargs={{'train': False}} (or the "
            "flag your model's __call__ takes, e.g. {'deterministic': True}), or build "
            "BatchNorm with use_running_average=True") from None


def _shape_error(model, images, e: Exception) -> ValueError:
    return ValueError(f"images of shape {tuple(images.shape)} do not fit model "
                      f"{type(model).__name__}: {type(e).__name__}: {e}")


_FITTING_SHAPES: set = set()


def _check_fits(model: nn.Module, variables, images, apply_kwargs=None) -> None:
    """Raises a ValueError naming the model if the float model rejects ``images``'
    shape (checked once per model and shape, by tracing only)."""
    key = (model, tuple(images.shape[1:]), _frozen(apply_kwargs))
    if key in _FITTING_SHAPES:
        return
    spec = jax.ShapeDtypeStruct((1, *images.shape[1:]), jnp.float32)
    try:
        jax.eval_shape(lambda v, x: _apply(model, v, x, apply_kwargs), variables, spec)
    except ValueError as e:
        if "tried to update a variable" in str(e):
            raise
        raise _shape_error(model, images, e) from None
    except Exception as e:  # any tracing failure means the input does not fit
        raise _shape_error(model, images, e) from None
    _FITTING_SHAPES.add(key)


def _not_traced(name: str, *arrays) -> None:
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays)):
        raise TypeError(f"redy_jax.{name} runs on the host (it returns a Report); inside "
                        "jax.jit / vmap / grad use redy_jax.simulator(model, spec, policy, "
                        "calibration), a pure function of (variables, images)")


# ---------------------------------------------------------------- calibration
def calibrate(model: nn.Module, variables, images, spec: HardwareSpec, *, method: str = "mse",
              labels=None, bits: int | None = None, batch_size: int = 256,
              apply_kwargs: Mapping | None = None) -> Calibration:
    """Static per-layer activation quantisers from calibration images (float pass).

    Args:
      images: float model inputs (training or validation data, never the test split).
      method: ``'minmax'`` covers the observed range; ``'mse'`` picks, per layer, the
        fraction of that range (``CLIP_GRID``) that minimises the quantisation MSE;
        ``'best'`` computes both and keeps the one whose static accuracy on ``images``
        is higher (needs ``labels``; what the shipped results use).
      bits: the code width of every layer (default ``spec.act_bits``; fewer for static
        k-bit precision, mixed per layer with :meth:`Calibration.with_bits`).
      apply_kwargs: keyword arguments of ``model.apply`` (default: the inference flag
        of :data:`INFERENCE_FLAGS` the model takes).

    Layers with negative inputs get a zero point (or a symmetric range for
    ``spec.signed_encoding='sign_bit'``).
    """
    methods = (*CALIBRATION_METHODS, "best")
    if method not in methods:
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    if method == "best":
        if labels is None:
            raise ValueError("method='best' keeps the calibration with the higher static "
                             "accuracy, so it needs labels=...; or use method='mse'")
        best, best_acc = None, -1.0
        for m in CALIBRATION_METHODS:
            cal = calibrate(model, variables, images, spec, method=m, bits=bits,
                            batch_size=batch_size, apply_kwargs=apply_kwargs)
            acc = evaluate_dataset(model, variables, images, labels, spec, Static(),
                                   calibration=cal, progress=False,
                                   apply_kwargs=apply_kwargs).accuracy
            if acc > best_acc:
                best, best_acc = cal, acc
        return dataclasses.replace(best, method=f"best({best.method}, calibration accuracy "
                                                f"{best_acc:.4f})")
    spec = check_spec(spec)
    bits = spec.act_bits if bits is None else bits
    if not (isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= spec.act_bits):
        raise ValueError(f"bits must be an integer in [2, act_bits={spec.act_bits}], "
                         f"got {bits!r}")
    _not_traced("calibrate", images)
    images = check_images(images)
    check_variables(variables)
    _check_fits(model, variables, images, apply_kwargs)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]

    def observed(stat: Callable):
        @jax.jit
        def run(variables, x, extra):
            out = {}

            def observe(key, a):
                out[key] = stat(key, a, extra)

            with nn.intercept_methods(observe_interceptor(observe)):
                _apply(model, variables, x, apply_kwargs)
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
    (call site) for each input shape (images without the batch axis), and how often it
    was traced (compiled): once per input shape and batch size."""

    def __init__(self):
        self.by_shape: dict[tuple, dict[str, LayerInfo]] = {}
        self.count = 0

    @staticmethod
    def key(image_shape, policies) -> tuple:
        """A traced pass's key: the image shape and the policy map's structure (which
        layers run on crossbars, and how: a map that runs a layer in float has fewer)."""
        return tuple(image_shape), jax.tree_util.tree_structure(as_policy_map(policies))

    def layers(self, image_shape, policies) -> dict[str, LayerInfo]:
        """The layers of the pass for images of ``image_shape`` (without the batch) under
        ``policies``."""
        return self.by_shape[self.key(image_shape, policies)]


def _check_rules(policies: PolicyMap, paths) -> None:
    """A rule of a policy map (e.g. a thresholds file's layer) must name a layer of the
    model: else the run would silently fall back to the default policy."""
    unmatched = policies.unmatched(paths)
    if unmatched:
        raise ValueError(f"policy rules {unmatched[:5]} match no crossbar layer of the model "
                         f"(layers: {sorted(paths)[:8]}{'...' if len(paths) > 8 else ''}); "
                         "check the thresholds file or PolicyMap patterns")


def _layers_pass(model, spec, mode, ste, apply_kwargs):
    """``f(variables, policies, quants, images) -> (logits, records, infos)``, untraced."""

    def f(variables, policies: PolicyMap, quants, images):
        records: dict[str, LayerRecord] = {}
        infos: dict[str, LayerInfo] = {}
        paths: set[str] = set()
        with nn.intercept_methods(crossbar_interceptor(records, infos, quants, policies, spec,
                                                       mode, ste, paths=paths)):
            logits = _apply(model, variables, images, apply_kwargs)
        _check_rules(policies, paths)
        return logits, records, infos

    return f


MAPPING_HEADROOM = 0.75
"""Fraction of the process's memory-mapping limit (``vm.max_map_count``) above which
:func:`simulate_fn` releases JAX's compiled programs before making a pass."""


def _mapping_use() -> tuple[int, int] | None:
    """``(mappings in use, limit)`` of this process (Linux), else None."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f), limit
    except (OSError, ValueError):
        return None


def _keep_mapping_headroom() -> bool:
    """Releases JAX's compiled programs (and this module's compiled passes) when the
    process uses more than :data:`MAPPING_HEADROOM` of its memory mappings. Every
    XLA:CPU executable keeps its own (~600-800 for a ResNet-20 pass), and at the
    kernel's limit the next compilation crashes the interpreter inside XLA; a sweep that
    compiles ~100 distinct passes in one process would get there. Released programs are
    compiled again when next called: results do not change. Returns whether it released."""
    use = _mapping_use()
    if use is None or use[0] < MAPPING_HEADROOM * use[1]:
        return False
    _compiled_pass.cache_clear()
    jax.clear_caches()
    import gc
    import warnings

    gc.collect()
    warnings.warn(f"{use[0]} of the process's {use[1]} memory mappings in use (one set "
                  "per compiled XLA program): compiled passes released, they will be "
                  "compiled again when used", RuntimeWarning, stacklevel=3)
    return True


def simulate_fn(model: nn.Module, spec: HardwareSpec, calibration: Calibration, mode: str,
                ste: bool = False, apply_kwargs: Mapping | None = None):
    """The jitted pass ``(variables, policy_map, images) -> (logits, records)`` for
    ``calibration``, and the :class:`Traces` it fills when traced. Compiled once per
    input shape and calibration *structure* (layers, signedness): calibrations that
    differ only in scales, zero points or bit widths share one compiled pass.
    ``ste``: straight-through gradients through every simulated layer (forward values
    unchanged), for gradient-based tuning."""
    calibration.check(spec.act_bits, spec.signed_encoding == "sign_bit")
    _keep_mapping_headroom()
    run, traces = _compiled_pass(model, spec, calibration.structure, mode, ste,
                                 _frozen(apply_kwargs))
    quants = dict(calibration.layers)
    return (lambda variables, policies, images: run(variables, policies, quants, images),
            traces)


@functools.lru_cache(maxsize=64)
def _compiled_pass(model: nn.Module, spec: HardwareSpec, structure: tuple, mode: str,
                   ste: bool, apply_kwargs: tuple | None):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    traces = Traces()
    f = _layers_pass(model, spec, mode, ste, None if apply_kwargs is None else dict(apply_kwargs))

    @jax.jit
    def run(variables, policies: PolicyMap, quants, images):
        logits, records, infos = f(variables, policies, quants, images)
        traces.by_shape[traces.key(images.shape[1:], policies)] = infos
        traces.count += 1
        return logits, records

    return run, traces


def simulator(model: nn.Module, spec: HardwareSpec, policy, calibration: Calibration, *,
              mode: str = "auto", ste: bool = True, apply_kwargs: Mapping | None = None):
    """A pure function of the simulated pass, for use inside your own JAX code.

    Returns ``f(variables, images, thresholds=None) -> (logits, counts)``:

    * ``counts``: ``{layer call site: Counts}``, every field shaped (B,) — per image
      (energy: :func:`redy_jax.energy.chip_energy_pj` of ``counts[p].as_dict()``);
    * ``thresholds``: optional ``{layer path: array}`` replacing the thresholds of the
      ReDy policies of those layers (so they can be traced and differentiated).

    ``f`` has no side effects and no host conversions: it works under ``jax.jit``,
    ``jax.vmap``, ``jax.grad`` (with ``ste=True``, gradients reach the model's weights
    through straight-through estimators, and ReDy thresholds through a relaxed policy,
    ``temperature > 0``) and shardings. NaN/inf layer inputs are reported in
    ``counts`` only through NaN outputs; check inputs before jitting.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    spec = check_spec(spec)
    policies = as_policy_map(policy)
    calibration = _calibration_or_none(calibration, policies, spec)
    quants = dict(calibration.layers)
    f = _layers_pass(model, spec, mode, ste, apply_kwargs)

    def run(variables, images, thresholds=None):
        pm = policies if thresholds is None else policies.with_thresholds(thresholds)
        logits, records, _ = f(variables, pm, quants, images)
        return logits, {p: r.counts for p, r in records.items()}

    return run


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
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a redy_jax Calibration (from "
                            f"redy_jax.calibrate), got {type(calibration).__name__}")
        return calibration.check(spec.act_bits, spec.signed_encoding == "sign_bit")
    if policies.default.crossbar or policies.rules:
        raise ValueError("calibration is required for crossbar policies: pass "
                         "calibration=redy_jax.calibrate(model, variables, calib_images, spec)")
    return Calibration(layers={}, method="none", images=0)


def evaluate(model: nn.Module, variables, images, spec: HardwareSpec, policy, *,
             calibration: Calibration | None = None, mode: str = "auto",
             shard: bool = True, apply_kwargs: Mapping | None = None):
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
      mode: ``auto`` / ``exact`` / ``faithful`` / ``bit_plane`` (see
        :func:`redy_jax.xbar.resolve_mode`).
      shard: split the batch over all devices (a ``('data',)`` mesh) when there are
        several and the batch divides evenly; results are identical to one device.
      apply_kwargs: keyword arguments of ``model.apply`` (default: its inference flag).

    Returns:
      ``(logits, report)``.
    """
    _not_traced("evaluate", images, variables)
    spec = check_spec(spec)
    images = check_images(images)
    check_variables(variables)
    _check_fits(model, variables, images, apply_kwargs)
    policies = as_policy_map(policy)
    run, traces = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec),
                              mode, apply_kwargs=apply_kwargs)
    sharding = data_sharding() if shard else None
    if sharding is not None and images.shape[0] % len(sharding.mesh.devices.flat):
        sharding = None
    logits, records = run(variables, policies, _shard(images, sharding))
    _raise_nonfinite(records)
    return logits, Report.from_records(records, traces.layers(images.shape[1:], policies), spec,
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


def evaluate_dataset(model: nn.Module, variables, images, labels, spec: HardwareSpec, policy,
                     *, calibration: Calibration | None, batch_size: int = 250,
                     mode: str = "auto", progress: bool = True, desc: str = "evaluate",
                     shard: bool = True, apply_kwargs: Mapping | None = None) -> DatasetResult:
    """Accuracy and energy over a labelled set, batch by batch (one compilation: the
    last batch is padded to ``batch_size`` and its padding masked out). With several
    devices each batch is split over a ``('data',)`` mesh (``batch_size`` rounded up to
    a multiple of the device count); counts are summed across devices, results equal one
    device's. A progress bar shows on a terminal (``progress``)."""
    from tqdm.auto import tqdm

    _not_traced("evaluate_dataset", images, variables)
    spec = check_spec(spec)
    images = check_images(images)
    labels = check_labels(labels, len(images))
    check_variables(variables)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(images)
    batch_size = min(int(batch_size), n)
    _check_fits(model, variables, images[:1], apply_kwargs)
    sharding = data_sharding() if shard else None
    if sharding is not None:
        d = len(sharding.mesh.devices.flat)
        batch_size = -(-batch_size // d) * d
    policies = as_policy_map(policy)
    run, traces = simulate_fn(model, spec, _calibration_or_none(calibration, policies, spec),
                              mode, apply_kwargs=apply_kwargs)
    report, correct, nll = None, 0, 0.0
    # disable=None: shown on a terminal only, so logs and pipes stay readable.
    bar = tqdm(total=n, desc=desc, unit="img", disable=None if progress else True, leave=False)
    for start in range(0, n, batch_size):
        x = images[start:start + batch_size]
        y = labels[start:start + batch_size]
        m = len(x)
        if m < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - m, *x.shape[1:]), x.dtype)])
        logits, records = run(variables, policies, _shard(x, sharding))
        _raise_nonfinite(records)
        valid = np.arange(batch_size) < m
        out = np.asarray(logits, np.float64)[:m]
        correct += int(np.sum(np.argmax(out, -1) == y))
        top = out.max(-1, keepdims=True)
        logp = out - top - np.log(np.exp(out - top).sum(-1, keepdims=True))
        nll += float(-logp[np.arange(m), y].sum())
        batch_report = Report.from_records(records, traces.layers(x.shape[1:], policies), spec, m,
                                           valid)
        report = batch_report if report is None else report.merge(batch_report)
        bar.update(m)
        bar.set_postfix(acc=f"{correct / (start + m):.4f}")
    bar.close()
    return DatasetResult(accuracy=correct / n, report=report, images=n, correct=correct,
                         loss=nll / n)


def capture(model: nn.Module, variables, images, spec: HardwareSpec, policy,
            calibration: Calibration, *, mode: str = "auto",
            apply_kwargs: Mapping | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every crossbar layer's tensors on ``images``, by call site, as numpy arrays:

    ``input`` (the float input), ``codes`` (its static integer codes, int32, NHWC or
    (B, K)), ``outputs`` (the integer outputs the crossbars and shift-and-add produce,
    zero point removed, int32) and ``output`` (dequantised, plus bias: what the next
    layer sees), e.g. to compare a layer against your own reference implementation.
    """
    spec = check_spec(spec)
    images = check_images(images)
    check_variables(variables)
    policies = as_policy_map(policy)
    calibration = _calibration_or_none(calibration, policies, spec)
    quants = dict(calibration.layers)
    taps: dict[str, dict] = {}

    @jax.jit
    def run(variables, images):
        records: dict[str, LayerRecord] = {}
        infos: dict[str, LayerInfo] = {}
        with nn.intercept_methods(crossbar_interceptor(records, infos, quants, policies, spec,
                                                       mode, False, capture=taps)):
            _apply(model, variables, images, apply_kwargs)
        return dict(taps)

    return jax.tree_util.tree_map(np.asarray, run(variables, jnp.asarray(images)))


__all__ = ["INFERENCE_FLAGS", "DatasetResult", "Traces", "calibrate", "capture",
           "data_sharding", "evaluate", "evaluate_dataset", "inference_kwargs", "simulate_fn",
           "simulator"]
