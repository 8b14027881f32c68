"""Published-style targets on the shipped ResNet-20, full Fashion-MNIST test split (slow).

Issue targets: ReDy (calibrated thresholds, window groups) saves >= 35% energy vs static
8-bit with <= 0.5 points accuracy loss, and >= 10 points more than lossless leading-zero
skipping; tuned thresholds save >= 5 points more than the calibrated ones at no larger
accuracy loss (both <= 0.5 points), with per-layer (not global) thresholds.
"""

import numpy as np
import pytest

from redy_jax.checkpoint import shipped
from redy_jax.study import default_thresholds_path
from redy_jax.thresholds import read_thresholds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def r20():
    from redy_jax.study import run_policy, setup

    if not shipped("resnet20").exists():
        pytest.fail("the ResNet-20 checkpoint is not shipped")
    s = setup("resnet20")
    res = {p: run_policy(s, p, progress=False) for p in ("static", "lzs")}
    res["redy"] = run_policy(s, "redy", progress=False, thresholds=read_thresholds(
        default_thresholds_path("resnet20", "window")))
    return s, res


def _saving(res, p):
    return 1 - res[p]["energy_pj_per_image"] / res["static"]["energy_pj_per_image"]


def test_redy_window_saves_35pct_within_half_a_point(r20):
    _, res = r20
    assert res["static"]["images"] == 10000
    assert _saving(res, "redy") >= 0.35
    assert res["redy"]["accuracy"] >= res["static"]["accuracy"] - 0.005
    assert _saving(res, "redy") - _saving(res, "lzs") >= 0.10


def test_tuned_thresholds_beat_calibrated_by_5_points(r20):
    from redy_jax.study import run_policy, shipped_thresholds

    s, res = r20
    tuned = read_thresholds(shipped_thresholds("resnet20"))
    layers = np.array(list(tuned["layers"].values()))
    assert len({tuple(r) for r in layers.round(6).tolist()}) > 1  # per layer, not global
    rt = run_policy(s, "redy", progress=False, thresholds=tuned)
    loss_cal = res["static"]["accuracy"] - res["redy"]["accuracy"]
    loss_tuned = res["static"]["accuracy"] - rt["accuracy"]
    assert loss_cal <= 0.005 and loss_tuned <= 0.005
    assert loss_tuned <= loss_cal + 1e-9  # equal or smaller accuracy loss
    saving_tuned = 1 - rt["energy_pj_per_image"] / res["static"]["energy_pj_per_image"]
    assert saving_tuned >= _saving(res, "redy") + 0.05
