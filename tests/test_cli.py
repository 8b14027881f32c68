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


# ---- every bad input is one line on stderr and exit status 2 (subprocesses) ----
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _redy(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "redy_jax.cli", *args], capture_output=True,
                          text=True, timeout=600, env=e, cwd=cwd)


def _thr(tmp_path, text):
    p = tmp_path / "thr.json"
    p.write_text(text)
    return str(p)


BAD = [
    (["evaluate", "--thresholds", "/nonexistent/thr.json"], "does not exist"),
    (["evaluate", "--thresholds", "@nan"], "must not hold NaN"),
    (["evaluate", "--thresholds", "@str"], "needs a list of numbers"),
    (["evaluate", "--mode", "bogus"], "--mode must be one of"),
    (["evaluate", "--granularity", "bogus"], "--granularity must be one of"),
    (["evaluate", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["evaluate", "--calib-images", "0"], "--calib-images must be an integer >= 1"),
    (["compare", "--policies", ","], "--policies names no policy"),
    (["tune", "--lambda", "nan"], "--lambda must be a finite number"),
    (["tune", "--lambda", "0.1", "--steps", "-5"], "--steps must be an integer >= 1"),
    (["tune", "--lambda", "0.1", "--tune-images", "8", "--tune-batch", "16"],
     "at least one batch"),
    (["spec", "--set", "flipped_encoding=maybe"], "flipped_encoding"),
    (["spec", "--set", "e_dac_pj=inf"], "e_dac_pj must be a finite number"),
    (["evaluate", "--dataset", "cifar10"], "not prepared"),
    (["evaluate", "--data", "/nonexistent/x.npz"], "does not exist"),
    (["evaluate", "--model", "mypkg:make"], "needs --checkpoint"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_fail_fast_with_exit_status_2(tmp_path, args, message):
    args = [_thr(tmp_path, '{"layers": {"conv1": [1.0, NaN]}}') if a == "@nan" else
            _thr(tmp_path, '{"layers": {"conv1": ["a", "b"]}}') if a == "@str" else a
            for a in args]
    r = _redy(*args, env={"REDY_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in " ".join((r.stderr + r.stdout).split()), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_spec_name_override():
    r = _redy("spec", "--set", "name=x", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spec"]["name"] == "x"


def _lenet_with(tmp_path, layer: str, name: str, change) -> str:
    """A copy of the shipped LeNet-5 checkpoint (valid checksum) with one parameter
    changed by ``change``."""
    import jax.numpy as jnp

    from redy_jax import checkpoint
    from redy_jax.models import load_checkpoint

    _, v, _ = load_checkpoint("lenet5")
    params = dict(v["params"])
    params[layer] = {**params[layer], name: change(jnp.asarray(params[layer][name]))}
    return str(checkpoint.save(tmp_path / "ck", {"params": params, "batch_stats": {}},
                               {"model": "lenet5"}))


def _evaluate_lenet(path, policy):
    return _redy("evaluate", "--model", "lenet5", "--checkpoint", path, "--limit", "20",
                 "--calib-images", "20", "--policy", policy)


def test_a_nan_weight_with_a_valid_checksum_is_refused_by_path(tmp_path):
    import jax.numpy as jnp

    r = _evaluate_lenet(_lenet_with(tmp_path, "conv2", "kernel",
                                    lambda k: k.at[0, 0, 0, 0].set(jnp.nan)), "float")
    assert r.returncode == 2, r.stderr
    assert "params/conv2/kernel holds 1 NaN/inf" in r.stderr


def test_shipped_thresholds_for_other_weights_are_refused(tmp_path):
    """ReDy with a checkpoint other than the one its shipped thresholds were calibrated
    for: an error naming the thresholds file, not an uncalibrated result."""
    r = _evaluate_lenet(_lenet_with(tmp_path, "fc3", "bias", lambda b: b + 0.01), "redy")
    assert r.returncode == 2, r.stderr
    assert "lenet5_fashion_mnist.redy_window.json was calibrated for checkpoint" in r.stderr


USER_MODEL = '''
import flax.linen as nn

class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME", feature_group_count=1)(x))
        x = nn.Conv(4, (3, 3), padding=((0, 1), (1, 0)), feature_group_count=4)(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))

def make():
    return Tiny()
'''


def test_your_own_model_and_npz_data_from_the_command_line(tmp_path):
    """--model package.module:factory --checkpoint FILE --data FILE.npz, with a fresh
    data directory: stdout is exactly one strict JSON object with per-image figures."""
    import jax
    import numpy as np

    from redy_jax import checkpoint

    (tmp_path / "usermodels.py").write_text(USER_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        import usermodels
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 6, 6, 2), dtype=np.uint8)
    labels = rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", images=images[:24], labels=labels[:24],
             train_images=images[24:], train_labels=labels[24:])
    v = usermodels.make().init(jax.random.PRNGKey(0), np.zeros((1, 6, 6, 2), np.float32))
    ck = checkpoint.save(tmp_path / "tiny", v, {"model": "tiny"})
    r = _redy("compare", "--model", "usermodels:make", "--checkpoint", str(ck), "--data",
              str(tmp_path / "d.npz"), "--policies", "static,lzs", "--json",
              env={"PYTHONPATH": str(tmp_path), "REDY_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # nothing but the JSON on stdout
    res = {x["policy"]: x for x in d["results"]}
    assert res["static"]["images"] == 24 and res["lzs"]["saving_vs_static"] > 0
    assert res["static"]["accuracy"] == res["lzs"]["accuracy"]
    assert "p95" in res["lzs"]["per_image"]["chip_energy_pj"]
