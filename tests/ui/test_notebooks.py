"""Every numbered notebook runs top to bottom, headless, with the fast parameters.

Each notebook runs in a fresh ``python3`` kernel (this venv's python: jupyter_client
swaps a ``python`` kernel argv for ``sys.executable``) with ``SAE_STEER_SMALL=1``; the
kernel inherits ``SAE_STEER_CACHE`` from tests/conftest.py, so the first notebook
builds the offline model and SAE into ``<repo>/.cache`` and the rest reuse them.
Besides "no cell raised", each notebook must show what a reader comes for.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 1800  # the first notebook on a cold cache builds the offline world
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def run_notebook(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "SAE_STEER_SMALL": "1"}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # raises CellExecutionError, with the traceback, if a cell fails
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def mime_texts(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of type ``mime`` as text; ``mime="stream"`` means printed text."""
    found = []
    for out in outputs(nb):
        if mime == "stream":
            value = out.get("text") if out.get("output_type") == "stream" else None
        else:
            value = out.get("data", {}).get(mime)
        if value is not None:
            found.append(value if isinstance(value, str) else json.dumps(value))
    return found


def widget_models(nb: nbformat.NotebookNode) -> list[dict]:
    """The saved state of every widget model the notebook displayed."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [model["state"] | {"_model_name": model["model_name"]} for model in state.get("state", {}).values()]


def shown_html(nb: nbformat.NotebookNode) -> list[str]:
    """HTML a reader sees: text/html outputs and the values of HTML widgets."""
    return mime_texts(nb, "text/html") + [m["value"] for m in widget_models(nb)
                                          if m["_model_name"] == "HTMLModel" and m.get("value")]


def check_train(nb) -> None:
    assert mime_texts(nb, "image/png") or mime_texts(nb, "text/html") or mime_texts(nb, "stream"), (
        "01: shows no training curve or summary")


def check_top_activations(nb) -> None:
    excerpts = [h for h in shown_html(nb) if 'class="sae-excerpt"' in h]
    assert excerpts, "02: no highlighted excerpt (render_html output) was displayed"
    assert any("data-feature=" in h for h in excerpts), "02: excerpts do not say which feature they show"
    assert mime_texts(nb, "stream"), "02: the plain-text feature card (for the static writeup) is missing"


def check_steering(nb) -> None:
    assert mime_texts(nb, WIDGET_VIEW), "03: the steering panel was not displayed"
    models = widget_models(nb)
    descriptions = {m.get("description") for m in models}
    assert {"feature", "scale"} <= descriptions, f"03: sliders 'feature'/'scale' missing: {descriptions}"
    assert any(m["_model_name"] == "ButtonModel" and m.get("description") == "Generate" for m in models)
    assert any('class="steer-output"' in h for h in shown_html(nb)), "03: no steer-output container"
    assert any('class="sae-excerpt"' in h for h in mime_texts(nb, "text/html")), (
        "03: no re-scored sample is shown as plain HTML (the static writeup needs one)")


def check_rescoring(nb) -> None:
    assert outputs(nb), "04: no output at all"


CHECKS = {"01": check_train, "02": check_top_activations, "03": check_steering, "04": check_rescoring}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path: Path) -> None:
    assert os.environ.get("SAE_STEER_CACHE"), "tests/conftest.py should point SAE_STEER_CACHE at <repo>/.cache"
    nb = run_notebook(path)
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
    assert not any("Traceback (most recent call last)" in t for t in mime_texts(nb, "stream")), (
        f"{path.name}: a traceback was printed")
    check = CHECKS.get(path.name[:2])
    if check is not None:
        check(nb)


def test_kernel_is_this_python() -> None:
    """The ``python3`` kernel the notebooks run in is this interpreter (the venv)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable
