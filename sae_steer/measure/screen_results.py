"""What a steerability screen found (``SteerabilityScreen``): per candidate its stage-1
figures, per re-measured feature its fresh report's figures and the definitions it passed,
and which features are confirmed. Data only: ``screen.py`` measures, ``ui`` draws.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from sae_steer.config import ScreenConfig, SteerConfig
from sae_steer.fsutil import write_json_atomic

DEFINITIONS = ("own firing", "own words")
"""How a feature can pass: its own fire rate rises (``FIRES_GAIN_TARGET``), or its own top
words appear more (``LIFT_TARGET``); both within ``COST_BUDGET``."""


@dataclasses.dataclass
class SteerabilityScreen:
    """What the screen measured: stage-1 rows for every candidate, stage-2 rows for the
    best, and which features are confirmed. Rows are plain dicts (tables, JSON)."""

    candidates: list[int]
    """Features screened, in the order visited (output score, highest first)."""
    stage1: dict[int, dict[str, Any]]
    """Per candidate: its best scale's figures (and ``by_scale``: every scale's)."""
    confirmations: dict[int, dict[str, Any]]
    """Per re-measured feature: the fresh report's figures and ``passed`` definitions."""
    config: ScreenConfig
    steer: SteerConfig
    """The sampling settings (``resid_norm`` resolved: the norm every scale multiplies)."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def confirmed(self) -> list[int]:
        """Confirmed features, best first (by the fresh lower bound over its target)."""
        ok = [f for f, row in self.confirmations.items() if row["passed"]]
        return sorted(ok, key=lambda f: -self.confirmations[f]["strength"])

    def recommended(self, n: int = 10) -> list[int]:
        """Up to ``n`` confirmed features, best first. Fewer than ``n`` (or none) when fewer
        passed; then a warning says so and names the nearest misses."""
        out = self.confirmed[:n]
        if len(out) < n:
            misses = ", ".join(f"{r['feature']} (gain {r['fires_gain']:+.2f} "
                               f"[{r['fires_gain_lo']:+.2f}], words {_fmt(r['lift'])}x "
                               f"[{_fmt(r['lift_lo'])}])" for r in self.nearest_misses(3))
            warnings.warn(f"only {len(out)} of {len(self.candidates)} screened features passed "
                          f"confirmation (asked for {n}); nearest misses: {misses or 'none'}",
                          stacklevel=2)
        return out

    def nearest_misses(self, n: int = 5) -> list[dict[str, Any]]:
        """The re-measured features that did not pass, closest to passing first."""
        missed = [r for r in self.confirmations.values() if not r["passed"]]
        return sorted(missed, key=lambda r: -r["strength"])[:n]

    def scale(self, feature: int) -> float:
        """The confirmed relative scale of ``feature`` (x the typical residual norm)."""
        row = self.confirmations.get(int(feature))
        if row is None or not row["passed"]:
            raise ValueError(f"feature {feature} is not confirmed by this screen; confirmed: "
                             f"{self.confirmed[:10]}")
        return float(row["scale"])

    def rows(self, stage: int = 1) -> list[dict[str, Any]]:
        """Table rows of stage 1 (every candidate, visiting order) or stage 2."""
        if stage == 1:
            return [{k: v for k, v in self.stage1[f].items() if k != "by_scale"}
                    for f in self.candidates if f in self.stage1]
        return [self.confirmations[f] for f in self.confirmations]

    def save(self, directory: str | os.PathLike) -> Path:
        """``screen.json`` beside ``screen_config.json`` and ``steer_config.json``."""
        directory = Path(directory)
        self.config.save_json(directory / "screen_config.json")
        self.steer.save_json(directory / "steer_config.json")
        write_json_atomic(directory / "screen.json", _json_safe({
            "candidates": self.candidates, "stage1": self.stage1,
            "confirmations": self.confirmations, "meta": self.meta}))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SteerabilityScreen:
        directory = Path(directory)
        data = json.loads((directory / "screen.json").read_text(), parse_constant=float)
        return cls([int(f) for f in data["candidates"]], _int_keys(data["stage1"]),
                   _int_keys(data["confirmations"]),
                   ScreenConfig.load_json(directory / "screen_config.json"),
                   SteerConfig.load_json(directory / "steer_config.json"), data["meta"])


def _fmt(x: float) -> str:
    return "inf" if x == math.inf else "nan" if x != x else f"{x:.2g}"


def _int_keys(d: dict[str, Any]) -> dict[int, Any]:
    return {int(k): _floats(v) for k, v in d.items()}


def _floats(row: Any) -> Any:
    # JSON has no inf/NaN: they were written as strings (see _json_safe)
    if isinstance(row, dict):
        return {k: _floats(v) for k, v in row.items()}
    if isinstance(row, list):
        return [_floats(v) for v in row]
    return float(row) if row in ("inf", "-inf", "nan") else row


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return str(obj) if isinstance(obj, float) and not math.isfinite(obj) else obj
