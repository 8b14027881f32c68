"""experiments/: the quick study writes every file with sane values and resumes from its
cells; the committed results are what the code produces now (headline cells recomputed
on their stored test subset, calibrations recomputed, README tables regenerated)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT / "experiments"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    _load("run_all").main(["--quick", "--out", str(out), "--shape-models", "resnet18",
                           "--shape-size", "32"])
    return out


def test_quick_mode_writes_every_file(quick):
    for f in ("headline.csv", "headline.json", "pareto.json", "pareto_lenet5.png",
              "breakdown.png", "layers.json", "sensitivity.csv", "sensitivity.json",
              "sensitivity.png", "shapes.csv", "shapes.json", "run.json"):
        assert (quick / f).stat().st_size > 0, f
    assert not list(quick.rglob("*.tmp"))  # no half-written files


def test_quick_mode_values_are_sane(quick):
    h = json.loads((quick / "headline.json").read_text())
    rows = {r["policy"]: r for r in h["rows"]}
    assert set(rows) == {"static8", "static_uniform_best", "static_mixed", "lzs",
                         "static_best", "redy", "redy_tuned", "redy_best"}
    for r in rows.values():
        assert 0 <= r["accuracy"] <= 1 and r["chosen_on"] == "validation"
        assert r["chip_energy_pj_per_image"] > r["energy_pj_per_image"] * 0.5
        for k in ("commit", "checkpoint_sha256", "spec_sha256", "images"):
            assert k in r["provenance"], k
    assert rows["static8"]["saving_vs_static8"] == 0
    assert rows["static_best"]["saving_vs_best_static"] == 0
    # static 8-bit + LZS is lossless: same accuracy, less energy
    assert rows["lzs"]["accuracy"] == rows["static8"]["accuracy"]
    assert rows["lzs"]["saving_vs_static8"] > 0
    # the best static member is at least as cheap on validation as every static row
    for p in ("static8", "static_uniform_best", "static_mixed", "lzs"):
        assert (rows["static_best"]["validation_chip_energy_pj_per_image"]
                <= rows[p]["validation_chip_energy_pj_per_image"] + 1e-6), p


def test_rerun_reuses_finished_cells(quick, capsys):
    _load("run_all").main(["--quick", "--out", str(quick), "--sections", "study"])
    assert "computed" not in capsys.readouterr().out


COMMITTED = RESULTS / "headline.json"


def _committed_rows():
    if not COMMITTED.exists():
        return []
    return json.loads(COMMITTED.read_text())["rows"]


@pytest.fixture(scope="module")
def studies():
    """One study context per model (setup on the test subset, committed calibrations)."""
    from study import Study

    from redy_jax.cache import Cells
    from redy_jax.quant import Calibration
    from redy_jax.study import setup

    out = {}

    def get(model, subset):
        if (model, subset) not in out:
            s = setup(model, limit=subset, calib_images=8, calib_method="minmax")
            cells = Cells(RESULTS / "cells" / model, log=None)
            cal = cells.load("calibrations")["result"]
            cals = {int(k): Calibration.from_dict(d) for k, d in cal.items()}
            out[model, subset] = Study(s, cells, RESULTS, cals, list(cals[8].layers), {},
                                       (0, 0))
        return out[model, subset]

    return get


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed results yet")
@pytest.mark.parametrize("row", _committed_rows(), ids=lambda r: f"{r['model']}-{r['policy']}")
def test_committed_headline_cell_is_what_the_code_produces(studies, row):
    """Every committed headline number, recomputed now on the cell's stored test subset:
    accuracy and energies must be equal (counts are integers; energies sums of them)."""
    from redy_jax.simulate import evaluate_dataset

    sub = row["subset"]
    st = studies(row["model"], sub["images"])
    cal, pm = st.build(row["config"])
    r = evaluate_dataset(st.s.model, st.s.variables, st.s.test_images[:sub["images"]],
                         st.s.test_labels[:sub["images"]], st.s.spec, pm, calibration=cal,
                         progress=False)
    assert r.accuracy == sub["accuracy"]
    assert r.report.chip_energy_pj_per_image() == pytest.approx(
        sub["chip_energy_pj_per_image"], rel=1e-12)
    assert r.report.energy_pj_per_image() == pytest.approx(sub["energy_pj_per_image"],
                                                           rel=1e-12)


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed results yet")
def test_committed_calibrations_are_what_the_code_produces():
    """The static scales the study used (LeNet-5, 8 and 5 bits), recomputed from
    train[0:1000]: zero points, widths and the choice equal, the float ranges and scales
    to float32 rounding (relative 1e-6). They come from the float model's activations,
    whose last bit depends on the CPU's kernels: on an AVX-512 machine one scale came out
    1 float32 ulp (1.2e-7) from the committed value measured on an AVX2 one."""
    from redy_jax.cache import Cells
    from redy_jax.study import calibrations, setup

    committed = Cells(RESULTS / "cells" / "lenet5", log=None).load("calibrations")["result"]
    s = setup("lenet5", limit=1, calib_method="minmax")
    got = calibrations(s, bits=(8, 5))
    for k in (8, 5):
        g, c = got[k].to_dict(), committed[str(k)]
        assert {n: v for n, v in g.items() if n != "layers"} == \
            {n: v for n, v in c.items() if n != "layers"}, k
        assert g["layers"].keys() == c["layers"].keys(), k
        for layer, q in g["layers"].items():
            want = c["layers"][layer]
            assert q.keys() == want.keys(), (k, layer)
            for field, v in q.items():
                if isinstance(v, float):
                    assert v == pytest.approx(want[field], rel=1e-6, abs=1e-12), (k, layer, field)
                else:
                    assert v == want[field], (k, layer, field)


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed results yet")
def test_readmes_are_generated_from_the_committed_json():
    readme = _load("readme")
    assert (ROOT / "experiments" / "README.md").read_text() == readme.experiments_readme(RESULTS)
    block = readme.results_block(RESULTS)
    assert block and block in (ROOT / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed results yet")
@pytest.mark.parametrize("row", _committed_rows(), ids=lambda r: f"{r['model']}-{r['policy']}")
def test_committed_headline_row_on_the_full_test_split(studies, row):
    """The committed headline numbers themselves (full test split), recomputed."""
    from redy_jax.simulate import evaluate_dataset

    st = studies(row["model"], None)
    cal, pm = st.build(row["config"])
    r = evaluate_dataset(st.s.model, st.s.variables, st.s.test_images, st.s.test_labels,
                         st.s.spec, pm, calibration=cal, progress=False)
    assert r.images == row["images"] == 10000
    assert r.accuracy == row["accuracy"]
    assert r.report.chip_energy_pj_per_image() == pytest.approx(
        row["chip_energy_pj_per_image"], rel=1e-12)


def test_joint_search_options_stay_in_the_width_range_and_around_the_base():
    """The joint width/threshold variant offers, per layer, ReDy one bit above and at the
    static base width and one bit below (LZS or ReDy), never a width outside 3..8 and
    never the base itself (the search starts from it)."""
    import types

    import study

    st = types.SimpleNamespace(layers=["a", "b", "c"], cals=dict.fromkeys(study.BITS))
    opts = study.joint_options(st, {"a": 8, "b": 5, "c": 3})
    widths = {p: sorted({w for _, w, _ in o}) for p, o in opts.items()}
    assert widths == {"a": [7, 8], "b": [4, 5, 6], "c": [3, 4]}
    for o in opts.values():
        names = [n for n, _, _ in o]
        assert len(names) == len(set(names)) and "c0" not in names
        for name, w, pol in o:
            assert name.startswith(f"w{w}_") and pol["kind"] == "redy"
    # below the base: leading-zero skipping (thresholds never reached) and ReDy c = 1
    below = {n: pol for n, w, pol in opts["b"] if w == 4}
    assert set(below) == {"w4_lzs", "w4_c1"}
    assert min(below["w4_lzs"]["thresholds"]) >= study.NO_DROP
    # only calibrated widths (the quick study calibrates 8, 5 and 4 bits)
    st.cals = dict.fromkeys((8, 5, 4))
    opts = study.joint_options(st, {"a": 8, "b": 5, "c": 4})
    assert {p: sorted({w for _, w, _ in o}) for p, o in opts.items()} == {
        "a": [5, 8], "b": [4, 5, 8], "c": [4, 5]}
