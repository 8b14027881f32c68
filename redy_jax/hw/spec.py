"""Hardware description of an ISAAC-like ReRAM crossbar accelerator.

:class:`HardwareSpec` is frozen, keyword-only, validated in ``__post_init__`` and
hashable, so it can be a static argument of ``jax.jit``. Change it with
``dataclasses.replace``. Every field carries its unit in its name or docstring and
its source:

* (ISAAC) Shafiee et al., "ISAAC: A Convolutional Neural Network Accelerator with
  In-Situ Analog Arithmetic in Crossbars", ISCA 2016, Table I (32 nm).
* (derived) arithmetic on ISAAC's numbers, e.g. energy = power x 100 ns / events.
* (choice) a decision of this project where the papers give no detail; each is a
  field so a user can change it. See ``docs/choices.md``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from redy_jax.hw.adc import ADC_ENERGY_MODELS

SIGNED_ENCODINGS = ("zero_point", "sign_bit")
FIXED_COSTS = ("full_activity", "none")


class Component(NamedTuple):
    """One row of an accelerator's power/area inventory.

    ``level``: ``"ima"`` (repeated ``imas_per_tile`` times per tile), ``"tile"``
    (once per tile) or ``"chip"`` (once per chip). ``power_mw`` and ``area_mm2`` are
    for all ``count`` units of that row at that level; ``share`` divides a row shared
    between tiles (ISAAC's router serves 4 tiles).
    """

    name: str
    level: str
    count: int
    power_mw: float
    area_mm2: float
    share: float = 1.0
    source: str = "ISAAC Table I"


# ISAAC Table I (32 nm, 1.2 GHz digital, 10 MHz crossbar reads).
ISAAC_COMPONENTS: tuple[Component, ...] = (
    # per IMA (12 per tile)
    Component("adc", "ima", 8, 16.0, 0.0096),
    Component("dac", "ima", 8 * 128, 4.0, 0.00017),
    Component("sample_hold", "ima", 8 * 128, 0.01, 0.00004),
    Component("crossbar", "ima", 8, 2.4, 0.0002),
    Component("shift_add_ima", "ima", 4, 0.2, 0.00024),
    Component("input_register", "ima", 1, 1.24, 0.0021),
    Component("output_register", "ima", 1, 0.23, 0.00077),
    # per tile
    Component("edram", "tile", 1, 20.7, 0.083),
    Component("bus", "tile", 1, 7.0, 0.090),
    Component("router", "tile", 1, 42.0, 0.151, share=4.0),
    Component("sigmoid", "tile", 2, 0.52, 0.0006),
    Component("shift_add_tile", "tile", 1, 0.05, 0.00006),
    Component("maxpool", "tile", 1, 0.4, 0.00024),
    Component("output_register_tile", "tile", 1, 1.68, 0.0032),
    # per chip
    Component("hypertransport", "chip", 4, 10400.0, 22.88),
)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HardwareSpec:
    """An ISAAC-like accelerator. Defaults: ISAAC's crossbar with 8-bit operands."""

    name: str = "custom"
    """Preset name, for reports."""

    # ---- crossbar array ----
    rows: int = 128
    """Wordlines per crossbar, i.e. inputs summed per column read [count] (ISAAC)."""
    cols: int = 128
    """Bitlines per crossbar [count] (ISAAC)."""
    cell_bits: int = 2
    """Bits stored per ReRAM cell [bits] (ISAAC)."""

    # ---- operand precision ----
    weight_bits: int = 8
    """Weight precision, signed, per-output-channel scale [bits] (choice; ReDy compares
    8-bit; ISAAC itself uses 16)."""
    act_bits: int = 8
    """Static activation precision streamed bit-serially [bits] (ReDy baseline: 8)."""

    # ---- peripherals ----
    dac_bits: int = 1
    """Input bits applied per row per cycle [bits] (ISAAC: 1, bit-serial)."""
    adc_bits: int = 8
    """ADC resolution [bits] (ISAAC: 8)."""
    adc_step: int = 1
    """ADC LSB in units of one cell level x one DAC level of column current, a positive
    integer (choice: 1, i.e. the ADC resolves every integer column sum and clips at
    ``(2**adc_bits - 1) * adc_step``; > 1 trades rounding error for range)."""
    flipped_encoding: bool = True
    """ISAAC's encoding: a column whose stored slice values sum above half their maximum
    stores ``2**cell_bits - 1 - x`` instead, flagged per column, so no column sum exceeds
    ``rows * (2**cell_bits - 1) / 2``; the true value is recovered with the unit column
    (ISAAC)."""
    unit_column: bool = True
    """Count the conversions of the per-crossbar unit column (all cells at level 1) whose
    sum of input bits removes the weight bias and undoes flipped columns (ISAAC's extra
    column; choice whether it is counted: True)."""
    signed_encoding: str = "zero_point"
    """How signed activations (e.g. a normalised image) are streamed: ``zero_point``
    (unsigned codes ``q = x + zp``, ``zp * sum(w)`` removed digitally) or ``sign_bit``
    (two's complement, the MSB plane is shifted and subtracted) (choice: zero_point)."""

    # ---- timing and organisation ----
    t_read_ns: float = 100.0
    """Crossbar read cycle: one bit-plane through one crossbar [ns] (ISAAC)."""
    adc_conversions_per_read: int = 128
    """Conversions one ADC makes per read cycle (1.28 GS/s x 100 ns) (ISAAC)."""
    xbars_per_ima: int = 8
    """Crossbars per in-situ multiply-accumulate unit (IMA) [count] (ISAAC)."""
    imas_per_tile: int = 12
    """IMAs per tile [count] (ISAAC)."""
    tiles: int = 168
    """Tiles per chip [count] (ISAAC)."""

    # ---- energy per event [pJ] ----
    e_adc_8bit_pj: float = 1.5625
    """One 8-bit ADC conversion: 16 mW / 8 ADCs / 128 conversions x 100 ns (derived)."""
    adc_energy_model: str = "isaac_scaled"
    """ADC energy vs resolution: one of ``redy_jax.hw.adc.ADC_ENERGY_MODELS``."""
    e_dac_pj: float = 0.390625
    """One row driven for one bit-plane: 4 mW / 1024 DACs x 100 ns (derived)."""
    e_sample_hold_pj: float = 0.0009765625
    """One sample-and-hold: 10 uW / 1024 x 100 ns (derived)."""
    e_xbar_read_pj: float = 30.0
    """One read of a whole 128x128 crossbar (one bit-plane): 2.4 mW / 8 x 100 ns
    (derived)."""
    e_shift_add_pj: float = 0.01953125
    """One shift-and-add of an ADC output: 0.2 mW / 1024 outputs x 100 ns (derived)."""
    e_input_register_pj: float = 15.5
    """Input-register traffic per crossbar bit-plane: 1.24 mW / 8 x 100 ns (derived)."""
    e_output_register_pj: float = 2.875
    """Output-register traffic per crossbar bit-plane: 0.23 mW / 8 x 100 ns (derived)."""
    e_edram_pj_per_256b: float = 20.45
    """eDRAM buffer, one 256-bit access (derived from ISAAC's eDRAM)."""
    e_bus_pj_per_bit: float = 0.054
    """eDRAM-to-IMA bus, per bit moved (derived)."""
    e_router_pj_per_256b: float = 20.74
    """Router, per 256-bit flit (derived). Per-access router traffic is not counted; the
    router's power is part of the tile-level costs below (choice)."""
    e_digital_mac_pj: float = 0.2
    """One digital multiply-add of the output stage: a zero point or a ReDy group offset
    times a column's weight sum, added to an output (8 x 16-bit multiply + 32-bit add,
    Horowitz ISSCC 2014 45 nm ~0.3 pJ, scaled to 32 nm) (choice)."""
    e_meta_pj_per_bit: float = 0.134
    """Moving one bit of per-group metadata (ReDy's n and t) from the quantisation unit
    to the IMA: eDRAM-to-IMA bus 0.054 pJ/bit + one eDRAM access 20.45 / 256 pJ/bit
    (derived)."""

    # ---- costs that do not scale with streamed bit-planes (whole-chip figure) ----
    fixed_costs: str = "full_activity"
    """How tile- and chip-level power (``components`` of level ``tile`` and ``chip``:
    eDRAM, bus, router, sigmoid, tile S+A, max-pool, tile output register,
    HyperTransport; dynamic and leakage) is charged in the whole-chip energy:
    ``full_activity`` charges each crossbar activation (one crossbar consuming one input
    vector) its share of that power (per crossbar at ISAAC's full activity) for the
    static schedule's ``planes`` read cycles, whatever the policy streams, so it does not
    shrink when fewer planes are streamed (ISAAC: 12% of tile power, 26% of chip power);
    ``none`` leaves them out (choice: full_activity)."""

    # ---- ReDy quantisation unit (choice; see docs/choices.md) ----
    e_lzs_unit_pj_per_act: float = 0.01
    """Leading-zero detection per activation entering a group (an OR-reduction of the
    group's codes and a leading-one detector: ~8 two-input gates per activation, ~1 fJ
    each at 32 nm) (choice)."""
    e_redy_unit_pj_per_act: float = 0.2
    """Statistics + comparators + shifter per activation entering a group: ~8-bit add
    (max, mean), 8-bit square and 16-bit add (variance), compare, shift; Horowitz
    (ISSCC 2014) 45 nm figures (~0.4 pJ) scaled to 32 nm (choice)."""
    redy_unit_area_mm2: float = 0.005
    """Area of one quantisation unit per tile: 16 lanes x (8-bit multiplier + two adders +
    comparator + shifter) ~ 0.010 mm^2 at 45 nm (Horowitz 2014), scaled by
    (32/45)^2 (choice)."""
    redy_meta_bits: int = 6
    """Per-group metadata: n and t, 3 bits each [bits] (ReDy reading, DESIGN.md 3)."""

    # ---- power/area inventory for tile and chip figures ----
    components: tuple[Component, ...] = ISAAC_COMPONENTS

    def __post_init__(self):
        self._normalise()
        for f in ("rows", "cols", "cell_bits", "weight_bits", "act_bits", "dac_bits",
                  "adc_bits", "adc_conversions_per_read", "xbars_per_ima", "imas_per_tile",
                  "tiles", "redy_meta_bits", "adc_step"):
            # validated first: everything below relies on these being positive ints
            v = getattr(self, f)
            if not _is_int(v) or v < 1:
                raise ValueError(f"HardwareSpec.{f} must be an integer >= 1, got {v!r}")
        limits = {"cell_bits": 8, "weight_bits": 16, "act_bits": 16, "dac_bits": 8,
                  "adc_bits": 24}
        for f, hi in limits.items():
            if getattr(self, f) > hi:
                raise ValueError(f"HardwareSpec.{f} must be in [1, {hi}], got {getattr(self, f)}")
        if self.weight_bits % self.cell_bits:
            raise ValueError(
                f"HardwareSpec.cell_bits ({self.cell_bits}) must divide weight_bits "
                f"({self.weight_bits}): a weight is stored in whole cells")
        if self.weight_bits // self.cell_bits > self.cols:
            raise ValueError(
                f"HardwareSpec.cols ({self.cols}) must hold one weight: >= weight_bits / "
                f"cell_bits = {self.weight_bits // self.cell_bits}")
        if self.dac_bits > self.act_bits:
            raise ValueError(f"HardwareSpec.dac_bits ({self.dac_bits}) must be <= act_bits "
                             f"({self.act_bits})")
        if self.act_bits % self.dac_bits:
            raise ValueError(f"HardwareSpec.dac_bits ({self.dac_bits}) must divide act_bits "
                             f"({self.act_bits})")
        for f, choices in (("fixed_costs", FIXED_COSTS), ("signed_encoding", SIGNED_ENCODINGS),
                           ("adc_energy_model", ADC_ENERGY_MODELS)):
            if getattr(self, f) not in choices:
                raise ValueError(f"HardwareSpec.{f} must be one of {choices}, "
                                 f"got {getattr(self, f)!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"HardwareSpec.name must be a non-empty string, got {self.name!r}")
        for f in ("flipped_encoding", "unit_column"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"HardwareSpec.{f} must be True or False, got "
                                 f"{getattr(self, f)!r}")
        if self.signed_encoding == "sign_bit" and self.dac_bits != 1:
            raise ValueError("HardwareSpec.signed_encoding='sign_bit' needs dac_bits == 1 (the "
                             "sign plane is streamed alone); use 'zero_point'")
        if self.adc_energy_model == "murmann" and self.adc_bits < 4:
            raise ValueError(f"HardwareSpec.adc_bits must be >= 4 with adc_energy_model="
                             f"'murmann', got {self.adc_bits}")
        for f, unit, positive in (("t_read_ns", "ns", True), ("redy_unit_area_mm2", "mm^2", False),
                                  *((x.name, "pJ", False) for x in dataclasses.fields(self)
                                    if x.name.startswith("e_"))):
            v = getattr(self, f)
            ok = _is_number(v) and math.isfinite(v) and (v > 0 if positive else v >= 0)
            if not ok:
                raise ValueError(f"HardwareSpec.{f} must be a finite number "
                                 f"{'> 0' if positive else '>= 0'} {unit}, got {v!r}")
        if not isinstance(self.components, tuple) or not self.components:
            raise ValueError("HardwareSpec.components must be a non-empty tuple of Component "
                             f"rows (the tile/chip inventory), got {self.components!r}")
        for c in self.components:
            if not isinstance(c, Component):
                raise ValueError(f"HardwareSpec.components: {c!r} is not a Component")
            if c.level not in ("ima", "tile", "chip"):
                raise ValueError(f"HardwareSpec.components: {c.name} has level {c.level!r}, "
                                 "expected 'ima', 'tile' or 'chip'")
            for f in ("power_mw", "area_mm2", "share"):
                v = getattr(c, f)
                if not (_is_number(v) and math.isfinite(v) and v >= 0) or (f == "share"
                                                                            and v == 0):
                    raise ValueError(f"HardwareSpec.components: {c.name}.{f} must be a finite "
                                     f"number >= 0{' (> 0)' if f == 'share' else ''}, got {v!r}")
            if not _is_int(c.count) or c.count < 1:
                raise ValueError(f"HardwareSpec.components: {c.name}.count must be an integer "
                                 f">= 1, got {c.count!r}")
        if not any(c.level in ("ima", "tile") for c in self.components):
            raise ValueError("HardwareSpec.components needs at least one IMA or tile row "
                             "(tile power and area are made of them)")

    def _normalise(self) -> None:
        """numpy scalars become Python numbers and a list of components a tuple, so the
        spec stays hashable and its checks see plain types."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.generic) and not isinstance(v, np.bool_):
                object.__setattr__(self, f.name, v.item())
            elif isinstance(v, np.bool_):
                object.__setattr__(self, f.name, bool(v))
        if isinstance(self.components, list):
            object.__setattr__(self, "components", tuple(self.components))

    # ---- derived array geometry ----
    @property
    def slices(self) -> int:
        """Cells (columns) per weight: ``weight_bits / cell_bits``."""
        return self.weight_bits // self.cell_bits

    @property
    def outputs_per_xbar(self) -> int:
        """Weights (output channels) side by side in one crossbar row."""
        return self.cols // self.slices

    @property
    def planes(self) -> int:
        """Input cycles for a full-precision activation: ``act_bits / dac_bits``."""
        return self.act_bits // self.dac_bits

    @property
    def cell_max(self) -> int:
        return (1 << self.cell_bits) - 1

    @property
    def dac_max(self) -> int:
        return (1 << self.dac_bits) - 1

    @property
    def adc_max_code(self) -> int:
        return (1 << self.adc_bits) - 1

    @property
    def adc_full_scale(self) -> float:
        """Largest column sum the ADC represents (above it, it clips)."""
        return self.adc_max_code * self.adc_step

    def max_column_sum(self, rows_used: int | None = None) -> int:
        """Worst-case analog sum of one column read with ``rows_used`` active rows."""
        r = self.rows if rows_used is None else rows_used
        if self.flipped_encoding:
            return (r * self.cell_max // 2) * self.dac_max
        return r * self.cell_max * self.dac_max

    def adc_is_exact(self, rows_used: int | None = None) -> bool:
        """True when no column (nor the unit column) can clip or round: the bit-serial
        result then equals exact integer arithmetic."""
        r = self.rows if rows_used is None else rows_used
        unit_sum = r * self.dac_max
        return (self.adc_step == 1 and self.max_column_sum(r) <= self.adc_max_code
                and unit_sum <= self.adc_max_code)

    def min_exact_adc_bits(self, rows_used: int | None = None) -> int:
        """Fewest ADC bits (at ``adc_step=1``) that make every read exact."""
        r = self.rows if rows_used is None else rows_used
        return max(self.max_column_sum(r), r * self.dac_max).bit_length()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["components"] = [c._asdict() for c in self.components]
        return d


def check_spec(spec) -> HardwareSpec:
    """``spec`` if it is a :class:`HardwareSpec`; else a TypeError saying what was passed
    (a preset function not called, a preset name)."""
    if isinstance(spec, HardwareSpec):
        return spec
    hint = ""
    if callable(spec):
        hint = " (a preset function: call it, e.g. redy_jax.isaac())"
    elif isinstance(spec, str):
        hint = f" (a preset name: use redy_jax.get_preset({spec!r}))"
    raise TypeError(f"spec must be a HardwareSpec, got {type(spec).__name__}{hint}")
