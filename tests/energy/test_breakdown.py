import numpy as np
import pytest

from redy_jax.energy import COMPONENTS, energy_breakdown, total_energy_pj
from redy_jax.hw import isaac
from redy_jax.xbar import crossbar_matmul


def test_energy_equals_counts_times_table():
    spec = isaac()
    _, counts = crossbar_matmul(np.ones((1, 200), np.int32), np.ones((200, 40), np.int32), spec)
    c = counts.total()
    e = energy_breakdown(c, spec)
    assert set(e) == set(COMPONENTS)
    conv = 8 * 2 * (40 * 4 + 2)
    assert e["adc"] == pytest.approx(conv * 1.5625)
    assert e["dac"] == pytest.approx(8 * 200 * 2 * 0.390625)
    assert e["crossbar"] == pytest.approx(32 * 30.0)
    assert e["sample_hold"] == pytest.approx(conv * 0.0009765625)
    assert e["shift_add"] == pytest.approx(conv * 0.01953125)
    assert e["input_register"] == pytest.approx(32 * 15.5)
    assert e["output_register"] == pytest.approx(32 * 2.875)
    assert e["edram"] == pytest.approx((1600 + 320) / 256 * 20.45)
    assert e["bus"] == pytest.approx(1600 * 0.054)
    assert e["redy_unit"] == 0
    assert total_energy_pj(c, spec) == pytest.approx(sum(e.values()))


def test_full_crossbar_read_costs_about_301pj():
    spec = isaac(unit_column=False)
    _, counts = crossbar_matmul(np.ones((1, 128), np.int32), np.ones((128, 32), np.int32), spec)
    e = energy_breakdown(counts.total(), spec)
    ima = sum(v for k, v in e.items() if k not in ("edram", "bus", "redy_unit"))
    assert ima / 8 == pytest.approx(301.0, rel=0.002)  # per crossbar bit-plane
