"""Times ``crossbar_matmul`` against a plain float matmul of the same shapes.

    python benchmarks/crossbar_matmul.py [--batch 1000] [--k 512] [--n 128]
                                         [--threads 1] [--json OUT]

``--threads N`` pins the process to the first N CPUs before JAX starts (XLA sizes its
thread pool from the CPUs it may use), for comparisons with single-threaded
simulators; by default every CPU is used.

Uniform random 8-bit codes and weights. Timed: ``exact`` and ``bit_plane`` (every read
through the bit-plane model) on ISAAC, whose flipped encoding proves every read exact,
and ``faithful`` on ISAAC without flipped encoding, where 128 rows of 3-level cells can
exceed the 8-bit ADC, so the data must clear each vector (the JSON records how many of
the batch's vectors the bit-plane model still had to take, and the saturations). All
timings are measured in the same run, as the best of ``--repeats`` jitted calls after
a warm-up; ratios are against the float matmul. The per-MVM time is the pass time
divided by (batch x crossbars), i.e. one 8-bit input vector through one 128x128
crossbar.
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

from redy_jax.cache import provenance  # noqa: E402
from redy_jax.files import atomic_write_json  # noqa: E402
from redy_jax.hw import isaac  # noqa: E402
from redy_jax.xbar import crossbar_matmul, store_weights, tile, to_tiles  # noqa: E402
from redy_jax.xbar.bit_serial import may_clip  # noqa: E402


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
    # The same crossbars without flipped encoding: 128 rows of 3-level cells can exceed
    # the 8-bit ADC, so faithful mode must clear vectors by their data.
    clip_spec = isaac(flipped_encoding=False)
    tiling = tile(args.k, args.n, spec)

    float_mm = jax.jit(lambda a, b: a @ b)
    run = lambda sp, mode: (lambda: crossbar_matmul(x, w, sp, mode=mode))
    t_float = best_time(lambda: float_mm(xf, wf), args.repeats)
    t_exact = best_time(run(spec, "exact"), args.repeats)
    t_bits = best_time(run(spec, "bit_plane"), args.repeats)
    t_faith = best_time(run(clip_spec, "faithful"), args.repeats)
    y_e, _ = run(spec, "exact")()
    y_b, _ = run(spec, "bit_plane")()
    assert np.array_equal(np.asarray(y_e), np.asarray(y_b))
    (y_f, c_f), (y_m, c_m) = run(clip_spec, "faithful")(), run(clip_spec, "bit_plane")()
    assert np.array_equal(np.asarray(y_f), np.asarray(y_m)) and c_f.total() == c_m.total()
    stored = store_weights(w, tiling, clip_spec)
    modelled = int(may_clip(to_tiles(x, tiling), stored, clip_spec, False).sum())
    mvms = args.batch * tiling.crossbars
    out = {
        "shape": {"batch": args.batch, "k": args.k, "n": args.n},
        "crossbars": tiling.crossbars,
        "float_matmul_s": t_float,
        "exact_s": t_exact,
        "bit_plane_s": t_bits,
        "faithful_s": t_faith,
        "faithful_spec": "isaac(flipped_encoding=False)",
        "faithful_vectors_modelled": modelled,
        "faithful_saturations": c_f.total()["adc_saturations"],
        "exact_vs_float": t_exact / t_float,
        "bit_plane_vs_float": t_bits / t_float,
        "faithful_vs_float": t_faith / t_float,
        "exact_us_per_128x128_mvm": t_exact / mvms * 1e6,
        "bit_plane_us_per_128x128_mvm": t_bits / mvms * 1e6,
        "faithful_us_per_128x128_mvm": t_faith / mvms * 1e6,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{jax.device_count()}x {jax.devices()[0].platform}",
        "cpu_model": cpu_model(),
        "cpus_used": len(os.sched_getaffinity(0)),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "provenance": provenance(),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
