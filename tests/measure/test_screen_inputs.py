"""Bad inputs to a finished screen (``SteerabilityScreen``): a count that is not a count,
a saved screen that is missing or damaged. Each is refused with a message that says what
to do, never a bare ``JSONDecodeError`` or ``KeyError``.
"""
from __future__ import annotations

import json
import warnings

import pytest

from sae_steer.config import SelectConfig, SteerConfig
from sae_steer.measure import SteerabilityScreen

def _screen() -> SteerabilityScreen:
    """Two confirmed features by hand: 3 recommended, 5 missed."""
    row = dict(fires_gain=0.5, fires_gain_lo=0.35, fires_gain_hi=0.62, lift=4.0, lift_lo=3.1,
               scale=0.5)
    conf = {3: {**row, "feature": 3, "passed": ["own firing"], "strength": 1.2, "recommended": True},
            5: {**row, "feature": 5, "passed": [], "strength": 0.4, "recommended": False}}
    return SteerabilityScreen([3, 5], {}, conf, SelectConfig(), SteerConfig())


# -- how many features to recommend -------------------------------------------------------


@pytest.mark.parametrize("n", [-1, 0])
def test_recommended_refuses_a_count_below_one(n):
    with pytest.raises(ValueError, match=rf"n must be a positive integer.*got {n}"):
        _screen().recommended(n)


@pytest.mark.parametrize("n", [2.5, "3", True])
def test_recommended_refuses_a_count_that_is_not_an_integer(n):
    with pytest.raises(ValueError, match=r"n must be a positive integer"):
        _screen().recommended(n)


def test_nearest_misses_refuses_a_negative_count():
    with pytest.raises(ValueError, match=r"n must be a positive integer.*got -1"):
        _screen().nearest_misses(-1)


def test_a_valid_count_still_works():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer passed than asked: a warning, not an error
        assert _screen().recommended(1) == [3]
        assert _screen().recommended(5) == [3]
    assert [r["feature"] for r in _screen().nearest_misses(1)] == [5]


# -- a saved screen that is missing or damaged -------------------------------------------


@pytest.fixture
def saved(tmp_path):
    return _screen().save(tmp_path / "screen")


def test_a_saved_screen_round_trips(saved):
    back = SteerabilityScreen.load(saved)
    assert back.candidates == [3, 5] and back.confirmed == [3]


def test_loading_a_directory_without_a_screen_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no saved screen in .*nothing.*screen\.json"):
        SteerabilityScreen.load(tmp_path / "nothing")


def test_a_truncated_screen_json_is_reported_as_corrupt(saved):
    text = (saved / "screen.json").read_text()
    (saved / "screen.json").write_text(text[: len(text) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"screen\.json is corrupt \(not valid JSON: .*\); run the "
                       r"screen again, or remove .*screen to start afresh"):
        SteerabilityScreen.load(saved)


def test_an_empty_screen_json_is_reported_as_corrupt(saved):
    (saved / "screen.json").write_text("")
    with pytest.raises(ValueError, match=r"screen\.json is corrupt"):
        SteerabilityScreen.load(saved)


@pytest.mark.parametrize("content", [[1, 2], {"candidates": [3, 5]}, "screen"])
def test_a_screen_json_of_the_wrong_shape_is_reported_as_corrupt(saved, content):
    (saved / "screen.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"screen\.json is corrupt"):
        SteerabilityScreen.load(saved)


def test_a_corrupt_screen_config_names_the_file(saved):
    (saved / "select_config.json").write_text("{\"scales\": [0.5")
    with pytest.raises(ValueError, match=r"select_config\.json is not valid JSON"):
        SteerabilityScreen.load(saved)


def test_a_missing_steer_config_names_the_file(saved):
    (saved / "steer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"steer_config\.json does not exist"):
        SteerabilityScreen.load(saved)


def test_screen_features_on_a_damaged_path_says_to_remove_it(saved, tok_model, sae):
    """The screen resumes from ``path``: a damaged file there names the path to clear."""
    from sae_steer.config import SearchConfig
    from sae_steer.inspect.search import search_features
    from sae_steer.measure import screen_features

    (saved / "screen.json").write_text("{\"candidates\": [3,")
    search = search_features(tok_model, sae, ["Once upon a time there was a girl ."] * 4,
                             SearchConfig(k=2, context_size=16), progress=False)
    with pytest.raises(ValueError, match=r"screen\.json is corrupt.*remove"):
        screen_features(tok_model, sae, search, SelectConfig(scales=(0.5,), n_rank=2, n_confirm=1,
                        confirm_rounds=(2,), n_report=2), SteerConfig(max_new_tokens=3),
                        progress=False, path=saved)
