"""ReDy grouping, statistics and precision selection."""

import functools
import math
from typing import NamedTuple

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redy_jax.energy import chip_energy_pj
from redy_jax.hw import isaac
from redy_jax.policy import (
    LayerContext,
    LeadingZeroSkip,
    ReDy,
    Static,
    lossless,
    thresholds_from_scale,
)
from redy_jax.xbar import (
    Plan,
    run_tiles,
    store_weights,
    streamed_codes,
    tile,
    tile_sums,
    to_tiles,
)

SPEC = isaac()


class Selection(NamedTuple):
    codes: jnp.ndarray
    planes: jnp.ndarray
    shifts: jnp.ndarray | None
    unit_ops: jnp.ndarray | None
    offsets: jnp.ndarray | None
    plan: Plan


def select(policy, xt, ctx) -> Selection:
    """A policy's plan for tiled codes (V, T, R) and the codes it streams."""
    plan = policy.plan(tile_sums(xt, ctx.tiling) if policy.statistics else None, ctx)
    planes = plan.planes
    if planes is None:
        planes = jnp.full(xt.shape[:2], ctx.spec.planes, jnp.int32)
    return Selection(streamed_codes(xt, plan, ctx.sign_bit), planes, plan.shifts,
                     plan.unit_ops, plan.offsets, plan)


@functools.partial(jax.jit, static_argnames=("ctx", "mode"))
def _run(policy, xt, w_codes, ctx, mode="exact"):
    """select + crossbar run of one layer, jitted (ctx static, policy a pytree)."""
    sel = select(policy, xt, ctx)
    stored = store_weights(w_codes, ctx.tiling, SPEC)
    y, c = run_tiles(sel.codes, stored, ctx.tiling, SPEC, signed=False, mode=mode,
                     plan=sel.plan, zero_point=ctx.zero_point)
    if sel.offsets is not None:
        y = y + jnp.einsum("vt,tn->vn", sel.offsets, stored.codes.sum(axis=1))
    return sel, y, c


_select = jax.jit(select, static_argnums=2)


def _ctx(k, n, *, taps=1, images=1, m=1, zp=0):
    return LayerContext(path="l", kind="conv", tiling=tile(k, n, SPEC, taps), spec=SPEC,
                        images=images, vectors_per_image=m, signed=zp != 0, sign_bit=False)


def test_hand_worked_window_group():
    """x = [200, 100, 50, 10]: mean 90, std sqrt(5050) = 71.1 exceeds thresholds [10, 40]
    -> t = 2; max 200 -> round(200 / 4) = 50 needs n = 6 bits; codes round(x / 4) =
    [50, 25, 13, 3] (half up: 12.5 -> 13); 6 planes on 1 crossbar, 2 outputs."""
    ctx = _ctx(4, 2)
    x = jnp.array([[200, 100, 50, 10]], jnp.int32)
    sel = select(ReDy(thresholds=jnp.array([10.0, 40.0])), to_tiles(x, ctx.tiling), ctx)
    assert int(sel.shifts[0, 0]) == 2 and int(sel.planes[0, 0]) == 6
    np.testing.assert_array_equal(np.asarray(sel.codes[0, 0]), [50, 25, 13, 3])
    assert sel.offsets is None and int(sel.unit_ops[0]) == 4
    w = jnp.array([[1, -2], [3, 0], [0, 1], [-1, 1]], jnp.int32)
    stored = store_weights(w, ctx.tiling, SPEC)
    y, counts = run_tiles(sel.codes, stored, ctx.tiling, SPEC, signed=False, mode="bit_plane",
                          plan=sel.plan)
    # The crossbar computes 4 * ([50, 25, 13, 3] @ w) exactly.
    np.testing.assert_array_equal(np.asarray(y[0]), 4 * (np.array([50, 25, 13, 3]) @ np.asarray(w)))
    c = counts.total()
    assert (c["xbar_reads"], c["adc_conversions"], c["dac_drives"]) == (6, 6 * (2 * 4 + 1), 24)
    assert (c["cycles"], c["streamed_bits"], c["redy_unit_ops"]) == (6, 24, 4)
    assert c["meta_bits"] == 6 and c["xbar_vectors"] == 1  # (n, t) to the one crossbar


def test_hand_worked_zero_point_group_streams_offset_codes():
    """Zero-point layer: codes [130, 128, 126, 129] stream q - min = [4, 2, 0, 3]
    (3 bits, t = 0); the min 126 is restored digitally."""
    ctx = _ctx(4, 1, zp=128)
    x = jnp.array([[130, 128, 126, 129]], jnp.int32)
    sel = select(ReDy(thresholds=jnp.array([50.0])), to_tiles(x, ctx.tiling), ctx)
    np.testing.assert_array_equal(np.asarray(sel.codes[0, 0]), [4, 2, 0, 3])
    assert int(sel.offsets[0, 0]) == 126 and int(sel.planes[0, 0]) == 3
    assert int(sel.shifts[0, 0]) == 0


def test_channel_granularity_shares_one_precision_per_image_and_tile():
    ctx = _ctx(8, 1, images=2, m=3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 40, (6, 8)), jnp.int32).at[4, 0].set(250)
    sel = select(ReDy(thresholds=jnp.array([1e9]), granularity="channel"),
                 to_tiles(x, ctx.tiling), ctx)
    planes = np.asarray(sel.planes[:, 0])
    assert len(set(planes[:3])) == 1 and len(set(planes[3:])) == 1
    assert planes[3] == 8 and planes[0] == 6  # image 2 holds a 250; image 1 max < 40


def test_padding_rows_do_not_enter_statistics():
    ctx = _ctx(130, 1)  # second row tile has 2 real rows + 126 padding rows
    x = jnp.full((1, 130), 100, jnp.int32)
    sel = select(ReDy(thresholds=jnp.array([0.5])), to_tiles(x, ctx.tiling), ctx)
    np.testing.assert_array_equal(np.asarray(sel.shifts[0]), [0, 0])  # std 0 in both tiles


@st.composite
def windows(draw):
    # A few shapes (each compiles once): below, at and across row-tile boundaries.
    k = draw(st.sampled_from([1, 9, 128, 130, 300]))
    v = 3
    x = draw(hnp.arrays(np.int32, (v, k), elements=st.integers(0, 255)))
    zp = draw(st.sampled_from([0, 0, 97]))
    thr = np.sort(draw(hnp.arrays(np.float32, (4,), elements=st.floats(0, 120, width=32))))
    return x, zp, thr


@given(windows(), st.sampled_from(["window", "channel"]))
def test_n_and_t_stay_in_range(problem, granularity):
    x, zp, thr = problem
    ctx = _ctx(x.shape[1], 3, zp=zp, images=1, m=x.shape[0])
    p = ReDy(thresholds=jnp.asarray(thr), granularity=granularity, n_min=2)
    sel = _select(p, to_tiles(jnp.asarray(x), ctx.tiling), ctx)
    assert int(sel.planes.min()) >= 2 and int(sel.planes.max()) <= 8
    assert int(sel.shifts.min()) >= 0 and int(sel.shifts.max()) <= 4
    assert int(sel.codes.min()) >= 0
    assert bool(jnp.all(sel.codes < jnp.left_shift(1, sel.planes)[..., None]))


@given(windows(), st.floats(0.05, 0.95))
def test_energy_never_increases_as_thresholds_drop_more_bits(problem, factor):
    x, zp, thr = problem
    ctx = _ctx(x.shape[1], 3, zp=zp)
    xt = to_tiles(jnp.asarray(x), ctx.tiling)
    w = jnp.ones((x.shape[1], 3), jnp.int32)

    def energy(t):
        _, _, c = _run(ReDy(thresholds=jnp.asarray(t)), xt, w, ctx)
        return chip_energy_pj(c.total(), SPEC)

    assert energy(thr * factor) <= energy(thr) + 1e-6


@given(windows())
def test_lossless_redy_reproduces_static_outputs(problem):
    x, zp, _ = problem
    ctx = _ctx(x.shape[1], 5, zp=zp)
    xt = to_tiles(jnp.asarray(x), ctx.tiling)
    rng = np.random.default_rng(x.shape[1])
    w = jnp.asarray(rng.integers(-127, 128, (x.shape[1], 5)), jnp.int32)

    def run(policy):
        _, y, c = _run(policy, xt, w, ctx)
        return np.asarray(y), c.total()

    ys, cs = run(Static())
    yl, cl = run(lossless())
    yz, cz = run(LeadingZeroSkip())
    np.testing.assert_array_equal(yl, ys)
    np.testing.assert_array_equal(yz, ys)
    assert cl["adc_conversions"] <= cs["adc_conversions"]


@settings(max_examples=30, deadline=None)
@given(windows(), st.sampled_from(["window", "channel"]))
def test_redy_never_streams_more_planes_than_leading_zero_skipping(problem, granularity):
    """Per group, whatever the thresholds: a shift never needs more bits than the codes
    it shifts, and an all-zero group streams nothing (n_min = 0) under both."""
    x, zp, thr = problem
    x = x.copy()
    x[0] = 0  # an all-zero vector
    ctx = _ctx(x.shape[1], 3, zp=zp, images=1, m=x.shape[0])
    xt = to_tiles(jnp.asarray(x), ctx.tiling)
    redy = _select(ReDy(thresholds=jnp.asarray(thr), granularity=granularity), xt, ctx)
    lzs = _select(LeadingZeroSkip(granularity=granularity), xt, ctx)
    assert bool(jnp.all(redy.planes <= lzs.planes))
    if granularity == "window" and zp == 0:
        assert int(lzs.planes[0].max()) == 0 and int(redy.planes[0].max()) == 0


@settings(max_examples=30, deadline=None)
@given(windows(), st.sampled_from(["window", "channel"]))
def test_redy_with_infinite_thresholds_is_leading_zero_skipping_bit_for_bit(problem,
                                                                            granularity):
    """No LSB dropped, no group offset: the same planes, outputs and crossbar events as
    leading-zero skipping (only the unit doing the work differs: ReDy's statistics unit
    vs the leading-zero detector)."""
    x, zp, _ = problem
    ctx = _ctx(x.shape[1], 3, zp=zp, images=1, m=x.shape[0])
    xt = to_tiles(jnp.asarray(x), ctx.tiling)
    w = jnp.asarray(np.random.default_rng(0).integers(-127, 128, (x.shape[1], 3)), jnp.int32)
    redy = ReDy(thresholds=jnp.full((4,), jnp.inf), granularity=granularity, offsets=False)
    sr, yr, cr = _run(redy, xt, w, ctx)
    sl, yl, cl = _run(LeadingZeroSkip(granularity=granularity), xt, w, ctx)
    np.testing.assert_array_equal(np.asarray(sr.planes), np.asarray(sl.planes))
    np.testing.assert_array_equal(np.asarray(sr.codes), np.asarray(sl.codes))
    np.testing.assert_array_equal(np.asarray(yr), np.asarray(yl))
    tr, tl = cr.total(), cl.total()
    assert tr["redy_unit_ops"] == tl["lzs_unit_ops"] > 0
    for k in tr:
        if k not in ("redy_unit_ops", "lzs_unit_ops", "meta_bits"):
            assert tr[k] == tl[k], k
    assert tr["meta_bits"] == 2 * tl["meta_bits"]  # (n, t) vs n


def test_thresholds_from_scale_ascend():
    t = thresholds_from_scale(2.0)
    np.testing.assert_allclose(t, [1, 2, 4, 8])
    assert np.all(np.diff(thresholds_from_scale(0.3)) > 0)


def test_invalid_policy_config_raises():
    with pytest.raises(ValueError, match="granularity"):
        ReDy(thresholds=jnp.zeros(2), granularity="pixel")
    with pytest.raises(ValueError, match="statistic"):
        ReDy(thresholds=jnp.zeros(2), statistic="median")
    with pytest.raises(ValueError, match="n_min"):
        ReDy(thresholds=jnp.zeros(2), n_min=-1)
    with pytest.raises(ValueError, match="clip_k"):
        ReDy(thresholds=jnp.zeros(2), clip_k=0.0)
    assert math.isinf(ReDy(thresholds=jnp.zeros(2)).clip_k)
