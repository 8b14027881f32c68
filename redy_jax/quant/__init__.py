"""Uniform quantisers and static calibration."""

from redy_jax.quant.activations import (
    CALIBRATION_METHODS,
    ActQuant,
    Calibration,
    make_quant,
    quantize,
)

__all__ = ["CALIBRATION_METHODS", "ActQuant", "Calibration", "make_quant", "quantize"]
