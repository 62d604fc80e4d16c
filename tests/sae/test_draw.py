"""random_features: a seeded draw of distinct features, optionally among some."""
import pytest
import torch

from builders import make_sae
from sae_steer.sae import random_features


def test_a_seed_fixes_the_draw_and_features_are_distinct():
    sae = make_sae(d_sae=32)
    first = random_features(sae, 5, seed=3)
    assert first == random_features(sae, 5, seed=3)
    assert len(set(first)) == 5 and all(0 <= f < 32 for f in first)
    assert random_features(sae, 5, seed=4) != first
    assert sorted(random_features(sae, 32)) == list(range(32))


def test_the_draw_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    random_features(make_sae(d_sae=32), 4, seed=1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_among_a_mask_or_indices():
    sae = make_sae(d_sae=8)
    alive = torch.tensor([0, 1, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    assert sorted(random_features(sae, 3, among=alive)) == [1, 3, 5]
    assert set(random_features(sae, 2, seed=7, among=[6, 2, 4])) <= {2, 4, 6}
    # the order the pool is given in does not change the draw
    assert random_features(sae, 2, seed=7, among=[6, 2, 4]) == random_features(
        sae, 2, seed=7, among=[2, 4, 6])


@pytest.mark.parametrize(("n", "among", "match"), [
    (0, None, "n must be an integer from 1 to 8"), (9, None, "from 1 to 8"),
    (2.0, None, "n must be an integer"), (2, [1], "from 1 to 1"),
    (1, [8], r"must be in 0\.\.7"), (1, torch.ones(4, dtype=torch.bool), "mask has 4 entries")])
def test_bad_requests_say_what_is_wanted(n, among, match):
    with pytest.raises(ValueError, match=match):
        random_features(make_sae(d_sae=8), n, among=among)
