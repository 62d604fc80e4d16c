"""Concept <-> feature matching on hand-made activations with known answers."""
from __future__ import annotations

import pytest
import torch

from builders import seeded_model, tiny_config
from sae_steer.inspect.groundtruth import ConceptMatch, acts_and_labels, auroc, match_concepts


@pytest.fixture
def acts_and_y():
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    acts = torch.zeros(8, 4)
    acts[:3, 2] = torch.tensor([3.0, 2.0, 1.0])  # feature 2: exactly the concept
    acts[:, 0] = 1.0  # feature 0: always on (recall 1, precision 3/8)
    acts[[0, 3], 1] = 5.0  # feature 1: one hit, one false alarm
    return acts, y


def test_best_feature_and_scores(acts_and_y):
    acts, y = acts_and_y
    m = match_concepts(acts, {"quote": y})["quote"]
    assert isinstance(m, ConceptMatch)
    assert (m.feature, m.precision, m.recall, m.f1, m.auroc) == (2, 1.0, 1.0, 1.0, 1.0)
    assert (m.n_positive, m.n_tokens) == (3, 8)


def test_scores_of_imperfect_features(acts_and_y):
    acts, y = acts_and_y
    only0 = match_concepts(acts[:, :1], {"c": y})["c"]
    assert only0.precision == pytest.approx(3 / 8) and only0.recall == 1.0
    assert only0.f1 == pytest.approx(2 * 3 / (8 + 3))
    assert only0.auroc == pytest.approx(0.5)  # constant scores: all ties
    only1 = match_concepts(acts[:, 1:2], {"c": y})["c"]
    assert (only1.precision, only1.recall) == (0.5, pytest.approx(1 / 3))
    # AUROC: positives scores (5,0,0) vs negatives (5,0,0,0,0): ties count half.
    expected = (0.5 * 1 * 1 + 1 * 4 + 0.5 * 2 * 4 + 0) / 15
    assert only1.auroc == pytest.approx(expected)


def test_threshold_and_auroc_selection(acts_and_y):
    acts, y = acts_and_y
    # Above 1.5 feature 2 misses its weakest token: recall 2/3.
    m = match_concepts(acts[:, 2:3], {"c": y}, threshold=1.5)["c"]
    assert m.recall == pytest.approx(2 / 3) and m.precision == 1.0 and m.threshold == 1.5
    assert match_concepts(acts, {"c": y}, by="auroc")["c"].feature == 2


def test_auroc_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (60, 3), generator=g).float()  # many ties
    y = torch.rand(60, generator=g) < 0.3
    pos, neg = scores[y], scores[~y]
    for j in range(3):
        diff = pos[:, j, None] - neg[None, :, j]
        pairwise = ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()
        assert auroc(scores, y)[j].item() == pytest.approx(pairwise.item())
    assert auroc(scores[:, 0], y).ndim == 0
    assert torch.isnan(auroc(scores, torch.zeros(60, dtype=torch.bool))).all()


def test_validation(acts_and_y):
    acts, y = acts_and_y
    with pytest.raises(ValueError, match="no labelled tokens"):
        match_concepts(acts, {"c": torch.zeros(8, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        match_concepts(acts, {"c": y[:5]})
    with pytest.raises(ValueError, match="n_tok, d_sae"):
        match_concepts(acts[0], {"c": y})
    with pytest.raises(ValueError, match="by must"):
        match_concepts(acts, {"c": y}, by="mse")


def test_acts_and_labels_with_a_probe_encoder():
    """An 'encoder' that reads the token identity back finds the danger words exactly."""
    from sae_steer.toystories import generate_stories, planted_concepts
    from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab

    stories = generate_stories(60, seed=1)
    tok = build_tokenizer(build_vocab(s.tokens for s in stories))
    cfg = tiny_config(n_layers=1, d_model=len(tok), n_ctx=200, d_head=len(tok), n_heads=1,
                      d_mlp=4, d_vocab=len(tok), act_fn="relu", normalization_type=None,
                      attn_only=True)
    model = seeded_model(cfg, tok)
    with torch.no_grad():  # embed = identity, so hook_embed holds one-hot tokens
        model.embed.W_E.copy_(torch.eye(len(tok)))
    texts = [s.text for s in stories]
    concepts = list(planted_concepts().values())
    feats, labels = acts_and_labels(model, lambda x: x, texts, "hook_embed", concepts,
                                    context_size=200)
    assert feats.shape == (sum(len(s.tokens) for s in stories), len(tok))
    fire_id = tok.convert_tokens_to_ids("fire")
    m = match_concepts(feats, {"danger": labels["danger"]})["danger"]
    if labels["danger"].sum() == (feats[:, fire_id] > 0).sum():  # only "fire" drawn
        assert m.feature == fire_id
    assert m.precision == 1.0 and m.auroc > 0.5
    assert labels["time_to"].sum() == sum(sum(s.labels["time_to"]) for s in stories)


def test_acts_and_labels_reads_long_texts_whole_with_labels_from_the_whole_text():
    """Texts longer than the context: every token is read (in windows), and a label that
    needs context from before a window's start (inside a quote) is still right."""
    from sae_steer.toystories import generate_stories, planted_concepts
    from sae_steer.toystories.tokenizer import build_tokenizer, build_vocab

    stories = generate_stories(30, seed=3)
    tok = build_tokenizer(build_vocab(s.tokens for s in stories))
    cfg = tiny_config(n_layers=1, d_model=8, n_ctx=64, d_head=8, n_heads=1, d_mlp=4,
                      d_vocab=len(tok), act_fn="relu", normalization_type=None, attn_only=True)
    model = seeded_model(cfg, tok)
    long_texts = [" ".join(s.text for s in stories[i:i + 5]) for i in range(0, 30, 5)]
    concepts = list(planted_concepts().values())
    context = 16  # far shorter than every text: many windows each
    feats, labels = acts_and_labels(model, lambda x: x, long_texts, "hook_embed", concepts,
                                    context_size=context, batch_size=4)
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in long_texts)
    assert feats.shape[0] == n_tokens == len(labels["quote"])
    quote = planted_concepts()["quote"]
    expected, per_window = [], []
    for text in long_texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected += list(quote.mask(model, [tok.bos_token_id] + ids))[1:]
        for i in range(0, len(ids), context - 1):
            per_window += list(quote.mask(model, [tok.bos_token_id] + ids[i:i + context - 1]))[1:]
    assert labels["quote"].tolist() == expected and any(expected)
    assert per_window != expected  # the case this guards: labelling each window alone
