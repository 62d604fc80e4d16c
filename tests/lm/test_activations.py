"""Activation harvesting: stop_at_layer, BOS/padding skipped, shuffle buffer, CE splicing."""
from __future__ import annotations

import pytest
import torch

from builders import HOOK, make_sae
from sae_steer.lm import activations as collect

BOS, PAD = 1, 2


def _unique_sequences(n_seq: int, length: int, lengths: list[int] | None = None):
    """Sequence i is BOS then token 3+i repeated, right-padded: each token names its story."""
    tokens = torch.full((n_seq, length), PAD)
    mask = torch.zeros(n_seq, length, dtype=torch.bool)
    for i in range(n_seq):
        n = lengths[i] if lengths else length
        tokens[i, 0], tokens[i, 1:n] = BOS, 3 + i
        mask[i, :n] = True
    return tokens, mask


def _token_of(rows: torch.Tensor, W_E: torch.Tensor) -> torch.Tensor:
    """Which embedding row each activation at hook_embed is (exact match)."""
    return torch.cdist(rows, W_E).argmin(-1)


def test_hook_activations_stop_before_later_blocks(tiny_model):
    tokens = torch.randint(0, 50, (3, 10))
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    calls = []
    handles = [tiny_model.blocks[1].register_forward_hook(lambda *a: calls.append("block1")),
               tiny_model.unembed.register_forward_hook(lambda *a: calls.append("unembed"))]
    try:
        acts = collect.hook_activations(tiny_model, tokens, "blocks.0.hook_resid_post")
    finally:
        for h in handles:
            h.remove()
    assert calls == []  # nothing past block 0 ran
    torch.testing.assert_close(acts, cache["blocks.0.hook_resid_post"])
    assert collect.attached_hook_count(tiny_model) == 0


def test_token_activations_skip_bos_and_padding(tiny_model):
    tokens, mask = _unique_sequences(4, 12, lengths=[12, 5, 8, 2])
    [rows] = collect.token_activations(tiny_model, [(tokens, mask)], "hook_embed")
    assert rows.shape == (int(mask.sum()) - 4, 16)  # every real token but the 4 BOS
    seen = _token_of(rows, tiny_model.W_E)
    assert BOS not in seen and PAD not in seen
    [with_bos] = collect.token_activations(tiny_model, [(tokens, mask)], "hook_embed",
                                           skip_bos=False)
    assert (_token_of(with_bos, tiny_model.W_E) == BOS).sum() == 4


def test_shuffle_buffer_mixes_sequences_and_keeps_every_row_once():
    # 40 "stories" of 16 rows each; row value = story id, second column = row id
    chunks = [torch.stack([torch.full((16,), float(s)), torch.arange(16.) + 16 * s], 1)
              for s in range(40)]
    batches = list(collect.shuffle_buffer(chunks, batch_size=32, buffer_size=256, seed=0))
    assert all(b.shape == (32, 2) for b in batches)
    assert len(batches) == 640 // 32
    ids = torch.cat(batches)[:, 1]
    assert sorted(ids.tolist()) == list(range(640))  # a permutation: nothing lost or repeated
    stories_per_batch = [len(set(b[:, 0].tolist())) for b in batches]
    assert min(stories_per_batch) >= 8  # no batch is one story
    again = list(collect.shuffle_buffer(chunks, batch_size=32, buffer_size=256, seed=0))
    other = list(collect.shuffle_buffer(chunks, batch_size=32, buffer_size=256, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_shuffle_buffer_rejects_small_buffer():
    with pytest.raises(ValueError, match="buffer_size >= 2 \\* batch_size"):
        list(collect.shuffle_buffer([torch.zeros(4, 2)], batch_size=4, buffer_size=6))


def test_stream_from_model_mixes_stories(tiny_model):
    # end to end at hook_embed, where each activation tells which story it came from
    model_batches = [_unique_sequences(8, 16) for _ in range(5)]
    for k, (tokens, _) in enumerate(model_batches):
        tokens[:, 1:] += 8 * k  # stories 0..39 over 5 model batches
    chunks = collect.token_activations(tiny_model, model_batches, "hook_embed")
    batches = list(collect.shuffle_buffer(chunks, batch_size=64, buffer_size=256, seed=0))
    assert len(batches) == 40 * 15 // 64
    for batch in batches:
        stories = set(_token_of(batch, tiny_model.W_E).tolist())
        assert len(stories) >= 10 and BOS not in stories


def test_check_sae_fits_width_hook_and_unknown_hook(tiny_model):
    layer1 = "blocks.1.hook_resid_post"
    assert collect.check_sae_fits(tiny_model, make_sae(hook_name=layer1).cfg) == layer1
    assert collect.check_sae_fits(tiny_model, make_sae(hook_name=None).cfg, layer1) == layer1
    with pytest.raises(ValueError, match="d_in=32 does not match the model's activation width 16 "
                                         "at 'blocks.1.hook_resid_post'.*SAEConfig\\(d_in=16"):
        collect.check_sae_fits(tiny_model, make_sae(d_in=32, hook_name=layer1).cfg)
    with pytest.raises(ValueError, match="did you mean.*blocks.1.hook_resid_post"):
        collect.check_sae_fits(tiny_model, make_sae(hook_name=None).cfg, "blocks.1.hook_resid_pots")
    with pytest.raises(ValueError, match=f"hook_name='{layer1}' but this SAE was trained at '{HOOK}'"):
        collect.check_sae_fits(tiny_model, make_sae().cfg, layer1)


def test_ce_loss_identity_splice_is_clean_and_padding_ignored(tiny_model):
    tokens = torch.randint(3, 50, (2, 10))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    hook = "blocks.0.hook_resid_post"
    clean = collect.ce_loss(tiny_model, tokens, mask)
    same = collect.ce_loss(tiny_model, tokens, mask, hook, lambda a: a.clone())
    worse = collect.ce_loss(tiny_model, tokens, mask, hook, torch.zeros_like, skip_bos=False)
    assert same == pytest.approx(clean, abs=1e-6)
    assert worse != pytest.approx(clean, abs=1e-3)
    assert collect.attached_hook_count(tiny_model) == 0
    # padding after a short sequence changes nothing (causal attention, masked targets)
    padded = torch.cat([tokens[:1], torch.full((1, 6), PAD)], 1)
    pad_mask = torch.cat([mask[:1], torch.zeros(1, 6, dtype=torch.bool)], 1)
    assert collect.ce_loss(tiny_model, padded, pad_mask) == pytest.approx(
        collect.ce_loss(tiny_model, tokens[:1], mask[:1]), abs=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16])
def test_hook_activations_under_autocast_are_close_and_float32(tiny_model, dtype):
    tokens = torch.randint(0, tiny_model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(0))
    exact = collect.hook_activations(tiny_model, tokens, HOOK)
    fast = collect.hook_activations(tiny_model, tokens, HOOK, autocast=dtype)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    torch.testing.assert_close(fast, exact, atol=0.1, rtol=0.05)  # bf16 has 8 mantissa bits
    assert collect.attached_hook_count(tiny_model) == 0
