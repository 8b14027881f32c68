"""Plots from plain dicts (matplotlib, Agg backend; optional ``ax``), written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from redy_jax.files import atomic_write_bytes


def _figure(ax):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        return fig, ax
    return ax.figure, ax


def save_figure(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(str(path))[1][1:] or "png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_pareto(points: Sequence[dict], *, static: dict, hand: dict | None = None,
                title: str = "", ax=None):
    """Energy (x, relative to static) vs accuracy (y). ``points``: dicts with ``lambda``,
    ``accuracy``, ``energy_ratio``; ``static`` / ``hand``: one dict each."""
    fig, ax = _figure(ax)
    pts = sorted(points, key=lambda p: p["energy_ratio"])
    ax.plot([p["energy_ratio"] for p in pts], [100 * p["accuracy"] for p in pts], "o-",
            color="C0", label="ReDy, tuned thresholds")
    for p in pts:
        ax.annotate(f"λ={p['lambda']:g}", (p["energy_ratio"], 100 * p["accuracy"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.plot([1.0], [100 * static["accuracy"]], "s", color="k", label="static 8-bit (ISAAC)")
    if hand is not None:
        ax.plot([hand["energy_ratio"]], [100 * hand["accuracy"]], "D", color="C3",
                label="ReDy, calibrated thresholds")
    ax.set_xlabel("energy / static 8-bit energy")
    ax.set_ylabel("test accuracy [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig, ax


def plot_breakdown(bars: dict[str, dict[str, float]], *, title: str = "", ax=None):
    """Stacked bars: ``bars[label][component] = energy (uJ/image)``."""
    fig, ax = _figure(ax)
    labels = list(bars)
    comps = list(dict.fromkeys(c for b in bars.values() for c in b))
    bottom = [0.0] * len(labels)
    for i, c in enumerate(comps):
        vals = [bars[lab].get(c, 0.0) for lab in labels]
        ax.bar(labels, vals, bottom=bottom, label=c, color=f"C{i % 10}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("energy per image [uJ]")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    return fig, ax
