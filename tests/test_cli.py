import json

import pytest
from typer.testing import CliRunner

from redy_jax.cli import app
from redy_jax.energy import CORE_COMPONENTS

runner = CliRunner()


def test_spec_json_has_derived_figures():
    r = runner.invoke(app, ["spec", "--preset", "isaac_16bit", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for k in ("tile_power_mw", "chip_power_w", "chip_area_mm2", "adc_share_tile_power",
              "adc_share_tile_area", "gops_per_w"):
        assert k in d
    assert d["chip_power_w"] == pytest.approx(65.8, rel=0.01)


def test_spec_rejects_bad_override():
    r = runner.invoke(app, ["spec", "--set", "adc_bits=0"])
    assert r.exit_code != 0 and "adc_bits" in r.output
    r = runner.invoke(app, ["spec", "--set", "colour=blue"])
    assert r.exit_code != 0 and "unknown HardwareSpec field" in r.output


def test_evaluate_json_on_shipped_lenet():
    r = runner.invoke(app, ["evaluate", "--model", "lenet5", "--limit", "100", "--policy",
                            "lzs", "--json", "--calib-images", "200"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for k in ("model", "policy", "images", "accuracy", "energy_pj_per_image",
              "adc_conversions_per_image", "mean_streamed_bits", "breakdown_pj", "layers",
              "calibration"):
        assert k in d, k
    assert d["images"] == 100 and 0 < d["accuracy"] <= 1
    core = sum(d["breakdown_pj"][k] for k in CORE_COMPONENTS)
    assert core == pytest.approx(d["energy_pj_per_image"])
    assert d["chip_energy_pj_per_image"] > d["energy_pj_per_image"] - d["breakdown_pj"]["edram"]
    assert set(d["layers"]) == {"conv1", "conv2", "fc1", "fc2", "fc3"}


def test_evaluate_with_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "x.msgpack"
    bad.write_bytes(b"garbage")
    (tmp_path / "x.json").write_text('{"sha256": "00"}')
    r = runner.invoke(app, ["evaluate", "--model", "lenet5", "--checkpoint", str(bad),
                            "--limit", "10"])
    assert r.exit_code == 2
    assert "x.msgpack is corrupt" in r.output


def test_evaluate_rejects_unknown_policy():
    r = runner.invoke(app, ["evaluate", "--policy", "magic"])
    assert r.exit_code != 0 and "--policy" in r.output
