"""What a screen says to a reader: the note in place of the warning, the features to show
(recommended, else the nearest misses, each with its scale), the summary and its rows.
A hand-built screen, so each expected value is plain."""
from __future__ import annotations

import warnings

import pytest

from sae_steer.config import SelectConfig, SteerConfig
from sae_steer.measure.screen_results import SUMMARY_COLUMNS, SteerabilityScreen


def row(f: int, strength: float, scale: float, recommended: bool) -> dict:
    return {"feature": f, "words": f"w{f}", "scale": scale, "strength": strength, "round": 1,
            "n_samples": 8, "fires_unsteered": 0.1, "fires_steered": 0.5, "fires_gain": 0.4,
            "fires_gain_lo": 0.2, "lift": 2.0, "lift_lo": 1.5, "nll_cost": 0.3, "pass_chance": 0.9,
            "passed": ["own firing", "own words"], "recommended": recommended,
            "output_score": 0.5, "z": 1.0}


def screen_of(*rows: dict) -> SteerabilityScreen:
    stage1 = {r["feature"]: dict(r) for r in rows}
    return SteerabilityScreen([r["feature"] for r in rows], stage1,
                              {r["feature"]: r for r in rows}, SelectConfig(), SteerConfig())


def test_none_recommended_shows_the_nearest_misses_at_their_scales():
    screen = screen_of(row(3, 0.1, 0.4, False), row(5, 0.9, 0.6, False))
    assert screen.shown(1) == [(5, 0.6, "nearest miss")]
    assert screen.shown(5) == [(5, 0.6, "nearest miss"), (3, 0.4, "nearest miss")]
    assert screen.scale(5, near_miss=True) == 0.6
    with pytest.raises(ValueError, match="not recommended"):
        screen.scale(5)
    note = screen.note(2)
    assert note.startswith("only 0 of 2 screened features are recommended (asked for 2)")
    assert "nearest misses: 5 (gain +0.40" in note


def test_the_recommended_are_shown_first_and_the_note_is_the_warning():
    screen = screen_of(row(3, 0.1, 0.4, False), row(5, 0.9, 0.6, True), row(7, 2.0, 0.8, True))
    assert screen.shown(5) == [(7, 0.8, "recommended"), (5, 0.6, "recommended")]
    assert screen.note(2) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert screen.recommended(2) == [7, 5]  # enough: no warning
    with pytest.warns(UserWarning) as caught:
        screen.recommended(3)
    assert str(caught[0].message) == screen.note(3)
    with pytest.raises(ValueError, match="positive integer"):
        screen.note(0)


def test_summary_and_its_rows():
    screen = screen_of(row(3, 0.1, 0.4, False), row(5, 0.9, 0.6, True))
    assert screen.summary.startswith("2 of 2 candidate features ranked; 2 confirmed in rounds of")
    assert "; 1 recommended: " + screen.promise in screen.summary
    rows = screen.summary_rows(2)
    assert [r["feature"] for r in rows] == [5, 3]  # strongest first
    assert list(rows[0]) == list(SUMMARY_COLUMNS[2])
    assert "strength" not in screen.summary_rows(1)[0]
    assert screen.summary_rows(3) == []  # nothing reported yet
