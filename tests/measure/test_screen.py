"""The steerability screen: stage 1 on every candidate, confirmation on fresh seeds."""
from __future__ import annotations

import math

import pytest
import torch

from builders import make_sae
from sae_steer.config import ScreenConfig, SearchConfig, SteerConfig
from sae_steer.inspect import search_features
from sae_steer.lm import attached_hook_count
from sae_steer.measure import Concept, steering_report
from sae_steer.measure.screen import confirm, screen_features
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.steer import Steerer

TEXTS = ["Once upon a time there was a little girl named Lily .",
         "She liked to play in the park with her friend Tom !"] * 4
CFG = ScreenConfig(scales=(0.5, 1.0), n_samples=4, n_confirm=3, n_final=6)
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
    alive = {int(i) for i in (search.density > 0).nonzero().flatten()}
    assert set(screen.candidates) == alive == set(screen.stage1)
    scores = [screen.stage1[f]["output_score"] for f in screen.candidates]
    assert scores == sorted(scores, reverse=True)
    for row in screen.stage1.values():
        assert row["scale"] in CFG.scales
        assert row["n_samples"] == CFG.n_samples
        assert row["fires_gain_lo"] <= row["fires_gain"] <= row["fires_gain_hi"]
        assert [r["scale"] for r in row["by_scale"]] == list(CFG.scales)


def test_confirmation_takes_the_best_and_records_definitions(screen):
    assert 0 < len(screen.confirmations) <= CFG.n_confirm
    for f, row in screen.confirmations.items():
        assert row["n_samples"] == CFG.n_final
        assert set(row["passed"]) <= {"own firing", "own words"}
        assert "control_fires_gain" in row
    assert screen.recommended(len(screen.confirmed)) == screen.confirmed


def test_recommended_warns_with_nearest_misses_when_too_few_pass(screen):
    with pytest.warns(UserWarning, match="nearest misses"):
        got = screen.recommended(100)
    assert got == screen.confirmed


def test_scale_of_an_unconfirmed_feature_is_refused(screen):
    missed = [f for f in screen.candidates if f not in screen.confirmed]
    with pytest.raises(ValueError, match="not confirmed"):
        screen.scale(missed[0])


def test_confirmation_equals_steering_report_one_feature_at_a_time(tok_model, setup):
    """Stage 2's batched reports give exactly what ``steering_report`` gives per feature."""
    sae, search = setup
    steerer = Steerer(tok_model, sae)
    steer = STEER.replace(resid_norm=steerer.resid_norm, scale_unit="relative")
    picks = [(1, 0.5), (3, 1.0)]
    words = {f: Concept.from_feature(search, f, tok_model) for f, _ in picks}
    reports = confirm(tok_model, sae, picks, words, CFG, steer)
    for f, rel in picks:
        one = steering_report(tok_model, sae, f, rel, steer, concept=words[f],
                              n_samples=CFG.n_final, seed=CFG.confirm_seed)
        got = reports[f]
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


def test_resumes_from_disk_and_loads_the_same(tok_model, setup, tmp_path, monkeypatch):
    sae, search = setup
    first = screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path)
    loaded = SteerabilityScreen.load(tmp_path)
    assert loaded.stage1.keys() == first.stage1.keys()
    assert loaded.confirmed == first.confirmed
    # a second call measures nothing: every generation would fail
    import sae_steer.measure.screen as screen_mod
    monkeypatch.setattr(screen_mod, "generate_rows", lambda *a, **k: pytest.fail("re-measured"))
    again = screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path)
    assert again.confirmations == loaded.confirmations


def test_interrupted_stage1_resumes_with_the_same_figures(tok_model, setup, tmp_path, monkeypatch):
    sae, search = setup
    whole = screen_features(tok_model, sae, search, CFG, STEER, progress=False,
                            path=tmp_path / "whole")
    import sae_steer.measure.screen as screen_mod
    real, calls = screen_mod._stage1_chunk, []

    def dies_second_time(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(screen_mod, "generation_rows", lambda model: 2 * 4)  # 1 feature a chunk
    monkeypatch.setattr(screen_mod, "_stage1_chunk", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        screen_features(tok_model, sae, search, CFG, STEER, progress=False, path=tmp_path / "cut")
    assert len(SteerabilityScreen.load(tmp_path / "cut").stage1) == 1
    monkeypatch.setattr(screen_mod, "_stage1_chunk", real)
    resumed = screen_features(tok_model, sae, search, CFG, STEER, progress=False,
                              path=tmp_path / "cut")
    assert resumed.stage1 == whole.stage1
    assert attached_hook_count(tok_model) == 0


def test_given_features_and_bad_input(tok_model, setup, tmp_path):
    sae, search = setup
    alive = [int(i) for i in (search.density > 0).nonzero().flatten()]
    two = screen_features(tok_model, sae, search, CFG, STEER, features=alive[:2], progress=False,
                          path=tmp_path)
    assert set(two.candidates) == set(alive[:2])
    with pytest.raises(ValueError, match="out of range"):
        screen_features(tok_model, sae, search, CFG, STEER, features=[99], progress=False,
                        path=tmp_path / "x")
    with pytest.raises(ValueError, match="positive"):
        ScreenConfig(scales=(0.0,))
    assert not (tmp_path / "x").exists()
    assert torch.is_tensor(search.density)
