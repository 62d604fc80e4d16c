"""Config of steering (``SteerConfig``: how samples are drawn), with its keyword-shortcut
helper."""
from __future__ import annotations

import dataclasses
from typing import Any

from sae_steer.config.base import (StageConfig, check_number, is_integer, replace_config, require,
                                   require_positive_integers)


MODES = ("decoder_row", "clamp", "decoder_onehot")
"""Steering modes: add ``W_dec[i]``; clamp feature i; add ``decode(onehot_i)`` (the pitfall)."""
SCALE_UNITS = ("absolute", "relative", "max_act")
"""``absolute``: the scale multiplies the direction as is; ``relative``: the steering
vector's norm is that multiple of the typical residual-stream norm at the hook;
``max_act``: a multiple of the feature's max activation in a search (AxBench/Neuronpedia:
the vector is ``scale * max_act_i * W_dec[i]``)."""
POSITIONS = ("all", "generated")
"""``all``: steer every position of every pass, prompt included; ``generated``: leave the
prompt's positions alone and steer every generated one (KV-cached or not)."""



@dataclasses.dataclass
class SteerConfig(StageConfig):
    """How steered and unsteered samples are drawn: one config for every steering call.

    ``generate_steered``, ``steering_report``, ``scale_sweep`` and the concept search take
    one of these (or its fields as keyword shortcuts) instead of the settings one by one,
    and a report saves it as JSON beside itself.
    """

    prompt: Any = "Once upon a time"
    """Text, or token ids (a list of ints) for a model without a tokenizer."""
    max_new_tokens: int = 100
    """Tokens generated after the prompt (fewer when a sample reaches end-of-text)."""
    n_samples: int = 2
    """Samples per call; steered and unsteered sample j share one random stream."""
    seed: int = 0
    """Sample j draws from generator seed ``sample_seed(seed, j)`` (``config.seeds``)."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    mode: str = "decoder_row"
    """One of ``MODES``: add ``scale * W_dec[i]`` (the seed's method), clamp feature i to
    ``scale``, or add ``scale * decode(onehot_i)`` (a pitfall kept to show it)."""
    scale_unit: str = "absolute"
    """One of ``SCALE_UNITS``: the scale as given, a multiple of the typical
    residual-stream norm at the hook (transfers between models), or a multiple of each
    feature's max activation in a search (pass ``max_act=search.max_act``)."""
    positions: str = "all"
    """One of ``POSITIONS``: steer every position (prompt too), or only generated ones."""
    use_kv_cache: bool = True
    """Generate with TransformerLens's KV cache (same tokens as without, faster)."""
    stop_at_eos: bool = True
    """Cut each sample at its first end-of-text token."""
    resid_norm: float | None = None
    """Typical residual-stream norm at the hook, for ``scale_unit="relative"`` (None:
    measured on the model's own samples; pass it to reuse one measurement)."""
    fire_threshold: float = 0.0
    """Re-scoring: a feature "fires" on a token when its activation exceeds this."""

    def __post_init__(self) -> None:
        if hasattr(self.prompt, "tolist"):  # a tensor or array of ids: keep JSON-able ids
            self.prompt = self.prompt.tolist()
        require_positive_integers(self, ("max_new_tokens", "n_samples"))
        require(is_integer(self.seed),
                 f"seed must be an integer (e.g. 0), got {type(self.seed).__name__} {self.seed!r}")
        require(self.seed >= 0,  # torch's generators take seeds in 0..2**64-1
                f"seed must be a non-negative integer (seeds are 0, 1, 2, ...), got {self.seed!r}")
        if check_number(self.temperature, "temperature") < 0:  # refuses "hot", NaN and inf too
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        require(self.mode in MODES,
                 f"unknown steering mode {self.mode!r}; choose one of {', '.join(MODES)}")
        require(self.scale_unit in SCALE_UNITS,
                 f"scale_unit must be 'absolute' or 'relative', got {self.scale_unit!r} "
                 "(or 'max_act', with max_act=search.max_act)")
        require(self.positions in POSITIONS,
                 f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.resid_norm is not None:
            require(check_number(self.resid_norm, "resid_norm") > 0,
                     f"resid_norm must be positive, got {self.resid_norm!r}")
            self.resid_norm = float(self.resid_norm)
        self.fire_threshold = check_number(self.fire_threshold, "fire_threshold")
        self.max_new_tokens, self.n_samples, self.seed = (
            int(self.max_new_tokens), int(self.n_samples), int(self.seed))
        self.temperature = float(self.temperature)



def steer_config(cfg: SteerConfig | None = None, **changes: Any) -> SteerConfig:
    """``cfg`` (default ``SteerConfig()``) with the keyword shortcuts in ``changes`` applied."""
    if cfg is not None and not isinstance(cfg, SteerConfig):
        raise TypeError(f"cfg must be a SteerConfig, got {type(cfg).__name__}")
    return replace_config(cfg if cfg is not None else SteerConfig(), **changes)
