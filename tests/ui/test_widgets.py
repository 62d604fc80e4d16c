"""The steering panel driven programmatically: set widget values, click, read the HTML."""
from __future__ import annotations

import re

import pytest

from builders import assert_clean, make_sae
from sae_steer.config import SearchConfig, SelectConfig, SteerConfig
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.inspect import search_features
from sae_steer.measure.steerability import feature_scores
from sae_steer.ui.widgets import SteeringPanel


@pytest.fixture
def panel(tiny_model) -> SteeringPanel:
    p = SteeringPanel(tiny_model, make_sae(), feature=1, scale=2.0, max_new_tokens=6)
    p.prompt.value = "1 2 3"  # the tiny model has no tokenizer: token ids
    return p


def _attr(html: str, name: str) -> str:
    return re.search(rf'class="steer-output" [^>]*{name}="([^"]*)"', html).group(1)


def test_structure_for_the_browser_test(panel):
    assert panel.button.description == "Generate"
    assert panel.feature.description == "feature" and panel.scale.description == "scale"
    assert panel.feature.max == 7 and panel.feature_box.max == 7
    assert panel.scale.min < 0 < panel.scale.max and panel.scale.step <= 0.1
    assert set(panel.mode.options) == {("decoder row", "decoder_row"), ("clamp", "clamp"),
                                       ("decoder(onehot)", "decoder_onehot")}


def test_click_updates_output_to_new_feature(panel):
    panel.button.click()
    assert _attr(panel.output.value, "data-feature") == "1"
    first_text = panel.texts.value
    panel.feature.value = 5
    assert panel.feature_box.value == 5  # slider and number box are linked
    panel.scale.value = 3.5  # inside the derived range (about ±5.9 here)
    panel.button.click()
    assert _attr(panel.output.value, "data-feature") == "5"
    assert _attr(panel.output.value, "data-scale") == "3.5"
    assert 'data-feature="5"' in panel.output.value  # the re-scored excerpts too
    assert "unsteered" in panel.texts.value and panel.texts.value != first_text
    assert "▁" in panel.blocks.value or "█" in panel.blocks.value
    assert "done" in panel.status.value and panel.runs == 2
    assert not panel.button.disabled


def test_box_drives_slider_and_modes_run(panel):
    panel.feature_box.value = 3
    assert panel.feature.value == 3
    for mode in ("clamp", "decoder_onehot"):
        panel.mode.value = mode
        panel.button.click()
        assert _attr(panel.output.value, "data-mode") == mode
    assert_clean(panel.model)


def test_errors_show_in_panel_not_traceback(panel):
    panel.prompt.value = ""
    panel.button.click()
    assert "Error" in panel.status.value and "empty" in panel.status.value
    panel.prompt.value = "not ids"
    panel.button.click()
    assert "token ids" in panel.status.value
    assert_clean(panel.model)
    assert not panel.button.disabled
    panel.prompt.value = "1 2"
    panel.max_tokens.value = 31  # 2 + 31 > n_ctx 32: clear error, not a crash
    panel.button.click()
    assert "exceeds" in panel.status.value


def test_clicks_during_a_run_are_ignored(panel):
    panel._busy = True
    panel.button.click()
    assert panel.runs == 0 and 'data-feature=""' in panel.output.value
    panel._busy = False
    panel.button.click()
    assert panel.runs == 1


@pytest.mark.slow
def test_panel_on_the_offline_world():
    from sae_steer import load_model
    from sae_steer.train.pipeline import reference_sae

    model = load_model("toystories", preset="small", progress=False)
    panel = SteeringPanel(model, reference_sae(model, preset="small", progress=False),
                          feature=3, scale=8.0, max_new_tokens=20)
    panel.button.click()
    assert "Once upon a time" in panel.texts.value and "× the typical residual norm" in panel.status.value
    panel.feature.value = 10
    panel.button.click()
    assert _attr(panel.output.value, "data-feature") == "10"
    assert_clean(model)


# ------------------------------------------------ the panel knows its features


@pytest.fixture(scope="module")
def found(tok_model):
    sae = make_sae()
    texts = ["Once upon a time there was a little girl named Lily .",
             "She liked to play in the park with her friend Tom !"] * 4
    search = search_features(tok_model, sae, texts, SearchConfig(k=2, context_size=16),
                             progress=False)
    return sae, search, feature_scores(tok_model, sae, search=search, progress=False)


@pytest.fixture
def rich(tok_model, found) -> SteeringPanel:
    sae, search, scores = found
    return SteeringPanel(tok_model, sae, feature=1, scale=2.0, max_new_tokens=6,
                         search=search, scores=scores)


def _shaded(html: str) -> list[float]:
    return [float(a) for a in re.findall(r'class="sae-tok" data-act="([^"]*)"', html) if float(a)]


def test_without_search_or_scores_the_rows_show_promoted_tokens(panel):
    assert "promotes" in panel.rows[0].info.value and "output score" not in panel.rows[0].info.value
    assert panel.steerable.disabled
    assert [v for _, v in panel.unit.options] == ["absolute", "relative"]  # no search: no max_act
    panel.feature.value = 4
    assert 'data-feature="4"' in panel.rows[0].info.value  # the label follows the slider


def test_search_and_scores_label_the_features_but_offer_nothing_unmeasured(rich, found):
    sae, search, scores = found
    info = rich.rows[0].info.value
    assert "fires on" in info and f"{float(scores.output_score[1]):.3f}" in info
    # a proxy score does not say which features steer: only a screen fills the dropdown
    assert rich.steerable.disabled and "screen_features" in rich.steerable.options[0][0]
    assert [v for _, v in rich.unit.options] == ["absolute", "relative", "max_act"]


def _screen(confirmations):
    row = dict(fires_gain=0.5, fires_gain_lo=0.35, fires_gain_hi=0.62, lift=4.0, lift_lo=3.1,
               strength=1.2)
    conf = {f: {**row, "feature": f, "scale": sc, "passed": ok, "recommended": bool(ok),
                "strength": row["strength"] - k / 10} for k, (f, sc, ok) in enumerate(confirmations)}
    return SteerabilityScreen([f for f, _, _ in confirmations], {}, conf, SelectConfig(),
                              SteerConfig())


def test_the_dropdown_offers_recommended_features_at_their_scale(tok_model, found):
    sae, search, scores = found
    screen = _screen([(3, 0.35, ["own firing"]), (5, 0.5, []), (2, 0.5, ["own words"])])
    panel = SteeringPanel(tok_model, sae, feature=1, scale=2.0, max_new_tokens=6, search=search,
                          scores=scores, screen=screen)
    assert [v for _, v in panel.steerable.options] == [3, 2]  # 5 was not recommended
    label, best = panel.steerable.options[0]
    assert label.startswith("3: fires on") and "gain +0.50 [+0.35, +0.62]" in label
    panel.steerable.value = best
    assert panel.feature.value == 3 and panel.feature_box.value == 3
    assert panel.unit.value == "relative" and panel.scale.value == 0.35


def test_a_screen_that_recommended_nothing_says_so(tok_model, found):
    sae, search, scores = found
    screen = _screen([(5, 0.5, [])])
    panel = SteeringPanel(tok_model, sae, feature=1, scale=2.0, search=search, screen=screen)
    assert panel.steerable.disabled
    assert "recommended no feature; nearest miss: 5" in panel.steerable.options[0][0]
    assert panel.steerable.label == panel.steerable.options[0][0]  # shown, not a blank box
    assert panel.scores is None and "output score" not in panel.rows[0].info.value
    screen.scores = scores  # a screen from this session knows what ordered its candidates
    panel = SteeringPanel(tok_model, sae, feature=1, scale=2.0, search=search, screen=screen)
    assert panel.info.scores is scores and "output score" in panel.rows[0].info.value


def test_a_second_and_third_feature_each_with_its_own_scale(rich):
    assert rich.n_features == 1 and rich.rows[1].widget.layout.display == "none"
    rich.add.click()
    rich.add.click()
    assert rich.n_features == 3 and rich.add.disabled and not rich.remove.disabled
    assert [r.scale.description for r in rich.rows] == ["scale", "scale 2", "scale 3"]
    for row, (f, s) in zip(rich.rows, [(1, 3.0), (4, -2.0), (6, 1.5)]):
        row.feature.value, row.scale.value = f, s
    rich.button.click()
    out = rich.output.value
    assert _attr(out, "data-features") == "1:3,4:-2,6:1.5"
    assert _attr(out, "data-feature") == "1" and _attr(out, "data-scale") == "3"
    for f in (1, 4, 6):
        assert f"feature {f}" in rich.status.value and f'data-feature="{f}"' in out
    assert re.search(r"<div class='steer-text'>[^<]+</div>", rich.texts.value)
    assert _shaded(out), "the re-scored text highlights nothing"
    rich.remove.click()
    rich.button.click()
    assert _attr(rich.output.value, "data-features") == "1:3,4:-2"
    rich.rows[1].feature.value = 1  # the same feature twice: said, not steered
    rich.button.click()
    assert "feature 1 is chosen twice" in rich.status.value
    assert_clean(rich.model)


def test_a_relative_scale_and_its_derived_absolute_range(tiny_model):
    sae = make_sae()
    p = SteeringPanel(tiny_model, sae, feature=1, scale=0.7, scale_unit="relative",
                      max_new_tokens=4, resid_norm=3.0)
    assert p.unit.value == "relative" and p.scale.value == 0.7 and p.scale.max == 2.0
    p.unit.value = "absolute"  # the same pushes, in feature 1's absolute units
    row_norm = float(sae.W_dec[1].detach().norm())
    assert p.scale.max == pytest.approx(round(2.0 * 3.0 / row_norm, 1))
    assert p.scale.min == -p.scale.max
    assert p.scale.value == pytest.approx(round(0.5 * 3.0 / row_norm, 1))
    p.unit.value = "relative"
    assert p.scale.value == 0.7  # the scale it was given, in the unit it was given in
    fixed = SteeringPanel(tiny_model, sae, feature=1, scale=2.0, scale_range=(-5, 5, 0.5))
    assert (fixed.scale.min, fixed.scale.max, fixed.scale.step) == (-5, 5, 0.5)


def test_positions_and_scale_unit_controls(rich, found):
    _, search, _ = found
    rich.positions.value = "generated"
    rich.unit.value = "relative"
    assert rich.scale.max == 2.0 and rich.scale.value == 0.5  # the slider speaks the unit
    rich.button.click()
    out = rich.output.value
    assert _attr(out, "data-positions") == "generated" and _attr(out, "data-unit") == "relative"
    assert "0.50× the typical residual norm" in rich.status.value
    rich.unit.value = "max_act"
    rich.scale.value = 2.0
    rich.button.click()
    absolute = 2.0 * float(search.max_act[1])
    assert f"scale {absolute:g} =" in rich.status.value, rich.status.value
    rich.unit.value = "absolute"
    # back to the given scale, in a range derived from the norm: the relative slider's pushes
    top = max(round(rich.steerer.to_absolute(2.0, 1), 1), 2.0)
    assert rich.scale.value == 2.0 and rich.scale.max == pytest.approx(top)
    rich.mode.value = "clamp"
    rich.button.click()
    assert "clamped to 2" in rich.status.value
    assert_clean(rich.model)
