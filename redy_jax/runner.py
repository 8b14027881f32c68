"""High-level runs shared by the CLI and the experiments: load a shipped model and data,
calibrate, evaluate one or more policies, and produce JSON-ready summaries."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from redy_jax import data
from redy_jax.hw.presets import get_preset
from redy_jax.hw.spec import HardwareSpec
from redy_jax.models import load_checkpoint
from redy_jax.policy.base import Float, LeadingZeroSkip, PolicyMap, Static
from redy_jax.quant.activations import CALIBRATION_METHODS, Calibration
from redy_jax.simulate import calibrate, evaluate_dataset

POLICY_NAMES = ("float", "static", "lzs", "redy")


@dataclasses.dataclass
class Setup:
    model_name: str
    model: Any
    variables: Any
    record: dict
    spec: HardwareSpec
    test_images: np.ndarray
    test_labels: np.ndarray
    calibration: Calibration
    calib_images: np.ndarray
    dataset: str


def setup(model_name: str, *, checkpoint=None, dataset: str = "fashion_mnist",
          limit: int | None = None, preset: str = "isaac", spec_overrides: dict | None = None,
          calib_images: int = 1000, calib_method: str = "best") -> Setup:
    """Loads the checkpoint and data and calibrates on the first ``calib_images`` images
    of the training split (never the test split).

    ``calib_method='best'`` calibrates with each of ``CALIBRATION_METHODS`` and keeps the
    one whose static 8-bit accuracy on those calibration images is highest, so the static
    baseline that savings are measured against is tuned for its own accuracy."""
    spec = get_preset(preset, **(spec_overrides or {}))
    model, variables, record = load_checkpoint(model_name, checkpoint)
    test = data.load(dataset, "test", limit=limit)
    train = data.load(dataset, "train", limit=calib_images)
    x_test = data.normalize(test.images, test.mean, test.std)
    x_cal = data.normalize(train.images, train.mean, train.std)
    if calib_method == "best":
        cal = _best_calibration(model, variables, x_cal, train.labels, spec)
    else:
        cal = calibrate(model, variables, x_cal, spec, method=calib_method)
    return Setup(model_name, model, variables, record, spec, x_test, test.labels, cal, x_cal,
                 dataset)


def _best_calibration(model, variables, x, y, spec) -> Calibration:
    best, best_acc = None, -1.0
    for method in CALIBRATION_METHODS:
        cal = calibrate(model, variables, x, spec, method=method)
        acc = evaluate_dataset(model, variables, x, y, spec, PolicyMap(default=Static()),
                               calibration=cal, progress=False).accuracy
        if acc > best_acc:
            best, best_acc = cal, acc
    return dataclasses.replace(best, method=f"best({best.method}, calibration accuracy "
                                            f"{best_acc:.4f})")


def make_policy(name: str, *, granularity: str = "window", thresholds=None,
                s: Setup | None = None) -> Any:
    """A PolicyMap for a named policy: ReDy on conv layers, static 8-bit on dense and
    depthwise layers (the layers the paper does not treat)."""
    if name == "float":
        return Float()
    if name == "static":
        return PolicyMap(default=Static())
    if name == "lzs":
        return PolicyMap(default=LeadingZeroSkip(granularity=granularity))
    if name == "redy":
        from redy_jax.policy.redy import redy_policy_map

        return redy_policy_map(s, granularity=granularity, thresholds=thresholds)
    raise ValueError(f"policy must be one of {POLICY_NAMES}, got {name!r}")


def run_policy(s: Setup, policy_name: str, *, policy=None, batch_size: int = 250,
               mode: str = "auto", progress: bool = True, granularity: str = "window",
               thresholds=None) -> dict[str, Any]:
    """Evaluates one policy on the test images; returns a JSON-ready summary."""
    if policy is None:
        policy = make_policy(policy_name, granularity=granularity, thresholds=thresholds, s=s)
    t0 = time.perf_counter()
    res = evaluate_dataset(s.model, s.variables, s.test_images, s.test_labels, s.spec, policy,
                           calibration=None if policy_name == "float" else s.calibration,
                           batch_size=batch_size, mode=mode, progress=progress,
                           desc=f"{s.model_name}/{policy_name}")
    out = {
        "model": s.model_name,
        "policy": policy_name,
        "granularity": granularity if policy_name in ("lzs", "redy") else None,
        "dataset": s.dataset,
        "preset": s.spec.name,
        "mode": mode,
        "seconds": round(time.perf_counter() - t0, 2),
        **res.summary(),
    }
    out["images"] = res.images
    out["jax_devices"] = jax.device_count()
    if policy_name == "redy" and out.get("crossbars"):
        # One quantisation unit per tile the model occupies (crossbars -> whole tiles).
        per_tile = s.spec.xbars_per_ima * s.spec.imas_per_tile
        tiles = -(-out["crossbars"] // per_tile)
        out["redy_unit_area_mm2"] = tiles * s.spec.redy_unit_area_mm2
        out["redy_area_overhead"] = out["redy_unit_area_mm2"] / out["area_mm2"]
    if policy_name == "float":  # no crossbar: energy figures do not apply
        for k in ("energy_pj_per_image", "breakdown_pj", "adc_conversions_per_image",
                  "xbar_reads_per_image", "cycles_per_image", "latency_us_per_image",
                  "adc_saturations_per_image", "mean_streamed_bits", "crossbars", "area_mm2"):
            out[k] = None
        out["layers"] = {}
    return out


def load_thresholds(s: Setup, path: str | None, tuned: bool):
    """ReDy thresholds from ``path``, or the shipped tuned ones (``--tuned``), else None
    (calibrated defaults)."""
    from redy_jax.policy.redy import read_thresholds, shipped_thresholds

    if path and tuned:
        raise ValueError("give --thresholds FILE or --tuned, not both")
    if tuned:
        path = shipped_thresholds(s.model_name)
    return None if path is None else read_thresholds(path)
