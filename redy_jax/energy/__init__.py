"""Event counts -> energy per component (core and whole-chip), latency, area; reports."""

from redy_jax.energy.breakdown import (
    CHIP_COMPONENTS,
    COMPONENTS,
    CORE_COMPONENTS,
    chip_energy_pj,
    core_energy_pj,
    energy_breakdown,
    mapped_area_mm2,
)
from redy_jax.energy.report import LayerSummary, Report

__all__ = ["CHIP_COMPONENTS", "COMPONENTS", "CORE_COMPONENTS", "LayerSummary", "Report",
           "chip_energy_pj", "core_energy_pj", "energy_breakdown", "mapped_area_mm2"]
