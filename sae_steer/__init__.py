"""sae_steer: train SAEs on a TransformerLens residual stream, inspect, steer, re-score.

The public names are imported lazily (PEP 562) so ``import sae_steer`` stays light:
torch and transformer_lens load only when a name that needs them is first used.
Widgets are deliberately absent: ``from sae_steer.widgets import SteeringPanel``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # configs (one per stage, saved as JSON beside what the stage produced)
    "SAEConfig": "config",
    "TrainConfig": "config",
    "SearchConfig": "config",
    "WorldConfig": "config",
    # models and text
    "load_model": "models",
    "default_device": "models",
    "default_hook_name": "models",
    "model_name": "models",
    "cache_dir": "models",
    "ModelDownloadError": "models",
    "load_texts": "data",
    "load_stories": "data",
    "token_batches": "data",
    "DataDownloadError": "data",
    "match_concepts": "groundtruth",
    # the SAE and its training
    "SAE": "sae",
    "TrainStepOutput": "sae",
    "train_sae": "pipeline",
    "load_or_train_sae": "pipeline",
    "reference_sae": "pipeline",
    # inspection
    "search_features": "search",
    "load_or_search": "search",
    "FeatureSearch": "search_results",
    "feature_card": "card",
    "planted_concepts_report": "concept_report",
    "render_blocks": "render",
    "render_html": "render",
    # steering and re-scoring
    "steering": "steer",
    "clamping": "steer",
    "generate_steered": "steer",
    "generate_unsteered": "steer",
    "typical_resid_norm": "steer",
    "to_absolute_scale": "steer",
    "rescore": "score",
    "steering_report": "score",
    "scale_sweep": "score",
    "plot_sweep": "score",
    "steer_concept": "concepts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sae_steer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sae_steer.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
