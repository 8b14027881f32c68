"""Memory-bounded execution: a layer's batch in chunks of images (or of output rows).

Statistics and decisions are made for the whole batch first, from per-pixel sums, so
only lowering + requantisation + the product run per chunk. Results never depend on
the chunk sizes; only speed and peak memory do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def l2_cache_bytes(default: int = 512 * 1024) -> int:
    """The CPU's per-core L2 cache size [bytes], from the OS (Linux sysfs, then
    ``sysconf``); ``default`` when neither says."""
    import os
    from pathlib import Path

    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for d in sorted(base.glob("index*")):
            if (d / "level").read_text().strip() == "2" and \
                    (d / "type").read_text().strip() in ("Unified", "Data"):
                size = (d / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    try:
        v = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if v and v > 0:
            return int(v)
    except (ValueError, OSError, AttributeError):
        pass
    return default


CHUNK_BYTES: dict[str, int | None] = {"cpu": 2 * l2_cache_bytes()}
"""Per backend, the size [bytes] of one chunk's lowered input (im2col patches as
float32) above which a layer's batch is streamed in chunks of images with ``lax.map``;
on CPU twice the L2 cache of the machine it runs on (1 MiB for a 512 KiB L2, where it
was tuned);
window-granularity ReDy goes on to blocks of output rows (with their input halo) when
even one image does not fit. Statistics and decisions are made for the whole batch
first, from per-pixel sums, so only lowering + requantisation + matmul run per chunk.
On XLA:CPU patches that stay in cache make the lowered matrix product ~1.1-2x a native
convolution instead of 5-20x (2-core development machine, ResNet-20 layer shapes;
whole-model times with 0.5-8 MiB chunks were within the machine's noise of each other,
1 MiB among the best; row blocks took window ReDy on one 224x224 ResNet-18 image from
3.2x to 1.8x float). Backends not listed (GPU, TPU) take the whole batch at once.
Results do not depend on it."""


WINDOW_CHUNK_BYTES: dict[str, int | None] = {"cpu": 8 * l2_cache_bytes()}
"""The same budget for window-granularity ReDy's lowered product
(:mod:`redy_jax.xbar.window_conv`): 8x the L2 cache (4 MiB with the 512 KiB L2 it
was tuned on). Its chunks run ~20
small operations each (per tile piece, the taps' views, their stack, the
requantisation and a product), whose fixed cost larger chunks spread: on ResNet-20
(250 images, exact) 4 MiB chunks made the window-ReDy pass 2.22 -> 2.06x and 2.13 ->
2.07x the float pass in two A/B runs (2 MiB: 2.08x, 8 MiB: 2.10x), while the bit-plane
path (:data:`CHUNK_BYTES`) was no faster with them. With the taps stacked in one byte
per code (since 9943208) 2-16 MiB chunks measured 1.69-2.10x, 4 MiB 1.76-1.77x in two
runs, 8 MiB 1.69-1.80x: no size robustly better. On a 1 MiB-L2 AMD EPYC with
bfloat16 products, 4-16 MiB measured 1.87-1.98x and 32 MiB 2.33x. Results do not
depend on it."""


def per_chunk(count: int, bytes_each: int, budgets: dict | None = None) -> int:
    """How many of ``count`` items (images, or output rows of one image) of
    ``bytes_each`` lowered bytes a chunk holds on the current backend: all of them when
    it has no budget in ``budgets`` (default :data:`CHUNK_BYTES`), else the most that fit
    (at least one)."""
    budget = (CHUNK_BYTES if budgets is None else budgets).get(jax.default_backend())
    if budget is None:
        return count
    return max(1, min(count, budget // max(1, bytes_each)))


def map_image_chunks(fn, xs, chunk: int, *, pad: bool = False):
    """Applies ``fn`` to the batch (leading axis of every leaf of ``xs``) in chunks of
    at most ``chunk`` images (``lax.map``) and stitches the results ``(per-image
    outputs, per-image counts or None, histogram or None)``: outputs and counts
    concatenate, histograms add.

    The chunks are balanced (250 images at most 26 a chunk: 10 chunks of 25), so ``fn``
    is traced and compiled once whenever the batch divides evenly. Otherwise the
    remainder either runs through ``fn`` once more (a second compiled copy), or, with
    ``pad`` (only for an ``fn`` that returns no counts or histogram, whose padded
    images' outputs are simply dropped), is padded with zero images to a full chunk."""
    b = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if chunk >= b:
        return fn(xs)
    chunk = -(-b // -(-b // chunk))  # balanced: ceil(b / number of chunks)
    n, rem = divmod(b, chunk)
    tmap = jax.tree_util.tree_map
    if rem and pad:
        n, rem = n + 1, 0
        xs = tmap(lambda a: jnp.pad(a, ((0, n * chunk - b),) + ((0, 0),) * (a.ndim - 1)),
                  xs)
    head = tmap(lambda a: a[:n * chunk].reshape(n, chunk, *a.shape[1:]), xs)
    y, counts, hist = lax.map(fn, head)
    if pad and (counts is not None or hist is not None):
        raise ValueError("map_image_chunks(pad=True) needs an fn without counts or histogram")
    flat = lambda a: a.reshape(n * chunk, *a.shape[2:])
    y, counts = flat(y)[:b], tmap(flat, counts)
    hist = None if hist is None else hist.sum(axis=0)
    if rem:
        y2, c2, h2 = fn(tmap(lambda a: a[n * chunk:], xs))
        y = jnp.concatenate([y, y2])
        counts = tmap(lambda a, c: jnp.concatenate([a, c]), counts, c2)
        hist = None if hist is None else hist + h2
    return y, counts, hist


def map_row_blocks(fn, xs, prm, rows: int, height: int, reach: int, stride: int):
    """Applies ``fn`` (see :mod:`redy_jax.xbar.window_conv`) to blocks of ``rows`` output
    rows of every image (``lax.map`` over (image, block) pairs): the block's input rows
    with their halo (``reach``: input rows one window spans; ``stride``: input rows per
    output row) and its windows' constants. The last block is padded with zero rows
    whose outputs are dropped. ``xs`` (B, Hp, Wp, C); ``prm`` leaves (B, Ho, Wo, ...).
    Returns y (B, Ho, Wo, Cout)."""
    b = xs.shape[0]
    nb = -(-height // rows)
    rows_in = (rows - 1) * stride + reach
    need = (nb * rows - 1) * stride + reach  # input rows the padded blocks read
    xs = jnp.pad(xs, ((0, 0), (0, max(0, need - xs.shape[1])), (0, 0), (0, 0)))
    prm = tuple(jnp.pad(a, ((0, 0), (0, nb * rows - height)) + ((0, 0),) * (a.ndim - 2))
                for a in prm)

    def block(i):
        img, j = i // nb, i % nb
        xc = lax.dynamic_slice_in_dim(lax.dynamic_slice_in_dim(xs, img, 1, 0),
                                      j * rows * stride, rows_in, 1)
        pc = tuple(lax.dynamic_slice_in_dim(lax.dynamic_slice_in_dim(a, img, 1, 0),
                                            j * rows, rows, 1) for a in prm)
        return fn((xc, *pc))[0][0]

    y = lax.map(block, jnp.arange(b * nb))  # (B * nb, rows, Wo, Cout)
    return y.reshape(b, nb * rows, *y.shape[2:])[:, :height]


__all__ = ["CHUNK_BYTES", "WINDOW_CHUNK_BYTES", "l2_cache_bytes", "map_image_chunks",
           "map_row_blocks", "per_chunk"]
