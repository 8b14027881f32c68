"""Accelerator check: every exact and faithful path equal, bit for bit, on the
accelerator and on the CPU, then the quick benchmark there; as JSON.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

Runs one conv layer through each execution strategy of the layer engine (static conv,
LZS, channel and window ReDy, the relaxed tuning path, dense layers, faithful mode
with and without clipping and with data-pruned reads, the bit-plane model of every read
with and without clipping) and ``crossbar_matmul`` in every mode, on JAX's default
device and on the CPU, and requires identical outputs and counts — which needs
``precision=HIGHEST`` on every exact product (TF32 would round operands on recent
NVIDIA GPUs). Then LeNet-5 exact vs bit-plane logits on the device, and
``benchmarks/run.py --quick``. Under 5 minutes on one GPU; exits non-zero if a check
fails. On a CPU-only machine the comparison is CPU against CPU (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _paths():
    from redy_jax.hw import isaac
    from redy_jax.policy import LeadingZeroSkip, ReDy, Static
    from redy_jax.quant import ActQuant

    quant = ActQuant(scale=4.0 / 255, zero_point=128, signed=True, lo=-2.0, hi=2.0)
    thr = jnp.array([2.0, 6.0, 15.0, 30.0])
    return quant, {
        "static_conv": (Static(), "conv", isaac(), "exact"),
        "lzs_conv": (LeadingZeroSkip(), "conv", isaac(), "exact"),
        "channel_conv": (ReDy(thresholds=thr, granularity="channel"), "conv", isaac(),
                         "exact"),
        "window_conv": (ReDy(thresholds=thr), "conv", isaac(), "exact"),
        "relaxed_tiled": (ReDy(thresholds=thr, temperature=0.5), "conv", isaac(), "exact"),
        "dense_tiled": (ReDy(thresholds=thr), "dense", isaac(), "exact"),
        "faithful_exact_adc": (ReDy(thresholds=thr), "conv", isaac(), "faithful"),
        "faithful_clipping": (Static(), "conv", isaac(adc_bits=6), "faithful"),
        "faithful_pruned": (ReDy(thresholds=thr), "conv", isaac(flipped_encoding=False),
                            "faithful"),
        "bit_plane_exact_adc": (ReDy(thresholds=thr), "conv", isaac(), "bit_plane"),
        "bit_plane_clipping": (Static(), "conv", isaac(adc_bits=6), "bit_plane"),
    }


def _layer(name, x, w):
    from redy_jax.xbar import crossbar_layer

    quant, paths = _paths()
    policy, kind, spec, mode = paths[name]
    if kind == "dense":
        x, w = x.reshape(x.shape[0], -1)[:, :300], w.reshape(-1, w.shape[-1])[:300]
    y, rec, _ = crossbar_layer(jnp.asarray(x), jnp.asarray(w), None, kind=kind, path="l",
                               quant=quant, policy=policy, spec=spec, mode=mode,
                               padding="SAME")
    return jax.device_get((y, rec.counts, rec.nt_hist))


def device_equals_cpu() -> dict[str, bool]:
    import redy_jax as rj

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 12, 12, 40)).astype(np.float32)
    w = rng.normal(size=(3, 3, 40, 24)).astype(np.float32)
    cpu = jax.devices("cpu")[0]
    checks = {}
    for name in _paths()[1]:
        dev = _layer(name, x, w)
        with jax.default_device(cpu):
            ref = _layer(name, x, w)
        same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                   zip(jax.tree_util.tree_leaves(dev), jax.tree_util.tree_leaves(ref),
                       strict=True))
        checks[f"{name}_device_equals_cpu"] = bool(same)
    xi = rng.integers(0, 256, (64, 700))
    wi = rng.integers(-128, 128, (700, 96))
    ref = xi.astype(np.int64) @ wi
    for mode in ("exact", "faithful", "bit_plane"):
        y, _ = rj.crossbar_matmul(xi, wi, rj.isaac(), mode=mode)
        checks[f"matmul_{mode}_equals_integer"] = bool(np.array_equal(np.asarray(y), ref))
    y7, c7 = rj.crossbar_matmul(xi, wi, rj.isaac(adc_bits=7))
    checks["adc7_error_visible"] = bool(not np.array_equal(np.asarray(y7), ref)
                                        and c7.total()["adc_saturations"] > 0)
    return checks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/gpu_check.json")
    p.add_argument("--no-benchmark", action="store_true")
    args = p.parse_args(argv)
    import redy_jax as rj
    from redy_jax.cache import provenance
    from redy_jax.files import atomic_write_json
    from redy_jax.policy import Static
    from redy_jax.study import setup

    t0 = time.time()
    checks = device_equals_cpu()
    s = setup("lenet5", limit=256, calib_images=256)
    le, _ = rj.evaluate(s.model, s.variables, s.test_images, s.spec, Static(),
                        calibration=s.calibration, mode="exact")
    lf, _ = rj.evaluate(s.model, s.variables, s.test_images, s.spec, Static(),
                        calibration=s.calibration, mode="bit_plane")
    checks["lenet5_exact_equals_bit_plane"] = bool(np.array_equal(np.asarray(le),
                                                                  np.asarray(lf)))
    bench = None
    if not args.no_benchmark:
        import run as bench_run

        bench = bench_run.main(["--quick"])
    out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
           "checks": checks, "all_passed": all(checks.values()), "benchmark": bench,
           "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d"),
           "provenance": provenance()}
    atomic_write_json(args.out, out)
    print(json.dumps({"backend": out["backend"], "checks": checks}, indent=2))
    return 0 if out["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
