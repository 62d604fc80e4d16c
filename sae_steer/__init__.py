"""sae_steer: train SAEs on a TransformerLens residual stream, inspect, steer, re-score.

The public names are imported lazily (PEP 562) so ``import sae_steer`` stays light:
torch and transformer_lens load only when a name that needs them is first used.
The face is the few names a notebook needs; the rest stays in the stage folders, and
views, plots and widgets in ``sae_steer.ui`` (``from sae_steer.ui.widgets import SteeringPanel``).
The stages live one folder each, imports pointing down only (see the README's layout)::

    ui -> measure -> inspect | steer | train -> lm -> sae | toystories -> config -> bottom
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it. The names a notebook needs, and no more (<= 25):
# everything else is imported from its stage folder (``sae_steer.steer.steering``,
# ``sae_steer.measure.Concept``, ``sae_steer.config.SAEConfig``, ``sae_steer.steer.
# typical_resid_norm``...), rendering from
# ``sae_steer.ui``. tests/test_public_api.py holds the count and the notebooks to it.
_EXPORTS: dict[str, str] = {
    # models and text
    "load_model": "lm.models",
    "load_texts": "lm.texts",
    "model_name": "lm.models",
    "default_hook_name": "lm.models",
    # settings a notebook writes out (every other stage takes keyword shortcuts)
    "SteerConfig": "config",
    "SelectConfig": "config",
    # the SAE and its training
    "SAE": "sae.model",
    "random_features": "sae.draw",
    "load_or_train": "train.pipeline",
    "reference_training": "train.pipeline",
    "reference_sae": "train.pipeline",
    "tinystories_configs": "train.pipeline",
    # inspection
    "load_or_search": "inspect.search",
    "concept_matches": "inspect.groundtruth",
    # steering: samples; the Steerer owns directions, the typical norm and scale units
    "Steerer": "steer.steerer",
    "generate_steered": "steer.steerer",
    # measuring: re-scoring, reports, candidates, scores, the screen, the concept search
    "rescore": "measure.rescore",
    "steering_report": "measure.report",
    "concept_candidates": "measure.candidates",
    "feature_scores": "measure.steerability",
    "screen_features": "measure.screen",
    "steer_concept": "measure.choose",
    # the offline world's concepts
    "planted_concepts": "toystories.concepts",
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
