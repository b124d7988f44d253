"""The package layout keeps its promises: no import cycle, no upward import, no module over 400 lines.

The layering (``../shared/DESIGN.md``, "A layout that shows this"): inside ``densereg``,
``registry`` < ``geometry`` < ``data`` < ``nn`` < ``readout`` < the top level (``__init__``, ``infer``);
``densereg`` never imports ``benchmarks``; inside ``benchmarks``, ``baselines`` < ``context`` /
``initialisers`` / ``fitters`` / ``metrics`` / ``records`` < ``experiments`` < ``run`` / ``report``.
Imports are read with :mod:`ast`, so those inside functions count as much as those at the top of a module:
a deferred import hides a cycle from Python, not from the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("densereg", "benchmarks")
MAX_LINES = 400

# Known offenders, to be fixed (never a place to park new ones). Entries: "cycle: a <-> b <-> ..." (sorted
# members of one cycle), "upward: a -> b", "long: path". Empty since the layout of issue 10 landed.
ALLOWED: set[str] = set()

# Rank of each layer; an import may go to the same rank or lower, never higher.
DENSEREG_RANKS = {"registry": 0, "geometry": 1, "data": 2, "nn": 3, "readout": 4}
DENSEREG_TOP = 5           # densereg/__init__.py, densereg/infer.py and any other top-level module
BENCHMARK_RANKS = {"baselines": 10, "context": 11, "initialisers": 11, "fitters": 11, "metrics": 11, "dense_metrics": 11,
                   "records": 11, "seeds": 11, "experiments": 12, "tables": 12, "figures": 12, "verdicts": 12,
                   "run_tables": 12,
                   "run": 13, "report": 13,
                   "depth_metrics": 11, "evalcache": 11}
BENCHMARKS_PACKAGE = 10    # benchmarks/__init__.py: must stay import-free of the harness


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` (a package's ``__init__.py`` names the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``module`` imports anywhere in its file (top level, functions, classes).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
    ``importlib.import_module("literal")`` counts as an import of that literal.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        # the longest project module that ``name`` starts with (``import a.b.c`` needs a.b.c, or a.b)
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in modules:
                found.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT, packages=PACKAGES) -> tuple[dict[str, set[str]], dict[str, Path]]:
    """The project's import graph: module -> the project modules it imports."""
    modules = discover(root, packages)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}, modules


def rank(module: str) -> int | None:
    """Layer rank of a module (None: the module sits outside every layer, itself an error)."""
    parts = module.split(".")
    if parts[0] == "densereg":
        if len(parts) == 1:
            return DENSEREG_TOP
        if parts[1] in DENSEREG_RANKS:
            return DENSEREG_RANKS[parts[1]]
        return DENSEREG_TOP
    if parts[0] == "benchmarks":
        if len(parts) == 1:
            return BENCHMARKS_PACKAGE
        return BENCHMARK_RANKS.get(parts[1])
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (a chain ``a -> b -> ... -> a``) per strongly connected component of the graph."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):  # Tarjan; the graph has ~100 nodes, recursion depth is no concern
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    chains = []
    for comp in comps:
        members = set(comp)
        start = comp[0]
        # breadth-first search for the shortest way back to ``start`` inside the component
        prev, frontier, seen = {}, [start], {start}
        chain = None
        while frontier and chain is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        chain, node = [start], v
                        while node != start:
                            chain.append(node)
                            node = prev[node]
                        chain = [start] + chain[1:][::-1] + [start]
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if chain is not None:
                    break
            frontier = nxt
        chains.append(chain)
    return chains


def cycle_key(chain: list[str]) -> str:
    return "cycle: " + " <-> ".join(sorted(set(chain)))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import of a higher (or unranked) layer, or of benchmarks from densereg."""
    bad = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            r_src, r_dst = rank(src), rank(dst)
            if r_src is None or r_dst is None or r_dst > r_src:
                bad.append(f"{src} -> {dst}")
    return bad


def long_modules(modules: dict[str, Path], root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    """``"path (n lines)"`` for every module longer than ``limit`` lines."""
    out = []
    for path in sorted(modules.values()):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append((path.relative_to(root).as_posix(), n))
    return [f"{p} ({n} lines)" for p, n in out]


GRAPH, MODULES = import_graph()


def test_every_module_has_a_layer():
    unranked = [m for m in sorted(MODULES) if rank(m) is None]
    assert not unranked, ("modules outside the layering (add them to a layer in DESIGN.md and this test): "
                          + ", ".join(unranked))


def test_no_import_cycles():
    found = [(cycle_key(chain), " -> ".join(chain)) for chain in cycles(GRAPH)]
    bad = [chain for key, chain in found if key not in ALLOWED]
    assert not bad, "import cycles:\n  " + "\n  ".join(bad)


def test_no_upward_imports():
    bad = [edge for edge in upward_imports(GRAPH) if f"upward: {edge}" not in ALLOWED]
    assert not bad, "imports that go up the layering:\n  " + "\n  ".join(bad)


def test_no_module_over_400_lines():
    bad = [entry for entry in long_modules(MODULES) if f"long: {entry.rsplit(' (', 1)[0]}" not in ALLOWED]
    assert not bad, f"modules over {MAX_LINES} lines (split along a concept):\n  " + "\n  ".join(bad)


def test_allow_list_has_no_stale_entries():
    """An allow-list entry that no longer matches an offender must go, so the list only ever shrinks."""
    current = {cycle_key(chain) for chain in cycles(GRAPH)}
    current |= {f"upward: {edge}" for edge in upward_imports(GRAPH)}
    current |= {f"long: {entry.rsplit(' (', 1)[0]}" for entry in long_modules(MODULES)}
    stale = sorted(ALLOWED - current)
    assert not stale, "stale allow-list entries (remove them):\n  " + "\n  ".join(stale)


# --- the checker itself can fail -------------------------------------------------------------------------


@pytest.fixture
def toy(tmp_path):
    """A toy tree: a cycle a <-> b inside geometry (one edge inside a function), data importing nn
    (upward), densereg importing benchmarks, and a module of 401 lines."""
    files = {
        "densereg/__init__.py": "",
        "densereg/geometry/__init__.py": "",
        "densereg/geometry/a.py": "from densereg.geometry import b\n",
        "densereg/geometry/b.py": "def f():\n    from . import a\n",
        "densereg/data/__init__.py": "",
        "densereg/data/c.py": "import densereg.nn.d\n",
        "densereg/nn/__init__.py": "",
        "densereg/nn/d.py": "from densereg.geometry.a import thing\n" + "x = 1\n" * 400,
        "densereg/nn/e.py": "import importlib\nimportlib.import_module('benchmarks.run')\n",
        "benchmarks/__init__.py": "",
        "benchmarks/run.py": "from benchmarks.baselines import hog\n",
        "benchmarks/baselines/__init__.py": "",
        "benchmarks/baselines/hog.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_finds_cycles_upward_imports_and_long_modules(toy):
    graph, modules = import_graph(toy)
    assert graph["densereg.nn.d"] == {"densereg.geometry.a"}              # from-import of a name -> module
    assert graph["benchmarks.run"] == {"benchmarks.baselines.hog"}        # from-import of a module
    assert cycles(graph) == [["densereg.geometry.a", "densereg.geometry.b", "densereg.geometry.a"]]
    assert upward_imports(graph) == ["densereg.data.c -> densereg.nn.d", "densereg.nn.e -> benchmarks.run"]
    assert long_modules(modules, toy) == ["densereg/nn/d.py (401 lines)"]
