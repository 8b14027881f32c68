"""The package's layering, read from its import statements (no code is run).

The numerical core (hw < quant < xbar < policy, energy) imports nothing above it and no
``flax.linen``; the module graph of the whole package has no cycles.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "redy_jax"
CORE_RANK = {"hw": 0, "quant": 1, "xbar": 2, "policy": 3, "energy": 3}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names (function-local ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            names.update(subs or {node.module})  # `from pkg import module` names the module
    return names


MODULES = _modules()
GRAPH = {m: {i for i in _imports(f) if i in MODULES and i != m} for m, f in MODULES.items()}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_module_graph_has_no_cycles():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in GRAPH[m]:
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, m, d]))
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) in CORE_RANK))
def test_core_modules_import_nothing_above_them(module):
    rank = CORE_RANK[_package(module)]
    for dep in _imports(MODULES[module]):
        assert not dep.startswith("flax.linen"), f"{module} imports {dep}"
        if dep.startswith("redy_jax.") and dep in MODULES:
            pkg = _package(dep)
            assert pkg in CORE_RANK and CORE_RANK[pkg] <= rank, f"{module} imports {dep}"


def test_the_checker_sees_a_violation():
    """The walk above is not vacuous: the layer engine imports the quantisers and the
    simulator imports the engine, and the rule would reject the reverse."""
    assert "redy_jax.quant.activations" in GRAPH["redy_jax.xbar.layer"]
    assert "redy_jax.xbar.layer" in GRAPH["redy_jax.simulate"]
    assert CORE_RANK.get(_package("redy_jax.simulate")) is None
