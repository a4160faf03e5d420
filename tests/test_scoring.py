"""Binary-attribute evaluation against hand-computed values."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlkit.analysis import published, scoring
from mtlkit.data import celeba, celeba_labels
from mtlkit.models import tasks as task_utils

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


RAW = r"-1 and 1 and never 0.*\(labels \+ 1\) // 2"
"""Training's message for CelebA's own -1/1 labels (mtlkit.models.tasks.check_label_forms)."""


# --------------------------------------------------- CelebA's -1/1 labels (-1 = absent)
def test_celeba_file_labels_are_refused_by_scoring_as_by_training():
    labels = {"Smiling": np.array([-1, 1, -1, -1, 1, -1])}  # the file's form: 2 of 6 smile
    logits = {"Smiling": np.array([-2.0, 1.5, -0.5, 0.7, 2.0, -1.0])}
    with pytest.raises(ValueError, match=rf"'Smiling'.*{RAW}"):
        scoring.attribute_table(labels, logits, {"Smiling": 0})
    with pytest.raises(ValueError, match=RAW):
        scoring.exact_match_accuracy(labels, logits)
    converted = {"Smiling": (labels["Smiling"] + 1) // 2}
    table = scoring.attribute_table(converted, logits, {"Smiling": 0})
    assert table.loc["Smiling", "labelled"] == 6
    assert table.loc["Smiling", "accuracy"] == pytest.approx(5 / 6)


def test_all_present_with_a_few_unknown_is_not_the_file_form():
    """Training's rule: 1s and -1s but no 0 are the file form only from a quarter of -1s on."""
    labels = {"Young": np.array([1, 1, 1, 1, 1, -1])}  # every known label positive
    table = scoring.attribute_table(labels, {"Young": np.ones(6)}, {"Young": 1})
    assert table.loc["Young", "labelled"] == 5 and table.loc["Young", "accuracy"] == 1.0


def test_majority_classes_refuses_celeba_file_labels():
    with pytest.raises(ValueError, match=rf"'Eyeglasses'.*{RAW}"):
        celeba.majority_classes({"Eyeglasses": np.array([-1, -1, 1, -1, -1])})
    assert celeba.majority_classes({"Eyeglasses": np.array([0, 0, 1, -1, 0])}) == {"Eyeglasses": 0}


@pytest.mark.parametrize(
    "column",
    [[1, -1, -1, 1], [1, 1, 1, -1], [1, 1, 1, 1, 1, -1], [0, 1, -1, -1], [-1, -1], [1, 1]],
)
def test_majority_and_training_read_the_file_form_alike(column):
    """celeba_labels (data layer) copies training's rule: both must agree on every column."""
    labels = np.array(column)
    try:
        task_utils.check_label_forms(None, {"t": labels}, {"t": (None, 1)}, {"t": True})
        refused_by_training = False
    except ValueError:
        refused_by_training = True
    assert celeba_labels.raw_celeba_form(labels) == refused_by_training


# ------------------------------------------------------------ attribute_table, exact match
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_logits_are_a_diverged_model_not_predicted_absent(bad):
    labels = {"Bald": np.array([0, 0, 0, 0, 1])}
    logits = {"Bald": np.array([-1.0, -2.0, bad, -0.5, 1.0])}
    with pytest.raises(
        ValueError, match=r"'Bald': 1 of its 5 logits are NaN or infinite.*diverged"
    ):
        scoring.attribute_table(labels, logits, {"Bald": 0})
    with pytest.raises(ValueError, match="'Bald'.*NaN or infinite"):
        scoring.exact_match_accuracy(labels, logits)


@pytest.mark.parametrize("majority", [0.42, 2, -1, "1", np.nan])
def test_majority_must_be_the_class_0_or_1(majority):
    labels, logits = {"Bangs": np.array([0, 1, 0])}, {"Bangs": np.array([-1.0, 1.0, -1.0])}
    with pytest.raises(ValueError, match=r"majority class, 0 or 1.*not its positive rate"):
        scoring.attribute_table(labels, logits, {"Bangs": majority})


def test_majority_given_as_true_or_a_numpy_int_is_a_class():
    labels, logits = {"Bangs": np.array([0, 1, 1])}, {"Bangs": np.array([-1.0, 1.0, 1.0])}
    for majority in (True, np.int64(1), 1.0):
        table = scoring.attribute_table(labels, logits, {"Bangs": majority})
        assert table.loc["Bangs", "majority_baseline"] == pytest.approx(2 / 3)


def test_logits_of_another_length_name_the_task():
    labels = {"Male": np.array([0, 1, 1, 0, 1])}
    with pytest.raises(ValueError, match="'Male' has 5 labels but 4 logits"):
        scoring.attribute_table(labels, {"Male": np.zeros(4)}, {"Male": 0})
    two_logits = {"Male": np.zeros((5, 2))}  # a two-logit head
    with pytest.raises(ValueError, match="'Male' has 5 labels but 10 logits.*one per example"):
        scoring.exact_match_accuracy(labels, two_logits)


@pytest.mark.parametrize("bad", [0.7, np.nan, 2])
def test_labels_other_than_0_1_and_unknown_are_named(bad):
    labels = {"Chubby": np.array([0.0, 1.0, bad, 0.0])}
    with pytest.raises(ValueError, match=r"'Chubby' has labels.*0 \(absent\), 1 \(present\)"):
        scoring.attribute_table(labels, {"Chubby": np.zeros(4)}, {"Chubby": 0})


def test_exact_match_needs_logits_for_every_labelled_task():
    labels = {"Male": np.array([0, 1]), "Bald": np.array([0, 0])}
    with pytest.raises(ValueError, match=r"none for \['Bald'\]"):
        scoring.exact_match_accuracy(labels, {"Male": np.array([-1.0, 1.0])})


# ------------------------------------------------------------------ evaluate_attributes
def two_heads() -> keras.Model:
    """Logit of 'Male' = x0, of 'Smiling' = x1."""
    inputs = keras.Input((2,))
    return keras.Model(
        inputs,
        {
            "Male": keras.layers.Lambda(lambda x: x[:, :1], name="Male")(inputs),
            "Smiling": keras.layers.Lambda(lambda x: x[:, 1:], name="Smiling")(inputs),
        },
    )


def faces(labels: dict, batch: int | None = 4) -> tf.data.Dataset:
    x = np.random.default_rng(3).normal(size=(12, 2)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, labels(x) if callable(labels) else labels))
    return ds.batch(batch) if batch else ds


def right(x):
    return {"Male": (x[:, 0] > 0).astype("int32"), "Smiling": (x[:, 1] > 0).astype("int32")}


MAJORITY = {"Male": 0, "Smiling": 1}


def test_a_label_key_typo_is_named_with_the_close_match():
    ds = faces(lambda x: {"male": right(x)["Male"], "Smiling": right(x)["Smiling"]})
    with pytest.raises(
        ValueError, match=r"no labels for the model's output\(s\) \['Male'\].*'male' for 'Male'"
    ):
        scoring.evaluate_attributes(two_heads(), ds, MAJORITY)


def test_tasks_given_as_one_name_score_that_task():
    table, headline = scoring.evaluate_attributes(two_heads(), faces(right), MAJORITY, "Smiling")
    assert list(table.index) == ["Smiling", "mean over tasks"]
    assert headline["exact-match accuracy"] == 1.0


def test_tasks_the_model_or_majority_lacks_are_named_before_predicting():
    model = two_heads()
    with pytest.raises(
        ValueError, match=r"\['Wearing_Hat'\] are not outputs of model.*no majority"
    ):
        scoring.evaluate_attributes(model, faces(right), MAJORITY, ["Wearing_Hat"])
    with pytest.raises(ValueError, match=r"\['Smiling'\] have no majority class"):
        scoring.evaluate_attributes(model, faces(right), {"Male": 0}, ["Male", "Smiling"])


def test_an_unbatched_dataset_is_named():
    with pytest.raises(ValueError, match=r"looks unbatched. Call \.batch\(n\)"):
        scoring.evaluate_attributes(two_heads(), faces(right, batch=None), MAJORITY)


def test_soft_labels_in_the_dataset_are_not_truncated_to_0():
    soft = faces(lambda x: {k: v * 0.9 for k, v in right(x).items()})  # 0.9 for present
    with pytest.raises(ValueError, match=r"'Male'.*labels must be whole numbers"):
        scoring.predict_with_labels(two_heads(), soft)
