"""pyproject.toml states ranges so the package installs beside a user's torch; constraints.txt
pins the exact set CI installs. These tests keep the two consistent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    """``[project].dependencies`` and the ``dev`` extra, by canonical name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned() -> dict[str, Version]:
    """Every ``name==version`` line of constraints.txt, by canonical name."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt should pin exactly: {line!r}"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def allows(name: str, version: str) -> bool:
    return declared()[name].specifier.contains(version, prereleases=True)


def test_torch_range_admits_the_gpu_machine_and_ci() -> None:
    assert allows("torch", "2.11.0")  # the GPU machine's (shared/gpu/README.md)
    assert allows("torch", "2.13.0") and allows("torch", "2.13.0+cpu")  # CI's CPU wheel
    assert not allows("torch", "2.10.0")


def test_transformer_lens_stays_below_4() -> None:
    assert allows("transformer-lens", "3.9.0")
    assert not allows("transformer-lens", "4.0.0")  # sae-lens 6.x requires < 4


def test_no_exact_pins_in_the_package() -> None:
    exact = [str(r) for r in declared().values() if any(s.operator == "==" for s in r.specifier)]
    assert not exact, f"pin exact versions in constraints.txt, not pyproject.toml: {exact}"


def test_every_pin_satisfies_the_declared_range() -> None:
    reqs, pins = declared(), pinned()
    missing = sorted(set(reqs) - set(pins))
    assert not missing, f"constraints.txt lacks declared packages {missing}; regenerate it"
    outside = {name: str(pins[name]) for name, req in reqs.items()
               if not req.specifier.contains(pins[name], prereleases=True)}
    assert not outside, f"constraints.txt pins outside pyproject's ranges: {outside}"


def test_torch_pin_is_the_cpu_wheel_without_a_local_label() -> None:
    # ==2.13.0 matches CI's 2.13.0+cpu and PyPI's 2.13.0 alike; "+cpu" would fail where
    # only PyPI is reachable
    assert pinned()["torch"] == Version("2.13.0")


@pytest.mark.slow
def test_installing_the_package_keeps_the_installed_torch(tmp_path) -> None:
    """In this venv (which holds the locked torch) pip would add no other torch."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--report", str(report),
         "-e", str(REPO)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [canonicalize_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]]
    assert "torch" not in names, f"pip would replace torch: {names}"
