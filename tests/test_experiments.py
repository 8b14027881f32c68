"""experiments/run_all.py: the quick mode produces every file with sane values, and
committed results match what the scripts produce from the committed checkpoints."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    _load("run_all").main(["--quick", "--models", "lenet5", "--limit", "60", "--out", str(out),
                           "--shape-models", "resnet18", "--shape-size", "32"])
    return out


def test_quick_mode_writes_every_file(quick):
    for f in ("headline.csv", "headline.json", "breakdown.png", "breakdown.csv",
              "layers_lenet5.csv", "layers_lenet5.png", "sensitivity.csv", "sensitivity.json",
              "sensitivity.png", "shapes.csv", "shapes.json", "run.json"):
        assert (quick / f).stat().st_size > 0, f
    assert not list(quick.rglob("*.tmp"))  # no half-written files


def test_quick_mode_values_are_sane(quick):
    rows = json.loads((quick / "headline.json").read_text())
    for r in rows:
        assert 0 <= r["accuracy"] <= 1
        if "saving_vs_static" in r and r["policy"] != "static":
            assert 0 < r["saving_vs_static"] < 1, r
    for cell in (quick / "cells" / "headline" / "lenet5").glob("*.json"):
        d = json.loads(cell.read_text())
        if d.get("energy_pj_per_image"):
            assert sum(d["breakdown_pj"].values()) == pytest.approx(d["energy_pj_per_image"],
                                                                    rel=1e-9)
    for r in csv.DictReader((quick / "sensitivity.csv").read_text().splitlines()):
        assert 0 < float(r["saving"]) < 1
    for r in json.loads((quick / "shapes.json").read_text()):
        assert r["crossbars"] > 0 and 0 < r["adc_share"] < 1 and "stand-in" in r["input"]


def test_rerun_reuses_finished_cells(quick, capsys):
    _load("run_all").main(["--quick", "--models", "lenet5", "--limit", "60", "--out",
                           str(quick), "--sections", "headline"])
    assert "computed" not in capsys.readouterr().out


COMMITTED = ROOT / "experiments" / "results" / "cells" / "headline" / "lenet5"


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed full results yet")
@pytest.mark.parametrize("cell", ["static", "redy_window"])
def test_committed_results_match_recomputation(cell):
    from redy_jax.study import default_thresholds_path, run_policy, setup
    from redy_jax.thresholds import read_thresholds

    committed = json.loads((COMMITTED / f"{cell}.json").read_text())
    s = setup("lenet5", limit=committed["images"])
    thr = read_thresholds(default_thresholds_path("lenet5", "window")) if cell != "static" \
        else None
    r = run_policy(s, "static" if cell == "static" else "redy", thresholds=thr,
                   progress=False)
    assert r["accuracy"] == committed["accuracy"]
    assert r["energy_pj_per_image"] == pytest.approx(committed["energy_pj_per_image"],
                                                     rel=1e-9)
