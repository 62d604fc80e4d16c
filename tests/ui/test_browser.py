"""The notebooks as users meet them, in Debian's chromium driven by Playwright.

1. JupyterLab, served headless on 127.0.0.1 over a temporary copy of ``notebooks/``:
   open ``03_steering.ipynb``, Run All, move the feature and scale sliders, click
   Generate and expect the panel's output to carry the new ``data-feature``, a steered
   text and re-scored tokens with non-zero activations.
2. The exported writeup opened from disk with every network request refused:
   the sliders and the highlighted text must still render.

Chromium comes from apt (``apt-get install -y chromium``); ``playwright install`` is
never used. Without chromium these tests skip, unless ``SAE_STEER_REQUIRE_BROWSER=1``
(CI) turns that into a failure. ``SAE_STEER_SCREENSHOT=1`` saves the panel to
``docs/steering_panel.png`` for the README; failures leave a full-page screenshot
and the server log in ``test-results/``. Waits are ``expect`` timeouts, never sleeps.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
STEERING_NB = "03_steering.ipynb"
TOP_ACTIVATIONS_NB = "02_top_activations.ipynb"
CHROMIUM = Path(os.environ.get("SAE_STEER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RESULTS = REPO / "test-results"
SCREENSHOT = REPO / "docs" / "steering_panel.png"
# Generous: first kernel start imports torch + transformer_lens on 2 busy cores.
KERNEL_TIMEOUT_MS = 180_000
RUN_ALL_TIMEOUT_MS = 900_000  # a cold cache builds the offline world inside Run All
GENERATE_TIMEOUT_MS = 180_000


# ------------------------------------------------------------------ browser ----

@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's launch args, pointed at Debian's chromium (skip/fail if absent)."""
    if not CHROMIUM.exists():
        reason = f"Debian chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("SAE_STEER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}; SAE_STEER_REQUIRE_BROWSER=1 requires the browser tests to run")
        pytest.skip(reason)
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@contextlib.contextmanager
def screenshot_on_failure(page, name: str, log: Path | None = None) -> Iterator[None]:
    try:
        yield
    except BaseException:
        RESULTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(RESULTS / f"{name}.png"), full_page=True)
        if log is not None and log.exists():
            shutil.copy(log, RESULTS / f"{name}-server.log")
        raise


# --------------------------------------------------------------- jupyterlab ----

@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    pid: int
    log: Path

    def tree(self, notebook: str) -> str:
        # ?reset: start from an empty workspace, whatever an earlier run left open
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lab_settings(settings: Path) -> None:
    """User settings that stop Lab writing into the notebooks or calling home."""
    for plugin, values in {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _wait_for_server(url: str, token: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as reply:
                if reply.status == 200:
                    return
        time.sleep(0.25)  # polling a socket, not waiting on the page
    raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc): the kernels this server started."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    return []


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, work: Path, env: dict[str, str]) -> Iterator[Lab]:
    """JupyterLab on a free localhost port; stopped, with its kernels, on exit."""
    token, port = secrets.token_hex(16), _free_port()
    _write_lab_settings(work / "lab-settings")
    env = {**env, "JUPYTERLAB_SETTINGS_DIR": str(work / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
    log = work / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", f"--port={port}", "--ServerApp.port_retries=0",
           "--no-browser", f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={root_dir}", "--allow-root", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    kernels: set[int] = set()
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(url, token, proc, log)
        yield Lab(url, token, proc.pid, log)
    finally:
        kernels.update(_children(proc.pid))
        os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in kernels:  # kernels run in their own sessions; end any the server missed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab(browser_type_launch_args, tmp_path_factory) -> Iterator[Lab]:
    """Lab over a temporary copy of notebooks/, kernels in small mode with the test cache."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOK_DIR, work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = {**os.environ, "SAE_STEER_SMALL": "1"}  # SAE_STEER_CACHE comes from tests/conftest.py
    with jupyter_lab(work / "notebooks", work, env) as server:
        yield server


def _slider(panel, label: str):
    return panel.locator(".widget-slider").filter(has=panel.page.get_by_text(label, exact=True))


def _nudge(slider, presses: int) -> str:
    """Press ArrowRight on the slider's handle; returns the readout once it has moved."""
    readout = slider.locator(".widget-readout")
    before = readout.inner_text()
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(presses):
        handle.press("ArrowRight")
    expect(readout).not_to_have_text(before)
    return readout.inner_text().strip()


def test_steering_panel_in_jupyterlab(lab: Lab, page) -> None:
    if not (NOTEBOOK_DIR / STEERING_NB).exists():
        pytest.fail(f"{STEERING_NB} is missing from {NOTEBOOK_DIR}")
    with screenshot_on_failure(page, "steering_panel_lab", lab.log):
        page.goto(lab.tree(STEERING_NB))
        # The toolbar says idle before the kernel connects; the status bar waits for it.
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=KERNEL_TIMEOUT_MS)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        generate = page.get_by_role("button", name="Generate", exact=True)
        expect(generate).to_be_visible(timeout=RUN_ALL_TIMEOUT_MS)
        panel = page.locator(".jp-OutputArea-output").filter(has=generate)
        feature = _nudge(_slider(panel, "feature"), presses=1)
        _nudge(_slider(panel, "scale"), presses=3)
        generate.click()
        # SteeringPanel's contract: <div class="steer-output" data-feature=.. data-scale=..>
        expect(panel.locator(".steer-output")).to_have_attribute(
            "data-feature", feature, timeout=GENERATE_TIMEOUT_MS)
        # the steered story is there, and re-scoring highlighted the feature on some token
        expect(panel.locator(".steer-text")).to_have_text(re.compile(r"\S"))
        acts = panel.locator(".steer-output .sae-tok").evaluate_all(
            "els => els.map(e => e.dataset.act)")
        assert acts and any(float(a) != 0 for a in acts), acts
        # the row knows its feature: words and output score (the notebook passes scores)
        expect(panel.locator(".steer-feature-info").first).to_contain_text("output score")

        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=RUN_ALL_TIMEOUT_MS)
        expect(page.get_by_text(re.compile("Traceback"))).to_have_count(0)
        if os.environ.get("SAE_STEER_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.set_viewport_size({"width": 1280, "height": 1600})  # the whole panel, not clipped
            panel.screenshot(path=str(SCREENSHOT))

    # the kernel is the one the server's python resolves "python3" to: this venv
    kernels = [_cmdline(pid) for pid in _children(lab.pid)]
    kernels = [cmd for cmd in kernels if "ipykernel_launcher" in cmd]
    assert kernels, "no ipykernel process found under the Lab server"
    assert all(cmd[0] == sys.executable for cmd in kernels), kernels


# ------------------------------------------------------------ offline writeup ----

@pytest.fixture(scope="module")
def writeup_dir(browser_type_launch_args, tmp_path_factory) -> Path:
    """An exported writeup: ``$SAE_STEER_WRITEUP_DIR`` if CI already built one, else
    notebooks 02 and 03 exported here in small mode."""
    given = os.environ.get("SAE_STEER_WRITEUP_DIR")
    if given:
        if not (Path(given) / "index.html").exists():
            pytest.fail(f"SAE_STEER_WRITEUP_DIR={given} has no index.html; run `python -m sae_steer writeup --small`")
        return Path(given)
    from sae_steer.ui.writeup import export_writeup

    out = tmp_path_factory.mktemp("writeup")
    export_writeup(out, small=True, progress=False,
                   notebooks=[NOTEBOOK_DIR / TOP_ACTIVATIONS_NB, NOTEBOOK_DIR / STEERING_NB])
    return out


@pytest.fixture
def offline_page(page):
    """A page whose every non-file request is refused; the refused URLs are listed."""
    refused: list[str] = []

    def only_files(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.context.route("**/*", only_files)
    page.refused = refused
    return page


def test_writeup_renders_sliders_offline(writeup_dir: Path, offline_page) -> None:
    page = offline_page
    with screenshot_on_failure(page, "writeup_offline_steering"):
        page.goto((writeup_dir / "index.html").as_uri())
        page.get_by_role("link", name=re.compile("steer", re.I)).first.click()
        expect(page).to_have_url(re.compile(re.escape(Path(STEERING_NB).stem) + r"\.html$"))
        # drawn by the html-manager shipped in static/, from the embedded widget state
        expect(page.locator(".widget-slider").first).to_be_visible(timeout=60_000)
        assert page.locator(".widget-slider").count() >= 2
        expect(page.get_by_role("button", name="Generate", exact=True)).to_be_visible()
        assert not [u for u in page.refused if "widgets" in u or "require" in u], page.refused


def test_writeup_shows_highlighted_text_offline(writeup_dir: Path, offline_page) -> None:
    page = offline_page
    with screenshot_on_failure(page, "writeup_offline_top_activations"):
        page.goto((writeup_dir / f"{Path(TOP_ACTIVATIONS_NB).stem}.html").as_uri())
        tokens = page.locator(".sae-excerpt .sae-tok")
        expect(tokens.first).to_be_visible(timeout=60_000)
        shaded = [a for a in tokens.evaluate_all("els => els.map(e => e.dataset.act)") if float(a) > 0]
        assert shaded, "no token in the exported excerpts carries a positive activation"


def test_writeup_index_reads_cleanly(writeup_dir: Path, offline_page) -> None:
    """The index's key results: no raw figure repr, no bare inf/nan cell, nothing wider than
    the window (long printed lines wrap, wide tables scroll inside their box)."""
    page = offline_page
    with screenshot_on_failure(page, "writeup_index"):
        page.goto((writeup_dir / "index.html").as_uri())
        expect(page.get_by_role("heading", level=1)).to_have_text("sae_steer writeup")
        assert "<Figure size" not in page.locator("body").inner_text()
        # a figure shows as an image or not at all: every <img> has decoded
        broken = page.locator("img").evaluate_all("els => els.filter(e => !e.naturalWidth).map(e => e.alt)")
        assert not broken, broken
        cells = [c.strip() for c in page.locator("td, th").all_inner_texts()]
        assert cells and not [c for c in cells if c in {"inf", "-inf", "nan"}], cells
        for width in (1280, 800):
            page.set_viewport_size({"width": width, "height": 900})
            scroll, inner = page.evaluate(
                "() => [document.scrollingElement.scrollWidth, window.innerWidth]")
            assert scroll <= inner, f"the index is {scroll} px wide in a {inner} px window"


@pytest.mark.parametrize("name", ["index", "01_train_sae", "02_top_activations", "03_steering",
                                  "04_rescoring"])
def test_writeup_pages_do_not_scroll_sideways(writeup_dir: Path, offline_page, name: str) -> None:
    """Wide outputs (tables, printed lines, figures) wrap or scroll in their own box: the
    page itself never scrolls sideways, at a laptop's width or a narrow window's."""
    path = writeup_dir / f"{name}.html"
    if not path.exists():  # the fallback export holds notebooks 02 and 03 only
        pytest.skip(f"{path.name} is not in this export")
    page = offline_page
    with screenshot_on_failure(page, f"writeup_width_{name}"):
        for width in (1280, 800):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            scroll, client = page.evaluate(
                "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert scroll <= client, f"{name}.html is {scroll} px wide in a {client} px window"
