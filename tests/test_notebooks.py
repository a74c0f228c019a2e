"""Every notebook runs top to bottom and its headline figures hold.

Each notebook ends with a cell that asserts its headline figures and prints
them as `figures: {json}`. nbclient raises on a failed assertion; these tests
also read the printed figures back, so a notebook whose checking cell was
removed, or stopped before it, fails too.
"""

import json
import math
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
FIGURES_PREFIX = "figures: "

# The one figure each notebook is about, checked again here so that loosening
# a notebook's own assertion does not go unnoticed.
HEADLINES = {
    "01_pruning": lambda f: abs(f["kernel_sparsity"] - 0.8) <= 0.01,
    "02_qat_and_export": lambda f: f["keras_tflite_agreement"] >= 0.99,
    "03_distillation": lambda f: f["distilled_accuracy"] >= f["student_alone_accuracy"] + 0.02,
    "04_channel_pruning": lambda f: f["macs_ratio"] <= 0.5 and f["masked_vs_stripped"] < 1e-4,
}


def test_there_are_notebooks_for_each_technique():
    names = [path.name for path in NOTEBOOKS]
    assert len(names) >= 3
    for topic in ("pruning", "qat", "distillation"):
        assert any(topic in name for name in names), topic
    assert sorted(HEADLINES) == [path.stem for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_figures_hold(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    last = _code_cells(notebook)[-1]
    assert "assert " in last.source, f"{path.name}: the last code cell asserts nothing"
    env_before = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        # Raises CellExecutionError, with the figures, if an assertion fails.
        resources = {"metadata": {"path": str(tmp_path)}}
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    finally:
        if env_before is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = env_before
    figures = _printed_figures(last)
    assert figures and all(math.isfinite(value) for value in figures.values()), figures
    assert HEADLINES[path.stem](figures), figures


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _printed_figures(cell):
    """The `figures: {json}` line the cell printed, parsed."""
    lines = [
        line[len(FIGURES_PREFIX):]
        for output in cell.get("outputs", [])
        if output.get("name") == "stdout"
        for line in output["text"].splitlines()
        if line.startswith(FIGURES_PREFIX)
    ]
    assert len(lines) == 1, f"expected one '{FIGURES_PREFIX}...' line, got {lines}"
    return json.loads(lines[0])
