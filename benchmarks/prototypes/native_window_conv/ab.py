"""A/B of the prototype fused kernel (``window_kernel.cc``) against redy_jax's
window-ReDy product, in one run: ResNet-20's three layer shapes (250 images, random
codes and window constants; outputs asserted bit-identical) and the whole exact
window-ReDy pass of the shipped ResNet-20 on 250 Fashion-MNIST test images (ratio to
the float pass; each variant in its own process, alternated).

    PYTHONPATH=. python benchmarks/prototypes/native_window_conv/ab.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # native.py; benchmarks/timing.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import native  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from timing import best_times  # noqa: E402


def layer_case(hw: int, c: int, repeats: int = 7, b: int = 250) -> None:
    """One 3x3 layer of ``c`` channels on ``hw`` x ``hw`` maps: outputs asserted equal,
    then the float convolution, redy_jax's lowered product and the fused kernel timed
    in interleaved rounds."""
    from redy_jax.hw import isaac
    from redy_jax.xbar.conv import ConvShape
    from redy_jax.xbar.layout import tile
    from redy_jax.xbar.plan import Plan
    from redy_jax.xbar.window_conv import window_conv

    spec, rng = isaac(), np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (b, hw + 2, hw + 2, c)), jnp.int32)
    w = jnp.asarray(rng.integers(-128, 128, (9 * c, c)), jnp.int32)
    tl = tile(9 * c, c, spec, 9)
    v, t = b * hw * hw, tl.n_row_tiles
    shape = ConvShape((3, 3), c, c, 1, (1, 1), (1, 1), ((1, 1), (1, 1)), (hw, hw))
    plan = Plan(planes=jnp.full((1, v, t), 8), offsets=None,
                shifts=jnp.asarray(rng.integers(0, 3, (1, v, t)), jnp.int32),
                bits=jnp.asarray(rng.integers(3, 9, (1, v, t)), jnp.int32))
    xla = jax.jit(lambda x, w, p: window_conv(x, p, w, tl, shape, 0, False, 8, 8))
    fused = jax.jit(lambda x, w, p: native.window_conv(x, p, w, tl, shape, 0, False, 8, 8))
    np.testing.assert_array_equal(np.asarray(xla(x, w, plan)), np.asarray(fused(x, w, plan)))
    xf = jax.random.normal(jax.random.PRNGKey(0), (b, hw, hw, c))
    wf = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, c))
    conv = jax.jit(lambda a, k: lax.conv_general_dilated(
        a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    t_ = best_times({"float conv": lambda: conv(xf, wf),
                     "lowered (redy_jax)": lambda: xla(x, w, plan),
                     "fused kernel": lambda: fused(x, w, plan)}, repeats)
    print(f"{hw}x{hw}x{c}, {b} images (bit-identical): " + ", ".join(
        f"{k} {s * 1e3:.1f} ms" for k, s in t_.items()), flush=True)


def model(variant: str, repeats: int = 7) -> None:
    """Ratio of the exact window-ReDy pass to the float pass, ResNet-20, 250 images."""
    import redy_jax.xbar.layer as layer
    from redy_jax import data
    from redy_jax.hw import isaac
    from redy_jax.models import load_checkpoint
    from redy_jax.policy import Float, PolicyMap
    from redy_jax.simulate import calibrate, simulate_fn
    from redy_jax.study import default_thresholds_path
    from redy_jax.thresholds import read_thresholds, redy_policy_map

    if variant == "fused":
        xla_window_conv = layer.window_conv
        layer.window_conv = lambda xs, plan, w, tiling, shape, *a: (
            native.window_conv if shape.groups == 1 else xla_window_conv)(
                xs, plan, w, tiling, shape, *a)
    net, variables, _ = load_checkpoint("resnet20")
    test = data.load("fashion_mnist", "test", limit=250)
    x = jnp.asarray(data.normalize(test.images, test.mean, test.std))
    train = data.load("fashion_mnist", "train", limit=200)
    cal = calibrate(net, variables, data.normalize(train.images, train.mean, train.std),
                    isaac())
    redy = redy_policy_map(read_thresholds(default_thresholds_path("resnet20", "window")))
    run_f, _ = simulate_fn(net, isaac(), cal, "auto")
    run_e, _ = simulate_fn(net, isaac(), cal, "exact")
    t = best_times({"float": lambda: run_f(variables, PolicyMap(default=Float()), x)[0],
                    "redy": lambda: run_e(variables, redy, x)[0]}, repeats)
    print(f"whole pass, {variant}: window ReDy {t['redy'] / t['float']:.2f}x the float pass "
          f"({t['float']:.3f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="whole-pass A/B rounds")
    p.add_argument("--variant", choices=["fused", "lowered"], help=argparse.SUPPRESS)
    args = p.parse_args()
    native.build_and_register()
    if args.variant:
        return model(args.variant)
    for hw, c in [(28, 16), (14, 32), (7, 64)]:  # ResNet-20's three stages
        layer_case(hw, c)
    for _ in range(args.rounds):
        for variant in ("fused", "lowered"):
            subprocess.run([sys.executable, __file__, "--variant", variant], check=True,
                           env=os.environ)


if __name__ == "__main__":
    main()
