"""The crossbar engine against exact integer arithmetic and hand-worked cases."""

import dataclasses

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redy_jax.hw import isaac
from redy_jax.xbar import crossbar_matmul, store_weights, tile


def _ref(x, w, zp=0):
    return (np.asarray(x, np.int64) - zp) @ np.asarray(w, np.int64)


@st.composite
def problems(draw):
    spec = draw(st.sampled_from([
        isaac(),  # 8 ADC bits + flipped: exact
        isaac(flipped_encoding=False, adc_bits=9),
        isaac(rows=64, cols=64, cell_bits=1, adc_bits=7, flipped_encoding=False),
        isaac(rows=32, cell_bits=4, adc_bits=9),
        isaac(dac_bits=2, adc_bits=10),
    ]))
    enc = draw(st.sampled_from(["unsigned", "sign_bit", "zero_point"]))
    if enc == "sign_bit" and spec.dac_bits != 1:
        enc = "unsigned"
    b = draw(st.integers(1, 6))
    k = draw(st.integers(1, 3 * spec.rows + 7))  # often not a multiple of rows
    n = draw(st.integers(1, 70))
    a = spec.act_bits
    lo, hi = (-(1 << (a - 1)), (1 << (a - 1)) - 1) if enc == "sign_bit" else (0, (1 << a) - 1)
    x = draw(hnp.arrays(np.int32, (b, k), elements=st.integers(lo, hi)))
    w = draw(hnp.arrays(np.int32, (k, n), elements=st.integers(-128, 127)))
    zp = draw(st.integers(0, 255)) if enc == "zero_point" else 0
    return spec, enc, x, w, zp


@given(problems(), st.sampled_from(["faithful", "bit_plane", "auto"]))
def test_adc_that_cannot_clip_equals_integer_matmul(problem, mode):
    spec, enc, x, w, zp = problem
    assert spec.adc_is_exact()
    y, counts = crossbar_matmul(x, w, spec, x_encoding=enc, zero_point=zp, mode=mode)
    np.testing.assert_array_equal(np.asarray(y), _ref(x, w, zp))
    assert counts.total()["adc_saturations"] == 0


def _adversarial(k=128, n=32):
    # Dense, large inputs and weights: every column sum is at its maximum.
    return np.full((3, k), 255, np.int32), np.full((k, n), 127, np.int32)


def test_isaac_128_rows_exact_at_8_adc_bits_with_flipped_encoding():
    x, w = _adversarial()
    y, counts = crossbar_matmul(x, w, isaac(flipped_encoding=True), mode="bit_plane")
    np.testing.assert_array_equal(np.asarray(y), _ref(x, w))
    assert counts.total()["adc_saturations"] == 0


def test_isaac_128_rows_not_exact_at_8_adc_bits_without_flipped_encoding():
    x, w = _adversarial()
    spec = isaac(flipped_encoding=False)
    y, counts = crossbar_matmul(x, w, spec, mode="faithful")
    assert not np.array_equal(np.asarray(y), _ref(x, w))
    assert counts.total()["adc_saturations"] > 0
    # ...and auto mode does not hide it behind the exact path.
    y_auto, _ = crossbar_matmul(x, w, spec)
    np.testing.assert_array_equal(np.asarray(y_auto), np.asarray(y))
    with pytest.raises(ValueError, match="adc_bits >= 9"):
        crossbar_matmul(x, w, spec, mode="exact")


@pytest.mark.parametrize("adc_bits", [5, 6, 7])
def test_too_few_adc_bits_show_error_and_count_saturations(adc_bits):
    rng = np.random.default_rng(adc_bits)
    x = rng.integers(0, 256, (8, 256))
    w = rng.integers(-128, 128, (256, 40))
    y, counts = crossbar_matmul(x, w, isaac(adc_bits=adc_bits))
    err = np.abs(np.asarray(y) - _ref(x, w))
    assert err.max() > 0 and counts.total()["adc_saturations"] > 0


def test_adc_step_rounds_instead_of_clipping():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 128))
    w = rng.integers(-128, 128, (128, 32))
    spec = isaac(adc_bits=6, adc_step=4, flipped_encoding=True)  # full scale 252
    y, counts = crossbar_matmul(x, w, spec)
    assert counts.total()["adc_saturations"] == 0
    assert not np.array_equal(np.asarray(y), _ref(x, w))  # rounding error, visible


def _bit_serial_reference(x, w, spec, enc, zp=0):
    """Plain NumPy model of the crossbars, written from DESIGN.md independently of the
    library: row tiles of ``spec.rows``, biased weights ``u = w + 2^(b-1)`` in
    ``cell_bits`` slices, a column flipped (stored ``cmax - c``) when its cells sum to
    more than half the maximum, one DAC digit per read, every column and unit column
    converted by the ADC (round half up, saturate at full scale), shift-and-add, the
    weight bias removed digitally. Returns (y int64 (B, N), saturated conversions)."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    b_count, k = x.shape
    n = w.shape[1]
    a, wb, cb, db = spec.act_bits, spec.weight_bits, spec.cell_bits, spec.dac_bits
    cmax, dmax, step = (1 << cb) - 1, (1 << db) - 1, spec.adc_step
    planes, slices = -(-a // db), wb // cb
    full_scale = ((1 << spec.adc_bits) - 1) * step

    def convert(v):
        return np.minimum((2 * v + step) // (2 * step), (1 << spec.adc_bits) - 1) * step

    bits = x & ((1 << a) - 1) if enc == "sign_bit" else x  # two's complement pattern
    u = w + (1 << (wb - 1))
    y = np.zeros((b_count, n), np.int64)
    saturated = 0
    for lo in range(0, k, spec.rows):
        rows = slice(lo, min(lo + spec.rows, k))
        used = rows.stop - rows.start
        for s in range(slices):
            cells = (u[rows] >> (cb * s)) & cmax  # (rows, N)
            flip = (2 * cells.sum(0) > used * cmax) if spec.flipped_encoding else \
                np.zeros(n, bool)
            stored = np.where(flip, cmax - cells, cells)
            for p in range(planes):
                d = (bits[:, rows] >> (db * p)) & dmax  # (B, rows)
                analog, unit = d @ stored, d.sum(1)
                saturated += int((analog > full_scale).sum())
                value = np.where(flip, cmax * convert(unit)[:, None] - convert(analog),
                                 convert(analog))
                weight = (1 << (db * p)) * (-1 if enc == "sign_bit" and p == planes - 1 else 1)
                y += weight * (value << (cb * s))
        crossbars = -(-n // (spec.cols // slices))  # column tiles of this row tile
        for p in range(planes):  # unit column: each crossbar of the row tile converts one
            d = (bits[:, rows] >> (db * p)) & dmax
            unit = d.sum(1)
            saturated += int((unit > full_scale).sum()) * crossbars
            weight = (1 << (db * p)) * (-1 if enc == "sign_bit" and p == planes - 1 else 1)
            y -= (weight * convert(unit) << (wb - 1))[:, None]
    return y - zp * w.sum(0), saturated


@pytest.mark.parametrize("spec,clips", [
    (isaac(adc_bits=6), True),
    (isaac(flipped_encoding=False), True),  # 128 rows * 3 > 255
    (isaac(adc_bits=6, adc_step=4), False),  # rounds (flipped sums <= 192 < 252)
    (isaac(rows=64, cell_bits=1, adc_bits=5, flipped_encoding=False), True),
    (isaac(rows=32, dac_bits=2, adc_bits=7), True),
    # 512 rows: 1536 * 255 * 85 >= 2^24, the conversions are summed in int32
    (isaac(rows=512, adc_bits=11, flipped_encoding=False), False),
])
@pytest.mark.parametrize("enc", ["unsigned", "sign_bit", "zero_point"])
@pytest.mark.parametrize("mode", ["faithful", "bit_plane"])
def test_faithful_path_equals_a_numpy_bit_serial_reference(spec, clips, enc, mode):
    """Outputs and saturation counts of the faithful path, clipping and rounding
    included, equal a straightforward loop-over-tiles-planes-and-slices NumPy model
    (K spans two full row tiles and a partial one): with every read modelled, and with
    the reads the data proves exact summed exactly (three rows are sparse)."""
    if enc == "sign_bit" and spec.dac_bits != 1:
        enc = "unsigned"
    rng = np.random.default_rng(spec.adc_bits * 7 + spec.rows)
    k, n = 2 * spec.rows + 19, 37
    lo, hi = (-128, 128) if enc == "sign_bit" else (0, 256)
    x = rng.integers(lo, hi, (6, k)) * (rng.random((6, k)) < [[1.0]] * 3 + [[0.3]] * 3)
    x[0] = hi - 1  # every digit one: the largest column sums
    w = rng.integers(-128, 128, (k, n))
    w[:, :8] = rng.integers(64, 128, (k, 8))  # large weights: high slices full, they clip
    zp = int(rng.integers(0, 256)) if enc == "zero_point" else 0
    y, counts = crossbar_matmul(x, w, spec, x_encoding=enc, zero_point=zp, mode=mode)
    y_ref, sat_ref = _bit_serial_reference(x, w, spec, enc, zp)
    np.testing.assert_array_equal(np.asarray(y), y_ref)
    assert counts.total()["adc_saturations"] == sat_ref
    assert (sat_ref > 0) == clips  # the case covers what it claims to


def test_hand_worked_column_with_flip():
    """2 rows, 2-bit cells, 1-bit DAC, 2-bit weights (one slice), flipped encoding.

    w = [1, 1] -> biased u = w + 2 = [3, 3]; column sum 6 > 2 rows * 3 / 2 = 3 -> flipped,
    stored 3 - 3 = [0, 0]. x = [3, 1]: plane 0 digits [1, 1] -> A = 0, U = 2 -> 3*2 - 0 = 6;
    plane 1 digits [1, 0] -> A = 0, U = 1 -> 3. Biased sum 6 + 2*3 = 12; input sum
    2 + 2*1 = 4; remove bias 2 * 4 = 8 -> 4 = 3*1 + 1*1.
    """
    spec = isaac(rows=2, cols=4, weight_bits=2, act_bits=2, adc_bits=3)
    stored = store_weights(jnp.array([[1], [1]]), tile(2, 1, spec), spec)
    assert bool(stored.flipped[0, 0, 0])
    np.testing.assert_array_equal(np.asarray(stored.cells[0, :, 0, 0]), [0, 0])
    y, counts = crossbar_matmul(np.array([[3, 1]]), np.array([[1], [1]]), spec,
                                mode="bit_plane")
    assert int(y[0, 0]) == 4
    c = counts.total()
    assert (c["xbar_reads"], c["adc_conversions"], c["dac_drives"]) == (2, 4, 4)


def test_hand_worked_event_counts_dense_layer():
    """K=200, N=40 on isaac: row tiles of 128 + 72 rows, 2 crossbars across 40 outputs
    (32 per crossbar), 8 planes, 4 slices per output, 1 unit column per crossbar."""
    x = np.ones((3, 200), np.int32)
    w = np.ones((200, 40), np.int32)
    _, counts = crossbar_matmul(x, w, isaac())
    c = counts.total()
    per_vector = {
        "xbar_reads": 8 * 2 * 2,
        "adc_conversions": 8 * 2 * (40 * 4 + 2),
        "dac_drives": 8 * (128 + 72) * 2,
        "sample_holds": 8 * 2 * (40 * 4 + 2),
        "shift_adds": 8 * 2 * (40 * 4 + 2),
        "input_register": 32, "output_register": 32,
        "edram_bits": 200 * 8 + 40 * 8, "bus_bits": 200 * 8,
        "cycles": 8, "streamed_bits": 200 * 8, "activations": 200,
        "redy_unit_ops": 0, "adc_saturations": 0, "lzs_unit_ops": 0, "meta_bits": 0,
        "digital_macs": 0, "stat_read_bits": 0,
        "xbar_vectors": 2 * 2,  # 2 row tiles x 2 column tiles: 4 crossbar activations
    }
    assert c == {k: 3 * v for k, v in per_vector.items()}
    _, zp_counts = crossbar_matmul(x, w, isaac(), x_encoding="zero_point", zero_point=1)
    assert zp_counts.total()["digital_macs"] == 3 * 40  # zp * column sum, once per output


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 999), images=st.integers(1, 4), per=st.integers(1, 6),
       k=st.integers(1, 300), kind=st.sampled_from(["none", "planes", "redy"]),
       zero_point=st.booleans(), offsets=st.booleans(), saturated=st.booleans())
def test_counts_per_image_equal_per_vector_counts_summed(seed, images, per, k, kind,
                                                          zero_point, offsets, saturated):
    """``count_events(images=B)`` (per-image sums of the plan) gives the same integers as
    the per-vector counts summed over each image's vectors, for plans that stream every
    plane, per-group planes (leading-zero skipping) and ReDy's (units, metadata,
    statistics reads, offsets), with and without zero points and saturations."""
    from redy_jax.xbar.engine import count_events
    from redy_jax.xbar.plan import Plan

    spec = isaac()
    tl = tile(k, 40, spec, 1)
    v, t = images * per, tl.n_row_tiles
    rng = np.random.default_rng(seed)
    ints = lambda hi, shape: jnp.asarray(rng.integers(0, hi, shape), jnp.int32)
    plan = Plan()
    if kind != "none":
        plan = Plan(planes=ints(9, (v, t)), shifts=ints(4, (v, t)),
                    offsets=ints(9, (v, t)) if offsets else None)
    if kind == "redy":
        plan = plan.replace(unit="redy", unit_ops=ints(300, (v,)), meta_bits=ints(30, (v,)),
                            stat_reads=ints(50, (v,)))
    sat = ints(99, (v,)) if saturated else None
    kw = dict(vectors=v, layer_bits=jnp.int32(7), zero_point=zero_point, saturated=sat)
    per_vector = count_events(plan, tl, spec, **kw).sum_groups(images)
    per_image = count_events(plan, tl, spec, images=images, **kw)
    for f in per_vector.as_dict():
        np.testing.assert_array_equal(np.asarray(getattr(per_image, f)),
                                      np.asarray(getattr(per_vector, f)), err_msg=f)


def test_conv_row_tiles_hold_whole_channels():
    spec = isaac()
    t = tile(16 * 9, 32, spec, taps=9)  # 3x3 kernels: 14 channels = 126 rows per tile
    assert (t.rows_per_tile, t.n_row_tiles, t.rows_used, t.n_col_tiles) == (126, 2, (126, 18), 1)
    assert tile(5 * 25, 8, spec, taps=25).rows_per_tile == 125
    assert tile(3 * 121, 8, spec, taps=121).rows_per_tile == 121
    with pytest.raises(ValueError, match="taps"):
        tile(169, 8, spec, taps=169)


def test_bad_inputs_raise_clear_errors():
    spec = isaac()
    x = np.zeros((2, 10), np.int32)
    w = np.zeros((10, 3), np.int32)
    with pytest.raises(ValueError, match="disagree on K"):
        crossbar_matmul(x, np.zeros((9, 3), np.int32), spec)
    with pytest.raises(ValueError, match="x_codes.*integer"):
        crossbar_matmul(x.astype(np.float32), w, spec)
    with pytest.raises(ValueError, match=r"x_codes must be unsigned 8-bit.*\[0, 255\]"):
        crossbar_matmul(x - 1, w, spec)
    with pytest.raises(ValueError, match="w_codes must be signed 8-bit"):
        crossbar_matmul(x, w + 300, spec)
    with pytest.raises(ValueError, match="x_encoding"):
        crossbar_matmul(x, w, spec, x_encoding="ones_complement")
    with pytest.raises(ValueError, match="mode"):
        crossbar_matmul(x, w, spec, mode="fast")
    with pytest.raises(ValueError, match="2-D"):
        crossbar_matmul(x[0], w, spec)


def test_exact_and_bit_plane_paths_agree_bit_for_bit_and_in_counts():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (16, 300))
    w = rng.integers(-128, 128, (300, 70))
    spec = dataclasses.replace(isaac(), name="t")
    ye, ce = crossbar_matmul(x, w, spec, mode="exact")
    yf, cf = crossbar_matmul(x, w, spec, mode="bit_plane")
    np.testing.assert_array_equal(np.asarray(ye), np.asarray(yf))
    assert ce.total() == cf.total()


def test_chunked_faithful_path_equals_unchunked():
    from redy_jax.xbar import to_tiles
    from redy_jax.xbar.bit_serial import faithful_partial_sums

    rng = np.random.default_rng(5)
    spec = isaac(adc_bits=7)  # clipping happens: the comparison covers errors too
    t = tile(300, 40, spec)
    x = to_tiles(jnp.asarray(rng.integers(0, 256, (37, 300)), jnp.int32), t)
    stored = store_weights(jnp.asarray(rng.integers(-128, 128, (300, 40)), jnp.int32), t, spec)
    whole = faithful_partial_sums(x, stored, spec, False)
    chunked = faithful_partial_sums(x, stored, spec, False, budget_bytes=200_000)  # ~5 rows
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(whole[1].sum()) > 0


@pytest.mark.parametrize("k", [2 * 128 + 19, 128 + 85, 128 + 86])
def test_short_last_tile_exact_shortcut_equals_its_bit_plane_model(k):
    """A last row tile so short that none of its conversions can clip (19 or 85 rows
    of 3-level cells under an 8-bit ADC: at most 255) is summed exactly; the result and
    the saturation count equal the bit-plane model of every tile (``last_rows`` None),
    while the full tiles do clip. At 86 rows (258 > 255) the last tile can clip and
    goes through the bit-plane model."""
    from redy_jax.xbar import to_tiles
    from redy_jax.xbar.bit_serial import faithful_partial_sums

    rng = np.random.default_rng(k)
    spec = isaac(flipped_encoding=False)
    assert spec.adc_is_exact(19) and spec.adc_is_exact(85) and not spec.adc_is_exact(86)
    t = tile(k, 24, spec)
    x = np.asarray(rng.integers(0, 256, (40, k)))
    x[:4] = 255  # every digit one: full tiles' columns clip
    w = rng.integers(-128, 128, (k, 24))
    w[:, :6] = rng.integers(64, 128, (k, 6))
    x_t = to_tiles(jnp.asarray(x, jnp.int32), t)
    stored = store_weights(jnp.asarray(w, jnp.int32), t, spec)
    short = faithful_partial_sums(x_t, stored, spec, False, last_rows=t.rows_used[-1])
    model = faithful_partial_sums(x_t, stored, spec, False)
    for a, b in zip(short, model, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(model[1].sum()) > 0
    lo = 128 * (t.n_row_tiles - 1)
    tail, exact = np.asarray(short[0])[:, -1], x[:, lo:] @ w[lo:]
    if spec.adc_is_exact(k - lo):
        np.testing.assert_array_equal(tail, exact)
    else:  # 86 rows of all-ones digits reach 258 > 255 in the top slices: they clip
        assert not np.array_equal(tail[:4], exact[:4])


@pytest.mark.parametrize("spec,signed", [
    (isaac(flipped_encoding=False), False),
    (isaac(flipped_encoding=False), True),
    (isaac(rows=64, dac_bits=2, adc_bits=7, flipped_encoding=False), False),
])
@pytest.mark.parametrize("dense_rows", [0, 1, 2, 12, 13, 96])
def test_pruned_faithful_path_equals_the_bit_plane_model_in_every_branch(spec, signed,
                                                                         dense_rows):
    """Leaving the vectors the data proves exact out of the bit-plane model changes no
    partial sum and no saturation count, whichever branch runs: no vector left (0),
    the few left gathered and modelled alone in a batch of 96 / 64 = 1 (1) or of
    96 / 8 = 12 (2 and 12), or the whole chunk modelled (13 and 96). Dense rows of
    large codes against the largest weights clip; sparse codes of 0 and 1 cannot."""
    from redy_jax.xbar import to_tiles
    from redy_jax.xbar.bit_serial import PRUNED_SHARES, faithful_partial_sums, may_clip

    rng = np.random.default_rng(dense_rows)
    k, n, v = 2 * spec.rows + 11, 20, 96
    assert [v // share for share in PRUNED_SHARES] == [1, 12]
    lo, hi = (-128, 128) if signed else (0, 256)
    x = rng.integers(0, 2, (v, k)) * (rng.random((v, k)) < 0.2)  # cannot clip
    rows = rng.permutation(v)[:dense_rows]
    x[rows] = rng.integers(lo, hi, (dense_rows, k)) | (0x7F if signed else 0xFF)
    w = rng.integers(-128, 128, (k, n))
    w[:, :5] = 127  # every cell at its maximum: dense rows clip
    t = tile(k, n, spec)
    x_t = to_tiles(jnp.asarray(x, jnp.int32), t)
    stored = store_weights(jnp.asarray(w, jnp.int32), t, spec)
    need = np.asarray(may_clip(x_t, stored, spec, signed))
    np.testing.assert_array_equal(np.flatnonzero(need), np.sort(rows))
    pruned = faithful_partial_sums(x_t, stored, spec, signed, last_rows=t.rows_used[-1],
                                   prune=True)
    model = faithful_partial_sums(x_t, stored, spec, signed)
    for a, b in zip(pruned, model, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    sat = np.asarray(model[1])
    assert (sat[rows] > 0).all() and (np.delete(sat, rows) == 0).all()


def test_may_clip_hand_worked_bound():
    """4 rows, 2-bit cells, 1-bit DAC, 3-bit ADC (full scale 7), no flipping. Weight
    codes make the rows' largest cells [3, 3, 1, 0]; the bound of a plane is
    sum_r digit_r * max(1, cellmax_r). x = [1, 1, 1, 0]: plane 0 bound 3+3+1 = 7, no
    clip possible; x = [1, 1, 1, 1]: 8 > 7, it may clip (and the unit column, 4, does
    not); x = [0, 0, 2, 2]: plane 1 bound 1 + 1 = 2."""
    from redy_jax.xbar import to_tiles
    from redy_jax.xbar.bit_serial import may_clip

    spec = isaac(rows=4, cols=4, weight_bits=2, act_bits=2, adc_bits=3,
                 flipped_encoding=False)
    # 2-bit weights, biased u = w + 2: codes 1 -> cell 3, -1 -> cell 1, -2 -> cell 0
    w = jnp.array([[1, -2], [-2, 1], [-1, -1], [-2, -2]])
    t = tile(4, 2, spec)
    stored = store_weights(w, t, spec)
    np.testing.assert_array_equal(np.asarray(stored.cells.max(axis=(2, 3)))[0], [3, 3, 1, 0])
    x = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 2, 2]], jnp.int32)
    got = may_clip(to_tiles(x, t), stored, spec, False)
    np.testing.assert_array_equal(np.asarray(got), [False, True, False])


@settings(deadline=None, max_examples=15)
@given(st.integers(0, 2**31 - 1), st.sampled_from([5, 6, 7, 8]), st.booleans())
def test_vectors_may_clip_clears_neither_clip_nor_differ_from_exact(seed, adc_bits, flip):
    """Soundness of the bound on random codes of every density: a vector that
    :func:`may_clip` clears has no saturated conversion in the bit-plane model and its
    partial sums are the exact integer products."""
    from redy_jax.xbar import to_tiles
    from redy_jax.xbar.bit_serial import faithful_partial_sums, may_clip
    from redy_jax.xbar.exact import exact_tile_sums

    rng = np.random.default_rng(seed)
    spec = isaac(adc_bits=adc_bits, flipped_encoding=flip)
    k, n = 150, 24
    x = rng.integers(0, 256, (64, k)) >> rng.integers(0, 9, (64, 1))
    x = x * (rng.random((64, k)) < rng.random((64, 1)))
    w = rng.integers(-128, 128, (k, n))
    t = tile(k, n, spec)
    x_t = to_tiles(jnp.asarray(x, jnp.int32), t)
    stored = store_weights(jnp.asarray(w, jnp.int32), t, spec)
    clear = ~np.asarray(may_clip(x_t, stored, spec, False))
    partial, sat = (np.asarray(a) for a in faithful_partial_sums(x_t, stored, spec, False))
    exact = np.asarray(exact_tile_sums(x_t, stored.codes, 255, 8))
    assert (sat[clear] == 0).all()
    np.testing.assert_array_equal(partial[clear], exact[clear])


@pytest.mark.parametrize("cin,ct,groups,kernel,strides,dilation", [
    (16, 14, 1, (3, 3), (1, 1), (1, 1)),  # one whole tile and a partial one
    (28, 14, 1, (3, 3), (2, 2), (1, 1)),  # two whole tiles
    (5, 14, 2, (3, 3), (1, 1), (2, 2)),   # partial tile only, two groups
    (130, 128, 1, (1, 1), (2, 2), (1, 1)),
])
def test_lowered_tiles_are_channel_major_rows_in_tap_major_order(cin, ct, groups, kernel,
                                                                  strides, dilation):
    """lowered_tiles == the channel-major im2col rows of every group, permuted by
    tap_major_rows and zero-padded per row tile."""
    from redy_jax.xbar import im2col
    from redy_jax.xbar.lowering import lowered_tiles, tap_major_rows

    rng = np.random.default_rng(cin)
    xp = jnp.asarray(rng.integers(1, 256, (2, 9, 8, groups * cin)), jnp.int32)
    taps = kernel[0] * kernel[1]
    r, t = taps * ct, -(-cin // ct)
    got = lowered_tiles(xp, cin, ct, kernel, strides, dilation)
    patches = np.asarray(im2col(xp.reshape(2, 9, 8, groups * cin), kernel, strides,
                                "VALID", dilation))
    b, ho, wo = patches.shape[:3]
    rows = patches.reshape(b, ho, wo, groups, cin * taps)[..., tap_major_rows(cin, taps, ct)]
    want = np.pad(rows, ((0, 0),) * 4 + ((0, t * r - cin * taps),)).reshape(
        b, ho, wo, groups, t, r)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("kernel,strides,padding,dilation", [
    ((3, 3), (1, 1), "SAME", (1, 1)), ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ((5, 5), (1, 1), "VALID", (1, 1)), ((3, 3), (1, 1), "SAME", (2, 2)),
    ((1, 1), (2, 2), "VALID", (1, 1)), ((7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),
])
def test_im2col_matches_xla_patches_channel_major(kernel, strides, padding, dilation):
    from jax import lax

    from redy_jax.xbar import im2col

    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 11, 9, 3)), jnp.float32)
    ref = lax.conv_general_dilated_patches(x, kernel, strides, padding, rhs_dilation=dilation,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = im2col(x, kernel, strides, padding, dilation)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    # Padding takes the code of a real zero.
    p = im2col(x, kernel, strides, padding, dilation, pad_value=7.0)
    if padding != "VALID":
        assert (np.asarray(p) == 7.0).any()
