"""Event counts -> energy / latency / area."""

from redy_jax.energy.breakdown import (
    COMPONENTS,
    energy_breakdown,
    latency_ns,
    mapped_area_mm2,
    total_energy_pj,
)

__all__ = ["COMPONENTS", "energy_breakdown", "latency_ns", "mapped_area_mm2", "total_energy_pj"]
