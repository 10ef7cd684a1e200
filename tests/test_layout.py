"""The layout of the reduction library (README "Layout"): one module per seed step for its lazy
wrapper, ``reduce/<instrument>/steps/<step>.py``, and one for its plain-array kernels,
``reduce/<instrument>/kernels/<step>.py``; steps import their kernels, kernels never import a
step, xarray or dask; no import cycles anywhere in ``reduce``."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "reduce"
INSTRUMENTS = ("swas", "mips")
STEP_PACKAGES = INSTRUMENTS + ("sed",)   # packages whose steps/ and kernels/ pair up by name
LAZY = ("xarray", "dask", "distributed")


def _name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name):
    """Every module ``name`` imports (anywhere in the file): reduce modules resolved to the
    module a name refers to (``from pkg import mod`` -> pkg.mod), others by their full name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return out - {name}


GRAPH = {name: {m for m in _imports(name) if m in MODULES} for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycles():
    """No module pair imports each other, and no longer cycle either."""
    pairs = sorted((a, b) for a in GRAPH for b in GRAPH[a] if a < b and a in GRAPH[b])
    assert not pairs, f"modules importing each other: {pairs}"
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("instrument", STEP_PACKAGES)
def test_steps_and_kernels_pair_up(instrument):
    steps = {p.stem for p in (ROOT / instrument / "steps").glob("[!_]*.py")}
    kernels = {p.stem for p in (ROOT / instrument / "kernels").glob("[!_]*.py")}
    assert steps, f"no step modules in reduce/{instrument}/steps"
    assert steps <= kernels, f"steps without a kernels module of the same name: {sorted(steps - kernels)}"
    assert not set((ROOT / instrument).glob("*.py")) & {ROOT / instrument / f"{s}.py" for s in steps | kernels}, \
        "a step or kernel module outside steps/ and kernels/"
    for step in sorted(steps):
        name = f"reduce.{instrument}.steps.{step}"
        assert f"reduce.{instrument}.kernels.{step}" in GRAPH[name], f"{name} does not use its kernels"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if ".kernels" in n))
def test_kernels_never_import_steps_xarray_or_dask(name):
    bad = sorted(m for m in _imports(name) if ".steps" in m or m.split(".")[0] in LAZY)
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_public_names(instrument):
    pkg = importlib.import_module(f"reduce.{instrument}")
    for sub in pkg.__all__:
        obj = getattr(pkg, sub)
        if isinstance(obj, type(importlib)):
            assert obj.__name__ == f"reduce.{instrument}.{sub}"
        else:                                   # the public API functions: documented
            assert callable(obj) and obj.__doc__, sub
    assert {"open_store", "plan", "run"} <= set(pkg.__all__)
    assert {"steps", "kernels"} <= set(pkg.__all__)
    steps = importlib.import_module(f"reduce.{instrument}.steps")
    assert steps.__all__ and len(set(steps.__all__)) == len(steps.__all__)
    for fn in steps.__all__:
        obj = getattr(steps, fn)
        assert callable(obj) and obj.__module__.startswith(f"reduce.{instrument}.steps."), fn
        assert obj.__doc__ and "(" in obj.__doc__, f"{fn}: docstring should give dims and units"
