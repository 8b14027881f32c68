"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import time

import jax


def best_time(fn, repeats: int) -> float:
    """Best wall time [s] of ``repeats`` calls of ``fn`` after one warm-up call
    (compilation excluded); results are waited for with ``block_until_ready``.

    The minimum, not the median: on a shared 2-core machine other processes only ever
    add time, so the fastest run is the most reproducible estimate of the code's own
    cost (the ``timeit`` convention). Ratios compare minima measured in the same run."""
    jax.block_until_ready(fn())
    ts = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return min(ts)
