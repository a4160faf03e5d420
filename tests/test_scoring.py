"""Binary-attribute evaluation against hand-computed values."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlkit.analysis import published, scoring

# Ten examples. "a": 4 positives; predictions (logit > 0) right on 3 of the 4 positives
# and on 5 of the 6 negatives. "b": all negative, the model never predicts it.
LABELS = {"a": np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0]), "b": np.zeros(10, int)}
LOGITS = {
    "a": np.array([2.0, 0.5, 0.1, -1.0, -3.0, -0.2, -0.1, -5.0, -2.0, 0.3]),
    "b": np.full(10, -1.0),
}


def test_binary_scores_hand_computed():
    scores = scoring.binary_scores(LABELS["a"], LOGITS["a"] > 0)
    # TP=3, FN=1, TN=5, FP=1
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert scores["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    none = scoring.binary_scores(LABELS["b"], LOGITS["b"] > 0)
    assert none["accuracy"] == 1.0 and none["balanced_accuracy"] == 1.0
    assert math.isnan(none["f1"])


def test_logit_zero_predicts_absent():
    scores = scoring.binary_scores(np.array([0, 1]), np.array([0.0, 0.0]) > 0)
    assert scores["accuracy"] == 0.5


def test_attribute_table_and_summary():
    # majority from the *training* labels: "a" was mostly positive there (class 1)
    table = scoring.attribute_table(LABELS, LOGITS, {"a": 1, "b": 0})
    assert table.loc["a", "majority_baseline"] == pytest.approx(0.4)
    assert table.loc["a", "vs_majority"] == pytest.approx(0.4)
    assert table.loc["b", "majority_baseline"] == 1.0
    assert table.loc["a", "positive_rate"] == pytest.approx(0.4)
    assert table.loc["mean over tasks", "accuracy"] == pytest.approx(0.9)
    exact = scoring.exact_match_accuracy(LABELS, LOGITS)
    assert exact == pytest.approx(0.8)
    headline = scoring.summary(table, exact)
    assert headline["mean task accuracy"] == pytest.approx(0.9)
    assert headline["exact-match accuracy"] == pytest.approx(0.8)
    assert headline["tasks beating their baseline"] == 1


def test_exact_match_needs_every_task_right():
    labels = {"a": np.array([1, 0, 1]), "b": np.array([0, 0, 1])}
    logits = {"a": np.array([1.0, -1.0, 1.0]), "b": np.array([-1.0, 1.0, -1.0])}
    assert scoring.exact_match_accuracy(labels, logits) == pytest.approx(1 / 3)


def test_report_comparison_shows_the_hat_problem():
    table = scoring.attribute_table(
        {"Wearing_Hat": np.array([0, 0, 1])},
        {"Wearing_Hat": np.array([-1.0, -1.0, 1.0])},
        {"Wearing_Hat": 0},
    )
    side = published.report_comparison(table)
    assert side.loc["Wearing_Hat", "report vs majority"] == pytest.approx(0.7972 - 0.9580)
    assert side.loc["Wearing_Hat", "this run vs majority"] == pytest.approx(1 / 3)
    assert list(side.index) == ["Wearing_Hat"]
    reported = published.reported_table()
    assert (reported["report vs majority"] < 0).sum() == 2  # Wearing_Hat, Wearing_Necklace
    assert np.mean(list(published.REPORTED_ACCURACY.values())) == pytest.approx(0.8744, abs=1e-4)


def test_predict_with_labels_one_pass_stays_aligned():
    """Labels come back in the order the (shuffled) dataset produced them."""
    inputs = keras.Input((2,), name="image")
    model = keras.Model(
        inputs,
        {
            "a": keras.layers.Lambda(lambda x: x[:, :1], name="a")(inputs),
            "b": keras.layers.Lambda(lambda x: x[:, 1:], name="b")(inputs),
        },
    )
    x = np.random.default_rng(0).normal(size=(50, 2)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int32"), "b": (x[:, 1] > 0).astype("int32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(50, seed=1).batch(8)
    labels, logits = scoring.predict_with_labels(model, ds)
    assert labels["a"].shape == (50,) and logits["b"].shape == (50,)
    for task in ("a", "b"):
        np.testing.assert_array_equal(labels[task], (logits[task] > 0).astype(int))
    table, headline = scoring.evaluate_attributes(model, ds, {"a": 0, "b": 0})
    assert headline["exact-match accuracy"] == 1.0
    assert (table["accuracy"] == 1.0).all()


# ------------------------------------------------------------------ bad input
# Six examples, three of them unknown (-1) for "a"; every prediction says "present".
PARTIAL_LABELS = {"a": np.array([-1, -1, -1, 0, 0, 1]), "b": np.array([0, 1, 0, 0, 1, 1])}
PARTIAL_LOGITS = {"a": np.full(6, 1.0), "b": np.array([-1.0, 1.0, -1.0, -1.0, 1.0, -1.0])}


def test_unknown_labels_are_left_out_of_each_attribute():
    table = scoring.attribute_table(PARTIAL_LABELS, PARTIAL_LOGITS, {"a": 0, "b": 0})
    # "a" over its three labelled examples (0, 0, 1): one of three predictions right
    assert table.loc["a", "accuracy"] == pytest.approx(1 / 3)
    assert table.loc["a", "positive_rate"] == pytest.approx(1 / 3)
    assert table.loc["a", "majority_baseline"] == pytest.approx(2 / 3)
    assert table.loc["a", "labelled"] == 3 and table.loc["b", "labelled"] == 6
    assert table.loc["b", "accuracy"] == pytest.approx(5 / 6)


def test_an_attribute_without_labels_scores_nan_not_a_number_from_nothing():
    labels = {"a": np.full(4, -1), "b": np.array([0, 1, 1, 0])}
    logits = {"a": np.ones(4), "b": np.array([-1.0, 1.0, 1.0, -1.0])}
    table = scoring.attribute_table(labels, logits, {"a": 0, "b": 1})
    assert table.loc["a", "labelled"] == 0 and math.isnan(table.loc["a", "accuracy"])
    assert table.loc["mean over tasks", "accuracy"] == 1.0  # the mean of the scored ones


def test_exact_match_counts_only_fully_labelled_examples():
    # examples 3, 4, 5 have both labels; 3 and 4 are right on both, 5 is wrong on "b"
    logits = {**PARTIAL_LOGITS, "a": np.array([1.0, 1.0, 1.0, -1.0, -1.0, 1.0])}
    assert scoring.exact_match_accuracy(PARTIAL_LABELS, logits) == pytest.approx(2 / 3)
    nothing = scoring.exact_match_accuracy({"a": np.full(3, -1)}, {"a": np.ones(3)})
    assert math.isnan(nothing)


def test_binary_scores_refuses_unknown_labels():
    with pytest.raises(ValueError, match=r"labels 0 and 1, got \[-1, 0, 1\].*unknown"):
        scoring.binary_scores(np.array([-1, 0, 1]), np.array([True, False, True]))


def test_attribute_table_names_a_task_without_majority_class():
    with pytest.raises(ValueError, match=r"\['b'\] have labels but no majority class"):
        scoring.attribute_table(LABELS, LOGITS, {"a": 1})
    with pytest.raises(ValueError, match=r"\['c'\] not in labels; \['c'\] not in logits"):
        scoring.attribute_table(LABELS, LOGITS, {"a": 1, "b": 0, "c": 0})
