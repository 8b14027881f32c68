import numpy as np
import pytest

from redy_jax.energy import (
    CHIP_COMPONENTS,
    COMPONENTS,
    CORE_COMPONENTS,
    chip_energy_pj,
    core_energy_pj,
    energy_breakdown,
)
from redy_jax.hw import isaac
from redy_jax.hw.figures import derived_figures
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
    assert e["redy_unit"] == e["lzs_unit"] == e["metadata"] == e["digital"] == 0
    # 4 crossbar activations, each 1/96 of the tile-level 40.85 mW for 8 x 100 ns
    assert e["tile_level"] == pytest.approx(4 * 40.85 / 96 * 800)
    assert e["chip_level"] == pytest.approx(4 * 10400 / (96 * 168) * 800)
    assert core_energy_pj(c, spec) == pytest.approx(sum(e[k] for k in CORE_COMPONENTS))
    assert chip_energy_pj(c, spec) == pytest.approx(sum(e[k] for k in CHIP_COMPONENTS))
    assert "edram" not in CHIP_COMPONENTS and "tile_level" not in CORE_COMPONENTS


def test_full_crossbar_read_costs_about_301pj():
    spec = isaac(unit_column=False)
    _, counts = crossbar_matmul(np.ones((1, 128), np.int32), np.ones((128, 32), np.int32), spec)
    e = energy_breakdown(counts.total(), spec)
    ima = sum(e[k] for k in ("adc", "dac", "sample_hold", "crossbar", "shift_add",
                             "input_register", "output_register"))
    assert ima / 8 == pytest.approx(301.0, rel=0.002)  # per crossbar bit-plane


def test_fixed_costs_are_isaacs_12_and_26_percent_of_a_full_crossbar():
    """At full activity (every crossbar fully used, every plane streamed), the energy
    that does not scale with planes is ISAAC's tile-level share of tile power (40.9 of
    330 mW: 12.4%) and, with HyperTransport, 26% of chip power (DESIGN.md 4)."""
    spec = isaac(unit_column=False)
    _, counts = crossbar_matmul(np.ones((1, 128), np.int32), np.ones((128, 32), np.int32), spec)
    e = energy_breakdown(counts.total(), spec)
    ima = sum(e[k] for k in ("adc", "dac", "sample_hold", "crossbar", "shift_add",
                             "input_register", "output_register"))
    assert e["tile_level"] / (ima + e["tile_level"]) == pytest.approx(40.9 / 330, rel=0.01)
    chip = chip_energy_pj(counts.total(), spec)
    assert (e["tile_level"] + e["chip_level"]) / chip == pytest.approx(0.262, abs=0.002)
    assert derived_figures(spec)["fixed_share_full_crossbar"] == pytest.approx(0.262, abs=0.002)
    none = energy_breakdown(counts.total(), isaac(unit_column=False, fixed_costs="none"))
    assert none["tile_level"] == none["chip_level"] == 0
