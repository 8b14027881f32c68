"""Differentiable threshold tuning: gradient check, loss decrease, exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redy_jax.energy import energy_breakdown
from redy_jax.hw import isaac
from redy_jax.policy import PolicyMap, ReDy, Static
from redy_jax.simulate import calibrate, simulate_fn
from redy_jax.tune import TuneConfig, tune_setup, tune_thresholds
from tests.nets import TinyCNN


@pytest.fixture(scope="module")
def small():
    model = TinyCNN(features=8, classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 10, 10, 1))
    v = model.init(jax.random.PRNGKey(1), x)
    spec = isaac()
    return model, v, x, spec, calibrate(model, v, x, spec)


def _energy(model, v, x, spec, cal, log_thr, temperature):
    run, _ = simulate_fn(model, spec, cal, "exact")
    pm = PolicyMap(default=Static(), rules=(
        ("c2", ReDy(thresholds=2.0 ** log_thr, temperature=temperature)),))
    _, records = run(v, pm, x)
    return sum(sum(energy_breakdown(r.counts.as_dict(), spec).values()).mean()
               for r in records.values())


def test_relaxed_energy_gradient_matches_finite_difference_of_hard_energy(small):
    """The relaxed gradient (temperature 0.1 octave) against central differences of the
    HARD energy (step 0.25 octave) over 6400 groups: signs agree, and the gradient's
    norm and its derivative along all thresholds agree within 10%."""
    model, v, x, spec, cal = small
    log_thr = jnp.array([2.0, 3.0, 4.0, 5.0], jnp.float32)  # inside the groups' std range
    hard = lambda t: float(_energy(model, v, x, spec, cal, t, 0.0))
    g = np.asarray(jax.grad(lambda t: _energy(model, v, x, spec, cal, t, 0.1))(log_thr))
    h = 0.25
    fd = np.array([(hard(log_thr + h * np.eye(4)[i]) - hard(log_thr - h * np.eye(4)[i])) / (2 * h)
                   for i in range(4)])
    big = fd > 0.01 * fd.max()
    assert big.sum() >= 2
    assert np.all(np.sign(g[big]) == np.sign(fd[big]))  # higher thresholds: more energy
    assert np.linalg.norm(g) == pytest.approx(np.linalg.norm(fd), rel=0.10)
    along = (hard(log_thr + h) - hard(log_thr - h)) / (2 * h)
    assert g.sum() == pytest.approx(along, rel=0.10)


def test_relaxed_forward_equals_hard_rule(small):
    model, v, x, spec, cal = small
    run, _ = simulate_fn(model, spec, cal, "exact")
    thr = jnp.array([0.5, 1.0, 2.0, 4.0])
    outs = []
    for temp in (0.0, 0.3):
        pm = PolicyMap(default=Static(), rules=(("c*", ReDy(thresholds=thr, temperature=temp)),))
        logits, records = run(v, pm, x)
        outs.append((np.asarray(logits), {k: np.asarray(r.counts.adc_conversions)
                                          for k, r in records.items()}))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6, atol=1e-6)
    for k in outs[0][1]:
        np.testing.assert_array_equal(outs[0][1][k], outs[1][1][k])


@pytest.fixture(scope="module")
def lenet_setup():
    from redy_jax.study import setup

    return setup("lenet5", limit=200, calib_images=200)


def test_tuning_reduces_loss_and_resumes_exactly(lenet_setup, tmp_path):
    s = lenet_setup
    init = {"config": {"granularity": "window"},
            "layers": {"conv1": [0.5, 1, 2, 4], "conv2": [0.5, 1, 2, 4]}}
    cfg = TuneConfig(lam=1.0, steps=8, batch_size=16, save_every=2, lr=0.2)
    full = tune_setup(s, init, cfg, images=128, out_dir=tmp_path / "a", progress=False)
    h = full["history"]
    assert len(h) == 8 and full["finished"]
    assert np.mean([r["loss"] for r in h[-3:]]) < np.mean([r["loss"] for r in h[:3]])
    assert (tmp_path / "a" / "thresholds.json").exists()
    # Interrupted after 4 steps, then resumed: same numbers as the uninterrupted run.
    part = tune_setup(s, init, cfg, images=128, out_dir=tmp_path / "b", progress=False,
                      stop_after=4)
    assert not part["finished"] and not (tmp_path / "b" / "thresholds.json").exists()
    rest = tune_setup(s, init, cfg, images=128, out_dir=tmp_path / "b", progress=False)
    assert [r["step"] for r in rest["history"]] == list(range(1, 9))
    for a, b in zip(h, rest["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for k in full["layers"]:
        np.testing.assert_allclose(full["layers"][k], rest["layers"][k], rtol=1e-6)


def test_every_step_projects_thresholds_back_into_order_and_range(small):
    """Adam steps of 4 octaves move thresholds past each other and out of range; the
    projection after every step sorts them and clips them to [2^-8, 2^12] codes."""
    model, v, x, spec, cal = small
    y = np.arange(x.shape[0]) % 10
    init = {"config": {"granularity": "window"},
            "layers": {"c1": [0.01, 0.02, 0.04, 1e6], "c2": [1.0, 2.0, 4.0, 8.0]}}
    res = tune_thresholds(model, v, x, y, spec, cal, init=init, progress=False,
                          config=TuneConfig(lam=5.0, steps=3, batch_size=16, lr=4.0))
    moved = False
    for k, t in res["layers"].items():
        t = np.asarray(t)
        assert np.all(np.diff(t) >= 0), (k, t)
        assert t.min() >= 2.0 ** -8 - 1e-12 and t.max() <= 2.0 ** 12 + 1e-6, (k, t)
        moved |= not np.allclose(t, init["layers"][k])
    assert moved


def test_task_loss_reaches_thresholds_through_later_quantised_layers(small):
    """c1's thresholds affect the logits through c2 and fc, whose inputs are re-quantised;
    the straight-through pass lets the cross-entropy gradient through (and only then)."""
    import optax

    model, v, x, spec, cal = small
    y = jnp.arange(x.shape[0]) % 10

    def ce(log_thr, ste):
        run, _ = simulate_fn(model, spec, cal, "exact", ste)
        pm = PolicyMap(default=Static(), rules=(
            ("c1", ReDy(thresholds=2.0 ** log_thr, temperature=0.3)),))
        logits, _ = run(v, pm, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    t = jnp.array([0.0, 1.0, 2.0, 3.0])
    assert float(jnp.abs(jax.grad(ce)(t, True)).sum()) > 0
    assert float(jnp.abs(jax.grad(ce)(t, False)).sum()) == 0
    assert float(ce(t, True)) == pytest.approx(float(ce(t, False)), rel=1e-6)  # same forward


def test_a_state_from_other_settings_is_not_resumed(small, tmp_path):
    """Tuning again with another lambda in the same directory starts afresh (it used to
    resume the old run and label it with the new lambda); a truncated state is an error
    naming the file."""
    model, v, x, spec, cal = small
    y = np.arange(x.shape[0]) % 10
    init = {"config": {"granularity": "window"},
            "layers": {"c1": [1.0, 2.0, 4.0, 8.0], "c2": [1.0, 2.0, 4.0, 8.0]}}
    kw = dict(init=init, out_dir=tmp_path, progress=False)
    a = tune_thresholds(model, v, x, y, spec, cal,
                        config=TuneConfig(lam=0.1, steps=2, batch_size=16, save_every=1), **kw)
    with pytest.warns(UserWarning, match="other settings"):
        b = tune_thresholds(model, v, x, y, spec, cal,
                            config=TuneConfig(lam=3.0, steps=2, batch_size=16, save_every=1),
                            **kw)
    assert [h["step"] for h in b["history"]] == [1, 2]
    assert b["history"][0]["loss"] != a["history"][0]["loss"]  # lambda 3 from step 1
    state = tmp_path / "state.msgpack"
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(ValueError, match="state.msgpack is corrupt"):
        tune_thresholds(model, v, x, y, spec, cal,
                        config=TuneConfig(lam=3.0, steps=3, batch_size=16), **kw)


def test_calibration_widens_its_search_range_at_the_edge(small):
    """A budget nothing loses (100%) puts the search at its upper edge: widened, said."""
    from redy_jax.thresholds import calibrate_thresholds

    model, v, x, spec, cal = small
    y = np.arange(x.shape[0]) % 10
    with pytest.warns(UserWarning, match="upper edge"):
        ts = calibrate_thresholds(model, v, x, y, spec, cal, target_loss=0.99)
    assert ts["provenance"]["edge"] == "upper"
    assert ts["provenance"]["chosen"]["log2_c"] == 12.0
