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
from redy_jax.policy.redy import ReDy, thresholds_from_scale
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
    for k, v in d["layers"].items():
        a = np.asarray(v, np.float64)
        if a.ndim != 1 or a.size == 0 or np.isnan(a).any():
            raise ValueError(f"thresholds file {path}: layer {k!r} needs a non-empty list of "
                             f"numbers, got {v!r}")
        if np.any(np.diff(a) < 0):
            raise ValueError(f"thresholds file {path}: layer {k!r} thresholds must ascend")
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
    rules = tuple((p, ReDy(thresholds=jnp.asarray(v, jnp.float32), **params))
                  for p, v in thresholds["layers"].items())
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


def calibrate_thresholds(model, variables, images, labels, spec: HardwareSpec,
                         calibration: Calibration, *, granularity: str = "window",
                         target_loss: float = 0.003, t_max: int = 4, steps: int = 8,
                         batch_size: int = 250, progress: bool = False,
                         provenance: dict | None = None) -> ThresholdSet:
    """Finds the most aggressive global scale c with accuracy loss <= ``target_loss``.

    Args:
      images, labels: labelled calibration data (training or validation images, never
        the test split), float model inputs.
      target_loss: allowed accuracy drop vs static 8-bit on these images (fraction:
        0.003 = 0.3 points).
      provenance: extra fields recorded in the result's provenance (e.g. the split).
    Returns:
      a threshold set whose provenance holds the search trace.
    """
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
    if not trial(lo):
        best = -math.inf
    elif trial(hi):
        best = hi
    else:
        for _ in range(steps):
            mid = (lo + hi) / 2
            if trial(mid):
                lo = mid
            else:
                hi = mid
        best = lo
    if math.isinf(best):  # even the gentlest setting loses too much: never drop LSBs
        result = threshold_set(paths, 2.0 ** -30, t_max, granularity)
    else:
        result = threshold_set(paths, 2.0 ** best, t_max, granularity)
    chosen = next((t for t in trials if t["log2_c"] == best), None)
    result["provenance"] = {
        "routine": "redy_jax.thresholds.calibrate_thresholds",
        **(provenance or {}), "target_loss": target_loss,
        "static_accuracy": base.accuracy, "chosen": chosen, "trials": trials,
        "seconds": round(time.time() - t0, 1),
    }
    return result


__all__ = ["ThresholdSet", "calibrate_thresholds", "crossbar_layer_paths", "read_thresholds",
           "redy_policy_map", "threshold_set", "write_thresholds"]
