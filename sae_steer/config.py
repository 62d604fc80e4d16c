"""One dataclass config per stage, saved as JSON beside what the stage produced.

Standard library only: every other module imports this one, so it must stay light.
Each class validates itself in ``__post_init__`` with messages a user can act on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal, TypeVar

C = TypeVar("C", bound="StageConfig")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON via a temp file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclasses.dataclass
class StageConfig:
    """Base: JSON round-trip and a readable diff between two configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**data)

    def save_json(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls: type[C], path: str | os.PathLike) -> C:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{cls.__name__}: config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}: {path} is not valid JSON ({e})") from e
        return cls.from_dict(data)

    def diff(self, other: StageConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


Architecture = Literal["relu", "topk"]


@dataclasses.dataclass
class SAEConfig(StageConfig):
    """Shape and kind of a sparse autoencoder (what ``sae.py`` needs to build one)."""

    d_in: int
    """Width of the activations the SAE reads (d_model of the hooked residual stream)."""
    d_sae: int
    """Number of features (the seed writeup used 10,000)."""
    architecture: str = "relu"
    """``relu`` (ReLU encoder, L1 penalty; the seed's kind) or ``topk`` (k largest kept)."""
    k: int | None = None
    """Active features per token for ``topk``; ignored for ``relu``."""
    dtype: str = "float32"
    """Parameter dtype, as a torch dtype name."""
    device: str | None = None
    """Where parameters live; None means CUDA when available, else CPU."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` before encoding (SAELens's default for standard SAEs)."""
    hook_name: str | None = None
    """TransformerLens hook the SAE was trained on, e.g. ``blocks.1.hook_resid_post``."""
    model_name: str | None = None
    """Model the SAE was trained on (``toystories/small``, ``tiny-stories-33M``...)."""
    context_size: int | None = None
    """Tokens per sequence during training."""
    prepend_bos: bool = True
    """Whether sequences started with BOS during training."""
    dataset_path: str | None = None
    """Text source the SAE was trained on."""

    def __post_init__(self) -> None:
        _require(isinstance(self.d_in, int) and self.d_in > 0,
                 f"d_in must be a positive integer, got {self.d_in!r}")
        _require(isinstance(self.d_sae, int) and self.d_sae > 0,
                 f"d_sae must be a positive integer, got {self.d_sae!r}")
        _require(self.architecture in ("relu", "topk"),
                 f"architecture must be 'relu' or 'topk', got {self.architecture!r}")
        if self.architecture == "topk":
            _require(isinstance(self.k, int) and 0 < self.k <= self.d_sae,
                     f"topk needs 0 < k <= d_sae ({self.d_sae}), got k={self.k!r}")
        _require(self.dtype in ("float32", "float16", "bfloat16", "float64"),
                 f"dtype must be one of float32/float16/bfloat16/float64, got {self.dtype!r}")
