"""Re-scoring: run text through the *unsteered* model and the SAE, read the feature.

``measure`` is the one forward pass every steering measure comes from: per sample, the
SAE activations of the asked-for features and each token's NLL under the unsteered model.
``rescore`` gives one feature's per-token activations (``Rescored``, data only; the block
and HTML renderings are ``sae_steer.ui.views``'s). Texts are scored by their token ids:
a ``Generation`` keeps the exact ids it sampled, so nothing is re-tokenized.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae_steer.lm import (attached_hook_count, check_sae_fits, display_tokens, score_rows,
                          text_rows)
from sae_steer.sae import feature_index
from sae_steer.steer import Generation

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclasses.dataclass
class Measured:
    """Per sample: feature activations [len, n_features] and NLL of each token given its past."""

    acts: list[Tensor]
    nll: list[Tensor]


def require_clean(model: HookedTransformer) -> None:
    """RuntimeError when hooks are attached: steered activations would mislead."""
    n = attached_hook_count(model)
    if n:
        raise RuntimeError(
            f"the model has {n} hook(s) attached: re-scoring must use the unsteered model "
            "(leave the steering context, or call model.reset_hooks())"
        )


def measure(
    model: HookedTransformer, sae: Any, rows: Sequence[Tensor], features: Sequence[int],
    hook_name: str | None = None, batch_size: int | None = None,
) -> Measured:
    """One unsteered forward per batch gives both the SAE activations and the token NLLs.

    The model runs in ``lm.score_rows`` (batches sized to the device unless ``batch_size``
    is given); this adds the SAE: the activations of ``features`` on every row.
    """
    require_clean(model)
    hook_name = check_sae_fits(model, sae.cfg, hook_name)
    feats = torch.as_tensor(list(features), dtype=torch.long, device=sae.W_dec.device)

    def read(act: Tensor, _rows: range) -> Tensor:
        return sae.encode(act.to(sae.W_dec.device))[..., feats]

    scored = score_rows(model, rows, hook_name, read, batch_size=batch_size)
    return Measured(scored.reads, scored.nll)


def token_rows(model: HookedTransformer, texts: Any) -> list[Tensor]:
    """Token id rows for ``texts``: a ``Generation``'s own ids, else ``lm.text_rows``'s
    (strings with BOS, windowed at the context; token tensors / lists as they are)."""
    if isinstance(texts, Generation):
        return list(texts.tokens)
    return text_rows(model, texts)


@dataclasses.dataclass
class Rescored:
    """One text re-scored: its tokens (as a reader sees them) and one feature's activations."""

    feature: int
    token_ids: list[int]
    str_tokens: list[str]
    acts: list[float]
    scale_max: float
    """The activation shown as a full block: the given ``max_act``, else the max over the
    texts scored together (1.0 when nothing fired)."""

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)


def rescore(
    model: HookedTransformer, sae: Any, texts: Any, feature: int, *,
    max_act: float | None = None, hook_name: str | None = None,
) -> list[Rescored]:
    """Feature ``feature``'s per-token activations on ``texts`` under the *unsteered* model.

    ``texts``: a ``Generation`` (its exact tokens are used), strings (tokenized with BOS;
    one ``Rescored`` per window of a text longer than the context) or token tensors.
    ``max_act`` sets ``scale_max`` (default: the max over these texts).
    Raises RuntimeError when hooks are attached: steered activations would mislead.
    Render with ``sae_steer.ui.views.rescored_blocks`` / ``rescored_html``.
    """
    feature = feature_index(feature, sae.cfg.d_sae)
    rows = token_rows(model, texts)
    m = measure(model, sae, rows, [feature], hook_name)
    acts = [a[:, 0].tolist() for a in m.acts]
    top = max_act if max_act is not None else max((max(a, default=0.0) for a in acts), default=0.0)
    top = top if top > 0 else 1.0  # nothing fired: keep every block at the lowest level
    # Display strings carry the spaces the decoder inserts (" upon"), so the blocks read
    # like the seed's "Once ▁ upon ▁" whatever the tokenizer.
    return [Rescored(feature, r.tolist(), display_tokens(model, r.tolist()), a, float(top))
            for r, a in zip(rows, acts)]
