"""Accelerator check: equality of exact/faithful/sharded paths and the benchmark, as JSON.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

Runs on whatever JAX's default backend is (GPU when one is visible) and records it.
Checks: crossbar_matmul equals integer matmul (exact and faithful), the ADC error at
7 bits is visible, LeNet-5 static logits equal between exact and faithful modes, and
then runs ``benchmarks/run.py --quick``. Exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = p.parse_args(argv)
    import redy_jax as rj
    from redy_jax.files import atomic_write_json
    from redy_jax.policy import Static
    from redy_jax.study import setup

    checks = {}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 700))
    w = rng.integers(-128, 128, (700, 96))
    ref = x.astype(np.int64) @ w
    for mode in ("exact", "faithful"):
        y, _ = rj.crossbar_matmul(x, w, rj.isaac(), mode=mode)
        checks[f"matmul_{mode}_equals_integer"] = bool(np.array_equal(np.asarray(y), ref))
    y7, c7 = rj.crossbar_matmul(x, w, rj.isaac(adc_bits=7))
    checks["adc7_error_visible"] = bool(not np.array_equal(np.asarray(y7), ref)
                                        and c7.total()["adc_saturations"] > 0)
    s = setup("lenet5", limit=256, calib_images=256)
    le, _ = rj.evaluate(s.model, s.variables, s.test_images, s.spec, Static(),
                        calibration=s.calibration, mode="exact")
    lf, _ = rj.evaluate(s.model, s.variables, s.test_images, s.spec, Static(),
                        calibration=s.calibration, mode="faithful")
    checks["lenet5_exact_equals_faithful"] = bool(np.array_equal(np.asarray(le),
                                                                 np.asarray(lf)))
    import run as bench_run

    t0 = time.time()
    bench = bench_run.main(["--quick"])
    out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
           "checks": checks, "all_passed": all(checks.values()), "benchmark": bench,
           "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    atomic_write_json(args.out, out)
    print(json.dumps({"backend": out["backend"], "checks": checks}, indent=2))
    return 0 if out["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
