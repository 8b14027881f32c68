"""The bit-accurate crossbar: weight slicing, tiling, bit-serial MVM, ADC, counts."""

from redy_jax.xbar.bit_serial import (
    adc,
    digit_planes,
    exact_partial_sums,
    faithful_partial_sums,
)
from redy_jax.xbar.engine import (
    COUNT_FIELDS,
    MODES,
    X_ENCODINGS,
    Counts,
    count_events,
    crossbar_matmul,
    resolve_mode,
    run_tiles,
    to_tiles,
)
from redy_jax.xbar.layout import Tiling, tile
from redy_jax.xbar.lowering import im2col
from redy_jax.xbar.weights import StoredWeights, quantize_weights, store_weights

__all__ = [
    "COUNT_FIELDS", "MODES", "X_ENCODINGS", "Counts", "StoredWeights", "Tiling", "adc",
    "count_events", "crossbar_matmul", "digit_planes", "exact_partial_sums",
    "faithful_partial_sums", "im2col", "quantize_weights", "resolve_mode", "run_tiles",
    "store_weights", "tile", "to_tiles",
]
