"""ReDy thresholds: files, policy maps built from them, and calibration on labelled data.

A *threshold set* is a plain dict, as stored in a JSON file::

    {"config": {"granularity": "window", "statistic": "std", "n_min": 1,
                "clip_k": null, ...},
     "layers": {"<module path>": [t1, t2, ...], ...},       # ascending, code units
     "provenance": {...}}                                  # how it was made

:func:`calibrate_thresholds` finds a default set for any model from images and labels
(never the test split): every crossbar layer gets the thresholds ``2^i / c`` of one global
aggressiveness ``c``, and a bisection on ``log2 c`` finds the most aggressive setting
whose accuracy stays within ``target_loss`` of static 8-bit on those images.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from redy_jax.files import atomic_write_json
from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.map import PolicyMap
from redy_jax.policy.redy import ReDy, check_thresholds, thresholds_from_scale
from redy_jax.policy.static import Static
from redy_jax.quant.activations import Calibration
from redy_jax.simulate import evaluate, evaluate_dataset

ThresholdSet = dict[str, Any]


def read_thresholds(path) -> ThresholdSet:
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
    if not d["layers"]:
        raise ValueError(f"thresholds file {path} names no layer")
    for k, v in d["layers"].items():
        if not isinstance(v, list) or not all(isinstance(t, int | float) and
                                              not isinstance(t, bool) for t in v):
            raise ValueError(f"thresholds file {path}: layer {k!r} needs a list of numbers, "
                             f"got {v!r}")
        check_thresholds(v, f"thresholds file {path}: layer {k!r}")
    return d


def write_thresholds(path, layers: Mapping, config: dict, provenance: dict) -> None:
    """Writes a threshold set atomically."""
    atomic_write_json(path, {"config": config, "provenance": provenance,
                             "layers": {k: [float(x) for x in np.asarray(v)]
                                        for k, v in layers.items()}})


def redy_policy_map(thresholds: ThresholdSet, *, granularity: str = "window",
                    **kw) -> PolicyMap:
    """ReDy on the layers of a threshold set (per-layer thresholds), static on every
    other layer.

    Args:
      thresholds: a threshold set (see the module docstring).
      granularity: used when the set's config does not name one.
      kw: overrides of the :class:`~redy_jax.policy.ReDy` fields (e.g. ``temperature``).
    """
    cfg = thresholds.get("config", {})
    gran = cfg.get("granularity", granularity)
    clip_k = math.inf if cfg.get("clip_k") in (None, "inf") else float(cfg["clip_k"])
    params = dict(statistic=cfg.get("statistic", "std"), n_min=cfg.get("n_min", 0),
                  offsets=cfg.get("offsets", True), clip_k=clip_k, granularity=gran)
    params.update(kw)
    layers = thresholds.get("layers") if isinstance(thresholds, dict) else None
    if not isinstance(layers, dict) or not layers:
        raise ValueError("a threshold set needs a non-empty 'layers' mapping {path: [t1, ...]}")
    for p, v in layers.items():
        check_thresholds(v, f"thresholds of layer {p!r}")
    rules = tuple((p, ReDy(thresholds=jnp.asarray(v, jnp.float32), **params))
                  for p, v in layers.items())
    return PolicyMap(default=Static(), rules=rules, dense_default=Static(),
                     depthwise_default=Static())


def crossbar_layer_paths(model, variables, images, spec: HardwareSpec,
                         calibration: Calibration) -> list[str]:
    """Paths of every layer mapped to crossbars (convs of every kind, dense layers): the
    layers ReDy applies to, as leading-zero skipping does."""
    _, report = evaluate(model, variables, images[:2], spec, PolicyMap(default=Static()),
                         calibration=calibration)
    return list(report.layers)


def threshold_set(paths, c: float, t_max: int, granularity: str, **config) -> ThresholdSet:
    """The thresholds ``2^i / c`` (:func:`~redy_jax.policy.thresholds_from_scale`) on
    every layer of ``paths``."""
    thr = thresholds_from_scale(c, t_max)
    cfg = {"granularity": granularity, "statistic": "std", "n_min": 0, "offsets": True,
           "clip_k": None, "t_max": t_max, "scale_c": c, **config}
    return {"config": cfg, "layers": {p: thr.tolist() for p in paths}}


def as_arrays(images, labels):
    """``(images, labels)`` from arrays, or from an iterable of ``(images, labels)``
    batches passed as ``images`` with ``labels=None``."""
    if labels is None:
        try:
            batches = list(images)
            xs, ys = zip(*batches, strict=True)
        except (TypeError, ValueError) as e:
            raise ValueError("labels is None: images must then be an iterable of "
                             "(images, labels) batches") from e
        return np.concatenate([np.asarray(x) for x in xs]), np.concatenate(
            [np.asarray(y) for y in ys])
    return images, labels


def calibrate_thresholds(model, variables, images, labels, spec: HardwareSpec,
                         calibration: Calibration, *, granularity: str = "window",
                         target_loss: float = 0.003, t_max: int = 4, steps: int = 8,
                         batch_size: int = 250, progress: bool = False,
                         provenance: dict | None = None) -> ThresholdSet:
    """Finds the most aggressive global scale c with accuracy loss <= ``target_loss``.

    Every crossbar layer gets the thresholds ``2^i / c`` (i = 1..t_max); a bisection on
    ``log2 c`` over [-6, 6] finds the largest c whose accuracy on the given images
    stays within ``target_loss`` of static precision on the same images. The range is
    widened when its edge is hit: to c = 2^-13 (no group drops anything: lossless) when
    even c = 2^-6 loses too much, and to c = 2^12 when c = 2^6 still fits (then every
    non-constant group drops ``t_max`` LSBs); the result's provenance says so
    (``edge``), and a warning is issued.

    Args:
      images, labels: labelled calibration data (training or validation images, never
        the test split), float model inputs; or ``labels=None`` and an iterable of
        ``(images, labels)`` batches as ``images``.
      target_loss: allowed accuracy drop vs static precision on these images (fraction:
        0.003 = 0.3 points).
      provenance: extra fields recorded in the result's provenance (e.g. the split).
    Returns:
      a threshold set whose provenance holds the search trace.
    """
    import warnings

    images, labels = as_arrays(images, labels)
    if not (isinstance(target_loss, int | float) and not isinstance(target_loss, bool)
            and 0 <= target_loss < 1 and math.isfinite(target_loss)):
        raise ValueError(f"target_loss must be an accuracy fraction in [0, 1), got "
                         f"{target_loss!r}")
    if granularity not in ("window", "channel"):
        raise ValueError(f"granularity must be 'window' or 'channel', got {granularity!r}")
    paths = crossbar_layer_paths(model, variables, images, spec, calibration)

    def run(policy):
        return evaluate_dataset(model, variables, images, labels, spec, policy,
                                calibration=calibration, batch_size=batch_size,
                                progress=progress)

    t0 = time.time()
    base = run(PolicyMap(default=Static()))
    e_static = base.report.chip_energy_pj_per_image()
    trials = []

    def trial(log2c):
        ts = threshold_set(paths, 2.0 ** log2c, t_max, granularity)
        r = run(redy_policy_map(ts, granularity=granularity))
        loss = base.accuracy - r.accuracy
        trials.append({"log2_c": log2c, "accuracy": r.accuracy, "loss": loss,
                       "saving": 1 - r.report.chip_energy_pj_per_image() / e_static})
        return loss <= target_loss

    lo, hi = -6.0, 6.0  # c from 1/64 (almost never drops) to 64 (drops at std > 1/32)
    edge = None
    if not trial(lo):
        edge = "lower"
        best = -13.0 if trial(-13.0) else -math.inf  # 2^14+: beyond any 8-bit std
    elif trial(hi):
        edge = "upper"
        best = 12.0 if trial(12.0) else hi
    else:
        for _ in range(steps):
            mid = (lo + hi) / 2
            if trial(mid):
                lo = mid
            else:
                hi = mid
        best = lo
    if edge is not None:
        warnings.warn(f"calibrate_thresholds: the search hit its {edge} edge and was "
                      f"widened; chosen log2 c = {best} (see the result's provenance)",
                      stacklevel=2)
    if math.isinf(best):  # even the gentlest setting loses too much: never drop LSBs
        result = threshold_set(paths, 2.0 ** -30, t_max, granularity)
    else:
        result = threshold_set(paths, 2.0 ** best, t_max, granularity)
    chosen = next((t for t in trials if t["log2_c"] == best), None)
    result["provenance"] = {
        "routine": "redy_jax.thresholds.calibrate_thresholds",
        **(provenance or {}), "target_loss": target_loss, "images": len(labels),
        "static_accuracy": base.accuracy, "chosen": chosen, "edge": edge, "trials": trials,
        "seconds": round(time.time() - t0, 1),
    }
    return result


__all__ = ["ThresholdSet", "as_arrays", "calibrate_thresholds", "crossbar_layer_paths",
           "read_thresholds", "redy_policy_map", "threshold_set", "write_thresholds"]
