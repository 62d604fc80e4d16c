"""The import layers hold, and the tool that checks them in CI really catches a violation."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sae_steer"
LINT = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
# Heavy or optional dependencies that may be imported inside a function (each with a reason
# in a comment on that line); the library's own modules never are.
LAZY_OK = {"datasets", "nbformat", "nbclient", "nbconvert", "IPython", "fcntl"}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(cwd / "pyproject.toml")], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)})


@pytest.fixture(scope="module")
def lint_available() -> None:
    if not Path(LINT).exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")


def test_the_layers_hold(lint_available):
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("lm/texts.py", "from sae_steer.measure import rescore"),       # a lower floor reaching up
    ("measure/report.py", "from sae_steer.ui import views"),         # anything importing the UI
    ("sae/model.py", "import transformer_lens"),                     # the SAE meeting a model
    ("measure/concepts.py", "from sae_steer.toystories import labels"),  # measure on the toy world
])
def test_an_upward_import_breaks_the_contract(tmp_path, lint_available, module, upward):
    copy = tmp_path / "sae_steer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = copy / module
    target.write_text(target.read_text() + f"\n{upward}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, a.name) for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
    return found


def test_no_function_level_imports_of_the_projects_own_modules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for lineno, name in _function_level_imports(path):
            own = name.startswith(".") or name.split(".")[0] == "sae_steer"
            lazy_ok = name.split(".")[0] in LAZY_OK and "#" in lines[lineno - 1]
            if own or not lazy_ok:
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    assert not offenders, "function-level imports:\n" + "\n".join(offenders)


def test_no_module_is_over_the_size_guide():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 320}, sizes
