"""Uniform activation quantisers and the static calibration rules."""

from redy_jax.quant.activations import (
    CALIBRATION_METHODS,
    CLIP_GRID,
    ActQuant,
    Calibration,
    fake_quant_error,
    make_quant,
    quantize,
)
from redy_jax.quant.calibration import candidate_ranges, fit_calibration

__all__ = ["CALIBRATION_METHODS", "CLIP_GRID", "ActQuant", "Calibration", "candidate_ranges",
           "fake_quant_error", "fit_calibration", "make_quant", "quantize"]
