"""The bounded per-feature state a feature search merges every batch into.

Per feature we keep

- the top-k excerpts ranked by the feature's max activation in the excerpt (one
  candidate per text: its peak token), with ``context_left``/``context_right`` tokens
  around the peak -- a vectorized top-k merge per batch, no Python heaps;
- ``samples_per_band`` random excerpts from each band (0, max/B], ..., ((B-1)max/B, max]
  (reservoir sampling: each candidate gets a random key and a band gets the largest
  keys). "Examples that don't activate quite as strongly as the top 10" are what showed
  the seed's feature 6 meant "dangerous things", not just "fire". The band is judged
  against the running max, which settles after a few batches; ``FeatureSearch`` files
  each sample under its band of the final max;
- firing count (density), sum of activations, a histogram over log10-spaced bins;
- the tokens it fires on, by summed activation (lossy counting, see ``_merge_tokens``).

Memory is O(d_sae x (k + bands x samples) x window) whatever the number of tokens
scanned: the tokens x d_sae activation matrix is never kept.
"""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sae_steer.config import SearchConfig
from sae_steer.inspect.results import FeatureSearch

NEG_INF = float("-inf")
DENSE_TOKEN_TABLE = 1 << 22
"""Largest d_sae x d_vocab counted exactly per (feature, token) (64 MiB of float64 x 2)."""
TOKEN_FLUSH = 8
"""Otherwise pending (feature, token) entries are merged at TOKEN_FLUSH x d_sae x n_top_tokens."""


class SearchState:
    """The bounded per-feature state one search merges every batch into.

    All tensors have a leading d_sae (or d_sae x n_bands) dimension and fixed size:
    ``nbytes()`` is the same after 10 texts and after 10 million.
    """

    def __init__(self, d_sae: int, d_vocab: int, cfg: SearchConfig, device: torch.device | str):
        self.cfg, self.d_sae, self.d_vocab = cfg, d_sae, d_vocab
        F, K, B, S, C = d_sae, cfg.k, cfg.n_bands, cfg.samples_per_band, cfg.n_top_tokens
        W = cfg.context_left + 1 + cfg.context_right
        dev = torch.device(device)
        self.offsets = torch.arange(-cfg.context_left, cfg.context_right + 1, device=dev)

        def slots(rows: int, n: int) -> dict[str, Tensor]:
            return {"key": torch.full((rows, n), NEG_INF, device=dev),
                    "val": torch.zeros(rows, n, device=dev),
                    "seq": torch.full((rows, n), -1, dtype=torch.long, device=dev),
                    "tok": torch.full((rows, n, W), -1, dtype=torch.int32, device=dev),
                    "act": torch.zeros(rows, n, W, device=dev)}

        self.top = slots(F, K)         # key == val: the excerpt's peak activation
        self.band = slots(F * B, S)    # row f*B + b: band b of feature f; key is random
        self.max_act = torch.zeros(F, device=dev)
        self.n_fire = torch.zeros(F, dtype=torch.long, device=dev)
        self.sum_act = torch.zeros(F, dtype=torch.float64, device=dev)
        self.hist = torch.zeros(F, cfg.hist_bins, dtype=torch.long, device=dev)
        self.tok_id = torch.full((F, C), -1, dtype=torch.long, device=dev)
        self.tok_sum = torch.zeros(F, C, device=dev)
        self.tok_cnt = torch.zeros(F, C, dtype=torch.long, device=dev)
        self._pending: list[tuple[Tensor, Tensor]] = []  # (key, act) not yet merged
        self._pending_n = 0
        # Small SAE x vocabulary (the offline world: 512 x 353): count every (feature,
        # token) pair exactly in a fixed table, no sorting. Large ones (10k x 50k) use the
        # bounded top-C table with lossy merges (_merge_tokens).
        self._table = (torch.zeros(2, F * d_vocab, dtype=torch.float64, device=dev)
                       if F * d_vocab <= DENSE_TOKEN_TABLE else None)
        self.n_tokens = 0
        self.n_texts = 0
        self.peak_nbytes = 0
        self.generator = torch.Generator(device=dev).manual_seed(cfg.seed)

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (pending token entries included)."""
        tensors = [*self.top.values(), *self.band.values(), self.max_act, self.n_fire,
                   self.sum_act, self.hist, self.tok_id, self.tok_sum, self.tok_cnt,
                   *(t for pair in self._pending for t in pair),
                   *([self._table] if self._table is not None else [])]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def update(self, tokens: Int[Tensor, "b pos"], mask: Bool[Tensor, "b pos"],
               feats: Float[Tensor, "b pos d_sae"], *, inplace: bool = False) -> None:
        """Merge one batch: ``mask`` marks real tokens (BOS included, padding not).

        ``inplace=True`` lets the search zero BOS/padding in ``feats`` itself instead of
        in a copy (it owns the tensor; a copy of tokens x d_sae is a real cost).
        """
        valid = mask.clone()
        if self.cfg.exclude_bos:
            valid[:, 0] = False
        feats = feats.float()
        if not inplace:
            feats = feats.clone()
        # Negative values (not from ReLU SAEs, but possible) count as "did not fire".
        feats.masked_fill_(~valid[..., None], 0.0).clamp_min_(0.0)
        tokens = tokens.masked_fill(~valid, -1)
        self._counts(tokens, feats)
        vmax, vpos = feats.max(dim=1)                         # [b, F]: each text's peak
        vmax_T, vpos_T = vmax.T.contiguous(), vpos.T.contiguous()  # [F, b]
        self.max_act = torch.maximum(self.max_act, vmax_T.max(dim=1).values)
        fired = vmax_T > 0
        batch = (tokens, feats, vmax_T, vpos_T)
        F, dev = self.d_sae, vmax_T.device
        top_key = vmax_T.masked_fill(~fired, NEG_INF)
        self._merge(self.top, top_key, torch.arange(F, device=dev), batch)

        B = self.cfg.n_bands
        band = (vmax_T * B / self.max_act.clamp_min(1e-12)[:, None]).ceil().long().clamp(1, B) - 1
        key = torch.rand(vmax_T.shape, generator=self.generator, device=dev)
        cand = torch.full((F, B, vmax_T.shape[1]), NEG_INF, device=dev)
        cand.scatter_(1, band[:, None, :], key.masked_fill(~fired, NEG_INF)[:, None, :])
        row_feat = torch.arange(F, device=dev).repeat_interleave(B)
        self._merge(self.band, cand.view(F * B, -1), row_feat, batch)
        self.n_tokens += int(valid.sum())
        self.n_texts += tokens.shape[0]
        self.peak_nbytes = max(self.peak_nbytes, self.nbytes())

    def _counts(self, tokens: Tensor, feats: Tensor) -> None:
        """Density, sum, histogram and fires-on tokens from the batch's non-zero entries."""
        F, H = self.d_sae, self.cfg.hist_bins
        flat = feats.reshape(-1, F)
        rows, f = flat.nonzero(as_tuple=True)
        vals = flat[rows, f]
        self.n_fire += torch.bincount(f, minlength=F)
        self.sum_act.index_add_(0, f, vals.double())
        lo, hi = self.cfg.hist_log10_min, self.cfg.hist_log10_max
        bins = ((vals.log10() - lo) * (H / (hi - lo))).floor().long().clamp(0, H - 1)
        self.hist += torch.bincount(f * H + bins, minlength=F * H).view(F, H)
        keys = f * self.d_vocab + tokens.reshape(-1)[rows].long()
        if self._table is not None:
            self._table[0].index_add_(0, keys, vals.double())
            self._table[1].index_add_(0, keys, torch.ones_like(vals, dtype=torch.float64))
            return
        self._pending.append((keys, vals))
        self._pending_n += len(vals)
        # Merge lazily: one sort per TOKEN_FLUSH x (d_sae x n_top_tokens) entries, bounded.
        if self._pending_n > TOKEN_FLUSH * self.tok_id.numel():
            self._merge_tokens()

    def _merge_tokens(self) -> None:
        """Fold pending (feature, token, act) entries into each feature's top-C tokens.

        Lossy counting: after each merge only the C tokens with the largest summed
        activation survive per feature, so the table is exact when a feature fires on at
        most C distinct tokens and otherwise may undercount tokens that were pruned
        early. Ranked by summed activation ("what it fires on, how much in total").
        """
        F, C, V = self.d_sae, self.cfg.n_top_tokens, self.d_vocab
        if self._table is not None:  # exact: the C largest sums straight from the table
            sums, ids = self._table[0].view(F, V).topk(min(C, V), dim=1)
            C = ids.shape[1]
            self.tok_sum[:, :C] = sums.float()
            self.tok_cnt[:, :C] = self._table[1].view(F, V).gather(1, ids).long()
            self.tok_id[:, :C] = ids.masked_fill(sums <= 0, -1)
            return
        if not self._pending:
            return
        held = self.tok_id >= 0
        hf = torch.nonzero(held, as_tuple=True)[0]
        keys = torch.cat([k for k, _ in self._pending] + [hf * V + self.tok_id[held]])
        sums = torch.cat([v for _, v in self._pending] + [self.tok_sum[held]])
        cnts = torch.cat([torch.ones(self._pending_n, dtype=torch.long, device=keys.device),
                          self.tok_cnt[held]])
        self._pending, self._pending_n = [], 0
        ukey, inv = torch.unique(keys, return_inverse=True)
        usum = torch.zeros(len(ukey), device=keys.device).index_add_(0, inv, sums)
        ucnt = torch.zeros(len(ukey), dtype=torch.long, device=keys.device).index_add_(0, inv, cnts)
        order = torch.argsort(usum, descending=True)
        order = order[torch.argsort(ukey[order] // V, stable=True)]  # by feature, then sum desc
        feat = ukey[order] // V
        rank = torch.arange(len(order), device=keys.device) - torch.searchsorted(feat, feat)
        keep = rank < C
        o, f, r = order[keep], feat[keep], rank[keep]
        self.tok_id.fill_(-1), self.tok_sum.zero_(), self.tok_cnt.zero_()
        self.tok_id[f, r], self.tok_sum[f, r], self.tok_cnt[f, r] = ukey[o] % V, usum[o], ucnt[o]

    def _merge(self, store: dict[str, Tensor], cand_key: Float[Tensor, "rows b"],
               row_feat: Int[Tensor, " rows"], batch: tuple[Tensor, ...]) -> None:
        """Keep, per row, the slots with the largest keys among old slots and candidates.

        Slots are unordered (sorted once at the end), so only replaced slots are
        written: after warm-up few candidates win, and the window gather is tiny.
        """
        tokens, feats, vmax_T, vpos_T = batch
        keys = store["key"]
        rows, S = keys.shape
        top_key, idx = torch.cat([keys, cand_key], dim=1).topk(S, dim=1)
        is_new = (idx >= S) & (top_key > NEG_INF)
        if not bool(is_new.any()):
            return
        # Which old slots survive; every other slot is free for a new candidate.
        kept = torch.zeros(rows, S + 1, dtype=torch.bool, device=keys.device)
        kept.scatter_(1, torch.where(idx < S, idx, S), True)
        kept = kept[:, :S]
        keys.masked_fill_(~kept, NEG_INF)
        free = torch.argsort(kept.to(torch.int8), dim=1, stable=True)  # free slots first
        r, j = torch.nonzero(is_new, as_tuple=True)
        slot = free[r, (torch.cumsum(is_new, dim=1) - 1)[r, j]]
        col = idx[r, j] - S                                   # the candidate's text in batch
        f = row_feat.to(keys.device)[r]
        keys[r, slot] = top_key[r, j]
        store["val"][r, slot] = vmax_T[f, col]
        store["seq"][r, slot] = self.n_texts + col
        pos = vpos_T[f, col][:, None] + self.offsets           # [n_new, W]
        inside = (pos >= 0) & (pos < tokens.shape[1])
        pos = pos.clamp(0, tokens.shape[1] - 1)
        tok = tokens[col[:, None], pos].masked_fill(~inside, -1)
        store["tok"][r, slot] = tok.to(torch.int32)
        store["act"][r, slot] = feats[col[:, None], pos, f[:, None]].masked_fill(tok < 0, 0.0)

    def finish(self, meta: dict[str, Any]) -> FeatureSearch:
        """Sort every row's slots by key and hand the state over as CPU tensors."""
        self._merge_tokens()
        out: dict[str, Tensor] = {}
        for name, store in (("top", self.top), ("band", self.band)):
            order = store["key"].argsort(dim=1, descending=True)
            for field, t in store.items():
                idx = order if t.dim() == 2 else order[..., None].expand_as(t)
                out[f"{name}_{field}"] = t.gather(1, idx).cpu()
        F, B, S = self.d_sae, self.cfg.n_bands, self.cfg.samples_per_band
        for field in ("key", "val", "seq"):
            out[f"band_{field}"] = out[f"band_{field}"].view(F, B * S)
        for field in ("tok", "act"):
            out[f"band_{field}"] = out[f"band_{field}"].view(F, B * S, -1)
        out.update(max_act=self.max_act.cpu(), n_fire=self.n_fire.cpu(),
                   sum_act=self.sum_act.cpu(), hist=self.hist.cpu(), tok_id=self.tok_id.cpu(),
                   tok_sum=self.tok_sum.cpu(), tok_cnt=self.tok_cnt.cpu())
        meta = dict(meta, n_tokens=self.n_tokens, n_texts=self.n_texts, d_sae=self.d_sae,
                    d_vocab=self.d_vocab, state_peak_bytes=self.peak_nbytes)
        return FeatureSearch(cfg=self.cfg, meta=meta, tensors=out)
