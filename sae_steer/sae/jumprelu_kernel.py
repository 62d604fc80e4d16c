"""The JumpReLU SAE's training forward pass: MSE plus the L0 ("step") penalty, with the
straight-through estimators of Rajamanoharan et al. 2024 (``kernels.JumpReLUSTE`` and
``kernels.StepSTE``, SAELens's defaults: the estimators reach the thresholds only).

The thresholds' pseudo-gradients live in a band ``|pre - threshold| < bandwidth / 2``, so
the backward pass needs ``dL/dfeats`` at the active entries and at the band's entries
only. Once the penalty has made the codes sparse, those entries are listed once and the
step works on them as the relu kernel does (``relu_kernel.py``): the encoder matmul is the
only dense one. While they are dense (early in training) it uses dense matmuls. Tested
equal to ``kernels.dense_training_forward`` on both branches.
"""
from __future__ import annotations

import torch
from torch import Tensor

from sae_steer.sae.kernels import (FAST_DTYPES, SAEWeights, TrainStepOutput, bag_offsets, bag_sum,
                                   by_feature, csr_rows, input_side_grads, step_output)
from sae_steer.sae.relu_kernel import RELU_SPARSE_MAX_DENSITY


class _JumpReLULoss(torch.autograd.Function):
    """(mse, L0 penalty) of a JumpReLU SAE, with SAELens's straight-through estimators."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, threshold, l0_coefficient, bandwidth,
                apply_b_dec):
        n, d_sae = x.shape[0], W_dec.shape[0]
        sae_in = x - b_dec if apply_b_dec else x
        pre = torch.addmm(b_enc, sae_in, W_enc)
        gap = pre - threshold
        active = gap > 0
        band = gap.abs() < bandwidth / 2  # where rectangle((pre - threshold) / bandwidth) = 1
        needed = active | band
        # one host sync per step, as the relu kernel's: the branch depends on it
        sparse = (pre.dtype in FAST_DTYPES
                  and int(torch.count_nonzero(needed)) <= RELU_SPARSE_MAX_DENSITY * pre.numel())
        if sparse:
            rows, cols = needed.nonzero(as_tuple=True)  # row-major: token by token
            gap_e = gap[rows, cols]
            act_e, band_e = gap_e > 0, gap_e.abs() < bandwidth / 2
            vals = pre[rows, cols] * act_e
            del pre, gap, active, band, needed  # nothing [N, d_sae] is kept for backward
            row_offsets = bag_offsets(rows, n)
            x_hat = bag_sum(cols, W_dec, row_offsets, vals) + b_dec
            zeros = torch.zeros(d_sae, dtype=x.dtype, device=x.device)
            n_fired = zeros.index_add(0, cols, act_e.to(x.dtype))
            band_count = zeros.index_add(0, cols, band_e.to(x.dtype))
            saved = (rows, cols, vals, act_e, band_e, row_offsets)
        else:
            feats = pre * active
            x_hat = torch.addmm(b_dec, feats, W_dec)
            n_fired = active.sum(0, dtype=x.dtype)
            band_count = band.sum(0, dtype=x.dtype)
            saved = (feats, active, band)
        e = x_hat - x
        mse = e.pow(2).sum(1).mean()
        l0 = n_fired.sum() / n
        ctx.l0_coefficient, ctx.bandwidth = l0_coefficient, bandwidth
        ctx.apply_b_dec, ctx.sparse = apply_b_dec, sparse
        ctx.save_for_backward(sae_in, W_enc, W_dec, threshold, e, band_count, *saved)
        ctx.mark_non_differentiable(x_hat, n_fired, l0)
        return mse, l0_coefficient * l0, x_hat, n_fired, l0

    @staticmethod
    def backward(ctx, g_mse, g_pen, _x_hat, _n_fired, _l0):
        sae_in, W_enc, W_dec, threshold, e, band_count, *saved = ctx.saved_tensors
        n, d_sae = e.shape[0], W_dec.shape[0]
        bw = ctx.bandwidth
        g = e * (2.0 * g_mse / n)  # dL/dx_hat
        # the penalty's estimator: -(1 / bw) per band entry, times dL/dpenalty-per-token
        grad_threshold = -(g_pen * ctx.l0_coefficient / (n * bw)) * band_count
        if ctx.sparse:
            rows, cols, vals, act_e, band_e, row_offsets = saved
            pattern = csr_rows(row_offsets, cols, torch.zeros_like(vals), d_sae)
            g_feats = torch.sparse.sampled_addmm(pattern, g, W_dec.T, beta=0.0).values()
            g_pre = g_feats * act_e
            # the mse's estimator: -(threshold / bw) * dL/dfeats at the band's entries
            grad_threshold = grad_threshold - (threshold / bw) * torch.zeros_like(
                threshold).index_add_(0, cols, g_feats * band_e)
            order, feat_offsets = by_feature(cols, d_sae)
            tok = rows[order]
            grad_W_dec = bag_sum(tok, g, feat_offsets, vals[order])
            grad_W_enc = bag_sum(tok, sae_in, feat_offsets, g_pre[order]).T.contiguous()
            grad_b_enc = torch.zeros_like(threshold).index_add_(0, cols, g_pre)
        else:
            feats, active, band = saved
            g_feats = g @ W_dec.T
            grad_threshold = grad_threshold - (threshold / bw) * (g_feats * band).sum(0)
            g_pre = g_feats.mul_(active)
            grad_W_dec = feats.T @ g
            grad_W_enc = sae_in.T @ g_pre
            grad_b_enc = g_pre.sum(0)
        grad_b_dec, grad_x = input_side_grads(ctx, g, W_enc, grad_b_enc, lambda: (
            csr_rows(row_offsets, cols, g_pre, d_sae) if ctx.sparse else g_pre))
        return (grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, grad_threshold,
                None, None, None)


def jumprelu_training_forward(sae: SAEWeights, x: Tensor, l0_coefficient: float,
                              bandwidth: float) -> TrainStepOutput:
    x = x.to(sae.dtype)
    mse, penalty, x_hat, n_fired, l0 = _JumpReLULoss.apply(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold, float(l0_coefficient),
        float(bandwidth), sae.cfg.apply_b_dec_to_input)
    return step_output(mse=mse, sparsity=penalty, aux=mse.new_zeros(()), l0=l0,
                       fires=n_fired, x_hat=x_hat)
