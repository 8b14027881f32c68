"""examples/own_model.py, the docs/own_model.md walk-through, runs end to end."""

import importlib.util
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_own_model_walkthrough_on_digits():
    spec = importlib.util.spec_from_file_location("own_model",
                                                  ROOT / "examples" / "own_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the example may hit a search edge
        res = mod.main(steps=150, tune_steps=4)
    assert set(res) == {"static 8-bit", "ReDy", "ReDy tuned"}
    assert res["static 8-bit"]["accuracy"] > 0.85
    for name in ("ReDy", "ReDy tuned"):
        assert res[name]["accuracy"] >= res["static 8-bit"]["accuracy"] - 0.02
        assert res[name]["mean"] <= res["static 8-bit"]["mean"]
        assert res[name]["p5"] <= res[name]["mean"] <= res[name]["p95"]
