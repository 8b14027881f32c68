"""Derived figures of a spec: tile/chip power and area, component shares, GOPS/W."""

from __future__ import annotations

from redy_jax.hw.adc import adc_energy_pj
from redy_jax.hw.spec import HardwareSpec


def e_adc_pj(spec: HardwareSpec) -> float:
    """Energy of one conversion at ``spec.adc_bits`` under ``spec.adc_energy_model`` [pJ]."""
    rate_hz = spec.adc_conversions_per_read / (spec.t_read_ns * 1e-9)
    return adc_energy_pj(spec.adc_bits, spec.adc_energy_model, spec.e_adc_8bit_pj, rate_hz)


def _per_tile(spec: HardwareSpec, attr: str, names: set[str] | None = None) -> float:
    total = 0.0
    for c in spec.components:
        if names is not None and c.name not in names:
            continue
        v = getattr(c, attr) / c.share
        if c.level == "ima":
            total += v * spec.imas_per_tile
        elif c.level == "tile":
            total += v
    return total


def tile_power_mw(spec: HardwareSpec) -> float:
    return _per_tile(spec, "power_mw")


def tile_area_mm2(spec: HardwareSpec) -> float:
    return _per_tile(spec, "area_mm2")


def _chip_level(spec: HardwareSpec, attr: str) -> float:
    return sum(getattr(c, attr) / c.share for c in spec.components if c.level == "chip")


def chip_power_w(spec: HardwareSpec) -> float:
    return (tile_power_mw(spec) * spec.tiles + _chip_level(spec, "power_mw")) / 1000.0


def chip_area_mm2(spec: HardwareSpec) -> float:
    return tile_area_mm2(spec) * spec.tiles + _chip_level(spec, "area_mm2")


def xbars_per_chip(spec: HardwareSpec) -> int:
    return spec.xbars_per_ima * spec.imas_per_tile * spec.tiles


def peak_gops(spec: HardwareSpec) -> float:
    """Peak throughput, counting a multiply-accumulate as 2 operations: every crossbar
    completes ``rows x outputs_per_xbar`` MACs each ``planes`` read cycles."""
    macs_per_xbar = spec.rows * spec.outputs_per_xbar
    seconds_per_mvm = spec.planes * spec.t_read_ns * 1e-9
    return 2 * macs_per_xbar * xbars_per_chip(spec) / seconds_per_mvm / 1e9


def gops_per_w(spec: HardwareSpec) -> float:
    return peak_gops(spec) / chip_power_w(spec)


def e_ima_per_xbar_plane_pj(spec: HardwareSpec) -> dict[str, float]:
    """IMA energy of one full crossbar read (all columns converted), by component [pJ]."""
    convs = spec.cols
    return {
        "adc": convs * e_adc_pj(spec),
        "dac": spec.rows * spec.e_dac_pj,
        "sample_hold": convs * spec.e_sample_hold_pj,
        "crossbar": spec.e_xbar_read_pj,
        "shift_add": convs * spec.e_shift_add_pj,
        "input_register": spec.e_input_register_pj,
        "output_register": spec.e_output_register_pj,
    }


def derived_figures(spec: HardwareSpec) -> dict[str, float]:
    """The headline figures of a spec, as ``redy spec --json`` prints them."""
    tp, ta = tile_power_mw(spec), tile_area_mm2(spec)
    ima = e_ima_per_xbar_plane_pj(spec)
    ima_total = sum(ima.values())
    return {
        "tile_power_mw": tp,
        "tile_area_mm2": ta,
        "chip_power_w": chip_power_w(spec),
        "chip_area_mm2": chip_area_mm2(spec),
        "adc_share_tile_power": _per_tile(spec, "power_mw", {"adc"}) / tp,
        "adc_share_tile_area": _per_tile(spec, "area_mm2", {"adc"}) / ta,
        "peak_gops": peak_gops(spec),
        "gops_per_w": gops_per_w(spec),
        "crossbars_per_chip": xbars_per_chip(spec),
        "e_adc_pj": e_adc_pj(spec),
        "e_ima_per_xbar_plane_pj": ima_total,
        "adc_share_ima_energy": ima["adc"] / ima_total,
        "redy_unit_area_share_tile": spec.redy_unit_area_mm2 / ta,
        "min_exact_adc_bits": spec.min_exact_adc_bits(),
        "adc_is_exact": spec.adc_is_exact(),
    }
