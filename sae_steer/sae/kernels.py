"""Training forward passes for ``SAE.training_forward``, and what they return.

``dense_training_forward`` is the plain-autograd reference: easy to read, and what the
tests compare the fast paths against (same losses, same gradients). The kernels read the
SAE through the small ``SAEWeights`` protocol, so this module never imports the SAE class
(``model.py`` imports this one).
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool
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
    fired: Bool[Tensor, " d_sae"]
    """Which features were active on at least one token of the batch."""
    x_hat: Tensor
    """Reconstruction, detached, same shape as the input."""


def step_output(*, mse, sparsity, aux, l0, fired, x_hat, inner=None) -> TrainStepOutput:
    inner = mse.new_zeros(()) if inner is None else inner
    return TrainStepOutput(loss=mse + inner + sparsity + aux, mse_loss=mse,
                           sparsity_loss=sparsity, aux_loss=aux, inner_mse_loss=inner, l0=l0,
                           fired=fired, x_hat=x_hat.detach())


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
        fired = active.any(0)
    return step_output(mse=mse, sparsity=sparsity, aux=aux, l0=l0, fired=fired, x_hat=x_hat,
                       inner=inner)


# ---- fast paths ----------------------------------------------------------------------
# Both are single autograd Functions with hand-written backward passes, so nothing
# [batch, d_sae]-sized is kept for autograd except what we choose to keep. Shared facts:
#   e = x_hat - x,  mse = sum(e^2) / N  =>  dmse/dx_hat = 2e / N
#   sae_in = x - b_dec  =>  the encoder's share of grad b_dec is -(colsum grad_pre) @ W_enc.T
#                          = -W_enc @ grad_b_enc: a mat-vec, not the [N, d_sae] @ W_enc.T
#                          matmul plain autograd runs for grad(sae_in).
# TopK: the k (token, feature) entries per token are the only non-zeros of the codes
# and of their gradient, so decoding is an embedding_bag over k rows of W_dec and every
# weight gradient is a gather-reduce over those entries (never a [N, d_sae] matmul).
# AuxK works on the dead columns only ([N, n_dead]), written in plain autograd.

FAST_DTYPES = (torch.float32, torch.float64)


def input_side_grads(ctx, g: Tensor, W_enc: Tensor, grad_b_enc: Tensor,
                     g_pre: Callable[[], Tensor]) -> tuple[Tensor, Tensor | None]:
    """(grad b_dec, grad x) of a fast path whose pre-activations are ``(x - b_dec) @ W_enc
    + b_enc``: b_dec's decoder share ``g.sum(0)`` less the encoder's ``W_enc @ grad_b_enc``;
    grad x only when asked (never in training; gradcheck-style tests), from ``g_pre()``."""
    grad_b_dec = g.sum(0) - (W_enc @ grad_b_enc if ctx.apply_b_dec else 0)
    grad_x = -g + g_pre() @ W_enc.T if ctx.needs_input_grad[0] else None
    return grad_b_dec, grad_x


def _csr(idx: Tensor, values: Tensor, n_cols: int) -> Tensor:
    n, per_row = idx.shape
    crow = torch.arange(0, n * per_row + 1, per_row, device=idx.device)
    return csr_rows(crow, idx.reshape(-1), values.reshape(-1), n_cols)


def csr_rows(row_offsets: Tensor, cols: Tensor, values: Tensor, n_cols: int) -> Tensor:
    """A CSR matrix from row offsets [n_rows + 1] and the entries' columns and values."""
    with warnings.catch_warnings():  # "CSR support is in beta": we test what we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_offsets, cols, values, (len(row_offsets) - 1, n_cols),
                                       check_invariants=False)


def _rowwise_dots(idx: Tensor, g: Tensor, W_dec: Tensor) -> Tensor:
    """out[b, j] = g[b] . W_dec[idx[b, j]] without gathering [N, k, d_in] rows."""
    pattern = _csr(idx, torch.zeros(idx.shape, dtype=g.dtype, device=g.device), W_dec.shape[0])
    return torch.sparse.sampled_addmm(pattern, g, W_dec.T, beta=0.0).values().view(idx.shape)


def _feature_major(idx: Tensor, d_sae: int) -> tuple[Tensor, Tensor, Tensor]:
    """Regroup (token, slot) entries by feature: (order, token of each entry, offsets).

    With entries sorted by feature, "sum over the tokens that used feature i" becomes
    one bag of an embedding_bag: a gather-reduce kernel that is ~5x faster on CPU than
    a CSR-transpose matmul (which sorts and converts internally) and never builds a
    [N * k, d_in] temporary the way index_add_ over outer products would.
    """
    order, offsets = by_feature(idx.reshape(-1), d_sae)
    return order, torch.div(order, idx.shape[1], rounding_mode="floor"), offsets


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


class _TopKLoss(torch.autograd.Function):
    """mse of a TopK SAE; only the encoder matmul is dense.

    Also returns ``pre[:, dead_idx]`` (differentiable) so AuxK can be written in plain
    autograd over the dead columns only; its gradient joins the encoder grads here.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, k, apply_b_dec, dead_idx):
        ctx.set_materialize_grads(False)
        sae_in = x - b_dec if apply_b_dec else x
        pre = torch.addmm(b_enc, sae_in, W_enc)
        raw, idx = pre.topk(k, dim=1, sorted=False)
        acts = raw.clamp_min(0)
        pre_dead = pre.index_select(1, dead_idx) if dead_idx is not None else pre[:, :0]
        del pre  # the [N, d_sae] matrix is not kept for backward
        x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=acts, mode="sum") + b_dec
        e = x_hat - x
        ctx.apply_b_dec = apply_b_dec
        ctx.save_for_backward(sae_in, W_enc, W_dec, idx, acts, e, dead_idx)
        ctx.mark_non_differentiable(x_hat, idx, acts)
        return e.pow(2).sum(1).mean(), x_hat, idx, acts, pre_dead

    @staticmethod
    def backward(ctx, g_mse, _x_hat, _idx, _acts, g_pre_dead):
        sae_in, W_enc, W_dec, idx, acts, e, dead_idx = ctx.saved_tensors
        n, d_sae = e.shape[0], W_dec.shape[0]
        g = e * (2.0 * g_mse / n) if g_mse is not None else torch.zeros_like(e)  # dL/dx_hat
        g_pre = _rowwise_dots(idx, g, W_dec) * (acts > 0)             # relu'(topk values)
        order, tok, offsets = _feature_major(idx, d_sae)
        g_pre_sorted = g_pre.reshape(-1)[order]
        # grad W_dec[i] = sum_b act[b,i] dL/dx_hat[b]
        # grad W_enc[:, i] = sum_b g_pre[b,i] sae_in[b]
        grad_W_dec = bag_sum(tok, g, offsets, acts.reshape(-1)[order])
        grad_W_enc = bag_sum(tok, sae_in, offsets, g_pre_sorted).T.contiguous()
        grad_b_enc = torch.zeros(d_sae, dtype=g.dtype, device=g.device)
        grad_b_enc.index_add_(0, idx.reshape(-1)[order], g_pre_sorted)
        if g_pre_dead is not None:  # AuxK's gradient, dense over the dead columns only
            grad_W_enc.index_add_(1, dead_idx, sae_in.T @ g_pre_dead)
            grad_b_enc.index_add_(0, dead_idx, g_pre_dead.sum(0))
        grad_b_dec = g.sum(0)
        if ctx.apply_b_dec:
            grad_b_dec = grad_b_dec - W_enc @ grad_b_enc
        grad_x = None
        if ctx.needs_input_grad[0]:  # never in training; kept so gradcheck-style tests pass
            grad_x = -g + _csr(idx, g_pre, d_sae) @ W_enc.T
            if g_pre_dead is not None:
                grad_x = grad_x + g_pre_dead @ W_enc[:, dead_idx].T
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None, None


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


def topk_training_forward(sae: SAEWeights, x: Tensor, dead_mask: Tensor | None,
                          aux_k_coefficient: float, aux_k: int) -> TrainStepOutput:
    x = x.to(sae.dtype)
    if sae.dtype not in FAST_DTYPES:
        return dense_training_forward(sae, x, dead_mask=dead_mask,
                                      aux_k_coefficient=aux_k_coefficient, aux_k=aux_k)
    dead_idx = dead_columns(sae, dead_mask, aux_k_coefficient)
    mse, x_hat, idx, acts, pre_dead = _TopKLoss.apply(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.cfg.k,
        sae.cfg.apply_b_dec_to_input, dead_idx)
    aux = aux_k_loss(sae, x, x_hat, pre_dead, dead_idx, aux_k_coefficient, aux_k)
    with torch.no_grad():
        active = acts > 0
        l0 = active.sum(1).float().mean()
        # a count, not fired[idx[active]] = True: boolean indexing waits for the device
        fired = torch.zeros(sae.d_sae, dtype=torch.long, device=x.device).scatter_add_(
            0, idx.reshape(-1), active.reshape(-1).long()) > 0
    return step_output(mse=mse, sparsity=mse.new_zeros(()), aux=aux, l0=l0,
                   fired=fired, x_hat=x_hat)
