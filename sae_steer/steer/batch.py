"""Many steering vectors in one batch: each generated row carries its own.

A screen of every feature steers thousands of (feature, scale, seed) rows. Run one
feature at a time, a small model spends its time in Python, not in matrix products; run
together, one forward pass serves hundreds of rows. Row j adds ``deltas[j]`` (zeros: an
unsteered row) at the hook and draws from its own seed, through the same sampler as
``generate_steered``: a row's tokens are those its own run gives (tested), so batching
changes the speed, never the samples.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from sae_steer.config import SteerConfig
from sae_steer.lm import hook_width, validate_hook
from sae_steer.steer.generate import (Generation, _check_lengths, _finish, _positions_gate,
                                      _sample, prompt_tokens)
from sae_steer.steer.hooks import Positions, SteeringStats, _gated, as_positions, hooked

GENERATION_ROWS = {"cpu": 256, "cuda": 2048}
"""Rows generated together per device type: on a CPU more rows stop paying once the
matrix products dominate; on a GPU a batch this size still fits a 33M model's KV cache
in a few GB."""


@contextlib.contextmanager
def steering_rows(
    model: HookedTransformer, hook_name: str, deltas: Float[Tensor, "batch d_model"],
    positions: Positions | int | None = None,
) -> Iterator[SteeringStats]:
    """Add ``deltas[j]`` to batch row j at ``hook_name``, at every steered position.

    Like ``steering`` with one vector per row (so every pass must have ``len(deltas)``
    rows, or those of them that ``positions.rows`` names). The hook is removed on exit,
    error or not.
    """
    gate = as_positions(positions)
    validate_hook(model, hook_name)
    deltas = torch.as_tensor(deltas).detach().float()
    width = hook_width(model, hook_name)
    if deltas.ndim != 2 or deltas.shape[1] != width:
        raise ValueError(f"deltas has shape {tuple(deltas.shape)} but {hook_name!r} needs "
                         f"[rows, {width}]")
    if not torch.isfinite(deltas).all():
        raise ValueError("deltas contain NaN or inf")
    stats = SteeringStats()
    moved: dict[tuple, Tensor] = {}

    def add(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        key = (act.device, act.dtype)
        if key not in moved:  # once, not on every one of the length-1 cached passes
            moved[key] = deltas.to(device=act.device, dtype=act.dtype)[:, None, :]
        # the sampler drops finished rows from later passes: gate.rows says which remain
        mine = moved[key] if gate.rows is None else moved[key][gate.rows.to(act.device)]
        if act.shape[0] != mine.shape[0]:
            raise ValueError(f"the pass has {act.shape[0]} rows but {mine.shape[0]} "
                             "steering vectors were given")
        return _gated(stats, gate, act, mine)

    with hooked(model, hook_name, add):
        yield stats


def generation_rows(model: HookedTransformer) -> int:
    """Rows generated together on the model's device (``GENERATION_ROWS``)."""
    return GENERATION_ROWS.get(torch.device(model.cfg.device).type, GENERATION_ROWS["cpu"])


def generate_rows(
    model: HookedTransformer, hook_name: str, deltas: Float[Tensor, "n d_model"] | None,
    seeds: Sequence[int], cfg: SteerConfig, *, batch_size: int | None = None,
    progress: bool = False, desc: str = "generating",
) -> Generation:
    """Row j: a sample from ``cfg.prompt`` with generator seed ``seeds[j]`` while adding
    ``deltas[j]`` at ``hook_name`` (None, or a row of zeros: unsteered).

    ``cfg`` gives the prompt, length, temperature, positions, KV cache and EOS handling
    (its ``seed``, ``n_samples``, ``mode`` and ``scale_unit`` are not used: the rows say
    what to add). Rows run ``batch_size`` at a time (default: ``generation_rows``).
    """
    seeds = [int(s) for s in seeds]
    if deltas is not None and len(deltas) != len(seeds):
        raise ValueError(f"{len(deltas)} steering vectors for {len(seeds)} seeds")
    prompt = prompt_tokens(model, cfg.prompt)
    _check_lengths(model, len(prompt), cfg.max_new_tokens)
    size = batch_size or generation_rows(model)
    new: list[Tensor] = []
    for lo in tqdm(range(0, len(seeds), size), desc=desc, unit="batch", disable=not progress):
        chunk = seeds[lo : lo + size]
        if deltas is None:
            new.extend(_sample(model, prompt, chunk, cfg))
            continue
        gate = _positions_gate(cfg, len(prompt))
        with steering_rows(model, hook_name, deltas[lo : lo + size], gate):
            new.extend(_sample(model, prompt, chunk, cfg, gate))
    # a batch that stopped early (every row at EOS) has shorter rows: _finish cuts each
    # row at its first EOS anyway
    return _finish(model, prompt, new, seeds, cfg)
