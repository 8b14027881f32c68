"""Per-layer and total event counts and energy of a set of images (host side)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from redy_jax.energy.breakdown import (
    CHIP_COMPONENTS,
    COMPONENTS,
    CORE_COMPONENTS,
    FIXED_COMPONENTS,
    chip_energy_pj,
    core_energy_pj,
    energy_breakdown,
    mapped_area_mm2,
)
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


PERCENTILES = (5, 25, 50, 75, 95)


@dataclasses.dataclass
class Report:
    """Per-layer totals, per-image totals and energy for a set of images.

    ``layers``: each mapped layer's event totals over the images. ``image_counts``:
    every count field per image (summed over layers), int64 (images,): ReDy is dynamic
    per image, so energy, conversions, streamed bits and latency have a distribution.
    """

    spec: HardwareSpec
    images: int
    layers: dict[str, LayerSummary]
    image_counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Mapping[str, LayerRecord], infos: Mapping[str, LayerInfo],
                     spec: HardwareSpec, images: int, valid: np.ndarray | None = None) -> Report:
        layers = {}
        per_image = {f: np.zeros(images, np.int64) for f in COUNT_FIELDS}
        for path, rec in records.items():
            counts = {}
            for f in COUNT_FIELDS:
                a = np.asarray(getattr(rec.counts, f), np.int64)
                a = a[valid] if valid is not None else a
                counts[f] = int(a.sum())
                per_image[f] += a
            layers[path] = LayerSummary(infos[path], counts, np.asarray(rec.nt_hist, np.int64),
                                        images)
        return cls(spec, images, layers, per_image)

    def merge(self, other: Report) -> Report:
        if not self.layers:
            return other
        layers = {}
        for p, a in self.layers.items():
            b = other.layers[p]
            layers[p] = LayerSummary(a.info, {k: a.counts[k] + b.counts[k] for k in a.counts},
                                     a.nt_hist + b.nt_hist, a.images + b.images)
        per_image = {f: np.concatenate([self.image_counts[f], other.image_counts[f]])
                     for f in self.image_counts}
        return Report(self.spec, self.images + other.images, layers, per_image)

    # ---- derived figures (per image) ----
    def layer_energy_pj(self, path: str) -> dict[str, float]:
        s = self.layers[path]
        return {k: v / self.images for k, v in energy_breakdown(s.counts, self.spec).items()}

    def breakdown_pj(self) -> dict[str, float]:
        """Mean energy per image of every component (core and fixed) [pJ]."""
        total = dict.fromkeys(COMPONENTS, 0.0)
        for p in self.layers:
            for k, v in self.layer_energy_pj(p).items():
                total[k] += v
        return total

    def energy_pj_per_image(self) -> float:
        """Mean crossbar-core energy per image [pJ]."""
        b = self.breakdown_pj()
        return sum(b[k] for k in CORE_COMPONENTS)

    def chip_energy_pj_per_image(self) -> float:
        """Mean whole-chip energy per image [pJ] (includes the fixed tile/chip costs)."""
        b = self.breakdown_pj()
        return sum(b[k] for k in CHIP_COMPONENTS)

    def per_image(self, field: str) -> float:
        return sum(s.counts[field] for s in self.layers.values()) / max(self.images, 1)

    def mean_streamed_bits(self) -> float:
        bits = sum(s.counts["streamed_bits"] for s in self.layers.values())
        acts = sum(s.counts["activations"] for s in self.layers.values())
        return bits / max(acts, 1)

    def image_figures(self) -> dict[str, np.ndarray]:
        """Per-image figures, each (images,): ``chip_energy_pj``, ``core_energy_pj``,
        ``adc_conversions``, ``streamed_bits`` (mean per activation), ``latency_us``."""
        c = self.image_counts
        return {
            "chip_energy_pj": np.asarray(chip_energy_pj(c, self.spec), np.float64),
            "core_energy_pj": np.asarray(core_energy_pj(c, self.spec), np.float64),
            "adc_conversions": c["adc_conversions"].astype(np.float64),
            "streamed_bits": c["streamed_bits"] / np.maximum(c["activations"], 1),
            "latency_us": c["cycles"] * self.spec.t_read_ns / 1e3,
        }

    def distribution(self) -> dict[str, dict[str, float]]:
        """Mean, standard deviation, min, max and percentiles of :meth:`image_figures`."""
        out = {}
        for k, a in self.image_figures().items():
            if a.size == 0:
                continue
            d = {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
                 "max": float(a.max())}
            d.update({f"p{q}": float(v) for q, v in zip(PERCENTILES,
                                                        np.percentile(a, PERCENTILES),
                                                        strict=True)})
            out[k] = d
        return out

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
            "energy_pj_per_image": sum(e[k] for k in CORE_COMPONENTS),
            "chip_energy_pj_per_image": sum(e[k] for k in CHIP_COMPONENTS),
            "breakdown_pj": e,
            "mean_streamed_bits": s.counts["streamed_bits"] / max(s.counts["activations"], 1),
            "cycles_per_image": s.counts["cycles"] / self.images,
            "latency_ns_per_image": s.counts["cycles"] / self.images * self.spec.t_read_ns,
            "nt_hist": s.nt_hist.tolist(),
        }

    def to_dict(self, distribution: bool = False) -> dict[str, Any]:
        """JSON-ready figures per image (means), per layer; ``distribution``: also the
        per-image distribution (:meth:`distribution`)."""
        chip = self.chip_energy_pj_per_image()
        fixed = sum(self.breakdown_pj()[k] for k in FIXED_COMPONENTS)
        out = {
            "images": self.images,
            "energy_pj_per_image": self.energy_pj_per_image(),
            "chip_energy_pj_per_image": chip,
            "fixed_share_of_chip_energy": fixed / chip if chip else 0.0,
            "breakdown_pj": self.breakdown_pj(),
            "adc_conversions_per_image": self.per_image("adc_conversions"),
            "xbar_reads_per_image": self.per_image("xbar_reads"),
            "cycles_per_image": self.per_image("cycles"),
            "latency_us_per_image": self.per_image("cycles") * self.spec.t_read_ns / 1e3,
            "adc_saturations_per_image": self.per_image("adc_saturations"),
            "mean_streamed_bits": self.mean_streamed_bits(),
            "stat_buffer_bits_per_image": max(
                (s.counts["stat_read_bits"] / self.images for s in self.layers.values()),
                default=0.0),
            "crossbars": self.crossbars(),
            "area_mm2": self.area_mm2(),
            "layers": {p: self.layer_dict(p) for p in self.layers},
        }
        if distribution:
            out["per_image"] = self.distribution()
        return out


__all__ = ["PERCENTILES", "LayerSummary", "Report"]
