"""The planted concepts as ready-made concept objects, for any code that takes a concept.

A concept object has a ``name`` and ``mask(model, token_ids) -> list[bool]`` (one flag per
token); ``sae_steer.measure.Concept`` is the general kind. These four apply the world's rule-based
labeler (``labels.concept_mask``) to the tokenizer's own token strings, so they work on
generations of any tokenizer whose pieces spell whole words (word-level or byte-level BPE
with leading-space tokens). This module imports nothing above the world itself.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from .labels import CONCEPTS, concept_mask


@dataclasses.dataclass(frozen=True)
class PlantedConcept:
    """One of the world's four planted concepts (``quote``, ``pretend_list``, ``time_to``,
    ``danger``), labelled by rule on any token sequence."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in CONCEPTS:
            raise ValueError(f"unknown planted concept {self.name!r}; known: {CONCEPTS}")

    def labels(self, str_tokens: Sequence[str]) -> list[bool]:
        """Per-token flags for string tokens (leading spaces and BPE space marks allowed)."""
        return concept_mask(str_tokens, self.name)

    def mask(self, model: Any, token_ids: Sequence[int]) -> list[bool]:
        """Per-token flags for ``token_ids`` of ``model``'s tokenizer."""
        ids = [int(t) for t in token_ids]
        if getattr(model, "tokenizer", None) is None:
            return [False] * len(ids)  # bare ids spell no words
        return self.labels(model.to_str_tokens(torch.tensor(ids, dtype=torch.long)))


def planted_concepts() -> dict[str, PlantedConcept]:
    """``{name: PlantedConcept}`` for the four planted concepts, in ``CONCEPTS`` order."""
    return {name: PlantedConcept(name) for name in CONCEPTS}
