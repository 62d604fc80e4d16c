"""Figures: training curves, activation and density histograms, scale sweeps.

Every function builds and returns a ``matplotlib.figure.Figure`` without touching pyplot's
global state, so a notebook shows it by leaving it as a cell's last value (or ``display``)
and a script can ``fig.savefig(...)``. matplotlib is imported when this module is, never by
the library.
"""
from __future__ import annotations

import base64
import io
import math

from matplotlib.figure import Figure

from sae_steer.config import LIFT_TARGET
from sae_steer.inspect import FeatureCard, FeatureSearch
from sae_steer.measure import Sweep


class NotebookFigure(Figure):
    """A Figure that shows itself as a PNG in a notebook, with or without ``%matplotlib inline``.

    A Figure made without pyplot has no picture of its own: unless the inline backend was
    switched on first, IPython shows it as the text ``<Figure size 600x280 with 1 Axes>``.
    When the backend is on, IPython's own printer for Figures still wins (same picture,
    the user's ``InlineBackend`` settings), so a figure is never shown twice.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def figure_png_uri(fig: Figure) -> str:
    """A Figure as a ``data:image/png;base64,...`` URI (so one HTML string holds a card)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plot_activation_histogram(edges, counts, *, title: str | None = None) -> Figure:
    """Histogram of a feature's non-zero activations on log10-spaced bins (a new Figure)."""
    edges, counts = [float(e) for e in edges], [int(c) for c in counts]
    fig = NotebookFigure(figsize=(5, 2.4), layout="constrained")
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
    fig = NotebookFigure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    if bool(alive.any()):
        ax.hist(density[alive].log10().numpy(), bins=bins)
    ax.set_xlabel("log10(fraction of tokens where the feature fires)")
    ax.set_ylabel("features")
    ax.set_title(f"feature density over {search.n_tokens:,} tokens "
                 f"({int((~alive).sum())} of {search.d_sae} features never fired)")
    return fig


def plot_architectures(finals: dict[str, dict[str, float]]) -> Figure:
    """Explained variance and CE-loss increase against L0, one point per architecture
    (``{architecture: TrainResult.final}``): the sparsity / fidelity trade-off side by side."""
    panels = [("explained_variance", "explained variance (higher is better)"),
              ("ce_increase", "CE-loss increase, nats (lower is better)")]
    panels = [p for p in panels if any(p[0] in row for row in finals.values())]
    fig = NotebookFigure(figsize=(4.2 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for arch, row in finals.items():
            ax.scatter(row["l0"], row.get(key, math.nan), label=arch)
            ax.annotate(arch, (row["l0"], row.get(key, math.nan)), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("L0 (active features / token)")
    return fig


def plot_history(history: list[dict[str, float]]) -> "Figure":
    """Training curves (one panel per metric) as a matplotlib Figure."""
    panels = [("mse", "MSE (scaled inputs)"), ("explained_variance", "explained variance"),
              ("l0", "L0 (active features / token)"),
              ("dead_fraction", "dead / dense fraction"), ("ce_increase", "CE-loss increase")]
    panels = [p for p in panels if any(p[0] in row for row in history)]
    fig = NotebookFigure(figsize=(3.2 * len(panels), 2.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    steps = [row["step"] for row in history]
    for ax, (key, title) in zip(axes, panels):
        ax.plot(steps, [row.get(key, math.nan) for row in history], label=key)
        if key == "dead_fraction":
            ax.plot(steps, [row.get("dense_fraction", math.nan) for row in history],
                    label="dense_fraction")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    return fig


def plot_sweep(sweep: Sweep, title: str | None = None):
    """Success and NLL cost against scale, with the target, budget and suggested scale."""
    fig = NotebookFigure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    # an infinite lift (no baseline event) has no height to draw: leave a gap
    success = [v if math.isfinite(v) else math.nan for v in sweep.success]
    low = [v if math.isfinite(v) else math.nan for v in sweep.success_low]
    ax.plot(sweep.scales, success, "o-", color="tab:blue", label=sweep.success_name)
    ax.plot(sweep.scales, low, "v:", color="tab:blue", label="its lower 95 % bound")
    ax.axhline(sweep.target, color="tab:blue", ls="--", lw=1,
               label=f"target {sweep.target:g} (lower bound)")
    ax.set_xlabel(f"scale ({sweep.scale_unit})")
    ax.set_ylabel(sweep.success_name, color="tab:blue")
    cost_ax = ax.twinx()
    cost_ax.plot(sweep.scales, sweep.cost, "s--", color="tab:red", label="NLL cost")
    cost_ax.axhline(sweep.cost_budget, color="tab:red", ls=":", lw=1,
                    label=f"budget {sweep.cost_budget:g} nats")
    cost_ax.set_ylabel("NLL cost (nats/token)", color="tab:red")
    if sweep.suggested is not None:
        ax.axvline(sweep.suggested, color="k", lw=1, label=f"suggested {sweep.suggested:g}")
    handles = ax.get_legend_handles_labels()[0] + cost_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small", loc="upper left")
    feature = sweep.reports[0].feature if sweep.reports else "?"
    ax.set_title(title or f"feature {feature}: success and cost by scale")
    return fig


def plot_lifts(results: dict, *, target: float | None = LIFT_TARGET) -> Figure:
    """Each concept's lift with its 95 % interval, beside a random direction of the same norm
    and, when measured, the concept's context direction at that norm (``result.direction``).

    ``results`` maps a concept name to a ``ConceptResult`` (``steer_concept``); ``target``:
    the dashed line (default the rule's ``LIFT_TARGET``; None: none). Log scale;
    an interval reaching 0 or infinity is drawn to the axis edge.
    """
    names = list(results)

    def bars(r) -> list[tuple]:
        out = [(r.report.lift, -0.2, "tab:blue", "steered feature"),
               (r.report.control.vs_unsteered.lift, 0.0, "tab:gray", "random direction, same norm")]
        if r.direction is not None:
            out.append((r.direction.vs_unsteered.lift, 0.2, "tab:orange",
                        "concept's context direction, same norm"))
        return out

    fig = NotebookFigure(figsize=(6.4, 0.7 + 0.65 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    finite = [v for r in results.values() for lift, *_ in bars(r) for v in (lift.lo, lift.hi)
              if math.isfinite(v) and v > 0]
    lo_edge = min(finite + [0.1]) / 2
    hi_edge = max(finite + [10.0]) * 2

    def clip(v: float) -> float:
        return min(max(v, lo_edge), hi_edge) if not math.isnan(v) else lo_edge

    labelled = set()
    for y, name in enumerate(names):
        for lift, offset, color, label in bars(results[name]):
            mid = clip(lift.value)
            ax.errorbar([mid], [y + offset], xerr=[[mid - clip(lift.lo)], [clip(lift.hi) - mid]],
                        fmt="o", color=color, capsize=3,
                        label=None if label in labelled else label)
            labelled.add(label)
    if target is not None:
        ax.axvline(target, color="tab:green", ls="--", lw=1, label=f"target {target:g}x")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(lo_edge, hi_edge)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("lift: concept rate steered / unsteered (95 % interval)")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_feature_scores(scores, *, highlight=(), title: str | None = None) -> Figure:
    """Input score against output score for every feature (``feature_scores``); the
    ``highlight`` features are marked and numbered."""
    out, inp = scores.output_score.numpy(), scores.input_score.numpy()
    fig = NotebookFigure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(out, inp, s=8, alpha=0.5, color="tab:gray", label="features")
    for f in highlight:
        ax.scatter([out[f]], [inp[f]], s=30, color="tab:red")
        ax.annotate(str(f), (out[f], inp[f]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("output score (probability its own top tokens gain when pushed)")
    ax.set_ylabel("input score (its fired-on tokens among them)")
    ax.set_title(title or f"steerability of {len(out)} features (push {scores.scale:g}x norm)")
    return fig


def plot_screen(screen, *, title: str | None = None) -> Figure:
    """Stage-1 fire-rate gain (at each feature's best scale, with its 95 % interval) against
    output score for every screened feature (``screen_features``); confirmed features are
    ringed, recommended ones filled in red and numbered. Shows how little the proxy
    predicts what the measurement finds."""
    rows = screen.rows(1)
    out = [r["output_score"] for r in rows]
    gain = [r["fires_gain"] for r in rows]
    err = [[g - r["fires_gain_lo"] for g, r in zip(gain, rows)],
           [r["fires_gain_hi"] - g for g, r in zip(gain, rows)]]
    fig = NotebookFigure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(out, gain, yerr=err, fmt="o", ms=3, alpha=0.35, color="tab:gray",
                elinewidth=0.5, label=f"ranking ({screen.config.n_rank} samples)")
    again = [r for r in rows if r["feature"] in screen.confirmations]
    ax.scatter([r["output_score"] for r in again], [r["fires_gain"] for r in again], s=40,
               facecolors="none", edgecolors="tab:blue", label="confirmed on fresh seeds")
    confirmed = set(screen.confirmed)
    for r in rows:
        if r["feature"] in confirmed:
            ax.scatter([r["output_score"]], [r["fires_gain"]], s=40, color="tab:red")
            ax.annotate(str(r["feature"]), (r["output_score"], r["fires_gain"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("output score")
    ax.set_ylabel("fire-rate gain, steered - unsteered")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title or f"{len(rows)} features screened, {len(confirmed)} recommended")
    return fig
