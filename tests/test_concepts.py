"""Concept -> feature selection: vocabulary weights, logit effect, on-word F1, the choice."""
from __future__ import annotations

import pytest
import torch

from sae_steer.collect import attached_hook_count
from sae_steer.concepts import (
    ConceptCandidates, _log_mass, _rank, choose_feature, concept_vocab, logit_effect, on_word_f1,
)
from sae_steer.score import Sweep
from sae_steer.steer import steering
from tests.test_steer import HOOK, PROMPT, StubSAE


def test_concept_vocab_weights_characteristic_tokens():
    # "time" is labelled once in two uses; "a" is never labelled for time_to
    st = [["<bos>", "it", "was", "time", "to", "go"], ["<bos>", "a", "time"]] * 3
    ids = [[0, 1, 2, 3, 4, 5], [0, 6, 3]] * 3
    vocab = concept_vocab(st, ids, "time_to", min_count=1)
    assert vocab == {3: 1.0}
    lists = [["<bos>", "a", "cloud", ",", "a", "bird"]] * 3
    vocab = concept_vocab(lists, [[0, 1, 2, 3, 1, 4]] * 3, "pretend_list", min_count=1)
    assert set(vocab) == {1, 2, 3, 4} and sum(vocab.values()) == pytest.approx(1.0)
    assert vocab[1] > vocab[2]  # "a" is labelled twice per list, always inside the list
    with pytest.raises(ValueError, match="fewer than"):
        concept_vocab([["<bos>", "hello"]], [[0, 1]], "danger")


def test_on_word_f1_hand_made():
    acts = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([True, False, True, False])
    f1 = on_word_f1(acts, mask)
    assert f1.tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_logit_effect_matches_steering_by_hand(tiny_model):
    sae = StubSAE()
    vocab = {7: 0.75, 9: 0.25}
    tokens = torch.stack([PROMPT, PROMPT + 10])
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
    assert attached_hook_count(tiny_model) == 0


def _sweep(success, cost, suggested):
    return Sweep([0.1, 0.3, 0.5], [], "concept_lift", success, cost, 5.0, 1.5, suggested,
                 "relative")


def test_rank_prefers_met_target_at_smallest_scale():
    met_late = _sweep([1, 2, 6], [0.1, 0.2, 1.0], 0.5)
    met_early = _sweep([1, 6, 9], [0.1, 0.5, 3.0], 0.3)
    never = _sweep([1, 4, 30], [0.1, 0.5, 3.0], None)
    assert sorted([never, met_late, met_early], key=_rank) == [met_early, met_late, never]


def test_choose_feature_runs_sweeps(tiny_model, monkeypatch):
    import sae_steer.concepts as concepts

    calls = []

    def fake_sweep(model, sae, feature, scales, **kw):
        calls.append(feature)
        good = feature == 4
        return _sweep([1, 6 if good else 2, 9], [0.1, 0.4, 2.0], 0.3 if good else None)

    monkeypatch.setattr(concepts, "scale_sweep", fake_sweep)
    cand = ConceptCandidates("danger", {1: 1.0}, [2, 4, 6, 7], torch.zeros(8), 6, 0.9)
    choice = choose_feature(tiny_model, StubSAE(), cand, [0.1, 0.3, 0.5], n_candidates=3)
    assert calls == [2, 4, 6] and choice.feature == 4 and choice.scale == 0.3
    assert choice.kind == "predictive"


def test_before_starts_marks_the_context_token():
    from sae_steer.concepts import before_starts

    assert before_starts([False, False, True, True, False, True]) == [
        False, True, False, False, True, False]
    assert before_starts([True, False]) == [False, False]  # nothing precedes position 0


def test_concept_occurrences_counts_runs_in_generated_part():
    from sae_steer.score import concept_occurrences

    mask = [True, True, False, True, False, True, True]
    assert concept_occurrences(mask) == 3
    assert concept_occurrences(mask, start=1) == 2  # the run begun in the prompt is not counted


@pytest.mark.slow
def test_offline_world_danger_feature_steers_toward_danger():
    """End to end on the offline world: the predictive danger feature raises danger words."""
    from sae_steer import load_model, load_texts
    from sae_steer.concepts import concept_candidates
    from sae_steer.pipeline import reference_sae
    from sae_steer.score import steering_report

    model = load_model("toystories", preset="small", progress=False)
    sae = reference_sae(model, preset="small", progress=False)
    texts = list(load_texts("toystories", split="validation", n=150, preset="small"))
    cand = concept_candidates(model, sae, texts, "danger", n_effect_texts=4)
    from sae_steer.toystories.vocab import DANGER_WORDS

    words = {model.tokenizer.decode([t]).strip() for t in cand.vocab}
    assert words and words <= set(DANGER_WORDS)
    # 0.5x the residual norm: the low end of the range where steering works here (the
    # bench sweeps 0.3-0.8); at 0.6 this SAE's text cost already nears the 1.5-nat budget.
    rep = steering_report(model, sae, cand.predictive[0], 0.5, n_samples=16, concept="danger",
                          scale_unit="relative", max_new_tokens=80)
    assert rep.concept_lift > 2.0 and rep.nll_cost.value < 1.5
    assert attached_hook_count(model) == 0
