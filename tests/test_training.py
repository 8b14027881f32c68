"""The training convolution: same values and gradients as XLA's, dense and depthwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from redy_jax.training import fast_conv

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, "SAME"), (1, 2, ((1, 0), (2, 1))),
                                                   (6, 1, "SAME"), (6, 2, "VALID")])
def test_fast_conv_equals_lax_in_value_and_gradient(groups, stride, padding):
    rng = np.random.default_rng(groups * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 6 // groups, 6)), jnp.float32)
    ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                dimension_numbers=DN,
                                                feature_group_count=groups)
    fast = lambda x, w: fast_conv(x, w, (stride, stride), padding, dimension_numbers=DN,
                                  feature_group_count=groups)
    np.testing.assert_allclose(fast(x, w), ref(x, w), rtol=1e-4, atol=1e-4)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    for a, b in zip(jax.grad(loss(fast), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
