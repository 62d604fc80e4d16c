"""The steering panel driven programmatically: set widget values, click, read the HTML."""
from __future__ import annotations

import re

import pytest

from builders import assert_clean, make_sae
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
    panel.scale.value = 12.5
    panel.button.click()
    assert _attr(panel.output.value, "data-feature") == "5"
    assert _attr(panel.output.value, "data-scale") == "12.5"
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
