"""The sparse autoencoder: its module, sparse training kernels and SAELens-format I/O.

Knows only torch and safetensors: nothing here imports language-model code.
"""
from sae_steer.sae.draw import random_features
from sae_steer.sae.kernels import TrainStepOutput
from sae_steer.sae.model import SAE, decoder_units, feature_index

__all__ = ["SAE", "TrainStepOutput", "decoder_units", "feature_index", "random_features"]
