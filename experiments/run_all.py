"""Regenerates every result of the study (JSON, CSV, plots, the README tables).

    python experiments/run_all.py [--quick] [--out experiments/results] [--models ...]

Sections (each a set of fingerprinted cells under ``--out/cells``: a cell is recomputed
only when the settings it was made from change; files are written atomically, so an
interrupted run resumes):

1. study: per shipped model, the protocol of ``experiments/study.py`` — every choice on
   the validation split, fair static baselines (uniform k-bit, per-layer mixed, each
   with and without leading-zero skipping), ReDy calibrated, tuned and its variants;
   the chosen points once on the test split -> ``headline.json`` / ``.csv``, one Pareto
   plot per model (``pareto_<model>.png``), the energy breakdown
   (``breakdown.png``).
2. layers: per-layer chip energy and streamed bits of one model's chosen points.
3. sensitivity: crossbar rows, bits per cell, ADC energy model (static vs ReDy on a
   test subset, ADC sized to stay exact).
4. shapes: ImageNet-shaped topologies imported from ONNX (random weights) on real
   photographs (scikit-image's bundled images, resized and cropped), isaac preset.
5. readme: the generated tables of ``experiments/README.md`` and ``README.md``.

``--sections thresholds`` runs only the part of the study that makes a model's shipped
threshold sets (ReDy calibrated on validation, tuned with lambda chosen on validation):
the same cells, without the searches, for a checkpoint whose full study is pending.

``--quick`` (smoke check, minutes): LeNet-5 only on small splits, reduced grids.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import readme  # noqa: E402
import study  # noqa: E402

from redy_jax.cache import Cells, code_version, digest  # noqa: E402
from redy_jax.checkpoint import shipped  # noqa: E402
from redy_jax.files import atomic_write_json, write_csv  # noqa: E402
from redy_jax.hw import get_preset  # noqa: E402
from redy_jax.models import SMALL_MODELS  # noqa: E402
from redy_jax.plots import plot_breakdown, plot_pareto_families, save_figure  # noqa: E402
from redy_jax.study import setup  # noqa: E402

POLICIES = ("static8", "static_uniform_best", "static_mixed", "lzs", "static_best", "redy",
            "redy_tuned", "redy_best")
"""Headline rows per model (see ``experiments/README.md``)."""


def _test_row(st, name, member, static8, best_static, *, limit=None):
    full = st.evaluate(member["config"], "test", limit=limit)
    sub = st.evaluate(member["config"], "test", limit=min(study.SUBSET, limit or study.SUBSET))
    row = {
        "model": st.s.model_name, "policy": name, "member": member["name"],
        "accuracy": full["accuracy"], "images": full["images"],
        "energy_pj_per_image": full["energy_pj_per_image"],
        "chip_energy_pj_per_image": full["chip_energy_pj_per_image"],
        "mean_streamed_bits": full["mean_streamed_bits"],
        "chosen_on": "validation",
        "validation_accuracy": member["validation"]["accuracy"],
        "validation_chip_energy_pj_per_image": member["validation"]["chip_energy_pj_per_image"],
        "subset": {"images": sub["images"], "accuracy": sub["accuracy"],
                   "energy_pj_per_image": sub["energy_pj_per_image"],
                   "chip_energy_pj_per_image": sub["chip_energy_pj_per_image"]},
        "config": member["config"],
        "provenance": {**code_version(), "checkpoint_sha256": st.settings["checkpoint_sha256"],
                       "spec_sha256": st.settings["spec_sha256"],
                       "calibration_sha256": digest({str(k): c.to_dict()
                                                     for k, c in st.cals.items()}),
                       "thresholds_sha256": study.thresholds_sha(member),
                       "config_sha256": digest(member["config"]),
                       "images": {"test": [0, full["images"]],
                                  "validation": list(st.val_range),
                                  "subset": [0, sub["images"]]}},
    }
    if static8 is not None:
        row["saving_vs_static8"] = 1 - row["chip_energy_pj_per_image"] / static8
    if best_static is not None:
        row["saving_vs_best_static"] = 1 - row["chip_energy_pj_per_image"] / best_static
    return row, full


def model_study(m: str, out: Path, *, quick: bool, limit: int | None, prune: bool = False):
    # The study calibrates every code width itself (cached cells, ``study.start``): the
    # setup's own calibration is not used, so the cheapest method is enough.
    s = setup(m, limit=limit, validation=True, calib_images=300 if quick else 1000,
              calib_method="minmax")
    if quick:
        s.val_images, s.val_labels = s.val_images[:300], s.val_labels[:300]
    st = study.start(s, out, quick=quick)
    print(f"{m}: static family", flush=True)
    static = study.static_family(st)
    print(f"{m}: ReDy family", flush=True)
    redy = study.redy_family(st, static)
    ref = static["reference_accuracy"]
    by = lambda members, name: next(x for x in members if x["name"] == name)
    sm = static["members"]
    uniform = [x for x in sm if x["family"] == "static_uniform"]
    chosen = {
        "static8": by(sm, "static8"),
        "static_uniform_best": study.best_within_budget(uniform, ref),
        "static_mixed": by(sm, "static_mixed"),
        "lzs": by(sm, "static8_lzs"),
        "static_best": study.best_within_budget(sm, ref),
        "redy": by(redy["members"], "redy"),
        "redy_tuned": study.chosen_tuned(redy["members"], ref),
        "redy_best": study.best_within_budget(redy["members"], ref),
    }
    if not quick:
        ship_thresholds(st, redy["members"], ref)
    print(f"{m}: test split", flush=True)
    e8 = st.evaluate(chosen["static8"]["config"], "test", limit=limit)
    best = st.evaluate(chosen["static_best"]["config"], "test", limit=limit)
    rows, fulls = [], {}
    for name in POLICIES:
        row, full = _test_row(st, name, chosen[name], e8["chip_energy_pj_per_image"],
                              best["chip_energy_pj_per_image"], limit=limit)
        row["validation_reference_accuracy"] = ref
        rows.append(row)
        fulls[name] = st.evaluate(chosen[name]["config"], "test", limit=limit, layers=True)
    # Pareto points of every family on the test split.
    points = []
    for member in [*sm, *redy["members"]]:
        r = st.evaluate(member["config"], "test", limit=limit)
        points.append({"family": member["family"], "name": member["name"],
                       "accuracy": r["accuracy"],
                       "chip_energy_pj_per_image": r["chip_energy_pj_per_image"],
                       "validation_accuracy": member["validation"]["accuracy"]})
    fronts = {**static["fronts"]}
    for fam in ("redy_on_mixed", "redy_joint"):
        fronts[fam] = {"front": by(redy["members"], fam)["front"]}
    for fam, rec in fronts.items():
        for i, pt in enumerate(_subsample(rec["front"], 4 if quick else 7)):
            r = st.evaluate(pt["config"], "test", limit=limit)
            points.append({"family": fam + "_front", "name": f"{fam}#{i}",
                           "accuracy": r["accuracy"],
                           "chip_energy_pj_per_image": r["chip_energy_pj_per_image"],
                           "validation_accuracy": pt["accuracy"]})
    if prune:
        for f in st.cells.unused():
            f.unlink()
            print(f"  pruned {f.relative_to(out)}", flush=True)
    return rows, points, fulls, static, redy


def ship_thresholds(st, members: list[dict], reference: float) -> None:
    """The study's threshold sets become the shipped defaults: calibrated (window,
    channel) and tuned (the lambda chosen on validation), each naming the checkpoint it
    was calibrated for (loading them for other weights is an error)."""
    from redy_jax.study import default_thresholds_path
    from redy_jax.thresholds import write_thresholds

    for kind, member in study.shipped_members(members, reference).items():
        if member is None:
            continue
        t = member["thresholds"]
        prov = {**t.get("provenance", {}), "chosen_on": "validation",
                "member": member["name"], "routine": "experiments/run_all.py",
                "checkpoint_sha256": st.settings["checkpoint_sha256"]}
        write_thresholds(default_thresholds_path(st.s.model_name, kind), t["layers"],
                         t["config"], prov)


def thresholds_only(m: str, out: Path) -> None:
    """Only the study's shipped threshold sets of model ``m`` (calibrated, tuned, lambda
    chosen on validation): the cells the full study starts from, without its searches."""
    s = setup(m, validation=True, calib_images=1000, limit=1, calib_method="minmax")
    st = study.start(s, out)
    print(f"{m}: shipped thresholds", flush=True)
    ship_thresholds(st, study.redy_thresholds(st), study.reference_accuracy(st))


def _subsample(front, n):
    if len(front) <= n:
        return front
    idx = np.unique(np.linspace(0, len(front) - 1, n).round().astype(int))
    return [front[i] for i in idx]


def headline(models, out: Path, *, quick: bool, limit: int | None, prune: bool = False):
    rows, all_points, layers = [], {}, {}
    for m in models:
        r, pts, fulls, _, _ = model_study(m, out, quick=quick, limit=limit, prune=prune)
        rows += r
        all_points[m] = pts
        layers[m] = fulls
        fig, _ = plot_pareto_families(pts, static8=next(x for x in r if x["policy"] == "static8"),
                                      chosen=r, title=f"{m}: whole-chip energy vs test accuracy")
        save_figure(fig, out / f"pareto_{m}.png")
    avg = []
    for p in POLICIES:
        sel = [r for r in rows if r["policy"] == p]
        if len(sel) == len(models) and len(models) > 1:
            avg.append({"model": "average", "policy": p,
                        "accuracy": float(np.mean([r["accuracy"] for r in sel])),
                        "validation_accuracy": float(np.mean([r["validation_accuracy"]
                                                              for r in sel])),
                        "saving_vs_static8": float(np.mean([r["saving_vs_static8"]
                                                            for r in sel])),
                        "saving_vs_best_static": float(np.mean([r["saving_vs_best_static"]
                                                                for r in sel]))})
    atomic_write_json(out / "headline.json", {
        "budget": study.BUDGET, "rows": rows, "average": avg,
        "protocol": "every choice on the validation split (training-file images "
                    "55,000-59,999); static scales on train[0:1000]; tuning on "
                    "train[1000:3048]; the test split once for these rows"})
    write_csv(out / "headline.csv", [{k: v for k, v in r.items()
                                      if k not in ("config", "subset", "provenance")}
                                     for r in rows + avg])
    atomic_write_json(out / "pareto.json", all_points)
    bars = {}
    for m in models:
        e0 = layers[m]["static8"]["chip_energy_pj_per_image"]
        bars[m] = {p: {k: v / e0 for k, v in layers[m][p]["breakdown_pj"].items()
                       if k not in ("edram", "bus")}
                   for p in ("static8", "static_best", "redy", "redy_best")}
    fig, _ = plot_breakdown(bars, title="Whole-chip energy per image by component, "
                                        "relative to static 8-bit")
    save_figure(fig, out / "breakdown.png")
    atomic_write_json(out / "layers.json", {m: {p: layers[m][p]["layers"] for p in layers[m]}
                                            for m in models})
    return rows


def sensitivity(cells: Cells, model: str, limit: int, grid: dict, out: Path) -> list[dict]:
    """How the ReDy (calibrated thresholds, shipped) saving moves with hardware
    parameters, each ADC sized to stay exact; on the first ``limit`` test images."""
    from redy_jax.study import default_thresholds_path, run_policy
    from redy_jax.thresholds import read_thresholds, redy_policy_map

    rows = []
    thr = read_thresholds(default_thresholds_path(model, "window"))
    for param, values in grid.items():
        for v in values:
            over = {param: v}
            spec0 = get_preset("isaac", **over)
            over["adc_bits"] = max(spec0.min_exact_adc_bits(), 4)

            def compute(over=over, param=param, v=v):
                s = setup(model, limit=limit, spec_overrides=over)
                st = run_policy(s, "static", progress=False)
                rd = run_policy(s, "redy", policy=redy_policy_map(thr), progress=False)
                return {"param": param, "value": v, "adc_bits": over["adc_bits"],
                        "static_accuracy": st["accuracy"], "redy_accuracy": rd["accuracy"],
                        "static_chip_uj": st["chip_energy_pj_per_image"] / 1e6,
                        "redy_chip_uj": rd["chip_energy_pj_per_image"] / 1e6,
                        "saving": 1 - rd["chip_energy_pj_per_image"]
                        / st["chip_energy_pj_per_image"]}
            settings = {"model": model, "overrides": over, "limit": limit,
                        "checkpoint_sha256": study.file_sha256(shipped(model)),
                        "thresholds": digest(thr["layers"])}
            rows.append(cells.get(f"sensitivity/{model}/{param}_{v}", settings, compute))
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
        ax.set_ylabel("ReDy chip saving [%]")
    fig.suptitle(f"{model}: sensitivity of the ReDy saving ({limit} test images)")
    fig.tight_layout()
    save_figure(fig, out / "sensitivity.png")
    return rows


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera")
"""Photographs bundled with scikit-image (no download), the stand-in ImageNet inputs."""


def photos(size: int) -> np.ndarray:
    """The bundled photographs resized (short side 256/224 x size) and centre-cropped to
    ``size``, normalised with ImageNet's mean and std: NHWC float32."""
    import skimage.data

    from redy_jax.data.loaders import IMAGENET_MEAN, IMAGENET_STD, resize_center_crop

    out = []
    for name in PHOTOS:
        im = np.asarray(getattr(skimage.data, name)())
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, -1)
        out.append(resize_center_crop(im[..., :3], round(size * 256 / 224), size))
    x = np.stack(out).astype(np.float32) / 255.0
    return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def shapes(cells: Cells, size: int, out: Path, names=None, width: float = 1.0) -> list[dict]:
    """ImageNet-shaped topologies imported from ONNX (random weights) on real photographs:
    static 8-bit chip energy, crossbars, latency; LZS and ReDy (thresholds 2^i / c, c = 1:
    no labels here to choose them on) savings."""
    import onnx_graphs

    from redy_jax.onnx_import import from_onnx
    from redy_jax.policy import LeadingZeroSkip, ReDy, Static
    from redy_jax.simulate import calibrate, evaluate

    x = photos(size)
    rows = []
    for name in names or onnx_graphs.ARCHITECTURES:
        def compute(name=name):
            spec = get_preset("isaac")
            graph = onnx_graphs.ARCHITECTURES[name](size=size, width=width)
            model, v = from_onnx(graph)
            cal = calibrate(model, v, x, spec, method="minmax")
            _, rs = evaluate(model, v, x, spec, Static(), calibration=cal)
            _, rl = evaluate(model, v, x, spec, LeadingZeroSkip(), calibration=cal)
            thr = np.asarray([2.0, 4.0, 8.0, 16.0], np.float32)
            _, rr = evaluate(model, v, x, spec, ReDy(thresholds=thr), calibration=cal)
            d = rs.to_dict()
            e0 = d["chip_energy_pj_per_image"]
            return {"model": name, "input": f"{len(x)} photographs (scikit-image), "
                    f"{size}x{size}x3, ImageNet normalisation; ONNX graph with random "
                    f"weights (width x{width:g})",
                    "static_chip_uj_per_image": e0 / 1e6,
                    "crossbars": d["crossbars"], "tiles": -(-d["crossbars"] // 96),
                    "area_mm2": d["area_mm2"], "cycles_per_image": d["cycles_per_image"],
                    "latency_us_per_image": d["latency_us_per_image"],
                    "lzs_saving": 1 - rl.chip_energy_pj_per_image() / e0,
                    "redy_saving": 1 - rr.chip_energy_pj_per_image() / e0,
                    "adc_share": d["breakdown_pj"]["adc"] / e0}
        rows.append(cells.get(f"shapes/{name}_{size}_w{width:g}", {
            "model": name, "size": size, "width": width, "photos": list(PHOTOS),
            "spec": digest(get_preset("isaac").to_dict())}, compute))
    write_csv(out / "shapes.csv", rows)
    atomic_write_json(out / "shapes.json", rows)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke check (LeNet-5, small splits)")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--limit", type=int, default=None, help="test images per cell")
    p.add_argument("--shape-models", nargs="+", default=None,
                   help="ImageNet-shaped models for the shape study (default: all)")
    p.add_argument("--shape-size", type=int, default=None,
                   help="input size of the shape study (default 224; --quick: 64)")
    p.add_argument("--sections", nargs="+",
                   choices=["thresholds", "study", "sensitivity", "shapes", "readme"],
                   default=["study", "sensitivity", "shapes", "readme"],
                   help="thresholds: only the shipped threshold sets (a subset of study)")
    p.add_argument("--prune", action="store_true",
                   help="delete each studied model's cells this run did not use (made from "
                        "superseded settings); the shipped threshold sets are rewritten "
                        "from the cells kept")
    args = p.parse_args(argv)
    if args.prune and (args.limit or args.quick or "study" not in args.sections):
        p.error("--prune needs a full study run (--sections study, no --limit or --quick): "
                "otherwise it would delete cells the full study uses")
    out = Path(args.out or ("experiments/results_quick" if args.quick else "experiments/results"))
    out.mkdir(parents=True, exist_ok=True)
    cells = Cells(out / "cells")
    shipped_models = [m for m in SMALL_MODELS if shipped(m).exists()]
    models = args.models or (["lenet5"] if args.quick else shipped_models)
    for m in models:
        if m not in shipped_models:
            p.error(f"--models: {m!r} is not a shipped model ({shipped_models})")
    limit = args.limit or (200 if args.quick else None)
    t0 = time.time()
    if "thresholds" in args.sections:
        for m in models:
            thresholds_only(m, out)
    if "study" in args.sections:
        headline(models, out, quick=args.quick, limit=limit, prune=args.prune)
    if "sensitivity" in args.sections:
        print("sensitivity", flush=True)
        grid = ({"rows": [64, 128]} if args.quick else
                {"rows": [64, 128, 256], "cell_bits": [1, 2, 4],
                 "adc_energy_model": ["isaac_scaled", "sar_table", "exp2", "murmann"]})
        sens_model = models[0] if args.quick else "resnet20"
        sensitivity(cells, sens_model, min(limit or 2000, 2000), grid, out)
    if "shapes" in args.sections:
        print("shapes", flush=True)
        shapes(cells, args.shape_size or (64 if args.quick else 224), out, args.shape_models,
               width=0.25 if args.quick else 1.0)
    atomic_write_json(out / "run.json", {
        "command": " ".join(["python experiments/run_all.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "models": models, "limit": limit, "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} "
                   f"device(s), {__import__('os').cpu_count()} CPUs",
        "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), **code_version()})
    if "readme" in args.sections and not args.quick:
        readme.write_all(out)
    print(f"done in {time.time() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
