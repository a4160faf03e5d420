"""Evaluating multi-task models.

Sections (each self-contained; add new ones below, leave the others alone):

* binary attributes (CelebA): per-attribute accuracy beside its majority-class baseline,
  balanced accuracy and F1; mean task accuracy and exact-match accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf


# =========================================================================================
# Binary attributes (CelebA)
# =========================================================================================
#
# Models output one logit per attribute; a logit > 0 predicts the attribute present.
# The majority-class baseline of an attribute always predicts the class that is more
# frequent in the *training* labels, and is scored on the evaluated split. It is the
# accuracy a model gets for free: 0.958 for Wearing_Hat on CelebA's test split, so the
# 2023 report's 0.7972 for Wearing_Hat is *worse* than never predicting a hat.
# Balanced accuracy (mean of the recall on positives and on negatives) is 0.5 for that
# constant predictor whatever the imbalance, and F1 of the positive class is 0 for it.

def predict_with_labels(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Labels and logits of a batched ``(image, {task: label})`` dataset, in one pass.

    The model is wrapped so that ``model.predict`` returns the labels it was fed beside
    the logits: one iteration over ``dataset`` (shuffled or not, the two stay aligned).
    Returns ``(labels, logits)``, dicts of 1-D arrays keyed by output name.
    """
    tasks = list(model.output_names)
    image_spec, label_spec = dataset.element_spec
    image = keras.Input(shape=image_spec.shape[1:], dtype=image_spec.dtype, name="image")
    labels = {t: keras.Input(shape=(), dtype="int32", name=f"label_{t}") for t in tasks}
    logits = model(image)
    outputs = {f"logits/{t}": logits[t] for t in tasks}
    outputs.update({f"label/{t}": keras.layers.Identity()(labels[t]) for t in tasks})
    wrapper = keras.Model({"image": image, **{f"label_{t}": v for t, v in labels.items()}},
                          outputs)
    feed = dataset.map(
        lambda x, y: ({"image": x, **{f"label_{t}": tf.cast(y[t], tf.int32) for t in tasks}},)
    )
    result = wrapper.predict(feed, verbose=0)
    return (
        {t: np.asarray(result[f"label/{t}"]).reshape(-1).astype(int) for t in tasks},
        {t: np.asarray(result[f"logits/{t}"]).reshape(-1) for t in tasks},
    )


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1 (positive class) of 0/1 predictions.

    Balanced accuracy averages the recalls of the classes present in ``y_true``; F1 is
    NaN when there are neither positives nor predicted positives (it is undefined then).
    """
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = np.sum(y_true & y_pred)
    fp = np.sum(~y_true & y_pred)
    fn = np.sum(y_true & ~y_pred)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in (True, False) if np.any(y_true == c)]
    denominator = 2 * tp + fp + fn
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(recalls)),
        "f1": float(2 * tp / denominator) if denominator else float("nan"),
    }


def attribute_table(
    labels: Mapping[str, np.ndarray],
    logits: Mapping[str, np.ndarray],
    majority: Mapping[str, int],
) -> pd.DataFrame:
    """Per-attribute scores in the report's form, with the majority baseline beside them.

    ``majority`` maps each attribute to its training-set majority class (see
    :func:`mtlkit.celeba.majority_classes`). Columns: ``accuracy``, ``majority_baseline``
    (accuracy of always predicting that class on these labels), ``vs_majority``
    (accuracy minus baseline: negative means worse than the constant guess),
    ``balanced_accuracy``, ``f1`` and ``positive_rate``. A last row, ``mean over tasks``,
    averages the columns: its accuracy is the report's "overall accuracy".
    """
    rows = {}
    for task, y in labels.items():
        y = np.asarray(y).astype(int)
        scores = binary_scores(y, np.asarray(logits[task]) > 0)
        baseline = float(np.mean(y == majority[task]))
        rows[task] = {
            "accuracy": scores["accuracy"],
            "majority_baseline": baseline,
            "vs_majority": scores["accuracy"] - baseline,
            "balanced_accuracy": scores["balanced_accuracy"],
            "f1": scores["f1"],
            "positive_rate": float(np.mean(y)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "attribute"
    table.loc["mean over tasks"] = table.mean()
    return table


def exact_match_accuracy(labels: Mapping[str, np.ndarray], logits: Mapping[str, np.ndarray]) -> float:
    """Fraction of examples with every attribute predicted right at once."""
    right = [np.asarray(labels[t]).astype(bool) == (np.asarray(logits[t]) > 0) for t in labels]
    return float(np.mean(np.all(right, axis=0)))


def summary(table: pd.DataFrame, exact_match: float) -> pd.Series:
    """The headline numbers: mean task accuracy, its majority baseline, exact match."""
    mean = table.loc["mean over tasks"]
    return pd.Series({
        "mean task accuracy": mean["accuracy"],
        "mean majority baseline": mean["majority_baseline"],
        "mean balanced accuracy": mean["balanced_accuracy"],
        "exact-match accuracy": exact_match,
        "tasks beating their baseline": int((table["vs_majority"].drop("mean over tasks") > 0).sum()),
    })


def evaluate_attributes(
    model: keras.Model, dataset: tf.data.Dataset, majority: Mapping[str, int]
) -> tuple[pd.DataFrame, pd.Series]:
    """Predict once over a batched dataset; return :func:`attribute_table` and :func:`summary`."""
    labels, logits = predict_with_labels(model, dataset)
    table = attribute_table(labels, logits, majority)
    return table, summary(table, exact_match_accuracy(labels, logits))


def report_comparison(
    table: pd.DataFrame, reported: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Side by side: the 2023 report's test accuracies, their majority baselines and ours."""
    reported = REPORTED_ACCURACY if reported is None else reported
    shared = [a for a in table.index if a in reported]
    return pd.DataFrame({
        "report accuracy (2023)": [reported[a] for a in shared],
        "report vs majority": [reported[a] - REPORT_MAJORITY[a] for a in shared],
        "this run accuracy": table.loc[shared, "accuracy"].to_numpy(),
        "this run vs majority": table.loc[shared, "vs_majority"].to_numpy(),
    }, index=pd.Index(shared, name="attribute"))


REPORTED_ACCURACY = {
    "Male": 0.9688, "Smiling": 0.9115, "Young": 0.8638, "Eyeglasses": 0.9795,
    "Wearing_Hat": 0.7972, "Wearing_Necklace": 0.6718, "Wearing_Earrings": 0.8152,
    "Wearing_Lipstick": 0.9877,
}
"""Test accuracies of the 2023 report (ResNet18, ImageNet weights, 5 epochs); their mean
is 0.8744, the "overall accuracy" of its DST section."""

REPORT_MAJORITY = {
    "Male": 0.6135, "Smiling": 0.5003, "Young": 0.7571, "Eyeglasses": 0.9354,
    "Wearing_Hat": 0.9580, "Wearing_Necklace": 0.8621, "Wearing_Earrings": 0.7934,
    "Wearing_Lipstick": 0.5219,
}
"""Majority-class accuracy on CelebA's official test split (19,962 images)."""
