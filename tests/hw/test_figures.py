"""The isaac presets against ISAAC's published figures (Shafiee et al., ISCA 2016)."""

import itertools
import json

import pytest

from redy_jax.hw import SAR_TABLE_PJ, adc_energy_pj, derived_figures, e_adc_pj, isaac, isaac_16bit
from redy_jax.hw.figures import e_ima_per_xbar_plane_pj

PUBLISHED = {  # ISAAC Table I / section 7 (16-bit design)
    "adc_share_tile_power": 0.58,
    "adc_share_tile_area": 0.31,
    "chip_power_w": 65.8,
    "chip_area_mm2": 85.4,
    "gops_per_w": 627.5,
    "tile_power_mw": 330.0,
    "tile_area_mm2": 0.372,
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_isaac_16bit_reproduces_published_figure_within_1pct(key):
    got = derived_figures(isaac_16bit())[key]
    assert got == pytest.approx(PUBLISHED[key], rel=0.01)


def test_per_event_energies_follow_from_component_power():
    """DESIGN.md section 4: energy = component power x 100 ns / events in that time."""
    s = isaac()
    power = {c.name: c.power_mw for c in s.components}
    t = s.t_read_ns * 1e-9
    per = lambda name, events: power[name] * 1e-3 * t / events * 1e12
    assert s.e_adc_8bit_pj == pytest.approx(per("adc", 8 * 128))
    assert s.e_dac_pj == pytest.approx(per("dac", 8 * 128))
    assert s.e_sample_hold_pj == pytest.approx(per("sample_hold", 8 * 128))
    assert s.e_xbar_read_pj == pytest.approx(per("crossbar", 8))
    assert s.e_shift_add_pj == pytest.approx(per("shift_add_ima", 8 * 128))
    assert s.e_input_register_pj == pytest.approx(per("input_register", 8))
    assert s.e_output_register_pj == pytest.approx(per("output_register", 8))


def test_ima_energy_per_crossbar_bitplane_is_301pj_with_adc_at_66pct():
    parts = e_ima_per_xbar_plane_pj(isaac())
    total = sum(parts.values())
    assert total == pytest.approx(301, rel=0.005)
    assert parts["adc"] / total == pytest.approx(0.66, abs=0.01)
    assert parts["dac"] / total == pytest.approx(0.17, abs=0.01)
    assert parts["crossbar"] / total == pytest.approx(0.10, abs=0.01)


def test_adc_energy_models():
    assert e_adc_pj(isaac()) == pytest.approx(1.5625)
    for b, e in SAR_TABLE_PJ.items():
        assert adc_energy_pj(b, "sar_table", 1.5625, 1.28e9) == pytest.approx(e)
        assert adc_energy_pj(b, "exp2", 1.5625, 1.28e9) == pytest.approx(1.5625 * 2 ** (b - 8))
    assert e_adc_pj(isaac(adc_bits=6)) == pytest.approx(1.5625 * 1.20 / 1.67)
    # Murmann fit at 1.28 GS/s: 8 bits ~0.92 pJ and x4 per extra bit (SNDR +6.02 dB).
    m8, m9 = (adc_energy_pj(b, "murmann", 0, 1.28e9) for b in (8, 9))
    assert m8 == pytest.approx(0.924, rel=0.01)
    assert m9 / m8 == pytest.approx(10 ** 0.602, rel=1e-6)
    for model in ("isaac_scaled", "sar_table", "exp2", "murmann"):
        es = [adc_energy_pj(b, model, 1.5625, 1.28e9) for b in range(4, 13)]
        assert all(a < b for a, b in itertools.pairwise(es)), model


def test_redy_unit_area_below_2pct_of_tile():
    assert derived_figures(isaac())["redy_unit_area_share_tile"] < 0.02


def test_figures_are_json_serialisable():
    json.dumps(derived_figures(isaac()))
