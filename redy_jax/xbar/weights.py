"""Weight quantisation and storage: signed codes -> biased unsigned cell slices.

A signed ``weight_bits`` code ``w`` is stored biased, ``u = w + 2**(weight_bits-1)``
in ``[0, 2**weight_bits)``, as ``slices = weight_bits / cell_bits`` cells, least
significant slice first. The bias is removed digitally with the sum of the inputs
(the unit column). With flipped encoding (ISAAC) a column whose stored values sum to
more than half its maximum stores ``cell_max - slice`` instead and is flagged.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import struct

from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.layout import Tiling


def quantize_weights(w: jnp.ndarray, bits: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Symmetric per-output-channel quantisation of a (K, N) float matrix.

    Returns ``(codes, scale)``: int32 codes in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``
    of shape (K, N) and float32 ``scale`` (N,), with ``w ~= codes * scale``.
    """
    chex.assert_rank(w, 2)
    qmax = (1 << (bits - 1)) - 1
    absmax = jnp.max(jnp.abs(w), axis=0)
    scale = jnp.where(absmax > 0, absmax / qmax, 1.0).astype(jnp.float32)
    codes = jnp.clip(jnp.round(w / scale), -qmax, qmax).astype(jnp.int32)
    return codes, scale


@struct.dataclass
class StoredWeights:
    """Weights as programmed into crossbars (a pytree; shapes from a :class:`Tiling`).

    ``codes``: int32 (T, R, N) signed codes per row tile, zero in padding rows.
    ``cells``: float32 (T, R, N, S) stored cell levels (after flipping), zero in padding.
    ``flipped``: bool (T, N, S) per-column flip flags.
    ``col_sum``: int32 (N,) sum of the signed codes over all K rows (zero-point removal).
    """

    codes: jnp.ndarray
    cells: jnp.ndarray
    flipped: jnp.ndarray
    col_sum: jnp.ndarray


def store_weights(w_codes: jnp.ndarray, tiling: Tiling, spec: HardwareSpec) -> StoredWeights:
    """Tiles, biases, slices and (optionally) flips signed weight codes of shape (K, N)."""
    chex.assert_shape(w_codes, (tiling.k, tiling.n))
    w = jnp.asarray(w_codes, jnp.int32)
    t, r = tiling.n_row_tiles, tiling.rows_per_tile
    valid = (jnp.arange(tiling.padded_k) < tiling.k).reshape(t, r)
    wt = jnp.pad(w, ((0, tiling.padded_k - tiling.k), (0, 0))).reshape(t, r, tiling.n)
    u = wt + (1 << (spec.weight_bits - 1))
    shifts = jnp.arange(spec.slices, dtype=jnp.int32) * spec.cell_bits
    cells = (u[..., None] >> shifts) & spec.cell_max  # (T, R, N, S)
    cells = jnp.where(valid[:, :, None, None], cells, 0)
    if spec.flipped_encoding:
        rows_used = valid.sum(axis=1)  # (T,)
        # Flip when the column's stored sum exceeds half of its maximum.
        flipped = 2 * cells.sum(axis=1) > (rows_used * spec.cell_max)[:, None, None]
        cells = jnp.where(flipped[:, None] & valid[:, :, None, None], spec.cell_max - cells,
                          cells)
    else:
        flipped = jnp.zeros((t, tiling.n, spec.slices), bool)
    return StoredWeights(codes=wt, cells=cells.astype(jnp.float32), flipped=flipped,
                         col_sum=w.sum(axis=0))
