"""Event counts -> energy per component [pJ], latency and area."""

from __future__ import annotations

from collections.abc import Mapping

from redy_jax.hw.figures import e_adc_pj, tile_area_mm2
from redy_jax.hw.spec import HardwareSpec

COMPONENTS = ("adc", "dac", "sample_hold", "crossbar", "shift_add", "input_register",
              "output_register", "edram", "bus", "redy_unit")


def energy_breakdown(counts: Mapping, spec: HardwareSpec) -> dict:
    """Energy per component [pJ] for ``counts`` (a mapping of event name -> count).

    Works on Python numbers, numpy and jax arrays alike (elementwise), so the same
    function gives per-image energies inside a jitted, differentiable pass.
    """
    return {
        "adc": counts["adc_conversions"] * e_adc_pj(spec),
        "dac": counts["dac_drives"] * spec.e_dac_pj,
        "sample_hold": counts["sample_holds"] * spec.e_sample_hold_pj,
        "crossbar": counts["xbar_reads"] * spec.e_xbar_read_pj,
        "shift_add": counts["shift_adds"] * spec.e_shift_add_pj,
        "input_register": counts["input_register"] * spec.e_input_register_pj,
        "output_register": counts["output_register"] * spec.e_output_register_pj,
        "edram": counts["edram_bits"] * (spec.e_edram_pj_per_256b / 256.0),
        "bus": counts["bus_bits"] * spec.e_bus_pj_per_bit,
        "redy_unit": counts["redy_unit_ops"] * spec.e_redy_unit_pj_per_act,
    }


def total_energy_pj(counts: Mapping, spec: HardwareSpec):
    return sum(energy_breakdown(counts, spec).values())


def mapped_area_mm2(crossbars: int, spec: HardwareSpec) -> float:
    """Area of the tiles a layer set occupies: crossbars rounded up to whole tiles."""
    per_tile = spec.xbars_per_ima * spec.imas_per_tile
    tiles = -(-crossbars // per_tile)
    return tiles * tile_area_mm2(spec)
