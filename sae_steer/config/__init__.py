"""One dataclass config per stage, saved as JSON beside what the stage produced.

Stages: ``SAEConfig`` (the SAE's shape), ``TrainConfig`` (its training), ``SearchConfig``
(the feature search), ``SteerConfig`` (how steered samples are drawn), ``SelectConfig``
(how features are ranked, confirmed and reported, for every selection preset),
``WorldConfig`` (the offline world). Each class validates itself in ``__post_init__``
with messages a user can act on. ``rules`` states when steering worked (targets, cost
budget, the pass rule) and what "recommended" promises, for every sweep, selection and
bench; ``seeds`` which seeds every run, baseline, control, selection and confirmation uses.
Standard library only: every other module imports this one, so it must stay light.
"""
from sae_steer.config.base import StageConfig, check_number, replace_config
from sae_steer.config.rules import (COST_BUDGET, FIRES_GAIN_TARGET, LIFT_TARGET, PROMISE,
                                    PROMISE_CONFIDENCE, SUCCESS_TARGETS, best_scale, passes,
                                    promise_kept, retest_pass_low, retest_pass_probability,
                                    suggest_scale, within_budget, Z95)
from sae_steer.config.sae import SAEConfig, TrainConfig
from sae_steer.config.search import SearchConfig
from sae_steer.config.select import SelectConfig
from sae_steer.config.seeds import NORM_SEED, control_seed, sample_seed, sample_seeds
from sae_steer.config.steer import MODES, POSITIONS, SCALE_UNITS, SteerConfig, steer_config
from sae_steer.config.world import NeoConfig, WorldConfig

__all__ = ["COST_BUDGET", "FIRES_GAIN_TARGET", "LIFT_TARGET", "MODES", "NORM_SEED", "POSITIONS",
           "PROMISE", "PROMISE_CONFIDENCE", "SCALE_UNITS", "SUCCESS_TARGETS", "NeoConfig",
           "SAEConfig", "SearchConfig", "SelectConfig", "StageConfig", "SteerConfig",
           "TrainConfig", "WorldConfig", "best_scale", "check_number", "control_seed", "passes",
           "promise_kept", "replace_config", "retest_pass_low", "retest_pass_probability",
           "sample_seed", "sample_seeds", "steer_config", "suggest_scale", "within_budget", "Z95"]
