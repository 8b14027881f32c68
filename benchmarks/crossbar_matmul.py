"""Times ``crossbar_matmul`` against a plain float matmul of the same shapes.

    python benchmarks/crossbar_matmul.py [--batch 1000] [--k 512] [--n 128]
                                         [--threads 1] [--json OUT]

``--threads N`` pins the process to the first N CPUs before JAX starts (XLA sizes its
thread pool from the CPUs it may use), for comparisons with single-threaded
simulators; by default every CPU is used.

All timings are measured in the same run, as the best of ``--repeats`` jitted
calls after a warm-up; ratios are against the float matmul. The per-MVM time is
the pass time divided by (batch x crossbars), i.e. one 8-bit input vector through
one 128x128 crossbar.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _pin_threads(argv) -> int | None:
    """Applies ``--threads N`` (CPU affinity) before jax is imported; returns N."""
    args = sys.argv[1:] if argv is None else argv
    if "--threads" not in args:
        return None
    n = int(args[args.index("--threads") + 1])
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    return n


if __name__ == "__main__":
    _pin_threads(None)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from run import cpu_model  # noqa: E402
from timing import best_time  # noqa: E402

from redy_jax.files import atomic_write_json  # noqa: E402
from redy_jax.hw import isaac  # noqa: E402
from redy_jax.xbar import crossbar_matmul, tile  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30,
                   help="best of this many calls (ms-scale calls are noisy)")
    p.add_argument("--threads", type=int, default=None,
                   help="pin to the first N CPUs (set before JAX starts; see above)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (args.batch, args.k)), jnp.int32)
    w = jnp.asarray(rng.integers(-127, 128, (args.k, args.n)), jnp.int32)
    xf, wf = x.astype(jnp.float32), w.astype(jnp.float32)
    spec = isaac()
    tiling = tile(args.k, args.n, spec)

    float_mm = jax.jit(lambda a, b: a @ b)
    t_float = best_time(lambda: float_mm(xf, wf), args.repeats)
    t_exact = best_time(lambda: crossbar_matmul(x, w, spec, mode="exact"), args.repeats)
    t_faith = best_time(lambda: crossbar_matmul(x, w, spec, mode="faithful"), args.repeats)
    y_e, _ = crossbar_matmul(x, w, spec, mode="exact")
    y_f, _ = crossbar_matmul(x, w, spec, mode="faithful")
    assert np.array_equal(np.asarray(y_e), np.asarray(y_f))
    mvms = args.batch * tiling.crossbars
    out = {
        "shape": {"batch": args.batch, "k": args.k, "n": args.n},
        "crossbars": tiling.crossbars,
        "float_matmul_s": t_float,
        "exact_s": t_exact,
        "faithful_s": t_faith,
        "exact_vs_float": t_exact / t_float,
        "faithful_vs_float": t_faith / t_float,
        "exact_us_per_128x128_mvm": t_exact / mvms * 1e6,
        "faithful_us_per_128x128_mvm": t_faith / mvms * 1e6,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{jax.device_count()}x {jax.devices()[0].platform}",
        "cpu_model": cpu_model(),
        "cpus_used": len(os.sched_getaffinity(0)),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
