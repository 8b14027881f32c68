"""Activation quantisers and the static calibration rules."""

import jax.numpy as jnp
import numpy as np
import pytest

from redy_jax.quant import (
    CLIP_GRID,
    candidate_ranges,
    fake_quant_error,
    fit_calibration,
    make_quant,
    quantize,
)


def test_unsigned_and_zero_point_quantisers_by_hand():
    q = make_quant(0.0, 2.55, 8)
    assert q.zero_point == 0 and not q.signed and q.scale == pytest.approx(0.01)
    np.testing.assert_array_equal(np.asarray(quantize(jnp.array([0.0, 0.014, 3.0]), q)),
                                  [0, 1, 255])
    z = make_quant(-1.0, 3.0, 8)  # 4 / 255 per code, zero at round(1 / (4/255)) = 64
    assert z.signed and z.zero_point == 64
    assert int(quantize(jnp.array([0.0]), z)[0]) == 64
    s = make_quant(-1.0, 3.0, 8, sign_bit=True)  # symmetric: +-3 over +-127 codes
    assert s.zero_point == 128 and s.lo == -3.0 and s.scale == pytest.approx(3 / 127)


def test_fake_quant_error_is_zero_on_the_grid_and_grows_off_it():
    x = jnp.arange(0, 256, dtype=jnp.float32) / 100  # codes of scale 0.01 exactly
    e = fake_quant_error(x, jnp.array([0.0, 0.0]), jnp.array([2.55, 1.0]), 8)
    assert float(e[0]) < 1e-9 and float(e[1]) > 1.0  # clipped at 1.0


def test_mse_fit_picks_the_grid_point_with_least_error_and_minmax_the_range():
    lo, hi = {"a": -1.0, "b": 0.0}, {"a": 1.0, "b": 4.0}
    sse = {"a": np.arange(len(CLIP_GRID))[::-1].astype(float),  # best: the last (1.0)
           "b": np.abs(np.arange(len(CLIP_GRID)) - 3).astype(float)}  # best: index 3
    cal = fit_calibration(lo, hi, 8, sign_bit=False, method="mse", images=5, sse=sse)
    assert cal["a"].hi == pytest.approx(1.0) and cal["b"].hi == pytest.approx(4 * CLIP_GRID[3])
    mm = fit_calibration(lo, hi, 8, sign_bit=False, method="minmax", images=5)
    assert mm["b"].hi == 4.0 and mm.images == 5
    with pytest.raises(ValueError, match="needs the squared errors"):
        fit_calibration(lo, hi, 8, sign_bit=False, method="mse", images=5)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibration(lo, hi, 8, sign_bit=False, method="kl", images=5)


def test_candidate_ranges_are_symmetric_under_sign_bit():
    lo, hi = candidate_ranges(-1.0, 3.0, sign_bit=True)
    np.testing.assert_allclose(np.asarray(lo), -np.asarray(hi))
    assert float(hi[-1]) == pytest.approx(3.0)
    lo, hi = candidate_ranges(0.5, 3.0, sign_bit=False)  # the range always holds 0
    assert float(lo.max()) == 0.0


def test_k_bit_quantisers_and_per_layer_mixes():
    q4 = make_quant(0.0, 1.5, 4)  # 15 levels of 0.1
    assert q4.bits == 4 and q4.scale == pytest.approx(0.1)
    np.testing.assert_array_equal(np.asarray(quantize(jnp.array([0.04, 0.06, 9.0]), q4)),
                                  [0, 1, 15])
    lo, hi = {"a": 0.0, "b": -1.0}, {"a": 1.0, "b": 1.0}
    c8 = fit_calibration(lo, hi, 8, sign_bit=False, method="minmax", images=3)
    c4 = fit_calibration(lo, hi, 4, sign_bit=False, method="minmax", images=3)
    mixed = c8.with_bits({"b": c4})
    assert mixed.bits == {"a": 8, "b": 4} and mixed["b"] == c4["b"]
    assert mixed.structure == c8.structure == (("a", False), ("b", True))
