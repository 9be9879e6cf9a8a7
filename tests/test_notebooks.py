"""Every notebook runs top to bottom on the bundled sample and draws: its cells produce PNG images (under
whatever MPLBACKEND the test runs with; CI sets Agg, which a notebook must not depend on). The committed
notebooks carry their outputs (tools/make_examples.py executes them), so they show on a hosting page
before anyone runs them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def tool():
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "tools" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outputs(notebook) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def images(notebook) -> list:
    return [o for o in outputs(notebook) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_draws(path, tmp_path):
    notebook = tool().execute_notebook(path, tmp_path)
    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    assert images(notebook), f"{path.name} draws no figure"
    assert len(images(notebook)) >= len(images(nbformat.read(path, as_version=4)))  # as many as the committed copy


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_carries_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{path.name}: run tools/make_examples.py"
    assert images(notebook) and not [o for o in outputs(notebook) if o.output_type == "error"]
