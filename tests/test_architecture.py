"""The package's shape: no import cycles, and no layer importing a layer above it (imports inside
functions included), and importing calibrate leaves matplotlib's backend alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "calibrate"
# Lowest first: a module may import only from its own layer or the layers before it.
LAYERS = ("errors", "rounding", "version", "records", "lazy", "data", "judging", "store", "stats", "reports",
          "workflows", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Every calibrate module and the calibrate modules it imports, wherever the import statement is."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                found = owner(target) if target.split(".")[0] == "calibrate" else None
                if found and found != name:
                    graph.add_edge(name, found)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def test_import_graph_is_read_from_the_code():
    graph = import_graph()
    assert graph.has_edge("calibrate.workflows.fit", "calibrate.judging.runner")
    assert graph.has_edge("calibrate.reports.fit", "calibrate.stats.calibration")
    assert "calibrate.judging.runner" in graph and graph.number_of_edges() > 100


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles: {cycles[:5]}"


def test_no_layer_imports_a_layer_above_it():
    upward = [(a, b) for a, b in import_graph().edges if a not in ("calibrate", "calibrate.__main__")
              and (layer_of(b) > layer_of(a) or b == "calibrate")]
    assert upward == []


def test_every_module_belongs_to_a_layer():
    outside = [m for m in import_graph() if m not in ("calibrate", "calibrate.__main__") and layer_of(m) == len(LAYERS)]
    assert outside == []


def test_only_the_cli_draws_progress_and_only_benchmarks_hand_write_http():
    """The judging layer reports progress as events; rich (the terminal display) is imported only in
    cli/. The product speaks HTTP through aiohttp and the SDKs: httptools is the benchmarks' own."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(module_name(path))
    assert found["rich"] and all(module.startswith("calibrate.cli.") for module in found["rich"]), found["rich"]
    assert "httptools" not in found


@pytest.mark.parametrize("statement", [
    "import calibrate",
    "from calibrate import fit, compare, score, respond, load_calibration, CalibrateError",
    "import calibrate.reports.fit, calibrate.reports.compare, calibrate.reports.score",
])
def test_importing_calibrate_keeps_the_matplotlib_backend(statement):
    """A notebook chooses its own backend; importing calibrate (reports included) must not switch it."""
    code = ("import matplotlib; matplotlib.use('svg'); " + statement +
            "; print(matplotlib.get_backend())")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin"})
    assert shown.stdout.strip() == "svg"


def test_importing_calibrate_defers_the_heavy_libraries():
    """The SDKs, the statistics libraries, datasets and matplotlib are imported by the code that uses
    them, not by `import calibrate` or the CLI module (test_lean_import.py: no pandas, numpy, aiohttp)."""
    code = ("import sys, calibrate, calibrate.cli.main; print(sorted(m for m in ('matplotlib', 'sklearn', "
            "'scipy.stats', 'scipy.optimize', 'statsmodels', 'krippendorff', 'openai', 'anthropic', 'datasets') "
            "if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
