"""Training: the loop eats activation tensors; the pipeline wires a language model to it.

``loop.train`` knows nothing about language models (it consumes batches, like minGPT's
trainer); ``checkpoint`` writes resumable, atomic checkpoints; ``pipeline`` harvests
activations at a hook and caches trained SAEs.

The pipeline's names load lazily (PEP 562), so ``import sae_steer.train.loop`` needs only
torch: no TransformerLens (a process that only trains starts in about a second).
"""
from __future__ import annotations

import importlib
from typing import Any

from sae_steer.train.loop import NonFiniteError, TrainResult, explained_variance, train

_PIPELINE = ("fit_sae", "load_or_train", "load_or_train_sae", "reference_sae",
             "reference_training", "tinystories_configs", "train_sae")

__all__ = ["NonFiniteError", "TrainResult", "explained_variance", "fit_sae", "load_or_train",
           "load_or_train_sae", "reference_sae", "reference_training", "tinystories_configs",
           "train", "train_sae"]


def __getattr__(name: str) -> Any:
    if name != "pipeline" and name not in _PIPELINE:
        raise AttributeError(f"module 'sae_steer.train' has no attribute {name!r}")
    pipeline = importlib.import_module("sae_steer.train.pipeline")
    return pipeline if name == "pipeline" else getattr(pipeline, name)
