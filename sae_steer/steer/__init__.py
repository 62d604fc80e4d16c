"""Steering: hook contexts that add features' directions, scale units, and the sampler."""
from sae_steer.steer.generate import (Generation, generate_along,
                                      generate_unsteered,
                                      typical_resid_norm)
from sae_steer.steer.hooks import (Positions, SteeringStats, clamping, feature_scales, hooked,
                                   steered, steering, steering_direction, to_absolute_scale,
                                   to_relative_scale)
from sae_steer.steer.steerer import Steerer, generate_steered
from sae_steer.steer.units import to_absolute_scales

__all__ = ["Generation", "Positions", "Steerer", "SteeringStats", "clamping", "feature_scales",
           "generate_along", "generate_steered", "generate_unsteered", "hooked",
           "steered", "steering", "steering_direction", "to_absolute_scale",
           "to_absolute_scales", "to_relative_scale", "typical_resid_norm"]
