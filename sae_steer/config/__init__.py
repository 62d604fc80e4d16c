"""One dataclass config per stage, saved as JSON beside what the stage produced.

Stages: ``SAEConfig`` (the SAE's shape), ``TrainConfig`` (its training), ``SearchConfig``
(the feature search), ``SteerConfig`` (how steered samples are drawn), ``ChooseConfig``
(how a feature is chosen for a concept), ``WorldConfig`` (the offline world). Each class
validates itself in ``__post_init__`` with messages a user can act on. Standard library
only: every other module imports this one, so it must stay light.
"""
from sae_steer.config.base import StageConfig, check_number, replace_config
from sae_steer.config.sae import Architecture, SAEConfig, TrainConfig
from sae_steer.config.search import SearchConfig
from sae_steer.config.steer import (MODES, POSITIONS, SCALE_UNITS, ChooseConfig, SteerConfig,
                                    choose_config, steer_config)
from sae_steer.config.world import NeoConfig, WorldConfig

__all__ = ["MODES", "POSITIONS", "SCALE_UNITS", "Architecture", "ChooseConfig", "NeoConfig",
           "SAEConfig", "SearchConfig", "StageConfig", "SteerConfig", "TrainConfig", "WorldConfig",
           "check_number", "choose_config", "replace_config", "steer_config"]
