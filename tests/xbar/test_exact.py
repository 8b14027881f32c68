"""The float32 exactness rule: exact products at worst-case magnitudes, and HIGHEST
precision on every product of every crossbar execution path (TF32 would break it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from redy_jax.hw import isaac
from redy_jax.policy import LeadingZeroSkip, ReDy, Static
from redy_jax.quant import ActQuant
from redy_jax.xbar import crossbar_layer, crossbar_matmul, exact
from redy_jax.xbar.exact import (
    F32_EXACT,
    code_bound,
    code_dtype,
    even_blocks,
    exact_matmul,
    exact_rows,
    exact_weight_parts,
    product_dtype,
)
from redy_jax.xbar.lowering import tile_piece_ranges, tile_runs
from redy_jax.xbar.plan import effective_values, requant_constants, requantize
from tests.jaxprs import equations


@pytest.mark.parametrize("k,x_max,weight_bits", [(576, 255, 8), (2000, 383, 8), (40, 1024, 16),
                                                 (100, 600, 16)])
def test_exact_matmul_equals_int64_at_extreme_magnitudes(k, x_max, weight_bits):
    """Whole-weight row blocks (8-bit), and weight parts when not even one row of whole
    16-bit weights fits (x_max * 2^15 >= 2^24): equal to int64 math where one float32
    product would round (every product at its odd extreme)."""
    rng = np.random.default_rng(k)
    x = rng.integers(0, x_max + 1, (3, k))
    x[0] = x_max
    wmax = (1 << (weight_bits - 1)) - 1
    w = rng.integers(-wmax, wmax + 1, (k, 4))
    w[:, 0] = -wmax
    got = exact_matmul(jnp.asarray(x, jnp.int32), jnp.asarray(w, jnp.int32), x_max, weight_bits)
    want = x @ w
    assert np.abs(want).max() < 2**31  # the int32 result itself fits
    np.testing.assert_array_equal(np.asarray(got), want)
    assert k * x_max * wmax >= F32_EXACT  # one float32 product over all rows would round


@pytest.mark.parametrize("operand", [jnp.float32, jnp.bfloat16])
def test_exact_matmul_in_bfloat16_equals_int64(operand):
    """bfloat16 operands (every value of at most 8 significant bits: codes up to 255,
    requantised values q' 2^t, 8-bit weights) summed in float32 give the int64 product,
    row blocks included (K = 1100 > exact_rows(319, 8) = 410)."""
    rng = np.random.default_rng(3)
    k = 1100
    q = rng.integers(0, 256, (5, k))
    t = rng.integers(0, 3, (5, k))
    x = (q >> t) << t  # what a requantised group multiplies (< 2^8 significant)
    x[0] = 255
    w = rng.integers(-127, 128, (k, 6))
    w[:, 0] = -127
    got = exact_matmul(jnp.asarray(x, jnp.int32), jnp.asarray(w, jnp.int32), 319, 8, operand)
    np.testing.assert_array_equal(np.asarray(got), x @ w)


def test_product_dtype_takes_bfloat16_only_where_every_value_fits(monkeypatch):
    backend = jax.default_backend()
    monkeypatch.setitem(exact.BF16_PRODUCTS, backend, True)
    assert product_dtype(8, 8) == jnp.bfloat16
    assert product_dtype(9, 8) == jnp.float32  # 9 significant bits: bfloat16 would round
    assert product_dtype(8, 9) == jnp.float32  # weights up to 256 in magnitude
    assert product_dtype(None, 8) == jnp.float32  # values without the bound (offsets)
    monkeypatch.setitem(exact.BF16_PRODUCTS, backend, False)
    assert product_dtype(8, 8) == jnp.float32
    assert isinstance(exact.native_bf16_cpu(), bool)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), t=st.integers(0, 7), sign_bit=st.booleans(),
       offsets=st.booleans(), seed=st.integers(0, 999))
def test_requant_constants_give_the_shift_rule(bits, t, sign_bit, offsets, seed):
    """The integer mask form ``clip((x - off + 2^(t-1)) & -2^t, lo 2^t, hi 2^t) + off``
    (and its unsigned, offset-free 3-constant form) equals ``(requantize(x) << t) + off``
    for every code of the layer (8-bit, unsigned or two's complement)."""
    rng = np.random.default_rng(seed)
    x = np.arange(-128, 128) if sign_bit else np.arange(256)
    x = jnp.asarray(x.reshape(1, 1, -1), jnp.int32)
    off = jnp.asarray([[int(rng.integers(0, 60))]], jnp.int32) if offsets else None
    tt, nn = jnp.asarray([[t]], jnp.int32), jnp.asarray([[bits]], jnp.int32)
    want = requantize(x, jnp.zeros_like(tt) if off is None else off, tt, nn, sign_bit) << t
    if off is not None:
        want = want + off[..., None]
    consts = requant_constants(off, tt, nn, sign_bit)
    assert len(consts) == (3 if off is None and not sign_bit else 5)
    got = effective_values(x, tuple(c[..., None] for c in consts))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_tile_pieces_of_runs_keep_the_row_order():
    """Whole tiles as one piece, then the partial tile; over the runs of
    :func:`tile_runs`, the same channels in the same order (so the tap-major weight rows
    still line up) and no run's whole-tile piece longer than the run."""
    assert tile_piece_ranges(64, 14) == [(0, 4, 14), (4, 5, 8)]
    assert tile_piece_ranges(70, 14) == [(0, 5, 14)]
    assert tile_piece_ranges(5, 14) == [(0, 1, 5)]
    for cin, ct, m in [(64, 14, 3), (100, 7, 4), (5, 14, 1), (70, 14, 2)]:
        runs = tile_runs(cin, ct, 9, 10**6, m)
        pieces = [p for r in runs for p in tile_piece_ranges(cin, ct, tiles=r)]
        chans = [c for lo, hi, wd in pieces for c in range(lo * ct, lo * ct + (hi - lo) * wd)]
        assert chans == list(range(cin))
        assert all(hi - lo <= m for lo, hi, wd in pieces)


def test_tile_piece_ranges_of_some_tiles():
    assert tile_piece_ranges(64, 14, tiles=(2, 5)) == [(2, 4, 14), (4, 5, 8)]
    assert tile_piece_ranges(64, 14, tiles=(0, 2)) == [(0, 2, 14)]
    assert tile_piece_ranges(64, 14, tiles=(4, 5)) == [(4, 5, 8)]
    assert tile_piece_ranges(64, 14, tiles=(0, 5)) == tile_piece_ranges(64, 14)


def _partitions(n):
    """Every split of tiles 0..n-1 into contiguous runs, as run bounds."""
    for cuts in range(1 << (n - 1)):
        edges = [0] + [k for k in range(1, n) if cuts >> (k - 1) & 1] + [n]
        yield list(zip(edges, edges[1:], strict=False))


@settings(max_examples=150, deadline=None)
@given(cin=st.integers(1, 120), ct=st.integers(1, 16), taps=st.sampled_from([1, 4, 9]),
       max_rows=st.integers(1, 600), max_tiles=st.sampled_from([None, 1, 2, 4]))
def test_tile_runs_are_the_fewest_then_most_even_runs(cin, ct, taps, max_rows, max_tiles):
    """Against every contiguous split (up to 10 tiles): the runs cover the tiles in
    order, keep the row and tile limits, are the fewest that do, and among those have
    the smallest largest run; tiles alone when one whole tile does not fit."""
    sizes = [taps * min(ct, cin - k * ct) for k in range(-(-cin // ct))]
    runs = tile_runs(cin, ct, taps, max_rows, max_tiles)
    assert [k for lo, hi in runs for k in range(lo, hi)] == list(range(len(sizes)))
    if max(sizes) > max_rows:
        assert runs == [(k, k + 1) for k in range(len(sizes))]
        return
    rows = lambda r: sum(sizes[r[0]:r[1]])
    ok = lambda p: all(rows(r) <= max_rows and r[1] - r[0] <= (max_tiles or len(sizes))
                       for r in p)
    assert ok(runs)
    if len(sizes) <= 10:
        best = min((len(p), max(map(rows, p))) for p in _partitions(len(sizes)) if ok(p))
        assert (len(runs), max(map(rows, runs))) == best


def test_split_helpers():
    assert exact_rows(255, 8) == 514  # 514 * 255 * 128 < 2^24 <= 515 * 255 * 128
    assert exact_rows(65535, 16) == 0
    assert even_blocks(10, 4) == [(0, 3), (3, 6), (6, 10)]
    assert code_bound(8, False) == 255 and code_bound(8, True) == 128
    assert code_bound(8, False, requantized=True) == 255 + 64
    w = jnp.arange(-300, 300, dtype=jnp.int32)
    parts = exact_weight_parts(w, 1000, 255, 10)
    assert len(parts) > 1
    np.testing.assert_array_equal(np.asarray(sum(parts)), np.asarray(w))


@pytest.mark.parametrize("sign_bit", [False, True])
def test_code_dtype_holds_every_streamed_code_of_every_width(sign_bit):
    """The narrow dtype window ReDy lowers codes in holds every code the spec can
    stream (a wider code would wrap silently), and is the narrowest that does for 8-bit
    codes (1 byte: the point of it)."""
    for act_bits in range(1, 17):
        lo, hi = ((-(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1) if sign_bit
                  else (0, (1 << act_bits) - 1))
        dt = code_dtype(act_bits, sign_bit)
        codes = np.array([lo, hi, (lo + hi) // 2])
        np.testing.assert_array_equal(np.asarray(jnp.asarray(codes, jnp.int32).astype(dt),
                                                 np.int64), codes)
    assert jnp.dtype(code_dtype(8, sign_bit)).itemsize == 1
    assert jnp.dtype(code_dtype(9, sign_bit)).itemsize == 2


def _products(jaxpr):
    """(primitive, precision) of every dot_general / conv in a jaxpr and its sub-jaxprs."""
    return [(e.primitive.name, e.params.get("precision")) for e in equations(jaxpr)
            if e.primitive.name in ("dot_general", "conv_general_dilated")]


def _is_highest(precision) -> bool:
    if precision is None:
        return False
    ps = precision if isinstance(precision, tuple) else (precision,)
    return all(p == lax.Precision.HIGHEST for p in ps)


QUANT = ActQuant(scale=4.0 / 255, zero_point=128, signed=True, lo=-2.0, hi=2.0)
THR = jnp.array([2.0, 6.0, 15.0, 30.0])
PATHS = {  # every strategy of the layer engine
    "static conv": (Static(), "conv", "exact"),
    "lzs conv (static conv reuse)": (LeadingZeroSkip(), "conv", "exact"),
    "channel conv": (ReDy(thresholds=THR, granularity="channel"), "conv", "exact"),
    "window conv": (ReDy(thresholds=THR), "conv", "exact"),
    "relaxed (tiled, exact)": (ReDy(thresholds=THR, temperature=0.5), "conv", "exact"),
    "dense (tiled, exact)": (ReDy(thresholds=THR), "dense", "exact"),
    "faithful": (ReDy(thresholds=THR), "conv", "faithful"),
    "bit-plane model": (ReDy(thresholds=THR), "conv", "bit_plane"),
    "bit-plane model dense static": (Static(), "dense", "bit_plane"),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_product_of_every_path_runs_at_highest_precision(path):
    policy, kind, mode = PATHS[path]
    rng = np.random.default_rng(0)
    if kind == "conv":
        x = jnp.asarray(rng.normal(size=(2, 6, 6, 20)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(3, 3, 20, 8)), jnp.float32)
        kw = dict(padding="SAME")
    else:
        x = jnp.asarray(rng.normal(size=(2, 150)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(150, 8)), jnp.float32)
        kw = {}
    fn = lambda x, w: crossbar_layer(x, w, None, kind=kind, path="l", quant=QUANT,
                                     policy=policy, spec=isaac(), mode=mode, ste=True, **kw)[0]
    products = _products(jax.make_jaxpr(fn)(x, w).jaxpr)
    assert products, "no product found: the walk is broken"
    bad = [p for p in products if not _is_highest(p[1])]
    assert not bad, f"{path}: products below HIGHEST precision: {bad}"


@pytest.mark.parametrize("mode", ["exact", "faithful", "bit_plane"])
def test_crossbar_matmul_products_run_at_highest_precision(mode):
    x = jnp.ones((2, 300), jnp.int32)
    w = jnp.ones((300, 5), jnp.int32)
    fn = lambda x, w: crossbar_matmul(x, w, isaac(), mode=mode)[0]
    products = _products(jax.make_jaxpr(fn)(x, w).jaxpr)
    assert products and all(_is_highest(p[1]) for p in products), products
