"""Properties of the hardware model across random specs, shapes and codes (hypothesis):
exactness wherever the spec says the ADC is exact, counts independent of how a batch is
ordered or split, finite non-negative energies for every valid spec, and every invalid
spec rejected with the field named."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redy_jax.energy import COMPONENTS, energy_breakdown
from redy_jax.hw import HardwareSpec, derived_figures, isaac
from redy_jax.xbar import COUNT_FIELDS, crossbar_matmul


@st.composite
def specs(draw):
    cell_bits = draw(st.sampled_from([1, 2, 4]))
    dac_bits = draw(st.sampled_from([1, 1, 2]))
    return isaac(rows=draw(st.sampled_from([16, 32, 64, 128])), cell_bits=cell_bits,
                 dac_bits=dac_bits, adc_bits=draw(st.integers(5, 10)),
                 flipped_encoding=draw(st.booleans()),
                 signed_encoding="zero_point" if dac_bits > 1 else draw(
                     st.sampled_from(["zero_point", "sign_bit"])))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.integers(1, 150), st.integers(1, 40),
       st.sampled_from(["unsigned", "zero_point", "sign_bit"]), st.integers(0, 2**31 - 1))
def test_bit_plane_model_equals_integer_math_wherever_the_adc_is_exact(spec, k, n, enc, seed):
    if enc == "sign_bit" and spec.dac_bits != 1:
        enc = "unsigned"
    rng = np.random.default_rng(seed)
    lo, hi = (-128, 128) if enc == "sign_bit" else (0, 256)
    x = rng.integers(lo, hi, (3, k))
    w = rng.integers(-127, 128, (k, n))
    zp = int(rng.integers(0, 256)) if enc == "zero_point" else 0
    y, counts = crossbar_matmul(x, w, spec, x_encoding=enc, zero_point=zp, mode="bit_plane")
    rows = min(spec.rows, k)
    if spec.adc_is_exact(rows):
        np.testing.assert_array_equal(np.asarray(y, np.int64), (x - zp) @ w)
        assert counts.total()["adc_saturations"] == 0


@settings(max_examples=8, deadline=None)
@given(st.integers(2, 9), st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_counts_do_not_depend_on_batch_order_or_splitting(b, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (b, k)) * (rng.random((b, k)) < 0.5)
    w = rng.integers(-127, 128, (k, 5))
    spec = isaac(adc_bits=7)  # faithful: saturations depend on the data
    _, whole = crossbar_matmul(x, w, spec, mode="faithful")
    _, shuffled = crossbar_matmul(x[rng.permutation(b)], w, spec, mode="faithful")
    cut = b // 2
    _, a = crossbar_matmul(x[:cut], w, spec, mode="faithful")
    _, c = crossbar_matmul(x[cut:], w, spec, mode="faithful")
    t = whole.total()
    assert shuffled.total() == t
    assert {f: a.total()[f] + c.total()[f] for f in COUNT_FIELDS} == t


@st.composite
def valid_specs(draw):
    energy = st.floats(0, 1e3, allow_nan=False, allow_infinity=False)
    kw = {f.name: draw(energy) for f in dataclasses.fields(HardwareSpec)
          if f.name.startswith("e_")}
    kw["t_read_ns"] = draw(st.floats(1e-3, 1e4))
    kw["adc_energy_model"] = draw(st.sampled_from(["isaac_scaled", "sar_table", "exp2"]))
    kw["adc_bits"] = draw(st.integers(1, 16))
    kw["fixed_costs"] = draw(st.sampled_from(["full_activity", "none"]))
    return isaac(**kw)


@settings(max_examples=40, deadline=None)
@given(valid_specs(), st.dictionaries(st.sampled_from(COUNT_FIELDS), st.integers(0, 10**9)))
def test_energies_are_finite_and_non_negative_for_every_valid_spec(spec, counts):
    counts = {f: counts.get(f, 0) for f in COUNT_FIELDS}
    e = energy_breakdown(counts, spec)
    assert set(e) == set(COMPONENTS)
    assert all(math.isfinite(v) and v >= 0 for v in e.values()), e
    figs = derived_figures(spec)  # ratios with a zero denominator are None, not inf/nan
    assert all(v is None or math.isfinite(float(v)) for v in figs.values()), figs


INVALID = {
    "rows": [0, -1, 1.5, True, "128", float("nan")],
    "cell_bits": [0, 9, 3],  # 3 does not divide weight_bits 8
    "adc_bits": [0, 25, None],
    "dac_bits": [0, 3, 9],
    "adc_step": [0, 0.5],
    "t_read_ns": [0.0, -1.0, float("inf"), float("nan"), "100"],
    "e_adc_8bit_pj": [-1.0, float("inf"), float("nan"), True, "1"],
    "e_dac_pj": [float("inf"), -0.1],
    "redy_unit_area_mm2": [float("nan"), -1.0],
    "flipped_encoding": ["maybe", "no", 1, None],
    "unit_column": ["yes", 0],
    "name": [None, "", 3],
    "signed_encoding": ["ones_complement"],
    "adc_energy_model": ["magic"],
    "fixed_costs": ["half"],
    "components": [(), [], None],
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(f, v) for f, vs in INVALID.items() for v in vs]))
def test_every_invalid_spec_is_rejected_with_the_field_named(case):
    field, value = case
    with pytest.raises(ValueError, match=field):
        isaac(**{field: value})


def test_numpy_scalars_are_numbers():
    s = isaac(rows=np.int64(64), e_dac_pj=np.float32(0.25), flipped_encoding=np.bool_(True))
    assert s.rows == 64 and isinstance(s.rows, int) and isinstance(s.e_dac_pj, float)
    assert hash(s) == hash(isaac(rows=64, e_dac_pj=float(np.float32(0.25))))
