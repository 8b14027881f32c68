"""Builds and registers the prototype kernel (``window_kernel.cc``) and wraps it with the
signature of :func:`redy_jax.xbar.window_conv.window_conv` (groups == 1 only)."""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from redy_jax.xbar.exact import F32_EXACT, code_bound
from redy_jax.xbar.lowering import tap_major_rows, tile_piece_ranges
from redy_jax.xbar.plan import affine

HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC",
         "-std=c++17", "-w"]


_LOADED: list = []  # the loaded libraries, kept alive for the process


def build_and_register(compiler: str = "c++") -> None:
    """Compiles ``window_kernel.cc`` into a shared library in a temporary folder (removed
    once loaded), loads it and registers it as the XLA:CPU FFI target
    ``redy_window_conv``."""
    with tempfile.TemporaryDirectory(prefix="redy_native_") as tmp:
        lib = Path(tmp) / "libwindow.so"
        subprocess.run([compiler, *FLAGS, f"-I{jax.ffi.include_dir()}",
                        str(HERE / "window_kernel.cc"), "-o", str(lib)], check=True)
        handle = ctypes.CDLL(str(lib))  # stays loaded after its file is removed
    _LOADED.append(handle)
    jax.ffi.register_ffi_target("redy_window_conv", jax.ffi.pycapsule(handle.RedyWindowConv),
                                platform="cpu")


def window_conv(xs, plan, w_codes, tiling, shape, zero_point, sign_bit, act_bits, weight_bits):
    """The fused kernel in place of redy_jax's lowered product: same operands, same
    int32 outputs (B, Ho, Wo, Cout)."""
    b = xs.shape[0]
    (kh, kw), cin_g, cout = shape.kernel, shape.cin_g, shape.cout
    if shape.groups != 1:
        raise ValueError("the prototype kernel handles groups == 1 only")
    (ho, wo), taps = shape.out_hw, shape.taps
    t, ct = tiling.n_row_tiles, tiling.rows_per_tile // taps
    # each tile's float32 sum must stay exact (below 2^24)
    if taps * ct * code_bound(act_bits, sign_bit, True) << (weight_bits - 1) >= F32_EXACT:
        raise ValueError("a row tile's sum would not be exact in float32")
    aff = affine(plan.offsets, plan.shifts, plan.bits, sign_bit)
    if len(aff) == 3:  # unsigned, offset-free: the general form with off = lo = 0
        inv, step, top = aff
        zero = jnp.zeros_like(inv)
        aff = (zero, inv, zero, top / step, step)
    zp = jnp.asarray(0 if sign_bit else zero_point, jnp.float32)
    aff = (*aff, aff[0] - zp)  # (off, inv, lo, hi, step, off - zero point)
    prm = jnp.stack([jnp.broadcast_to(a, aff[1].shape).reshape(b, ho, wo, t) for a in aff],
                    axis=-1)
    npad = -(-cout // 16) * 16
    w = w_codes[tap_major_rows(cin_g, taps, ct)].astype(jnp.float32)
    w = jnp.pad(w, ((0, 0), (0, npad - cout)))
    xf = xs.astype(jnp.float32)
    # every tile's channels as one contiguous (B, Hp, Wp, width) block, tile after tile
    xt = jnp.concatenate([xf[..., lo * ct + i * width:lo * ct + (i + 1) * width].reshape(-1)
                          for lo, hi, width in tile_piece_ranges(cin_g, ct)
                          for i in range(hi - lo)]).reshape(xf.shape)
    call = jax.ffi.ffi_call("redy_window_conv",
                            jax.ShapeDtypeStruct((b, ho, wo, cout), jnp.int32),
                            vmap_method="sequential")
    return call(xt, prm, w, kh=np.int64(kh), kw=np.int64(kw), sh=np.int64(shape.strides[0]),
                sw=np.int64(shape.strides[1]), dh=np.int64(shape.dilation[0]),
                dw=np.int64(shape.dilation[1]), ct=np.int64(ct))
