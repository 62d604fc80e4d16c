"""The forward-pass service: token rows, one padder, activations per row, logits from a hook."""
from __future__ import annotations

import pytest
import torch

from builders import HOOK
from sae_steer.lm import (FromHook, attached_hook_count, hook_activations, pad_rows,
                          resume_layer, row_activations, text_rows, tokenize)

ROWS = [torch.tensor([0, 5, 9, 3, 7]), torch.tensor([0, 2]), torch.tensor([0, 8, 8, 1])]


def test_pad_rows_pads_right_and_marks_real_tokens():
    tokens, mask = pad_rows(ROWS, fill=-1)
    assert tokens.tolist()[1] == [0, 2, -1, -1, -1]
    assert mask.sum(1).tolist() == [5, 2, 4]
    assert pad_rows(ROWS, length=7)[0].shape == (3, 7)


def test_text_rows_read_texts_whole_in_windows(tok_model):
    n_ctx = tok_model.cfg.n_ctx
    short = "once upon a time"
    assert torch.equal(text_rows(tok_model, [short])[0], tok_model.to_tokens(short)[0].cpu())
    assert torch.equal(tokenize(tok_model, short), text_rows(tok_model, short)[0])
    long = " ".join(["the cat sat"] * n_ctx)  # three tokens a repeat: far past the context
    rows = text_rows(tok_model, [long, short])
    n_ids = len(tokenize(tok_model, long)) - 1
    assert len(rows) == -(-n_ids // (n_ctx - 1)) + 1
    assert all(len(r) <= n_ctx and r[0] == tok_model.tokenizer.bos_token_id for r in rows)
    assert sum(len(r) - 1 for r in rows[:-1]) == n_ids  # no token lost
    assert torch.equal(text_rows(tok_model, [[0, 3]])[0], torch.tensor([0, 3]))


def test_row_activations_equal_each_row_alone(tiny_model):
    seen = {}
    for start, acts in row_activations(tiny_model, ROWS, HOOK, batch_size=2):
        for j in range(len(acts)):
            seen[start + j] = acts[j, : len(ROWS[start + j])]
    assert sorted(seen) == [0, 1, 2]
    for j, row in enumerate(ROWS):
        torch.testing.assert_close(seen[j], hook_activations(tiny_model, row[None], HOOK)[0],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hook", [HOOK, "blocks.0.hook_resid_mid"])
def test_from_hook_adds_each_vector_to_its_rows(tiny_model, hook):
    tokens = torch.stack([ROWS[0], ROWS[0].flip(0)])  # n = 2 texts
    deltas = torch.randn(3, tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    run = FromHook(tiny_model, tokens, hook)
    assert (run.start is not None) == (hook == HOOK) and resume_layer(hook) == run.start
    torch.testing.assert_close(run.logits(), tiny_model(tokens), rtol=1e-5, atol=1e-5)
    pushed = run.logits(deltas)
    assert pushed.shape[0] == 6
    for i in range(3):
        for j in range(2):  # row i * n + j: text j with vector i added at every position
            def add(act, hook, d=deltas[i]):
                return act + d

            want = tiny_model.run_with_hooks(tokens[j : j + 1], fwd_hooks=[(hook, add)])[0]
            torch.testing.assert_close(pushed[i * 2 + j], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run.logits(deltas, last=True), pushed[:, -1], rtol=1e-4, atol=1e-4)
    assert attached_hook_count(tiny_model) == 0
