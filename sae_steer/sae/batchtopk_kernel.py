"""The BatchTopK and Matryoshka BatchTopK SAEs' training forward pass.

BatchTopK keeps the ``k * N`` largest activations of a whole batch of N tokens (Bussmann et
al. 2024), so a token may use more or fewer than k features. The kept (token, feature)
entries are listed once, as the relu kernel lists its active ones (``relu_kernel.py``):
decoding is an embedding_bag over them and every gradient a gather-reduce, so the encoder
matmul is the only dense one. Tested equal to ``kernels.dense_training_forward``.

Matryoshka (Bussmann et al. 2025) adds the loss of each inner prefix ``0..w-1`` of the
dictionary reconstructing the input alone. An entry of feature i is in level l when
``widths[l-1] <= i < widths[l]``; level l's partial sum enters the reconstructions of
levels l, l+1, ..., so the gradient reaching an entry is the sum of those levels' errors.
Stacking the L levels' rows (row ``l * N + token``) turns that into the one-level case with
an L-times-taller error table: one sampled matmul and one gather-reduce, as for BatchTopK
(which is the case L = 1).
"""
from __future__ import annotations

import torch
from torch import Tensor

from sae_steer.sae.kernels import (FAST_DTYPES, SAEWeights, TrainStepOutput, aux_k_loss,
                                   bag_offsets, bag_sum, batch_topk, by_feature, csr_rows,
                                   dead_columns, dense_training_forward, step_output)


ROW_CANDIDATES = 4
"""``batch_top`` first keeps each token's ``ROW_CANDIDATES * k`` largest pre-activations."""


def batch_top(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k * N`` largest entries of ``pre [N, d_sae]``: (values, flat indices).

    One topk over all N * d_sae entries with so large a k is slow (3.6 s of a 10 s step at
    N 4,096, d_sae 10,000, k 32 on CPU). Each token's own ``ROW_CANDIDATES * k`` largest, then
    the top of those, is the same set unless some token has every one of its candidates in
    it (it may then have more); that is checked, one host sync, and then the whole batch is
    searched after all.
    """
    n, d_sae = pre.shape
    per_row = ROW_CANDIDATES * k
    if per_row < d_sae:
        row_vals, row_idx = pre.topk(per_row, dim=1, sorted=False)
        vals, pos = row_vals.view(-1).topk(k * n, sorted=False)
        if not bool((row_vals.amin(dim=1) >= vals.min()).any()):
            rows = torch.div(pos, per_row, rounding_mode="floor")
            return vals, rows * d_sae + row_idx.view(-1)[pos]
    return pre.view(-1).topk(k * n, sorted=False)


class _BatchTopKLoss(torch.autograd.Function):
    """(outer mse, summed inner mse) of a (Matryoshka) BatchTopK SAE.

    Also returns ``pre[:, dead_idx]`` (differentiable) for AuxK, as ``topk_kernel._TopKLoss``
    does, and, without gradient, the number of positive kept activations, which features
    have one, and the smallest of them (inf when none: what the inference threshold follows).
    ``boundaries`` is ``widths[:-1]`` as a tensor (empty for BatchTopK: one level).
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, k, boundaries, apply_b_dec, dead_idx):
        ctx.set_materialize_grads(False)
        n, d_sae = x.shape[0], W_dec.shape[0]
        sae_in = x - b_dec if apply_b_dec else x
        pre = torch.addmm(b_enc, sae_in, W_enc)
        # top of pre, then relu: the same entries as top of relu(pre) wherever they differ
        # only among zeros, which decode to nothing and pass no gradient
        raw, flat = batch_top(pre, k)
        pre_dead = pre.index_select(1, dead_idx) if dead_idx is not None else pre[:, :0]
        del pre  # the [N, d_sae] matrix is not kept for backward
        rows, cols = torch.div(flat, d_sae, rounding_mode="floor"), flat % d_sae
        level = torch.bucketize(cols, boundaries, right=True)  # 0 .. L-1
        n_levels = len(boundaries) + 1
        # entries in (level, token) order: rows of the stacked [L * N, .] tables
        stacked = level * n + rows
        order = torch.argsort(stacked)
        stacked, rows, cols, vals = stacked[order], rows[order], cols[order], raw[order].relu()
        row_offsets = bag_offsets(stacked, n_levels * n)
        partial = bag_sum(cols, W_dec, row_offsets, vals).view(n_levels, n, -1)
        x_hats = torch.cumsum(partial, 0) + b_dec  # level l: features below widths[l]
        e = x_hats - x  # [L, N, d_in]
        sq = e.pow(2).sum(-1).mean(-1)  # each level's mse
        ctx.apply_b_dec = apply_b_dec
        ctx.save_for_backward(sae_in, W_enc, W_dec, e, rows, cols, vals, row_offsets, dead_idx)
        active = vals > 0
        n_active = active.sum()
        fires = torch.zeros(d_sae, dtype=torch.long, device=x.device).scatter_add_(
            0, cols, active.long())
        kept_min = torch.where(active, vals, torch.full_like(vals, float("inf"))).min()
        x_hat = x_hats[-1]
        ctx.mark_non_differentiable(x_hat, n_active, fires, kept_min)
        return sq[-1], sq[:-1].sum(), x_hat, pre_dead, n_active, fires, kept_min

    @staticmethod
    def backward(ctx, g_outer, g_inner, _x_hat, g_pre_dead, _n_active, _fires, _min):
        sae_in, W_enc, W_dec, e, rows, cols, vals, row_offsets, dead_idx = ctx.saved_tensors
        n_levels, n = e.shape[0], e.shape[1]
        d_sae = W_dec.shape[0]
        # dL/dx_hat of each level, then G[l] = sum of levels l.. (an entry of level l is in
        # all of their reconstructions)
        weights = torch.zeros(n_levels, dtype=e.dtype, device=e.device)
        if g_outer is not None:
            weights[-1] = g_outer
        if g_inner is not None:
            weights[:-1] += g_inner
        g_levels = e * (2.0 * weights / n)[:, None, None]
        G = torch.flip(torch.cumsum(torch.flip(g_levels, (0,)), 0), (0,))
        table = G.reshape(n_levels * n, -1)
        pattern = csr_rows(row_offsets, cols, torch.zeros_like(vals), d_sae)
        g_pre = torch.sparse.sampled_addmm(pattern, table, W_dec.T, beta=0.0).values()
        g_pre = g_pre * (vals > 0)  # relu'
        order, feat_offsets = by_feature(cols, d_sae)
        stacked_rows = torch.repeat_interleave(
            torch.arange(n_levels * n, device=rows.device), row_offsets.diff())
        # grad W_dec[i] = sum over i's entries of act * G[level, token]
        grad_W_dec = bag_sum(stacked_rows[order], table, feat_offsets, vals[order])
        # grad W_enc[:, i] = sum over i's entries of g_pre * sae_in[token]
        g_pre_sorted = g_pre[order]
        grad_W_enc = bag_sum(rows[order], sae_in, feat_offsets, g_pre_sorted).T.contiguous()
        grad_b_enc = torch.zeros(d_sae, dtype=e.dtype, device=e.device)
        grad_b_enc.index_add_(0, cols, g_pre)
        if g_pre_dead is not None:  # AuxK's gradient, dense over the dead columns only
            grad_W_enc.index_add_(1, dead_idx, sae_in.T @ g_pre_dead)
            grad_b_enc.index_add_(0, dead_idx, g_pre_dead.sum(0))
        grad_b_dec = G[0].sum(0)  # b_dec is in every level's reconstruction
        if ctx.apply_b_dec:
            grad_b_dec = grad_b_dec - W_enc @ grad_b_enc
        grad_x = None
        if ctx.needs_input_grad[0]:  # never in training; kept so gradcheck-style tests pass
            entry_order = torch.argsort(rows, stable=True)
            token_rows = csr_rows(bag_offsets(rows[entry_order], n), cols[entry_order],
                                  g_pre[entry_order], d_sae)
            grad_x = -G[0] + token_rows @ W_enc.T
            if g_pre_dead is not None:
                grad_x = grad_x + g_pre_dead @ W_enc[:, dead_idx].T
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None, None, None


def batchtopk_training_forward(sae: SAEWeights, x: Tensor, dead_mask: Tensor | None,
                               aux_k_coefficient: float, aux_k: int
                               ) -> tuple[TrainStepOutput, Tensor]:
    """The step's losses, and the smallest positive activation it kept (inf when none:
    what the inference threshold follows)."""
    x = x.to(sae.dtype)
    if sae.dtype not in FAST_DTYPES:
        out = dense_training_forward(sae, x, dead_mask=dead_mask,
                                     aux_k_coefficient=aux_k_coefficient, aux_k=aux_k)
        with torch.no_grad():
            acts = batch_topk(sae.pre_activations(x), sae.cfg.k)
            kept_min = torch.where(acts > 0, acts, torch.full_like(acts, float("inf"))).min()
        return out, kept_min
    widths = sae.cfg.matryoshka_widths or (sae.d_sae,)
    dead_idx = dead_columns(sae, dead_mask, aux_k_coefficient)
    mse, inner, x_hat, pre_dead, n_active, fires, kept_min = _BatchTopKLoss.apply(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.cfg.k,
        torch.tensor(widths[:-1], dtype=torch.long, device=x.device),
        sae.cfg.apply_b_dec_to_input, dead_idx)
    aux = aux_k_loss(sae, x, x_hat, pre_dead, dead_idx, aux_k_coefficient, aux_k)
    l0 = n_active.float() / x.shape[0]
    return step_output(mse=mse, sparsity=mse.new_zeros(()), aux=aux, l0=l0, fires=fires,
                       x_hat=x_hat, inner=inner), kept_min
