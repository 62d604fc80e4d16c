"""A feature card: everything we know about one feature, as data.

``feature_card(search, model, sae, i)`` collects excerpts, density, histogram, the
tokens it fires on and the tokens its decoder row promotes/suppresses;
``interesting_features`` gives table rows for a whole SAE. Rendering them (text, HTML,
plots, the card widget) is ``sae_steer.ui``'s job.
"""
from __future__ import annotations

import dataclasses
import math

from jaxtyping import Float
from torch import Tensor

from sae_steer.inspect.results import Excerpt, FeatureSearch
from sae_steer.lm import display_tokens


@dataclasses.dataclass
class FeatureCard:
    feature: int
    n_tokens: int
    density: float
    """Fraction of scanned tokens where the feature fired."""
    max_act: float
    mean_act: float
    """Mean activation over the tokens where it fired."""
    top: list[Excerpt]
    bands: list[Excerpt]
    """Samples from lower activation bands (Excerpt.band: 0 = lowest tenth of the max)."""
    n_bands: int
    hist_edges: list[float]
    hist_counts: list[int]
    fires_on: list[tuple[str, float, int]]
    """(token, summed activation, count): the tokens it fires on most."""
    promotes: list[tuple[str, float]]
    """Tokens whose logits the decoder row raises most (direct path, see logit_effects)."""
    suppresses: list[tuple[str, float]]


def unembed_direction(model, direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_vocab"]:
    """How adding ``direction`` to the residual stream moves each logit, directly.

    ``W_dec[i] @ W_U`` through the final layer norm, as far as it can be known without a
    particular input: LayerNorm subtracts the mean over d_model (so we centre the
    direction), multiplies by its weight ``ln_final.w`` (applied here when the model has
    one; TransformerLens folds it into ``W_U`` when ``fold_ln`` was used) and divides by
    the residual's norm, a positive per-token scale we drop -- it rescales all logits
    alike, so the ranking of tokens does not depend on it. Approximated away: every
    layer after the SAE's hook (the direction is read as if it went straight to the
    unembedding) and ``b_U`` (a constant per token that the direction does not change).
    """
    d = direction.detach().to(device=model.W_U.device, dtype=model.W_U.dtype)
    norm = model.cfg.normalization_type
    if norm in ("LN", "LNPre"):
        d = d - d.mean()
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if norm is not None and w is not None:
        d = d * w.detach()
    return d @ model.W_U.detach()


def logit_effects(model, direction: Tensor, n: int = 10
                  ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """``(promoted, suppressed)``: the n tokens with the largest / smallest direct effect."""
    effect = unembed_direction(model, direction).float().cpu()
    n = min(n, effect.numel())
    up, down = effect.topk(n), (-effect).topk(n)

    def names(ids: Tensor) -> list[str]:
        return [display_tokens(model, [int(i)])[0] for i in ids]

    return (list(zip(names(up.indices), up.values.tolist())),
            list(zip(names(down.indices), (-down.values).tolist())))


def feature_card(search: FeatureSearch, model, sae, feature, *, n_tokens: int = 10,
                 n_logits: int = 10) -> FeatureCard:
    """Collect feature ``feature``'s card (ValueError for bad or dead features)."""
    search.check_sae(sae)
    i = search.check_feature(feature)
    edges, counts = search.histogram(i)
    promotes, suppresses = logit_effects(model, sae.W_dec[i], n_logits)
    return FeatureCard(
        feature=i, n_tokens=search.n_tokens, density=float(search.density[i]),
        max_act=float(search.max_act[i]), mean_act=float(search.mean_act[i]),
        top=search.top_excerpts(i, model), bands=search.band_excerpts(i, model),
        n_bands=search.cfg.n_bands, hist_edges=edges.tolist(), hist_counts=counts.tolist(),
        fires_on=search.top_tokens(i, model, n_tokens),
        promotes=promotes, suppresses=suppresses)


def interesting_features(search: FeatureSearch, model=None, *, n: int = 15,
                         max_density: float = 0.05) -> list[dict]:
    """Rows for a table: alive, not dense (<= max_density), strongest max activation first.

    Dense features fire everywhere and rarely mean anything; among the rest, a high
    max activation is where crisp top excerpts are found.
    """
    density = search.density
    ok = (density > 0) & (density <= max_density)
    score = search.max_act.double().masked_fill(~ok, -math.inf)
    order = score.argsort(descending=True)[: int(ok.sum())][:n]
    rows = []
    for i in order.tolist():
        fires = search.top_tokens(i, model, 5)
        rows.append({"feature": i, "density": float(density[i]),
                     "max_act": float(search.max_act[i]), "mean_act": float(search.mean_act[i]),
                     "fires_on": " ".join(t.strip() or repr(t) for t, _, _ in fires)})
    return rows


