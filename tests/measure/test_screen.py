"""The screen (the selection engine's preset over every alive feature): ranking on every
candidate, confirmation on fresh seeds, the report stage on further fresh seeds."""
from __future__ import annotations

import math

import pytest
import torch

from builders import make_sae, spy_seeds
from sae_steer.config import SearchConfig, SelectConfig, SteerConfig, sample_seeds
from sae_steer.inspect import search_features
from sae_steer.lm import attached_hook_count
from sae_steer.measure import Concept, steering_report, steering_reports
from sae_steer.measure.screen import screen_features
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.steer import Steerer

TEXTS = ["Once upon a time there was a little girl named Lily .",
         "She liked to play in the park with her friend Tom !"] * 4
CFG = SelectConfig(scales=(0.5, 1.0), n_rank=4, n_confirm=3, confirm_rounds=(6, 10),
                   confirm_keep=2, n_report=6)
STEER = SteerConfig(prompt="Once upon a time", max_new_tokens=8)


@pytest.fixture(scope="module")
def setup(tok_model):
    sae = make_sae(d_sae=8)
    search = search_features(tok_model, sae, TEXTS, SearchConfig(k=2, context_size=16),
                             progress=False)
    return sae, search


@pytest.fixture(scope="module")
def screen(tok_model, setup, tmp_path_factory):
    sae, search = setup
    return screen_features(tok_model, sae, search, CFG, STEER, progress=False,
                           path=tmp_path_factory.mktemp("screen"))


def test_stage1_measures_every_alive_candidate_in_output_score_order(screen, setup):
    _, search = setup
    assert set(screen.candidates) == set(search.alive()) == set(screen.stage1)
    scores = [screen.stage1[f]["output_score"] for f in screen.candidates]
    assert scores == sorted(scores, reverse=True)
    for row in screen.stage1.values():
        assert row["scale"] in CFG.scales
        assert row["n_samples"] == CFG.n_rank
        assert row["fires_gain_lo"] <= row["fires_gain"] <= row["fires_gain_hi"]
        assert [r["scale"] for r in row["by_scale"]] == list(CFG.scales)


def test_confirmation_takes_the_best_and_records_definitions(screen):
    assert 0 < len(screen.confirmations) <= CFG.n_confirm
    for row in screen.confirmations.values():
        assert row["n_samples"] in CFG.confirm_rounds
        assert set(row["passed"]) <= {"own firing", "own words"}
        assert 0.0 <= row["pass_chance"] <= 1.0 and isinstance(row["recommended"], bool)
        assert row["tested"] in ("own firing", "own words")
    last = [f for f, r in screen.confirmations.items() if r["round"] == 1]
    assert len(last) <= CFG.confirm_keep  # the family the last round tests
    if screen.confirmed:
        assert screen.recommended(len(screen.confirmed)) == screen.confirmed


def test_recommended_warns_with_nearest_misses_when_too_few_pass(screen):
    with pytest.warns(UserWarning, match="nearest misses"):
        got = screen.recommended(100)
    assert got == screen.confirmed
    with pytest.raises(ValueError, match="positive integer"):
        screen.recommended(-1)


def test_scale_of_a_feature_not_recommended_is_refused(screen):
    missed = [f for f in screen.candidates if f not in screen.confirmed]
    with pytest.raises(ValueError, match="not recommended"):
        screen.scale(missed[0])


def test_one_measurement_batch_equals_one_report_at_a_time(tok_model, setup):
    """Reports in one batch (one baseline, every arm together) give exactly what
    ``steering_report`` gives per feature."""
    sae, search = setup
    steer = STEER.replace(resid_norm=Steerer(tok_model, sae).resid_norm, scale_unit="relative",
                          n_samples=6, seed=1000)
    picks = [(1, 0.5), (3, 1.0)]
    words = {f: Concept.from_feature(search, f, tok_model) for f, _ in picks}
    reports = steering_reports(tok_model, sae, picks, steer, concept=words)
    for (f, rel), got in zip(picks, reports):
        one = steering_report(tok_model, sae, f, rel, steer, concept=words[f])
        assert [t.tolist() for t in got.generations[0].tokens] == \
               [t.tolist() for t in one.generations[0].tokens]
        assert _same(got.row(), one.row())
    assert attached_hook_count(tok_model) == 0


def _same(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), k
        elif isinstance(x, str):
            assert x == y, k
        else:
            assert x == pytest.approx(y, rel=1e-6, abs=1e-9), k
    return True


def test_every_stage_draws_its_own_seeds(tok_model, setup, tmp_path, monkeypatch):
    """The report stage's seeds are disjoint from ranking's and confirmation's."""
    sae, search = setup
    seen = spy_seeds(monkeypatch)
    screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path)
    stages = {"rank": set(sample_seeds(CFG.rank_seed, CFG.n_rank)),
              "confirm": set(sample_seeds(CFG.confirm_seed, sum(CFG.confirm_rounds))),
              "report": set(sample_seeds(CFG.report_seed, CFG.n_report))}
    assert not (stages["rank"] & stages["confirm"] or stages["rank"] & stages["report"]
                or stages["confirm"] & stages["report"])
    for seeds in seen:  # every batch drew from exactly one stage's seeds
        assert sum(seeds <= s for s in stages.values()) == 1


def test_resumes_from_disk_and_loads_the_same(tok_model, setup, tmp_path, monkeypatch):
    sae, search = setup
    first = screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path)
    loaded = SteerabilityScreen.load(tmp_path)
    assert loaded.stage1.keys() == first.stage1.keys()
    assert loaded.confirmed == first.confirmed and loaded.reports.keys() == first.reports.keys()
    # a second call measures nothing: every generation would fail
    import sae_steer.measure.batch as batch_mod
    import sae_steer.measure.select as select_mod
    for mod in (batch_mod, select_mod):
        monkeypatch.setattr(mod, "generate_rows", lambda *a, **k: pytest.fail("re-measured"))
    again = screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path)
    for f, row in again.confirmations.items():
        assert _same(row, loaded.confirmations[f])


def test_a_corrupt_saved_screen_says_what_to_do(tmp_path):
    (tmp_path / "screen.json").write_text("{not json")
    with pytest.raises(ValueError, match="screen.json is corrupt.*remove"):
        SteerabilityScreen.load(tmp_path)


def test_interrupted_ranking_resumes_with_the_same_figures(tok_model, setup, tmp_path,
                                                          monkeypatch):
    sae, search = setup
    whole = screen_features(tok_model, sae, search, CFG, STEER, progress=False,
                            path=tmp_path / "whole")
    import sae_steer.measure.select as select_mod
    real, calls = select_mod.run_reports, []

    def dies_second_time(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(select_mod, "generation_rows", lambda model: 2 * 4)  # 1 feature a batch
    monkeypatch.setattr(select_mod, "run_reports", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path / "cut")
    assert len(SteerabilityScreen.load(tmp_path / "cut").stage1) == 1
    monkeypatch.setattr(select_mod, "run_reports", real)
    resumed = screen_features(tok_model, sae, search, CFG, STEER, progress=False,
                              path=tmp_path / "cut")
    assert resumed.stage1 == whole.stage1
    assert attached_hook_count(tok_model) == 0


def test_given_features_and_bad_input(tok_model, setup, tmp_path):
    sae, search = setup
    alive = search.alive()
    two = screen_features(tok_model, sae, search, CFG, STEER, features=alive[:2], progress=False,
                          path=tmp_path)
    assert set(two.candidates) == set(alive[:2])
    top = screen_features(tok_model, sae, search, CFG, STEER, features=2, progress=False,
                          path=tmp_path / "top")  # a count: the top two alive by output score
    assert top.candidates == top.scores.top(2, alive=search.density > 0)
    with pytest.raises(ValueError, match="positive count"):
        screen_features(tok_model, sae, search, CFG, STEER, features=0, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        screen_features(tok_model, sae, search, CFG, STEER, features=[99], progress=False,
                        path=tmp_path / "x")
    with pytest.raises(ValueError, match="positive"):
        SelectConfig(scales=(0.0,))
    with pytest.raises(ValueError, match="distinct"):
        SelectConfig(rank_seed=3, confirm_seed=3)
    assert not (tmp_path / "x").exists()
    assert torch.is_tensor(search.density)
