"""Your own Flax CNN and your own numpy data, end to end (see docs/own_model.md).

    python examples/own_model.py

scikit-learn's 8x8 digits stand in for "your data": a CNN written here is trained for a
few seconds, then redy_jax calibrates it, calibrates and tunes ReDy thresholds on it,
and reports accuracy and per-image whole-chip energy on held-out images.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import redy_jax as rj


class DigitsCNN(nn.Module):
    """A model a user writes: two convolutions, BatchNorm, a dense head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2, padding="SAME")(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def data():
    """Digits as float NHWC arrays, split 60/20/20 into train / validation / test."""
    d = load_digits()
    x = (d.images[..., None] / 16.0 - 0.3) / 0.4
    x, y = x.astype(np.float32), d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def train(model, x, y, steps=300, seed=0):
    """Plain optax training (nothing of redy_jax): what a user already has."""
    v = model.init(jax.random.PRNGKey(seed), x[:1])
    tx = optax.adam(3e-3)
    params, stats, opt = v["params"], v["batch_stats"], tx.init(v["params"])

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss(p):
            out, upd = model.apply({"params": p, "batch_stats": stats}, xb, train=True,
                                   mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), upd
        (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), upd["batch_stats"], opt

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = rng.integers(0, len(y), 64)
        params, stats, opt = step(params, stats, opt, jnp.asarray(x[i]), jnp.asarray(y[i]))
    return {"params": params, "batch_stats": stats}


def main(steps: int = 300, tune_steps: int = 20) -> dict:
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = data()
    model = DigitsCNN()
    variables = train(model, x_tr, y_tr, steps)

    # ---- the redy_jax part: 11 lines ----
    spec = rj.isaac()
    cal = rj.calibrate(model, variables, x_tr, spec, method="best", labels=y_tr)
    thr = rj.calibrate_thresholds(model, variables, x_val, y_val, spec, cal, target_loss=0.005)
    tuned = rj.tune_thresholds(model, variables, x_tr, y_tr, spec, cal, init=thr,
                               config=rj.TuneConfig(lam=0.3, steps=tune_steps, batch_size=32))
    results = {}
    for name, policy in {"static 8-bit": rj.policy.Static(), "ReDy": rj.redy_policy_map(thr),
                         "ReDy tuned": rj.redy_policy_map(tuned)}.items():
        r = rj.evaluate_dataset(model, variables, x_te, y_te, spec, policy, calibration=cal)
        results[name] = {"accuracy": r.accuracy, **r.report.distribution()["chip_energy_pj"]}
    # ---- end ----

    for name, r in results.items():
        print(f"{name:13s} accuracy {r['accuracy']:.3f}  chip energy per image: mean "
              f"{r['mean'] / 1e6:.3f} uJ, p5 {r['p5'] / 1e6:.3f}, p95 {r['p95'] / 1e6:.3f}")
    return results


if __name__ == "__main__":
    main()
