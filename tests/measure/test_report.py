"""Re-scoring, steering reports and scale sweeps on the tiny model with hand-made SAEs."""
from __future__ import annotations

import math

import pytest
import torch

from builders import HOOK, PROMPT, assert_clean
from sae_steer.lm import hook_activations
from sae_steer.measure import (
    Estimate, measure, normal_mean, pooled_rate, rescore, scale_sweep, steering_report,
    suggest_scale, wilson,
)
from sae_steer.steer import generate_unsteered, steering
from sae_steer.ui.plots import plot_sweep
from sae_steer.ui.views import rescored_blocks, rescored_html

# The ``sae`` fixture (conftest.py) is an 8-feature SAE on HOOK of the 16-wide tiny models.


def test_wilson_interval_known_values():
    e = wilson(5, 10)
    assert e.value == 0.5 and e.lo == pytest.approx(0.2366, abs=1e-3)
    assert e.hi == pytest.approx(0.7634, abs=1e-3)
    zero = wilson(0, 32)
    assert zero.value == 0 and zero.lo == 0 and 0 < zero.hi < 0.15


def test_normal_mean_and_pooled_rate():
    e = normal_mean([1.0, 2.0, 3.0, math.nan])
    assert e.value == 2.0 and e.lo < 2.0 < e.hi
    r = pooled_rate([1, 3], [10, 10])
    assert r.value == pytest.approx(20.0) and r.lo <= 20.0 <= r.hi
    assert "[" in str(Estimate(1, 0, 2))


def test_measure_matches_hook_activations_and_nll(tiny_model, sae):
    rows = [torch.tensor(PROMPT), torch.tensor([5, 6, 7, 8, 9, 10])]
    m = measure(tiny_model, sae, rows, [0, 3], HOOK)
    for row, acts in zip(rows, m.acts):
        expected = sae.encode(hook_activations(tiny_model, row[None], HOOK))[0][:, [0, 3]]
        torch.testing.assert_close(acts, expected.detach(), rtol=1e-5, atol=1e-5)
    logits = tiny_model(rows[1][None])[0]
    nll = -torch.log_softmax(logits, -1)[:-1].gather(-1, rows[1][1:, None])[:, 0]
    torch.testing.assert_close(m.nll[1], nll.detach(), rtol=1e-5, atol=1e-5)


def test_rescore_renders_blocks_and_html(tiny_model, sae):
    gen = generate_unsteered(tiny_model, prompt=PROMPT, max_new_tokens=6, n_samples=2, seed=0)
    out = rescore(tiny_model, sae, gen, 2)
    assert len(out) == 2 and len(out[0].acts) == len(gen.tokens[0])
    # compute never renders: the views do
    assert not hasattr(out[0], "html") and not hasattr(out[0], "blocks")
    assert 'data-feature="2"' in rescored_html(out[0])
    assert rescored_blocks(out[0]).count(" ") >= len(gen.tokens[0])
    # token tensors work too, and give the same activations
    again = rescore(tiny_model, sae, gen.tokens, 2)
    assert again[1].acts == pytest.approx(out[1].acts)


def test_rescore_refuses_a_steered_model(tiny_model, sae):
    with steering(tiny_model, HOOK, torch.ones(16), 1.0):
        with pytest.raises(RuntimeError, match="hook"):
            rescore(tiny_model, sae, [PROMPT], 0)
    assert_clean(tiny_model)


def test_rescore_bad_feature(tiny_model, sae):
    with pytest.raises(ValueError, match="out of range"):
        rescore(tiny_model, sae, [PROMPT], 99)


def test_steering_report_scale_zero_is_a_null_result(tiny_model, sae):
    rep = steering_report(tiny_model, sae, 1, 0.0, n_samples=4, prompt=PROMPT,
                          max_new_tokens=8, seed=1)
    assert rep.nll_cost.value == pytest.approx(0.0, abs=1e-6)
    assert rep.steered.fires[1].value == rep.unsteered.fires[1].value
    assert rep.steered.n_tokens == rep.unsteered.n_tokens == 4 * 8
    assert_clean(tiny_model)


def test_steering_report_measures_generated_tokens_only(tiny_model, sae):
    rep = steering_report(tiny_model, sae, 1, 20.0, n_samples=4, prompt=PROMPT,
                          max_new_tokens=8, seed=1, rescore_features=[2])
    steered, unsteered = rep.generations
    assert [t.tolist() for t in steered.tokens] != [t.tolist() for t in unsteered.tokens]
    # the report's numbers are re-scores of the generated tokens (prompt excluded)
    for side, gen in ((rep.steered, steered), (rep.unsteered, unsteered)):
        scored = rescore(tiny_model, sae, gen, 2)
        new_acts = [torch.tensor(r.acts[gen.prompt_len:]) for r in scored]
        assert side.mean_act[2].value == pytest.approx(
            sum(float(a.mean()) for a in new_acts) / len(new_acts), rel=1e-5)
        assert side.fires[2].value == sum(bool((a > 0).any()) for a in new_acts) / 4
    assert rep.nll_cost.value == pytest.approx(rep.steered.nll.value - rep.unsteered.nll.value)
    assert set(rep.steered.fires) == {1, 2}
    row = rep.row()
    assert row["feature"] == 1 and "nll_cost" in row and "lift" not in row


def test_steering_report_compares_by_seed_and_carries_a_random_control(tiny_model, sae):
    rep = steering_report(tiny_model, sae, 1, 20.0, n_samples=6, prompt=PROMPT,
                          max_new_tokens=8, seed=3)
    s, u = rep.steered, rep.unsteered
    gain = rep.fires_gain[1]
    assert gain.value == pytest.approx(s.fires[1].value - u.fires[1].value)
    assert gain.lo <= gain.value <= gain.hi
    assert rep.rep_cost.value == pytest.approx(s.repetition.value - u.repetition.value)
    ctrl = rep.control
    assert ctrl is not None
    assert ctrl.norm == pytest.approx(20.0 * float(sae.W_dec[1].detach().norm()), rel=1e-5)
    assert ctrl.side.n_samples == 6 and ctrl.side.n_tokens == 6 * 8
    assert "control_fires_gain" in rep.row()
    assert steering_report(tiny_model, sae, 1, 20.0, n_samples=2, prompt=PROMPT,
                           max_new_tokens=4, control=False).control is None
    assert_clean(tiny_model)


def test_report_saves_its_config_beside_it(tiny_model, sae, tmp_path):
    import json

    from sae_steer.config import SteerConfig

    rep = steering_report(tiny_model, sae, 1, 5.0, n_samples=2, prompt=PROMPT, max_new_tokens=4)
    rep.save(tmp_path / "r")
    assert SteerConfig.load_json(tmp_path / "r" / "steer_config.json") == rep.config
    assert json.loads((tmp_path / "r" / "report.json").read_text())["feature"] == 1


def test_suggest_scale_picks_smallest_within_budget():
    scales = [0.1, 0.3, 0.5, 1.0]
    assert suggest_scale(scales, [0, 6, 8, 9], [0.1, 0.5, 1.0, 3.0], 5, 1.5) == 0.3
    assert suggest_scale(scales, [0, 1, 2, 9], [0.1, 0.5, 1.0, 3.0], 5, 1.5) is None


def test_scale_sweep_and_plot(tiny_model, sae):
    sweep = scale_sweep(tiny_model, sae, 1, [0.0, 5.0, 20.0], n_samples=3, prompt=PROMPT,
                        max_new_tokens=6, cost_budget=100.0)
    assert len(sweep.reports) == 3 and len(sweep.table()) == 3
    assert sweep.cost[0] == pytest.approx(0.0, abs=1e-6)
    # every report shares one unsteered baseline
    assert sweep.reports[0].generations[1] is sweep.reports[2].generations[1]
    fig = plot_sweep(sweep)
    assert fig.axes and fig.axes[0].get_xlabel().startswith("scale")
    with pytest.raises(ValueError, match="concept"):
        scale_sweep(tiny_model, sae, 1, [1.0], success="concept_lift")
    with pytest.raises(ValueError, match="empty"):
        scale_sweep(tiny_model, sae, 1, [])


def test_generations_html_and_tables(tiny_model, sae):
    from sae_steer.render import table_html, table_text
    from sae_steer.steer import generate_steered
    from sae_steer.ui.views import generations_html

    gen = generate_steered(tiny_model, sae, 3, 2.0, prompt=PROMPT, max_new_tokens=5, n_samples=2)
    out = generations_html(tiny_model, sae, gen, 3, title="feature <3>")
    assert 'data-feature="3"' in out and 'data-scale="2"' in out
    assert out.count("<details>") == 2 and "&lt;3&gt;" in out
    rows = [{"concept": "quote", "lift": 6.25}, {"concept": "<b>", "lift": 1.0}]
    assert "&lt;b&gt;" in table_html(rows) and "<th>lift</th>" in table_html(rows)
    text = table_text(rows).splitlines()
    assert len(text) == 3 and "6.25" in text[1]
