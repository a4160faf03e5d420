"""across_seeds.mean_rank: MR by hand, ties, directions, wrong versions caught, bad input."""

import numpy as np
import pandas as pd
import pytest

from mtlkit.analysis import across_seeds

# Three methods, two metrics: accuracy (higher is better) and error (lower is better).
#   accuracy: A 0.90 > B 0.80 > C 0.70       -> ranks A 1, B 2, C 3
#   error:    B 0.10 < C 0.20 < A 0.30       -> ranks B 1, C 2, A 3
#   MR:       A (1 + 3) / 2 = 2.0, B (2 + 1) / 2 = 1.5, C (3 + 2) / 2 = 2.5
VALUES = pd.DataFrame(
    {"accuracy": [0.90, 0.80, 0.70], "error": [0.30, 0.10, 0.20]}, index=["A", "B", "C"]
)
DIRECTIONS = {"accuracy": True, "error": False}
EXPECTED = {"A": 2.0, "B": 1.5, "C": 2.5}

# Four methods, three metrics with ties (all higher-is-better):
#   m1: 5, 5, 3, 1   -> the two 5s share ranks 1 and 2: 1.5, 1.5; then 3, 4
#   m2: 2, 2, 2, 9   -> D first (1); the three 2s share ranks 2, 3, 4: 3 each
#   m3: 7, 7, 7, 7   -> all tied: (1 + 2 + 3 + 4) / 4 = 2.5 each
#   MR: A (1.5 + 3 + 2.5) / 3 = 7/3, B 7/3, C (3 + 3 + 2.5) / 3 = 8.5/3, D (4 + 1 + 2.5) / 3 = 2.5
TIED = pd.DataFrame(
    {"m1": [5, 5, 3, 1], "m2": [2, 2, 2, 9], "m3": [7, 7, 7, 7]}, index=["A", "B", "C", "D"]
)
TIED_EXPECTED = {"A": 7 / 3, "B": 7 / 3, "C": 8.5 / 3, "D": 2.5}


def check(mean_rank) -> None:
    """The hand-computed answers: any implementation of MR must give them."""
    got = mean_rank(VALUES, DIRECTIONS)
    assert list(got.index) == ["A", "B", "C"]
    np.testing.assert_allclose(got.to_numpy(), [EXPECTED[m] for m in got.index])
    got = mean_rank(TIED, True)
    np.testing.assert_allclose(got.to_numpy(), [TIED_EXPECTED[m] for m in got.index])


def test_mean_rank_by_hand():
    check(across_seeds.mean_rank)
    result = across_seeds.mean_rank(VALUES, DIRECTIONS)
    assert result.name == "MR"
    assert list(result.sort_values().index) == ["B", "A", "C"]  # best first


def test_metric_ranks_by_hand():
    ranks = across_seeds.metric_ranks(VALUES, DIRECTIONS)
    expected = pd.DataFrame({"accuracy": [1.0, 2.0, 3.0], "error": [3.0, 1.0, 2.0]},
                            index=["A", "B", "C"])  # fmt: skip
    pd.testing.assert_frame_equal(ranks, expected)


def test_ties_share_the_average_of_their_ranks():
    ranks = across_seeds.metric_ranks(TIED, True)
    assert ranks.loc[["A", "B"], "m1"].tolist() == [1.5, 1.5]
    assert ranks.loc[["A", "B", "C"], "m2"].tolist() == [3.0, 3.0, 3.0]
    assert ranks["m3"].tolist() == [2.5] * 4
    n = len(TIED)
    assert (ranks.sum() == n * (n + 1) / 2).all()  # each column's ranks: 1 + 2 + ... + n


def test_direction_reverses_the_ranks():
    high = across_seeds.metric_ranks(VALUES, True)
    low = across_seeds.metric_ranks(VALUES, False)
    n = len(VALUES)
    pd.testing.assert_frame_equal(low, n + 1 - high)  # no ties: rank r becomes n + 1 - r
    # one bool for all metrics is the same as a mapping giving it to each
    pd.testing.assert_frame_equal(
        across_seeds.metric_ranks(VALUES, False),
        across_seeds.metric_ranks(VALUES, {"accuracy": False, "error": False}),
    )
    # the mean of all methods' MR is (n + 1) / 2, whatever the directions
    for directions in (True, False, DIRECTIONS):
        assert across_seeds.mean_rank(VALUES, directions).mean() == pytest.approx((n + 1) / 2)


def test_a_single_method_ranks_first():
    assert across_seeds.mean_rank(VALUES.loc[["C"]], DIRECTIONS).tolist() == [1.0]


# -- deliberately wrong implementations: the hand-computed check must reject each ---------
def _ignores_direction(values, higher_is_better):  # every metric as if higher were better
    return values.rank(ascending=False, method="average").mean(axis=1)


def _ties_take_the_best_rank(values, higher_is_better):  # "min": tied methods both get 1
    ascending = {m: not across_seeds._higher_is_better(list(values), higher_is_better)[m]
                 for m in values}  # fmt: skip
    ranks = {m: values[m].rank(ascending=ascending[m], method="min") for m in values}
    return pd.DataFrame(ranks).mean(axis=1)


def _ranks_from_zero(values, higher_is_better):  # 0 for the best
    return across_seeds.mean_rank(values, higher_is_better) - 1


def _ranks_the_other_way(values, higher_is_better):  # 1 for the worst
    return len(values) + 1 - across_seeds.mean_rank(values, higher_is_better)


def _averages_values_not_ranks(values, higher_is_better):  # mean of the raw numbers
    return values.mean(axis=1)


@pytest.mark.parametrize(
    "wrong",
    [
        _ignores_direction,
        _ties_take_the_best_rank,
        _ranks_from_zero,
        _ranks_the_other_way,
        _averages_values_not_ranks,
    ],
)
def test_a_wrong_implementation_fails_the_check(wrong):
    with pytest.raises(AssertionError):
        check(wrong)


# -- bad input ----------------------------------------------------------------------------
def test_a_nan_is_refused_naming_method_and_metric():
    values = VALUES.copy()
    values.loc["B", "error"] = np.nan
    values.loc["C", "accuracy"] = np.inf
    with pytest.raises(ValueError, match=r"\('B', 'error'\)") as info:
        across_seeds.mean_rank(values, DIRECTIONS)
    assert "('C', 'accuracy')" in str(info.value)
    assert "NaN or infinite" in str(info.value)


@pytest.mark.parametrize(
    "values, match",
    [
        (pd.DataFrame(), "at least one method"),
        (pd.DataFrame(index=["A", "B"]), "at least one method"),
        (pd.DataFrame({"accuracy": []}), "at least one method"),
        (pd.DataFrame({"accuracy": ["high", "low"]}, index=["A", "B"]), "not numbers"),
        (pd.DataFrame([[1.0], [2.0]], index=["A", "A"], columns=["accuracy"]), "repeated"),
    ],
    ids=["empty", "no metrics", "no methods", "text", "repeated method"],
)
def test_tables_that_cannot_be_ranked(values, match):
    with pytest.raises(ValueError, match=match):
        across_seeds.mean_rank(values, True)


def test_not_a_dataframe_is_refused():
    with pytest.raises(TypeError, match="DataFrame"):
        across_seeds.mean_rank({"accuracy": [0.9, 0.8]}, True)


def test_a_metric_of_unknown_direction_is_refused():
    with pytest.raises(ValueError, match=r"none given for \['error'\]"):
        across_seeds.mean_rank(VALUES, {"accuracy": True})
    with pytest.raises(ValueError, match=r"\['eror'\] are not columns"):  # a typo
        across_seeds.mean_rank(VALUES, {"accuracy": True, "error": False, "eror": False})
    with pytest.raises(TypeError, match="True or False"):
        across_seeds.mean_rank(VALUES, {"accuracy": "higher", "error": False})
    with pytest.raises(TypeError, match="mapping"):
        across_seeds.mean_rank(VALUES, "higher")
