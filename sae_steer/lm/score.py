"""Score token rows: one forward pass per batch gives what every re-scoring needs.

``score_rows(model, rows, hook_name, read)`` runs rows of token ids (of any lengths)
through the model in right-padded batches and returns, per row, the NLL of each token
given its past and whatever ``read`` extracts from the activations at the hook (an SAE's
feature activations, usually: the SAE is the caller's, so this module needs none). The
activations themselves are never kept: ``read`` reduces each batch on the model's device,
so scoring thousands of rows costs the memory of one batch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from sae_steer.lm.activations import validate_hook
from sae_steer.lm.tokens import pad_rows

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

Read = Callable[[Float[Tensor, "batch pos d_model"], range], Float[Tensor, "batch pos k"]]
"""``read(acts, rows)``: what to keep of a batch's activations; ``rows`` are the indices
(into the scored rows) of the batch's rows, in order."""

LOGIT_BUDGET = {"cpu": 2**27, "cuda": 2**30}
"""Logit entries (batch x positions x vocabulary) held at once, per device type: about
0.5 GB of float32 on a CPU, 4 GB on a GPU. It sets how many rows a batch takes."""


@dataclasses.dataclass
class ScoredRows:
    """Per row: ``reads[j]`` ``[len_j, k]`` (what ``read`` kept, on the CPU) and ``nll[j]``
    ``[len_j - 1]``, where ``nll[j][t - 1]`` is token t's NLL given tokens ``0..t-1``."""

    reads: list[Tensor]
    nll: list[Tensor]


def rows_per_batch(model: HookedTransformer, max_len: int) -> int:
    """How many rows of ``max_len`` tokens one batch takes on the model's device."""
    budget = LOGIT_BUDGET.get(torch.device(model.cfg.device).type, LOGIT_BUDGET["cpu"])
    vocab = getattr(model.cfg, "d_vocab_out", -1)  # logits are [..., vocab]
    vocab = vocab if vocab > 0 else model.cfg.d_vocab
    return max(1, budget // (max_len * vocab))


@torch.no_grad()
def score_rows(
    model: HookedTransformer, rows: Sequence[Tensor], hook_name: str, read: Read, *,
    batch_size: int | None = None,
) -> ScoredRows:
    """Each row's token NLLs and ``read`` of its activations at ``hook_name``, batched.

    ``batch_size``: rows per forward pass (None: as many as ``LOGIT_BUDGET`` allows for
    the longest row). Rows keep their order; each comes back cut to its own length.
    """
    validate_hook(model, hook_name)
    out = ScoredRows([], [])
    if not rows:
        return out
    if any(len(r) == 0 for r in rows):
        raise ValueError("a row to score is empty: every row needs at least one token")
    size = batch_size or rows_per_batch(model, max(len(r) for r in rows))
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        tokens = pad_rows(chunk)[0].to(model.cfg.device)  # right padding: see pad_rows
        seen: dict[str, Tensor] = {}
        # run_with_hooks removes its hook on exit, error or not
        logits = model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, lambda act, hook: seen.__setitem__("act", act))])
        kept = read(seen.pop("act"), range(start, start + len(chunk))).float().cpu()
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        del logits
        nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0].cpu()
        for j, row in enumerate(chunk):
            out.reads.append(kept[j, : len(row)])
            out.nll.append(nll[j, : len(row) - 1])
    return out
