"""Committed notebooks are clean: numbered names, no outputs, stable cell ids, and the
parameters convention every runner (nbclient, papermill, Lab, the writeup) relies on.

Fix a failure with ``/work/venv/bin/nbstripout --keep-id notebooks/NN_name.ipynb``
(or ``python scripts/strip_notebooks.py``).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert [p for p in NOTEBOOKS if NAME.match(p.name)], f"no NN_name.ipynb notebooks in {NOTEBOOK_DIR}"


def test_notebook_numbers_are_unique() -> None:
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), numbers


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request) -> tuple[Path, nbformat.NotebookNode]:
    path = request.param
    return path, nbformat.read(path, as_version=4)


def test_name_is_numbered(notebook) -> None:
    path, _ = notebook
    assert NAME.match(path.name), f"{path.name}: name notebooks NN_lower_snake.ipynb"


def test_valid_and_every_cell_has_an_id(notebook) -> None:
    path, nb = notebook
    nbformat.validate(nb)  # raises on a malformed notebook
    ids = [cell.get("id") for cell in nb.cells]
    assert all(ids), f"{path.name}: cells without an id (nbformat >= 4.5 ids keep diffs stable)"
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate cell ids"


def test_no_outputs_or_execution_counts(notebook) -> None:
    path, nb = notebook
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run nbstripout --keep-id {path.name}"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in metadata; strip it"


def test_first_code_cell_holds_literal_parameters(notebook) -> None:
    path, nb = notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cells"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: tag the first code cell 'parameters'"
    for node in ast.parse(first.source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), (
            f"{path.name}: the parameters cell holds only NAME = literal lines, got {ast.unparse(node)!r}")
        ast.literal_eval(node.value)  # raises if a parameter is not a plain literal
    names = {t.id for node in ast.parse(first.source).body
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target])}
    assert "SMALL" in names, f"{path.name}: the parameters cell must define SMALL"
    assert len(code) > 1 and 'os.environ.get("SAE_STEER_SMALL")' in code[1].source.replace("'", '"'), (
        f"{path.name}: the cell after the parameters derives "
        'SMALL = SMALL or os.environ.get("SAE_STEER_SMALL") == "1"')
