"""Atomic training checkpoints: groups of tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``<root>/step_<NNNNNNNN>/`` holding one ``<group>.safetensors``
per tensor group (``sae``, ``optimizer``, ``trainer``) and ``checkpoint.json`` (step,
data position, configs, metrics history, optimizer scalars). Writing is crash-safe:

1. everything goes into a hidden temp directory ``<root>/.tmp_step_.../``
   (``fsutil.atomic_dir``), each file fsync'ed, ``checkpoint.json`` last;
2. the temp directory is renamed to ``step_<N>`` (a rename is atomic on POSIX);
3. only then are older checkpoints and stale temp directories deleted.

A process killed at any moment leaves either the previous checkpoint or the new one
complete; the reader ignores hidden temp directories. Nothing is ever pickled.

The bottom half is the trainer's side: ``TrainState`` (everything besides weights and
optimizer that a resumed run must restore) and ``save_training`` / ``restore_training``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from sae_steer.config import SAEConfig, TrainConfig
from sae_steer.fsutil import atomic_dir
from sae_steer.sae import SAE

META_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """One safetensors file, flushed to disk before returning."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    meta: dict[str, Any],
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; returns its directory.

    ``tensors`` maps a group name to the tensors of that group's safetensors file.
    Older checkpoints are removed only after the new one is complete.
    """
    root = Path(root)
    final = root / f"step_{step:08d}"
    # replace=False: the same step written before (e.g. by a resumed run) keeps the first
    with atomic_dir(final, replace=False) as tmp:
        for group, group_tensors in tensors.items():
            _write_tensors(tmp / f"{group}.safetensors", group_tensors)
        _write_json(tmp / META_FILE, {"step": step, **meta})  # last: marks completeness
    _remove_stale(root, keep=final)
    return final


def _remove_stale(root: Path, keep: Path) -> None:
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir():
            continue
        if _STEP_DIR.match(entry.name) or entry.name.startswith(".tmp_step_"):
            shutil.rmtree(entry, ignore_errors=True)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory under ``root`` (None when there is none)."""
    root = Path(root)
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), entry) for entry in root.iterdir()
             if (m := _STEP_DIR.match(entry.name)) and (entry / META_FILE).is_file()]
    return max(steps)[1] if steps else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """``(tensors by group, meta)`` of the checkpoint directory ``path``."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt checkpoint file {meta_path}: {e}") from e
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            tensors[file.stem] = load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"corrupt checkpoint file {file}: {e}") from e
    return tensors, meta


def optimizer_to_flat(optimizer: torch.optim.Optimizer
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as (tensors keyed ``"<param>.<name>"``, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for i, param_state in state["state"].items():
        for name, value in param_state.items():
            (tensors if isinstance(value, torch.Tensor) else scalars)[f"{i}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    """Inverse of ``optimizer_to_flat``: load that state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    # JSON turned tuples (Adam's betas) into lists
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v
               for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- the trainer's state ------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    """Everything besides weights and optimizer that a checkpoint must restore."""

    step: int
    scale: float | None
    steps_since_fired: Tensor  # [d_sae] long: steps since each feature last fired
    fire_rate: Tensor  # [d_sae] float32: moving average of each feature's firing rate
    #                    (not yet divided by its weight so far, 1 - decay**step: see rate)
    freq_sum: Tensor  # [d_sae] float: sum of per-log-step firing frequencies
    generator: torch.Generator  # resampling randomness (own stream, checkpointed)
    history: list[dict[str, float]]

    @classmethod
    def fresh(cls, sae: SAE, seed: int) -> TrainState:
        zeros = torch.zeros(sae.d_sae, dtype=torch.float32, device=sae.device)
        return cls(step=0, scale=None,
                   steps_since_fired=torch.zeros(sae.d_sae, dtype=torch.long, device=sae.device),
                   fire_rate=zeros, freq_sum=zeros.clone(),
                   generator=torch.Generator().manual_seed(seed), history=[])

    # --- dead features: the one rule (TrainConfig.dead_after_steps, .dead_below_mean) ---
    def record_fires(self, fires: Tensor, n_tokens: int, cfg: TrainConfig) -> None:
        """After a step: ``fires[i]`` of the step's ``n_tokens`` tokens fired feature i."""
        self.steps_since_fired += 1
        self.steps_since_fired.masked_fill_(fires > 0, 0)
        decay = _rate_decay(cfg)
        self.fire_rate.mul_(decay).add_(fires.float(), alpha=(1 - decay) / n_tokens)

    def rate(self, cfg: TrainConfig) -> Tensor:
        """[d_sae]: each feature's firing rate (fraction of tokens), a moving average over
        about ``dead_after_steps`` steps (bias-corrected as Adam's moments are)."""
        return self.fire_rate / max(1 - _rate_decay(cfg) ** self.step, 1e-12)

    def dead(self, cfg: TrainConfig) -> Tensor:
        """[d_sae] bool: features that have not fired for ``dead_after_steps`` steps, or (once
        that many steps have passed) fire less than ``dead_below_mean`` times as often as
        the average feature."""
        dead = self.steps_since_fired >= cfg.dead_after_steps
        if cfg.dead_below_mean and self.step >= cfg.dead_after_steps:
            dead |= self.fire_rate < cfg.dead_below_mean * self.fire_rate.mean()  # the
            #   bias correction divides both sides alike: no need for rate()
        return dead

    def revived(self, features: Tensor, cfg: TrainConfig) -> None:
        """``features`` (bool [d_sae]) were re-initialised: they start a fresh window, with
        their rate just above the line, so a revived feature that fires stays out of the
        dead set and one that stays silent is back in it (and under AuxK) at once."""
        self.steps_since_fired.masked_fill_(features, 0)
        c, n = cfg.dead_below_mean, int(features.sum())
        others = self.fire_rate.masked_fill(features, 0).sum()
        # the line c * mean counts the revived rates v too: v = c * (others + n v) / d_sae
        v = c * others / (len(self.fire_rate) - c * n)
        self.fire_rate.masked_fill_(features, float(v) * (1 + 1e-3))


def _rate_decay(cfg: TrainConfig) -> float:
    return 1 - 1 / cfg.dead_after_steps


def save_training(root, sae: SAE, optimizer: torch.optim.Optimizer, state: TrainState,
                  cfg: TrainConfig) -> Path:
    """Checkpoint a training run at ``state.step`` under ``root``."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    trainer = {"steps_since_fired": state.steps_since_fired, "fire_rate": state.fire_rate,
               "freq_sum": state.freq_sum,
               "generator": state.generator.get_state(), "torch_rng": torch.get_rng_state()}
    meta = {"batches_consumed": state.step, "scale": state.scale, "history": state.history,
            "train_cfg": cfg.to_dict(), "sae_cfg": _sae_cfg_dict(sae.cfg),
            "optimizer": opt_meta}
    tensors = {"sae": dict(sae.state_dict()), "optimizer": opt_tensors, "trainer": trainer}
    return save_checkpoint(root, state.step, tensors, meta)


def _sae_cfg_dict(cfg: SAEConfig) -> dict[str, Any]:
    # device describes where the weights live now, not what was trained
    return {k: v for k, v in cfg.to_dict().items() if k not in ("device",)}


def restore_training(path: Path, sae: SAE, optimizer: torch.optim.Optimizer, state: TrainState,
                     cfg: TrainConfig) -> None:
    """Load checkpoint ``path`` into ``sae``, ``optimizer`` and ``state`` (configs must match)."""
    tensors, meta = load_checkpoint(path)
    _check_same(TrainConfig.from_dict(meta["train_cfg"]), cfg, "TrainConfig", path)
    saved_sae_cfg = SAEConfig.from_dict({**meta["sae_cfg"], "device": sae.cfg.device})
    _check_same(saved_sae_cfg, sae.cfg, "SAEConfig", path)
    sae.load_state_dict(tensors["sae"])
    optimizer_from_flat(optimizer, tensors["optimizer"], meta["optimizer"])
    trainer = tensors["trainer"]
    state.step, state.scale, state.history = meta["step"], meta["scale"], meta["history"]
    state.steps_since_fired = trainer["steps_since_fired"].to(sae.device)
    if "fire_rate" in trainer:
        state.fire_rate = trainer["fire_rate"].to(sae.device)
    else:  # a checkpoint from before the rate: every feature at the same rate, so none
        #   counts as dead by its rate until a window has told them apart
        state.fire_rate = torch.full_like(state.freq_sum, 1 - _rate_decay(cfg) ** state.step)
    state.freq_sum = trainer["freq_sum"].to(sae.device)
    state.generator.set_state(trainer["generator"])
    torch.set_rng_state(trainer["torch_rng"])


def _check_same(saved, current, name: str, path: Path) -> None:
    diff = saved.diff(current)
    if diff:
        lines = "; ".join(f"{k}: checkpoint={a!r}, now={b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume from {path}: the {name} differs from the "
                         f"checkpoint's ({lines}). Use the checkpoint's config, or "
                         "another checkpoint_dir to start afresh.")
