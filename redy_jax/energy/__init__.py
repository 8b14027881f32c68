"""Event counts -> energy per component, latency, area; the per-layer :class:`Report`."""

from redy_jax.energy.breakdown import (
    COMPONENTS,
    energy_breakdown,
    mapped_area_mm2,
    total_energy_pj,
)
from redy_jax.energy.report import LayerSummary, Report

__all__ = ["COMPONENTS", "LayerSummary", "Report", "energy_breakdown", "mapped_area_mm2",
           "total_energy_pj"]
