"""The selection engine with a target whose effect is known: a feature wired to fire when
steered is recommended, one wired to do nothing is not, and one that steers just above the
rule's line (so a re-test would often fail) is not recommended either."""
from __future__ import annotations

import random

import pytest

from builders import make_sae
from sae_steer.config import (FIRES_GAIN_TARGET, RETEST_POWER, SelectConfig, SteerConfig,
                              benjamini_hochberg, promise_p_value, retest_line, sample_seeds)
from sae_steer.measure import Target
from sae_steer.measure.report import Control, SteeringReport
from sae_steer.measure.sides import SideStats, compare
from sae_steer.measure.stats import normal_mean, wilson

WIRED, DEAD, NEAR = 1, 2, 3
GAIN = {WIRED: 0.6, DEAD: 0.0, NEAR: 0.32}  # true fire-rate gain when steered


def _side(f: int, fired: list[bool]) -> SideStats:
    n = len(fired)
    return SideStats({f: wilson(sum(fired), n)}, {f: fired}, {f: normal_mean([1.0] * n)},
                     {f: normal_mean([1.0] * n)}, normal_mean([2.0] * n), normal_mean([0.0] * n),
                     None, None, 10 * n, n, [2.0] * n, [0.0] * n, [], [10] * n)


def _fired(f: int, seed: int) -> tuple[bool, bool]:
    """(unsteered, steered) for one seed: the baseline fires 35 % of the time; steering
    turns the feature on in GAIN[f] of the samples where it was off (never off)."""
    r = random.Random(seed * 31 + f)
    base = r.random() < 0.35
    return base, base or r.random() < GAIN[f] / 0.65


def fake_run_reports(model, sae, items, cfg, *, seeds=None, control=True, prompts=None,
                     **kw) -> list[SteeringReport]:
    seeds = list(seeds) if seeds is not None else sample_seeds(cfg.seed, cfg.n_samples)
    out = []
    for f, scale in items:
        pairs = [_fired(f, s) for s in seeds]
        u, s = _side(f, [p[0] for p in pairs]), _side(f, [p[1] for p in pairs])
        rep = SteeringReport(f, scale, "decoder_row", None, s, u, compare(s, u), None,
                             (None, None), cfg)
        if control:
            rep.control = Control(1.0, 0, u, compare(u, u), "random")
        if prompts and prompts.get(f) is not None:
            rep.prompted = Control(0.0, -1, u, compare(u, u), "prompt")
        out.append(rep)
    return out


@pytest.fixture
def wired(monkeypatch):
    import sae_steer.measure.select as select_mod
    import sae_steer.measure.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "run_reports", fake_run_reports)
    monkeypatch.setattr(select_mod, "run_reports", fake_run_reports)
    monkeypatch.setattr(select_mod, "generate_rows", lambda *a, **k: None)  # no baseline needed


def test_the_wired_feature_is_recommended_and_the_dead_one_is_not(tiny_model, wired):
    from sae_steer.measure import select_features

    cfg = SelectConfig(scales=(0.5,), n_rank=8, n_confirm=3, confirm_rounds=(128, 384))
    screen = select_features(tiny_model, make_sae(), [WIRED, DEAD, NEAR], Target.own_firing(),
                             cfg, SteerConfig(resid_norm=1.0), progress=False)
    assert screen.recommended(1) == [WIRED] == screen.confirmed
    assert DEAD not in screen.confirmed and NEAR not in screen.confirmed
    # the near-line feature passes the rule once, but cannot promise a re-test
    near = screen.confirmations[NEAR]
    assert near["p_value"] > cfg.false_discovery_rate
    # the figures shown come from the report stage, on its own seeds
    report = screen.reports[WIRED]
    assert report["recommended"] and report["n_samples"] == cfg.n_report
    assert report["fires_gain"] == pytest.approx(GAIN[WIRED], abs=0.15)
    assert report["wrong_way"] == 0.0  # steering here never turns the feature off
    assert "control_fires_gain" in report


def test_nothing_recommended_is_said_plainly(tiny_model, wired):
    from sae_steer.measure import select_features

    cfg = SelectConfig(scales=(0.5,), n_rank=8, n_confirm=2, confirm_rounds=(64,), n_report=16)
    screen = select_features(tiny_model, make_sae(), [DEAD], Target.own_firing(), cfg,
                             SteerConfig(resid_norm=1.0), progress=False)
    assert screen.confirmed == [] and screen.reports == {}
    with pytest.warns(UserWarning, match="only 0 of 1 screened features are recommended"):
        assert screen.recommended(3) == []


def test_the_selection_line_is_what_a_retest_needs():
    """A true gain at the line passes a re-test's lower bound with the promised power."""
    import statistics

    se = 0.044  # a paired fire-rate difference near 0.5 on 128 samples
    line = retest_line(FIRES_GAIN_TARGET, se)
    z = statistics.NormalDist()
    assert 1 - z.cdf((FIRES_GAIN_TARGET + 1.959964 * se - line) / se) == pytest.approx(RETEST_POWER,
                                                                            abs=1e-4)
    assert promise_p_value(line, se, line) == pytest.approx(0.5)
    assert promise_p_value(line + 3 * se, se, line) < 0.01
    assert promise_p_value(float("nan"), se, line) == 1.0


def test_benjamini_hochberg_known_values():
    # m = 4 at q = 0.1: the thresholds are 0.025, 0.05, 0.075, 0.1
    assert benjamini_hochberg([0.01, 0.04, 0.2, 0.07], 0.1) == [True, True, False, True]
    assert benjamini_hochberg([0.06, 0.2], 0.1) == [False, False]  # 0.06 > 0.05, 0.2 > 0.1
    assert benjamini_hochberg([], 0.1) == []
