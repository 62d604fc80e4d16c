"""What a selection found (``SteerabilityScreen``, every preset's result): per candidate its
ranking figures, per confirmed feature its last round's figures (the definitions it passed,
its chance to pass a re-test, whether it is recommended), and per reported
feature the report stage's figures on fresh seeds beside the baselines. Data only:
``select.py`` measures, ``ui`` draws.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from sae_steer.config import PROMISE, PROMISE_CONFIDENCE, SelectConfig, SteerConfig
from sae_steer.config.base import is_integer
from sae_steer.fsutil import write_json_atomic


# The columns a summary table shows per stage (``summary_rows``); ``rows`` keeps them all.
SUMMARY_COLUMNS = {
    1: ("feature", "words", "scale", "fires_gain", "fires_gain_lo", "lift", "lift_lo", "nll_cost",
        "passed", "output_score"),
    2: ("feature", "words", "scale", "round", "n_samples", "fires_unsteered", "fires_steered",
        "fires_gain", "fires_gain_lo", "lift", "lift_lo", "nll_cost", "pass_chance", "passed",
        "recommended", "output_score"),
    3: ("feature", "scale", "fires_unsteered", "fires_steered", "fires_gain", "fires_gain_lo",
        "prompt_fires_gain", "control_fires_gain", "wrong_way", "nll_cost", "recommended"),
}


@dataclasses.dataclass
class SteerabilityScreen:
    """What a selection measured: ranking rows for every candidate, confirmation rows for
    the best, report rows for the recommended. Rows are plain dicts (tables, JSON).

    **What "recommended" promises** (``config.rules``): on seeds they never saw, at their
    recommended scales, at least ``PROMISE`` (80 %) of the recommended features are expected
    to pass the unchanged rule again on a re-test of ``config.n_report`` samples per side.
    Zero recommended is a result.
    """

    candidates: list[int]
    """Features ranked, in the order visited (e.g. output score, highest first)."""
    stage1: dict[int, dict[str, Any]]
    """Per candidate: its best scale's ranking figures (and ``by_scale``: every scale's)."""
    confirmations: dict[int, dict[str, Any]]
    """Per confirmed feature: its last round's figures, ``passed`` definitions, the
    definition ``tested``, its chance to pass a re-test (``pass_chance``) and
    ``recommended``."""
    config: SelectConfig
    steer: SteerConfig
    """The sampling settings (``resid_norm`` resolved: the norm every scale multiplies)."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    reports: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Per reported feature: the report stage's figures (fresh seeds) with the random
    direction (``control_*``), prompting (``prompt_*``) and the ``wrong_way`` share."""
    report_objects: dict[int, Any] = dataclasses.field(default_factory=dict, repr=False,
                                                       compare=False)
    """The report stage's ``SteeringReport`` per feature (this session only: not saved)."""
    sweeps: dict[int, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    """The ranking stage's ``Sweep`` per candidate, when kept (this session only)."""
    scores: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The ``FeatureScores`` that ordered the candidates, when known (this session only)."""

    @property
    def confirmed(self) -> list[int]:
        """The recommended features, best first (by the confirmation's strength)."""
        ok = [f for f, row in self.confirmations.items() if row.get("recommended")]
        return sorted(ok, key=lambda f: -self.confirmations[f]["strength"])

    def recommended(self, n: int = 10) -> list[int]:
        """Up to ``n`` recommended features, best first. Fewer than ``n`` (or none) when
        fewer were recommended; then a warning says so and names the nearest misses."""
        out = self.confirmed[:_count(n)]
        note = self.note(n)
        if note is not None:
            warnings.warn(note, stacklevel=2)
        return out

    def note(self, n: int = 10) -> str | None:
        """What ``recommended(n)`` warns about, as text to show (None: ``n`` were recommended)."""
        found = len(self.confirmed[:_count(n)])
        if found >= n:
            return None
        misses = ", ".join(f"{r['feature']} (gain {r['fires_gain']:+.2f} "
                           f"[{r['fires_gain_lo']:+.2f}], words {_fmt(r['lift'])}x "
                           f"[{_fmt(r['lift_lo'])}])" for r in self.nearest_misses(3))
        return (f"only {found} of {len(self.candidates)} screened features are recommended "
                f"(asked for {n}); nearest misses: {misses or 'none'}")

    def shown(self, n: int = 10) -> list[tuple[int, float, str]]:
        """Up to ``n`` features to show, as ``(feature, relative scale, status)``: the
        recommended ones (status ``"recommended"``), else, when there are none, the nearest
        misses at the scale they were confirmed at (``"nearest miss"``), so a reader sees what
        "almost" looks like. No warning: ``note(n)`` says what is missing."""
        if self.confirmed:
            return [(f, self.scale(f), "recommended") for f in self.confirmed[:_count(n)]]
        return [(int(r["feature"]), float(r["scale"]), "nearest miss")
                for r in self.nearest_misses(n)]

    @property
    def summary(self) -> str:
        """One sentence: how many were ranked, confirmed and recommended, and the promise."""
        rounds = ", ".join(str(k) for k in self.config.confirm_rounds)
        return (f"{len(self.stage1)} of {len(self.candidates)} candidate features ranked; "
                f"{len(self.confirmations)} confirmed in rounds of {rounds} fresh samples per "
                f"side; {len(self.confirmed)} recommended: {self.promise}")

    def summary_rows(self, stage: int = 2) -> list[dict[str, Any]]:
        """``rows(stage)`` cut to the columns a reader needs (``SUMMARY_COLUMNS``); the
        confirmation's rows strongest first."""
        rows = self.rows(stage)
        if stage == 2:
            rows = sorted(rows, key=lambda r: -r["strength"])
        return [{k: r[k] for k in SUMMARY_COLUMNS[stage] if k in r} for r in rows]

    def nearest_misses(self, n: int = 5) -> list[dict[str, Any]]:
        """The confirmed-stage features not recommended, closest to passing first."""
        missed = [r for r in self.confirmations.values() if not r.get("recommended")]
        return sorted(missed, key=lambda r: -r["strength"])[:_count(n)]

    def scale(self, feature: int, near_miss: bool = False) -> float:
        """The recommended relative scale of ``feature`` (x the typical residual norm).
        ``near_miss=True`` also answers for a confirmed feature that was not recommended: the
        scale it was confirmed at."""
        row = self.confirmations.get(int(feature))
        if row is not None and near_miss:
            return float(row["scale"])
        if row is None or not row.get("recommended"):
            raise ValueError(f"feature {feature} is not recommended by this screen; "
                             f"recommended: {self.confirmed[:10]}")
        return float(row["scale"])

    @property
    def promise(self) -> str:
        """What "recommended" promises, in words."""
        return (f"at least {PROMISE:.0%} of recommended features are expected to pass the rule "
                f"again on {self.config.n_report} fresh samples per side at their scale "
                f"({PROMISE_CONFIDENCE:.0%} confidence)")

    def rows(self, stage: int = 1) -> list[dict[str, Any]]:
        """Table rows of stage 1 (every candidate, visiting order), 2 (confirmation) or 3
        (report)."""
        if stage == 1:
            return [{k: v for k, v in self.stage1[f].items() if k != "by_scale"}
                    for f in self.candidates if f in self.stage1]
        return list((self.confirmations if stage == 2 else self.reports).values())

    def save(self, directory: str | os.PathLike) -> Path:
        """``screen.json`` beside ``screen_config.json`` and ``steer_config.json``."""
        directory = Path(directory)
        self.config.save_json(directory / "select_config.json")
        self.steer.save_json(directory / "steer_config.json")
        write_json_atomic(directory / "screen.json", _json_safe({
            "candidates": self.candidates, "stage1": self.stage1,
            "confirmations": self.confirmations, "reports": self.reports, "meta": self.meta}))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SteerabilityScreen:
        """The screen saved in ``directory``; a missing or damaged one says what to do."""
        directory = Path(directory)
        path, again = directory / "screen.json", f"run the screen again, or remove {directory} to start afresh"
        if not path.exists():
            raise FileNotFoundError(
                f"no saved screen in {directory} (expected screen.json, select_config.json and "
                "steer_config.json); run screen_features(..., path=...) or screen.save(dir) first")
        try:
            data = json.loads(path.read_text(), parse_constant=float)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is corrupt (not valid JSON: {e}); {again}") from e
        cfg = SelectConfig.load_json(directory / "select_config.json")  # names its own file
        steer = SteerConfig.load_json(directory / "steer_config.json")
        try:
            missing = [k for k in ("candidates", "stage1", "confirmations", "meta") if k not in data]
            if missing:
                raise KeyError(f"no {', '.join(missing)}")
            return cls([int(f) for f in data["candidates"]], _int_keys(data["stage1"]),
                       _int_keys(data["confirmations"]), cfg, steer, dict(data["meta"]),
                       _int_keys(data.get("reports", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path} is corrupt: {e}; {again}") from None


def _count(n: Any) -> int:
    """``n`` as a count of features to list, or a ValueError that says what is wanted."""
    if not is_integer(n) or n < 1:
        raise ValueError(f"n must be a positive integer (how many features to return), got {n!r}")
    return int(n)


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
