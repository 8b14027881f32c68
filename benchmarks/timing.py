"""Shared timing helpers of the benchmark scripts."""

from __future__ import annotations

import time

import jax


def best_time(fn, repeats: int) -> float:
    """Best wall time [s] of ``repeats`` calls of ``fn`` after one warm-up call
    (compilation excluded); results are waited for with ``block_until_ready``.

    The minimum, not the median: on a shared 2-core machine other processes only ever
    add time, so the fastest run is the most reproducible estimate of the code's own
    cost (the ``timeit`` convention)."""
    return best_times({"fn": fn}, repeats)["fn"]


def best_times(fns: dict, rounds: int) -> dict:
    """Best wall time [s] of each function in ``fns`` (name -> callable) over
    ``rounds`` interleaved rounds, each calling every function once, after one
    warm-up call each. Interleaving makes a ratio of two of them compare runs made
    under the same machine load (a busy spell slows both), so ratios measured in the
    same call are far steadier than times measured one after the other."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - t)
    return best
