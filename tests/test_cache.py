"""Fingerprinted result cells: reuse only under the same settings, record provenance,
and name the cells a run did not use."""

from redy_jax.cache import Cells


def test_a_cell_is_reused_only_under_its_settings(tmp_path):
    cells = Cells(tmp_path, log=None)
    calls = []
    compute = lambda v: (lambda: calls.append(v) or {"v": v})
    assert cells.get("a/x", {"k": 1}, compute(1)) == {"v": 1}
    assert cells.get("a/x", {"k": 1}, compute(2)) == {"v": 1}  # cached
    assert cells.get("a/x", {"k": 2}, compute(3)) == {"v": 3}  # settings changed
    assert calls == [1, 3]
    cell = cells.load("a/x")
    assert cell["fingerprint"]["settings"] == {"k": 2}
    assert {"commit", "dirty", "date", "seconds"} <= set(cell["provenance"])


def test_unused_names_the_cells_a_run_did_not_ask_for(tmp_path):
    old = Cells(tmp_path, log=None)
    for name in ("search/a", "eval/x", "eval/y"):
        old.get(name, {}, lambda: {})
    run = Cells(tmp_path, log=None)  # a later run asks for two of them
    run.get("search/a", {}, lambda: {})
    run.get("eval/y", {}, lambda: {})
    assert run.unused() == [tmp_path / "eval" / "x.json"]
    assert old.unused() == []
