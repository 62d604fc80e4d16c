"""The offline toy world: generated children's stories with planted concepts, a
word-level tokenizer, and a 4-layer HookedTransformer trained on them (cached on disk).

Use it through ``sae_steer.load_model("toystories")`` and ``sae_steer.load_texts("toystories")``.
This package's own names:

* ``CONCEPTS`` -- ``("quote", "pretend_list", "time_to", "danger")``;
* ``Story``, ``generate_stories(n, seed, split)``, ``story_stream(seed, split)`` -- the generator;
* ``concept_mask(str_tokens, concept)``, ``concept_count``, ``concept_rate`` -- the rule-based
  labeler, usable on any text (model generations included);
* ``PlantedConcept``, ``planted_concepts()`` -- the four concepts as concept objects
  (``name`` + ``mask(model, token_ids)``) for scoring, sweeps and feature choice;
* ``PRESETS``, ``world_config(preset)``, ``world_metrics(preset, cache_root)`` -- the model builds;
* ``neo`` -- the same stories in the real format: an HF GPT-Neo (TinyStories-33M's family)
  with a byte-level BPE tokenizer, saved as an HF model directory (``NeoConfig``,
  ``ensure_neo_world``); load it with ``sae_steer.load_model("toystories-neo")``.

The model-building names load torch lazily, so the generator and labeler stay light.
"""
from __future__ import annotations

import importlib
from typing import Any

from .grammar import Story, generate_stories, story_stream
from .concepts import PlantedConcept, planted_concepts
from .labels import CONCEPTS, concept_count, concept_mask, concept_rate
from .text import detokenize, split_words

_LAZY = {"PRESETS": "lm", "world_config": "lm", "world_metrics": "lm", "load_toy_model": "lm",
         "build_tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
         "NeoConfig": "neo", "ensure_neo_world": "neo"}

__all__ = ["CONCEPTS", "Story", "generate_stories", "story_stream", "concept_mask", "concept_count",
           "concept_rate", "detokenize", "split_words", "PlantedConcept", "planted_concepts", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "neo":
        return importlib.import_module(".neo", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'sae_steer.toystories' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
