"""Per-layer configuration search on held-out labelled data (a validation split).

Each crossbar layer can be set to one of a few :class:`LayerOption` s — a quantiser
(hence a code width) and a precision policy: static k-bit, k-bit with leading-zero
skipping, ReDy with some thresholds on k-bit codes, ... :func:`allocate` chooses one
option per layer to minimise whole-chip energy under an accuracy budget:

1. *Sensitivity*: starting from a base configuration, every single-layer change is
   evaluated on a search subset: its increase of the mean cross-entropy (smoother than
   accuracy on a few thousand images) and the layer's whole-chip energy.
2. *Allocation*: treating both as additive over layers, each Lagrange multiplier
   ``lam`` gives the configuration minimising ``sum_l energy_l + lam * loss_l`` (per
   layer, independently); the multipliers at every breakpoint give a front of
   candidate configurations, from the base to the most aggressive. By default a loss
   *decrease* counts as none (single-layer gains on a few thousand images are mostly
   noise, and options that only save energy need no credit); with ``credit_gains``
   an option that costs energy to buy accuracy (a wider code than the base) is priced
   too, so the allocation can spend in one layer what it saves in another.
3. *Check*: each candidate is evaluated on the whole held-out set; the chosen one is
   the lowest-energy candidate whose accuracy stays within ``budget`` of
   ``reference_accuracy`` (e.g. static 8-bit's). Measured, not predicted: the
   additivity assumption only proposes candidates.

All choices use the labelled images given (never pass the test split); the result
records every candidate so the front can be plotted and re-evaluated on test data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.map import PolicyMap
from redy_jax.quant.activations import ActQuant, Calibration
from redy_jax.simulate import DatasetResult, evaluate_dataset


@dataclasses.dataclass(frozen=True)
class LayerOption:
    """One setting of one layer: a name (recorded in results), its input quantiser and
    its precision policy."""

    name: str
    quant: ActQuant
    policy: Any


Choice = Mapping[str, LayerOption]


def configure(choice: Choice, calibration: Calibration) -> tuple[Calibration, PolicyMap]:
    """The calibration and policy map of a per-layer choice (layers absent from
    ``choice`` keep ``calibration``'s quantiser and run static)."""
    layers = {p: (choice[p].quant if p in choice else q) for p, q in calibration.layers.items()}
    cal = Calibration(layers=layers, method=f"per-layer({calibration.method})",
                      images=calibration.images)
    return cal, PolicyMap.per_layer({p: o.policy for p, o in choice.items()})


def _layer_energy(res: DatasetResult, path: str) -> float:
    return res.report.layer_dict(path)["chip_energy_pj_per_image"]


def allocate(model, variables, images, labels, spec: HardwareSpec, calibration: Calibration,
             options: Mapping[str, Sequence[LayerOption]], base: Choice, *,
             reference_accuracy: float, budget: float = 0.005, search_images: int = 2000,
             candidates: int = 16, batch_size: int = 250, credit_gains: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Chooses one option per layer (see the module docstring).

    Args:
      images, labels: held-out labelled data (float model inputs); the first
        ``search_images`` of them estimate sensitivities, all of them check candidates.
      calibration: quantisers of layers without options (and the run's metadata).
      options: per layer path, the options to consider (the base's included or not).
      base: the starting option of every layer in ``options``.
      reference_accuracy: the accuracy the budget is measured from, on the same images.
      budget: the largest allowed accuracy loss (fraction: 0.005 = 0.5 points).
      candidates: how many multipliers (front points) to check at most.
      credit_gains: price options by their signed loss change (a loss decrease is a
        gain the allocation may buy with energy), not only by its increase.
    Returns:
      ``{"choice": {path: option name}, "accuracy", "chip_energy_pj_per_image",
      "front": [...], "sensitivity": [...], "seconds"}`` — ``choice`` is the chosen
      configuration (the base if no candidate fits the budget).
    """
    t0 = time.time()
    x_s, y_s = images[:search_images], labels[:search_images]

    def run(choice, x, y) -> DatasetResult:
        cal, pm = configure(choice, calibration)
        return evaluate_dataset(model, variables, x, y, spec, pm, calibration=cal,
                                batch_size=batch_size, progress=progress)

    base = dict(base)
    ref = run(base, x_s, y_s)
    sens = []
    table: dict[str, list[tuple[float, float, LayerOption]]] = {}
    for path, opts in options.items():
        table[path] = [(_layer_energy(ref, path), 0.0, base[path])]
        for opt in opts:
            if opt.name == base[path].name:
                continue
            r = run({**base, path: opt}, x_s, y_s)
            e, dl = _layer_energy(r, path), r.loss - ref.loss
            table[path].append((e, dl, opt))
            sens.append({"layer": path, "option": opt.name, "layer_chip_energy_pj": e,
                         "base_layer_chip_energy_pj": table[path][0][0], "loss_increase": dl,
                         "accuracy": r.accuracy})

    proposals = propose(table, candidates, credit_gains=credit_gains)

    front = []
    best = None
    base_full = run(base, images, labels)
    front.append({"lambda": None, "choice": {p: o.name for p, o in base.items()},
                  "accuracy": base_full.accuracy, "loss": base_full.loss,
                  "chip_energy_pj_per_image": base_full.report.chip_energy_pj_per_image(),
                  "energy_pj_per_image": base_full.report.energy_pj_per_image()})
    if base_full.accuracy >= reference_accuracy - budget:
        best = front[0]
    for lam, choice in proposals:
        r = run(choice, images, labels)
        point = {"lambda": lam, "choice": {p: o.name for p, o in choice.items()},
                 "accuracy": r.accuracy, "loss": r.loss,
                 "chip_energy_pj_per_image": r.report.chip_energy_pj_per_image(),
                 "energy_pj_per_image": r.report.energy_pj_per_image()}
        front.append(point)
        if point["accuracy"] >= reference_accuracy - budget and (
                best is None
                or point["chip_energy_pj_per_image"] < best["chip_energy_pj_per_image"]):
            best = point
    chosen = best if best is not None else front[0]
    return {"choice": chosen["choice"], "accuracy": chosen["accuracy"],
            "chip_energy_pj_per_image": chosen["chip_energy_pj_per_image"],
            "within_budget": best is not None, "reference_accuracy": reference_accuracy,
            "budget": budget, "search_images": len(x_s), "check_images": len(images),
            "credit_gains": credit_gains,
            "front": front, "sensitivity": sens, "seconds": round(time.time() - t0, 1)}


def propose(table: Mapping[str, Sequence[tuple[float, float, LayerOption]]], candidates: int,
            *, credit_gains: bool = False) -> list[tuple[float, dict[str, LayerOption]]]:
    """The allocation step (see the module docstring): ``table`` holds per layer its
    rows ``(layer energy, loss change, option)``, the base's first (loss change 0).
    Returns ``(lam, choice)`` for up to ``candidates`` multipliers at the options'
    breakpoints, from cautious (large ``lam``) to aggressive, distinct choices only."""
    # Multipliers at the breakpoints of every option: energy saved per unit of loss
    # added, and (credit_gains) energy spent per unit of loss removed.
    priced = (lambda dl: dl) if credit_gains else (lambda dl: max(dl, 0.0))
    ratios = {(table[p][0][0] - e) / max(dl, 1e-9) for p in table
              for e, dl, _ in table[p][1:] if table[p][0][0] - e > 0}
    if credit_gains:
        ratios |= {(e - table[p][0][0]) / -dl for p in table
                   for e, dl, _ in table[p][1:] if e > table[p][0][0] and dl < 0}
    ratios = sorted(ratios)
    if ratios:
        picks = np.unique(np.quantile(np.log(ratios), np.linspace(0, 1, candidates)))
        lams = [float(np.exp(v)) * 1.0001 for v in picks]
    else:
        lams = []
    seen, proposals = set(), []
    for lam in sorted(lams, reverse=True):  # from cautious to aggressive
        choice = {p: min(rows, key=lambda r, lam=lam: r[0] + lam * priced(r[1]))[2]
                  for p, rows in table.items()}
        key = tuple(sorted((p, o.name) for p, o in choice.items()))
        if key not in seen:
            seen.add(key)
            proposals.append((lam, choice))
    return proposals


def resolve(names: Mapping[str, str], options: Mapping[str, Sequence[LayerOption]],
            base: Choice) -> dict[str, LayerOption]:
    """Option names (as :func:`allocate` records them) back to options."""
    out = {}
    for p, name in names.items():
        pool = [*options.get(p, ()), base[p]] if p in base else list(options.get(p, ()))
        match = [o for o in pool if o.name == name]
        if not match:
            raise KeyError(f"layer {p!r} has no option named {name!r}")
        out[p] = match[0]
    return out


__all__ = ["Choice", "LayerOption", "allocate", "configure", "propose", "resolve"]
