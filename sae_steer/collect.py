"""Activations at one hook: the only module (with models/data) that runs the model.

Everything downstream (training, search, re-scoring) gets plain tensors from here.
We never compute past the hook: ``stop_at_layer`` ends the forward pass at the block
after the hook, so neither later layers nor the unembedding are run.
"""
from __future__ import annotations

import difflib
import re

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


def validate_hook(model: HookedTransformer, hook_name: str) -> None:
    """Raise a ValueError naming close valid hooks when ``hook_name`` does not exist."""
    if hook_name in model.hook_dict:
        return
    close = difflib.get_close_matches(hook_name, list(model.hook_dict), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown hook {hook_name!r} for this model ({model.cfg.n_layers} layers){hint} "
        "Residual-stream hooks look like 'blocks.1.hook_resid_post'."
    )


def stop_layer(hook_name: str) -> int | None:
    """The ``stop_at_layer`` that still computes ``hook_name`` (None: run everything).

    ``stop_at_layer=L+1`` returns exactly ``blocks.L.*``'s output, so every hook inside
    block L is computed and nothing after it.
    """
    match = _BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) + 1 if match else None


def hook_width(model: HookedTransformer, hook_name: str) -> int:
    """Width of the activation at ``hook_name`` (d_model for residual-stream hooks)."""
    validate_hook(model, hook_name)
    probe: Int[Tensor, "1 1"] = torch.zeros(1, 1, dtype=torch.long, device=model.cfg.device)
    return hook_activations(model, probe, hook_name).shape[-1]


def attached_hook_count(model: HookedTransformer) -> int:
    """Forward and backward hooks attached anywhere in ``model`` (0 when nothing leaked)."""
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in model.hook_dict.values())


@torch.no_grad()
def hook_activations(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    hook_name: str,
) -> Float[Tensor, "batch pos d_model"]:
    """Activations at ``hook_name`` for ``tokens``, computing no layer past the hook."""
    validate_hook(model, hook_name)
    captured: dict[str, Tensor] = {}

    def save(act: Tensor, hook) -> None:
        captured["act"] = act.detach()

    # run_with_hooks removes its hooks on exit, error or not (reset_hooks_end=True).
    model.run_with_hooks(
        tokens.to(model.cfg.device),
        fwd_hooks=[(hook_name, save)],
        stop_at_layer=stop_layer(hook_name),
        return_type=None if stop_layer(hook_name) is None else "logits",
    )
    return captured["act"]
