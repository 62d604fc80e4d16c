"""Every stage after training works on every architecture: the search, a feature card, the
output scores, steering in each mode, clamping, re-scoring, and no hook left behind. The
thresholded ones run with thresholds that matter (some positive pre-activations fall
under them)."""
from __future__ import annotations

import pytest
import torch

from builders import make_sae
from sae_steer.config import SearchConfig
from sae_steer.inspect import feature_card
from sae_steer.inspect.search import search_token_batches
from sae_steer.lm import attached_hook_count, hook_activations
from sae_steer.measure import feature_scores, rescore
from sae_steer.steer import clamping, generate_steered

ARCHITECTURES = ["relu", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_search_card_scores_steering_and_rescoring(tiny_model, arch):
    sae = make_sae(d_sae=24, arch=arch, k=4, seed=1)
    g = torch.Generator().manual_seed(2)
    toks = torch.randint(4, 50, (30, 16), generator=g)
    toks[:, 0] = 1
    if hasattr(sae, "threshold"):
        with torch.no_grad():  # the median positive pre-activation: the jump matters
            pre = sae.pre_activations(hook_activations(tiny_model, toks, sae.cfg.hook_name))
            sae.threshold.fill_(float(pre[pre > 0].median()))
        assert ((pre > 0) & (pre <= sae.threshold)).any()
    mask = torch.ones_like(toks, dtype=torch.bool)
    cfg = SearchConfig(k=4, context_left=3, context_right=2, n_bands=4, samples_per_band=2)
    search = search_token_batches(tiny_model, sae, [(toks[i:i + 10], mask[i:i + 10])
                                                    for i in range(0, 30, 10)], cfg, progress=False)
    alive = (search.density > 0).nonzero().flatten().tolist()
    assert alive
    f = alive[0]
    card = feature_card(search, tiny_model, sae, f)
    assert card.feature == f and card.max_act > 0
    scores = feature_scores(tiny_model, sae, toks[:4, :6], search=search, progress=False)
    assert scores.output_score.shape == (sae.cfg.d_sae,)
    for mode in ("decoder_row", "clamp", "decoder_onehot"):
        gen = generate_steered(tiny_model, sae, f, 2.0, prompt=toks[0, :4], max_new_tokens=4,
                               n_samples=2, mode=mode)
        assert len(gen.tokens) == 2
    [first, *_] = rescore(tiny_model, sae, gen.tokens, feature=f)
    assert len(first.acts) == len(gen.tokens[0])
    clean = tiny_model(toks[:2])
    with clamping(tiny_model, sae, f, 0.0):
        clamped = tiny_model(toks[:2])
    assert clean.shape == clamped.shape
    assert attached_hook_count(tiny_model) == 0
