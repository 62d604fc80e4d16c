"""The widget renderer, shipped beside the HTML so sliders render with no network.

nbconvert embeds the widget *state* in the page, but by default loads require.js and the
widget renderer (``@jupyter-widgets/html-manager``) from a CDN, so opened offline every
slider comes out blank. We fetch both npm packages once (exact versions, sha512-checked)
into the sae_steer cache and copy the few files the page needs into ``writeup/static/``.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

from sae_steer.fsutil import atomic_dir, cache_dir

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
    root = Path(cache) if cache is not None else cache_dir() / "writeup_assets"
    ready = root / "ready"
    if ready.exists():
        return ready
    # replace=False: a concurrent export that finished first keeps its copy
    with atomic_dir(ready, replace=False) as staging:
        for name, version, integrity in _NPM_PACKAGES:
            tgz = _download(name, version, root)
            _check_integrity(tgz, integrity)
            with tarfile.open(tgz) as tar:
                _extract_needed(tar, name, staging)
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
