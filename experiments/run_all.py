"""Regenerates every result of the study (tables as CSV/JSON, plots as PNG).

    python experiments/run_all.py [--quick] [--out experiments/results] [--models ...]

Sections (each a set of cached cells under ``--out/cells``; a finished cell is never
recomputed, every file is written atomically, so an interrupted run resumes):

1. headline: every shipped model x {float, static, lzs, ReDy window, ReDy channel,
   ReDy tuned}: accuracy, energy/image, saving vs static, ADC conversions, streamed bits;
   plus the average over models.
2. breakdown: energy per component per model and policy (stacked bars).
3. layers: per-layer streamed bits and savings of one model.
4. sensitivity: crossbar rows, bits per cell, ADC energy model, n_min (ReDy window vs
   static on a test subset, ADC sized to stay exact).
5. shapes: ImageNet-shaped zoo on the isaac preset: static energy, crossbars, cycles per
   image; ReDy savings on STAND-IN inputs (random weights and images; no ImageNet here).

``--quick`` (smoke check, < 10 min on 2 cores): LeNet-5 and ResNet-20 only, 500 test
images, a reduced sensitivity grid and the shape study at 64x64 inputs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from redy_jax.checkpoint import shipped
from redy_jax.files import atomic_write_bytes, atomic_write_json, write_csv
from redy_jax.hw import get_preset
from redy_jax.models import IMAGENET_MODELS, SMALL_MODELS, create_model
from redy_jax.plots import plot_breakdown, save_figure
from redy_jax.study import default_thresholds_path, run_policy, setup
from redy_jax.thresholds import read_thresholds, redy_policy_map

KEEP = ("model", "policy", "granularity", "images", "accuracy", "energy_pj_per_image",
        "adc_conversions_per_image", "mean_streamed_bits", "breakdown_pj", "cycles_per_image",
        "crossbars", "area_mm2", "redy_unit_area_mm2", "redy_area_overhead", "layers")


class Cells:
    """JSON cells cached on disk: ``get(name, compute)`` computes only missing ones."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, compute):
        path = self.root / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        t0 = time.time()
        value = compute()
        value["_seconds"] = round(time.time() - t0, 1)
        atomic_write_json(path, value)
        print(f"  computed {name} ({value['_seconds']} s)", flush=True)
        return value


def _slim(res: dict) -> dict:
    return {k: res[k] for k in KEEP if k in res}


def _model_cells(cells: Cells, m: str, limit) -> dict:
    """The headline cells of one model (the Setup is built only if a cell is missing)."""
    state = {}

    def cell(name, gran="window", thr=None, label=None):
        def compute():
            if "s" not in state:
                state["s"] = setup(m, limit=limit)
            return _slim(run_policy(state["s"], name, granularity=gran, thresholds=thr,
                                    progress=False))
        return cells.get(f"headline/{m}/{label or name}", compute)

    res = {"float": cell("float"), "static": cell("static"), "lzs": cell("lzs")}
    for g in ("window", "channel"):
        if default_thresholds_path(m, g).exists():
            res[f"redy_{g}"] = cell("redy", g, read_thresholds(default_thresholds_path(m, g)),
                                    f"redy_{g}")
    tuned = shipped(m).parent / f"{m}_fashion_mnist.redy_tuned.json"
    if tuned.exists():
        res["redy_tuned"] = cell("redy", "window", read_thresholds(tuned), "redy_tuned")
    return res


def headline(cells: Cells, models, limit, out: Path) -> list[dict]:
    rows = []
    for m in models:
        res = _model_cells(cells, m, limit)
        e0 = res["static"]["energy_pj_per_image"]
        for label, r in res.items():
            row = {"model": m, "policy": label, "images": r["images"],
                   "accuracy": r["accuracy"]}
            if r.get("energy_pj_per_image") is not None:
                row.update(energy_uj_per_image=r["energy_pj_per_image"] / 1e6,
                           saving_vs_static=1 - r["energy_pj_per_image"] / e0,
                           accuracy_delta_vs_static=r["accuracy"] - res["static"]["accuracy"],
                           adc_conversions_per_image=r["adc_conversions_per_image"],
                           mean_streamed_bits=r["mean_streamed_bits"])
            rows.append(row)
    # Average over models, as the paper reports it.
    for label in dict.fromkeys(r["policy"] for r in rows):
        sel = [r for r in rows if r["policy"] == label and "saving_vs_static" in r]
        if len(sel) == len(models) and len(models) > 1:
            rows.append({"model": "average", "policy": label, "images": sel[0]["images"],
                         "accuracy": float(np.mean([r["accuracy"] for r in sel])),
                         "saving_vs_static": float(np.mean([r["saving_vs_static"]
                                                            for r in sel])),
                         "accuracy_delta_vs_static": float(np.mean(
                             [r["accuracy_delta_vs_static"] for r in sel])),
                         "mean_streamed_bits": float(np.mean([r["mean_streamed_bits"]
                                                              for r in sel]))})
    write_csv(out / "headline.csv", rows)
    atomic_write_json(out / "headline.json", rows)
    # Breakdown plot from the same cells.
    bars = {}
    for m in models:
        for label in ("static", "lzs", "redy_window", "redy_channel", "redy_tuned"):
            p = cells.root / f"headline/{m}/{label}.json"
            if p.exists():
                d = json.loads(p.read_text())
                bars[f"{m}\n{label}"] = {k: v / 1e6 for k, v in d["breakdown_pj"].items()}
    fig, _ = plot_breakdown(bars, title="Energy per image by component (isaac preset)")
    save_figure(fig, out / "breakdown.png")
    write_csv(out / "breakdown.csv", [{"bar": k.replace("\n", "/"), **v}
                                       for k, v in bars.items()])
    return rows


def layers_view(cells: Cells, model: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = cells.get(f"headline/{model}/static", lambda: None)
    rd = cells.get(f"headline/{model}/redy_window", lambda: None)
    rows = []
    for p, d in rd["layers"].items():
        e0 = st["layers"][p]["energy_pj_per_image"]
        rows.append({"layer": p, "kind": d["kind"], "static_uj": e0 / 1e6,
                     "redy_uj": d["energy_pj_per_image"] / 1e6,
                     "saving": 1 - d["energy_pj_per_image"] / e0,
                     "mean_streamed_bits": d["mean_streamed_bits"]})
    write_csv(out / f"layers_{model}.csv", rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    names = [r["layer"].replace("stage", "s").replace("_block", "b") for r in rows]
    axes[0].bar(range(len(rows)), [100 * r["saving"] for r in rows])
    axes[0].set_xticks(range(len(rows)), names, rotation=90, fontsize=6)
    axes[0].set_ylabel("ReDy saving vs static [%]")
    hist = np.zeros(9)
    for d in rd["layers"].values():
        h = np.asarray(d["nt_hist"]).sum(axis=1)
        hist[:len(h)] += h
    axes[1].bar(range(9), hist / hist.sum())
    axes[1].set_xlabel("bit-planes streamed per group (n)")
    axes[1].set_ylabel("fraction of groups")
    fig.suptitle(f"{model}: ReDy (window, calibrated) per layer")
    save_figure(fig, out / f"layers_{model}.png")


SENS_FULL = {
    "rows": [64, 128, 256],
    "cell_bits": [1, 2, 4],
    "adc_energy_model": ["isaac_scaled", "sar_table", "exp2", "murmann"],
    "n_min": [1, 2, 3, 4],
}


def sensitivity(cells: Cells, model: str, limit: int, grid: dict, out: Path) -> list[dict]:
    rows = []
    thr = read_thresholds(default_thresholds_path(model, "window"))
    for param, values in grid.items():
        for v in values:
            def compute(param=param, v=v):
                over = {} if param == "n_min" else {param: v}
                spec0 = get_preset("isaac", **over)
                # Size the ADC so the crossbar stays exact (as ISAAC does at 128 rows).
                over["adc_bits"] = max(spec0.min_exact_adc_bits(), 4)
                s = setup(model, limit=limit, spec_overrides=over)
                pol = redy_policy_map(thr, **({"n_min": v} if param == "n_min"
                                                         else {}))
                st = run_policy(s, "static", progress=False)
                rd = run_policy(s, "redy", policy=pol, progress=False)
                return {"param": param, "value": v, "adc_bits": over["adc_bits"],
                        "static_accuracy": st["accuracy"], "redy_accuracy": rd["accuracy"],
                        "static_uj": st["energy_pj_per_image"] / 1e6,
                        "redy_uj": rd["energy_pj_per_image"] / 1e6,
                        "saving": 1 - rd["energy_pj_per_image"] / st["energy_pj_per_image"]}
            r = cells.get(f"sensitivity/{model}/{param}_{v}", compute)
            rows.append({k: r[k] for k in r if not k.startswith("_")})
    write_csv(out / "sensitivity.csv", rows)
    atomic_write_json(out / "sensitivity.json", rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grid), figsize=(3.2 * len(grid), 3.2), dpi=110)
    for ax, param in zip(np.atleast_1d(axes), grid, strict=True):
        sel = [r for r in rows if r["param"] == param]
        ax.bar([str(r["value"]) for r in sel], [100 * r["saving"] for r in sel])
        ax.set_title(param, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        ax.set_ylabel("ReDy saving [%]")
    fig.suptitle(f"{model}: sensitivity of the ReDy saving ({limit} test images)")
    save_figure(fig, out / "sensitivity.png")
    return rows


def shapes(cells: Cells, size: int, out: Path, names=None) -> list[dict]:
    """ImageNet-shaped models on STAND-IN inputs (random weights, random images)."""
    from redy_jax.policy import LeadingZeroSkip, PolicyMap, Static
    from redy_jax.simulate import calibrate, evaluate

    rows = []
    for name in names or IMAGENET_MODELS:
        def compute(name=name):
            spec = get_preset("isaac")
            model = create_model(name)
            x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
            v = model.init(jax.random.PRNGKey(1), x[:1])
            cal = calibrate(model, v, x, spec, method="minmax")
            _, rs = evaluate(model, v, x, spec, PolicyMap(default=Static()), calibration=cal)
            _, rl = evaluate(model, v, x, spec, PolicyMap(default=LeadingZeroSkip()),
                             calibration=cal)
            d = rs.to_dict()
            return {"model": name, "input": f"{size}x{size}x3 stand-in (random N(0,1) "
                    "images, random-init weights)",
                    "static_uj_per_image": d["energy_pj_per_image"] / 1e6,
                    "crossbars": d["crossbars"], "tiles": -(-d["crossbars"] // 96),
                    "area_mm2": d["area_mm2"], "cycles_per_image": d["cycles_per_image"],
                    "latency_us_per_image": d["latency_us_per_image"],
                    "lzs_saving_standin": 1 - rl.energy_pj_per_image() / d["energy_pj_per_image"],
                    "adc_share": d["breakdown_pj"]["adc"] / d["energy_pj_per_image"]}
        r = cells.get(f"shapes/{name}_{size}", compute)
        rows.append({k: v for k, v in r.items() if not k.startswith("_")})
    write_csv(out / "shapes.csv", rows)
    atomic_write_json(out / "shapes.json", rows)
    return rows


def _md_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """Markdown table; ``cols``: (key, header, format) with format '%' / 'f3' / 'e' / ''."""
    def fmt(v, f):
        if v is None or v == "":
            return "-"
        if f == "%":
            return f"{100 * v:.1f}%"
        if f.startswith("f"):
            return f"{v:.{int(f[1:])}f}"
        if f == "e":
            return f"{v:.3g}"
        return str(v)
    head = "| " + " | ".join(h for _, h, _ in cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(fmt(r.get(k), f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_summary(out: Path) -> None:
    """``summary.md``: the tables of every section present in ``out``."""
    parts = []
    if (out / "headline.json").exists():
        rows = json.loads((out / "headline.json").read_text())
        parts += ["## Headline", _md_table(rows, [
            ("model", "model", ""), ("policy", "policy", ""), ("images", "images", ""),
            ("accuracy", "accuracy", "%"), ("accuracy_delta_vs_static", "vs static", "%"),
            ("energy_uj_per_image", "energy [uJ/img]", "f3"),
            ("saving_vs_static", "saving", "%"),
            ("adc_conversions_per_image", "ADC conv/img", "e"),
            ("mean_streamed_bits", "streamed bits", "f2")])]
    if (out / "sensitivity.json").exists():
        rows = json.loads((out / "sensitivity.json").read_text())
        parts += ["## Sensitivity", _md_table(rows, [
            ("param", "parameter", ""), ("value", "value", ""), ("adc_bits", "ADC bits", ""),
            ("static_uj", "static [uJ/img]", "f3"), ("redy_uj", "ReDy [uJ/img]", "f3"),
            ("saving", "saving", "%"), ("static_accuracy", "static acc", "%"),
            ("redy_accuracy", "ReDy acc", "%")])]
    if (out / "shapes.json").exists():
        rows = json.loads((out / "shapes.json").read_text())
        parts += ["## ImageNet-shaped models (stand-in inputs)", _md_table(rows, [
            ("model", "model", ""), ("static_uj_per_image", "static [uJ/img]", "f1"),
            ("crossbars", "crossbars", ""), ("tiles", "tiles", ""),
            ("area_mm2", "area [mm^2]", "f1"), ("cycles_per_image", "cycles/img", ""),
            ("adc_share", "ADC share", "%"), ("lzs_saving_standin", "LZS saving (stand-in)",
                                             "%")]), "Inputs: " + rows[0]["input"] + "."]
    atomic_write_bytes(out / "summary.md", ("\n\n".join(parts) + "\n").encode())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke check (< 10 min)")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--limit", type=int, default=None, help="test images per cell")
    p.add_argument("--sensitivity-model", default=None,
                   help="model of the sensitivity study (default: resnet20, quick: first)")
    p.add_argument("--shape-models", nargs="+", default=None,
                   help="ImageNet-shaped models for the shape study (default: all)")
    p.add_argument("--shape-size", type=int, default=None,
                   help="input size of the shape study (default 224; --quick: 64)")
    p.add_argument("--sections", nargs="+",
                   default=["headline", "layers", "sensitivity", "shapes"])
    args = p.parse_args(argv)
    out = Path(args.out or ("experiments/results_quick" if args.quick else "experiments/results"))
    out.mkdir(parents=True, exist_ok=True)
    cells = Cells(out / "cells")
    shipped_models = [m for m in SMALL_MODELS if shipped(m).exists()]
    models = args.models or (["lenet5", "resnet20"] if args.quick else shipped_models)
    models = [m for m in models if m in shipped_models]
    limit = args.limit or (500 if args.quick else None)
    t0 = time.time()
    if "headline" in args.sections:
        print("headline", flush=True)
        headline(cells, models, limit, out)
    if "layers" in args.sections:
        layer_model = "resnet20" if "resnet20" in models else models[0]
        if default_thresholds_path(layer_model, "window").exists():
            print("layers", flush=True)
            layers_view(cells, layer_model, out)
    if "sensitivity" in args.sections:
        print("sensitivity", flush=True)
        grid = ({"rows": [64, 128], "adc_energy_model": ["isaac_scaled", "murmann"],
                 "n_min": [1, 3]} if args.quick else SENS_FULL)
        sens_model = args.sensitivity_model or (
            models[0] if args.quick else ("resnet20" if "resnet20" in models else models[0]))
        sensitivity(cells, sens_model, min(limit or 2000, 2000), grid, out)
    if "shapes" in args.sections:
        print("shapes", flush=True)
        shapes(cells, args.shape_size or (64 if args.quick else 224), out, args.shape_models)
    atomic_write_json(out / "run.json", {
        "command": "python experiments/run_all.py" + (" --quick" if args.quick else ""),
        "models": models, "limit": limit, "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} "
                   f"device(s), {__import__('os').cpu_count()} CPUs",
        "jax": jax.__version__, "date": time.strftime("%Y-%m-%d")})
    write_summary(out)
    print(f"done in {time.time() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
