"""Did steering work? Re-score generated text with the unsteered model + SAE, and measure.

- ``rescore``: per-token activations of one feature on texts, from the *unsteered* model,
  rendered in the seed's block format and as HTML (``sae_steer.render``).
- ``steering_report``: steered vs unsteered samples with the same seeds -- how often the
  feature fires, how strongly, what it costs in text quality (mean NLL of the generated
  tokens under the unsteered model), and on the offline world the planted concept's rate.
- ``scale_sweep``: those measures over a list of scales and the smallest scale that reaches
  a target within a cost budget (replacing the seed's hand-tuned "10").

Confidence intervals (95 %): fractions use the Wilson score interval; per-sample means use
the normal approximation (mean +- 1.96 s / sqrt(n)); the NLL cost uses the paired
differences of samples that share a seed; concept rates (pooled over tokens) use a
percentile bootstrap over samples (1000 resamples, fixed seed).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_steer.collect import attached_hook_count
from sae_steer.render import render_blocks, render_html
from sae_steer.search_results import display_tokens
from sae_steer.steer import Generation, check_sae_matches, generate_steered, generate_unsteered

Z95 = 1.959964


@dataclasses.dataclass
class Estimate:
    """A measured value and its 95 % confidence interval."""

    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.lo:.3g}, {self.hi:.3g}]"


def wilson(k: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    p, denom = k / n, 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def normal_mean(values: Sequence[float]) -> Estimate:
    x = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, math.nan)
    mean = float(x.mean())
    half = Z95 * float(x.std()) / math.sqrt(len(x)) if len(x) > 1 else math.inf
    return Estimate(mean, mean - half, mean + half)


def pooled_rate(counts: Sequence[int], totals: Sequence[int], per: float = 100.0) -> Estimate:
    """``per * sum(counts) / sum(totals)`` with a bootstrap CI over samples."""
    c, t = torch.tensor(counts, dtype=torch.float64), torch.tensor(totals, dtype=torch.float64)
    if t.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan)
    idx = torch.randint(len(c), (1000, len(c)), generator=torch.Generator().manual_seed(0))
    boot = per * c[idx].sum(1) / t[idx].sum(1).clamp(min=1)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Estimate(float(per * c.sum() / t.sum()), lo, hi)


# ---------------------------------------------------------------- one forward, all measures


@dataclasses.dataclass
class Measured:
    """Per sample: feature activations [len, n_features] and NLL of each token given its past."""

    acts: list[Tensor]
    nll: list[Tensor]
    str_tokens: list[list[str]]


def _require_clean(model: HookedTransformer) -> None:
    n = attached_hook_count(model)
    if n:
        raise RuntimeError(
            f"the model has {n} hook(s) attached: re-scoring must use the unsteered model "
            "(leave the steering context, or call model.reset_hooks())"
        )


def _str_tokens(model: HookedTransformer, row: Tensor) -> list[str]:
    if model.tokenizer is None:
        return [str(int(t)) for t in row]
    return list(model.to_str_tokens(row))


@torch.no_grad()
def measure(
    model: HookedTransformer, sae: Any, rows: Sequence[Tensor], features: Sequence[int],
    hook_name: str | None = None, batch_size: int = 8,
) -> Measured:
    """One unsteered forward per batch gives both the SAE activations and the token NLLs."""
    _require_clean(model)
    hook_name = check_sae_matches(model, sae, hook_name)
    feats = torch.as_tensor(list(features), dtype=torch.long, device=sae.W_dec.device)
    out = Measured([], [], [_str_tokens(model, r) for r in rows])
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens = torch.zeros(len(chunk), max(len(r) for r in chunk), dtype=torch.long)
        for j, r in enumerate(chunk):  # right padding: causal attention never sees it
            tokens[j, : len(r)] = r
        seen: dict[str, Tensor] = {}
        logits = model.run_with_hooks(
            tokens.to(model.cfg.device),
            fwd_hooks=[(hook_name, lambda act, hook: seen.__setitem__("act", act))],
        )
        acts = sae.encode(seen["act"].to(sae.W_dec.device))[..., feats].float().cpu()
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0].cpu()
        for j, r in enumerate(chunk):
            out.acts.append(acts[j, : len(r)])
            out.nll.append(nll[j, : len(r) - 1])  # nll[t - 1] scores token t
    return out


def _rows(model: HookedTransformer, texts: Any) -> tuple[list[Tensor], int]:
    if isinstance(texts, Generation):
        return texts.tokens, texts.prompt_len
    if isinstance(texts, str):
        texts = [texts]
    rows = []
    for t in texts:
        if isinstance(t, str):
            if model.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token tensors")
            rows.append(model.to_tokens(t)[0].cpu())
        else:
            rows.append(torch.as_tensor(t, dtype=torch.long).flatten().cpu())
    return rows, 0


# ---------------------------------------------------------------- rescore


@dataclasses.dataclass
class Rescored:
    """One text re-scored: its tokens, feature activations and both renderings."""

    str_tokens: list[str]
    acts: list[float]
    blocks: str
    html: str

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)


def rescore(
    model: HookedTransformer, sae: Any, texts: Any, feature: int, *,
    max_act: float | None = None, hook_name: str | None = None,
) -> list[Rescored]:
    """Feature ``feature``'s per-token activations on ``texts`` under the *unsteered* model.

    ``texts``: a ``Generation`` (its exact tokens are used), strings (tokenized with BOS)
    or token tensors. ``max_act`` scales the blocks (default: the max over these texts).
    Raises RuntimeError when hooks are attached: steered activations would mislead.
    """
    from sae_steer.steer import _check_feature

    feature = _check_feature(sae, feature)
    rows, _ = _rows(model, texts)
    m = measure(model, sae, rows, [feature], hook_name)
    acts = [a[:, 0].tolist() for a in m.acts]
    top = max_act if max_act is not None else max((max(a, default=0.0) for a in acts), default=0.0)
    top = top if top > 0 else 1.0  # nothing fired: keep every block at the lowest level
    # Display strings carry the spaces the decoder inserts (" upon"), so the blocks read
    # like the seed's "Once ▁ upon ▁" whatever the tokenizer; raw str_tokens stay in m.
    shown = [display_tokens(model, r.tolist()) if model.tokenizer is not None else st
             for r, st in zip(rows, m.str_tokens)]
    return [
        Rescored(st, a, render_blocks(st, a, top), render_html(st, a, top, feature=feature))
        for st, a in zip(shown, acts)
    ]


# ---------------------------------------------------------------- steering report


@dataclasses.dataclass
class SideStats:
    """Measures over the generated tokens of one set of samples (steered or unsteered)."""

    fires: dict[int, Estimate]
    """Per re-scored feature: fraction of samples in which it fires on a generated token."""
    max_act: dict[int, Estimate]
    mean_act: dict[int, Estimate]
    nll: Estimate
    """Mean NLL (nats/token) of the generated tokens under the unsteered model."""
    concept_rate: Estimate | None
    """Planted concept's occurrences per 100 generated tokens (offline world only)."""
    n_tokens: int
    nll_per_sample: list[float]
    concept_counts: list[int]


def _side(model, sae, gen, features, concept, threshold, hook_name) -> SideStats:
    m = measure(model, sae, gen.tokens, features, hook_name)
    p = gen.prompt_len
    new_acts = [a[p:] for a in m.acts]
    nll = [float(x[p - 1 :].mean()) if len(x) >= p else math.nan for x in m.nll]
    nll = [v if len(a) else math.nan for v, a in zip(nll, new_acts)]
    fires, max_act, mean_act = {}, {}, {}
    for k, f in enumerate(features):
        col = [a[:, k] for a in new_acts]
        fires[f] = wilson(sum(bool((c > threshold).any()) for c in col), len(col))
        max_act[f] = normal_mean([float(c.max()) if len(c) else 0.0 for c in col])
        mean_act[f] = normal_mean([float(c.mean()) if len(c) else math.nan for c in col])
    counts, rate = [], None
    if concept is not None:
        from sae_steer.toystories.labels import concept_mask

        counts = [concept_occurrences(concept_mask(st, concept), p) for st in m.str_tokens]
        rate = pooled_rate(counts, [len(a) for a in new_acts])
    return SideStats(fires, max_act, mean_act, normal_mean(nll), rate,
                     sum(len(a) for a in new_acts), nll, counts)


def concept_occurrences(mask: Sequence[bool], start: int = 0) -> int:
    """Runs of labelled tokens that begin at or after ``start`` (a whole list counts once,
    as in ``toystories.concept_count``; a run begun in the prompt is not the model's)."""
    return sum(on and (i == 0 or not mask[i - 1]) for i, on in enumerate(mask) if i >= start)


@dataclasses.dataclass
class SteeringReport:
    feature: int
    scale: float
    """Absolute scale applied (clamp mode: the clamp value)."""
    mode: str
    concept: str | None
    steered: SideStats
    unsteered: SideStats
    nll_cost: Estimate
    """Steered minus unsteered mean NLL, paired by seed."""
    concept_lift: float | None
    """Steered / unsteered concept rate; a zero unsteered count is floored at 0.5 occurrences."""
    generations: tuple[Generation, Generation]

    def row(self, feature: int | None = None) -> dict[str, Any]:
        """One flat summary row for tables (acts for ``feature``, default the steered one)."""
        f = self.feature if feature is None else feature
        s, u = self.steered, self.unsteered
        out = {"feature": self.feature, "scale": round(self.scale, 3), "mode": self.mode,
               "fires_steered": s.fires[f].value, "fires_unsteered": u.fires[f].value,
               "max_act_steered": s.max_act[f].value, "max_act_unsteered": u.max_act[f].value,
               "nll_steered": s.nll.value, "nll_unsteered": u.nll.value,
               "nll_cost": self.nll_cost.value}
        if self.concept is not None:
            out.update(concept=self.concept, rate_steered=s.concept_rate.value,
                       rate_unsteered=u.concept_rate.value, lift=self.concept_lift)
        return out


def _lift(s: SideStats, u: SideStats) -> float:
    floor = 100 * 0.5 / max(u.n_tokens, 1)
    return s.concept_rate.value / max(u.concept_rate.value, floor)


def steering_report(
    model: HookedTransformer, sae: Any, feature: int, scale: float, *, n_samples: int = 32,
    prompt: Any = "Once upon a time", max_new_tokens: int = 100, seed: int = 0,
    temperature: float = 1.0, mode: str = "decoder_row", scale_unit: str = "absolute",
    resid_norm: float | None = None, concept: str | None = None,
    rescore_features: Sequence[int] | None = None, threshold: float = 0.0,
    unsteered: Generation | None = None, hook_name: str | None = None,
) -> SteeringReport:
    """Steered vs unsteered samples with the same seeds, measured on the generated tokens.

    ``rescore_features`` (default: the steered feature) are re-scored on both sides, e.g.
    add the concept's on-word feature. Pass ``unsteered`` to reuse a baseline (it must come
    from ``generate_unsteered`` with the same prompt, length, seed and n_samples).
    """
    kw = dict(prompt=prompt, max_new_tokens=max_new_tokens, n_samples=n_samples, seed=seed,
              temperature=temperature)
    gen = generate_steered(model, sae, feature, scale, mode=mode, scale_unit=scale_unit,
                           resid_norm=resid_norm, hook_name=hook_name, **kw)
    base = unsteered if unsteered is not None else generate_unsteered(model, **kw)
    if base.seeds != gen.seeds:
        raise ValueError("the unsteered baseline was sampled with other seeds/n_samples")
    features = list(dict.fromkeys([gen.feature, *(rescore_features or [])]))
    s = _side(model, sae, gen, features, concept, threshold, hook_name)
    u = _side(model, sae, base, features, concept, threshold, hook_name)
    cost = normal_mean([a - b for a, b in zip(s.nll_per_sample, u.nll_per_sample)])
    lift = _lift(s, u) if concept is not None else None
    return SteeringReport(gen.feature, gen.scale, mode, concept, s, u, cost, lift, (gen, base))


# ---------------------------------------------------------------- scale sweep

SUCCESS = ("fires", "concept_lift")


@dataclasses.dataclass
class Sweep:
    scales: list[float]
    """The scales as given (in ``scale_unit``)."""
    reports: list[SteeringReport]
    success_name: str
    success: list[float]
    cost: list[float]
    target: float
    cost_budget: float
    suggested: float | None
    """Smallest |scale| with success >= target and cost <= budget (None: no scale did)."""
    scale_unit: str = "absolute"

    def table(self) -> list[dict[str, Any]]:
        return [{"scale": sc, "abs_scale": round(r.scale, 3), self.success_name: su,
                 "nll_cost": c, "ok": su >= self.target and c <= self.cost_budget}
                for sc, r, su, c in zip(self.scales, self.reports, self.success, self.cost)]


def _success(report: SteeringReport, name: str) -> float:
    if name == "concept_lift":
        return float(report.concept_lift)
    return report.steered.fires[report.feature].value


def suggest_scale(scales: Sequence[float], success: Sequence[float], cost: Sequence[float],
                  target: float, cost_budget: float) -> float | None:
    """The smallest |scale| whose success reaches ``target`` at a cost within ``cost_budget``."""
    ok = [sc for sc, su, c in zip(scales, success, cost) if su >= target and c <= cost_budget]
    return min(ok, key=abs) if ok else None


def scale_sweep(
    model: HookedTransformer, sae: Any, feature: int, scales: Sequence[float], *,
    success: str | None = None, target: float | None = None, cost_budget: float = 1.5,
    n_samples: int = 16, concept: str | None = None, scale_unit: str = "absolute",
    resid_norm: float | None = None, **report_kw: Any,
) -> Sweep:
    """``steering_report`` at each scale (one shared unsteered baseline) and a suggested scale.

    ``success``: ``"concept_lift"`` (default when ``concept`` is given; target 5x) or
    ``"fires"`` (fraction of samples where the feature fires; target 0.8).
    """
    success = success or ("concept_lift" if concept is not None else "fires")
    if success not in SUCCESS:
        raise ValueError(f"success must be one of {SUCCESS}, got {success!r}")
    if success == "concept_lift" and concept is None:
        raise ValueError("success='concept_lift' needs concept=")
    if not scales:
        raise ValueError("scales is empty: give a list such as [0.1, 0.3, 0.5, 1.0]")
    target = target if target is not None else (5.0 if success == "concept_lift" else 0.8)
    if scale_unit == "relative" and resid_norm is None:
        from sae_steer.steer import typical_resid_norm

        resid_norm = typical_resid_norm(model, check_sae_matches(model, sae, report_kw.get(
            "hook_name")))
    gen_kw = {k: report_kw[k] for k in ("prompt", "max_new_tokens", "seed", "temperature")
              if k in report_kw}
    base = generate_unsteered(model, n_samples=n_samples, **gen_kw)
    reports = [steering_report(model, sae, feature, sc, n_samples=n_samples, concept=concept,
                               scale_unit=scale_unit, resid_norm=resid_norm, unsteered=base,
                               **report_kw) for sc in scales]
    succ = [_success(r, success) for r in reports]
    cost = [r.nll_cost.value for r in reports]
    return Sweep(list(scales), reports, success, succ, cost, target, cost_budget,
                 suggest_scale(scales, succ, cost, target, cost_budget), scale_unit)


def plot_sweep(sweep: Sweep, title: str | None = None):
    """Success and NLL cost against scale, with the target, budget and suggested scale.

    A pure function: builds a ``matplotlib.figure.Figure`` without touching pyplot state.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(sweep.scales, sweep.success, "o-", color="tab:blue", label=sweep.success_name)
    ax.axhline(sweep.target, color="tab:blue", ls=":", lw=1, label=f"target {sweep.target:g}")
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


# ---------------------------------------------------------------- HTML for notebooks


def generations_html(
    model: HookedTransformer, sae: Any, gen: Generation, feature: int, title: str = "",
    max_act: float | None = None,
) -> str:
    """The seed's layout: each sample's text, then its re-scored version behind a click.

    The container carries ``data-feature`` and ``data-scale`` (absolute) for tests.
    """
    import html as _html

    scored = rescore(model, sae, gen, feature, max_act=max_act)
    parts = [f'<div class="steer-samples" data-feature="{int(feature)}" '
             f'data-scale="{gen.scale:g}">']
    if title:
        parts.append(f"<h4>{_html.escape(title)}</h4>")
    for text, r in zip(gen.texts, scored):
        parts.append(
            f"<p>{_html.escape(text)}</p><details><summary>Click to see the version with "
            f"feature {int(feature)}'s activations highlighted</summary>{r.html}"
            f"<pre style='white-space: pre-wrap'>{_html.escape(r.blocks)}</pre></details>")
    return "".join(parts) + "</div>"


def table_html(rows: Sequence[dict[str, Any]], digits: int = 3) -> str:
    """A plain HTML table of flat dict rows (no pandas needed)."""
    import html as _html

    if not rows:
        return "<p>(no rows)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    head = "".join(f"<th>{_html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_html.escape(fmt(r.get(c, '')))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f'<table class="steer-table"><tr>{head}</tr>{body}</table>'


def table_text(rows: Sequence[dict[str, Any]], digits: int = 3) -> str:
    """The same table as fixed-width text (for scripts and benchmarks)."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(cols)] + [line(row) for row in cells])
