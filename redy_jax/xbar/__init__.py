"""The bit-accurate crossbar engine: weight slicing, tiling, bit-serial MVM and ADC,
exact fast paths, the execution protocol policies plug into, and one layer's pass."""

from redy_jax.xbar.bit_serial import adc, digit_planes, faithful_partial_sums
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
from redy_jax.xbar.layer import LayerInfo, LayerRecord, crossbar_layer
from redy_jax.xbar.layout import Tiling, tile
from redy_jax.xbar.lowering import im2col
from redy_jax.xbar.plan import GroupSums, LayerContext, Plan, Policy, streamed_codes
from redy_jax.xbar.statistics import tile_sums
from redy_jax.xbar.weights import StoredWeights, quantize_weights, store_weights

__all__ = [
    "COUNT_FIELDS", "MODES", "X_ENCODINGS", "Counts", "GroupSums", "LayerContext",
    "LayerInfo", "LayerRecord", "Plan", "Policy", "StoredWeights", "Tiling", "adc",
    "count_events", "crossbar_layer", "crossbar_matmul", "digit_planes",
    "faithful_partial_sums", "im2col", "quantize_weights", "resolve_mode", "run_tiles",
    "store_weights", "streamed_codes", "tile", "tile_sums", "to_tiles",
]
