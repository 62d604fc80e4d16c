"""inspect/card.py: logit effects with hand-set weights; card data. Its renderings
(ui.views, ui.plots, ui.widgets) are tested here too."""
from __future__ import annotations

import re

import pytest
import torch
from matplotlib.figure import Figure

from builders import make_sae
from sae_steer.config import SearchConfig
from sae_steer.inspect.card import (feature_card, interesting_features, logit_effects,
                                    unembed_direction)
from sae_steer.inspect.search import search_token_batches
from sae_steer.render import render_blocks
from sae_steer.ui.plots import card_histogram, plot_density_histogram
from sae_steer.ui.views import card_html, card_text, features_table_html
from sae_steer.ui.widgets import card_widget


@pytest.fixture
def identity_unembed(tiny_model):
    """W_U[k, k] = 1 for k < d_model: direction e_k pushes exactly token k."""
    with torch.no_grad():
        tiny_model.W_U.zero_()
        tiny_model.W_U[:, :16] = torch.eye(16)
        tiny_model.ln_final.w.fill_(1.0)
    return tiny_model


def test_unembed_direction_centres_and_scales(identity_unembed):
    model = identity_unembed
    d = torch.zeros(16)
    d[3], d[7] = 2.0, -1.0
    effect = unembed_direction(model, d)
    expected = torch.zeros(50)
    expected[:16] = d - d.mean()  # LayerNorm centres; ln_final.w = 1
    assert torch.allclose(effect, expected)
    with torch.no_grad():
        model.ln_final.w[3] = 0.5
    assert float(unembed_direction(model, d)[3]) == pytest.approx((2.0 - d.mean().item()) * 0.5)
    promoted, suppressed = logit_effects(model, d, n=2)
    assert [t for t, _ in promoted][0] == "<3>" and [t for t, _ in suppressed][0] == "<7>"
    assert promoted[0][1] > 0 > suppressed[0][1]


@pytest.fixture
def searched(tiny_model):
    sae = make_sae(d_sae=24, seed=1)
    with torch.no_grad():
        sae.b_enc[5] = -1e6
    g = torch.Generator().manual_seed(2)
    toks = torch.randint(4, 50, (30, 16), generator=g)
    toks[:, 0] = 1
    mask = torch.ones_like(toks, dtype=torch.bool)
    cfg = SearchConfig(k=4, context_left=3, context_right=2, n_bands=4, samples_per_band=2)
    batches = [(toks[i:i + 10], mask[i:i + 10]) for i in range(0, 30, 10)]
    return search_token_batches(tiny_model, sae, batches, cfg, progress=False), sae


def test_card_data_and_text(tiny_model, searched):
    search, sae = searched
    card = feature_card(search, tiny_model, sae, 3)
    assert card.feature == 3 and len(card.top) == 4
    assert card.max_act == pytest.approx(card.top[0].peak_act)
    assert sum(card.hist_counts) == int(search.tensors["n_fire"][3])
    assert card.density == pytest.approx(float(search.density[3]))
    text = card_text(card)
    first = card.top[0]
    # Excerpts are printed exactly as render_blocks gives them, scaled to the feature's max.
    assert render_blocks(first.str_tokens, first.acts, card.max_act) in text.splitlines()
    assert "█" in text.splitlines()[text.splitlines().index("Excerpt 1 (max %.3f):" % first.peak_act) + 1]
    assert "Lower activation bands:" in text and "of max" in text
    with pytest.raises(ValueError, match="feature 5 never fired"):
        feature_card(search, tiny_model, sae, 5)
    with pytest.raises(ValueError, match="out of range"):
        feature_card(search, tiny_model, sae, 99)


def test_card_html_and_figures(tiny_model, searched):
    search, sae = searched
    card = feature_card(search, tiny_model, sae, 3)
    out = card_html(card)
    assert out.startswith('<div class="sae-card" data-feature="3">')
    assert len(re.findall(r'class="sae-excerpt" data-feature="3"', out)) == len(card.top) + len(card.bands)
    assert "<script" not in out
    fig = card_histogram(card)
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    dens = plot_density_histogram(search)
    assert "1 of 24 features never fired" in dens.axes[0].get_title()


def test_interesting_features_table(tiny_model, searched):
    search, sae = searched
    rows = interesting_features(search, tiny_model, n=5, max_density=1.0)
    assert len(rows) == 5 and 5 not in [r["feature"] for r in rows]
    maxes = [r["max_act"] for r in rows]
    assert maxes == sorted(maxes, reverse=True)
    assert features_table_html(rows).count("<tr>") == 6
    assert interesting_features(search, tiny_model, max_density=0.0) == []


def test_card_refuses_other_sae(tiny_model, searched):
    search, _ = searched
    other = make_sae(d_sae=24, seed=2)
    with pytest.raises(ValueError, match="different SAE"):
        feature_card(search, tiny_model, other, 3)


def test_card_widget_follows_the_picker(tiny_model, searched):
    search, sae = searched
    box = card_widget(search, tiny_model, sae, feature=3)
    assert 'class="sae-card" data-feature="3"' in box.view.value
    assert "data:image/png;base64," in box.view.value and "block-element format" in box.view.value
    box.picker.value = 7
    assert 'class="sae-card" data-feature="7"' in box.view.value
    box.picker.value = 5  # dead: the message replaces the card
    assert 'class="sae-card-error" data-feature="5"' in box.view.value
    assert "feature 5 never fired" in box.view.value


def test_concept_feature_report_prints_block_excerpts(tiny_model, searched):
    from types import SimpleNamespace

    from sae_steer.inspect.groundtruth import match_rows
    from sae_steer.ui.views import concept_feature_report

    search, sae = searched
    matches = {"danger": SimpleNamespace(feature=3, f1=0.9, precision=0.8, recall=1.0, auroc=0.99),
               "quote": SimpleNamespace(feature=5, f1=0.1, precision=0.1, recall=0.1, auroc=0.5)}
    assert match_rows(matches)[0] == {"concept": "danger", "feature": 3, "f1": 0.9,
                                      "precision": 0.8, "recall": 1.0, "auroc": 0.99}
    text = concept_feature_report(tiny_model, sae, search, matches, n_excerpts=2)
    lines = text.splitlines()
    assert lines[0] == 'Concept "danger": feature 3 (f1 0.90, precision 0.80, recall 1.00, auroc 0.99)'
    first = search.top_excerpts(3, tiny_model)[0]
    assert lines[2] == render_blocks(first.str_tokens, first.acts, float(search.max_act[3]))
    assert sum(line.startswith("Excerpt ") for line in lines) == 2
    assert "feature 5 never fired" in text  # a dead match is reported, not raised


@pytest.mark.slow
def test_planted_concepts_report_on_the_offline_world():
    """The demo's report: each planted concept's best feature, its excerpts in blocks."""
    from sae_steer.lm import load_model
    from sae_steer.train.pipeline import reference_sae
    from sae_steer.ui.planted import planted_concepts_report

    model = load_model("toystories", preset="small", progress=False)
    sae = reference_sae(model, preset="small", progress=False)
    text = planted_concepts_report(model, sae, n_texts=100, n_excerpts=2, progress=False)
    heads = [line for line in text.splitlines() if line.startswith("Concept ")]
    assert [h.split('"')[1] for h in heads] == ["quote", "pretend_list", "time_to", "danger"]
    assert text.count("Excerpt 1 (max") == 4 and "█" in text
    f1 = {h.split('"')[1]: float(h.split("f1 ")[1].split(",")[0]) for h in heads}
    assert max(f1.values()) > 0.2  # at least one planted concept is found by a feature
