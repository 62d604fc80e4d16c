"""What ``SAE.training_forward`` returns, the plain-autograd reference, and what the fast
paths share.

``dense_training_forward`` is the reference for every architecture: easy to read, and what
the tests compare the fast paths (``topk_kernel``, ``relu_kernel``, ``jumprelu_kernel``,
``batchtopk_kernel``) against (same losses, same gradients). The kernels read the SAE
through the small ``SAEWeights`` protocol, so none imports the SAE class (``model.py``
imports them).
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class SAEWeights(Protocol):
    """What a training kernel reads of an SAE (``sae_steer.sae.SAE`` satisfies it)."""

    cfg: Any
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    d_in: int
    d_sae: int
    dtype: torch.dtype

    def pre_activations(self, x: Tensor) -> Tensor: ...


@dataclasses.dataclass
class TrainStepOutput:
    """What one training forward pass returns; call ``.loss.backward()``."""

    loss: Tensor
    """mse_loss + inner_mse_loss + sparsity_loss + aux_loss (a scalar with grad)."""
    mse_loss: Tensor
    """Squared error summed over d_in, averaged over tokens (SAELens's definition)."""
    sparsity_loss: Tensor
    """relu: l1_coefficient * mean over tokens of sum_i feats_i * ||W_dec[i]||; jumprelu:
    l0_coefficient * mean number of active features per token; topk family: 0."""
    aux_loss: Tensor
    """topk family: AuxK loss (dead features reconstructing the residual error); else 0."""
    inner_mse_loss: Tensor
    """matryoshka_batchtopk: the summed mse of the inner prefixes' reconstructions (the
    outer one is ``mse_loss``); else 0."""
    l0: Tensor
    """Mean number of active features per token (no grad)."""
    fires: Tensor
    """[d_sae]: on how many of the batch's tokens each feature fired (no grad; the
    trainer's firing-rate estimate and last-fired steps read it)."""
    x_hat: Tensor
    """Reconstruction, detached, same shape as the input."""


def step_output(*, mse, sparsity, aux, l0, fires, x_hat, inner=None) -> TrainStepOutput:
    inner = mse.new_zeros(()) if inner is None else inner
    return TrainStepOutput(loss=mse + inner + sparsity + aux, mse_loss=mse,
                           sparsity_loss=sparsity, aux_loss=aux, inner_mse_loss=inner, l0=l0,
                           fires=fires, x_hat=x_hat.detach())


def _aux_k_scale(n_dead: int, aux_k: int) -> tuple[int, float]:
    # Fewer dead features than aux_k: use them all, and shrink the loss proportionally
    # so a handful of dead features does not dominate the gradient.
    return min(aux_k, n_dead), min(n_dead / aux_k, 1.0)


def rectangle(z: Tensor) -> Tensor:
    """1 where |z| < 1/2, else 0: the kernel of JumpReLU's straight-through estimator."""
    return (z.abs() < 0.5).to(z.dtype)


class JumpReLUSTE(torch.autograd.Function):
    """``pre * (pre > threshold)``, with the threshold's pseudo-gradient of Rajamanoharan et
    al. 2024: ``-(threshold / bandwidth) * rectangle((pre - threshold) / bandwidth)`` times
    the incoming gradient, summed over tokens (SAELens's ``JumpReLU``, ste_to_input=False)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        ste = (threshold / bw) * rectangle((pre - threshold) / bw) * grad
        return (pre > threshold).to(grad.dtype) * grad, -ste.sum(0), None


class StepSTE(torch.autograd.Function):
    """``(pre > threshold)``; the threshold's pseudo-gradient is
    ``-(1 / bandwidth) * rectangle((pre - threshold) / bandwidth)`` (SAELens's ``Step``),
    and none reaches ``pre``: the L0 penalty moves only the thresholds."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        return None, -((1 / bw) * rectangle((pre - threshold) / bw) * grad).sum(0), None


def batch_topk(pre: Tensor, k: int) -> Tensor:
    """The ``k * n_tokens`` largest of ``relu(pre)`` over the whole batch, 0 elsewhere."""
    acts = pre.relu()
    vals, idx = acts.flatten().topk(k * pre.shape[0], sorted=False)
    return torch.zeros_like(acts.flatten()).scatter(0, idx, vals).view_as(acts)


def dense_training_forward(sae: SAEWeights, x: Tensor, *, l1_coefficient: float = 0.0,
                           dead_mask: Tensor | None = None, aux_k_coefficient: float = 1 / 32,
                           aux_k: int | None = None, l0_coefficient: float = 0.0,
                           bandwidth: float = 0.05) -> TrainStepOutput:
    """Reference implementation with dense [batch, d_sae] tensors and plain autograd (and
    SAELens's straight-through estimators for jumprelu)."""
    x = x.reshape(-1, sae.d_in).to(sae.dtype)
    arch = sae.cfg.architecture
    pre = sae.pre_activations(x)
    if arch == "relu":
        feats = torch.relu(pre)
    elif arch == "jumprelu":
        feats = JumpReLUSTE.apply(pre, sae.threshold, bandwidth)
    elif arch == "topk":
        vals, idx = pre.topk(sae.cfg.k, dim=-1, sorted=False)
        feats = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    else:
        feats = batch_topk(pre, sae.cfg.k)
    x_hat = feats @ sae.W_dec + sae.b_dec
    mse = (x_hat - x).pow(2).sum(-1).mean()
    zero = mse.new_zeros(())
    sparsity, aux, inner = zero, zero, zero
    if arch == "relu":
        sparsity = l1_coefficient * (feats * sae.W_dec.norm(dim=1)).sum(-1).mean()
    elif arch == "jumprelu":
        sparsity = l0_coefficient * StepSTE.apply(pre, sae.threshold, bandwidth).sum(-1).mean()
    elif dead_mask is not None and (n_dead := int(dead_mask.sum())) > 0:
        k_aux, scale = _aux_k_scale(n_dead, aux_k or sae.d_in // 2)
        masked = torch.where(dead_mask[None], pre, float("-inf"))
        a_vals, a_idx = masked.topk(k_aux, dim=-1, sorted=False)
        a_feats = torch.zeros_like(pre).scatter(-1, a_idx, a_vals.relu())
        residual = (x - x_hat).detach()
        aux = aux_k_coefficient * scale * (a_feats @ sae.W_dec - residual).pow(2).sum(-1).mean()
    if arch == "matryoshka_batchtopk":
        for width in sae.cfg.matryoshka_widths[:-1]:
            inner_hat = feats[:, :width] @ sae.W_dec[:width] + sae.b_dec
            inner = inner + (inner_hat - x).pow(2).sum(-1).mean()
    with torch.no_grad():
        active = feats > 0
        l0 = active.sum(-1).float().mean()
        fires = active.sum(0)
    return step_output(mse=mse, sparsity=sparsity, aux=aux, l0=l0, fires=fires, x_hat=x_hat,
                       inner=inner)


# ---- what the fast paths share -------------------------------------------------------
# Each fast path (topk_kernel, relu_kernel, jumprelu_kernel, batchtopk_kernel) is one
# autograd Function with a hand-written backward pass, so nothing [batch, d_sae]-sized is
# kept for autograd except what it chooses to keep. Shared facts:
#   e = x_hat - x,  mse = sum(e^2) / N  =>  dmse/dx_hat = 2e / N
#   sae_in = x - b_dec  =>  the encoder's share of grad b_dec is -(colsum grad_pre) @ W_enc.T
#                          = -W_enc @ grad_b_enc: a mat-vec, not the [N, d_sae] @ W_enc.T
#                          matmul plain autograd runs for grad(sae_in).

FAST_DTYPES = (torch.float32, torch.float64)


def input_side_grads(ctx, g: Tensor, W_enc: Tensor, grad_b_enc: Tensor,
                     g_pre: Callable[[], Tensor]) -> tuple[Tensor, Tensor | None]:
    """(grad b_dec, grad x) of a fast path whose pre-activations are ``(x - b_dec) @ W_enc
    + b_enc``: b_dec's decoder share ``g.sum(0)`` less the encoder's ``W_enc @ grad_b_enc``;
    grad x only when asked (never in training; gradcheck-style tests), from ``g_pre()``."""
    grad_b_dec = g.sum(0) - (W_enc @ grad_b_enc if ctx.apply_b_dec else 0)
    grad_x = -g + g_pre() @ W_enc.T if ctx.needs_input_grad[0] else None
    return grad_b_dec, grad_x


def csr_rows(row_offsets: Tensor, cols: Tensor, values: Tensor, n_cols: int) -> Tensor:
    """A CSR matrix from row offsets [n_rows + 1] and the entries' columns and values."""
    with warnings.catch_warnings():  # "CSR support is in beta": we test what we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_offsets, cols, values, (len(row_offsets) - 1, n_cols),
                                       check_invariants=False)


def by_feature(cols: Tensor, d_sae: int) -> tuple[Tensor, Tensor]:
    """(order that sorts entries by feature, bag offsets [d_sae + 1]) for ``bag_sum``."""
    order = torch.argsort(cols, stable=True)
    return order, bag_offsets(cols, d_sae)


def bag_offsets(groups: Tensor, n_groups: int) -> Tensor:
    """Bag offsets [n_groups + 1] of entries sorted by ``groups``."""
    offsets = torch.zeros(n_groups + 1, dtype=torch.long, device=groups.device)
    torch.cumsum(torch.bincount(groups, minlength=n_groups), 0, out=offsets[1:])
    return offsets


def bag_sum(rows: Tensor, table: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
    """out[i] = sum over entries e of bag i of weights[e] * table[rows[e]]."""
    return F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=weights,
                           include_last_offset=True)


def dead_columns(sae: SAEWeights, dead_mask: Tensor | None,
                 aux_k_coefficient: float) -> Tensor | None:
    """Indices of the dead features AuxK trains, or None when it has nothing to do."""
    if dead_mask is None or aux_k_coefficient <= 0:
        return None
    dead_idx = dead_mask.to(sae.W_dec.device).nonzero().flatten()
    return dead_idx if dead_idx.numel() > 0 else None


def aux_k_loss(sae: SAEWeights, x: Tensor, x_hat: Tensor, pre_dead: Tensor,
               dead_idx: Tensor | None, aux_k_coefficient: float, aux_k: int) -> Tensor:
    """AuxK over the dead columns only (``pre_dead = pre[:, dead_idx]``, differentiable):
    [N, n_dead] work instead of [N, d_sae]; the reference's loss exactly."""
    if dead_idx is None:
        return x_hat.new_zeros(())
    k_aux, scale = _aux_k_scale(dead_idx.numel(), aux_k)
    a_raw, loc = pre_dead.topk(k_aux, dim=1, sorted=False)
    a_dead = torch.zeros_like(pre_dead).scatter(1, loc, a_raw.relu())
    recon = a_dead @ sae.W_dec.index_select(0, dead_idx)
    residual = (x - x_hat).detach()  # a constant target, as in the reference
    return aux_k_coefficient * scale * (recon - residual).pow(2).sum(1).mean()
