"""redy_jax: accuracy and energy of Flax CNNs on ISAAC-like ReRAM crossbars, with ReDy.

The package re-exports its main entry points; see the subpackages for the rest:
``hw`` (specs, presets, ADC energy), ``xbar`` (bit-serial crossbar engine),
``quant`` (activation quantisers), ``policy`` (precision policies), ``energy``
(counts -> pJ, reports), ``models`` (Flax zoo), ``data`` (datasets).
"""

from redy_jax import policy
from redy_jax.energy import Report, chip_energy_pj, core_energy_pj, energy_breakdown
from redy_jax.hw import HardwareSpec, derived_figures, get_preset, isaac, isaac_16bit
from redy_jax.onnx_import import from_onnx
from redy_jax.simulate import calibrate, capture, evaluate, evaluate_dataset, simulator
from redy_jax.thresholds import calibrate_thresholds, read_thresholds, redy_policy_map
from redy_jax.tune import TuneConfig, tune_thresholds
from redy_jax.xbar import Counts, crossbar_matmul

__version__ = "0.1.0"

__all__ = [
    "Counts", "HardwareSpec", "Report", "TuneConfig", "calibrate", "calibrate_thresholds",
    "capture", "chip_energy_pj", "core_energy_pj", "from_onnx", "policy", "simulator",
    "crossbar_matmul", "derived_figures", "energy_breakdown", "evaluate", "evaluate_dataset",
    "get_preset", "isaac", "isaac_16bit", "read_thresholds", "redy_policy_map",
    "tune_thresholds",
]
