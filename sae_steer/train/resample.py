"""Dead-feature resampling, every architecture: ``loop._step`` calls it every
``TrainConfig.resample_every`` steps with the dead set of ``TrainState.dead``. For the topk
family it is what lets AuxK reach a feature: AuxK trains dead features through their
positive pre-activations, and a feature that has drifted to negative ones everywhere gets
no gradient from it; pointed at a badly reconstructed input, it has some again."""
from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from sae_steer.config.sae import TOPK_FAMILY
from sae_steer.sae import SAE
from sae_steer.sae.model import JUMPRELU_INIT_THRESHOLD

ENCODER_SCALE = {False: 0.2, True: 1.0}
"""A resampled feature's encoder norm, as a fraction of the mean live one, by "is it of the
topk family". 0.2 for relu and jumprelu (Anthropic's recipe: the new feature starts quiet
and the penalty's balance is not upset); 1.0 for the topk family, where a feature is used
only if it beats the live ones into the top k: at 0.2 it rarely does. On the fair bench's
``--long`` (topk, width 1,024) 1.0 left 5.5 % of features dead on held-out, 0.2 left
6.5 % (EV 0.952 both; docs/benchmarks.md)."""


@torch.no_grad()
def resample_dead(sae: SAE, optimizer: torch.optim.Optimizer, x: Float[Tensor, "batch d_in"],
                  dead: Tensor, generator: torch.Generator) -> int:
    """Point each dead feature at an input the SAE reconstructs badly; returns how many.

    Inputs are drawn with probability proportional to their squared error (Anthropic's
    "Towards Monosemanticity" recipe, with the residual ``x - x_hat`` as the direction):
    decoder row = unit residual, encoder column = that row scaled to ``ENCODER_SCALE`` (0.2,
    or 1.0 for the topk family) times the mean alive encoder norm, bias 0 (a jumprelu
    threshold back to its initial value), and the Adam moments of those entries reset.
    """
    idx = dead.nonzero().squeeze(-1)
    if len(idx) == 0:
        return 0
    residual = x - sae(x)
    weights = residual.pow(2).sum(-1).double().cpu()
    if not weights.sum() > 0:
        return 0
    # distinct inputs where possible; repeats only when too few have any error at all
    pick = torch.multinomial(weights, len(idx), replacement=len(idx) > int((weights > 0).sum()),
                             generator=generator).to(x.device)
    directions = residual[pick] / residual[pick].norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    enc_norm = enc_norm if enc_norm > 0 else 1.0
    sae.W_dec[idx] = directions
    sae.W_enc[:, idx] = directions.T * (ENCODER_SCALE[sae.cfg.architecture in TOPK_FAMILY] * enc_norm)
    sae.b_enc[idx] = 0.0
    reset = [(sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))]
    if sae.cfg.architecture == "jumprelu":
        sae.threshold[idx] = JUMPRELU_INIT_THRESHOLD
        reset.append((sae.threshold, (idx,)))
    for param, index in reset:
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in optimizer.state.get(param, {}):
                optimizer.state[param][moment][index] = 0.0
    return len(idx)
