"""Scoring one model: how well it predicts each task on one split.

* binary attributes (CelebA): per-attribute accuracy beside its majority-class baseline,
  balanced accuracy and F1 (:func:`attribute_table`), mean task accuracy and exact-match
  accuracy (:func:`summary`), all from one pass over the data (:func:`evaluate_attributes`);
* :func:`predict_with_labels` -- a model's logits beside the labels, traced once per model.

A label of -1 means "unknown" here as everywhere: it is left out of every score. Comparing
runs over seeds (the noise rule, mean rank) is :mod:`mtlkit.analysis.across_seeds`'s.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtlkit import work
from mtlkit.data.celeba_images import damaged_images_named
from mtlkit.data.celeba_labels import UNKNOWN
from mtlkit.models import tasks as task_utils

MEAN_ROW = "mean over tasks"
"""The last row of :func:`attribute_table`: the mean of the attribute rows."""

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
    A dataset without labels for an output (a typo in a key), unbatched, or with labels that
    are not whole numbers (soft labels, NaN) is a ``ValueError`` naming the fix.
    """
    tasks, predict = list(model.output_names), _inference(model)
    _check_dataset(dataset, tasks)
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
        {t: _whole(t, np.concatenate(labels[t])) for t in tasks},
        {t: np.concatenate(logits[t]) for t in tasks},
    )


def _whole(task: str, labels: np.ndarray) -> np.ndarray:
    """``labels`` as ints, or a ``ValueError`` naming ``task`` if some are not whole numbers
    (a soft label 0.9 or a NaN would silently become class 0)."""
    numbers = labels.astype(float)
    wrong = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if wrong.any():
        shown = sorted({str(v) for v in numbers[wrong].tolist()})[:5]
        raise ValueError(
            f"Task {task!r}'s labels in the dataset include {shown}: labels must be whole "
            "numbers (0 absent, 1 present, -1 unknown). Map soft labels or NaN to these."
        )
    return labels.astype(int)


def _check_dataset(dataset, tasks: Sequence[str]) -> None:
    """A ``tf.data.Dataset`` must yield batched ``(inputs, {task: labels})`` pairs with labels
    for every one of ``tasks`` (the model's outputs): else a ``ValueError`` with the fix."""
    if not isinstance(dataset, tf.data.Dataset):
        return  # an iterable of (x, y) batches: read as it is
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping)):
        raise ValueError(
            f"The dataset must yield (inputs, {{task: labels}}) pairs; its elements look like "
            f"{spec}. Map it into that form with dataset.map(lambda x, y: ...)."
        )
    missing = [t for t in tasks if t not in spec[1]]
    if missing:
        hints = {t: difflib.get_close_matches(t, [str(k) for k in spec[1]], 1) for t in missing}
        typos = "".join(f" ({h[0]!r} for {t!r}?)" for t, h in hints.items() if h)
        raise ValueError(
            f"The dataset has no labels for the model's output(s) {missing}; its label keys "
            f"are {sorted(spec[1])}{typos}. Name each label after the model output it scores."
        )
    if any(getattr(spec[1][t], "shape", None) is not None and spec[1][t].shape.rank == 0
           for t in tasks):  # fmt: skip
        raise ValueError(
            "The dataset's labels are scalars: it looks unbatched. Call .batch(n) on it "
            "(or use mtlkit.data.batched)."
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

    Refused with a ``ValueError`` naming the attribute: a majority class other than 0 or 1;
    logits of another length than the labels; NaN or infinite logits (a diverged model); and
    CelebA's own -1/1 labels, where -1 means "absent" (the check training makes).
    """
    _check_tasks(labels, logits, majority)
    _check_majority(majority)
    y, z = _checked_columns({t: labels[t] for t in majority}, logits)
    rows = {}
    for task in majority:  # the caller's task order (keras sorts a model's dict outputs)
        rows[task] = _attribute_row(y[task].astype(int), z[task], int(majority[task]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "attribute"
    table.loc[MEAN_ROW] = table.mean()
    return table


def _check_majority(majority: Mapping[str, int]) -> None:
    """Every majority class must be 0 or 1: a ``ValueError`` naming the others."""
    wrong = {t: c for t, c in majority.items() if not _is_class(c)}
    if wrong:
        raise ValueError(
            f"majority must map each attribute to its majority class, 0 or 1, got {wrong}: the "
            "class more frequent in the training labels, not its positive rate. Compute it "
            "with mtlkit.celeba.majority_classes(train_labels)."
        )


def _is_class(value) -> bool:
    """Whether ``value`` is the class 0 or 1 (an int, a bool or a whole float)."""
    try:
        return value in (0, 1) and not isinstance(value, str)
    except (TypeError, ValueError):  # an array, say
        return False


def _checked_columns(
    labels: Mapping[str, np.ndarray], logits: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each task's labels and logits as 1-D arrays of one length, the logits finite and the
    labels not CelebA's -1/1 file form; else a ``ValueError`` naming the task and the fix."""
    y = {t: np.asarray(labels[t]).reshape(-1) for t in labels}
    z = {t: np.asarray(logits[t], dtype=float).reshape(-1) for t in labels}
    for t in labels:
        if y[t].size != z[t].size:
            raise ValueError(
                f"Task {t!r} has {y[t].size} labels but {z[t].size} logits: pass the logits "
                "the model gave for the same examples, one per example (a binary head; "
                "predict_with_labels keeps them aligned)."
            )
        bad = int((~np.isfinite(z[t])).sum())
        if bad:
            raise ValueError(
                f"Task {t!r}: {bad} of its {z[t].size} logits are NaN or infinite: the model "
                "diverged (or its weights are broken). Retrain it, e.g. with a lower learning "
                "rate, or load the last good checkpoint; a NaN is not 'predicted absent'."
            )
    _check_label_values(y)
    _refuse_celeba_file_labels(y)
    return y, z


def _check_label_values(labels: Mapping[str, np.ndarray]) -> None:
    """Labels must be 0, 1 or -1 (unknown): a ``ValueError`` naming the task and the others
    (a soft label 0.9 or a NaN would be read as some class)."""
    for t, values in labels.items():
        numbers = np.asarray(values, dtype=float)
        wrong = ~np.isin(numbers, (0, 1, UNKNOWN))
        if wrong.any():
            shown = sorted({str(v) for v in numbers[wrong].tolist()})[:5]
            raise ValueError(
                f"Task {t!r} has labels {shown}: a binary label is 0 (absent), 1 (present) or "
                "-1 (unknown) and nothing else. Map other values (soft labels, NaN) to these."
            )


def _refuse_celeba_file_labels(labels: Mapping[str, np.ndarray]) -> None:
    """CelebA's own -1/1 labels (where -1 means "absent", not "unknown") get training's
    ``ValueError``: the same rule and message (:func:`mtlkit.models.tasks.check_label_forms`,
    given one logit per example)."""
    columns = {t: v for t, v in labels.items() if v.size}
    widths = {t: (None, 1) for t in columns}
    task_utils.check_label_forms(None, columns, widths, dict.fromkeys(columns, True))


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
    no example has all its labels. Refused as in :func:`attribute_table`: logits missing for
    a task or of another length, NaN or infinite logits, CelebA's -1/1 labels.
    """
    missing = [t for t in labels if t not in logits]
    if missing:
        raise ValueError(
            f"exact_match_accuracy needs logits for every task of labels: none for {missing} "
            f"(logits has {list(logits)}). Pass both from the same predict_with_labels."
        )
    y, z = _checked_columns(labels, logits)
    complete = np.all([_known(y[t]) for t in y], axis=0)
    if not complete.any():
        return float("nan")
    right = [(y[t] == 1) == (z[t] > 0) for t in y]
    return float(np.mean(np.all(right, axis=0)[complete]))


def summary(table: pd.DataFrame, exact_match: float) -> pd.Series:
    """The headline numbers: mean task accuracy, its majority baseline, exact match."""
    mean = table.loc[MEAN_ROW]
    return pd.Series(
        {
            "mean task accuracy": mean["accuracy"],
            "mean majority baseline": mean["majority_baseline"],
            "mean balanced accuracy": mean["balanced_accuracy"],
            "exact-match accuracy": exact_match,
            "tasks beating their baseline": int((table["vs_majority"].drop(MEAN_ROW) > 0).sum()),
        }
    )


def evaluate_attributes(
    model: keras.Model,
    dataset: tf.data.Dataset,
    majority: Mapping[str, int],
    tasks: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Predict once over a batched dataset; return :func:`attribute_table` and :func:`summary`
    of ``tasks`` (default: every attribute of ``majority``; a single-task baseline: its one,
    given as ``["Male"]`` or ``"Male"``). Tasks that are not outputs of the model, or have no
    majority class, are refused before the pass over the data."""
    tasks = _chosen_tasks(model, majority, tasks)
    labels, logits = predict_with_labels(model, dataset)
    if tasks is not None:
        labels, logits = ({t: values[t] for t in tasks} for values in (labels, logits))
        majority = {t: majority[t] for t in tasks}
    table = attribute_table(labels, logits, majority)
    return table, summary(table, exact_match_accuracy(labels, logits))


def _chosen_tasks(
    model: keras.Model, majority: Mapping[str, int], tasks: Sequence[str] | str | None
) -> list[str] | None:
    """``tasks`` as a list (a single name is one task), checked against the model's outputs
    and ``majority``; ``None`` stays ``None`` (every attribute of ``majority``)."""
    if isinstance(tasks, str):
        tasks = [tasks]
    wanted = list(majority) if tasks is None else list(tasks)
    if not wanted:
        raise ValueError("evaluate_attributes needs at least one task to score; tasks is empty.")
    outputs = list(model.output_names)
    problems = []
    not_outputs = [t for t in wanted if t not in outputs]
    if not_outputs:
        problems.append(f"{not_outputs} are not outputs of model {model.name!r} ({outputs})")
    no_majority = [t for t in wanted if t not in majority]
    if no_majority:
        problems.append(f"{no_majority} have no majority class in majority ({list(majority)})")
    if problems:
        raise ValueError(
            f"evaluate_attributes cannot score tasks {wanted}: {'; '.join(problems)}. Name "
            "tasks among the model's outputs, with majority = "
            "mtlkit.celeba.majority_classes(train_labels) of the same attributes."
        )
    return None if tasks is None else wanted
