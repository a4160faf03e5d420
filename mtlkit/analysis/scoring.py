"""Scoring one model: how well it predicts each task on one split.

* binary attributes (CelebA): per-attribute accuracy beside its majority-class baseline,
  balanced accuracy and F1 (:func:`attribute_table`), mean task accuracy and exact-match
  accuracy (:func:`summary`), all from one pass over the data (:func:`evaluate_attributes`);
* :func:`predict_with_labels` -- a model's logits beside the labels, traced once per model.

A label of -1 means "unknown" here as everywhere: it is left out of every score. Comparing
runs over seeds (the noise rule, mean rank) is :mod:`mtlkit.analysis.across_seeds`'s.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtlkit import work
from mtlkit.data.celeba_images import damaged_images_named
from mtlkit.data.celeba_labels import UNKNOWN

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


_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> its inference step, traced once: the study runners reuse a model from run to run
(seed after seed), and so reuse this trace too."""


def _inference(model: keras.Model):
    """``model(x, training=False)`` as a traced function, made once per model (on JAX,
    Keras's own compiled ``predict_on_batch``)."""
    if keras.backend.backend() == "jax":
        return lambda x: model.predict_on_batch(np.asarray(x))
    if model not in _INFERENCE:
        ref = weakref.ref(model)  # (a strong reference would keep the model alive forever)
        _INFERENCE[model] = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)
    return _INFERENCE[model]


@damaged_images_named()  # a damaged image file in the data: a clear error
def predict_with_labels(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Labels and logits of a batched ``(image, {task: label})`` dataset, in one pass.

    Each batch's labels are kept beside the logits the model gives for its images, so the
    two stay aligned whether or not the dataset shuffles. Returns ``(labels, logits)``,
    dicts of 1-D arrays keyed by output name (one logit per example: binary heads).
    """
    tasks, predict = list(model.output_names), _inference(model)
    labels: dict[str, list] = {t: [] for t in tasks}
    logits: dict[str, list] = {t: [] for t in tasks}
    for x, y in dataset:
        out = predict(x)
        for t in tasks:
            labels[t].append(np.asarray(y[t]).reshape(-1))
            logits[t].append(np.asarray(out[t]).reshape(-1))
    if not labels[tasks[0]]:
        raise ValueError("The dataset gave no batches: is it empty (check its `limit`)?")
    work.add_images(model, sum(len(v) for v in labels[tasks[0]]), training=False)
    return (
        {t: np.concatenate(labels[t]).astype(int) for t in tasks},
        {t: np.concatenate(logits[t]) for t in tasks},
    )


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1 (positive class) of 0/1 predictions.

    Balanced accuracy averages the recalls of the classes present in ``y_true``; F1 is
    NaN when there are neither positives nor predicted positives (it is undefined then).
    """
    y_true = np.asarray(y_true)
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(
            f"binary_scores takes labels 0 and 1, got {sorted(set(np.unique(y_true).tolist()))}."
            " A -1 marks an unknown label: leave those examples out first (attribute_table "
            "does)."
        )
    y_true, y_pred = y_true.astype(bool), np.asarray(y_pred).astype(bool)
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


def _known(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the labels that are known (0 or 1): -1 marks an unknown label."""
    return np.asarray(labels) != UNKNOWN


def _attribute_row(y: np.ndarray, logits: np.ndarray, majority: int) -> dict[str, float]:
    """One row of :func:`attribute_table`, over the labelled examples of one attribute."""
    known = _known(y)
    y, predicted = y[known], np.asarray(logits).reshape(-1)[known] > 0
    if y.size == 0:  # every label unknown: nothing to score
        nan = float("nan")
        scores = {"accuracy": nan, "balanced_accuracy": nan, "f1": nan}
        baseline = positive_rate = nan
    else:
        scores = binary_scores(y, predicted)
        baseline, positive_rate = float(np.mean(y == majority)), float(np.mean(y))
    return {
        "accuracy": scores["accuracy"],
        "majority_baseline": baseline,
        "vs_majority": scores["accuracy"] - baseline,
        "balanced_accuracy": scores["balanced_accuracy"],
        "f1": scores["f1"],
        "positive_rate": positive_rate,
        "labelled": int(y.size),
    }


def attribute_table(
    labels: Mapping[str, np.ndarray],
    logits: Mapping[str, np.ndarray],
    majority: Mapping[str, int],
) -> pd.DataFrame:
    """Per-attribute scores in the report's form, with the majority baseline beside them.

    ``majority`` maps each attribute to its training-set majority class (see
    :func:`mtlkit.data.celeba.majority_classes`); its order is the row order, and every one of
    its attributes must be in ``labels`` and ``logits``. Columns: ``accuracy``,
    ``majority_baseline`` (accuracy of always predicting that class on these labels),
    ``vs_majority`` (accuracy minus baseline: negative means worse than the constant
    guess), ``balanced_accuracy``, ``f1``, ``positive_rate`` and ``labelled``.

    A label of -1 means "unknown" (see :func:`mtlkit.data.celeba_labels.with_hidden_labels`):
    each attribute is scored over its labelled examples only, and ``labelled`` counts them
    (an attribute with none gets NaN scores). A last row, ``mean over tasks``, averages
    the columns (NaN rows left out): its accuracy is the report's "overall accuracy".
    """
    _check_tasks(labels, logits, majority)
    rows = {}
    for task in majority:  # the caller's task order (keras sorts a model's dict outputs)
        y = np.asarray(labels[task]).reshape(-1).astype(int)
        rows[task] = _attribute_row(y, logits[task], majority[task])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "attribute"
    table.loc["mean over tasks"] = table.mean()
    return table


def _check_tasks(
    labels: Mapping[str, np.ndarray],
    logits: Mapping[str, np.ndarray],
    majority: Mapping[str, int],
) -> None:
    """``ValueError`` naming the tasks that ``labels``, ``logits`` and ``majority`` do not share."""
    problems = []
    for name, mapping in (("labels", labels), ("logits", logits)):
        missing = [t for t in majority if t not in mapping]
        if missing:
            problems.append(f"{missing} not in {name}")
    unscored = [t for t in labels if t not in majority]
    if unscored:
        problems.append(f"{unscored} have labels but no majority class")
    if problems:
        raise ValueError(
            f"attribute_table scores the tasks of majority ({list(majority)}), which must "
            f"match those of labels and logits: {'; '.join(problems)}. Compute majority from "
            "the training labels of the same tasks (mtlkit.celeba.majority_classes)."
        )


def exact_match_accuracy(
    labels: Mapping[str, np.ndarray], logits: Mapping[str, np.ndarray]
) -> float:
    """Fraction of examples with every attribute predicted right at once.

    Counted over the examples whose every label is known: an example with any label -1
    ("unknown") is left out, since whether it is an exact match cannot be told. NaN when
    no example has all its labels.
    """
    y = {t: np.asarray(labels[t]).reshape(-1) for t in labels}
    complete = np.all([_known(y[t]) for t in y], axis=0)
    if not complete.any():
        return float("nan")
    right = [(y[t] == 1) == (np.asarray(logits[t]).reshape(-1) > 0) for t in y]
    return float(np.mean(np.all(right, axis=0)[complete]))


def summary(table: pd.DataFrame, exact_match: float) -> pd.Series:
    """The headline numbers: mean task accuracy, its majority baseline, exact match."""
    mean = table.loc["mean over tasks"]
    return pd.Series(
        {
            "mean task accuracy": mean["accuracy"],
            "mean majority baseline": mean["majority_baseline"],
            "mean balanced accuracy": mean["balanced_accuracy"],
            "exact-match accuracy": exact_match,
            "tasks beating their baseline": int(
                (table["vs_majority"].drop("mean over tasks") > 0).sum()
            ),
        }
    )


def evaluate_attributes(
    model: keras.Model,
    dataset: tf.data.Dataset,
    majority: Mapping[str, int],
    tasks: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Predict once over a batched dataset; return :func:`attribute_table` and :func:`summary`
    of ``tasks`` (default: every attribute of ``majority``; a single-task baseline: its one)."""
    labels, logits = predict_with_labels(model, dataset)
    if tasks is not None:
        labels, logits = ({t: values[t] for t in tasks} for values in (labels, logits))
        majority = {t: majority[t] for t in tasks}
    table = attribute_table(labels, logits, majority)
    return table, summary(table, exact_match_accuracy(labels, logits))
