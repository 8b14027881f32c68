"""One layer through the engine: statistics without im2col, chunked streaming, every
execution strategy against the bit-plane path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redy_jax.hw import isaac
from redy_jax.policy import LeadingZeroSkip, ReDy, Static
from redy_jax.quant import ActQuant, make_quant
from redy_jax.quant.activations import quantize
from redy_jax.xbar import chunks, crossbar_layer, exact, im2col, tile, tile_sums
from redy_jax.xbar.exact import exact_conv
from redy_jax.xbar.statistics import channel_stats, conv_sums
from tests.jaxprs import equations


@settings(max_examples=10, deadline=None)
@given(cin=st.integers(1, 40), k=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2]),
       dil=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]), pad=st.integers(0, 2),
       padded_input=st.booleans(), seed=st.integers(0, 99))
def test_conv_sums_equal_sums_over_im2col_tiles(cin, k, stride, dil, groups, pad,
                                                padded_input, seed):
    """Per-pixel tile sums pooled over the window == the statistics of the im2col row
    tiles they stand for (padding rows excluded), for strides, dilations and groups,
    whether the codes come spatially padded or their statistics are padded (a padding
    pixel holds the code ``pad_code``); the smallest code is that of the padded input."""
    spec = isaac()
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (2, 9, 8, cin * groups))
    pad_code = int(rng.integers(0, 256))
    pads = ((pad, pad), (pad, 0))
    xp = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=pad_code)
    tl = tile(cin * k * k, 4, spec, k * k)
    args = (tl, groups, cin, (k, k), (stride, stride), (dil, dil), spec.act_bits)
    if padded_input:
        got, lowest = conv_sums(jnp.asarray(xp), *args)
    else:
        got, lowest = conv_sums(jnp.asarray(x), *args, pads=pads, pad_code=pad_code)
    assert int(lowest) == xp.min()
    patches = im2col(jnp.asarray(xp), (k, k), (stride, stride), "VALID", (dil, dil))
    v = patches.shape[0] * patches.shape[1] * patches.shape[2]
    for g in range(groups):
        rows = patches.reshape(v, groups, -1)[:, g]
        rows = jnp.pad(rows, ((0, 0), (0, tl.padded_k - tl.k)))
        want = tile_sums(rows.reshape(v, tl.n_row_tiles, -1), tl)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(a[g]), np.asarray(b))


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_channel_stats_one_pass_equals_four_reductions(dtype):
    """The single variadic reduction gives each field of the four separate ones."""
    x = np.random.default_rng(0).integers(-300, 300, (3, 5, 7, 13)).astype(dtype)
    got = channel_stats(jnp.asarray(x))
    want = (x.sum(-1), (x * x).sum(-1), x.max(-1), x.min(-1))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(np.asarray(a), b)


def _conv_case(seed, x_shape, signed):
    """A 3x3 conv layer's float input (ReLU'd unless signed), kernel to 8 outputs, and an
    input quantiser: zero point 128 over [-2, 2] when signed, else [0, 4]."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape).astype(np.float32))
    if not signed:
        x = jax.nn.relu(x)
    w = jnp.asarray(rng.normal(size=(3, 3, x_shape[-1], 8)).astype(np.float32))
    quant = ActQuant(scale=4.0 / 255, zero_point=128 if signed else 0, signed=signed,
                     lo=-2.0 if signed else 0.0, hi=2.0 if signed else 4.0)
    return x, w, quant


POLICIES = {"static": Static(), "lzs": LeadingZeroSkip(),
            "redy": ReDy(thresholds=jnp.array([3.0, 8.0, 20.0, 40.0])),
            "redy_channel": ReDy(thresholds=jnp.array([3.0, 8.0]), granularity="channel")}


@pytest.mark.parametrize("mode", ["exact", "bit_plane"])
@pytest.mark.parametrize("policy,signed", [("static", True), ("lzs", False), ("redy", True),
                                           ("redy_channel", False)])
def test_chunked_streaming_equals_one_pass(monkeypatch, mode, policy, signed):
    """Image chunks (with a remainder chunk) give the same outputs, counts and
    histograms as the whole batch at once."""
    spec = isaac() if mode == "exact" else isaac(flipped_encoding=False)
    x, w, quant = _conv_case(0, (7, 6, 6, 20), signed)
    run = lambda: crossbar_layer(x, w, None, kind="conv", path="l", quant=quant,
                                 policy=POLICIES[policy], spec=spec, mode=mode,
                                 padding="SAME")[:2]
    budgets = (chunks.CHUNK_BYTES, chunks.WINDOW_CHUNK_BYTES)
    for budget in budgets:
        monkeypatch.setitem(budget, jax.default_backend(), None)
    y1, r1 = run()
    per_image = 36 * 2 * 126 * 4  # 6x6 vectors, 2 row tiles of 126 rows, float32
    for budget in budgets:
        monkeypatch.setitem(budget, jax.default_backend(), 3 * per_image)
    y2, r2 = run()  # chunks of 3 images: 3 + 3 + a remainder of 1
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    for a, b in zip(jax.tree_util.tree_leaves(r1), jax.tree_util.tree_leaves(r2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("policy", ["lzs", "redy", "redy_channel"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_exact_paths_equal_the_bit_plane_path(policy, signed, stride):
    """Where the ADC cannot clip (isaac), the fast exact paths — static conv reuse for
    LZS, per-image requantised conv for channel groups, tap-major chunked lowering for
    window groups — give the faithful bit-plane path's outputs and counts bit for bit."""
    x, w, quant = _conv_case(1, (3, 7, 7, 20), signed)
    run = lambda mode: crossbar_layer(x, w, None, kind="conv", path="l", quant=quant,
                                      policy=POLICIES[policy], spec=isaac(), mode=mode,
                                      strides=(stride, stride), padding="SAME")[:2]
    (ye, re), (yf, rf) = run("exact"), run("bit_plane")
    np.testing.assert_array_equal(np.asarray(ye), np.asarray(yf))
    for a, b in zip(jax.tree_util.tree_leaves(re), jax.tree_util.tree_leaves(rf), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("policy", ["static", "redy_channel"])
@pytest.mark.parametrize("case", ["valid", "grouped_dilated", "zero_point_wide",
                                  "sign_bit_strided"])
def test_native_conv_paths_fold_padding_exactly(policy, case):
    """The static and channel-group paths convolve unpadded codes and let the native
    convolution pad (channel groups: the requantised padding value is subtracted before
    and added back as a weight sum). Checked against the faithful bit-plane path, which
    lowers the explicitly padded codes: no padding (VALID), grouped + dilated, and a
    64-channel zero-point layer at its code extremes, where the shifted values need the
    wider exactness bound (and the padding value is far from 0), and two's-complement
    (sign-bit) streaming with a stride, whose effective values and padding value are
    signed."""
    kw, spec = dict(padding="SAME"), isaac()
    if case == "sign_bit_strided":
        spec = isaac(signed_encoding="sign_bit")
        x, w, _ = _conv_case(9, (3, 7, 7, 20), True)
        quant = make_quant(-2.0, 2.0, spec.act_bits, sign_bit=True)
        x = x.at[1].set(-0.3 + 0.5 * x[1])
        kw["strides"] = (2, 2)
    elif case == "valid":
        x, w, quant = _conv_case(5, (3, 7, 7, 20), True)
        kw["padding"] = "VALID"
    elif case == "grouped_dilated":
        x, w, quant = _conv_case(6, (3, 8, 8, 20), True)
        w = w[:, :, :10, :]
        kw.update(groups=2, kernel_dilation=(2, 2))
    else:
        x, w, quant = _conv_case(7, (2, 5, 5, 64), True)
        x, w = x.at[0].set(quant.hi), w.at[..., 0].set(-1.0)
        # image 1 mostly below zero: channel minima well under the zero point, so the
        # padding code requantises with a rounding error (a non-zero padding value)
        x = x.at[1].set(-0.3 + 0.5 * x[1])
    run = lambda mode: crossbar_layer(x, w, None, kind="conv", path="l", quant=quant,
                                      policy=POLICIES[policy], spec=spec, mode=mode,
                                      **kw)[:2]
    (ye, re), (yf, rf) = run("exact"), run("bit_plane")
    np.testing.assert_array_equal(np.asarray(ye), np.asarray(yf))
    for a, b in zip(jax.tree_util.tree_leaves(re), jax.tree_util.tree_leaves(rf), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("bf16", [False, True], ids=["float32 products", "bfloat16 products"])
@pytest.mark.parametrize("case,chunk", [
    ("grouped_dilated", "3 rows"), ("sign_bit_strided", "1 row"),
    ("sign_bit_strided", "2 images"), ("wide_split", "3 rows"), ("12_bit_codes", "2 images"),
    ("zero_point", "2 images"), ("4_bit_codes_grouped", "2 images")])
def test_window_redy_exact_lowering_equals_bit_plane_path(monkeypatch, case, chunk, bf16):
    """The tap-major window-ReDy lowering on the layer shapes it must handle: grouped
    and dilated convs, sign-bit (two's complement) streaming with a stride, 12-bit codes
    (lowered in 2 bytes instead of 1), zero-point codes with per-group offsets (values
    bfloat16 cannot hold: its products stay float32), a layer wide enough (K = 576,
    values up to 255 x 127) that one float32 product over its whole tiles would round,
    so they run in runs of tiles, and 4-bit codes in 2 groups of 9 tiles each, whose
    products would fit every tile but run at most RUN_TILES at a time; chunked by
    blocks of output rows (with a padded last block: 8 or 5 rows in blocks of 3) or by
    images (3 images: chunks of 2, the last padded with a zero image). Outputs and counts
    equal the faithful bit-plane path's, with the products in float32 and, where the
    machine allows them (forced here on any CPU), in bfloat16."""
    monkeypatch.setitem(exact.BF16_PRODUCTS, jax.default_backend(), bf16)
    spec = isaac()
    kw = dict(padding="SAME")
    if case == "grouped_dilated":
        x, w, quant = _conv_case(2, (3, 8, 8, 20), True)
        w = w[:, :, :10, :]  # 2 groups of 10 input channels, 4 outputs each
        kw.update(groups=2, kernel_dilation=(2, 2))
    elif case == "sign_bit_strided":
        spec = isaac(signed_encoding="sign_bit")
        x, w, _ = _conv_case(3, (3, 7, 7, 20), True)
        quant = make_quant(-2.0, 2.0, spec.act_bits, sign_bit=True)
        kw.update(strides=(2, 2))
    elif case == "12_bit_codes":  # codes wider than a byte: lowered as uint16
        spec = isaac(act_bits=12)
        x, w, _ = _conv_case(8, (3, 6, 6, 12), False)
        quant = make_quant(0.0, 3.0, 12)
    elif case == "zero_point":
        x, w, quant = _conv_case(9, (3, 6, 6, 20), True)
    elif case == "4_bit_codes_grouped":  # 2 groups of 120 channels: 9 tiles, 3 runs each
        spec = isaac(act_bits=4)
        x, w, _ = _conv_case(10, (3, 5, 5, 240), False)
        w = w[:, :, :120, :]
        quant = make_quant(0.0, 3.0, 4)
        kw.update(groups=2)
    else:
        x, w, quant = _conv_case(4, (3, 5, 5, 64), False)
        # image 0 at the extremes: code 255 everywhere, column 0's weight codes -127, so
        # interior sums reach 576 * 255 * 127 > 2^24 (odd: float32 would round them)
        x, w = x.at[0].set(quant.hi), w.at[..., 0].set(-1.0)
    # one output row's lowered float32 input: W_out * taps * input channels * 4 bytes
    stride = kw.get("strides", (1, 1))[0]
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)  # SAME padding
    row = wo * 9 * w.shape[2] * kw.get("groups", 1) * 4
    rows = {"1 row": 1, "3 rows": 3, "2 images": 2 * ho}[chunk]
    monkeypatch.setitem(chunks.WINDOW_CHUNK_BYTES, jax.default_backend(), rows * row)
    policy = ReDy(thresholds=jnp.array([2.0, 6.0, 15.0, 30.0]))
    run = lambda mode: crossbar_layer(x, w, None, kind="conv", path="l", quant=quant,
                                      policy=policy, spec=spec, mode=mode, **kw)[:2]
    (ye, re), (yf, rf) = run("exact"), run("bit_plane")
    assert int(np.asarray(re.nt_hist)[:, 1:].sum()) > 0  # some groups did drop LSBs
    np.testing.assert_array_equal(np.asarray(ye), np.asarray(yf))
    for a, b in zip(jax.tree_util.tree_leaves(re), jax.tree_util.tree_leaves(rf), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _int_conv_reference(x, w, groups):
    """VALID, stride 1 conv of int64 NHWC ``x`` with HWIO ``w`` by explicit tap loops."""
    kh, kw, cin_g, cout = w.shape
    b, h, wd, _ = x.shape
    ho, wo, n = h - kh + 1, wd - kw + 1, cout // groups
    out = np.zeros((b, ho, wo, cout), np.int64)
    for g in range(groups):
        xg = x[..., g * cin_g:(g + 1) * cin_g]
        for i in range(kh):
            for j in range(kw):
                out[..., g * n:(g + 1) * n] += np.einsum(
                    "bhwc,co->bhwo", xg[:, i:i + ho, j:j + wo], w[i, j, :, g * n:(g + 1) * n])
    return out


@pytest.mark.parametrize("cin_g,groups,x_max", [(64, 1, 255), (100, 2, 319), (6, 1, 1 << 16)])
def test_exact_int_conv_at_worst_case_magnitudes(cin_g, groups, x_max):
    """The exact int32 conv (channel blocks for 64- and 100-channel layers, the weight
    split when even one channel's taps are too wide for float32) equals int64 integer
    math, including inputs and weights at their extremes, where one float32 conv over
    all rows would round (K * x_max * 128 >= 2^24)."""
    spec = isaac()
    rng = np.random.default_rng(cin_g)
    x = rng.integers(-x_max, x_max + 1, (2, 6, 6, groups * cin_g))
    x[0] = x_max  # every product at its extreme: partial sums reach K * x_max * 128
    w = rng.integers(-128, 128, (3, 3, cin_g, 2 * groups))
    w[..., 0] = -127  # odd products: their float32 sums past 2^24 would round
    got = exact_conv(jnp.asarray(x, jnp.int32), jnp.asarray(w), (1, 1), "VALID", (1, 1),
                     groups, x_max, spec.weight_bits)
    np.testing.assert_array_equal(np.asarray(got), _int_conv_reference(x, w, groups))


def _equations(jaxpr) -> int:
    """Equations of a jaxpr, those of its sub-jaxprs (jit, map, cond) included."""
    return sum(1 for _ in equations(jaxpr))


@pytest.mark.parametrize("mode", ["exact", "faithful", "bit_plane"])
@pytest.mark.parametrize("policy", ["static", "lzs", "redy", "redy_channel"])
def test_traced_layer_has_no_python_loop_over_images_windows_tiles_or_planes(
        monkeypatch, policy, mode):
    """The traced program of a conv layer has as many equations for 5 images as for 1,
    for 13x13 images as for 6x6, for 4 row tiles as for 3 (44 vs 30 input channels)
    and for 4 DAC digit planes as for 8: images, windows, tiles and bit-planes are array
    axes, not Python loops (whole batch per chunk, so chunking adds no branch). The one
    exception is bounded: window ReDy's exact product runs at most ``RUN_TILES`` tiles
    in one operand, each value selecting its tile's constants (one select per tile and
    requantisation constant), and adds one product per further run."""
    monkeypatch.setitem(chunks.CHUNK_BYTES, jax.default_backend(), None)
    monkeypatch.setitem(chunks.WINDOW_CHUNK_BYTES, jax.default_backend(), None)

    def equations(batch=1, size=6, cin=16, spec=None):
        x, w, quant = _conv_case(0, (batch, size, size, cin), False)
        fn = lambda x, w: crossbar_layer(
            x, w, None, kind="conv", path="l", quant=quant, policy=POLICIES[policy],
            spec=spec or isaac(adc_bits=10), mode=mode, padding="SAME")[0]
        return _equations(jax.make_jaxpr(fn)(x, w).jaxpr)

    base = equations()
    assert equations(batch=5) == base
    assert equations(size=13) == base
    # 126-row tiles of 14 channels + a partial tile of 2: 3 vs 4 row tiles
    if (policy, mode) == ("redy", "exact"):
        # 2, 3, 4 tiles in one run: each further tile adds the same select per constant
        per_tile = equations(cin=44) - equations(cin=30)
        assert per_tile == equations(cin=30) - equations(cin=16)
        assert 0 < per_tile <= 8 * 3  # 3 constants of unsigned codes without offsets
    else:
        assert equations(cin=30) == equations(cin=44)
    assert equations(spec=isaac(dac_bits=2, adc_bits=10)) == base  # 4 planes, not 8


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("policy,signed,mode", [
    ("static", False, "exact"), ("lzs", False, "exact"), ("redy", True, "exact"),
    ("redy", False, "faithful"), ("redy_channel", False, "exact")])
@pytest.mark.parametrize("kind", ["conv", "dense", "strided_1x1"])
def test_nonfinite_inputs_are_flagged(bad, policy, signed, mode, kind):
    """The layer's record flags NaN and +-inf anywhere in its input (quantisation alone
    would clip inf to a valid code), and only those: for every policy (a separate check,
    or the statistics' per-pixel minimum of the marked codes), for dense layers, and for
    a pixel that no window of a strided 1x1 convolution reads."""
    x, w, quant = _conv_case(0, (2, 6, 6, 20), signed)
    if bad is not None:
        x = x.at[1, 3, 3, 17].set(bad)  # (3, 3): skipped by a stride-2 1x1 kernel
    spec = isaac() if mode == "exact" else isaac(flipped_encoding=False)
    kw = dict(path="l", quant=quant, policy=POLICIES[policy], spec=spec, mode=mode)
    if kind == "dense":
        args = dict(x=x.reshape(2, -1), kernel=jnp.ones((6 * 6 * 20, 8)), kind="dense")
    elif kind == "strided_1x1":
        args = dict(x=x, kernel=w[:1, :1], kind="conv", strides=(2, 2))
    else:
        args = dict(x=x, kernel=w, kind="conv", padding="SAME")
    y, rec = crossbar_layer(bias=None, **args, **kw)[:2]
    assert bool(rec.nonfinite) == (bad is not None)
    if bad is None:
        assert np.isfinite(np.asarray(y)).all()


def test_quantize_marks_nonfinite_quotients():
    """``nonfinite_code`` marks NaN/inf activations, and those whose quotient by the
    scale overflows float32 (documented: no finite code stands for them either); every
    other code is quantize's own."""
    quant = ActQuant(scale=0.5, zero_point=3, lo=-1.5, hi=126.0)
    x = jnp.asarray([0.0, -1.0, 2.2, 1e3, -1e3, np.nan, np.inf, -np.inf, 3e38, 1e38],
                    jnp.float32)
    got = np.asarray(quantize(x, quant, nonfinite_code=-(2**30)))
    plain = np.asarray(quantize(x, quant))
    marked = np.array([False] * 5 + [True, True, True, True, False])
    assert (got[marked] == -(2**30)).all()
    np.testing.assert_array_equal(got[~marked], plain[~marked])
    np.testing.assert_array_equal(plain[[0, 1, 2, 3, 4, 9]], [3, 1, 7, 255, 0, 255])
