"""Forward passes the measuring stages ask for, so that they never run the model themselves.

- ``row_activations``: activations at a hook for token rows of any lengths, batch by batch.
- ``FromHook``: logits on fixed tokens with vectors added at a hook, running only the
  blocks after the hook when the hook allows (``blocks.L.hook_resid_post``).

(``hook_activations`` reads one batch, ``score_rows`` gives NLLs with what a caller
reads at the hook; the sampler's steered runs are ``steer``'s own.)
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sae_steer.lm.activations import hook_activations, stop_layer, validate_hook
from sae_steer.lm.tokens import pad_rows

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

_RESID_POST = re.compile(r"^blocks\.\d+\.hook_resid_post$")


def resume_layer(hook_name: str) -> int | None:
    """The block a forward pass may start at with the activation at ``hook_name`` as its
    input: L + 1 for ``blocks.L.hook_resid_post`` (the next block's input), else None."""
    return stop_layer(hook_name) if _RESID_POST.match(hook_name) else None


def row_activations(
    model: HookedTransformer, rows: Sequence[Tensor], hook_name: str, batch_size: int = 64,
) -> Iterator[tuple[int, Float[Tensor, "batch pos d_model"]]]:
    """``(start, acts)`` per batch of ``rows`` (1-D token ids), right-padded: row
    ``start + j``'s activations are ``acts[j, :len(row)]`` (the rest is padding's)."""
    validate_hook(model, hook_name)
    for start in range(0, len(rows), batch_size):
        tokens, _ = pad_rows(rows[start : start + batch_size])
        yield start, hook_activations(model, tokens, hook_name)


class FromHook:
    """The model on fixed ``tokens [n, pos]`` from ``hook_name`` onward, with vectors added
    there at every position.

    For ``blocks.L.hook_resid_post`` the clean activation is computed once (``acts``) and
    each call runs only blocks L+1 onward (``start_at_layer``); any other hook reruns the
    whole model with a hook that adds the vector (removed on exit, error or not).
    """

    def __init__(self, model: HookedTransformer, tokens: Int[Tensor, "n pos"], hook_name: str):
        validate_hook(model, hook_name)
        self.model, self.hook_name = model, hook_name
        self.tokens = tokens.to(model.cfg.device)
        self.start = resume_layer(hook_name)
        self.acts: Tensor | None = (None if self.start is None
                                    else hook_activations(model, self.tokens, hook_name))

    @torch.no_grad()
    def logits(self, deltas: Float[Tensor, "m d_model"] | None = None, *, last: bool = False
               ) -> Float[Tensor, "rows pos vocab"]:
        """Logits with ``deltas[i]`` added for text j in row ``i * n + j`` (None: the clean
        ``n`` rows). ``last``: only the last position's, ``[rows, vocab]``, and the final
        norm and unembedding run on that position alone."""
        model, n = self.model, len(self.tokens)
        if self.acts is not None:
            x = self.acts
            if deltas is not None:
                step = deltas.to(x.device).repeat_interleave(n, dim=0)
                x = x.repeat(len(deltas), 1, 1) + step[:, None, :].to(x.dtype)
            if not last:
                return model(x, start_at_layer=self.start)
            out = model(x, start_at_layer=self.start, stop_at_layer=model.cfg.n_layers)
            return model.unembed(model.ln_final(out[:, -1:]))[:, 0]
        logits = self._rerun(deltas)
        return logits[:, -1] if last else logits

    def _rerun(self, deltas: Tensor | None) -> Tensor:
        if deltas is None:
            return self.model(self.tokens)
        step = deltas.to(self.model.cfg.device).repeat_interleave(len(self.tokens), dim=0)

        def add(act: Tensor, hook: Any) -> Tensor:
            return act + step[:, None, :].to(act.dtype)

        # run_with_hooks removes the hook on exit, error or not
        return self.model.run_with_hooks(self.tokens.repeat(len(deltas), 1),
                                         fwd_hooks=[(self.hook_name, add)])
