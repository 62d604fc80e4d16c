"""sae_steer: train SAEs on a TransformerLens residual stream, inspect, steer, re-score.

The public names are imported lazily (PEP 562) so ``import sae_steer`` stays light:
torch and transformer_lens load only when a name that needs them is first used.
Widgets are deliberately absent: ``from sae_steer.ui.widgets import SteeringPanel``.
The stages live one folder each, imports pointing down only (see the README's layout)::

    ui -> measure -> inspect | steer | train -> lm -> sae | toystories -> config -> bottom
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # configs (one per stage, saved as JSON beside what the stage produced)
    "SAEConfig": "config",
    "TrainConfig": "config",
    "SearchConfig": "config",
    "SteerConfig": "config",
    "ChooseConfig": "config",
    "WorldConfig": "config",
    "cache_dir": "fsutil",
    # models and text
    "load_model": "lm.models",
    "default_device": "lm.models",
    "default_hook_name": "lm.models",
    "model_name": "lm.models",
    "ModelDownloadError": "lm.models",
    "load_texts": "lm.texts",
    "load_stories": "lm.texts",
    "token_batches": "lm.texts",
    "DataDownloadError": "lm.texts",
    # the SAE and its training
    "SAE": "sae.model",
    "TrainStepOutput": "sae.kernels",
    "train_sae": "train.pipeline",
    "load_or_train_sae": "train.pipeline",
    "reference_sae": "train.pipeline",
    # inspection
    "search_features": "inspect.search",
    "load_or_search": "inspect.search",
    "FeatureSearch": "inspect.results",
    "feature_card": "inspect.card",
    "match_concepts": "inspect.groundtruth",
    "render_blocks": "render",
    "render_html": "render",
    # steering
    "steering": "steer.hooks",
    "clamping": "steer.hooks",
    "to_absolute_scale": "steer.hooks",
    "generate_steered": "steer.steerer",
    "generate_unsteered": "steer.generate",
    "generate_along": "steer.generate",
    "typical_resid_norm": "steer.generate",
    # measuring: concepts, re-scoring, reports, sweeps, feature choice
    "Concept": "measure.concepts",
    "rescore": "measure.rescore",
    "steering_report": "measure.report",
    "scale_sweep": "measure.sweep",
    "steer_concept": "measure.choose",
    "concept_candidates": "measure.candidates",
    "feature_scores": "measure.steerability",
    "screen_features": "measure.screen",
    "SteerabilityScreen": "measure.screen_results",
    "ScreenConfig": "config",
    # the offline world
    "planted_concepts": "toystories.concepts",
    # views (the public face may hand them on; no module of the library imports ui)
    "plot_sweep": "ui.plots",
    "planted_concepts_report": "ui.planted",
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
