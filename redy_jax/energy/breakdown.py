"""Event counts -> energy per component [pJ], and mapped area.

Two figures are reported everywhere:

* **core** energy: the crossbar IMAs (ADC, DAC, sample-and-hold, array reads,
  shift-and-add, input/output registers), per-access eDRAM and bus traffic, and what a
  dynamic-precision policy adds (its decision unit, metadata, digital offset
  corrections, extra statistics reads);
* **chip** energy: the same IMA and policy costs plus the tile- and chip-level costs
  that do not scale with streamed bit-planes (``HardwareSpec.fixed_costs``: ISAAC's
  tile-level units — eDRAM, bus, router, sigmoid, tile S+A, max-pool, output register —
  and the HyperTransport links, at full activity), which include the eDRAM and bus
  power, so their per-access figures are not added again. Savings are quoted on chip
  energy: leaving the fixed costs out overstates relative savings.
"""

from __future__ import annotations

from collections.abc import Mapping

from redy_jax.hw.figures import e_adc_pj, fixed_pj_per_xbar_vector, tile_area_mm2
from redy_jax.hw.spec import HardwareSpec

IMA_COMPONENTS = ("adc", "dac", "sample_hold", "crossbar", "shift_add", "input_register",
                  "output_register")
"""Energy that scales with the bit-planes streamed."""
POLICY_COMPONENTS = ("redy_unit", "lzs_unit", "metadata", "digital", "stat_read")
"""What a policy's decisions and the output stage's corrections cost."""
BUFFER_COMPONENTS = ("edram", "bus")
"""Per-access buffer traffic (core figure only; inside ``tile_level`` in the chip one)."""
FIXED_COMPONENTS = ("tile_level", "chip_level")
"""Tile- and chip-level power at full activity (chip figure only)."""
COMPONENTS = IMA_COMPONENTS + BUFFER_COMPONENTS + POLICY_COMPONENTS + FIXED_COMPONENTS
CORE_COMPONENTS = IMA_COMPONENTS + BUFFER_COMPONENTS + POLICY_COMPONENTS
CHIP_COMPONENTS = IMA_COMPONENTS + POLICY_COMPONENTS + FIXED_COMPONENTS


def energy_breakdown(counts: Mapping, spec: HardwareSpec) -> dict:
    """Energy per component [pJ] for ``counts`` (a mapping of event name -> count).

    Works on Python numbers, numpy and jax arrays alike (elementwise), so the same
    function gives per-image energies inside a jitted, differentiable pass.
    """
    fixed = fixed_pj_per_xbar_vector(spec)
    bit_edram = spec.e_edram_pj_per_256b / 256.0
    return {
        "adc": counts["adc_conversions"] * e_adc_pj(spec),
        "dac": counts["dac_drives"] * spec.e_dac_pj,
        "sample_hold": counts["sample_holds"] * spec.e_sample_hold_pj,
        "crossbar": counts["xbar_reads"] * spec.e_xbar_read_pj,
        "shift_add": counts["shift_adds"] * spec.e_shift_add_pj,
        "input_register": counts["input_register"] * spec.e_input_register_pj,
        "output_register": counts["output_register"] * spec.e_output_register_pj,
        "edram": counts["edram_bits"] * bit_edram,
        "bus": counts["bus_bits"] * spec.e_bus_pj_per_bit,
        "redy_unit": counts["redy_unit_ops"] * spec.e_redy_unit_pj_per_act,
        "lzs_unit": counts["lzs_unit_ops"] * spec.e_lzs_unit_pj_per_act,
        "metadata": counts["meta_bits"] * spec.e_meta_pj_per_bit,
        "digital": counts["digital_macs"] * spec.e_digital_mac_pj,
        "stat_read": counts["stat_read_bits"] * bit_edram,
        "tile_level": counts["xbar_vectors"] * fixed["tile_level"],
        "chip_level": counts["xbar_vectors"] * fixed["chip_level"],
    }


def core_energy_pj(counts: Mapping, spec: HardwareSpec):
    """Crossbar-core energy [pJ] (see the module docstring)."""
    e = energy_breakdown(counts, spec)
    return sum(e[k] for k in CORE_COMPONENTS)


def chip_energy_pj(counts: Mapping, spec: HardwareSpec):
    """Whole-chip energy [pJ] (see the module docstring)."""
    e = energy_breakdown(counts, spec)
    return sum(e[k] for k in CHIP_COMPONENTS)


def mapped_area_mm2(crossbars: int, spec: HardwareSpec) -> float:
    """Area of the tiles a layer set occupies: crossbars rounded up to whole tiles."""
    per_tile = spec.xbars_per_ima * spec.imas_per_tile
    tiles = -(-crossbars // per_tile)
    return tiles * tile_area_mm2(spec)


__all__ = ["BUFFER_COMPONENTS", "CHIP_COMPONENTS", "COMPONENTS", "CORE_COMPONENTS",
           "FIXED_COMPONENTS", "IMA_COMPONENTS", "POLICY_COMPONENTS", "chip_energy_pj",
           "core_energy_pj", "energy_breakdown", "mapped_area_mm2"]
