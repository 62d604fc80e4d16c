"""A feature card: everything we know about one feature, as data, then as text/HTML/plots.

``feature_card(search, model, sae, i)`` computes (excerpts, density, histogram, the
tokens it fires on, the tokens its decoder row promotes/suppresses); ``card_text``,
``card_html`` and ``plot_activation_histogram`` render a card and do nothing else.
Whole-SAE views (a table of interesting features, the log10 density histogram) live
here too because they read the same ``FeatureSearch``.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import math

from jaxtyping import Float
from matplotlib.figure import Figure
from torch import Tensor

from sae_steer.render import render_blocks, render_html
from sae_steer.search_results import Excerpt, FeatureSearch, display_tokens


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


def unembed_direction(model, direction: Float[Tensor, "d_model"]) -> Float[Tensor, "d_vocab"]:
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


def _band_label(card: FeatureCard, band: int) -> str:
    lo, hi = band / card.n_bands, (band + 1) / card.n_bands
    return f"{lo:.0%}-{hi:.0%} of max"


def _strings(ex: Excerpt) -> list[str]:
    return ex.str_tokens or [str(t) for t in ex.token_ids]


def _token_list(pairs) -> str:
    return ", ".join(f"{tok.strip() or repr(tok)} ({val:+.2f})" for tok, val, *_ in pairs)


def card_text(card: FeatureCard, *, n_top: int | None = None, n_bands: int | None = None) -> str:
    """The card in the seed's block-element format (plain text, one excerpt per line)."""
    lines = [f"Feature {card.feature}: fired on {card.density:.3%} of {card.n_tokens:,} tokens; "
             f"max {card.max_act:.3f}, mean when firing {card.mean_act:.3f}",
             f"fires on: {_token_list(card.fires_on)}",
             f"promotes: {_token_list(card.promotes)}",
             f"suppresses: {_token_list(card.suppresses)}",
             "", "Top excerpts:"]
    for n, ex in enumerate(card.top[:n_top], 1):
        lines.append(f"Excerpt {n} (max {ex.peak_act:.3f}):")
        lines.append(render_blocks(_strings(ex), ex.acts, card.max_act))
    lines += ["", "Lower activation bands:"]
    for ex in card.bands[:n_bands]:
        lines.append(f"[{_band_label(card, ex.band)}] (max {ex.peak_act:.3f}):")
        lines.append(render_blocks(_strings(ex), ex.acts, card.max_act))
    return "\n".join(lines)


def card_html(card: FeatureCard, *, n_top: int | None = None, n_bands: int | None = None,
              histogram: bool = False) -> str:
    """The card as HTML; the outer ``div.sae-card`` carries ``data-feature``.

    ``histogram=True`` embeds the activation histogram as a PNG (for widgets, where one
    HTML value must hold the whole card).
    """
    esc = html.escape

    def tokens(pairs) -> str:
        return esc(_token_list(pairs), quote=True)

    def excerpt(ex: Excerpt, caption: str) -> str:
        return render_html(_strings(ex), ex.acts, card.max_act, feature=card.feature,
                           caption=caption)

    parts = [f'<div class="sae-card" data-feature="{card.feature}">',
             f"<h3>Feature {card.feature}</h3>",
             f"<p>fired on {card.density:.3%} of {card.n_tokens:,} tokens; max "
             f"{card.max_act:.3f}; mean when firing {card.mean_act:.3f}</p>",
             f"<p><b>fires on</b>: {tokens(card.fires_on)}<br><b>promotes</b>: "
             f"{tokens(card.promotes)}<br><b>suppresses</b>: {tokens(card.suppresses)}</p>",
             "<h4>Top excerpts</h4>"]
    parts += [excerpt(ex, f"max {ex.peak_act:.3f}") for ex in card.top[:n_top]]
    parts.append("<h4>Lower activation bands</h4>")
    parts += [excerpt(ex, f"{_band_label(card, ex.band)}, max {ex.peak_act:.3f}")
              for ex in card.bands[:n_bands]]
    if histogram:
        uri = figure_png_uri(card_histogram(card))
        parts.append(f'<img alt="activation histogram" src="{uri}">')
    # The seed's "click to see" block-element version of the same excerpts.
    parts.append("<details><summary>block-element format</summary><pre>"
                 f"{esc(card_text(card, n_top=n_top, n_bands=n_bands))}</pre></details>")
    parts.append("</div>")
    return "\n".join(parts)


def figure_png_uri(fig: Figure) -> str:
    """A Figure as a ``data:image/png;base64,...`` URI (so one HTML string holds a card)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plot_activation_histogram(edges, counts, *, title: str | None = None) -> Figure:
    """Histogram of a feature's non-zero activations on log10-spaced bins (a new Figure)."""
    edges, counts = [float(e) for e in edges], [int(c) for c in counts]
    fig = Figure(figsize=(5, 2.4), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True)
    ax.set_xscale("log")
    nz = [i for i, c in enumerate(counts) if c]
    if nz:
        ax.set_xlim(edges[nz[0]], edges[nz[-1] + 1])
    ax.set_xlabel("activation (log scale, non-zero only)")
    ax.set_ylabel("tokens")
    ax.set_title(title or "activation histogram")
    return fig


def card_histogram(card: FeatureCard) -> Figure:
    return plot_activation_histogram(card.hist_edges, card.hist_counts,
                                     title=f"feature {card.feature}: non-zero activations")


def plot_density_histogram(search: FeatureSearch, *, bins: int = 40) -> Figure:
    """log10 firing density of every feature; dead features are counted in the title."""
    density = search.density
    alive = density > 0
    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    if bool(alive.any()):
        ax.hist(density[alive].log10().numpy(), bins=bins)
    ax.set_xlabel("log10(fraction of tokens where the feature fires)")
    ax.set_ylabel("features")
    ax.set_title(f"feature density over {search.n_tokens:,} tokens "
                 f"({int((~alive).sum())} of {search.d_sae} features never fired)")
    return fig


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


def rows_html(rows: list[dict]) -> str:
    """A small HTML table of ``interesting_features`` rows (values escaped)."""
    if not rows:
        return "<p>no features to show</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])

    def cell(v) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in r.values()) + "</tr>" for r in rows)
    return f'<table class="sae-features"><tr>{head}</tr>{body}</table>'


def card_widget(search: FeatureSearch, model, sae, feature: int | None = None):
    """A feature picker (BoundedIntText) above the picked feature's card (an HTML widget).

    Bad picks (a dead feature) show the error message in the card's place instead of
    raising inside a widget callback. Returns the VBox; ``.picker`` and ``.view`` are
    its two children (tests set ``picker.value`` and read ``view.value``).
    """
    import ipywidgets as widgets

    if feature is None:
        alive = (search.density > 0).nonzero()
        feature = int(alive[0]) if len(alive) else 0
    picker = widgets.BoundedIntText(value=int(feature), min=0, max=search.d_sae - 1,
                                    description="feature")
    view = widgets.HTML()

    def show(change=None) -> None:
        i = picker.value
        try:
            view.value = card_html(feature_card(search, model, sae, i), histogram=True)
        except ValueError as e:
            view.value = (f'<div class="sae-card-error" data-feature="{int(i)}">'
                          f"{html.escape(str(e))}</div>")

    picker.observe(show, names="value")
    show()
    box = widgets.VBox([picker, view])
    box.picker, box.view = picker, view
    return box
