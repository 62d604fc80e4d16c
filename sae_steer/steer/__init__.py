"""Steering: hook contexts that add a feature's direction, scale units, and the sampler."""
from sae_steer.steer.generate import (Generation, generate_steered, generate_unsteered,
                                      prompt_tokens, sample_seed, typical_resid_norm)
from sae_steer.steer.hooks import (SteeringStats, clamping, hooked, steered, steering,
                                   steering_direction, to_absolute_scale, to_relative_scale)

__all__ = ["Generation", "SteeringStats", "clamping", "generate_steered", "generate_unsteered",
           "hooked", "prompt_tokens", "sample_seed", "steered", "steering", "steering_direction",
           "to_absolute_scale", "to_relative_scale", "typical_resid_norm"]
