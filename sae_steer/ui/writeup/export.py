"""Execute the numbered notebooks and export them as a standalone HTML writeup.

``python -m sae_steer writeup [--small]`` (or :func:`export_writeup`) runs every
``notebooks/NN_*.ipynb`` top to bottom in a fresh kernel, then renders each one to
``writeup/NN_name.html`` beside an ``index.html`` that links them.

The widget renderer is shipped beside the HTML (``assets.py``) and the pages point at it
with relative URLs, so sliders render offline. The static sliders are not connected to Python;
outputs of cells tagged ``key-result`` are also copied into ``index.html`` as plain
HTML/text so the headline numbers read without any JavaScript.
"""
from __future__ import annotations

import argparse
import ast
import html
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sae_steer.ui.writeup.assets import REQUIRE_JS_URL, WIDGET_RENDERER_URL, widget_assets
from sae_steer.ui.writeup.execute import execute_notebook, find_notebooks

KEY_RESULT_TAG = "key-result"
"""Outputs of cells with this tag are copied into index.html as plain HTML/text."""


@dataclass
class ExportedNotebook:
    """One rendered notebook, as listed in ``index.html``."""
    name: str  # "03_steering"
    title: str  # first markdown heading
    seconds: float  # wall time of the execution
    key_results: list[str]  # HTML snippets from cells tagged ``key-result``


# ---------------------------------------------------------------- rendering ----

# Key results are notebook output of any width: long printed lines wrap instead of running
# off the page and images shrink to the column. A wide table (notebook 04's has 11 columns)
# wraps its headers and cells to fit the column, so it reads without scrolling; one still
# too wide scrolls inside its own box, never the page.
INDEX_CSS = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em;line-height:1.45}"
    "section{border-top:1px solid #ddd;padding-top:.5em}"
    ".key-result{overflow-x:auto;max-width:100%;margin:.5em 0}"
    ".key-result pre{white-space:pre-wrap;overflow-wrap:anywhere}"
    ".key-result img{max-width:100%;height:auto}"
    ".key-result table{border-collapse:collapse;font-size:.9em;max-width:100%}"
    ".key-result th,.key-result td{padding:.2em .5em;text-align:left;vertical-align:top;"
    "overflow-wrap:break-word;border-bottom:1px solid #e3e3e3}"
    ".key-result th{vertical-align:bottom;font-weight:600;border-bottom:2px solid #aaa}"
    ".key-result td{font-variant-numeric:tabular-nums}"
    ".key-result tr:nth-child(even) td{background:#f6f6f6}"
    "@media (max-width:900px){.key-result table{font-size:.8em}}"
)


def render_notebook_html(nb: Any) -> str:
    """The notebook as a standalone page whose widgets load the renderer from ``static/``."""
    from nbconvert import HTMLExporter  # optional: the writeup's dependency

    exporter = HTMLExporter(template_name="lab", widget_renderer_url=WIDGET_RENDERER_URL,
                            require_js_url=REQUIRE_JS_URL)
    body, _ = exporter.from_notebook_node(nb)
    return body


def notebook_title(nb: Any, fallback: str) -> str:
    """The first markdown heading, without its ``#`` marks."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


# Base64 image types a notebook output may carry, in the order we prefer them.
_IMAGE_TYPES = ("image/png", "image/jpeg")
# A one-line ``<...>`` repr (``<Figure size 640x330 with 1 Axes>``, ``<Foo object at 0x..>``)
# names an object instead of showing it: what a figure leaves when no image was produced.
_OBJECT_REPR = re.compile(r"<[^\n]*>\s*")


def key_results(nb: Any) -> list[str]:
    """HTML snippets of the outputs of cells tagged ``key-result``: HTML kept, images as
    ``<img>``, text escaped; a bare object repr is dropped (a figure shows as an image or not
    at all)."""
    snippets = []
    for cell in nb.cells:
        if cell.cell_type == "code" and KEY_RESULT_TAG in cell.metadata.get("tags", []):
            snippets += [s for out in cell.get("outputs", []) if (s := _output_html(out))]
    return snippets


def _output_html(out: Any) -> str | None:
    if out.get("output_type") == "stream":
        return f"<pre>{html.escape(_joined(out.get('text', '')))}</pre>"
    data = out.get("data", {})
    if "text/html" in data:
        return _joined(data["text/html"])
    for mime in _IMAGE_TYPES:
        if mime in data:
            b64 = "".join(_joined(data[mime]).split())
            return f'<img alt="figure" src="data:{mime};base64,{b64}">'
    text = _joined(data.get("text/plain", ""))
    if not text or _OBJECT_REPR.fullmatch(text):
        return None
    return f"<pre>{html.escape(text)}</pre>"


def _joined(text: str | list[str]) -> str:
    return text if isinstance(text, str) else "".join(text)


def render_index(entries: Sequence[ExportedNotebook], *, small: bool, parameters: dict[str, Any]) -> str:
    """``index.html``: one section per notebook with its link and key results."""
    setting = "small (fast CI parameters)" if small else "full"
    params = ", ".join(f"{k} = {v!r}" for k, v in parameters.items()) or "notebook defaults"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>sae_steer writeup</title>",
        f"<style>{INDEX_CSS}</style></head><body>",
        "<h1>sae_steer writeup</h1>",
        f"<p>Executed {html.escape(time.strftime('%Y-%m-%d %H:%M %Z'))} with the "
        f"{html.escape(setting)} setting; parameters: {html.escape(params)}. "
        "Each page below is a notebook run top to bottom; its sliders show the state they "
        "were saved in (open the notebook in JupyterLab to drive them).</p>",
    ]
    for entry in entries:
        href = html.escape(f"{entry.name}.html", quote=True)
        parts.append(f'<section><h2><a href="{href}">{html.escape(entry.title)}</a></h2>'
                     f"<p><code>{html.escape(entry.name)}.ipynb</code>, ran in {entry.seconds:.0f} s</p>")
        parts.extend(f'<div class="key-result">{snippet}</div>' for snippet in entry.key_results)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------- export ----

def export_writeup(out_dir: str | os.PathLike = "writeup", *, small: bool = False,
                   notebooks: Sequence[str | os.PathLike] | None = None,
                   parameters: dict[str, Any] | None = None, timeout: int = 1800,
                   kernel_name: str = "python3", assets_cache: str | os.PathLike | None = None,
                   progress: bool = True) -> Path:
    """Execute the numbered notebooks and write ``out_dir/index.html`` plus one page each.

    Args:
        out_dir: output folder (created; files we write are overwritten).
        small: the fast parameter set (``SAE_STEER_SMALL=1`` and ``SMALL = True``).
        notebooks: notebook paths; default every ``notebooks/NN_*.ipynb``.
        parameters: extra literal overrides injected after each ``parameters`` cell.
        timeout: seconds allowed per cell.
        kernel_name: Jupyter kernel to run them in.
        assets_cache: where the npm widget renderer is cached (default: the sae_steer cache).
    Returns:
        the path of ``index.html``.
    """
    paths = [Path(p) for p in notebooks] if notebooks else find_notebooks()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"notebook(s) not found: {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # fetch first: a network problem should surface before minutes of execution
    assets = widget_assets(assets_cache)
    shutil.copytree(assets, out / "static", dirs_exist_ok=True)
    entries = []
    for i, path in enumerate(paths, 1):
        if progress:
            print(f"[writeup {i}/{len(paths)}] executing {path.name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        nb = execute_notebook(path, small=small, parameters=parameters, timeout=timeout,
                              kernel_name=kernel_name, progress=progress)
        seconds = time.perf_counter() - start
        (out / f"{path.stem}.html").write_text(render_notebook_html(nb), encoding="utf-8")
        (out / path.name).write_text(_nb_json(nb), encoding="utf-8")
        entries.append(ExportedNotebook(path.stem, notebook_title(nb, path.stem), seconds, key_results(nb)))
    index = out / "index.html"
    shown = {**({"SMALL": True} if small else {}), **(parameters or {})}
    index.write_text(render_index(entries, small=small, parameters=shown), encoding="utf-8")
    if progress:
        print(f"[writeup] wrote {index.resolve()}", file=sys.stderr, flush=True)
    return index


def _nb_json(nb: Any) -> str:
    import nbformat  # optional: the writeup's dependency

    return nbformat.writes(nb)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p mode=clamp


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sae_steer writeup [--small] [--out DIR] [-p NAME=VALUE ...] [NOTEBOOK ...]``."""
    parser = argparse.ArgumentParser(prog="python -m sae_steer writeup", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to export (default: notebooks/NN_*.ipynb)")
    parser.add_argument("--out", default="writeup", help="output folder (default: writeup)")
    parser.add_argument("--small", action="store_true", help="fast parameters (as CI runs them)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter-cell literal, e.g. -p FEATURE=12 (repeatable)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"-p expects NAME=VALUE, got {item!r}")
        parameters[name.strip()] = _literal(value.strip())
    try:
        export_writeup(args.out, small=args.small, notebooks=args.notebooks or None,
                       parameters=parameters, timeout=args.timeout)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
