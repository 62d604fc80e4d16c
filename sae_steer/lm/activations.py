"""Activations at one hook, the activation stream for training, and the spliced-in CE loss.

Everything downstream (training, search, re-scoring) gets plain tensors from here.
We never compute past the hook: ``stop_at_layer`` ends the forward pass at the block
after the hook, so neither later layers nor the unembedding are run.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.lm.models import canonical_model_name, model_name

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""The ``autocast=`` names ``hook_activations`` takes (``TrainConfig.harvest_dtype``)."""


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
    *,
    autocast: str | torch.dtype | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Activations at ``hook_name`` for ``tokens``, computing no layer past the hook.

    ``autocast="bfloat16"`` (or ``"float16"``) runs the model's forward under
    ``torch.autocast`` on the model's device type (a GPU's fast path; on CPU only bfloat16
    helps, and little); the activations come back as float32. None: the model's own dtype.
    """
    validate_hook(model, hook_name)
    captured: dict[str, Tensor] = {}

    def save(act: Tensor, hook) -> None:
        captured["act"] = act.detach()

    device = torch.device(model.cfg.device)
    dtype = AUTOCAST_DTYPES[autocast] if isinstance(autocast, str) else autocast
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        # run_with_hooks removes its hooks on exit, error or not (reset_hooks_end=True).
        model.run_with_hooks(
            tokens.to(device),
            fwd_hooks=[(hook_name, save)],
            stop_at_layer=stop_layer(hook_name),
            return_type=None if stop_layer(hook_name) is None else "logits",
        )
    return captured["act"] if dtype is None else captured["act"].float()


# --- Activation stream for training -------------------------------------------------


def check_sae_fits(model: HookedTransformer, sae_cfg: Any, hook_name: str | None = None) -> str:
    """The hook an SAE reads; ValueError when the SAE cannot read ``model`` there.

    ``sae_cfg`` is an SAE's config (ours or SAELens's: ``d_in``, and optionally
    ``hook_name`` and ``model_name``). Width alone cannot tell a foreign SAE: another model,
    or another layer of this one, often has the same width, so the SAE's recorded hook and
    model name are checked too ("custom" or None means unknown and passes).
    """
    sae_hook = getattr(sae_cfg, "hook_name", None)
    if hook_name and sae_hook and hook_name != sae_hook:
        raise ValueError(f"hook_name={hook_name!r} but this SAE was trained at {sae_hook!r}; "
                         f"pass hook_name={sae_hook!r} or omit hook_name")
    hook_name = hook_name or sae_hook
    if hook_name is None:
        raise ValueError("the SAE's cfg.hook_name is not set; pass hook_name= explicitly")
    width = hook_width(model, hook_name)
    if sae_cfg.d_in != width:
        raise ValueError(
            f"SAE width d_in={sae_cfg.d_in} does not match the model's activation width "
            f"{width} at {hook_name!r}: build the SAE with SAEConfig(d_in={width}, ...), or "
            "this SAE was trained on another model or hook")
    ours, theirs = model_name(model), canonical_model_name(getattr(sae_cfg, "model_name", None))
    if "custom" not in (ours, theirs) and ours != theirs:
        raise ValueError(f"this SAE was trained on model {theirs!r} but is used with model "
                         f"{ours!r}: load the SAE trained for {ours!r} (or the model {theirs!r})")
    return hook_name


def token_activations(
    model: HookedTransformer,
    batches: Iterable[tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]],
    hook_name: str,
    *,
    skip_bos: bool = True,
    autocast: str | torch.dtype | None = None,
) -> Iterator[Float[Tensor, "n_tok d_model"]]:
    """Per model batch, the activations of its real tokens (padding dropped; BOS too by default).

    ``batches`` yields right-padded ``(tokens, mask)`` pairs as ``data.token_batches`` does;
    the mask marks real tokens, BOS included, and BOS sits at position 0.
    """
    for tokens, mask in batches:
        acts = hook_activations(model, tokens, hook_name, autocast=autocast)
        keep = mask.to(acts.device).clone()
        if skip_bos:
            keep[:, 0] = False  # BOS: a huge-norm outlier that would dominate the MSE
        yield acts[keep]


def shuffle_buffer(
    chunks: Iterable[Float[Tensor, "n d"]],
    batch_size: int,
    buffer_size: int,
    *,
    seed: int = 0,
) -> Iterator[Float[Tensor, "batch_size d"]]:
    """Mix rows of consecutive ``chunks`` and yield full ``[batch_size, d]`` batches.

    The buffer fills to ``buffer_size`` rows, is shuffled, and its first half goes out as
    batches while the second half stays to mix with the next fill (as SAELens's mixing
    buffer does). The permutation comes from a CPU generator seeded with ``seed``, so the
    stream is the same on every run and device. A final partial batch is dropped.
    """
    if batch_size <= 0 or buffer_size < 2 * batch_size:
        raise ValueError(
            f"need batch_size > 0 and buffer_size >= 2 * batch_size, "
            f"got batch_size={batch_size}, buffer_size={buffer_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    held: list[Tensor] = []
    n_held = 0
    for chunk in chunks:
        held.append(chunk)
        n_held += len(chunk)
        if n_held < buffer_size:
            continue
        mixed = _shuffled(torch.cat(held), generator)
        n_out = (len(mixed) - buffer_size // 2) // batch_size * batch_size
        yield from mixed[:n_out].split(batch_size)
        held, n_held = [mixed[n_out:]], len(mixed) - n_out
    if held:
        rest = _shuffled(torch.cat(held), generator)
        yield from (b for b in rest.split(batch_size) if len(b) == batch_size)


def _shuffled(rows: Tensor, generator: torch.Generator) -> Tensor:
    return rows[torch.randperm(len(rows), generator=generator).to(rows.device)]


@torch.no_grad()
def ce_loss(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    hook_name: str | None = None,
    reconstruct: Callable[[Tensor], Tensor] | None = None,
    *,
    skip_bos: bool = True,
) -> float:
    """Mean next-token cross-entropy over real tokens, optionally with ``reconstruct``
    (e.g. an SAE) spliced in at ``hook_name``.

    With ``skip_bos`` the BOS position keeps its clean activation: an SAE trained without
    BOS would otherwise be charged for an input it never saw.
    """
    fwd_hooks = []
    if reconstruct is not None:
        validate_hook(model, hook_name)

        def splice(act: Tensor, hook) -> Tensor:
            out = reconstruct(act)
            if skip_bos:
                out[:, 0] = act[:, 0]
            return out

        fwd_hooks = [(hook_name, splice)]
    tokens, mask = tokens.to(model.cfg.device), mask.to(model.cfg.device)
    # run_with_hooks removes the splice hook on exit, error or not.
    per_token = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True,
                                     fwd_hooks=fwd_hooks)  # [batch, pos - 1]
    target_real = mask[:, 1:].to(per_token.dtype)  # predicting a padding token: not counted
    return ((per_token * target_real).sum() / target_real.sum()).item()
