"""The statistics every success figure comes with: exact, paired, no floors."""
from __future__ import annotations

import math

import pytest

from sae_steer.measure.stats import (clopper_pearson, paired_difference, paired_rate_ratio, poisson_ratio,
                                     repeated_ngram_fraction, wilson)


def test_clopper_pearson_matches_the_textbook_values():
    assert clopper_pearson(3, 10) == pytest.approx((0.06674, 0.65245), abs=1e-4)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.30850), abs=1e-4)
    assert clopper_pearson(10, 10) == pytest.approx((0.69150, 1.0), abs=1e-4)


def test_poisson_ratio_has_no_floor_and_says_what_it_rests_on():
    lift = poisson_ratio(60, 6400, 3, 6400)
    assert lift.value == pytest.approx(20.0)
    assert lift.lo == pytest.approx(6.52, abs=0.01) and lift.hi == pytest.approx(99.7, rel=0.01)
    assert (lift.numerator, lift.denominator) == (60, 3)
    none_unsteered = poisson_ratio(5, 6400, 0, 6400)  # the old code floored this to 10x
    assert none_unsteered.value == math.inf and none_unsteered.hi == math.inf
    assert 0.5 < none_unsteered.lo < 1.0  # five events against none is weak evidence
    assert math.isnan(poisson_ratio(0, 100, 0, 100).value)
    equal = poisson_ratio(30, 1000, 30, 1000)
    assert equal.lo < 1.0 < equal.hi


def test_poisson_ratio_uses_the_exposures():
    assert poisson_ratio(10, 100, 10, 200).value == pytest.approx(2.0)
    with pytest.raises(ValueError, match="exposures"):
        poisson_ratio(1, 0, 1, 10)


def test_paired_difference_of_fire_rates():
    always_vs_never = paired_difference([True] * 32, [False] * 32)
    assert always_vs_never.value == 1.0 and always_vs_never.lo > 0.84  # Wilson(32/32) lower bound: 0.893
    same = paired_difference([True, False] * 16, [True, False] * 16)
    assert same.value == 0.0 and same.lo < 0.0 < same.hi
    # the interval is never wider than the unpaired one built from the two Wilson intervals
    s, b = [True] * 20 + [False] * 12, [True] * 5 + [False] * 27
    paired = paired_difference(s, b)
    ws, wb = wilson(20, 32), wilson(5, 32)
    assert paired.value == pytest.approx(15 / 32)
    assert paired.lo >= (ws.value - wb.value) - math.hypot(ws.value - ws.lo, wb.hi - wb.value) - 1e-9
    with pytest.raises(ValueError, match="paired"):
        paired_difference([True], [True, False])


def test_repeated_ngrams():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5]) == 0.0
    assert repeated_ngram_fraction([7, 8, 9] * 4) == pytest.approx(1 - 3 / 10)
    assert math.isnan(repeated_ngram_fraction([1, 2]))


def test_paired_rate_ratio_widens_for_clustered_events_only():
    """Events spread evenly: about the Poisson interval. The same totals packed into a few
    samples (as when a steered sample turns into a list of danger words): much wider. Zero
    baseline events: the Poisson part keeps a finite lower bound. Deterministic."""
    n, tokens = 256, [100] * 256
    spread = [1] * 128 + [0] * 128                 # 128 events, one per sample
    base = [0, 1] * 32 + [0] * 192                 # 32 events, one per sample
    even = paired_rate_ratio(spread, tokens, base, tokens)
    exact = poisson_ratio(128, 100 * n, 32, 100 * n)
    assert even.value == pytest.approx(4.0) and (even.numerator, even.denominator) == (128, 32)
    assert even.lo <= exact.lo and even.hi >= exact.hi
    assert even.hi / even.lo < 1.3 * exact.hi / exact.lo   # close to Poisson here
    packed = [32] * 4 + [0] * 252                   # the same 128 events in 4 samples
    clustered = paired_rate_ratio(packed, tokens, base, tokens)
    assert clustered.value == pytest.approx(4.0)
    assert clustered.lo < 0.5 * exact.lo and clustered.hi > 1.3 * exact.hi
    none = paired_rate_ratio([1] * 20 + [0] * 236, tokens, [0] * n, tokens)
    assert none.value == math.inf and 1 < none.lo < math.inf and none.hi == math.inf
    assert paired_rate_ratio(packed, tokens, base, tokens) == clustered
    assert "bootstrap" in clustered.method and "Poisson" in clustered.method
    with pytest.raises(ValueError, match="paired samples differ"):
        paired_rate_ratio([1, 2], [10, 10], [1], [10])
