"""One-pass simulation of unmodified Flax models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redy_jax.energy import CHIP_COMPONENTS, CORE_COMPONENTS
from redy_jax.hw import isaac
from redy_jax.policy import Float, LeadingZeroSkip, PolicyMap, Static
from redy_jax.simulate import calibrate, evaluate, simulate_fn


class UserNet(nn.Module):
    """A model a user might write: not from the zoo."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding="SAME", name="conv")(x)
        x = nn.relu(x)
        x = nn.Conv(4, (3, 3), padding="SAME", name="conv2")(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(5, name="head")(x)


@pytest.fixture(scope="module")
def user_net():
    model = UserNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 2))  # signed input
    x = x.at[:3].multiply(0.05)  # dim images: the ReLU-fed conv sees leading zeros
    variables = model.init(jax.random.PRNGKey(1), x)
    spec = isaac()
    cal = calibrate(model, variables, x, spec)
    return model, variables, np.asarray(x), spec, cal


def _qw(w):
    """Per-output-channel symmetric 8-bit weight codes (independent re-implementation)."""
    w = np.asarray(w, np.float32)
    flat = w.reshape(-1, w.shape[-1])
    scale = (np.abs(flat).max(0) / 127).astype(np.float32)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int64), scale


def _qx(x, q):
    return np.clip(np.round(np.asarray(x, np.float32) / np.float32(q.scale)) + q.zero_point,
                   0, 255).astype(np.int64) - q.zero_point


def _conv_ref(x, p, q):
    """3x3 SAME conv on quantised codes: explicit loops over kernel taps, int64 sums."""
    xc = _qx(x, q)  # real-zero-centred codes; zero padding is then a real zero
    wq, ws = _qw(p["kernel"])
    b, h, w, _ = xc.shape
    xp = np.pad(xc, ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc = np.zeros((b, h, w, wq.shape[-1]), np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], wq[i, j])
    return acc.astype(np.float32) * (np.float32(q.scale) * ws) + np.asarray(p["bias"])


def _reference(model_vars, x, cal):
    """Integer reference of UserNet on the same quantised weights and activations."""
    p = model_vars["params"]
    y = np.maximum(_conv_ref(x, p["conv"], cal["conv"]), 0)
    y = np.maximum(_conv_ref(y, p["conv2"], cal["conv2"]), 0)
    b, h, w = y.shape[:3]
    y = y.reshape(b, h // 2, 2, w // 2, 2, -1).mean(axis=(2, 4)).reshape(b, -1)
    xd = _qx(y, cal["head"])
    wq, ws = _qw(p["head"]["kernel"])
    return (xd @ wq).astype(np.float32) * (np.float32(cal["head"].scale) * ws) + np.asarray(
        p["head"]["bias"])


@pytest.mark.parametrize("mode", ["exact", "faithful", "bit_plane"])
def test_user_model_logits_equal_integer_reference(user_net, mode):
    model, variables, x, spec, cal = user_net
    logits, report = evaluate(model, variables, x, spec, Static(), calibration=cal, mode=mode)
    np.testing.assert_allclose(np.asarray(logits), _reference(variables, x, cal), rtol=1e-5,
                               atol=1e-5)
    assert set(report.layers) == {"conv", "conv2", "head"}
    assert cal["conv"].signed and cal["conv"].zero_point > 0  # normalised input: zero point
    assert report.per_image("adc_saturations") == 0


def test_static_logits_are_close_to_float(user_net):
    model, variables, x, spec, cal = user_net
    lf, _ = evaluate(model, variables, x, spec, Float())
    ls, _ = evaluate(model, variables, x, spec, Static(), calibration=cal)
    assert float(jnp.abs(lf - ls).max()) < 0.05 * float(jnp.abs(lf).max())


def test_leading_zero_skipping_is_lossless_with_fewer_conversions(user_net):
    model, variables, x, spec, cal = user_net
    ls, rs = evaluate(model, variables, x, spec, Static(), calibration=cal)
    for g in ("window", "channel"):
        ll, rl = evaluate(model, variables, x, spec, LeadingZeroSkip(granularity=g),
                          calibration=cal)
        np.testing.assert_array_equal(np.asarray(ll), np.asarray(ls))
        assert rl.per_image("adc_conversions") <= rs.per_image("adc_conversions")
        if g == "window":  # per-window groups always find some leading zeros here
            assert rl.per_image("adc_conversions") < rs.per_image("adc_conversions")
            assert rl.energy_pj_per_image() < rs.energy_pj_per_image()


def test_report_breakdown_sums_to_total_and_counts_are_per_image(user_net):
    model, variables, x, spec, cal = user_net
    _, r = evaluate(model, variables, x, spec, Static(), calibration=cal)
    d = r.to_dict()
    b = d["breakdown_pj"]
    assert sum(b[k] for k in CORE_COMPONENTS) == pytest.approx(d["energy_pj_per_image"])
    assert sum(b[k] for k in CHIP_COMPONENTS) == pytest.approx(d["chip_energy_pj_per_image"])
    per_image = r.image_figures()["chip_energy_pj"]
    assert per_image.shape == (8,) and per_image.mean() == pytest.approx(
        d["chip_energy_pj_per_image"])
    conv = d["layers"]["conv"]
    # 64 windows x 18 rows (2 ch x 9 taps) on one crossbar; 6 outputs x 4 slices + unit column.
    assert conv["counts_per_image"]["xbar_reads"] == 64 * 8
    assert conv["counts_per_image"]["adc_conversions"] == 64 * 8 * (6 * 4 + 1)
    assert conv["mean_streamed_bits"] == 8.0
    assert d["latency_us_per_image"] == pytest.approx((64 * 8 + 64 * 8 + 8) * 0.1)  # 3 layers


def test_pass_compiles_once_per_shape_and_is_deterministic(user_net):
    model, variables, x, spec, cal = user_net
    _, traces = simulate_fn(model, spec, cal, "auto")
    before = traces.count
    a, ra = evaluate(model, variables, x, spec, Static(), calibration=cal)
    b, rb = evaluate(model, variables, x, spec, Static(), calibration=cal)
    assert traces.count <= before + 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ra.to_dict() == rb.to_dict()
    evaluate(model, variables, x[:3], spec, Static(), calibration=cal)  # new shape: one more
    assert traces.count <= before + 2


def test_per_layer_policy_by_path(user_net):
    model, variables, x, spec, cal = user_net
    pm = PolicyMap(default=Static(), rules=(("head", Float()),))
    _, r = evaluate(model, variables, x, spec, pm, calibration=cal)
    assert list(r.layers) == ["conv", "conv2"]


def test_bad_images_raise(user_net):
    model, variables, x, spec, cal = user_net
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        evaluate(model, variables, bad, spec, Static(), calibration=cal)
    with pytest.raises(ValueError, match="do not fit model UserNet"):
        evaluate(model, variables, x[..., :1], spec, Static(), calibration=cal)
    with pytest.raises(ValueError, match="float model inputs"):
        evaluate(model, variables, x.astype(np.uint8), spec, Static(), calibration=cal)
    with pytest.raises(ValueError, match="calibration is required"):
        evaluate(model, variables, x, spec, Static())


def test_a_calibration_the_spec_cannot_stream_is_refused_by_layer_and_field(user_net):
    """Codes wider than the spec's act_bits, an unsigned layer with a zero point, or a
    zero-point calibration streamed in two's complement (its codes minus the zero point
    would leave the sign-bit range): each refused before any work, naming the layer,
    the field and the allowed range, instead of a silently wrong product."""
    import dataclasses

    from redy_jax.quant import Calibration

    model, variables, x, spec, cal = user_net
    edit = lambda path, **kw: Calibration(
        layers={**cal.layers, path: dataclasses.replace(cal[path], **kw)},
        method=cal.method, images=cal.images)
    assert cal["conv"].signed and not cal["conv2"].signed
    with pytest.raises(ValueError, match=r"layer 'conv2'.*bits must be in \[2, act_bits=8\], "
                                         "got 9"):
        evaluate(model, variables, x, spec, Static(), calibration=edit("conv2", bits=9))
    with pytest.raises(ValueError, match=r"layer 'conv2'.*unsigned layer.*\[0, 0\], got 3"):
        evaluate(model, variables, x, spec, Static(), calibration=edit("conv2", zero_point=3))
    with pytest.raises(ValueError, match=r"layer 'head'.*scale must be finite"):
        evaluate(model, variables, x, spec, Static(), calibration=edit("head", scale=np.nan))
    with pytest.raises(ValueError, match=r"layer 'conv'.*\[0, 255\], got 300"):
        simulate_fn(model, spec, edit("conv", zero_point=300), "exact")
    sign_bit = isaac(signed_encoding="sign_bit")
    with pytest.raises(ValueError, match=r"layer 'conv'.*two's complement.*\[128, 128\], got 64"):
        evaluate(model, variables, x, sign_bit, Static(), calibration=edit("conv", zero_point=64))
    good = calibrate(model, variables, x, sign_bit)
    assert good["conv"].zero_point == 128
    evaluate(model, variables, x[:2], sign_bit, Static(), calibration=good)


def test_nan_weights_are_an_error_naming_the_parameter(user_net):
    """A NaN bias (or weight, or BatchNorm statistic) is refused before any work, by its
    path: a NaN weight would otherwise quantise to a zero channel, silently."""
    model, variables, x, spec, cal = user_net
    v = {"params": {**variables["params"], "conv": {**variables["params"]["conv"],
                                                     "bias": jnp.full((6,), jnp.nan)}}}
    with pytest.raises(ValueError, match="params/conv/bias holds 6 NaN/inf"):
        evaluate(model, v, x, spec, Static(), calibration=cal)
    with pytest.raises(ValueError, match="params/conv/bias"):
        calibrate(model, v, x, spec)


def test_every_entry_checks_its_inputs_before_any_cast(user_net):
    """uint8 pixels (evaluate_dataset used to cast them and report 0.30 instead of 0.95),
    an empty set, a preset function instead of a spec: each a clear error."""
    import redy_jax as rj
    from redy_jax.simulate import evaluate_dataset

    model, variables, x, spec, cal = user_net
    y = np.zeros(len(x), np.int64)
    pixels = np.clip(x * 50 + 128, 0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match="float model inputs"):
        evaluate_dataset(model, variables, pixels, y, spec, Static(), calibration=cal,
                         progress=False)
    with pytest.raises(ValueError, match="non-empty batch"):
        evaluate_dataset(model, variables, x[:0], y[:0], spec, Static(), calibration=cal,
                         progress=False)
    with pytest.raises(TypeError, match=r"a preset function: call it, e.g. redy_jax.isaac\(\)"):
        evaluate(model, variables, x, rj.isaac, Static(), calibration=cal)
    with pytest.raises(TypeError, match=r"get_preset\('isaac'\)"):
        calibrate(model, variables, x, "isaac")
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_dataset(model, variables, x, y[:3], spec, Static(), calibration=cal,
                         progress=False)


def test_compiled_passes_are_released_near_the_mapping_limit(user_net, monkeypatch):
    """Near the process's memory-mapping limit (where the next XLA compilation would
    crash the interpreter) a new pass first releases the compiled ones, with a warning;
    the released pass compiles again and gives the same results. Far from it, nothing
    is released."""
    import redy_jax.simulate as sim

    model, variables, x, spec, cal = user_net
    a, ra = evaluate(model, variables, x, spec, LeadingZeroSkip(), calibration=cal)
    _, traces = simulate_fn(model, spec, cal, "auto")
    compiled = traces.count
    assert sim._compiled_pass.cache_info().currsize >= 1
    use = sim._mapping_use()
    assert use is not None and 0 < use[0] < sim.MAPPING_HEADROOM * use[1]  # not released
    readings = iter([(80, 100)])  # near the limit once, then far from it
    monkeypatch.setattr(sim, "_mapping_use", lambda: next(readings, (1, 100)))
    with pytest.warns(RuntimeWarning, match="80 of the process's 100 memory mappings"):
        b, rb = evaluate(model, variables, x, spec, LeadingZeroSkip(), calibration=cal)
    assert sim._compiled_pass.cache_info().currsize == 1  # the one just made
    _, fresh = simulate_fn(model, spec, cal, "auto")  # released: a new pass, traced anew
    assert fresh is not traces and fresh.count == 1 and traces.count == compiled
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ra.to_dict() == rb.to_dict()


def test_reports_follow_the_policy_map_a_pass_was_traced_with(user_net):
    """A pass traced under a map that runs a layer in float has fewer crossbar layers:
    going back to a map traced before (no new trace) reports that map's layers, not the
    last trace's (this was a KeyError)."""
    model, variables, x, spec, cal = user_net
    everywhere = PolicyMap(default=LeadingZeroSkip())
    head_float = PolicyMap(default=LeadingZeroSkip(), rules=(("head", Float()),))
    _, r1 = evaluate(model, variables, x, spec, everywhere, calibration=cal)
    _, r2 = evaluate(model, variables, x, spec, head_float, calibration=cal)
    _, r3 = evaluate(model, variables, x, spec, everywhere, calibration=cal)
    assert "head" in r1.layers and "head" not in r2.layers
    assert r3.to_dict() == r1.to_dict()
