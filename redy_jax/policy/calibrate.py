"""Default ReDy thresholds from a calibration split, for a target accuracy loss.

The thresholds of every conv layer are ``2^i / c`` (see ``thresholds_from_scale``):
one aggressiveness ``c`` for the whole model. A bisection on ``log2 c`` finds the most
aggressive setting whose accuracy on held-out *training* images (never the test
split) stays within ``target_loss`` of static 8-bit on the same images. The result
is written with its provenance (images, target, measured loss and saving).
"""

from __future__ import annotations

import math
import time

from redy_jax import data
from redy_jax.policy.redy import thresholds_from_scale, write_thresholds


def conv_layer_paths(s) -> list[str]:
    """Paths of the layers ReDy applies to (dense conv layers, not depthwise/dense)."""
    from redy_jax.policy.base import PolicyMap, Static
    from redy_jax.simulate import evaluate

    _, report = evaluate(s.model, s.variables, s.calib_images[:2], s.spec,
                         PolicyMap(default=Static()), calibration=s.calibration)
    return [p for p, lay in report.layers.items() if lay.info.kind in ("conv", "grouped")]


def threshold_set(paths, c: float, t_max: int, granularity: str, **config) -> dict:
    thr = thresholds_from_scale(c, t_max)
    cfg = {"granularity": granularity, "statistic": "std", "n_min": 1, "clip_k": None,
           "t_max": t_max, "scale_c": c, **config}
    return {"config": cfg, "layers": {p: thr.tolist() for p in paths}}


def calibrate_thresholds(s, *, granularity: str = "window", target_loss: float = 0.003,
                         images: int = 2000, offset: int | None = None, t_max: int = 4,
                         steps: int = 8, batch_size: int = 250, out=None,
                         progress: bool = False) -> dict:
    """Finds the most aggressive global scale c with accuracy loss <= ``target_loss``.

    Args:
      s: a :class:`redy_jax.runner.Setup`.
      target_loss: allowed accuracy drop vs static 8-bit on the calibration images
        (fraction: 0.003 = 0.3 points).
      images: held-out training images used (after those used for the static scales).
      out: optional path to write the thresholds file to (atomically).
    """
    from redy_jax.policy.base import PolicyMap, Static
    from redy_jax.policy.redy import redy_policy_map
    from redy_jax.simulate import evaluate_dataset

    offset = s.calibration.images if offset is None else offset
    train = data.load(s.dataset, "train", limit=offset + images)
    x = data.normalize(train.images[offset:], train.mean, train.std)
    y = train.labels[offset:]
    paths = conv_layer_paths(s)

    def run(policy):
        return evaluate_dataset(s.model, s.variables, x, y, s.spec, policy,
                                calibration=s.calibration, batch_size=batch_size,
                                progress=progress)

    t0 = time.time()
    base = run(PolicyMap(default=Static()))
    e_static = base.report.energy_pj_per_image()
    trials = []

    def trial(log2c):
        ts = threshold_set(paths, 2.0 ** log2c, t_max, granularity)
        r = run(redy_policy_map(thresholds=ts, granularity=granularity))
        loss = base.accuracy - r.accuracy
        trials.append({"log2_c": log2c, "accuracy": r.accuracy, "loss": loss,
                       "saving": 1 - r.report.energy_pj_per_image() / e_static})
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
        "routine": "redy_jax.policy.calibrate.calibrate_thresholds",
        "model": s.model_name, "dataset": s.dataset, "split": "train",
        "images": f"train[{offset}:{offset + images}]", "target_loss": target_loss,
        "static_accuracy": base.accuracy, "chosen": chosen, "trials": trials,
        "seconds": round(time.time() - t0, 1),
    }
    if out is not None:
        write_thresholds(out, result["layers"], result["config"], result["provenance"])
    return result


__all__ = ["calibrate_thresholds", "conv_layer_paths", "threshold_set"]
