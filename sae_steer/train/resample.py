"""Dead-feature resampling for relu and jumprelu SAEs (the topk family uses AuxK instead):
``loop._step`` calls it every ``TrainConfig.resample_every`` steps."""
from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from sae_steer.sae import SAE
from sae_steer.sae.model import JUMPRELU_INIT_THRESHOLD


@torch.no_grad()
def resample_dead(sae: SAE, optimizer: torch.optim.Optimizer, x: Float[Tensor, "batch d_in"],
                  dead: Tensor, generator: torch.Generator) -> int:
    """Point each dead feature at an input the SAE reconstructs badly; returns how many.

    Inputs are drawn with probability proportional to their squared error (Anthropic's
    "Towards Monosemanticity" recipe, with the residual ``x - x_hat`` as the direction):
    decoder row = unit residual, encoder column = that row scaled to 0.2 * the mean alive
    encoder norm, bias 0 (a jumprelu threshold back to its initial value), and the Adam
    moments of those entries reset.
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
    sae.W_enc[:, idx] = directions.T * (0.2 * enc_norm)
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
