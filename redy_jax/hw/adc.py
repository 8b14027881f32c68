"""ADC energy per conversion as a function of resolution (pluggable models).

Models (``HardwareSpec.adc_energy_model``):

``isaac_scaled`` (default)
    ``e_adc_8bit_pj`` (ISAAC Table I: 16 mW / (8 ADCs x 1.28 GS/s) = 1.5625 pJ) at
    8 bits, scaled to other resolutions by the ratio of the SAR table below.
``sar_table``
    ISAAC's SAR-ADC scaling at 32 nm, absolute values, 4..10 bits:
    0.79, 0.99, 1.20, 1.42, 1.67, 1.97, 2.38 pJ (DESIGN.md section 4). Outside
    4..10 bits the table is extrapolated geometrically from its end segments.
``exp2``
    ``e_adc_8bit_pj * 2**(bits - 8)`` (energy doubling per bit, thermal-noise-limited).
``murmann``
    The Murmann ADC-survey fit used by Accelergy/CiMLoop's ADC plug-in
    (Accelergy-Project/accelergy-adc-plug-in, ``adc_data/model.yaml``): the best
    Schreier figure of merit at a sampling rate f is
    ``FOMS = min(302.74 - 6.4608 ln f, 180.14)`` dB, the SNDR of b bits is
    ``6.02 b + 1.76`` dB and the energy per conversion is
    ``1 / (2 * 10**((FOMS - SNDR) / 10))`` J. Valid from 4 bits. ``f`` is the
    per-ADC sample rate of the spec (``adc_conversions_per_read / t_read_ns``).
"""

from __future__ import annotations

import math

ADC_ENERGY_MODELS = ("isaac_scaled", "sar_table", "exp2", "murmann")

SAR_TABLE_PJ = {4: 0.79, 5: 0.99, 6: 1.20, 7: 1.42, 8: 1.67, 9: 1.97, 10: 2.38}

# Murmann-survey fit coefficients (Accelergy ADC plug-in, model.yaml).
MURMANN_FOMS_INTERCEPT_DB = 302.7387019052544
MURMANN_FOMS_PER_LN_HZ = -6.460790934271676
MURMANN_FOMS_MAX_DB = 180.14159078904734


def _sar_table(bits: int) -> float:
    lo, hi = min(SAR_TABLE_PJ), max(SAR_TABLE_PJ)
    if bits in SAR_TABLE_PJ:
        return SAR_TABLE_PJ[bits]
    if bits < lo:
        r = SAR_TABLE_PJ[lo + 1] / SAR_TABLE_PJ[lo]
        return SAR_TABLE_PJ[lo] / r ** (lo - bits)
    r = SAR_TABLE_PJ[hi] / SAR_TABLE_PJ[hi - 1]
    return SAR_TABLE_PJ[hi] * r ** (bits - hi)


def murmann_energy_pj(bits: int, sample_rate_hz: float) -> float:
    """Energy per conversion (pJ) of the best surveyed ADC at ``bits`` and ``sample_rate_hz``."""
    if bits < 4:
        raise ValueError(f"adc_bits must be >= 4 for the 'murmann' ADC energy model, got {bits}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    foms = min(MURMANN_FOMS_INTERCEPT_DB + MURMANN_FOMS_PER_LN_HZ * math.log(sample_rate_hz),
               MURMANN_FOMS_MAX_DB)
    sndr = 6.02 * bits + 1.76
    return 1e12 / (2.0 * 10 ** ((foms - sndr) / 10.0))


def adc_energy_pj(bits: int, model: str, e_adc_8bit_pj: float, sample_rate_hz: float) -> float:
    """Energy of one ADC conversion in pJ at resolution ``bits`` under ``model``."""
    if model == "isaac_scaled":
        return e_adc_8bit_pj * _sar_table(bits) / SAR_TABLE_PJ[8]
    if model == "sar_table":
        return _sar_table(bits)
    if model == "exp2":
        return e_adc_8bit_pj * 2.0 ** (bits - 8)
    if model == "murmann":
        return murmann_energy_pj(bits, sample_rate_hz)
    raise ValueError(f"adc_energy_model must be one of {ADC_ENERGY_MODELS}, got {model!r}")
