"""The speed figures the README quotes are the committed benchmark results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _speed_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Speed and scale")
    return text[start:text.index("\n## ", start + 1)]


def _row(section: str, label: str) -> list[str]:
    """The cells of the README table row that starts with ``label``."""
    for line in section.splitlines():
        if line.startswith(f"| {label}"):
            return [c.strip() for c in line.strip("|").split("|")][1:]
    raise AssertionError(f"no README speed table row {label!r}")


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_were_measured_on_the_code_as_it_is(path):
    """Every committed benchmark result carries the digest of the package and benchmark
    scripts that measured it, and that is the code here now: a change to either needs
    the benchmarks re-run (README: "Speed and scale"), never a stale figure."""
    from redy_jax.cache import source_digest

    made_by = json.loads(path.read_text()).get("provenance", {})
    assert made_by.get("sources") == source_digest(), (
        f"{path.name} was measured on other code (commit {made_by.get('commit')}): "
        "re-run the benchmark that writes it")
    assert made_by.get("dirty") is False, f"{path.name} was measured on uncommitted code"


def test_source_digest_follows_the_code(tmp_path):
    """The digest changes with a file's contents and with a new file, not with files
    outside the patterns or with byte-code caches."""
    from redy_jax.cache import source_digest

    pkg = tmp_path / "redy_jax"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    d0 = source_digest(root=tmp_path)
    (tmp_path / "notes.md").write_text("unrelated")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.py").write_text("cached")
    assert source_digest(root=tmp_path) == d0
    (pkg / "a.py").write_text("x = 2\n")
    d1 = source_digest(root=tmp_path)
    assert d1 != d0
    (pkg / "b.py").write_text("")
    assert source_digest(root=tmp_path) != d1


@pytest.mark.parametrize("label,file,key,field", [
    ("ResNet-20, 1,000 images, exact", "cpu_full.json", "resnet20_fashion_mnist",
     "exact_vs_float"),
    ("ResNet-20, 250 images, exact", "cpu_quick.json", "resnet20_fashion_mnist",
     "exact_vs_float"),
    ("ResNet-18 224x224 batch 1, exact", "cpu_full.json", "resnet18_224x224_batch1",
     "exact_vs_float"),
    ("ResNet-20, faithful", "cpu_full.json", "resnet20_fashion_mnist",
     "faithful_vs_float"),
    ("ResNet-18 224x224, faithful", "cpu_full.json", "resnet18_224x224_batch1",
     "faithful_vs_float"),
    ("ResNet-20, bit-plane model", "cpu_full.json", "resnet20_fashion_mnist",
     "bit_plane_vs_float"),
    ("ResNet-18 224x224, bit-plane model", "cpu_full.json", "resnet18_224x224_batch1",
     "bit_plane_vs_float"),
])
def test_readme_speed_table_quotes_the_committed_results(label, file, key, field):
    """Every ratio in the README's speed table is the committed JSON's, rounded as
    printed (static, LZS, ReDy window, ReDy channel; '-' where not measured)."""
    ratios = _load(file)[key][field]
    cells = _row(_speed_section(), label)
    for policy, cell in zip(("static", "lzs", "redy", "redy_channel"), cells, strict=False):
        if cell == "-":
            assert policy not in ratios
            continue
        digits = len(cell.rstrip("x").split(".")[1])
        assert cell == f"{ratios[policy]:.{digits}f}x", (label, policy)


def test_readme_quotes_the_bare_engine_and_memory_results():
    section = " ".join(_speed_section().split())  # line breaks as spaces
    two, one = _load("crossbar_matmul.json"), _load("crossbar_matmul_1thread.json")
    assert one["cpus_used"] == 1
    assert (f"exact {two['exact_vs_float']:.2f}x a float32 matmul (2 threads) / "
            f"{one['exact_vs_float']:.2f}x (one thread)") in section
    assert (f"bit-plane model of every read {two['bit_plane_us_per_128x128_mvm']:.2f} us "
            f"per 128x128 MVM (2 threads) / {one['bit_plane_us_per_128x128_mvm']:.2f} us "
            "(one thread") in section
    assert (f"faithful {two['faithful_us_per_128x128_mvm']:.2f} us (2 threads) / "
            f"{one['faithful_us_per_128x128_mvm']:.2f} us (one thread)") in section
    assert (two["faithful_vectors_modelled"] == one["faithful_vectors_modelled"]
            and f"{two['faithful_vectors_modelled']} of the 1,000 vectors" in section)
    for name in ("memory_resnet50.json", "memory_resnet18_redy_window.json"):
        d = _load(name)
        assert d["within_8gb"]
        assert f"{d['peak_rss_mb'] / 1024:.1f} GB" in section


def test_readme_saturation_statement_is_the_committed_results():
    """The README says the faithful benchmark spec saturates nothing on these images."""
    assert "(0 saturations per image for every policy)" in " ".join(_speed_section().split())
    full = _load("cpu_full.json")
    for key in ("resnet20_fashion_mnist", "resnet18_224x224_batch1"):
        sats = full[key]["faithful_saturations_per_image"]
        assert sats and all(v == 0 for v in sats.values()), key
