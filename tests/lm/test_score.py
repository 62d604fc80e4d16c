"""Scoring token rows: one batched forward pass per chunk, the same figures as one row at a time."""
from __future__ import annotations

import pytest
import torch

from builders import HOOK
from sae_steer.lm import attached_hook_count, hook_activations, rows_per_batch, score_rows

ROWS = [torch.tensor([0, 5, 9, 3, 7]), torch.tensor([0, 2]), torch.tensor([0, 8, 8, 1]),
        torch.tensor([4])]


def _norms(act, rows):
    return act.norm(dim=-1, keepdim=True)


def test_each_row_alone_and_batched_agree_and_match_by_hand(tiny_model):
    together = score_rows(tiny_model, ROWS, HOOK, _norms)
    split = score_rows(tiny_model, ROWS, HOOK, _norms, batch_size=1)
    for j, row in enumerate(ROWS):
        assert together.reads[j].shape == (len(row), 1) and together.nll[j].shape == (len(row) - 1,)
        torch.testing.assert_close(together.reads[j], split.reads[j], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(together.nll[j], split.nll[j], rtol=1e-5, atol=1e-5)
        acts = hook_activations(tiny_model, row[None], HOOK)[0]
        torch.testing.assert_close(together.reads[j][:, 0], acts.norm(dim=-1), rtol=1e-5, atol=1e-5)
        logp = torch.log_softmax(tiny_model(row[None])[0].float(), dim=-1)
        by_hand = -logp[:-1].gather(-1, row[1:, None])[:, 0]
        torch.testing.assert_close(together.nll[j], by_hand, rtol=1e-5, atol=1e-5)
    assert attached_hook_count(tiny_model) == 0


def test_read_sees_the_indices_of_its_rows(tiny_model):
    seen = []
    score_rows(tiny_model, ROWS, HOOK, lambda act, rows: seen.append(rows) or act[..., :1],
               batch_size=3)
    assert seen == [range(0, 3), range(3, 4)]


def test_batch_size_follows_the_logit_budget(tiny_model):
    assert rows_per_batch(tiny_model, 10) == 2**27 // (10 * tiny_model.cfg.d_vocab)
    assert rows_per_batch(tiny_model, 10**9) == 1


def test_empty_input_and_empty_rows(tiny_model):
    assert score_rows(tiny_model, [], HOOK, _norms).reads == []
    with pytest.raises(ValueError, match="row to score is empty"):
        score_rows(tiny_model, [torch.tensor([], dtype=torch.long)], HOOK, _norms)
    with pytest.raises(ValueError, match="unknown hook"):
        score_rows(tiny_model, ROWS, "blocks.0.hook_resid_pots", _norms)
