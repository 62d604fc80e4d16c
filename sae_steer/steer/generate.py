"""The sampler: steered and unsteered samples that share their random numbers.

Generation is our own short sampling loop over TransformerLens's KV cache (``_sample``):
it gives every sample its own random stream, so the same seed gives the same text steered
or not, and steered minus unsteered measures the steering, not sampling noise. The
settings travel as one ``SteerConfig``. ``typical_resid_norm`` lives here because it
measures the norm on the model's own samples; only a ``Steerer`` (``steerer.py``) calls it,
so every relative scale reads one norm; steering with SAE features (``generate_steered``)
lives beside it there. With ``positions="generated"`` the sampler
tells the steering hook where each pass starts (``Positions.offset``), so cached and
uncached runs steer the same positions.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from sae_steer.config import NORM_SEED, SteerConfig, sample_seeds, steer_config
from sae_steer.lm import hook_activations, pad_rows, to_text, tokenize
from sae_steer.steer.hooks import Positions, SteeringStats, steering


@dataclasses.dataclass
class Generation:
    """Samples from one prompt. ``tokens[j]`` is prompt (+BOS) + new tokens, cut before EOS."""

    texts: list[str]
    tokens: list[Tensor]
    prompt_len: int
    seeds: list[int]
    feature: int | None = None
    """The steered feature (with several: the first one listed)."""
    scale: float = 0.0
    """Absolute scale actually applied to ``feature`` (clamp mode: the clamp value)."""
    mode: str | None = None
    features: dict[int, float] = dataclasses.field(default_factory=dict)
    """Every steered feature and its absolute scale (clamp mode: clamp value)."""
    stats: SteeringStats | None = None
    config: SteerConfig | None = None
    """The settings the samples were drawn with."""

    def new_tokens(self, j: int) -> Tensor:
        return self.tokens[j][self.prompt_len :]

    def part(self, lo: int, hi: int) -> Generation:
        """Samples ``lo..hi-1`` as a Generation of their own (same prompt and settings)."""
        return Generation(self.texts[lo:hi], self.tokens[lo:hi], self.prompt_len,
                          self.seeds[lo:hi], config=self.config)


def prompt_tokens(model: HookedTransformer, prompt: Any) -> Tensor:
    """The prompt as 1-D CPU token ids (BOS first for text), or a ValueError saying why not."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt is empty; give some text such as 'Once upon a time'")
        if model.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass the prompt as token ids")
        # whole, never cut at n_ctx: _check_lengths reports a too-long prompt's real length
        return tokenize(model, prompt)
    try:
        tokens = torch.as_tensor(prompt).flatten().cpu()
    except (TypeError, ValueError, RuntimeError):  # None, dicts, objects...
        tokens = None
    # an empty list comes back as float32: let the emptiness check below name it
    not_ints = tokens is not None and tokens.numel() and (
        tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool)
    if tokens is None or not_ints:
        raise ValueError("prompt must be text or token ids (a str, or a list / 1-D tensor of "
                         f"ints), got {type(prompt).__name__} {str(prompt)[:60]}")
    tokens = tokens.long()
    if tokens.numel() == 0:
        raise ValueError("prompt is empty: give at least one token")
    if (tokens < 0).any() or (tokens >= model.cfg.d_vocab).any():
        raise ValueError(f"prompt token ids must lie in 0..{model.cfg.d_vocab - 1}")
    return tokens


def _check_lengths(model: HookedTransformer, prompt_len: int, max_new_tokens: int) -> None:
    n_ctx = model.cfg.n_ctx
    if prompt_len >= n_ctx:
        raise ValueError(f"prompt is {prompt_len} tokens; the model's context is {n_ctx}")
    if prompt_len + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {n_ctx}; use max_new_tokens <= {n_ctx - prompt_len}"
        )


@torch.no_grad()
def _sample(
    model: HookedTransformer, prompt: Tensor, seeds: list[int], cfg: SteerConfig,
    gate: Positions | None = None,
) -> Int[Tensor, "n new"]:
    """Sample ``len(seeds)`` continuations of ``prompt`` in one batch.

    Each row draws one uniform number per step from its own CPU generator and samples by
    inverse CDF, so a row's text depends only on its seed and its logits: batching, device and
    steering do not reshuffle the random numbers (steered vs unsteered share them). ``gate``
    (a steering hook's positions) learns each pass's first absolute position, and which rows
    the pass carries: rows that have written EOS leave the batch (their KV cache too) once
    they are an eighth of it, so a large batch costs about what its rows still write, not
    what its longest row does. Finished rows read EOS from there on.
    """
    device, use_kv_cache = model.cfg.device, cfg.use_kv_cache
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n = len(seeds)
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None and cfg.stop_at_eos else None
    tokens = prompt.to(device).unsqueeze(0).expand(n, -1).contiguous()
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, n) if use_kv_cache else None
    live = torch.arange(n)  # the original rows still in the batch, in order
    finished = torch.zeros(n, dtype=torch.bool, device=device)  # of the batch's rows
    new = torch.full((n, cfg.max_new_tokens), -1 if eos is None else eos, dtype=torch.long)
    step_input, steps = tokens, 0
    if gate is not None:
        gate.rows = None
    for steps in range(1, cfg.max_new_tokens + 1):
        if gate is not None:  # a cached pass starts where the cache ends
            gate.offset = tokens.shape[1] - step_input.shape[1]
        # An explicit all-ones mask: otherwise TransformerLens masks any sampled token that
        # equals the tokenizer's pad id, and cached and uncached runs would disagree.
        ones = torch.ones_like(step_input)
        logits = model(step_input, past_kv_cache=cache, attention_mask=ones)[:, -1].float()
        u = torch.cat([torch.rand(1, generator=gens[j]) for j in live.tolist()]).to(device)
        nxt = _pick(logits, u, cfg.temperature)
        if eos is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
            finished |= nxt == eos
        new[live, steps - 1] = nxt.cpu()
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if eos is not None and int(finished.sum()) >= max(1, len(live) // 8):
            # drop finished rows once they are an eighth of the batch: copying the cache
            # at every single EOS would cost more than the passes it saves
            keep = (~finished).nonzero().flatten()
            if not len(keep):
                break
            live, tokens, nxt = live[keep.cpu()], tokens[keep], nxt[keep]
            finished = finished[keep]
            if cache is not None:
                _keep_rows(cache, keep)
            if gate is not None:
                gate.rows = live
        step_input = nxt[:, None] if use_kv_cache else tokens
    return new[:, :steps]


def _keep_rows(cache: TransformerLensKeyValueCache, keep: Tensor) -> None:
    """Keep only rows ``keep`` of every layer's keys and values and of the cache's mask."""
    for entry in cache.entries:
        rows = keep.to(entry.past_keys.device)
        entry.past_keys, entry.past_values = entry.past_keys[rows], entry.past_values[rows]
    cache.previous_attention_mask = cache.previous_attention_mask[
        keep.to(cache.previous_attention_mask.device)]


def _pick(logits: Float[Tensor, "n vocab"], u: Float[Tensor, " n"], temperature: float) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


def _finish(model: HookedTransformer, prompt: Tensor, new: Tensor, seeds: list[int],
            cfg: SteerConfig) -> Generation:
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None and cfg.stop_at_eos else None
    rows = []
    for row in new:
        if eos is not None and (row == eos).any():  # generation pads finished rows with EOS
            row = row[: int((row == eos).nonzero()[0, 0])]
        rows.append(torch.cat([prompt, row]))
    return Generation([to_text(model, r) for r in rows], rows, len(prompt), list(seeds),
                      config=cfg)


@torch.no_grad()
def typical_resid_norm(
    model: HookedTransformer, hook_name: str, tokens: Int[Tensor, "batch pos"] | None = None,
    mask: Tensor | None = None,
) -> float:
    """Median L2 norm of the activation at ``hook_name`` over real tokens, BOS excluded.

    BOS positions carry an outsized norm in most models, so they are left out. Without
    ``tokens`` we measure on 8 of the model's own unsteered 64-token samples from
    "Once upon a time" (or from BOS when the model has no tokenizer).
    """
    if tokens is None:
        prompt: Any = "Once upon a time" if model.tokenizer is not None else [0]
        n_new = min(64, model.cfg.n_ctx - len(prompt_tokens(model, prompt)))
        gen = generate_unsteered(model, SteerConfig(prompt=prompt, max_new_tokens=n_new,
                                                    n_samples=8, seed=NORM_SEED))
        tokens, mask = pad_rows(gen.tokens)
    acts = hook_activations(model, tokens, hook_name)
    norms = acts.float().norm(dim=-1)[:, 1:]
    keep = torch.ones_like(norms, dtype=torch.bool) if mask is None else mask[:, 1:].to(norms.device)
    if not keep.any():
        raise ValueError("no tokens beyond BOS to measure the residual norm on")
    return float(norms[keep].median())


def _draw(model: HookedTransformer, cfg: SteerConfig) -> tuple[Tensor, list[int]]:
    prompt = prompt_tokens(model, cfg.prompt)
    _check_lengths(model, len(prompt), cfg.max_new_tokens)
    return prompt, sample_seeds(cfg.seed, cfg.n_samples)


def _positions_gate(cfg: SteerConfig, prompt_len: int) -> Positions:
    """The steering hook's gate for ``cfg.positions``; the sampler keeps its offset current."""
    return Positions(prompt_len if cfg.positions == "generated" else 0)


def generate_unsteered(model: HookedTransformer, cfg: SteerConfig | None = None,
                       **settings: Any) -> Generation:
    """Samples without steering, with the same per-sample seeds as ``generate_steered``.

    ``cfg`` holds the settings (default ``SteerConfig()``); keyword ``settings`` are
    shortcuts for its fields, e.g. ``generate_unsteered(model, n_samples=8, seed=3)``.
    """
    cfg = steer_config(cfg, **settings)
    prompt, seeds = _draw(model, cfg)
    return _finish(model, prompt, _sample(model, prompt, seeds, cfg), seeds, cfg)


def generate_along(
    model: HookedTransformer, hook_name: str, direction: Float[Tensor, " d_model"], norm: float,
    cfg: SteerConfig | None = None, **settings: Any,
) -> Generation:
    """Samples while adding a vector of L2 norm ``norm`` along ``direction`` at ``hook_name``:
    any vector, not an SAE feature (a random control, a difference of means).

    Same seeds, positions (``cfg.positions``) and KV-cache handling as ``generate_steered``,
    so the two compare sample by sample. No hook is left afterwards.
    """
    cfg = steer_config(cfg, **settings)
    prompt, seeds = _draw(model, cfg)
    unit = torch.as_tensor(direction).detach().float()
    unit = unit / unit.norm().clamp(min=1e-12)
    gate = _positions_gate(cfg, len(prompt))
    with steering(model, hook_name, unit, float(norm), gate) as stats:
        new = _sample(model, prompt, seeds, cfg, gate)
    out = _finish(model, prompt, new, seeds, cfg)
    out.stats = stats
    return out
