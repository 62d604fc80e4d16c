"""Execute the numbered notebooks and export them as a standalone HTML writeup.

``python -m sae_steer writeup [--small]`` (or :func:`export_writeup`) runs every
``notebooks/NN_*.ipynb`` top to bottom in a fresh kernel, then renders each one to
``writeup/NN_name.html`` beside an ``index.html`` that links them.

Why the widget renderer is shipped beside the HTML: nbconvert embeds the widget
*state* in the page, but by default loads require.js and the widget renderer
(``@jupyter-widgets/html-manager``) from a CDN, so opened offline every slider comes
out blank. We fetch both npm packages once (exact versions, sha512-checked) into the
sae_steer cache, copy the few files the page needs into ``writeup/static/`` and point
the page at them with relative URLs. The static sliders are not connected to Python;
outputs of cells tagged ``key-result`` are also copied into ``index.html`` as plain
HTML/text so the headline numbers read without any JavaScript.
"""
from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import html
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# (name, exact version, npm "integrity" of its tarball): pinned so the page is reproducible
# html-manager 1.x renders ipywidgets 8 state (widget state version_major 2).
_NPM_PACKAGES = (
    ("@jupyter-widgets/html-manager", "1.0.15",
     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
    ("requirejs", "2.3.8",
     "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="),
)
# Relative to the exported page. embed-amd.js finds its icon fonts beside itself.
WIDGET_RENDERER_URL = "static/html-manager/embed-amd.js"
REQUIRE_JS_URL = "static/require.js"
# the CommonJS bundle, its source map and a duplicate AMD bundle: 8 MB the page never loads
_UNUSED_DIST = {"dist/embed.js", "dist/embed.js.map", "dist/libembed-amd.js"}
KEY_RESULT_TAG = "key-result"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"


@dataclass
class ExportedNotebook:
    """One rendered notebook, as listed in ``index.html``."""
    name: str  # "03_steering"
    title: str  # first markdown heading
    seconds: float  # wall time of the execution
    key_results: list[str]  # HTML snippets from cells tagged ``key-result``


# ---------------------------------------------------------------- notebooks ----

def default_notebook_dir() -> Path:
    """``notebooks/`` of the source checkout this package was imported from, else ``./notebooks``."""
    beside_package = Path(__file__).resolve().parent.parent / "notebooks"
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
    import nbformat

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
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from tqdm.auto import tqdm

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


# ------------------------------------------------------------ widget assets ----

def _check_integrity(tarball: Path, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        tarball.unlink()
        raise ValueError(f"{tarball.name} does not match its pinned {algo} digest; deleted it, run again")


def _download(name: str, version: str, dest: Path) -> Path:
    """``npm pack name@version`` into ``dest``; without npm, fetch the same tarball over HTTPS."""
    tgz = dest / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tgz.exists():
        return tgz
    try:
        if shutil.which("npm"):
            subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(dest)],
                           check=True, capture_output=True, text=True, timeout=300)
        else:
            url = f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz"
            with urllib.request.urlopen(url, timeout=120) as response:
                tgz.write_bytes(response.read())
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise RuntimeError(
            f"could not fetch {name}@{version} from the npm registry ({detail}).\n"
            "The writeup ships the widget renderer beside the HTML so sliders render offline; "
            f"fetch it once with network access, or run `npm pack {name}@{version}` in {dest}") from err
    return tgz


def widget_assets(cache: str | os.PathLike | None = None) -> Path:
    """A folder holding ``require.js`` and ``html-manager/`` (embed-amd.js + its fonts).

    Built once under ``<sae_steer cache>/writeup_assets``; later calls need no network.
    """
    if cache is None:
        from sae_steer.models import cache_dir
        cache = cache_dir() / "writeup_assets"
    root = Path(cache)
    ready = root / "ready"
    if ready.exists():
        return ready
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix="staging-"))
    try:
        for name, version, integrity in _NPM_PACKAGES:
            tgz = _download(name, version, root)
            _check_integrity(tgz, integrity)
            with tarfile.open(tgz) as tar:
                _extract_needed(tar, name, staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the copies in writeup/ should not be
        try:
            staging.rename(ready)  # atomic: a half-extracted folder is never "ready"
        except OSError:
            if not ready.exists():  # else a concurrent export finished first: use its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ready


def _extract_needed(tar: tarfile.TarFile, name: str, dest: Path) -> None:
    for member in tar.getmembers():
        rel = member.name.removeprefix("package/")
        if not member.isfile() or "/" in rel.removeprefix("dist/") or ".." in rel:
            continue
        if name == "requirejs" and rel == "require.js":
            target = dest / "require.js"
        elif rel.startswith("dist/") and rel not in _UNUSED_DIST:
            # embed-amd.js and the icon fonts it links; the non-AMD bundles are dead weight
            target = dest / "html-manager" / rel.removeprefix("dist/")
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar.extractfile(member).read())


# ---------------------------------------------------------------- rendering ----

def render_notebook_html(nb: Any) -> str:
    """The notebook as a standalone page whose widgets load the renderer from ``static/``."""
    from nbconvert import HTMLExporter

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


def key_results(nb: Any) -> list[str]:
    """HTML snippets of the outputs of cells tagged ``key-result`` (HTML kept, text escaped)."""
    snippets = []
    for cell in nb.cells:
        if cell.cell_type != "code" or KEY_RESULT_TAG not in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                snippets.append(_joined(data["text/html"]))
            elif "text/plain" in data or out.get("output_type") == "stream":
                text = _joined(data.get("text/plain", out.get("text", "")))
                snippets.append(f"<pre>{html.escape(text)}</pre>")
    return snippets


def _joined(text: str | list[str]) -> str:
    return text if isinstance(text, str) else "".join(text)


def render_index(entries: Sequence[ExportedNotebook], *, small: bool, parameters: dict[str, Any]) -> str:
    """``index.html``: one section per notebook with its link and key results."""
    setting = "small (fast CI parameters)" if small else "full"
    params = ", ".join(f"{k} = {v!r}" for k, v in parameters.items()) or "notebook defaults"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>sae_steer writeup</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
        "section{border-top:1px solid #ddd;padding-top:.5em}</style></head><body>",
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
    import nbformat

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
