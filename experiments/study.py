"""The study protocol: every choice on validation data, fair static baselines, test once.

Used by ``run_all.py`` (and its tests). Per model, with the accuracy budget ``BUDGET``
(validation accuracy at most 0.5 points below static 8-bit's on the same images):

* static uniform k-bit (k = 8..3, each with its own calibrated scales) and static
  per-layer mixed precision (searched, :func:`redy_jax.search.allocate`), each with and
  without leading-zero skipping (LZS): the static family;
* ReDy as the paper reads (std groups, thresholds ``2^i / c``), calibrated on validation,
  and tuned with optax on training images (lambda chosen on validation), and the ReDy
  family's variants: per-layer ReDy on top of the best per-layer static base, the
  per-layer code width and thresholds chosen jointly (one bit above or below the static
  base), the ``max`` statistic (block floating point per group), ``channel`` groups;
* the best member of each family within the budget on validation, then every chosen
  configuration once on the test split (and on its first ``SUBSET`` images, which the
  reproduction test recomputes).

A *configuration* is plain JSON — per layer its code width and its policy — so every
result cell is fingerprinted by it and can be rebuilt from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from redy_jax.cache import Cells, digest, file_sha256
from redy_jax.checkpoint import shipped
from redy_jax.policy import PolicyMap, ReDy, policy_from_dict
from redy_jax.quant import Calibration
from redy_jax.search import LayerOption, allocate
from redy_jax.simulate import evaluate_dataset
from redy_jax.study import Setup, calibrations
from redy_jax.thresholds import calibrate_thresholds, redy_policy_map, threshold_set
from redy_jax.tune import TuneConfig, tune_thresholds

BUDGET = 0.005
"""Allowed validation accuracy loss vs static 8-bit for every chosen point (0.5 points)."""
BITS = (8, 7, 6, 5, 4, 3)
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Per-layer ReDy aggressiveness options: thresholds ``2^i / c``."""
N0_GRID = (3, 4, 5, 6)
"""Block-floating-point (``max`` statistic) mantissa widths."""
LAMBDAS = (0.03, 0.1, 0.3, 1.0)
TUNE = TuneConfig(steps=40, batch_size=32, lr=0.1, temperature=0.5, seed=0, save_every=10)
TUNE_IMAGES = (1000, 3048)
"""Training images of the tuning (after the static-calibration images train[0:1000])."""
SUBSET = 256
"""First test images of every headline cell, recomputed by the reproduction test."""
NO_DROP = 1e9
"""A threshold no group statistic reaches (8-bit codes): ReDy drops no LSB."""


@dataclasses.dataclass
class Study:
    """One model's study: its setup, cells and the static calibrations per code width."""

    s: Setup
    cells: Cells
    out: Path
    cals: dict[int, Calibration]
    layers: list[str]
    settings: dict
    val_range: tuple[int, int]
    quick: bool = False

    # ---- configurations ----
    def uniform(self, bits: int, policy: dict) -> dict:
        return {"bits": dict.fromkeys(self.layers, bits),
                "policies": dict.fromkeys(self.layers, policy)}

    def build(self, config: dict) -> tuple[Calibration, PolicyMap]:
        cal8 = self.cals[8]
        layers = {p: self.cals[config["bits"].get(p, 8)].layers[p] for p in cal8.layers}
        cal = Calibration(layers=layers, method=cal8.method, images=cal8.images)
        policies = {p: policy_from_dict(d) for p, d in config["policies"].items()}
        return cal, PolicyMap.per_layer(policies)

    # ---- evaluations (cached) ----
    def evaluate(self, config: dict, split: str, *, limit: int | None = None,
                 layers: bool = False) -> dict:
        """Accuracy, loss and energies of ``config`` on ``split`` (validation / test),
        cached by the configuration's fingerprint."""
        if split == "validation":
            x, y, rng = self.s.val_images, self.s.val_labels, self.val_range
        else:
            n = len(self.s.test_labels) if limit is None else min(limit, len(self.s.test_labels))
            x, y, rng = self.s.test_images[:n], self.s.test_labels[:n], (0, n)
        settings = {**self.settings, "config": config, "split": split, "range": list(rng)}
        name = f"eval/{split}_{rng[0]}_{rng[1]}/{digest(config)[:16]}"

        def compute():
            cal, pm = self.build(config)
            r = evaluate_dataset(self.s.model, self.s.variables, x[:rng[1] - rng[0]],
                                 y[:rng[1] - rng[0]], self.s.spec, pm, calibration=cal,
                                 progress=False)
            d = r.summary()
            keep = ("images", "accuracy", "loss", "energy_pj_per_image",
                    "chip_energy_pj_per_image", "fixed_share_of_chip_energy", "breakdown_pj",
                    "adc_conversions_per_image", "mean_streamed_bits", "latency_us_per_image",
                    "cycles_per_image", "crossbars", "area_mm2", "stat_buffer_bits_per_image")
            out = {k: d[k] for k in keep}
            out["layers"] = {p: {k: v for k, v in ld.items() if k != "counts_per_image"}
                             for p, ld in d["layers"].items()}
            return out

        res = self.cells.get(name, settings, compute)
        return res if layers else {k: v for k, v in res.items() if k != "layers"}

    def val(self, config: dict) -> dict:
        return self.evaluate(config, "validation")

    # ---- searches (cached) ----
    def search(self, family: str, options: dict[str, list[tuple[str, int, dict]]],
               base: dict[str, tuple[str, int, dict]], reference: float, *,
               credit_gains: bool = False) -> dict:
        """:func:`allocate` over per-layer options ``(name, bits, policy dict)``; returns
        the search record with every front point's configuration."""
        described = {p: [(n, b, d) for n, b, d in opts] for p, opts in options.items()}
        settings = {**self.settings, "search": family, "options": described,
                    "base": base, "budget": BUDGET, "reference_accuracy": reference,
                    "split": "validation", "range": list(self.val_range),
                    "search_images": self.search_images}
        if credit_gains:
            settings["credit_gains"] = True

        def compute():
            mk = lambda p, n, b, d: LayerOption(n, self.cals[b].layers[p], policy_from_dict(d))
            opts = {p: [mk(p, *o) for o in options[p]] for p in options}
            base_opts = {p: mk(p, *base[p]) for p in options}
            r = allocate(self.s.model, self.s.variables, self.s.val_images, self.s.val_labels,
                         self.s.spec, self.cals[8], opts, base_opts,
                         reference_accuracy=reference, budget=BUDGET,
                         search_images=self.search_images, candidates=8 if self.quick else 12,
                         credit_gains=credit_gains)
            table = {p: {n: (b, d) for n, b, d in [*options[p], base[p]]} for p in options}
            for point in r["front"]:
                point["config"] = {
                    "bits": {p: table[p][n][0] for p, n in point["choice"].items()},
                    "policies": {p: table[p][n][1] for p, n in point["choice"].items()}}
            r["config"] = next(pt["config"] for pt in r["front"]
                               if pt["choice"] == r["choice"])
            return r

        return self.cells.get(f"search/{family}", settings, compute)

    @property
    def search_images(self) -> int:
        return 300 if self.quick else 1000


def start(s: Setup, out: Path, *, quick: bool = False) -> Study:
    """The study of one model: settings every cell of it depends on, and the static
    calibrations per code width (cached)."""
    cells = Cells(out / "cells" / s.model_name)
    settings = {"model": s.model_name, "dataset": s.dataset,
                "checkpoint_sha256": file_sha256(shipped(s.model_name)),
                "spec_sha256": digest(s.spec.to_dict()),
                "calibration": {"split": "train", "range": [0, len(s.calib_images)],
                                "method": "best of mse/minmax by static accuracy"}}
    bits = (8, 5, 4) if quick else BITS
    cal_cell = cells.get("calibrations", {**settings, "bits": list(bits)},
                         lambda: {str(k): c.to_dict() for k, c in calibrations(s, bits).items()})
    cals = {int(k): Calibration.from_dict(d) for k, d in cal_cell.items()}
    return Study(s, cells, out, cals, list(cals[8].layers), settings,
                 (0, len(s.val_labels)), quick)


def static_family(st: Study) -> dict[str, Any]:
    """Static uniform k-bit and per-layer mixed precision, each with and without LZS, on
    validation; the searched fronts and every member's configuration."""
    bits = sorted(st.cals, reverse=True)
    static, lzs = {"kind": "static"}, {"kind": "lzs", "granularity": "window"}
    ref = reference_accuracy(st)
    members = []
    for k in bits:
        for name, pol in ((f"static{k}", static), (f"static{k}_lzs", lzs)):
            cfg = st.uniform(k, pol)
            members.append({"name": name, "family": "static_uniform" + ("_lzs" if pol is lzs
                                                                        else ""),
                            "config": cfg, "validation": st.val(cfg)})
    fronts = {}
    for fam, pol in (("static_mixed", static), ("static_mixed_lzs", lzs)):
        options = {p: [(f"k{k}", k, pol) for k in bits] for p in st.layers}
        base = {p: (f"k{bits[0]}", bits[0], pol) for p in st.layers}
        r = st.search(fam, options, base, ref)
        fronts[fam] = r
        members.append({"name": fam, "family": fam, "config": r["config"],
                        "validation": st.val(r["config"])})
    return {"reference_accuracy": ref, "members": members, "fronts": fronts}


def best_within_budget(members: list[dict], reference: float) -> dict:
    """The lowest validation chip energy among members within the budget (else the most
    accurate)."""
    ok = [m for m in members if m["validation"]["accuracy"] >= reference - BUDGET]
    if not ok:
        return max(members, key=lambda m: m["validation"]["accuracy"])
    return min(ok, key=lambda m: m["validation"]["chip_energy_pj_per_image"])


def redy_config(st: Study, thresholds: dict, *, bits: dict | None = None) -> dict:
    """A configuration running ReDy with a threshold set's per-layer thresholds (on the
    code widths ``bits``, default 8)."""
    pm = redy_policy_map(thresholds)
    policies = {p: pm.for_layer(p, "conv").to_dict() for p in st.layers}
    return {"bits": dict(bits) if bits else dict.fromkeys(st.layers, 8), "policies": policies}


def reference_accuracy(st: Study) -> float:
    """Static 8-bit's validation accuracy: the budget's reference."""
    return st.val(st.uniform(8, {"kind": "static"}))["accuracy"]


def redy_thresholds(st: Study) -> list[dict]:
    """ReDy as read from the paper: thresholds calibrated on validation (window and
    channel groups) and tuned on training images, one member per lambda. These are the
    threshold sets the models ship (:func:`shipped_members`); the same cells serve the
    full study."""
    s = st.s
    members = []
    # 1. calibrated thresholds (std, window), the budget on validation
    cal_thr = st.cells.get("thresholds/calibrated_window", {
        **st.settings, "routine": "calibrate_thresholds", "target_loss": BUDGET,
        "split": "validation", "range": list(st.val_range), "granularity": "window"},
        lambda: calibrate_thresholds(s.model, s.variables, s.val_images, s.val_labels, s.spec,
                                     st.cals[8], granularity="window", target_loss=BUDGET,
                                     provenance={"split": "validation"}))
    cfg = redy_config(st, cal_thr)
    members.append({"name": "redy", "family": "redy", "config": cfg, "validation": st.val(cfg),
                    "thresholds": cal_thr})
    # 2. tuned from the calibrated thresholds, one run per lambda (training images)
    lo, hi = TUNE_IMAGES
    if st.quick:
        lo, hi = 300, 428
    from redy_jax import data

    tr = data.load(s.dataset, "train", limit=hi)
    x_t = data.normalize(tr.images[lo:hi], tr.mean, tr.std)
    y_t = tr.labels[lo:hi]
    tune_cfg = dataclasses.replace(TUNE, steps=4) if st.quick else TUNE
    tuned = []
    for lam in ((0.1, 1.0) if st.quick else LAMBDAS):
        c = dataclasses.replace(tune_cfg, lam=lam)
        res = st.cells.get(f"tune/lambda_{lam:g}", {
            **st.settings, "routine": "tune_thresholds", "init": digest(cal_thr["layers"]),
            "config": dataclasses.asdict(c), "split": "train", "range": [lo, hi]},
            lambda c=c: _strip_history(tune_thresholds(
                s.model, s.variables, x_t, y_t, s.spec, st.cals[8], init=cal_thr, config=c,
                out_dir=st.out / "tune_state" / s.model_name / f"lambda_{c.lam:g}",
                progress=False, provenance={"split": f"train[{lo}:{hi}]"})))
        cfg = redy_config(st, res)
        tuned.append({"name": f"redy_tuned_lambda_{lam:g}", "family": "redy_tuned",
                      "lambda": lam, "config": cfg, "validation": st.val(cfg),
                      "thresholds": res})
    members += tuned
    # 3. channel groups, calibrated the same way
    if not st.quick:
        ch = st.cells.get("thresholds/calibrated_channel", {
            **st.settings, "routine": "calibrate_thresholds", "target_loss": BUDGET,
            "split": "validation", "range": list(st.val_range), "granularity": "channel"},
            lambda: calibrate_thresholds(s.model, s.variables, s.val_images, s.val_labels,
                                         s.spec, st.cals[8], granularity="channel",
                                         target_loss=BUDGET,
                                         provenance={"split": "validation"}))
        cfg = redy_config(st, ch)
        members.append({"name": "redy_channel", "family": "redy_channel", "config": cfg,
                        "validation": st.val(cfg), "thresholds": ch})
    return members


def shipped_members(members: list[dict], reference: float) -> dict[str, dict | None]:
    """The threshold sets a model ships, chosen on validation: calibrated window and
    channel groups, and the tuned set of the lambda rule (:func:`chosen_tuned`)."""
    by = {m["name"]: m for m in members}
    return {"window": by["redy"], "tuned": chosen_tuned(members, reference),
            "channel": by.get("redy_channel")}


def redy_family(st: Study, static: dict) -> dict[str, Any]:
    """ReDy as read from the paper (:func:`redy_thresholds`) and its variants."""
    ref = static["reference_accuracy"]
    members = redy_thresholds(st)
    # variants: ReDy per layer on top of the best static mixed+LZS base
    base_bits = static["fronts"]["static_mixed_lzs"]["config"]["bits"]
    base = {p: ("c0", base_bits[p], _no_drop()) for p in st.layers}
    options = {p: [(f"c{c:g}", base_bits[p], _redy_c(p, c)) for c in C_GRID]
               for p in st.layers}
    r = st.search("redy_on_mixed", options, base, ref)
    members.append({"name": "redy_on_mixed", "family": "redy_on_mixed", "config": r["config"],
                    "validation": st.val(r["config"]), "front": r["front"]})
    # variant: base width and thresholds chosen jointly per layer. Around the static
    # mixed+LZS base k, a layer may take one bit MORE (groups with a narrow distribution
    # keep the finer step, wide ones drop LSBs back towards k planes), its own width with
    # ReDy, or one bit less; the search trades these across layers, buying accuracy
    # with energy where that is cheap (credit_gains) to spend it where it saves most.
    r = st.search("redy_joint", joint_options(st, base_bits), base, ref, credit_gains=True)
    members.append({"name": "redy_joint", "family": "redy_joint", "config": r["config"],
                    "validation": st.val(r["config"]), "front": r["front"]})
    # variants: block floating point (max statistic), uniform mantissa width
    for n0 in ((4,) if st.quick else N0_GRID):
        thr = [2.0 ** (n0 + i) - 0.5 for i in range(8 - n0)]
        pol = ReDy(thresholds=np.asarray(thr, np.float32), statistic="max").to_dict()
        cfg = st.uniform(8, pol)
        members.append({"name": f"redy_max_n{n0}", "family": "redy_max", "config": cfg,
                        "validation": st.val(cfg)})
    return {"members": members}


JOINT_C = (0.5, 1.0, 2.0)
"""Threshold scales of the joint width/threshold search (:func:`joint_options`)."""


def joint_options(st: Study, base_bits: dict[str, int]) -> dict[str, list]:
    """Per layer with base width k: ReDy (thresholds ``2^i / c``, c in ``JOINT_C``) on
    the next calibrated width above k (k + 1 in the full study) and on k bits, and the
    next calibrated width below k with leading-zero skipping or ReDy (c = 1); none
    beyond the calibrated widths. The base (k bits, LZS) is the search's start."""
    widths = sorted(st.cals)
    options = {}
    for p in st.layers:
        k = base_bits[p]
        up = [w for w in widths if w > k][:1]
        down = [w for w in widths if w < k][-1:]
        opts = [(f"w{w}_c{c:g}", w, _redy_c(p, c)) for w in (*up, k) for c in JOINT_C]
        for w in down:
            opts += [(f"w{w}_lzs", w, _no_drop()), (f"w{w}_c1", w, _redy_c(p, 1.0))]
        options[p] = opts
    return options


def _redy_c(path: str, c: float) -> dict:
    """Layer ``path``'s ReDy policy (as a dict) with window thresholds ``2^i / c``."""
    return ReDy(thresholds=threshold_set([path], c, 4, "window")["layers"][path]).to_dict()


def _no_drop() -> dict:
    """ReDy whose thresholds no group reaches: leading-zero skipping with per-group
    offsets (the searches' base)."""
    return ReDy(thresholds=np.full(4, NO_DROP, np.float32)).to_dict()


def _strip_history(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "history"} | {
        "history_last": r["history"][-1] if r["history"] else None}


def chosen_tuned(members: list[dict], reference: float) -> dict:
    """The lambda rule: the largest saving whose validation accuracy stays within the
    budget (else the most accurate)."""
    tuned = [m for m in members if m["family"] == "redy_tuned"]
    return best_within_budget(tuned, reference)


def thresholds_sha(member: dict) -> str | None:
    t = member.get("thresholds")
    return None if t is None else digest(t["layers"])


__all__ = ["BUDGET", "SUBSET", "Study", "best_within_budget", "chosen_tuned",
           "reference_accuracy", "redy_family", "redy_thresholds", "shipped_members", "start",
           "static_family"]
