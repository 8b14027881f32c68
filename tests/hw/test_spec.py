import dataclasses

import jax
import pytest

from redy_jax.hw import PRESETS, HardwareSpec, get_preset, isaac


@pytest.mark.parametrize("field,value", [
    ("rows", 0), ("rows", -128), ("cols", 0), ("cell_bits", 0), ("adc_bits", 0),
    ("adc_bits", -1), ("weight_bits", 0), ("act_bits", 0), ("dac_bits", 0), ("tiles", 0),
    ("rows", 1.5), ("adc_step", 0), ("adc_step", 1.5), ("t_read_ns", 0.0),
    ("e_adc_8bit_pj", -1.0), ("e_dac_pj", float("nan")),
])
def test_invalid_field_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        isaac(**{field: value})


def test_cell_bits_must_divide_weight_bits():
    with pytest.raises(ValueError, match="cell_bits.*divide weight_bits"):
        isaac(cell_bits=3)


def test_weight_must_fit_in_crossbar_row():
    with pytest.raises(ValueError, match="cols"):
        isaac(cols=2, cell_bits=1)


def test_dac_bits_must_divide_act_bits():
    with pytest.raises(ValueError, match="dac_bits"):
        isaac(dac_bits=3)


def test_unknown_choices_are_rejected():
    with pytest.raises(ValueError, match="signed_encoding"):
        isaac(signed_encoding="magnitude")
    with pytest.raises(ValueError, match="adc_energy_model"):
        isaac(adc_energy_model="magic")
    with pytest.raises(ValueError, match="adc_bits"):
        isaac(adc_energy_model="murmann", adc_bits=3)
    with pytest.raises(ValueError, match="preset"):
        get_preset("nope")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_frozen_hashable_and_jit_static(name):
    spec = get_preset(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.rows = 64  # type: ignore[misc]
    assert hash(spec) == hash(get_preset(name))
    assert spec == get_preset(name)
    f = jax.jit(lambda x, s: x * s.rows, static_argnums=1)
    assert int(f(1, spec)) == spec.rows


def test_every_field_has_a_documented_unit_or_source():
    import inspect

    from redy_jax.hw import spec as spec_module

    src = inspect.getsource(spec_module.HardwareSpec)
    for f in dataclasses.fields(HardwareSpec):
        if f.name in ("components",):
            continue
        after = src.split(f"    {f.name}:", 1)[1]
        doc = after.split('"""', 2)[1]
        assert doc.strip(), f"{f.name} has no docstring"


def test_isaac_crossbar_geometry():
    s = isaac()
    assert (s.slices, s.outputs_per_xbar, s.planes) == (4, 32, 8)
    # 128 rows x 1-bit input x 2-bit cells sum to 384 (9 bits); flipping halves it.
    assert isaac(flipped_encoding=False).max_column_sum() == 384
    assert s.max_column_sum() == 192
    assert s.adc_is_exact() and not isaac(flipped_encoding=False).adc_is_exact()
    assert isaac(flipped_encoding=False).min_exact_adc_bits() == 9
