"""Interception of Flax layers: which layers map to crossbars, and which are refused."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from redy_jax.hw import isaac
from redy_jax.integrate.intercept import UnsupportedLayerError
from redy_jax.simulate import calibrate


class Deconv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 3), name="ok")(x)
        return nn.ConvTranspose(3, (3, 3), name="up")(x)


def test_unsupported_layer_is_named():
    model = Deconv()
    x = jnp.ones((2, 6, 6, 1))
    v = model.init(jax.random.PRNGKey(0), x)
    with pytest.raises(UnsupportedLayerError, match="'up' \\(ConvTranspose\\)"):
        calibrate(model, v, x, isaac())


class Kinds(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="dense_conv")(x)
        x = nn.Conv(4, (3, 3), feature_group_count=4, name="depthwise")(x)
        x = nn.Conv(4, (1, 1), feature_group_count=2, name="grouped")(x)
        return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


def test_layer_kinds_are_recognised():
    from redy_jax.policy import Static
    from redy_jax.simulate import evaluate

    model = Kinds()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    v = model.init(jax.random.PRNGKey(1), x)
    cal = calibrate(model, v, x, isaac())
    _, report = evaluate(model, v, x, isaac(), Static(), calibration=cal)
    kinds = {p: s.info.kind for p, s in report.layers.items()}
    assert kinds == {"dense_conv": "conv", "depthwise": "depthwise", "grouped": "grouped",
                     "fc": "dense"}
    assert report.layers["depthwise"].info.groups == 4
