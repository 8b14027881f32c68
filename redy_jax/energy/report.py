"""Per-layer and total event counts and energy of a set of images (host side)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from redy_jax.energy.breakdown import COMPONENTS, energy_breakdown, mapped_area_mm2
from redy_jax.hw.spec import HardwareSpec
from redy_jax.xbar.engine import COUNT_FIELDS
from redy_jax.xbar.layer import LayerInfo, LayerRecord


@dataclasses.dataclass
class LayerSummary:
    """Totals of one layer over ``images`` images (exact Python ints)."""

    info: LayerInfo
    counts: dict[str, int]
    nt_hist: np.ndarray
    images: int


@dataclasses.dataclass
class Report:
    """Per-layer and total event counts and energy for a set of images."""

    spec: HardwareSpec
    images: int
    layers: dict[str, LayerSummary]

    @classmethod
    def from_records(cls, records: Mapping[str, LayerRecord], infos: Mapping[str, LayerInfo],
                     spec: HardwareSpec, images: int, valid: np.ndarray | None = None) -> Report:
        layers = {}
        for path, rec in records.items():
            counts = {}
            for f in COUNT_FIELDS:
                a = np.asarray(getattr(rec.counts, f), np.int64)
                counts[f] = int(a[valid].sum() if valid is not None else a.sum())
            layers[path] = LayerSummary(infos[path], counts, np.asarray(rec.nt_hist, np.int64),
                                        images)
        return cls(spec, images, layers)

    def merge(self, other: Report) -> Report:
        if not self.layers:
            return other
        layers = {}
        for p, a in self.layers.items():
            b = other.layers[p]
            layers[p] = LayerSummary(a.info, {k: a.counts[k] + b.counts[k] for k in a.counts},
                                     a.nt_hist + b.nt_hist, a.images + b.images)
        return Report(self.spec, self.images + other.images, layers)

    # ---- derived figures (per image) ----
    def layer_energy_pj(self, path: str) -> dict[str, float]:
        s = self.layers[path]
        return {k: v / self.images for k, v in energy_breakdown(s.counts, self.spec).items()}

    def breakdown_pj(self) -> dict[str, float]:
        total = dict.fromkeys(COMPONENTS, 0.0)
        for p in self.layers:
            for k, v in self.layer_energy_pj(p).items():
                total[k] += v
        return total

    def energy_pj_per_image(self) -> float:
        return sum(self.breakdown_pj().values())

    def per_image(self, field: str) -> float:
        return sum(s.counts[field] for s in self.layers.values()) / max(self.images, 1)

    def mean_streamed_bits(self) -> float:
        bits = sum(s.counts["streamed_bits"] for s in self.layers.values())
        acts = sum(s.counts["activations"] for s in self.layers.values())
        return bits / max(acts, 1)

    def crossbars(self) -> int:
        return sum(s.info.crossbars for s in self.layers.values())

    def area_mm2(self) -> float:
        return mapped_area_mm2(self.crossbars(), self.spec)

    def layer_dict(self, path: str) -> dict[str, Any]:
        s = self.layers[path]
        e = self.layer_energy_pj(path)
        return {
            "kind": s.info.kind, "k": s.info.k, "n": s.info.n, "groups": s.info.groups,
            "crossbars": s.info.crossbars, "macs_per_image": s.info.macs_per_image,
            "counts_per_image": {k: v / self.images for k, v in s.counts.items()},
            "energy_pj_per_image": sum(e.values()),
            "breakdown_pj": e,
            "mean_streamed_bits": s.counts["streamed_bits"] / max(s.counts["activations"], 1),
            "cycles_per_image": s.counts["cycles"] / self.images,
            "latency_ns_per_image": s.counts["cycles"] / self.images * self.spec.t_read_ns,
            "nt_hist": s.nt_hist.tolist(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "energy_pj_per_image": self.energy_pj_per_image(),
            "breakdown_pj": self.breakdown_pj(),
            "adc_conversions_per_image": self.per_image("adc_conversions"),
            "xbar_reads_per_image": self.per_image("xbar_reads"),
            "cycles_per_image": self.per_image("cycles"),
            "latency_us_per_image": self.per_image("cycles") * self.spec.t_read_ns / 1e3,
            "adc_saturations_per_image": self.per_image("adc_saturations"),
            "mean_streamed_bits": self.mean_streamed_bits(),
            "crossbars": self.crossbars(),
            "area_mm2": self.area_mm2(),
            "layers": {p: self.layer_dict(p) for p in self.layers},
        }


__all__ = ["LayerSummary", "Report"]
