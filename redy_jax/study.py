"""The study of the shipped models: load a checkpoint and its data, calibrate, evaluate
named policies, and produce JSON-ready summaries (the CLI and the experiments use it).

:func:`setup` returns a :class:`Setup`, everything one evaluation of a shipped model
needs, documented field by field. Nothing here is needed to simulate your own model:
use :func:`redy_jax.calibrate`, :func:`redy_jax.evaluate` and
:mod:`redy_jax.thresholds` directly.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from redy_jax import data
from redy_jax.checkpoint import CHECKPOINT_DIR
from redy_jax.hw.presets import get_preset
from redy_jax.hw.spec import HardwareSpec
from redy_jax.models import load_checkpoint
from redy_jax.policy.map import PolicyMap
from redy_jax.policy.static import Float, LeadingZeroSkip, Static
from redy_jax.quant.activations import CALIBRATION_METHODS, Calibration
from redy_jax.simulate import calibrate, evaluate_dataset
from redy_jax.thresholds import (
    ThresholdSet,
    calibrate_thresholds,
    read_thresholds,
    redy_policy_map,
)

POLICY_NAMES = ("float", "static", "lzs", "redy")


@dataclasses.dataclass
class Setup:
    """One shipped model, its data and its static calibration."""

    model_name: str
    """Zoo name (``lenet5``, ``resnet20``, ...)."""
    model: nn.Module
    """The Flax module."""
    variables: Any
    """Its variables (``{'params': ..., 'batch_stats': ...}``) from the checkpoint."""
    record: dict
    """The checkpoint's JSON record (how it was trained)."""
    spec: HardwareSpec
    """The hardware."""
    test_images: np.ndarray
    """Float (normalised) test images, NHWC."""
    test_labels: np.ndarray
    """Their int labels."""
    calibration: Calibration
    """Static activation quantisers, from ``calib_images``."""
    calib_images: np.ndarray
    """The float training images the static scales were calibrated on (the first
    ``calibration.images`` images of the train split)."""
    dataset: str
    """Dataset name (see :data:`redy_jax.data.DATASETS`)."""
    val_images: np.ndarray | None = None
    """Float validation images (held out of training), for every choice."""
    val_labels: np.ndarray | None = None
    """Their int labels."""
    calib_labels: np.ndarray | None = None
    """Labels of ``calib_images``."""
    checkpoint_sha256: str | None = None
    """SHA-256 of the checkpoint file the variables came from, as ``checkpoint.load``
    verified it (None: an ONNX graph); shipped threshold files record the checkpoint they
    were calibrated for."""


def load_model(model: str, checkpoint=None, input_shape=None):
    """``(module, variables, record)`` of a zoo model (by name; default checkpoint: the
    shipped one), of an ONNX file (``*.onnx``, see :func:`redy_jax.from_onnx`), or of
    your own: ``"package.module:factory"``, where ``factory()``
    returns a ``flax.linen`` module, with ``checkpoint`` a msgpack file of its variables
    (``redy_jax.checkpoint.save`` or ``flax.serialization.to_bytes``; a ``.json`` record
    beside it is used when present) and ``input_shape`` one image's shape (H, W, C)."""
    if str(model).endswith(".onnx"):
        from redy_jax.onnx_import import from_onnx

        module, variables = from_onnx(model, input_shape=input_shape)
        return module, variables, {"model": str(model), "source": "onnx"}
    if ":" not in model:
        return load_checkpoint(model, checkpoint)
    import importlib

    mod_name, _, factory = model.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), factory)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model {model!r}: cannot import {factory!r} from {mod_name!r} "
                         f"({e})") from e
    module = fn()
    if not isinstance(module, nn.Module):
        raise ValueError(f"--model {model!r}: {factory}() must return a flax.linen Module, "
                         f"got {type(module).__name__}")
    if checkpoint is None:
        raise ValueError(f"--model {model!r} needs --checkpoint FILE (its variables)")
    if input_shape is None:
        raise ValueError("a user model needs the input shape (from the data)")
    from redy_jax.checkpoint import load as load_variables

    target = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                jax.numpy.zeros((1, *input_shape))))
    target = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), target)
    variables, record = load_variables(checkpoint, target, require_record=False)
    return module, variables, record


def setup(model_name: str, *, checkpoint=None, dataset: str = "fashion_mnist",
          limit: int | None = None, preset: str = "isaac", spec_overrides: dict | None = None,
          calib_images: int = 1000, calib_method: str = "best",
          validation: bool = False, preprocess: dict | None = None) -> Setup:
    """Loads the model, its checkpoint and data, and calibrates on the first
    ``calib_images`` images of the training split (never the test split);
    ``validation``: also load the validation split.

    ``model_name``: a zoo name or ``"package.module:factory"`` (see :func:`load_model`);
    ``dataset``: a dataset name or a ``.npz`` file (see :func:`redy_jax.data.load_npz`;
    without training images the test images calibrate, which the result records).

    ``calib_method='best'`` calibrates with each of ``CALIBRATION_METHODS`` and keeps the
    one whose static 8-bit accuracy on those calibration images is highest, so the static
    baseline that savings are measured against is tuned for its own accuracy."""
    spec = get_preset(preset, **(spec_overrides or {}))
    test = data.load(dataset, "test", limit=limit, preprocess=preprocess)
    try:
        train = data.load(dataset, "train", limit=calib_images, preprocess=preprocess)
    except ValueError:
        if not (str(dataset).endswith(".npz") or Path(str(dataset)).is_dir()):
            raise
        train = test._replace(split="test (no train_images in the file)")
        train = train._replace(images=train.images[:calib_images],
                               labels=train.labels[:calib_images])
    model, variables, record = load_model(model_name, checkpoint, test.images.shape[1:]
                                          if test.images.ndim == 4 else None)
    x_test, x_cal = data.model_inputs(test), data.model_inputs(train)
    if calib_method == "best":
        cal = _best_calibration(model, variables, x_cal, train.labels, spec)
    else:
        cal = calibrate(model, variables, x_cal, spec, method=calib_method)
    s = Setup(model_name, model, variables, record, spec, x_test, test.labels, cal, x_cal,
              dataset, calib_labels=train.labels,
              checkpoint_sha256=record.get("sha256"))
    if validation:
        val = data.load(dataset, "validation")
        s.val_images = data.model_inputs(val)
        s.val_labels = val.labels
    return s


def check_thresholds_match(s: Setup, thresholds: ThresholdSet, path) -> ThresholdSet:
    """``thresholds`` unchanged, if they were calibrated for the checkpoint ``s`` runs;
    a ``ValueError`` naming both fingerprints otherwise (thresholds calibrated for other
    weights give a valid-looking but uncalibrated result)."""
    want = (thresholds.get("provenance") or {}).get("checkpoint_sha256")
    if want is not None and s.checkpoint_sha256 is not None and want != s.checkpoint_sha256:
        raise ValueError(
            f"thresholds file {path} was calibrated for checkpoint sha256 {want[:12]}..., but "
            f"{s.model_name} runs checkpoint sha256 {s.checkpoint_sha256[:12]}...: recalibrate "
            f"(python experiments/run_all.py --models {s.model_name} --sections study, or "
            f"`redy tune`) or pass --thresholds FILE")
    return thresholds


def _best_calibration(model, variables, x, y, spec, bits: int | None = None) -> Calibration:
    best, best_acc = None, -1.0
    for method in CALIBRATION_METHODS:
        cal = calibrate(model, variables, x, spec, method=method, bits=bits)
        acc = evaluate_dataset(model, variables, x, y, spec, PolicyMap(default=Static()),
                               calibration=cal, progress=False).accuracy
        if acc > best_acc:
            best, best_acc = cal, acc
    return dataclasses.replace(best, method=f"best({best.method}, calibration accuracy "
                                            f"{best_acc:.4f})")


def calibrations(s: Setup, bits=(8, 7, 6, 5, 4, 3)) -> dict[int, Calibration]:
    """Static quantisers at each code width, each the better (static accuracy on the
    calibration images) of MSE and min-max clipping, from ``s``'s calibration images."""
    return {k: _best_calibration(s.model, s.variables, s.calib_images, s.calib_labels, s.spec,
                                 bits=k) for k in bits}


# ---------------------------------------------------------------- shipped thresholds
def default_thresholds_path(model: str, granularity: str) -> Path:
    """The calibrated thresholds shipped beside a model's checkpoint."""
    return CHECKPOINT_DIR / f"{model}_fashion_mnist.redy_{granularity}.json"


def shipped_thresholds(model: str) -> Path:
    """The tuned thresholds shipped beside a model's checkpoint."""
    path = CHECKPOINT_DIR / f"{model}_fashion_mnist.redy_tuned.json"
    if not path.exists():
        raise FileNotFoundError(f"no tuned thresholds shipped for {model}: {path} is missing "
                                "(produce them with `redy tune`)")
    return path


def calibrate_setup_thresholds(s: Setup, *, granularity: str = "window",
                               target_loss: float = 0.003, images: int = 2000,
                               offset: int | None = None, progress: bool = False,
                               **kw) -> ThresholdSet:
    """:func:`redy_jax.thresholds.calibrate_thresholds` on the training images that
    follow the static-calibration ones (``train[offset:offset + images]``)."""
    offset = s.calibration.images if offset is None else offset
    train = data.load(s.dataset, "train", limit=offset + images)
    if len(train.labels) <= offset:  # a small user dataset: reuse the calibration images
        offset = 0
    x = data.model_inputs(train)[offset:]
    return calibrate_thresholds(
        s.model, s.variables, x, train.labels[offset:], s.spec, s.calibration,
        granularity=granularity, target_loss=target_loss, progress=progress,
        provenance={"model": s.model_name, "dataset": s.dataset, "split": "train",
                    "images": f"train[{offset}:{offset + len(x)}]"}, **kw)


def load_thresholds(s: Setup, path: str | None, tuned: bool) -> ThresholdSet | None:
    """ReDy thresholds from ``path``, or the shipped tuned ones (``--tuned``), else None
    (calibrated defaults)."""
    if path and tuned:
        raise ValueError("give --thresholds FILE or --tuned, not both")
    if tuned:
        path = shipped_thresholds(s.model_name)
        return check_thresholds_match(s, read_thresholds(path), path)
    return None if path is None else read_thresholds(path)


def default_thresholds(s: Setup, granularity: str) -> ThresholdSet:
    """The shipped calibrated thresholds of ``s``'s model, else calibrated now."""
    path = default_thresholds_path(s.model_name, granularity)
    if path.exists():
        return check_thresholds_match(s, read_thresholds(path), path)
    return calibrate_setup_thresholds(s, granularity=granularity)


# ---------------------------------------------------------------- named policies
def make_policy(name: str, s: Setup, *, granularity: str = "window",
                thresholds: ThresholdSet | None = None) -> Any:
    """A policy by name: ``float``, ``static``, ``lzs``, or ``redy`` (ReDy on conv
    layers with ``thresholds``, default: the shipped calibrated ones; static 8-bit on
    dense and depthwise layers, the layers the paper does not treat)."""
    if name == "float":
        return Float()
    if name == "static":
        return PolicyMap(default=Static())
    if name == "lzs":
        return PolicyMap(default=LeadingZeroSkip(granularity=granularity))
    if name == "redy":
        if thresholds is None:
            thresholds = default_thresholds(s, granularity)
        return redy_policy_map(thresholds, granularity=granularity)
    raise ValueError(f"policy must be one of {POLICY_NAMES}, got {name!r}")


def run_policy(s: Setup, policy_name: str, *, policy=None, batch_size: int = 250,
               mode: str = "auto", progress: bool = True, granularity: str = "window",
               thresholds: ThresholdSet | None = None,
               distribution: bool = False) -> dict[str, Any]:
    """Evaluates one policy on the test images; returns a JSON-ready summary
    (``distribution``: with per-image percentiles of energy, conversions, bits and
    latency)."""
    if policy is None:
        policy = make_policy(policy_name, s, granularity=granularity, thresholds=thresholds)
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
        **res.summary(distribution=distribution and policy_name != "float"),
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
        for k in ("energy_pj_per_image", "chip_energy_pj_per_image", "breakdown_pj",
                  "fixed_share_of_chip_energy", "stat_buffer_bits_per_image",
                  "adc_conversions_per_image",
                  "xbar_reads_per_image", "cycles_per_image", "latency_us_per_image",
                  "adc_saturations_per_image", "mean_streamed_bits", "crossbars", "area_mm2"):
            out[k] = None
        out["layers"] = {}
    return out


__all__ = ["POLICY_NAMES", "Setup", "calibrate_setup_thresholds", "calibrations",
           "check_thresholds_match", "default_thresholds", "default_thresholds_path",
           "load_thresholds", "make_policy", "run_policy", "setup", "shipped_thresholds"]
