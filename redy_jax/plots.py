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


def plot_breakdown(bars: dict[str, dict[str, dict[str, float]]], *, title: str = ""):
    """One panel per model: stacked bars per policy of each component's energy,
    normalised to the model's static 8-bit total. ``bars[model][policy][component]``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models = list(bars)
    comps = list(dict.fromkeys(c for m in bars.values() for b in m.values() for c in b
                               if any(b2.get(c, 0) > 0 for b2 in m.values())))
    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models) + 1.8, 3.8), dpi=120,
                             sharey=True, squeeze=False)
    colors = plt.get_cmap("tab20")
    for ax, m in zip(axes[0], models, strict=True):
        labels = list(bars[m])
        bottom = [0.0] * len(labels)
        for i, c in enumerate(comps):
            vals = [bars[m][lab].get(c, 0.0) for lab in labels]
            ax.bar(range(len(labels)), vals, bottom=bottom, color=colors(i % 20),
                   label=c if ax is axes[0][0] else None, width=0.7)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(labels)), [lab.replace("_", "\n") for lab in labels],
                      fontsize=8)
        ax.set_title(m, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("chip energy / static 8-bit")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, axes


FAMILY_STYLE = {
    "static_uniform": ("s", "C0", "static uniform k"),
    "static_uniform_lzs": ("s", "C9", "static uniform k + LZS"),
    "static_mixed_front": ("o", "C2", "static per-layer (front)"),
    "static_mixed_lzs_front": ("o", "C8", "static per-layer + LZS (front)"),
    "redy": ("D", "C3", "ReDy calibrated"),
    "redy_tuned": ("v", "C1", "ReDy tuned (lambdas)"),
    "redy_on_mixed_front": ("^", "C6", "ReDy on per-layer base (front)"),
    "redy_joint_front": ("<", "C7", "ReDy, width + thresholds per layer (front)"),
    "redy_max": ("P", "C4", "ReDy max statistic (BFP)"),
    "redy_channel": ("X", "C5", "ReDy channel groups"),
}


def plot_pareto_families(points: Sequence[dict], *, static8: dict, chosen: Sequence[dict] = (),
                         title: str = "", ax=None):
    """Whole-chip energy (relative to static 8-bit) vs test accuracy of every family's
    points (``points``: dicts with ``family``, ``accuracy``, ``chip_energy_pj_per_image``);
    ``chosen``: headline rows, labelled."""
    fig, ax = _figure(ax)
    e0 = static8["chip_energy_pj_per_image"]
    for fam, (marker, color, label) in FAMILY_STYLE.items():
        pts = sorted((p for p in points if p["family"] == fam),
                     key=lambda p: p["chip_energy_pj_per_image"])
        if not pts:
            continue
        xs = [p["chip_energy_pj_per_image"] / e0 for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        ax.plot(xs, ys, marker=marker, color=color, label=label, ms=5,
                ls="-" if fam.endswith("_front") else "none", lw=0.8, alpha=0.85)
    offsets = {"static8": (-10, -16), "static_best": (8, -14), "redy_best": (-20, 10)}
    for r in chosen:
        if r["policy"] in offsets:
            x, y = r["chip_energy_pj_per_image"] / e0, 100 * r["accuracy"]
            ax.plot([x], [y], marker="o", ms=11, mfc="none", mec="k", mew=1.2)
            ax.annotate(r["policy"].replace("_", " "), (x, y), textcoords="offset points",
                        xytext=offsets[r["policy"]], fontsize=7,
                        arrowprops={"arrowstyle": "-", "lw": 0.5})
    # The region a reader compares points in: down to 10 points below static 8-bit
    # (fronts run on to much lower accuracies; those points are counted, not drawn).
    floor = 100 * static8["accuracy"] - 10
    below = sum(1 for p in points if 100 * p["accuracy"] < floor)
    top = max([100 * p["accuracy"] for p in points] + [100 * static8["accuracy"]])
    if below:
        ax.set_ylim(floor, top + 1)
        ax.text(0.01, 0.01, f"{below} front point(s) below {floor:.0f}% not shown",
                transform=ax.transAxes, fontsize=6.5, color="0.35")
    ax.set_xlabel("whole-chip energy / static 8-bit")
    ax.set_ylabel("test accuracy [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return fig, ax
