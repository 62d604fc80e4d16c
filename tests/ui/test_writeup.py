"""The writeup export: parameter injection, asset fetching, index page, and one real
export of a throwaway widget notebook (the real notebooks are exported in CI by
``python -m sae_steer writeup --small`` and opened offline in tests/ui/test_browser.py)."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sae_steer.ui.writeup import assets, execute, export


def _notebook(*cells) -> nbformat.NotebookNode:
    return new_notebook(cells=list(cells), metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})


def _params_cell(source: str = "SMALL = False\nFEATURE = 3"):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


# ------------------------------------------------------------ parameters ----

def test_inject_parameters_follows_the_parameters_cell() -> None:
    nb = _notebook(new_markdown_cell("# T"), _params_cell(), new_code_cell("print(FEATURE)"))
    execute.inject_parameters(nb, {"SMALL": True, "FEATURE": 12, "MODE": "clamp"})
    injected = nb.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert injected.source.splitlines()[1:] == ["SMALL = True", "FEATURE = 12", "MODE = 'clamp'"]
    assert nb.cells[3].source == "print(FEATURE)"


def test_inject_parameters_rejects_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        execute.inject_parameters(_notebook(new_code_cell("x = 1")), {"SMALL": True})
    with pytest.raises(ValueError, match="not a Python identifier"):
        execute.inject_parameters(_notebook(_params_cell()), {"bad-name": 1})
    with pytest.raises((ValueError, SyntaxError)):
        execute.inject_parameters(_notebook(_params_cell()), {"X": object()})
    nb = _notebook(_params_cell())
    assert len(execute.inject_parameters(nb, {}).cells) == 1


def test_cli_parses_literal_parameters(monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(export, "export_writeup", lambda out, **kw: seen.update(kw, out=out))
    assert export.main(["--small", "--out", "w", "-p", "FEATURE=7", "-p", "MODE=clamp", "-p", "S=2.5"]) == 0
    assert seen["parameters"] == {"FEATURE": 7, "MODE": "clamp", "S": 2.5}
    assert seen["small"] is True and seen["out"] == "w" and seen["notebooks"] is None
    with pytest.raises(SystemExit):
        export.main(["-p", "FEATURE"])


def test_cli_reports_missing_notebooks(tmp_path, capsys) -> None:
    assert export.main(["--out", str(tmp_path / "w"), str(tmp_path / "nope.ipynb")]) == 1
    assert "nope.ipynb" in capsys.readouterr().err


def test_find_notebooks_keeps_numbered_ones_in_order(tmp_path) -> None:
    for name in ("02_b.ipynb", "01_a.ipynb", "scratch.ipynb", "10_c.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in execute.find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    with pytest.raises(FileNotFoundError, match="no numbered notebooks"):
        execute.find_notebooks(tmp_path / "empty")


# ------------------------------------------------------------ index page ----

def test_key_results_keep_html_and_escape_text() -> None:
    cell = new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={"text/html": "<b>L0 = 12</b>"}),
        nbformat.v4.new_output("stream", name="stdout", text="a < b & c\n"),
    ])
    cell.metadata["tags"] = ["key-result"]
    nb = _notebook(cell, new_code_cell("y", outputs=[nbformat.v4.new_output("stream", name="stdout", text="no")]))
    assert export.key_results(nb) == ["<b>L0 = 12</b>", "<pre>a &lt; b &amp; c\n</pre>"]


PNG_B64 = "iVBORw0KGgo=\n"  # a PNG signature is enough: the index only embeds it


def _key_cell(*outputs):
    cell = new_code_cell("x", outputs=list(outputs))
    cell.metadata["tags"] = ["key-result"]
    return cell


def test_key_results_show_figures_as_images_never_as_reprs() -> None:
    figure = nbformat.v4.new_output("display_data", data={
        "image/png": PNG_B64, "text/plain": "<Figure size 640x330 with 1 Axes>"})
    # without an image (e.g. MPLBACKEND=agg) the figure leaves only its repr: drop it
    bare = nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 640x330 with 1 Axes>"})
    obj = nbformat.v4.new_output("execute_result", data={"text/plain": "<foo.Bar object at 0x7f>"},
                                 execution_count=1)
    value = nbformat.v4.new_output("execute_result", data={"text/plain": "0.876"}, execution_count=2)
    snippets = export.key_results(_notebook(_key_cell(figure, bare, obj, value)))
    assert snippets == ['<img alt="figure" src="data:image/png;base64,iVBORw0KGgo=">', "<pre>0.876</pre>"]


def test_index_wraps_long_lines_and_fits_images() -> None:
    entry = export.ExportedNotebook("01_train", "Train", 1.0, ["<pre>" + "x | " * 200 + "</pre>"])
    page = export.render_index([entry], small=True, parameters={})
    assert export.INDEX_CSS in page
    assert "white-space:pre-wrap" in export.INDEX_CSS and "overflow-wrap:anywhere" in export.INDEX_CSS
    assert ".key-result img{max-width:100%" in export.INDEX_CSS


def test_index_tables_wrap_to_fit_and_scroll_only_in_their_box() -> None:
    """Notebook 04's 13-column table was cut at the page's edge at 1280 px; the browser
    test measures the page, this pins the rules that make it fit."""
    css = export.INDEX_CSS
    assert ".key-result{overflow-x:auto;max-width:100%" in css  # a box of its own scrolls
    assert "max-width:100%}" in css.split(".key-result table{")[1].split("}")[0] + "}"
    assert "overflow-wrap:break-word" in css  # long headers wrap instead of widening it


def test_index_links_each_notebook_and_escapes_titles() -> None:
    entry = export.ExportedNotebook("03_steering", "Steering <3", 4.2, ["<b>ok</b>"])
    page = export.render_index([entry], small=True, parameters={"FEATURE": 2})
    assert '<a href="03_steering.html">Steering &lt;3</a>' in page
    assert "<b>ok</b>" in page and "FEATURE = 2" in page and "small" in page


def test_notebook_title_is_the_first_heading() -> None:
    nb = _notebook(new_markdown_cell("intro\n## 3. Steering the model\ntext"))
    assert export.notebook_title(nb, "fallback") == "3. Steering the model"
    assert export.notebook_title(_notebook(new_code_cell("1")), "fallback") == "fallback"


# ---------------------------------------------------------------- assets ----

def _tarball(path: Path, files: dict[str, bytes]) -> str:
    """Write an npm-style tarball; return its npm integrity string."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def test_widget_assets_extracts_only_what_the_page_loads(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    hm = _tarball(cache / "jupyter-widgets-html-manager-1.0.15.tgz", {
        "package/dist/embed-amd.js": b"define()", "package/dist/abc.woff2": b"font",
        "package/dist/embed.js": b"cjs", "package/dist/libembed-amd.js": b"dup",
        "package/dist/../../evil.js": b"x", "package/src/index.ts": b"src"})
    rq = _tarball(cache / "requirejs-2.3.8.tgz", {"package/require.js": b"rq", "package/bin/r.js": b"r"})
    monkeypatch.setattr(assets, "_NPM_PACKAGES", (
        ("@jupyter-widgets/html-manager", "1.0.15", hm), ("requirejs", "2.3.8", rq)))
    ready = assets.widget_assets(cache)
    files = sorted(str(p.relative_to(ready)) for p in ready.rglob("*") if p.is_file())
    assert files == ["html-manager/abc.woff2", "html-manager/embed-amd.js", "require.js"]
    assert not (tmp_path / "evil.js").exists() and not list(cache.glob("staging-*"))
    assert assets.widget_assets(cache) == ready  # cached: no second fetch


def test_tampered_tarball_is_refused_and_deleted(tmp_path, monkeypatch) -> None:
    tgz = tmp_path / "requirejs-2.3.8.tgz"
    _tarball(tgz, {"package/require.js": b"evil"})
    monkeypatch.setattr(assets, "_NPM_PACKAGES", (("requirejs", "2.3.8", "sha512-AAAA"),))
    with pytest.raises(ValueError, match="does not match its pinned sha512"):
        assets.widget_assets(tmp_path)
    assert not tgz.exists() and not (tmp_path / "ready").exists()


# ------------------------------------------------------------ end to end ----

WIDGET_CELL = '''import os, ipywidgets as w
from IPython.display import HTML, display
SMALL = SMALL or os.environ.get("SAE_STEER_SMALL") == "1"
print("SMALL", SMALL, "FEATURE", FEATURE)
w.VBox([w.IntSlider(value=FEATURE, description="feature"),
        w.HTML(f'<div data-feature="{FEATURE}">out</div>')])'''


def test_export_embeds_widget_state_and_ships_the_renderer(tmp_path) -> None:
    """Uses the real pinned npm packages (fetched once into the cache)."""
    cell = new_code_cell('print("headline: 42")')
    cell.metadata["tags"] = ["key-result"]
    nb_path = tmp_path / "nbs" / "01_demo.ipynb"
    nb_path.parent.mkdir()
    nbformat.write(_notebook(new_markdown_cell("# Demo <panel>"), _params_cell(), new_code_cell(WIDGET_CELL), cell),
                   nb_path)
    index = export.export_writeup(tmp_path / "out", small=True, notebooks=[nb_path],
                                   parameters={"FEATURE": 5}, progress=False)
    out = index.parent
    page = (out / "01_demo.html").read_text()
    assert 'widgetRendererSrc = \'static/html-manager/embed-amd.js\'' in page
    assert '<script src="static/require.js">' in page
    assert "application/vnd.jupyter.widget-state+json" in page and "IntSliderModel" in page
    assert "SMALL True FEATURE 5" in page  # the parameters reached the kernel
    assert (out / "static" / "html-manager" / "embed-amd.js").stat().st_size > 1_000_000
    assert (out / "static" / "require.js").exists()
    home = index.read_text()
    assert '<a href="01_demo.html">Demo &lt;panel&gt;</a>' in home and "headline: 42" in home
    executed = nbformat.read(out / "01_demo.ipynb", as_version=4)
    assert executed.metadata["widgets"] and nbformat.read(nb_path, as_version=4).cells[2].outputs == []


# ------------------------------------------------------ the exported pages ----
# Checks over a real export of the four notebooks; CI builds one with
# `python -m sae_steer writeup --small --out DIR` and points SAE_STEER_WRITEUP_DIR at it.

WRITEUP_DIR = os.environ.get("SAE_STEER_WRITEUP_DIR")
PAGES = ["01_train_sae", "02_top_activations", "03_steering", "04_rescoring"]
# a Python list, dict or tuple printed as is: "[1, 2]", "{'a': 1}", "(3, 4)"
_REPR = re.compile(r"\[.*\]|\{.*\}|\(.*,.*\)", re.S)
_STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'


def _exported(name: str):
    bs4 = pytest.importorskip("bs4")  # nbconvert's own dependency
    if not WRITEUP_DIR:
        pytest.skip("set SAE_STEER_WRITEUP_DIR to an export (python -m sae_steer writeup --small --out DIR)")
    path = Path(WRITEUP_DIR) / f"{name}.html"
    if not path.exists():
        pytest.fail(f"{path} is missing: export all four notebooks into SAE_STEER_WRITEUP_DIR")
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.mark.parametrize("name", PAGES)
def test_exported_page_shows_figures_not_their_repr(name) -> None:
    assert "<Figure size" not in _exported(name).get_text()


@pytest.mark.parametrize("name", PAGES[1:])
def test_exported_page_has_a_rendered_figure(name) -> None:
    images = _exported(name).select('img[src^="data:image/png;base64,"]')
    assert images, f"{name}.html has no figure drawn as an image"


@pytest.mark.parametrize("name", PAGES)
def test_exported_page_has_no_stderr_output(name) -> None:
    """Warnings and logs printed to stderr (torch's, tqdm's) do not belong in a writeup."""
    blocks = [b.get_text()[:200] for b in _exported(name).select(_STDERR)]
    assert not blocks, f"{name}.html shows stderr output: {blocks}"


@pytest.mark.parametrize("name", PAGES + ["index"])
def test_exported_tables_show_no_python_reprs(name) -> None:
    cells = [c.get_text().strip() for c in _exported(name).select("td, th")]
    reprs = [c for c in cells if _REPR.fullmatch(c)]
    assert not reprs, f"{name}.html has table cells that print a Python list/dict/tuple: {reprs[:5]}"


def test_the_repr_rule_flags_reprs_and_spares_prose() -> None:
    flagged = ["[1, 2]", "[3]", "{'a': 1}", "(0.35, 0.62)", "(3, 4)"]
    spared = ["0.35", "too few samples", "(0.35)", "lift 95% low", "3 / 40", "feature (kind)"]
    assert all(_REPR.fullmatch(c) for c in flagged)
    assert not any(_REPR.fullmatch(c) for c in spared)
