"""Models as users write them, through the public API: weight sharing, inference flags,
several input shapes, thresholds that name no layer, the pure simulator inside a
user's own jit / vmap / grad training step, capturing layer tensors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import redy_jax as rj
from redy_jax.policy import PolicyMap, ReDy, Static
from tests.nets import TinyCNN


class Shared(nn.Module):
    """One Dense module called twice (weight sharing), on inputs of different ranges."""

    @nn.compact
    def __call__(self, x):
        d = nn.Dense(8, name="shared")
        a = d(x)
        b = d(100.0 * x)  # the second call sees a 100x wider range
        return nn.Dense(3, name="head")(jnp.concatenate([a, b], -1))


class Separate(nn.Module):
    """The same computation with two modules holding the same weights."""

    @nn.compact
    def __call__(self, x):
        a = nn.Dense(8, name="first")(x)
        b = nn.Dense(8, name="second")(100.0 * x)
        return nn.Dense(3, name="head")(jnp.concatenate([a, b], -1))


def test_a_module_called_twice_gets_one_calibration_per_call_site():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (64, 5)), np.float32)
    shared = Shared()
    v = shared.init(jax.random.PRNGKey(1), x)
    p = v["params"]
    sep_v = {"params": {"first": p["shared"], "second": p["shared"], "head": p["head"]}}
    spec = rj.isaac()
    cal = rj.calibrate(shared, v, x, spec)
    assert set(cal.layers) == {"shared", "shared#2", "head"}
    assert cal["shared#2"].hi > 50 * cal["shared"].hi
    lf, _ = rj.evaluate(shared, v, x, spec, PolicyMap(default=rj.policy.Float()))
    ls, r = rj.evaluate(shared, v, x, spec, Static(), calibration=cal)
    sep_cal = rj.calibrate(Separate(), sep_v, x, spec)
    lsep, _ = rj.evaluate(Separate(), sep_v, x, spec, Static(), calibration=sep_cal)
    np.testing.assert_allclose(np.asarray(ls), np.asarray(lsep), rtol=1e-6, atol=1e-6)
    err = float(jnp.abs(ls - lf).max() / jnp.abs(lf).max())
    assert err < 0.05, err  # one shared range for both calls gave 0.64 before
    assert set(r.layers) == {"shared", "shared#2", "head"}


class Training(nn.Module):
    flag: str = "training"

    @nn.compact
    def __call__(self, x, **kw):
        x = nn.Dense(6, name="fc1")(x)
        if self.flag == "training":
            x = nn.BatchNorm(use_running_average=not kw["training"], name="bn")(x)
        elif self.flag == "deterministic":
            x = nn.BatchNorm(use_running_average=kw["deterministic"], name="bn")(x)
        return nn.Dense(3, name="fc2")(nn.relu(x))


class TrainingFlag(Training):
    def __call__(self, x, training: bool = True):  # defaults to training mode
        return super().__call__(x, training=training)


class DeterministicFlag(Training):
    flag: str = "deterministic"

    def __call__(self, x, deterministic: bool = False):
        return super().__call__(x, deterministic=deterministic)


class NoFlag(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False, name="bn")(nn.Dense(4, name="fc")(x))


@pytest.mark.parametrize("model_cls", [TrainingFlag, DeterministicFlag])
def test_inference_flags_other_than_train_are_found(model_cls):
    model = model_cls()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (16, 5)), np.float32)
    v = model.init(jax.random.PRNGKey(1), x)
    cal = rj.calibrate(model, v, x, rj.isaac())
    _, r = rj.evaluate(model, v, x, rj.isaac(), Static(), calibration=cal)
    assert set(r.layers) == {"fc1", "fc2"}


def test_a_batchnorm_updating_its_statistics_names_the_fix():
    model = NoFlag()
    x = np.ones((4, 5), np.float32)
    v = model.init(jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError, match="apply_kwargs"):
        rj.calibrate(model, v, x, rj.isaac())


def test_apply_kwargs_are_passed_through():
    model = TrainingFlag()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (16, 5)), np.float32)
    v = model.init(jax.random.PRNGKey(1), x)
    cal = rj.calibrate(model, v, x, rj.isaac(), apply_kwargs={"training": False})
    with pytest.raises(ValueError, match="tried to update a variable"):
        rj.evaluate(model, v, x, rj.isaac(), Static(), calibration=cal,
                    apply_kwargs={"training": True})


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="conv")(x))
        return nn.Dense(2, name="fc")(x.mean(axis=(1, 2)))


def test_evaluating_several_input_shapes_keeps_their_layer_records_apart():
    model = Conv()
    spec = rj.isaac()
    x8 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1)), np.float32)
    x6 = x8[:, :6, :6]
    v = model.init(jax.random.PRNGKey(1), x8)
    cal = rj.calibrate(model, v, x8, spec)
    _, r8 = rj.evaluate(model, v, x8, spec, Static(), calibration=cal)
    _, r6 = rj.evaluate(model, v, x6, spec, Static(), calibration=cal)
    _, r8b = rj.evaluate(model, v, x8, spec, Static(), calibration=cal)
    assert r8.layers["conv"].info.vectors_per_image == 64
    assert r6.layers["conv"].info.vectors_per_image == 36
    assert r8b.layers["conv"].info.vectors_per_image == 64  # was 36 (the last trace's)
    assert r8b.to_dict() == r8.to_dict()


def test_thresholds_naming_no_layer_are_an_error():
    model = Conv()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1)), np.float32)
    v = model.init(jax.random.PRNGKey(1), x)
    cal = rj.calibrate(model, v, x, rj.isaac())
    pm = rj.redy_policy_map({"layers": {"conv_typo": [1.0, 2.0]}})
    with pytest.raises(ValueError, match="conv_typo.*match no crossbar layer"):
        rj.evaluate(model, v, x, rj.isaac(), pm, calibration=cal)
    with pytest.raises(ValueError, match="must ascend"):
        rj.redy_policy_map({"layers": {"conv": [2.0, 1.0]}})
    with pytest.raises(ValueError, match="1 to 7 thresholds"):
        ReDy(thresholds=list(range(1, 9)))


@pytest.fixture(scope="module")
def net():
    model = TinyCNN(features=6, classes=4)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 1)), np.float32)
    y = np.arange(16) % 4
    v = model.init(jax.random.PRNGKey(1), x)
    spec = rj.isaac()
    return model, v, x, y, spec, rj.calibrate(model, v, x, spec)


def test_simulator_in_a_user_training_step_updates_thresholds_and_weights(net):
    """jit + grad through the pure simulator with respect to ReDy thresholds AND model
    weights (straight-through and relaxed), in a step a user writes with optax."""
    model, v, x, y, spec, cal = net
    policy = PolicyMap(default=Static(), rules=(
        ("c*", ReDy(thresholds=jnp.array([0.5, 1.0, 2.0, 4.0]), temperature=0.5)),))
    f = rj.simulator(model, spec, policy, cal)
    tx = optax.adam(0.05)
    params = {"weights": v, "thr": {"c1": jnp.log2(jnp.array([0.5, 1.0, 2.0, 4.0])),
                                    "c2": jnp.log2(jnp.array([0.5, 1.0, 2.0, 4.0]))}}
    state = tx.init(params)

    def loss(p, xb, yb):
        logits, counts = f(p["weights"], xb, {k: 2.0 ** t for k, t in p["thr"].items()})
        energy = sum(rj.chip_energy_pj(c.as_dict(), spec).mean() for c in counts.values())
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return ce + 1e-6 * energy

    @jax.jit
    def step(p, s, xb, yb):
        val, g = jax.value_and_grad(loss)(p, xb, yb)
        upd, s = tx.update(g, s, p)
        return optax.apply_updates(p, upd), s, val, g

    new, state, val, g = step(params, state, jnp.asarray(x), jnp.asarray(y))
    assert np.isfinite(float(val))
    gw = jax.tree_util.tree_leaves(g["weights"]["params"]["c1"])
    assert all(float(jnp.abs(a).sum()) > 0 for a in gw)  # weights get gradients
    assert float(jnp.abs(g["thr"]["c2"]).sum()) > 0  # thresholds get gradients
    assert not np.allclose(np.asarray(new["weights"]["params"]["c1"]["kernel"]),
                           np.asarray(v["params"]["c1"]["kernel"]))


def test_simulator_vmaps_and_matches_evaluate_per_image(net):
    model, v, x, y, spec, cal = net
    f = rj.simulator(model, spec, Static(), cal)
    logits, counts = jax.jit(f)(v, jnp.asarray(x))
    ref_logits, report = rj.evaluate(model, v, x, spec, Static(), calibration=cal)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(ref_logits))
    per_image = sum(rj.chip_energy_pj(c.as_dict(), spec) for c in counts.values())
    np.testing.assert_allclose(np.asarray(per_image),
                               report.image_figures()["chip_energy_pj"], rtol=1e-6)
    # vmap over groups of images: (2, 8, ...) -> per-group logits and per-image counts
    lv, cv = jax.vmap(f, in_axes=(None, 0))(v, jnp.asarray(x).reshape(2, 8, *x.shape[1:]))
    np.testing.assert_allclose(np.asarray(lv).reshape(16, -1), np.asarray(logits), rtol=1e-6)
    assert cv["c1"].adc_conversions.shape == (2, 8)


def test_evaluate_inside_jit_points_to_the_simulator(net):
    model, v, x, y, spec, cal = net
    with pytest.raises(TypeError, match="redy_jax.simulator"):
        jax.jit(lambda a: rj.evaluate(model, v, a, spec, Static(), calibration=cal)[0])(x)


def test_capture_gives_each_layers_codes_and_integer_outputs(net):
    model, v, x, y, spec, cal = net
    taps = rj.capture(model, v, x[:2], spec, Static(), cal)
    assert set(taps) == {"c1", "c2", "fc"}
    c1 = taps["c1"]
    q = cal["c1"]
    want = np.clip(np.round(c1["input"] / np.float32(q.scale)) + q.zero_point, 0, 255)
    np.testing.assert_array_equal(c1["codes"], want.astype(np.int32))
    assert c1["outputs"].dtype == np.int32 and c1["outputs"].shape == c1["output"].shape
    # the next layer sees relu(output)
    np.testing.assert_allclose(taps["c2"]["input"], np.maximum(c1["output"], 0), rtol=1e-6)


def test_calibrate_best_needs_labels(net):
    model, v, x, y, spec, cal = net
    with pytest.raises(ValueError, match="needs labels"):
        rj.calibrate(model, v, x, spec, method="best")
    best = rj.calibrate(model, v, x, spec, method="best", labels=y)
    assert best.method.startswith("best(")
