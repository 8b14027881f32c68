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


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is 0 (a spec whose powers or energies are all zero)."""
    return a / b if b else None


def gops_per_w(spec: HardwareSpec) -> float | None:
    return _ratio(peak_gops(spec), chip_power_w(spec))


def fixed_pj_per_xbar_vector(spec: HardwareSpec) -> dict[str, float]:
    """Energy that does not scale with streamed planes, per crossbar activation (one
    crossbar consuming one input vector) [pJ], under ``spec.fixed_costs``.

    ``full_activity``: at ISAAC's full activity every crossbar of a tile is busy, so each
    carries ``1 / (xbars_per_ima * imas_per_tile)`` of the tile-level power and
    ``1 / crossbars_per_chip`` of the chip-level power; an activation holds its crossbar
    for the static schedule, ``planes`` read cycles. Returns ``{"tile_level",
    "chip_level"}``."""
    if spec.fixed_costs == "none":
        return {"tile_level": 0.0, "chip_level": 0.0}
    ns = spec.planes * spec.t_read_ns  # mW x ns = pJ
    per_tile = spec.xbars_per_ima * spec.imas_per_tile
    tile_mw = sum(c.power_mw / c.share for c in spec.components if c.level == "tile")
    chip_mw = _chip_level(spec, "power_mw")
    return {"tile_level": tile_mw / per_tile * ns,
            "chip_level": chip_mw / xbars_per_chip(spec) * ns}


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


def _fixed_share(spec: HardwareSpec, ima_per_plane_pj: float) -> float:
    """Share of whole-chip energy that does not scale with planes, for a fully used
    crossbar streaming every plane (ISAAC's schedule): 26% for ISAAC."""
    fixed = sum(fixed_pj_per_xbar_vector(spec).values())
    return _ratio(fixed, fixed + ima_per_plane_pj * spec.planes)


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
        "adc_share_tile_power": _ratio(_per_tile(spec, "power_mw", {"adc"}), tp),
        "adc_share_tile_area": _ratio(_per_tile(spec, "area_mm2", {"adc"}), ta),
        "peak_gops": peak_gops(spec),
        "gops_per_w": gops_per_w(spec),
        "crossbars_per_chip": xbars_per_chip(spec),
        "e_adc_pj": e_adc_pj(spec),
        "e_ima_per_xbar_plane_pj": ima_total,
        "adc_share_ima_energy": _ratio(ima["adc"], ima_total),
        "fixed_pj_per_xbar_vector": sum(fixed_pj_per_xbar_vector(spec).values()),
        "fixed_share_full_crossbar": _fixed_share(spec, ima_total),
        "redy_unit_area_share_tile": _ratio(spec.redy_unit_area_mm2, ta),
        "min_exact_adc_bits": spec.min_exact_adc_bits(),
        "adc_is_exact": spec.adc_is_exact(),
    }
