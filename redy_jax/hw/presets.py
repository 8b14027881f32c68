"""Named hardware presets. Each cites the paper its numbers come from."""

from __future__ import annotations

import dataclasses

from redy_jax.hw.spec import HardwareSpec


def isaac(**overrides) -> HardwareSpec:
    """ISAAC (Shafiee et al., ISCA 2016, Table I) crossbars with the 8-bit weights and
    activations of ReDy's baseline (Sabri et al., 2023): 128x128 crossbars, 2-bit cells,
    1-bit DACs, 8-bit ADCs with flipped encoding, 100 ns reads, 8 crossbars per IMA,
    12 IMAs per tile, 168 tiles."""
    return dataclasses.replace(HardwareSpec(name="isaac"), **overrides)


def isaac_16bit(**overrides) -> HardwareSpec:
    """ISAAC exactly as published: 16-bit weights and 16-bit inputs (Shafiee et al.,
    ISCA 2016). Its derived figures reproduce ISAAC's 65.8 W, 85.4 mm^2, 627.5 GOPS/W."""
    return dataclasses.replace(HardwareSpec(name="isaac_16bit", weight_bits=16, act_bits=16),
                               **overrides)


PRESETS = {"isaac": isaac, "isaac_16bit": isaac_16bit}


def get_preset(preset: str, /, **overrides) -> HardwareSpec:
    """Returns the preset named ``preset`` with field ``overrides`` applied (validated;
    ``name=`` renames it)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return PRESETS[preset](**overrides)
