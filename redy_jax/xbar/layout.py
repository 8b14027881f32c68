"""How a weight matrix is laid out over crossbars (row tiles x column tiles).

Rows of the matrix are the ``K = Cin * kh * kw`` inputs of a layer in channel-major
order (input channel slowest, kernel tap fastest). Rows are split into row tiles
that hold whole input channels: ``floor(rows / (kh*kw))`` channels of ``kh*kw`` taps
each (K=3 -> 14 channels, 126 rows; K=1 -> 128). Columns hold ``weight_bits /
cell_bits`` adjacent cells per output, so a crossbar holds ``cols / slices`` outputs.
"""

from __future__ import annotations

import dataclasses
import math

from redy_jax.hw.spec import HardwareSpec


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Static mapping of a (K, N) weight matrix onto crossbars (hashable)."""

    k: int
    """Rows of the weight matrix (inputs per output)."""
    n: int
    """Columns of the weight matrix (outputs)."""
    taps: int
    """Kernel taps per input channel (kh*kw; 1 for dense layers)."""
    rows_per_tile: int
    """Rows used in a full row tile (a multiple of ``taps``)."""
    n_row_tiles: int
    n_col_tiles: int
    """Crossbars side by side for the N outputs of one row tile."""

    @property
    def padded_k(self) -> int:
        return self.n_row_tiles * self.rows_per_tile

    @property
    def rows_used(self) -> tuple[int, ...]:
        """Rows actually holding weights in each row tile."""
        full, last = divmod(self.k, self.rows_per_tile)
        return (self.rows_per_tile,) * full + ((last,) if last else ())

    @property
    def crossbars(self) -> int:
        return self.n_row_tiles * self.n_col_tiles


def tile(k: int, n: int, spec: HardwareSpec, taps: int = 1) -> Tiling:
    """Maps a (k, n) weight matrix with ``taps`` rows per input channel onto crossbars."""
    for name, v in (("k", k), ("n", n), ("taps", taps)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if k % taps:
        raise ValueError(f"k ({k}) must be a multiple of taps ({taps}): whole channels per row")
    if taps > spec.rows:
        raise ValueError(
            f"a kernel of {taps} taps per channel does not fit in one crossbar column of "
            f"{spec.rows} rows (HardwareSpec.rows); kernels up to {spec.rows} taps are supported")
    per = (spec.rows // taps) * taps
    per = min(per, k)
    return Tiling(k=k, n=n, taps=taps, rows_per_tile=per, n_row_tiles=math.ceil(k / per),
                  n_col_tiles=math.ceil(n / spec.outputs_per_xbar))
