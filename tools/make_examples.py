"""Regenerate the committed examples: the example reports under docs/examples/ and the outputs of the
notebooks in notebooks/, from the bundled sample and offline judges.

    python tools/make_examples.py                 (from the repository root; reports and notebooks)
    python tools/make_examples.py --no-notebooks  (the reports only)

Writes docs/examples/heuristic/ (`calibrate fit --judge heuristic --invariance padding,hedging,markdown,politeness`),
docs/examples/comparison/ (`calibrate compare --judges heuristic-strict,panel --order both --repeats 2
--invariance padding,hedging,markdown,politeness --responses sample`, baselines added) and
docs/examples/score-heuristic/ (`calibrate score --judge heuristic --responses sample`), each with the
CLI's default settings, from a fresh cache so that the counts do not depend on earlier runs. They live
outside reports/, where the CLI writes by default, so running the quick start never rewrites them.
Recorded paths are portable (relative to the repository or the package), so the files read the same on
every machine. Then every notebook is executed in place (nbclient), so the committed notebooks show
their tables and figures. tests/test_examples.py regenerates the reports and checks the committed ones
against the code; tests/test_notebooks.py executes the notebooks.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import calibrate

if TYPE_CHECKING:  # nbformat and nbclient come with the `test` extra; only the notebooks need them
    from nbformat import NotebookNode

EXAMPLES = Path("docs") / "examples"
EXAMPLE_CACHE = EXAMPLES / ".example-cache.sqlite3"
INVARIANCE = ("padding", "hedging", "markdown", "politeness")  # the biases the examples show
NOTEBOOKS = Path("notebooks")


def make(root: Path = Path(".")) -> dict[str, Path]:
    """Write the three example reports under `root`/docs/examples/ (run with `root` as the working folder,
    so that the records name `docs/examples/...`); returns each example's folder."""
    examples = root / EXAMPLES
    cache = root / EXAMPLE_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    for stale in cache.parent.glob(cache.name + "*"):
        stale.unlink()
    folders = {"fit": examples / "heuristic", "compare": examples / "comparison", "score": examples / "score-heuristic"}
    try:
        fitted = calibrate.fit("heuristic", out=folders["fit"], cache=cache, invariance=INVARIANCE)
        calibrate.compare(["heuristic-strict", "panel"], order="both", repeats=2, out=folders["compare"],
                          cache=cache, n_boot=1000, invariance=INVARIANCE,  # the CLI's compare default
                          responses=["sample"])
        calibrate.score("heuristic", ["sample"], calibration=fitted.paths["calibration"], out=folders["score"],
                        cache=cache)
    finally:
        for used in cache.parent.glob(cache.name + "*"):
            used.unlink()
    return folders


def execute_notebook(path: Path, workdir: Path) -> NotebookNode:
    """Run a notebook top to bottom in `workdir` with a fresh kernel; returns it with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def make_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """Execute every notebook in `folder` and save it with its outputs (run in a scratch folder, so
    nothing they write lands in the repository)."""
    import nbformat

    written = []
    for path in sorted(folder.glob("*.ipynb")):
        with tempfile.TemporaryDirectory() as scratch:
            notebook = execute_notebook(path, Path(scratch))
        nbformat.write(notebook, path)
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-notebooks", action="store_true", help="regenerate the example reports only")
    arguments = parser.parse_args()
    for kind, folder in make().items():
        print(f"{kind:<8} {folder}")
    if not arguments.no_notebooks:
        for path in make_notebooks():
            print(f"notebook {path}")
