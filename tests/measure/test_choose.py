"""Concept -> feature selection: vocabulary weights, logit effect, on-word F1, the choice."""
from __future__ import annotations

import math

import pytest
import torch

from builders import (HOOK, PROMPT, assert_clean, make_sae, seeded_model, spy_seeds, tiny_config,
                      word_tokenizer)
from sae_steer.measure.candidates import _log_mass, concept_vocab, logit_effect, on_word_f1
from sae_steer.measure.candidates import ConceptCandidates
from sae_steer.steer import steering
from sae_steer.toystories import planted_concepts
from sae_steer.ui.views import concept_report_text


def test_concept_vocab_weights_characteristic_tokens():
    tok = word_tokenizer(["it", "was", "time", "to", "go", "a", "cloud", ",", "bird", "hello"])
    model = seeded_model(tiny_config(d_vocab=len(tok)), tok)
    concepts = planted_concepts()

    def ids(*words):
        return [tok.bos_token_id] + tok.convert_tokens_to_ids(list(words))

    time = tok.convert_tokens_to_ids("time")
    # "time" is labelled once in two uses; "a" is never labelled for time_to
    rows = [ids("it", "was", "time", "to", "go"), ids("a", "time")] * 3
    vocab = concept_vocab(model, rows, concepts["time_to"], min_count=1)
    assert vocab == {time: 1.0}
    a, cloud, comma, bird = tok.convert_tokens_to_ids(["a", "cloud", ",", "bird"])
    lists = [ids("a", "cloud", ",", "a", "bird")] * 3
    vocab = concept_vocab(model, lists, concepts["pretend_list"], min_count=1)
    assert set(vocab) == {a, cloud, comma, bird} and sum(vocab.values()) == pytest.approx(1.0)
    assert vocab[a] > vocab[cloud]  # "a" is labelled twice per list, always inside the list
    with pytest.raises(ValueError, match="fewer than"):
        concept_vocab(model, [ids("hello")], concepts["danger"])


def test_on_word_f1_hand_made():
    acts = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([True, False, True, False])
    f1 = on_word_f1(acts, mask)
    assert f1.tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_logit_effect_matches_steering_by_hand(tiny_model):
    sae = make_sae()
    vocab = {7: 0.75, 9: 0.25}
    prompt = torch.tensor(PROMPT)
    tokens = torch.stack([prompt, prompt + 10])
    effect = logit_effect(tiny_model, sae, vocab, tokens, scale=3.0, chunk=3)
    assert effect.shape == (8,)
    ids, log_w = torch.tensor([7, 9]), torch.tensor([0.75, 0.25]).log()
    with torch.no_grad():
        base = _log_mass(tiny_model(tokens), ids, log_w).mean()
        for f in (0, 5):
            row = sae.W_dec[f].detach()
            with steering(tiny_model, HOOK, row / row.norm(), 3.0):
                steered = _log_mass(tiny_model(tokens), ids, log_w).mean()
            assert float(effect[f]) == pytest.approx(float(steered - base), abs=1e-5)
    assert_clean(tiny_model)


def test_before_starts_marks_the_context_token():
    from sae_steer.measure.candidates import before_starts

    assert before_starts([False, False, True, True, False, True]) == [
        False, True, False, False, True, False]
    assert before_starts([True, False]) == [False, False]  # nothing precedes position 0


def test_concept_occurrences_counts_runs_in_generated_part():
    from sae_steer.measure.concepts import occurrences

    mask = [True, True, False, True, False, True, True]
    assert occurrences(mask) == 3
    assert occurrences(mask, start=1) == 2  # the run begun in the prompt is not counted


@pytest.mark.slow
def test_offline_world_danger_feature_steers_toward_danger():
    """End to end on the offline world: the predictive danger feature raises danger words."""
    from sae_steer import load_model, load_texts
    from sae_steer.measure import concept_candidates, steering_report
    from sae_steer.train.pipeline import reference_sae

    model = load_model("toystories", preset="small", progress=False)
    sae = reference_sae(model, preset="small", progress=False)
    texts = list(load_texts("toystories", split="validation", n=150, preset="small"))
    danger = planted_concepts()["danger"]
    cand = concept_candidates(model, sae, texts, danger, n_effect_texts=4)
    from sae_steer.toystories.vocab import DANGER_WORDS

    words = {model.tokenizer.decode([t]).strip() for t in cand.vocab}
    assert words and words <= set(DANGER_WORDS)
    # 0.5x the residual norm: the low end of the range where steering works here (the
    # bench sweeps 0.3-0.8); at 0.6 this SAE's text cost already nears the 1.5-nat budget.
    rep = steering_report(model, sae, cand.predictive[0], 0.5, n_samples=16, concept=danger,
                          scale_unit="relative", max_new_tokens=80)
    assert rep.concept_lift > 2.0 and rep.nll_cost.value < 1.5
    assert_clean(model)


def test_context_direction_is_the_mean_difference_before_the_concept(tok_model):
    """candidates.direction = mean residual on the token before each concept start minus
    the mean over all non-BOS tokens, unit norm; ``aligned`` ranks decoder rows by cosine."""
    from sae_steer.lm import hook_activations
    from sae_steer.measure import Concept, concept_candidates
    from sae_steer.measure.candidates import before_starts, decoder_alignment

    sae = make_sae(d_sae=8)
    park = Concept.words(["park"])
    texts = ["Lily liked to play in the park with Tom .",
             "Tom was a little girl ! she liked the park",
             "Once upon a time there was a park ."]
    cands = concept_candidates(tok_model, sae, texts, park, n_effect_texts=2, n_candidates=3)
    before, every = [], []
    for text in texts:
        ids = tok_model.to_tokens(text)[0]
        resid = hook_activations(tok_model, ids[None], HOOK)[0].float()
        flags = before_starts(park.mask(tok_model, ids.tolist()))
        before += [resid[i] for i in range(1, len(ids)) if flags[i]]
        every += [resid[i] for i in range(1, len(ids))]
    assert len(before) == 3  # "the park", "the park", "a park"
    expected = torch.stack(before).mean(0) - torch.stack(every).mean(0)
    expected = expected / expected.norm()
    assert cands.direction is not None
    assert torch.allclose(cands.direction, expected, atol=1e-5)
    cos = decoder_alignment(sae, cands.direction)
    rows = sae.W_dec.detach()
    by_hand = (rows @ expected) / rows.norm(dim=-1)
    assert torch.allclose(cos, by_hand, atol=1e-5)
    assert cands.aligned == by_hand.argsort(descending=True)[:3].tolist()


def test_no_concept_start_gives_no_direction(tok_model):
    from sae_steer.measure import Concept, concept_candidates

    # "park" only ever opens a text: no token precedes a start, so there is no context
    park = Concept.words(["park"])
    texts = ["park with Tom .", "park ! she liked", "park ."]
    # only BOS precedes a start here, and BOS is left out of the means on purpose
    cands = concept_candidates(tok_model, make_sae(), texts, park, n_effect_texts=2)
    assert cands.direction is None and cands.aligned == []


def test_the_concept_pool_takes_the_best_aligned_feature_too():
    from sae_steer.measure.choose import concept_pool

    danger = planted_concepts()["danger"]
    cand = ConceptCandidates(danger, {1: 1.0}, [2, 4, 9], torch.zeros(8), 6, 0.9, 7, 0.5,
                             aligned=[5, 3], direction=torch.ones(16))
    pool = concept_pool(cand, 2)
    assert list(pool) == [2, 4, 6, 7, 5]  # only the best-aligned one joins the pool
    assert pool[5] == "aligned" and pool[6] == "on_word" and pool[7] == "pre_word"


def test_steer_concept_ranks_confirms_and_reports_on_disjoint_seeds(tiny_model, monkeypatch):
    """The concept preset: ranked on the rank seeds, confirmed on others, and the figures
    shown (the report, with the concept's context direction at the chosen feature's norm,
    same seeds and baseline) on a third set."""
    import sae_steer.measure.choose as choose
    from sae_steer.config import SelectConfig, SteerConfig, sample_seeds
    from sae_steer.measure import Concept

    sae = make_sae()
    anything = Concept.tokens([3, 7, 9], name="some tokens")
    row = sae.W_dec[4].detach()

    def fake_candidates(model, sae, texts, concept, cfg=None, **kw):
        return ConceptCandidates(concept, {3: 1.0}, [4], torch.zeros(8), 4, 0.5,
                                 direction=row / row.norm())

    monkeypatch.setattr(choose, "concept_candidates", fake_candidates)
    seen = spy_seeds(monkeypatch)
    cfg = SelectConfig.for_concept(scales=(0.3,), n_rank=4, confirm_rounds=(6,), n_report=6)
    result = choose.steer_concept(
        tiny_model, sae, ["text"], anything, cfg,
        SteerConfig(scale_unit="relative", resid_norm=2.0, prompt=PROMPT, max_new_tokens=8))
    stages = [set(sample_seeds(s, n)) for s, n in ((0, 4), (1000, 6), (3000, 6))]
    assert all(any(batch <= st for st in stages) for batch in seen)
    assert {i for batch in seen for i, st in enumerate(stages) if batch <= st} == {0, 1, 2}
    ref, rep = result.direction, result.report
    assert rep.generations[0].seeds == sample_seeds(3000, 6)
    assert ref is not None and ref.kind == "reference" and ref.seed == -1
    assert ref.norm == pytest.approx(rep.control.norm)
    assert ref.norm == pytest.approx(0.3 * 2.0, rel=1e-5)  # relative 0.3 x residual norm 2
    # the feature's own row as "direction": the same vector, so the same samples and counts
    assert ref.side.concept_counts == rep.steered.concept_counts
    assert ref.side.nll_per_sample == pytest.approx(rep.steered.nll_per_sample, abs=1e-5)
    assert rep.prompted is not None and rep.prompted.kind == "prompt"  # token 3 asked for
    row_out = result.row()
    assert row_out["direction_lift"] == pytest.approx(ref.vs_unsteered.lift.value, nan_ok=True)
    assert result.choice.sweep.scales == [0.3] and result.relative_scale == 0.3
    assert result.candidates.best() == {"fires on it": 4, "predicts it": 4}
    summary = result.summary_row()  # the writeup's columns, read from the same report
    assert summary["feature"] == result.choice.feature and summary["scale (× norm)"] == 0.3
    assert summary["lift 95% low"] == row_out["lift_lo"] or math.isnan(row_out["lift_lo"])
    assert summary["events (steered / unsteered)"] == row_out["events"]
    assert summary["context direction: lift"] == pytest.approx(row_out["direction_lift"],
                                                               nan_ok=True)
    assert summary["target met"] == result.target_met
    text = concept_report_text(result)
    assert text.startswith(f"some tokens: feature {rep.feature} at 0.3× norm")
    assert "random direction, same norm: lift" in text and "context direction" in text
    assert f"on-word feature {result.candidates.on_word} fires in" in text
    assert_clean(tiny_model)


def test_one_rule_for_sweeps_targets_and_concept_results():
    """A lower bound exactly at the threshold passes everywhere: the sweep's suggestion, the
    target's pass test and the concept result's ``target_met`` (``rules.passes``)."""
    from types import SimpleNamespace

    from sae_steer.config import (COST_BUDGET, FIRES_GAIN_TARGET, LIFT_TARGET, SelectConfig,
                                  suggest_scale)
    from sae_steer.measure import Target
    from sae_steer.measure.choose import ConceptResult

    cfg = SelectConfig.for_concept()
    assert cfg.cost_budget == COST_BUDGET

    def report(lo, cost):
        est = SimpleNamespace(lo=lo)
        return SimpleNamespace(fires_gain={3: est}, lift=est, nll_cost=SimpleNamespace(value=cost))

    at, over = FIRES_GAIN_TARGET, COST_BUDGET + 0.01
    own = Target.own_firing()
    assert suggest_scale([0.5], [at], [0.0], FIRES_GAIN_TARGET) == 0.5
    assert own.passed(report(at, 0.0), 3) == ["own firing"]
    assert not own.passed(report(at - 1e-9, 0.0), 3)
    assert not own.passed(report(at, over), 3)
    assert not own.passed(report(float("nan"), 0.0), 3)
    assert ConceptResult(None, None, report(LIFT_TARGET, COST_BUDGET), 0.5, cfg).target_met
    assert not ConceptResult(None, None, report(LIFT_TARGET, over), 0.5, cfg).target_met


def test_best_scale_without_a_pass_takes_the_best_lower_bound_within_budget():
    from types import SimpleNamespace

    from sae_steer.measure import Target

    def cmp(lo, cost):
        return SimpleNamespace(fires_gain={3: SimpleNamespace(lo=lo)}, lift=None,
                               nll_cost=SimpleNamespace(value=cost))

    own = Target.own_firing()
    within = [cmp(0.1, 0.1), cmp(0.2, 0.2), cmp(0.25, 9.0)]  # 0.5's bound is best but too costly
    assert own.best_scale([0.1, 0.3, 0.5], within, 3) == 0.3
    broke = [cmp(0.1, 9.0), cmp(0.2, 9.0), cmp(0.25, 9.0)]
    assert own.best_scale([0.1, 0.3, 0.5], broke, 3) == 0.1  # an honest failure: the smallest
    passing = [cmp(0.1, 0.1), cmp(0.3, 0.2), cmp(0.4, 0.3)]
    assert own.best_scale([0.1, 0.3, 0.5], passing, 3) == 0.3  # the smallest that passes
