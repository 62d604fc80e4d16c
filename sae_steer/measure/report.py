"""Did steering work? Steered vs unsteered samples with the same seeds, measured.

For the generated tokens of each side (re-scored by the *unsteered* model): how often each
re-scored feature fires, how strongly, the text's cost (mean NLL under the unsteered model;
the share of repeated 3-grams) and, given a concept, how often it occurs. Then steered
against unsteered, every figure with its 95 % interval and its sample count:

- ``lift``: concept rate steered / unsteered; its interval is the wider of the exact
  Poisson ratio on the pooled counts and a paired bootstrap over samples
  (``stats.paired_rate_ratio``: occurrences cluster within samples); no floor: zero
  baseline events give an infinite value and a finite lower bound;
- ``fires_gain``: fire rate steered minus unsteered, paired by seed (Newcombe's interval);
- ``nll_cost``, ``rep_cost``: paired mean differences (normal interval);
- ``control``: the same against a random direction of the same norm, same seeds, so a
  reader sees what any push of that size does; beside it, on request, prompting (no
  steering, a prompt that asks for the feature or concept) and a reference direction
  (e.g. a concept's context direction) at the same norm.

Every report is one arm of a measurement batch (``batch.py``), clamping included.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae_steer.config import SteerConfig, control_seed, sample_seeds, steer_config
from sae_steer.fsutil import write_json_atomic
from sae_steer.measure.batch import Arm, measure_batch
from sae_steer.measure.concepts import as_concept
from sae_steer.measure.sides import Comparison, SideStats
from sae_steer.measure.stats import Estimate, Ratio
from sae_steer.steer import Generation, Steerer, steering_direction

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

REPORT_SAMPLES = 32
"""Samples per side of a report when the caller's settings do not say."""

@dataclasses.dataclass
class Control:
    """A fixed direction at the steering vector's norm, sampled with the same seeds: a
    random one (what any push of that size does) or a reference such as a concept's
    context direction (what a supervised vector of that size does)."""

    norm: float
    """Norm of the vector added (equal to the feature's steering vector)."""
    seed: int
    """Seed of the random direction (-1: not random)."""
    side: SideStats
    vs_unsteered: Comparison
    kind: str = "random"


@dataclasses.dataclass
class SteeringReport:
    feature: int
    scale: float
    """Absolute scale applied (clamp mode: the clamp value)."""
    mode: str
    concept: str | None
    """The concept's name (when one was given)."""
    steered: SideStats
    unsteered: SideStats
    vs_unsteered: Comparison
    control: Control | None
    generations: tuple[Generation, Generation]
    config: SteerConfig = dataclasses.field(default_factory=SteerConfig)
    """The settings both sides were sampled with."""
    prompted: Control | None = None
    """The prompting baseline: no steering, a prompt that asks for the feature's word or
    the concept (same seeds; None: not measured). Does steering beat just asking?"""
    reference: Control | None = None
    """A reference direction at the steering vector's norm (a concept's context direction;
    None: not measured)."""

    @property
    def lift(self) -> Ratio | None:
        return self.vs_unsteered.lift

    @property
    def concept_lift(self) -> float | None:
        """Steered / unsteered concept rate (no floor: inf when the baseline has none)."""
        return None if self.lift is None else self.lift.value

    @property
    def nll_cost(self) -> Estimate:
        return self.vs_unsteered.nll_cost

    @property
    def rep_cost(self) -> Estimate:
        return self.vs_unsteered.rep_cost

    @property
    def fires_gain(self) -> dict[int, Estimate]:
        return self.vs_unsteered.fires_gain

    @property
    def wrong_way(self) -> Estimate:
        """Share of seeds on which the unsteered sample fired the steered feature and the
        steered one did not."""
        return self.vs_unsteered.wrong_way[self.feature]

    def row(self, feature: int | None = None) -> dict[str, Any]:
        """One flat summary row for tables (acts for ``feature``, default the steered one)."""
        f = self.feature if feature is None else feature
        s, u, g = self.steered, self.unsteered, self.fires_gain[f]
        out = {"feature": self.feature, "scale": round(self.scale, 3), "mode": self.mode,
               "n_samples": s.n_samples, "fires_steered": s.fires[f].value,
               "fires_unsteered": u.fires[f].value, "fires_gain": g.value,
               "fires_gain_lo": g.lo, "fires_gain_hi": g.hi,
               "max_act_steered": s.max_act[f].value, "max_act_unsteered": u.max_act[f].value,
               "nll_cost": self.nll_cost.value, "nll_cost_hi": self.nll_cost.hi,
               "rep_cost": self.rep_cost.value}
        if self.lift is not None:
            out.update(concept=self.concept, rate_steered=s.concept_rate.value,
                       rate_unsteered=u.concept_rate.value, lift=self.lift.value,
                       lift_lo=self.lift.lo, lift_hi=self.lift.hi,
                       events_steered=self.lift.numerator, events_unsteered=self.lift.denominator)
        out["wrong_way"] = self.vs_unsteered.wrong_way[f].value
        if self.control is not None:
            c = self.control.vs_unsteered
            out.update(control_fires_gain=c.fires_gain[f].value, control_nll_cost=c.nll_cost.value)
            if c.lift is not None:
                out.update(control_lift=c.lift.value, control_lift_hi=c.lift.hi)
        if self.prompted is not None:
            p = self.prompted.vs_unsteered
            out.update(prompt_fires_gain=p.fires_gain[f].value, prompt_fires_gain_lo=p.fires_gain[f].lo,
                       prompt_fires_gain_hi=p.fires_gain[f].hi)
            if p.lift is not None:
                out.update(prompt_lift=p.lift.value, prompt_lift_lo=p.lift.lo)
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``report.json`` (the summary row) beside ``steer_config.json``."""
        directory = Path(directory)
        self.config.save_json(directory / "steer_config.json")
        write_json_atomic(directory / "report.json", _json_safe(self.row()))
        return directory


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    # JSON has no inf/NaN: write them as strings a reader can still parse with float()
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def steering_norm(sae: Any, feature: int, scale: float) -> float:
    """Norm of the vector feature ``feature`` steers with at absolute ``scale`` (decoder
    row): what a control must match."""
    return abs(scale) * float(sae.W_dec[feature].detach().float().norm())


def random_direction(cfg: SteerConfig, feature: int, d_model: int) -> tuple[int, Tensor]:
    """The random control's seed (``config.seeds.control_seed``) and direction for ``feature``."""
    seed = control_seed(cfg.seed, feature)
    return seed, torch.randn(d_model, generator=torch.Generator().manual_seed(seed))


def steering_reports(
    model: HookedTransformer, sae: Any, items: Sequence[tuple[int, float]],
    cfg: SteerConfig | None = None, *, concept: Any = None,
    rescore_features: Sequence[int] | None = None, unsteered: Generation | None = None,
    control: bool = True, progress: bool = False, **settings: Any,
) -> list[SteeringReport]:
    """``steering_report`` for each ``(feature, scale)`` of ``items``, on the same seeds and
    one shared unsteered baseline, every steered (and control) row generated in shared
    batches (``steer.batch``): the samples are exactly those of one report at a time.

    ``concept``: one concept for every item, or ``{feature: concept}``. Clamp mode is not
    a fixed vector per row, so each clamped item is generated on its own.
    """
    return run_reports(model, sae, items, report_config(cfg, **settings), concept=concept,
                       rescore_features=rescore_features, unsteered=unsteered, control=control,
                       progress=progress)


def report_config(cfg: SteerConfig | None = None, **settings: Any) -> SteerConfig:
    """The settings a report samples with: ``cfg`` (default ``SteerConfig(n_samples=
    REPORT_SAMPLES)``) with the keyword shortcuts applied, resolved once here."""
    return steer_config(cfg or SteerConfig(n_samples=REPORT_SAMPLES), **settings)


def run_reports(
    model: HookedTransformer, sae: Any, items: Sequence[tuple[int, float]], cfg: SteerConfig,
    *, concept: Any = None, rescore_features: Sequence[int] | None = None,
    unsteered: Generation | None = None, control: bool = True, progress: bool = False,
    seeds: Sequence[int] | None = None, prompts: Mapping[int, Any] | None = None,
    references: Mapping[int, Tensor] | None = None,
) -> list[SteeringReport]:
    """``steering_reports`` on resolved settings (no shortcuts): what sweeps and every
    stage of a selection call, each with the ``SteerConfig`` it derived. One measurement
    batch (``batch.measure_batch``): every item, its control, its prompting baseline
    (``prompts[f]``: a prompt that asks for it, no steering) and its reference direction
    (``references[f]``, at the steering vector's norm) on ``seeds`` (default: ``cfg``'s)
    against one unsteered baseline."""
    concepts = _concepts(concept, [f for f, _ in items])
    # measure_batch refuses a baseline drawn on other seeds
    seeds = list(seeds) if seeds is not None else sample_seeds(cfg.seed, cfg.n_samples)
    steerer = Steerer.for_config(model, sae, cfg)
    scales = [steerer.absolute({f: sc}, cfg.scale_unit, cfg.mode)[f] for f, sc in items]
    feats = [tuple(dict.fromkeys([f, *(rescore_features or [])])) for f, _ in items]
    clamp = cfg.mode == "clamp"  # clamping is not a vector: the batch generates it alone
    arms = [Arm(None if clamp else a * steering_direction(sae, f, cfg.mode).float(), feats[k],
                concepts[k], clamp=(f, a) if clamp else None)
            for k, ((f, _), a) in enumerate(zip(items, scales))]
    extra: list[tuple[int, str]] = []  # (item, kind) of each arm after the steered ones
    for k, ((f, _), a) in enumerate(zip(items, scales)):
        norm = steering_norm(sae, f, a)
        if control:
            direction = random_direction(cfg, f, sae.W_dec.shape[1])[1]
            arms.append(Arm(_at_norm(direction, norm), feats[k], concepts[k]))
            extra.append((k, "random"))
        if references and references.get(f) is not None:
            arms.append(Arm(_at_norm(references[f], norm), feats[k], concepts[k]))
            extra.append((k, "reference"))
        if prompts and prompts.get(f) is not None:
            arms.append(Arm(None, feats[k], concepts[k], prompt=prompts[f]))
            extra.append((k, "prompt"))
    batch = measure_batch(model, sae, arms, cfg, seeds=seeds, baseline=unsteered,
                          hook_name=steerer.hook_name, progress=progress)
    out = []
    for k, ((f, _), a) in enumerate(zip(items, scales)):
        res = batch.arms[k]
        gen = res.generation
        gen.feature, gen.scale, gen.mode, gen.features = f, a, cfg.mode, {f: a}
        out.append(SteeringReport(f, a, cfg.mode, _name(concepts[k]), res.side, res.base,
                                  res.vs_base, None, (gen, batch.baseline), cfg))
    for (k, kind), res in zip(extra, batch.arms[len(items):]):
        f, a = items[k][0], scales[k]
        side = Control(steering_norm(sae, f, a) if kind != "prompt" else 0.0,
                       control_seed(cfg.seed, f) if kind == "random" else -1,
                       res.side, res.vs_base, kind)
        setattr(out[k], {"random": "control", "reference": "reference", "prompt": "prompted"}[kind],
                side)
    return out


def _at_norm(direction: Tensor, norm: float) -> Tensor:
    direction = torch.as_tensor(direction).detach().float().cpu()
    return float(norm) * (direction / direction.norm().clamp(min=1e-12))


def _name(concept: Any) -> str | None:
    return concept.name if concept is not None else None


def _concepts(concept: Any, features: Sequence[int]) -> list[Any]:
    if isinstance(concept, Mapping):
        return [as_concept(concept[f]) if concept.get(f) is not None else None for f in features]
    one = as_concept(concept) if concept is not None else None
    return [one] * len(features)


def steering_report(
    model: HookedTransformer, sae: Any, feature: int, scale: float,
    cfg: SteerConfig | None = None, *, concept: Any = None,
    rescore_features: Sequence[int] | None = None, unsteered: Generation | None = None,
    control: bool = True, **settings: Any,
) -> SteeringReport:
    """Steered vs unsteered samples with the same seeds, measured on the generated tokens.

    ``cfg`` holds the sampling settings (default ``report_config()``: 32 samples; keyword
    ``settings`` are shortcuts for its fields, e.g. ``n_samples=64``). ``concept`` (a
    ``Concept``) adds its rate per 100 tokens and the lift. ``rescore_features`` (default:
    the steered feature) are re-scored on both sides, e.g. add the concept's on-word
    feature. Pass ``unsteered`` to reuse a baseline drawn with the same prompt, length,
    seed and n_samples. ``control=False`` skips the random-direction control (sweeps do,
    to select; a measured report should keep it). Many reports on the same seeds:
    ``steering_reports`` (one batch).
    """
    return run_report(model, sae, feature, scale, report_config(cfg, **settings), concept=concept,
                      rescore_features=rescore_features, unsteered=unsteered, control=control)


def run_report(
    model: HookedTransformer, sae: Any, feature: int, scale: float, cfg: SteerConfig, *,
    concept: Any = None, rescore_features: Sequence[int] | None = None,
    unsteered: Generation | None = None, control: bool = True,
) -> SteeringReport:
    """``steering_report`` on resolved settings (no shortcuts): a batch of one."""
    return run_reports(model, sae, [(feature, scale)], cfg, concept=concept,
                       rescore_features=rescore_features, unsteered=unsteered, control=control)[0]
