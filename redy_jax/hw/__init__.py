"""Hardware description: specs, presets with citations, ADC energy models, figures."""

from redy_jax.hw.adc import ADC_ENERGY_MODELS, SAR_TABLE_PJ, adc_energy_pj, murmann_energy_pj
from redy_jax.hw.figures import (
    chip_area_mm2,
    chip_power_w,
    derived_figures,
    e_adc_pj,
    gops_per_w,
    tile_area_mm2,
    tile_power_mw,
)
from redy_jax.hw.presets import PRESETS, get_preset, isaac, isaac_16bit
from redy_jax.hw.spec import (
    ISAAC_COMPONENTS,
    SIGNED_ENCODINGS,
    Component,
    HardwareSpec,
    check_spec,
)

__all__ = [
    "ADC_ENERGY_MODELS", "ISAAC_COMPONENTS", "PRESETS", "SAR_TABLE_PJ", "SIGNED_ENCODINGS",
    "Component", "HardwareSpec", "adc_energy_pj", "check_spec", "chip_area_mm2", "chip_power_w",
    "derived_figures", "e_adc_pj", "get_preset", "gops_per_w", "isaac", "isaac_16bit",
    "murmann_energy_pj", "tile_area_mm2", "tile_power_mw",
]
