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
@pytest.mark.parametrize("kind", ["window", "channel", "tuned"])
def test_shipped_thresholds_name_the_shipped_checkpoint(model, kind):
    """Each shipped threshold file was calibrated (by the study) for the checkpoint beside
    it: its provenance names that checkpoint's SHA-256."""
    import json

    from redy_jax.cache import file_sha256

    t = json.loads(shipped(model).with_suffix(f".redy_{kind}.json").read_text())
    assert t["provenance"].get("checkpoint_sha256") == file_sha256(shipped(model))
    assert t["provenance"].get("chosen_on") == "validation"


def test_thresholds_of_other_weights_are_an_error():
    """Thresholds calibrated for another checkpoint would give a valid-looking but
    uncalibrated result: loading them names both fingerprints."""
    from types import SimpleNamespace

    from redy_jax.study import check_thresholds_match

    t = {"layers": {"conv": [1.0]}, "provenance": {"checkpoint_sha256": "a" * 64}}
    ok = SimpleNamespace(model_name="m", checkpoint_sha256="a" * 64)
    assert check_thresholds_match(ok, t, "f.json") is t
    other = SimpleNamespace(model_name="m", checkpoint_sha256="b" * 64)
    with pytest.raises(ValueError, match=r"f\.json.*aaaaaaaaaaaa.*bbbbbbbbbbbb"):
        check_thresholds_match(other, t, "f.json")
    # a user's file without a fingerprint, or a model without a checkpoint file, passes
    assert check_thresholds_match(other, {"layers": {"conv": [1.0]}}, "f.json")
    assert check_thresholds_match(SimpleNamespace(model_name="m", checkpoint_sha256=None),
                                  t, "f.json") is t


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
