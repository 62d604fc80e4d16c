"""Scale units for several features at once: each feature's scale made absolute.

``absolute``: as given; ``relative``: a multiple of the typical residual norm at the hook
(the steering vector's norm); ``max_act``: a multiple of the feature's max activation in a
search, the AxBench/Neuronpedia convention (the vector is ``scale * max_act_i * W_dec[i]``;
in clamp mode the clamp value is ``scale * max_act_i``). Callers go through a ``Steerer``
(``Steerer.absolute``), which supplies the one typical norm.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sae_steer.config import SCALE_UNITS, check_number
from sae_steer.steer.hooks import steering_direction, to_absolute_scale


def _max_act_of(max_act: Any, feature: int, d_sae: int) -> float:
    if isinstance(max_act, Mapping):
        if feature not in max_act:
            raise ValueError(f"max_act has no value for feature {feature}")
        return check_number(max_act[feature], f"max_act of feature {feature}")
    values = torch.as_tensor(max_act).detach().flatten()
    if values.numel() != d_sae:
        raise ValueError(f"max_act has {values.numel()} values but this SAE has {d_sae} "
                         "features: pass search.max_act from a search of this SAE")
    return check_number(values[feature], f"max_act of feature {feature}")


def to_absolute_scales(
    sae: Any, scales: Mapping[int, float], unit: str, mode: str = "decoder_row", *,
    resid_norm: float | None = None, max_act: Any = None,
) -> dict[int, float]:
    """Each feature's scale in absolute units (clamp mode: the clamp value).

    ``unit``: one of ``SCALE_UNITS``. ``relative`` needs ``resid_norm`` (the typical norm
    at the hook: ``Steerer.resid_norm``); ``max_act`` needs ``max_act``: the features' max
    activations (``search.max_act``, ``[d_sae]``, or a dict ``{feature: max_act}``).
    """
    if unit not in SCALE_UNITS:
        raise ValueError(f"scale_unit must be one of {', '.join(SCALE_UNITS)}, got {unit!r}")
    if unit == "absolute":
        return dict(scales)
    if unit == "relative":
        if resid_norm is None:
            raise ValueError("scale_unit='relative' needs resid_norm (typical_resid_norm(...))")
        return {i: to_absolute_scale(s, resid_norm, sae.W_dec[i].detach() if mode == "clamp"
                                     else steering_direction(sae, i, mode))
                for i, s in scales.items()}
    if max_act is None:
        raise ValueError("scale_unit='max_act' needs the features' max activations: pass "
                         "max_act=search.max_act (a FeatureSearch of this SAE)")
    out = {}
    for i, s in scales.items():
        peak = _max_act_of(max_act, i, sae.cfg.d_sae)
        if peak <= 0:
            raise ValueError(f"feature {i} has max activation {peak:g} in the search (it never "
                             "fired), so scale_unit='max_act' cannot scale it; use 'relative'")
        out[i] = s * peak
    return out
