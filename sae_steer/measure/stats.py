"""Estimates with 95 % confidence intervals: every success figure is one of these.

- fractions (e.g. "the feature fires in this share of samples"): Wilson score interval;
- per-sample means (NLL, activations): normal approximation, mean +- 1.96 s / sqrt(n);
- rates pooled over tokens (concept occurrences per 100 tokens): percentile bootstrap
  over samples (1000 resamples, fixed seed, so a figure is the same every run);
- the ratio of two such rates on samples paired by seed (the lift): the wider of the exact
  Poisson-ratio interval and a paired bootstrap over samples (``paired_rate_ratio``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from sae_steer.config import Z95


@dataclasses.dataclass
class Estimate:
    """A measured value and its 95 % confidence interval."""

    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.lo:.3g}, {self.hi:.3g}]"


def wilson(k: int, n: int) -> Estimate:
    """The fraction k / n with its Wilson score interval (NaN for n = 0)."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    p, denom = k / n, 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def normal_mean(values: Sequence[float]) -> Estimate:
    """Mean of the non-NaN values, +- 1.96 standard errors (infinite for one value)."""
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


# ---------------------------------------------------------------- comparisons (steered vs not)


def _binom_tail_ge(k: int, n: int) -> Callable[[float], float]:
    """``p -> P(X >= k)`` for X ~ Binomial(n, p), summed in log space (exact, no scipy).

    The log binomial coefficients are computed once here, not on each of the ~80 values of
    p a bisection asks about (the sum is the same, term for term, as computing them each
    time).
    """
    if k <= 0:
        return lambda p: 1.0
    coef = [(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1), j, n - j)
            for j in range(k, n + 1)]

    def tail(p: float) -> float:
        if p <= 0.0:
            return 0.0
        if p >= 1.0:
            return 1.0
        log_p, log_q = math.log(p), math.log1p(-p)
        terms = [c + j * log_p + m * log_q for c, j, m in coef]
        top = max(terms)
        return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))

    return tail


def _solve(f, target: float) -> float:
    """The p in (0, 1) where the increasing function f reaches target (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion k / n."""
    lo = 0.0 if k == 0 else _solve(_binom_tail_ge(k, n), alpha / 2)
    hi = 1.0 if k == n else _solve(_binom_tail_ge(k + 1, n), 1 - alpha / 2)
    return lo, hi


@dataclasses.dataclass
class Ratio:
    """A ratio of two rates with its 95 % interval, and the counts it rests on."""

    value: float
    lo: float
    hi: float
    numerator: int
    """Events on the steered side."""
    denominator: int
    """Events on the baseline side."""
    method: str = "exact Poisson ratio (conditional binomial, Clopper-Pearson)"

    def __str__(self) -> str:
        return (f"{self.value:.3g}x [{self.lo:.3g}, {self.hi:.3g}] "
                f"({self.numerator} vs {self.denominator} events)")


def poisson_ratio(k1: int, t1: float, k0: int, t0: float) -> Ratio:
    """Rate ratio (k1 / t1) / (k0 / t0) with the exact conditional interval.

    Given k1 + k0 events, k1 is binomial with p = R t1 / (R t1 + t0) under rate ratio R, so
    the Clopper-Pearson interval for p maps to one for R. No floor: zero baseline events
    give an infinite value and upper bound, and a finite lower bound that still says how
    much evidence there is; zero events on both sides give NaN.
    """
    if t1 <= 0 or t0 <= 0:
        raise ValueError(f"exposures must be positive, got {t1} and {t0}")
    n = k1 + k0
    if n == 0:
        return Ratio(math.nan, 0.0, math.inf, 0, 0)
    lo_p, hi_p = clopper_pearson(k1, n)

    def to_ratio(p: float) -> float:
        return math.inf if p >= 1.0 else p / (1 - p) * t0 / t1

    value = math.inf if k0 == 0 else (k1 / t1) / (k0 / t0)
    return Ratio(value, to_ratio(lo_p), to_ratio(hi_p), k1, k0)


RATIO_METHOD = ("the wider of the exact Poisson-ratio interval and a paired percentile "
                "bootstrap over samples (2,000 resamples)")


def paired_rate_ratio(counts: Sequence[int], tokens: Sequence[int], base_counts: Sequence[int],
                      base_tokens: Sequence[int], n_boot: int = 2000) -> Ratio:
    """Lift: pooled rate of ``counts`` over that of ``base_counts``, samples paired by seed.

    The exact Poisson interval treats every event as independent; steered samples are not
    (one sample that turns into a list of danger words holds many), and then it is far too
    narrow: two runs of the same bench on 256 and 1,024 seeds gave non-overlapping Poisson
    intervals. A paired bootstrap over samples (resampling seeds, both sides together)
    keeps that clustering, but is blind when the baseline has almost no events (every
    resample's ratio infinite). So the interval is the union of the two: each guards the
    case where the other fails. Fixed resampling seed: the same figure every run.
    """
    if not (len(counts) == len(tokens) == len(base_counts) == len(base_tokens)):
        raise ValueError("paired samples differ in number: "
                         f"{len(counts)}, {len(tokens)}, {len(base_counts)}, {len(base_tokens)}")
    exact = poisson_ratio(sum(counts), max(sum(tokens), 1), sum(base_counts), max(sum(base_tokens), 1))
    if len(counts) < 2 or math.isnan(exact.value):
        return dataclasses.replace(exact, method=RATIO_METHOD)
    c1, t1, c0, t0 = (torch.tensor(v, dtype=torch.float64)
                      for v in (counts, tokens, base_counts, base_tokens))
    idx = torch.randint(len(c1), (n_boot, len(c1)), generator=torch.Generator().manual_seed(0))
    num = c1[idx].sum(1) / t1[idx].sum(1).clamp(min=1)
    den = c0[idx].sum(1) / t0[idx].sum(1).clamp(min=1)
    boot = torch.where(den > 0, num / den.clamp(min=1e-300),
                       torch.where(num > 0, math.inf, math.nan))
    boot = boot[~boot.isnan()]
    if len(boot) == 0:
        return dataclasses.replace(exact, method=RATIO_METHOD)
    ordered = boot.sort().values  # quantile() refuses inf: read the order statistics directly
    lo = float(ordered[int(0.025 * (len(ordered) - 1))])
    hi = float(ordered[math.ceil(0.975 * (len(ordered) - 1))])
    return dataclasses.replace(exact, lo=min(exact.lo, lo), hi=max(exact.hi, hi), method=RATIO_METHOD)


def paired_difference(steered: Sequence[bool], baseline: Sequence[bool]) -> Estimate:
    """Difference of two proportions measured on the same samples (paired by seed), with
    Newcombe's interval for paired data (his method 10: Wilson intervals of both sides,
    corrected for their correlation)."""
    if len(steered) != len(baseline):
        raise ValueError(f"paired samples differ in number: {len(steered)} vs {len(baseline)}")
    n = len(steered)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    a = sum(1 for s, b in zip(steered, baseline) if s and b)
    b_ = sum(1 for s, b in zip(steered, baseline) if s and not b)
    c = sum(1 for s, b in zip(steered, baseline) if not s and b)
    d = n - a - b_ - c
    p1, p2 = (a + b_) / n, (a + c) / n
    w1, w2 = wilson(a + b_, n), wilson(a + c, n)
    denom = (a + b_) * (c + d) * (a + c) * (b_ + d)
    # Newcombe's continuity-corrected correlation: without the n/2 term, all-concordant pairs
    # (phi = 1) would give a zero-width interval
    ad_bc = a * d - b_ * c
    phi = ((max(ad_bc - n / 2, 0.0) if ad_bc > 0 else ad_bc) / math.sqrt(denom)
           if denom > 0 else 0.0)
    delta = math.sqrt(max(0.0, (p1 - w1.lo) ** 2 - 2 * phi * (p1 - w1.lo) * (w2.hi - p2)
                          + (w2.hi - p2) ** 2))
    eps = math.sqrt(max(0.0, (w1.hi - p1) ** 2 - 2 * phi * (w1.hi - p1) * (p2 - w2.lo)
                        + (p2 - w2.lo) ** 2))
    diff = p1 - p2
    return Estimate(diff, max(-1.0, diff - delta), min(1.0, diff + eps))


def repeated_ngram_fraction(tokens: Sequence[int], n: int = 3) -> float:
    """Share of a text's n-grams that already occurred earlier in it (0: no repetition;
    "fire . fire . fire ." is mostly repeats). NaN when the text has no n-gram."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return math.nan
    return 1.0 - len(set(grams)) / len(grams)
