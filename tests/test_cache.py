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


def test_code_version_counts_only_changes_under_the_paths_it_is_given(tmp_path, monkeypatch):
    import subprocess

    from redy_jax import cache

    monkeypatch.setattr(cache, "ROOT", tmp_path)
    cache.code_version.cache_clear()
    try:
        assert cache.code_version() == {"commit": None, "dirty": None}  # not a checkout
        cache.code_version.cache_clear()
        git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t",
                                         *a], cwd=tmp_path, check=True, capture_output=True)
        git("init", "-q")
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.py").write_text("x = 1\n")
        (tmp_path / "notes.txt").write_text("n\n")
        git("add", ".")
        git("commit", "-q", "-m", "c")
        (tmp_path / "notes.txt").write_text("changed\n")  # tracked, outside src
        (tmp_path / "src" / "c.txt").write_text("c\n")  # untracked, in src, not a .py
        head = git("rev-parse", "HEAD").stdout.decode().strip()
        # glob pathspecs (what provenance() passes) see only the files they match
        assert cache.code_version((":(glob)src/*.py",)) == {"commit": head, "dirty": False}
        (tmp_path / "src" / "b.py").write_text("y = 2\n")  # untracked, inside src
        assert cache.code_version((":(glob)src/**/*.py",)) == {"commit": head, "dirty": True}
        assert cache.code_version() == {"commit": head, "dirty": True}
        assert cache.code_version(("src",)) == {"commit": head, "dirty": True}
        assert cache.code_version(("other",)) == {"commit": head, "dirty": False}
    finally:
        cache.code_version.cache_clear()
