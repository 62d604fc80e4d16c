"""Same seed, same bits on CPU: SAE training (through the whole pipeline) and generation.

Each check runs the same thing twice with the global RNG deliberately disturbed in
between, so a result that leans on ambient randomness would differ.
"""
from __future__ import annotations

import torch

from builders import HOOK, make_sae
from sae_steer.config import SAEConfig, SearchConfig, TrainConfig
from sae_steer.inspect.search import search_features
from sae_steer.steer import generate_steered, generate_unsteered
from sae_steer.train import fit_sae

TEXTS = [" ".join(["Once upon a time there was a little girl named Lily ."] +
                  ["she liked to play in the park with her friend Tom ."] * (i % 3 + 1))
         for i in range(48)]


def _fit(model, seed: int = 0):
    sae_cfg = SAEConfig(d_in=16, d_sae=48, device="cpu", dataset_path="reliability")
    train_cfg = TrainConfig(n_steps=12, batch_size=64, lr=3e-3, lr_warmup_steps=2,
                            lr_decay_steps=3, l1_coefficient=1.0, l1_warmup_steps=4,
                            dead_after_steps=3, resample_every=4, context_size=32,
                            model_batch_size=8, buffer_batches=2, log_every=4,
                            eval_sequences=4, seed=seed)
    return fit_sae(model, TEXTS, HOOK, sae_cfg, train_cfg, progress=False)


def _disturb_global_rng(seed: int) -> None:
    torch.manual_seed(seed)
    torch.rand(100)


def test_same_seed_gives_bit_identical_sae_weights(tok_model):
    _disturb_global_rng(1)
    a = _fit(tok_model)
    _disturb_global_rng(2)
    b = _fit(tok_model)
    assert a.steps == b.steps == 12
    for name, value in a.sae.state_dict().items():
        assert torch.equal(value, b.sae.state_dict()[name]), name
    assert torch.equal(a.sae.log_feature_sparsity, b.sae.log_feature_sparsity)
    assert a.history == b.history  # metrics, CE increase included
    # and the seed matters: another seed gives other weights
    c = _fit(tok_model, seed=1)
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)


def test_same_seed_gives_bit_identical_generations(tiny_model, sae):
    prompt = torch.tensor([1, 2, 3])
    runs = []
    for disturb in (3, 4):
        _disturb_global_rng(disturb)
        steered = generate_steered(tiny_model, sae, 2, 6.0, prompt=prompt, max_new_tokens=12,
                                   n_samples=3, seed=7)
        plain = generate_unsteered(tiny_model, prompt=prompt, max_new_tokens=12, n_samples=3, seed=7)
        runs.append(([t.tolist() for t in steered.tokens], [t.tolist() for t in plain.tokens],
                     steered.texts, plain.texts))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # steering changed the text, same seeds notwithstanding
    other = generate_unsteered(tiny_model, prompt=prompt, max_new_tokens=12, n_samples=3, seed=8)
    assert [t.tolist() for t in other.tokens] != runs[0][1]


def test_same_seed_gives_identical_text_generations_with_a_tokenizer(tok_model):
    sae = make_sae()
    kw = dict(prompt="Once upon a time", max_new_tokens=10, n_samples=2, seed=11)
    first = generate_steered(tok_model, sae, 1, 4.0, mode="clamp", **kw)
    _disturb_global_rng(5)
    second = generate_steered(tok_model, sae, 1, 4.0, mode="clamp", **kw)
    assert first.texts == second.texts
    assert [t.tolist() for t in first.tokens] == [t.tolist() for t in second.tokens]


def test_same_seed_gives_identical_feature_search(tok_model):
    sae = make_sae()
    cfg = SearchConfig(k=3, context_size=32, seed=4)
    _disturb_global_rng(6)
    a = search_features(tok_model, sae, TEXTS, cfg, progress=False)
    _disturb_global_rng(7)
    b = search_features(tok_model, sae, TEXTS, cfg, progress=False)
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.meta == b.meta
