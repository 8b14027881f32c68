"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import jax


def median_time(fn, repeats: int) -> float:
    """Median wall time [s] of ``repeats`` calls of ``fn`` after one warm-up call
    (compilation excluded); results are waited for with ``block_until_ready``."""
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)
