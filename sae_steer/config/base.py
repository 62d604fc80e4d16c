"""The base of every stage config: JSON round-trip, a readable diff, ``replace``, checks.

Standard library only (plus the atomic JSON writer): every module imports a config.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, TypeVar

from sae_steer.fsutil import write_json_atomic

C = TypeVar("C", bound="StageConfig")


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

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied, validated like a new config."""
        return replace_config(self, **changes)

    def diff(self, other: StageConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)}


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``: the configs' one validation primitive."""
    if not ok:
        raise ValueError(message)


def is_integer(value: Any) -> bool:
    """An integer that is not a bool (numpy integers count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_positive_integers(cfg: Any, names: tuple[str, ...]) -> None:
    """Each named field of ``cfg`` is a positive integer, or a ValueError naming it."""
    for name in names:
        value = getattr(cfg, name)
        require(is_integer(value) and value > 0, f"{name} must be a positive integer, got {value!r}")


def require_integers(cfg: Any, names: tuple[str, ...]) -> None:
    """Each named field of ``cfg`` is an integer (a seed), or a ValueError naming it."""
    for name in names:
        require(is_integer(getattr(cfg, name)), f"{name} must be an integer, got {getattr(cfg, name)!r}")


def check_number(value: Any, name: str) -> float:
    """``value`` as a finite float, or a ValueError naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number



def replace_config(cfg: C, **changes: Any) -> C:
    """A copy of ``cfg`` with ``changes`` applied, validated like a new config; a TypeError
    names unknown fields."""
    names = [f.name for f in dataclasses.fields(cfg)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise TypeError(f"unknown {type(cfg).__name__} setting(s) {unknown}; fields: {names}")
    return dataclasses.replace(cfg, **changes) if changes else cfg

