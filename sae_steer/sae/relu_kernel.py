"""The ReLU SAE's training forward pass: dense while the codes are dense, sparse after.

The L1 warm-up starts from dense codes (about half the features fire on a random
initialisation); once the penalty has made them sparse, the step works on the active
(token, feature) entries only, as the topk kernel (``kernels.py``) does. Tested equal to
``kernels.dense_training_forward`` on both branches.
"""
from __future__ import annotations

import torch
from torch import Tensor

from sae_steer.sae.kernels import (FAST_DTYPES, SAEWeights, TrainStepOutput, bag_offsets, bag_sum,
                                   by_feature, csr_rows, input_side_grads, step_output)

RELU_SPARSE_MAX_DENSITY = 0.08
"""Above this fraction of active (token, feature) pairs, relu uses dense matmuls: on
CPU (d_in 768, 10,000 features, batch 4,096) the gather-reduce path costs less than the
dense one up to ~10 % density and ~1.7x less than CSR matmuls below 3 %."""


class _ReluLoss(torch.autograd.Function):
    """(mse, l1 penalty) of a ReLU SAE.

    Saves one encoder-side matmul over plain autograd (grad b_dec via a mat-vec), and
    once training has made the codes sparse (density <= RELU_SPARSE_MAX_DENSITY, checked
    per batch) works as the topk path does: the active (token, feature) entries are listed
    once, decoding is an embedding_bag over them and every gradient a gather-reduce, so
    the encoder matmul is the only dense one left.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, l1, apply_b_dec):
        n = x.shape[0]
        sae_in = x - b_dec if apply_b_dec else x
        feats = torch.addmm(b_enc, sae_in, W_enc).relu_()
        n_active = int(torch.count_nonzero(feats))
        sparse = feats.dtype in FAST_DTYPES and n_active <= RELU_SPARSE_MAX_DENSITY * feats.numel()
        norms = W_dec.norm(dim=1)
        if sparse:
            rows, cols = feats.nonzero(as_tuple=True)  # row-major: token by token
            vals = feats[rows, cols]
            del feats  # the [N, d_sae] matrix is not kept for backward
            row_offsets = bag_offsets(rows, n)
            x_hat = bag_sum(cols, W_dec, row_offsets, vals) + b_dec
            col_sum = torch.zeros_like(norms).index_add_(0, cols, vals)
            fires = torch.bincount(cols, minlength=len(norms))
            saved = (rows, cols, vals, row_offsets)
        else:
            x_hat = torch.addmm(b_dec, feats, W_dec)
            col_sum = feats.sum(0)
            fires = (feats > 0).sum(0)
            saved = (feats,)
        e = x_hat - x
        mse = e.pow(2).sum(1).mean()
        penalty = l1 * (col_sum @ norms) / n
        ctx.l1, ctx.apply_b_dec, ctx.sparse = l1, apply_b_dec, sparse
        ctx.save_for_backward(sae_in, W_enc, W_dec, e, norms, col_sum, *saved)
        ctx.mark_non_differentiable(x_hat, fires)
        return mse, penalty, x_hat, fires, mse.new_tensor(n_active / n)

    @staticmethod
    def backward(ctx, g_mse, g_pen, _x_hat, _fires, _l0):
        sae_in, W_enc, W_dec, e, norms, col_sum, *saved = ctx.saved_tensors
        n, d_sae = e.shape[0], W_dec.shape[0]
        g = e * (2.0 * g_mse / n)                            # dL/dx_hat
        pen = g_pen * ctx.l1 / n                      # dL/dfeats from the penalty: pen * norms
        # d penalty / d W_dec[i] = pen * col_sum[i] * W_dec[i] / ||W_dec[i]||
        grad_W_dec = (pen * col_sum / norms.clamp_min(1e-12))[:, None] * W_dec
        if ctx.sparse:
            rows, cols, vals, row_offsets = saved
            pattern = csr_rows(row_offsets, cols, torch.zeros_like(vals), d_sae)
            # dL/dfeats at the active entries: g[token] . W_dec[feature] + the penalty's share
            g_vals = torch.sparse.sampled_addmm(pattern, g, W_dec.T, beta=0.0).values()
            g_vals = g_vals + pen * norms[cols]
            order, feat_offsets = by_feature(cols, d_sae)
            tok = rows[order]
            # grad W_dec[i] = sum_b feats[b,i] g[b];  grad W_enc[:, i] = sum_b g_pre[b,i] sae_in[b]
            grad_W_dec += bag_sum(tok, g, feat_offsets, vals[order])
            grad_W_enc = bag_sum(tok, sae_in, feat_offsets, g_vals[order]).T.contiguous()
            grad_b_enc = torch.zeros_like(norms).index_add_(0, cols, g_vals)
        else:
            (codes,) = saved
            grad_W_dec += codes.T @ g
            g_pre = torch.addmm(pen * norms, g, W_dec.T).mul_(codes > 0)
            grad_W_enc = sae_in.T @ g_pre
            grad_b_enc = g_pre.sum(0)
        grad_b_dec, grad_x = input_side_grads(ctx, g, W_enc, grad_b_enc, lambda: (
            csr_rows(row_offsets, cols, g_vals, d_sae) if ctx.sparse else g_pre))
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None


def relu_training_forward(sae: SAEWeights, x: Tensor, l1_coefficient: float) -> TrainStepOutput:
    x = x.to(sae.dtype)
    mse, penalty, x_hat, fires, l0 = _ReluLoss.apply(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, float(l1_coefficient),
        sae.cfg.apply_b_dec_to_input)
    return step_output(mse=mse, sparsity=penalty, aux=mse.new_zeros(()), l0=l0,
                   fires=fires, x_hat=x_hat)
