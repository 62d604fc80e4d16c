"""What a feature search found, per feature: excerpts, density, histogram, top tokens.

``FeatureSearch`` holds CPU tensors (``state.py`` fills them) plus JSON metadata, and
saves as ``search.safetensors`` + ``search.json``. The JSON records a hash of the SAE's
weights, so results computed for another SAE are refused on load instead of silently
describing the wrong features.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sae_steer.config import SearchConfig
from sae_steer.fingerprint import model_fingerprint, sae_fingerprint
from sae_steer.fsutil import atomic_path, write_json_atomic
from sae_steer.lm import display_tokens
from sae_steer.sae import feature_index

FORMAT_VERSION = 1


@dataclasses.dataclass
class Excerpt:
    """A window of one text around the token where a feature peaked."""

    feature: int
    text_index: int
    """Position of the text in the searched stream."""
    peak_act: float
    """The feature's max activation in this text (what the excerpt is ranked by)."""
    token_ids: list[int]
    acts: list[float]
    """The feature's activation on each token of the window."""
    band: int | None = None
    """For band samples: 0-based band of the final max (0 = lowest); None for top-k."""
    str_tokens: list[str] | None = None
    """Display strings (filled when a model/tokenizer is given)."""


@dataclasses.dataclass
class FeatureSearch:
    """Search results for every feature of one SAE; see ``search.search_features``."""

    cfg: SearchConfig
    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    # ---- whole-SAE views ------------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return int(self.meta["d_sae"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def density(self) -> Tensor:
        """Fraction of scanned tokens on which each feature fired, [d_sae]."""
        return self.tensors["n_fire"].double() / max(self.n_tokens, 1)

    def alive(self) -> list[int]:
        """The features that fired at least once in the search, in index order."""
        return [int(i) for i in (self.tensors["n_fire"] > 0).nonzero().flatten()]

    @property
    def max_act(self) -> Tensor:
        return self.tensors["max_act"]

    @property
    def mean_act(self) -> Tensor:
        """Mean activation over the tokens where the feature fired (0 if it never did)."""
        return self.tensors["sum_act"] / self.tensors["n_fire"].clamp_min(1)

    def hist_edges(self) -> Tensor:
        """Bin edges (activation values, log10-spaced), hist_bins + 1 of them."""
        c = self.cfg
        return torch.logspace(c.hist_log10_min, c.hist_log10_max, c.hist_bins + 1,
                              dtype=torch.float64)

    # ---- one feature ------------------------------------------------------------------
    def check_feature(self, feature: Any) -> int:
        """The index as an int, or a ValueError saying what is wrong with it."""
        i = feature_index(feature, self.d_sae)
        if int(self.tensors["n_fire"][i]) == 0:
            raise ValueError(f"feature {i} never fired on {self.n_tokens:,} tokens "
                             f"({self.meta['n_texts']:,} texts): it is dead on this text set")
        return i

    def _excerpts(self, prefix: str, i: int, model) -> list[Excerpt]:
        t = self.tensors
        out = []
        for key, val, seq, tok, act in zip(t[f"{prefix}_key"][i], t[f"{prefix}_val"][i],
                                           t[f"{prefix}_seq"][i], t[f"{prefix}_tok"][i],
                                           t[f"{prefix}_act"][i]):
            if not math.isfinite(float(key)):
                continue  # an empty slot
            keep = tok >= 0
            ids = tok[keep].tolist()
            out.append(Excerpt(feature=i, text_index=int(seq), peak_act=float(val),
                               token_ids=ids, acts=act[keep].tolist(),
                               str_tokens=display_tokens(model, ids) if model is not None else None))
        return out

    def top_excerpts(self, feature: Any, model=None) -> list[Excerpt]:
        """Up to k excerpts, strongest first (pass ``model`` to get display strings)."""
        return self._excerpts("top", self.check_feature(feature), model)

    def band_excerpts(self, feature: Any, model=None, *, exclude_top: bool = True) -> list[Excerpt]:
        """Random excerpts from each activation band of the final max, strongest band first.

        Band b holds peaks in (b/B * max, (b+1)/B * max]; texts already among the top-k
        are left out by default, so these are the "not quite as strong" examples.
        """
        i = self.check_feature(feature)
        top = {int(s) for s in self.tensors["top_seq"][i]} if exclude_top else set()
        B, mx = self.cfg.n_bands, float(self.max_act[i])
        out = []
        for ex in self._excerpts("band", i, model):
            if ex.text_index in top:
                continue
            ex.band = min(B - 1, max(0, math.ceil(B * ex.peak_act / mx - 1e-9) - 1))
            out.append(ex)
        return sorted(out, key=lambda e: -e.peak_act)

    def top_token_ids(self, feature: Any, n: int = 10) -> list[int]:
        """Ids of the tokens the feature fires on most (by summed activation), best first."""
        return [int(self.tensors["tok_id"][self.check_feature(feature)][j])
                for j in self._top_order(feature, n)]

    def _top_order(self, feature: Any, n: int) -> list[int]:
        i = self.check_feature(feature)
        ids, sums = self.tensors["tok_id"][i], self.tensors["tok_sum"][i]
        return [j for j in sums.argsort(descending=True).tolist() if int(ids[j]) >= 0][:n]

    def top_tokens(self, feature: Any, model=None, n: int = 10) -> list[tuple[str, float, int]]:
        """``(token, summed activation, count)`` for the tokens the feature fires on most."""
        i = self.check_feature(feature)
        ids, sums, cnts = (self.tensors[k][i] for k in ("tok_id", "tok_sum", "tok_cnt"))
        order = self._top_order(feature, n)
        names = [display_tokens(model, [int(ids[j])])[0] if model is not None
                 else str(int(ids[j])) for j in order]
        return [(name, float(sums[j]), int(cnts[j])) for name, j in zip(names, order)]

    def histogram(self, feature: Any) -> tuple[Tensor, Tensor]:
        """``(edges [bins+1], counts [bins])`` of the feature's non-zero activations."""
        i = self.check_feature(feature)
        return self.hist_edges(), self.tensors["hist"][i]

    # ---- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``search.safetensors`` then ``search.json`` (the JSON marks completion)."""
        path = Path(path)
        with atomic_path(path / "search.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp))
        write_json_atomic(path / "search.json", {"format_version": FORMAT_VERSION,
                                                 "cfg": self.cfg.to_dict(), "meta": self.meta})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, sae=None, model=None) -> FeatureSearch:
        """Load saved results; with ``sae``/``model``, refuse results computed for others."""
        path = Path(path)
        if not (path / "search.json").exists() or not (path / "search.safetensors").exists():
            raise FileNotFoundError(f"no saved feature search in {path} (expected search.json "
                                    "and search.safetensors; run search_features and .save())")
        data = json.loads((path / "search.json").read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} holds search format {data.get('format_version')}, this "
                             f"code reads {FORMAT_VERSION}: delete it and search again")
        result = cls(cfg=SearchConfig.from_dict(data["cfg"]), meta=data["meta"],
                     tensors=load_file(str(path / "search.safetensors")))
        if sae is not None:
            result.check_sae(sae, where=str(path))
        if model is not None:
            result.check_model(model, where=str(path))
        return result

    def check_model(self, model, where: str = "these results") -> None:
        """ValueError unless the results were computed with this model (and tokenizer)."""
        saved, have = self.meta.get("model_hash"), model_fingerprint(model)
        if saved is not None and saved != have:
            raise ValueError(
                f"the feature search in {where} was computed with a different model or "
                f"tokenizer (hash {saved[:12]}, this model's is {have[:12]}): its token ids "
                "would decode to the wrong words; rerun search_features with this model")

    def check_sae(self, sae, where: str = "these results") -> None:
        """ValueError unless the results were computed for exactly this SAE's weights."""
        have = sae_fingerprint(sae)
        if have != self.meta["sae_hash"]:
            raise ValueError(
                f"the feature search in {where} was computed for a different SAE (weights hash "
                f"{self.meta['sae_hash'][:12]}, this SAE's is {have[:12]}); rerun "
                "search_features for this SAE or load the matching one")
