"""The selection engine with a target whose effect is known: a feature wired to fire when
steered is recommended, one wired to do nothing is not, and one that steers just above the
rule's line (so a re-test would often fail) is not recommended either; and the promise's
arithmetic (``config.rules``) on known values."""
from __future__ import annotations

import random

import pytest

from builders import make_sae
from sae_steer.config import (FIRES_GAIN_TARGET, SelectConfig, SteerConfig, promise_kept,
                              retest_pass_low, retest_pass_probability, sample_seeds)
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

    cfg = SelectConfig(scales=(0.5,), n_rank=8, n_confirm=3, confirm_rounds=(128, 384),
                       confirm_keep=2)
    screen = select_features(tiny_model, make_sae(), [WIRED, DEAD, NEAR], Target.own_firing(),
                             cfg, SteerConfig(resid_norm=1.0), progress=False)
    assert screen.recommended(1) == [WIRED] == screen.confirmed
    assert DEAD not in screen.confirmed and NEAR not in screen.confirmed
    # the near-line feature may pass the rule once, but a re-test would mostly fail
    assert screen.confirmations[NEAR]["pass_chance"] < 0.5
    assert screen.confirmations[WIRED]["pass_chance"] > 0.99
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


def test_a_retest_pass_chance_follows_the_rules_interval():
    """At a true gain of target + 1.96 se a re-test's lower bound sits on the target half the
    time; far above, it almost always clears it; nothing measured, never."""
    se = 0.044  # a paired fire-rate difference near 0.5 on 128 samples
    at_line = FIRES_GAIN_TARGET + 1.959964 * se
    assert retest_pass_probability(at_line, se, FIRES_GAIN_TARGET) == pytest.approx(0.5, abs=1e-4)
    assert retest_pass_probability(0.5, se, FIRES_GAIN_TARGET) > 0.99
    assert retest_pass_probability(float("nan"), se, FIRES_GAIN_TARGET) == 0.0


def test_the_promise_takes_the_largest_set_whose_mean_bound_keeps_it():
    t, ser = FIRES_GAIN_TARGET, 0.044
    # one feature's bound: its chance at its effect's lower bound (2 features together)
    low = retest_pass_low(0.5, 0.015, ser, t, 2)
    z = 1.959964  # one-sided at 0.05 / 2
    assert low == pytest.approx(retest_pass_probability(0.5 - z * 0.015, ser, t))
    assert retest_pass_low(0.5, 0.015, ser, t, 4) < low  # more features: each bound wider
    assert retest_pass_low(0.5, float("nan"), ser, t, 1) == 0.0
    # best first; the third would pull the mean under 0.8
    assert promise_kept([0.95, 0.3, 0.9, 0.7]) == [0, 2, 3]
    assert promise_kept([0.95, 0.3, 0.9, 0.5]) == [0, 2]
    assert promise_kept([0.79, 0.5]) == [] and promise_kept([]) == []
