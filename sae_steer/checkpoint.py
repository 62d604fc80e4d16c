"""Atomic training checkpoints: groups of tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``<root>/step_<NNNNNNNN>/`` holding one ``<group>.safetensors``
per tensor group (``sae``, ``optimizer``, ``trainer``...) and ``checkpoint.json`` (step,
data position, configs, metrics history, optimizer scalars). Writing is crash-safe:

1. everything goes into a hidden temp directory ``<root>/.tmp_step_.../``, each file
   fsync'ed, ``checkpoint.json`` last;
2. the temp directory is renamed to ``step_<N>`` (a rename is atomic on POSIX);
3. only then are older checkpoints and stale temp directories deleted.

A process killed at any moment leaves either the previous checkpoint or the new one
complete; the reader ignores hidden temp directories. Nothing is ever pickled.
Knows nothing about SAEs or models: ``train.py`` decides what goes in the groups.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

META_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; some filesystems do not support this, which is fine.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp_step_{step:08d}_"))
    try:
        for group, group_tensors in tensors.items():
            _write_tensors(tmp / f"{group}.safetensors", group_tensors)
        _write_json(tmp / META_FILE, {"step": step, **meta})  # last: marks completeness
        _fsync_dir(tmp)
        if final.exists():  # same step written before (e.g. a resumed run): keep the first
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
            _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
