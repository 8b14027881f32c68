"""Chunked execution: balanced chunks (one compiled copy of the chunk function when the
batch divides evenly), padded or separate remainders, results independent of chunking."""

import jax.numpy as jnp
import numpy as np
import pytest

from redy_jax.xbar.chunks import map_image_chunks


def _fn(traces):
    def fn(args):
        x, = args
        traces.append(x.shape[0])
        return x * 2 + 1, {"c": x.sum(axis=(1,))}, jnp.ones(3) * x.shape[0]
    return fn


def test_balanced_chunks_trace_the_function_once():
    traces = []
    x = jnp.arange(250 * 2, dtype=jnp.float32).reshape(250, 2)
    y, counts, hist = map_image_chunks(_fn(traces), (x,), 26)
    assert traces == [25]  # 10 chunks of 25, not 9 of 26 and a remainder of 16
    np.testing.assert_array_equal(y, x * 2 + 1)
    np.testing.assert_array_equal(counts["c"], x.sum(axis=1))
    np.testing.assert_array_equal(hist, np.full(3, 250.0))


def test_a_remainder_runs_separately_or_padded():
    x = jnp.arange(7 * 2, dtype=jnp.float32).reshape(7, 2)
    traces = []
    y, counts, hist = map_image_chunks(_fn(traces), (x,), 3)  # 3 + 3 + 1
    assert traces == [3, 1]
    np.testing.assert_array_equal(y, x * 2 + 1)
    np.testing.assert_array_equal(hist, np.full(3, 7.0))  # the remainder adds its own
    traces = []
    plain = lambda args: (args[0] * 2 + 1, None, None)
    y, _, _ = map_image_chunks(lambda a: (traces.append(a[0].shape[0]), plain(a))[1], (x,), 3,
                               pad=True)
    assert traces == [3] and y.shape == x.shape  # padded to 9, padding dropped
    np.testing.assert_array_equal(y, x * 2 + 1)
    with pytest.raises(ValueError, match="pad=True"):
        map_image_chunks(_fn([]), (x,), 3, pad=True)
