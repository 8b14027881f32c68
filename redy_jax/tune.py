"""Differentiable tuning of ReDy's per-layer thresholds with optax.

Only the thresholds move (network weights are frozen). Parameters are the log2 of
each conv layer's ascending thresholds; the loss on labelled tuning images (training
or validation data, never the test split) is

    cross-entropy(logits) + lambda * chip energy / static-8-bit chip energy

through ReDy's straight-through relaxation (``ReDy.plan``): the forward pass is the
hard rule, gradients are those of the expectation under logistic threshold noise.
After every step the thresholds are projected back to their valid range (sorted
ascending, clipped to [2^-8, 2^12] codes). Tuned thresholds are then evaluated with
the hard rule on held-out images.

State (step, parameters, optax state, history) is saved atomically every
``save_every`` steps, so an interrupted run resumes from the same step with the same
numbers; a finished run writes its thresholds file atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from redy_jax import data
from redy_jax.cache import digest
from redy_jax.energy.breakdown import chip_energy_pj
from redy_jax.files import atomic_write_bytes, atomic_write_json, write_csv
from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.map import PolicyMap
from redy_jax.policy.static import Static
from redy_jax.quant.activations import Calibration
from redy_jax.simulate import evaluate_dataset, simulate_fn
from redy_jax.study import run_policy
from redy_jax.thresholds import (
    ThresholdSet,
    as_arrays,
    calibrate_thresholds,
    read_thresholds,
    redy_policy_map,
    write_thresholds,
)
from redy_jax.validate import check_images, check_labels, check_variables

LOG2_RANGE = (-8.0, 12.0)


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    lam: float = 0.5
    """Weight of the normalised energy term."""
    steps: int = 60
    batch_size: int = 32
    lr: float = 0.1
    """Adam learning rate on log2 thresholds (octaves per step)."""
    temperature: float = 0.5
    """Relaxation temperature in octaves."""
    seed: int = 0
    save_every: int = 10


def _energy_per_image(records, spec) -> jnp.ndarray:
    """Mean whole-chip energy per image of a pass's records [pJ] (differentiable)."""
    return jnp.mean(sum(chip_energy_pj(rec.counts.as_dict(), spec) for rec in records.values()))


def _project(log_thr: dict) -> dict:
    return {k: jnp.clip(jnp.sort(v), *LOG2_RANGE) for k, v in log_thr.items()}


def tune_thresholds(model, variables, images, labels, spec: HardwareSpec,
                    calibration: Calibration, *, init: ThresholdSet | None = None,
                    config: TuneConfig = TuneConfig(), out_dir=None, progress: bool = True,
                    stop_after: int | None = None,
                    provenance: dict | None = None) -> dict[str, Any]:
    """Tunes ReDy thresholds of ``model`` on labelled ``images`` (float model inputs;
    or ``labels=None`` and an iterable of ``(images, labels)`` batches).

    Args:
      init: the starting threshold set (``{"config": ..., "layers": {path: [thr...]}}``);
        default: :func:`redy_jax.thresholds.calibrate_thresholds` on the same images.
        A start where the loss does not depend on the thresholds (every group's
        statistic far from every threshold: zero gradient) is reported with a warning
        and ``"flat_start": True``.
      config: the optimisation settings.
      out_dir: where ``state.msgpack`` (resumable) and ``thresholds.json`` go.
      stop_after: stop (as if interrupted) after this many steps of this call.
      provenance: extra fields recorded in the written thresholds file.
    Returns:
      ``{"config", "layers", "history", "static_energy_pj", "finished"}``: a threshold
      set plus the optimisation history.
    """
    import warnings

    from tqdm.auto import tqdm

    cfg = config
    images, labels = as_arrays(images, labels)
    x_all = check_images(images)
    y_all = check_labels(labels, len(x_all))
    check_variables(variables)
    if len(x_all) < cfg.batch_size:
        raise ValueError(f"tuning needs at least one batch: {len(x_all)} images < "
                         f"batch_size {cfg.batch_size}")
    if init is None:
        init = calibrate_thresholds(model, variables, x_all, y_all, spec, calibration)
    out_dir = Path(out_dir) if out_dir is not None else None
    gran = init.get("config", {}).get("granularity", "window")
    run, _ = simulate_fn(model, spec, calibration, "exact", ste=True)

    def policies(log_thr, temperature):
        layers = {k: 2.0 ** v for k, v in log_thr.items()}
        return redy_policy_map({"config": init.get("config", {}), "layers": layers},
                               granularity=gran, temperature=temperature)

    # Static 8-bit energy per image of the tuning images: the normaliser.
    _, rec0 = run(variables, PolicyMap(default=Static()), jnp.asarray(x_all[:cfg.batch_size]))
    e_static = float(_energy_per_image(rec0, spec))

    def loss_fn(log_thr, x, y):
        logits, records = run(variables, policies(log_thr, cfg.temperature), x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        e = _energy_per_image(records, spec) / e_static
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return ce + cfg.lam * e, (ce, e, acc)

    tx = optax.adam(cfg.lr)
    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    params = {k: jnp.log2(jnp.maximum(jnp.asarray(v, jnp.float32), 2.0 ** LOG2_RANGE[0]))
              for k, v in init["layers"].items()}
    params = _project(params)
    opt_state = tx.init(params)
    state = {"step": 0, "params": params, "opt_state": opt_state, "history": []}
    state_path = out_dir / "state.msgpack" if out_dir else None
    # What the run depends on: a state saved with other settings is not resumed.
    fingerprint = digest({"init": init["layers"], "init_config": init.get("config", {}),
                          "config": dataclasses.asdict(cfg), "spec": spec.to_dict(),
                          "calibration": calibration.to_dict(),
                          "data": hashlib.sha256(x_all.tobytes() + y_all.tobytes()).hexdigest()})
    if state_path is not None and state_path.exists():
        try:
            restored = flax.serialization.msgpack_restore(state_path.read_bytes())
            saved = bytes(np.asarray(restored.get("fingerprint", b""))).decode()
            if saved != fingerprint:
                warnings.warn(f"tune_thresholds: {state_path} was saved by a run with other "
                              "settings (lambda, steps, thresholds, data or hardware); "
                              "starting afresh (it will be overwritten)", stacklevel=2)
            else:
                state = {"step": int(restored["step"]),
                         "params": flax.serialization.from_state_dict(params,
                                                                      restored["params"]),
                         "opt_state": flax.serialization.from_state_dict(
                             opt_state, restored["opt_state"]),
                         "history": json.loads(bytes(np.asarray(restored["history"])).decode())}
        except Exception as e:  # msgpack raises several unrelated types
            raise ValueError(f"tuning state {state_path} is corrupt or not a tuning state "
                             f"({type(e).__name__}: {e}); delete it or choose another "
                             "out_dir") from None

    def save():
        if state_path is None:
            return
        blob = {"fingerprint": np.frombuffer(fingerprint.encode(), np.uint8),
                "step": state["step"],
                "params": flax.serialization.to_state_dict(state["params"]),
                "opt_state": flax.serialization.to_state_dict(state["opt_state"]),
                "history": np.frombuffer(json.dumps(state["history"]).encode(), np.uint8)}
        atomic_write_bytes(state_path, flax.serialization.msgpack_serialize(
            jax.tree_util.tree_map(np.asarray, blob)))

    n_batches = len(x_all) // cfg.batch_size
    flat = False
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"tune lambda={cfg.lam}",
               disable=None if progress else True, leave=False)
    done_here = 0
    while state["step"] < cfg.steps:
        if stop_after is not None and done_here >= stop_after:
            break
        step = state["step"]
        # Deterministic batch order from (seed, epoch): resuming reproduces it.
        epoch, i = divmod(step, n_batches)
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(x_all))
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        (loss, (ce, e, acc)), g = grad_fn(state["params"], jnp.asarray(x_all[idx]),
                                          jnp.asarray(y_all[idx]))
        if step == 0 and not any(float(jnp.abs(a).max()) > 0
                                 for a in jax.tree_util.tree_leaves(g)):
            flat = True
            warnings.warn("tune_thresholds: the loss is flat in the thresholds where tuning "
                          "starts (zero gradient: every group's statistic is far from every "
                          "threshold); start from calibrated thresholds or raise the "
                          "temperature", stacklevel=2)
        updates, opt_state = tx.update(g, state["opt_state"], state["params"])
        state["params"] = _project(optax.apply_updates(state["params"], updates))
        state["opt_state"] = opt_state
        state["step"] = step + 1
        state["history"].append({"step": step + 1, "loss": float(loss), "ce": float(ce),
                                 "energy_ratio": float(e), "accuracy": float(acc)})
        done_here += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.3f}",
                        energy=f"{float(e):.3f}")
        if state["step"] % cfg.save_every == 0 or state["step"] == cfg.steps:
            save()
    bar.close()
    layers = {k: (2.0 ** np.asarray(v)).tolist() for k, v in state["params"].items()}
    result = {"config": {**init.get("config", {}), "tuned": True},
              "layers": layers, "history": state["history"], "static_energy_pj": e_static,
              "finished": state["step"] >= cfg.steps, "flat_start": flat}
    if out_dir is not None and result["finished"]:
        write_thresholds(out_dir / "thresholds.json", layers, result["config"], {
            "routine": "redy_jax.tune.tune_thresholds", **(provenance or {}),
            **dataclasses.asdict(cfg)})
    return result


# ---------------------------------------------------------------- shipped models
def tune_setup(s, init: ThresholdSet, cfg: TuneConfig, *, images: int = 2048, out_dir=None,
               progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """:func:`tune_thresholds` for a :class:`redy_jax.study.Setup`, on the ``images``
    training images that follow its static-calibration images."""
    offset = s.calibration.images
    train = data.load(s.dataset, "train", limit=offset + images)
    x = data.model_inputs(train)[offset:]
    return tune_thresholds(s.model, s.variables, x, train.labels[offset:], s.spec,
                           s.calibration, init=init, config=cfg, out_dir=out_dir,
                           progress=progress, stop_after=stop_after,
                           provenance={"model": s.model_name,
                                       "split": f"train[{offset}:{offset + images}]",
                                       "images": images})


def evaluate_thresholds(s, thresholds: dict, *, batch_size: int = 250,
                        progress: bool = False) -> dict[str, float]:
    """Hard-rule accuracy and energy of a thresholds set on the test split."""
    gran = thresholds.get("config", {}).get("granularity", "window")
    res = evaluate_dataset(s.model, s.variables, s.test_images, s.test_labels, s.spec,
                           redy_policy_map(thresholds, granularity=gran),
                           calibration=s.calibration, batch_size=batch_size,
                           progress=progress)
    return {"accuracy": res.accuracy, "energy_pj_per_image": res.report.energy_pj_per_image(),
            "chip_energy_pj_per_image": res.report.chip_energy_pj_per_image(),
            "mean_streamed_bits": res.report.mean_streamed_bits()}


def _cached(path: Path, compute):
    """Returns the JSON at ``path``, or computes it and writes it atomically."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value


def sweep(s, init: dict, lambdas, cfg: TuneConfig, out_dir, *, images: int = 2048,
          progress: bool = True, batch_size: int = 250) -> dict[str, Any]:
    """Tunes one threshold set per lambda and evaluates each (hard rule, test split).

    Every cell (static, calibrated, each lambda) is cached under ``out_dir`` and
    skipped when already done, so an interrupted sweep resumes without recomputing.
    Writes ``pareto.json``, ``pareto.csv`` and ``pareto.png``.
    """
    from redy_jax.plots import plot_pareto, save_figure  # matplotlib only when plotting

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    static = _cached(out_dir / "static.json", lambda: {
        k: v for k, v in run_policy(s, "static", batch_size=batch_size,
                                     progress=progress).items()
        if k in ("accuracy", "energy_pj_per_image", "chip_energy_pj_per_image",
                 "mean_streamed_bits", "images")})
    e0 = static["chip_energy_pj_per_image"]
    hand = _cached(out_dir / "calibrated.json", lambda: evaluate_thresholds(
        s, init, batch_size=batch_size, progress=progress))
    hand["energy_ratio"] = hand["chip_energy_pj_per_image"] / e0
    points = []
    for lam in lambdas:
        cell = out_dir / f"lambda_{lam:g}"
        if (cell / "thresholds.json").exists():  # a finished cell
            tuned = read_thresholds(cell / "thresholds.json")
        else:
            tuned = tune_setup(s, init, dataclasses.replace(cfg, lam=float(lam)),
                               images=images, out_dir=cell, progress=progress)
        ev = _cached(cell / "eval.json", lambda t=tuned: evaluate_thresholds(
            s, t, batch_size=batch_size, progress=progress))
        e = ev["chip_energy_pj_per_image"]
        points.append({"lambda": float(lam), **ev, "energy_ratio": e / e0, "saving": 1 - e / e0,
                       "accuracy_loss": static["accuracy"] - ev["accuracy"],
                       "thresholds": str(cell / "thresholds.json")})
    result = {"model": s.model_name, "static": static,
              "calibrated": {**hand, "saving": 1 - hand["energy_ratio"]},
              "points": points, "config": dataclasses.asdict(cfg)}
    atomic_write_json(out_dir / "pareto.json", result)
    write_csv(out_dir / "pareto.csv", [
        {"policy": "static", "lambda": "", "accuracy": static["accuracy"], "energy_ratio": 1.0},
        {"policy": "calibrated", "lambda": "", "accuracy": hand["accuracy"],
         "energy_ratio": hand["energy_ratio"]},
        *({"policy": "tuned", "lambda": p["lambda"], "accuracy": p["accuracy"],
           "energy_ratio": p["energy_ratio"]} for p in points)])
    fig, _ = plot_pareto(points, static=static, hand=hand,
                         title=f"{s.model_name}: ReDy energy-accuracy front")
    save_figure(fig, out_dir / "pareto.png")
    return result


__all__ = ["TuneConfig", "evaluate_thresholds", "sweep", "tune_setup", "tune_thresholds"]
