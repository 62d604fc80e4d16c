"""Run the numbered notebooks top to bottom in a fresh kernel, with papermill-style parameters.

nbformat/nbclient are imported inside the functions that need them: they are the
writeup's optional dependencies (the ``dev`` extra), not the library's.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"


def default_notebook_dir() -> Path:
    """``notebooks/`` of the source checkout this package was imported from, else ``./notebooks``."""
    beside_package = Path(__file__).resolve().parents[3] / "notebooks"
    return beside_package if beside_package.is_dir() else Path.cwd() / "notebooks"


def find_notebooks(notebook_dir: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in ``notebook_dir``, in order."""
    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    found = sorted(folder.glob(NOTEBOOK_PATTERN))
    if not found:
        raise FileNotFoundError(
            f"no numbered notebooks (NN_name.ipynb) in {folder.resolve()}; run from the "
            "repository root or pass the notebooks explicitly")
    return found


def inject_parameters(nb: Any, parameters: dict[str, Any]) -> Any:
    """Insert a cell assigning ``parameters`` right after the cell tagged ``parameters``.

    Same convention as papermill: the notebook's own defaults stay visible and the
    overrides follow in a cell tagged ``injected-parameters``. Values must be literals.
    """
    import nbformat  # optional: the writeup's dependency, not the library's

    if not parameters:
        return nb
    lines = []
    for name, value in parameters.items():
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
        ast.literal_eval(repr(value))  # refuses values that do not round-trip as literals
        lines.append(f"{name} = {value!r}")
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError("this notebook has no cell tagged 'parameters' to override")
    cell = nbformat.v4.new_code_cell("# Parameters injected by sae_steer writeup\n" + "\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def execute_notebook(path: Path, *, small: bool, parameters: dict[str, Any] | None = None,
                     timeout: int = 1800, kernel_name: str = "python3", progress: bool = True) -> Any:
    """Run ``path`` in a fresh kernel (cwd = its folder) and return the executed notebook.

    ``small`` reaches the kernel both as ``SAE_STEER_SMALL=1`` and as ``SMALL = True``.
    """
    import nbformat  # optional: the writeup's dependencies, not the library's
    from nbclient import NotebookClient  # optional, as above
    from nbclient.exceptions import CellExecutionError  # optional, as above

    nb = nbformat.read(path, as_version=4)
    params = dict(parameters or {})
    if small:
        params.setdefault("SMALL", True)
    inject_parameters(nb, params)
    env = dict(os.environ)
    if small:
        env["SAE_STEER_SMALL"] = "1"
    if env.get("SAE_STEER_CACHE"):  # the kernel runs in the notebook's folder: no relative paths
        env["SAE_STEER_CACHE"] = str(Path(env["SAE_STEER_CACHE"]).resolve())
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    bar = tqdm(total=n_code, desc=path.stem, unit="cell", disable=not progress)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_executed=lambda **_: bar.update(1))
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        raise RuntimeError(f"{path.name} failed while exporting the writeup:\n{err}") from err
    finally:
        bar.close()
    return nb
