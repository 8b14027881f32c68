"""The shipped Fashion-MNIST checkpoints: float accuracy targets and the static 8-bit
simulation's loss against float (a fixed subset here; the full split under -m slow)."""

import pytest

from redy_jax.checkpoint import shipped
from redy_jax.models import SMALL_MODELS
from redy_jax.study import run_policy, setup

TARGETS = {"lenet5": 0.89, "resnet20": 0.91, "vgg8": 0.90, "mobilenetv2": 0.90}
SHIPPED = [m for m in SMALL_MODELS if shipped(m).exists()]


def test_every_small_model_is_shipped_with_its_thresholds():
    assert set(SHIPPED) == set(SMALL_MODELS) == set(TARGETS)
    for m in SHIPPED:
        for kind in ("window", "channel", "tuned"):
            assert shipped(m).with_suffix(f".redy_{kind}.json").exists(), (m, kind)


@pytest.mark.parametrize("model", SHIPPED)
def test_static_8bit_tracks_float_on_a_subset(model):
    s = setup(model, limit=500, calib_images=500)
    f = run_policy(s, "float", progress=False)
    st = run_policy(s, "static", progress=False)
    assert f["accuracy"] >= TARGETS[model] - 0.03
    assert st["accuracy"] >= f["accuracy"] - 0.01  # 5 images of 500
    assert st["adc_saturations_per_image"] == 0
    assert s.record["float_test_accuracy"] >= TARGETS[model]


@pytest.mark.slow
@pytest.mark.parametrize("model", SHIPPED)
def test_static_8bit_loses_at_most_half_a_point_on_full_test_split(model):
    s = setup(model)
    f = run_policy(s, "float", progress=False)
    st = run_policy(s, "static", progress=False)
    assert f["images"] == 10000
    assert f["accuracy"] >= TARGETS[model]
    assert st["accuracy"] >= f["accuracy"] - 0.005
