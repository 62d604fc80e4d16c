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
``--long`` (topk, width 1,024; before ``ORTHOGONAL_TO``) 1.0 left 5.5 % of features dead
on held-out, 0.2 left 6.5 % (EV 0.952 both; docs/benchmarks.md)."""

ORTHOGONAL_TO = {False: 0, True: 8}
"""How many of the live decoder rows most aligned with a resampled row it is made orthogonal
to, by "is it of the topk family". A topk SAE's residual is mostly true features cut off by
k, directions live features already cover: a row pointed straight at it duplicates one of
them and loses the race into the top k, so it dies again. Off the 8 nearest live rows it
points at what nothing covers. On the fair bench's ``--long`` this took dead on held-out from
5.5 % to 4.9 % from two initialisations (8 fixed before the run; docs/benchmarks.md). In
dictionaries 32 times wider than a 64-wide input it cost dead features instead (23.2 % to
27.4 % on the GPT-Neo world; docs/results.md): 8 rows are an eighth of that space. Off (0)
for relu and jumprelu, where it was not measured."""


@torch.no_grad()
def resample_dead(sae: SAE, optimizer: torch.optim.Optimizer, x: Float[Tensor, "batch d_in"],
                  dead: Tensor, generator: torch.Generator) -> int:
    """Point each dead feature at an input the SAE reconstructs badly; returns how many.

    Inputs are drawn with probability proportional to their squared error (Anthropic's
    "Towards Monosemanticity" recipe, with the residual ``x - x_hat`` as the direction):
    decoder row = unit residual (for the topk family, made orthogonal to its
    ``ORTHOGONAL_TO`` most aligned live rows), encoder column = that row scaled to
    ``ENCODER_SCALE`` (0.2, or 1.0 for the topk family) times the mean alive encoder norm,
    bias 0 (a jumprelu threshold back to its initial value), and the Adam moments of those
    entries reset.
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
    topk_family = sae.cfg.architecture in TOPK_FAMILY
    directions = _orthogonal_to_nearest(directions, sae.W_dec[alive], ORTHOGONAL_TO[topk_family])
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    enc_norm = enc_norm if enc_norm > 0 else 1.0
    sae.W_dec[idx] = directions
    sae.W_enc[:, idx] = directions.T * (ENCODER_SCALE[topk_family] * enc_norm)
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


def _orthogonal_to_nearest(directions: Float[Tensor, "n d_in"], W_live: Float[Tensor, "n_alive d_in"],
                           m: int) -> Float[Tensor, "n d_in"]:
    """Each unit row of ``directions`` with its component in the span of its ``m`` most
    |cos|-aligned rows of ``W_live`` removed, renormalised; a row that nothing is left of
    (it lay in that span) is kept as it was. ``m`` is capped below ``d_in`` so some direction
    always remains."""
    m = min(m, len(W_live), directions.shape[-1] - 1)
    if m <= 0:
        return directions
    d = directions.float()
    live = W_live.float()
    live = live / live.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    nearest = (d @ live.T).abs().topk(m, dim=-1).indices
    # an orthonormal basis of each row's m neighbours (QR of [n, d_in, m], batched on any device)
    Q, _ = torch.linalg.qr(live[nearest].transpose(1, 2))
    rest = d - (Q @ (Q.transpose(1, 2) @ d.unsqueeze(-1))).squeeze(-1)
    norm = rest.norm(dim=-1, keepdim=True)
    out = torch.where(norm > 1e-4, rest / norm.clamp_min(1e-8), d)
    return out.to(directions.dtype)
