"""Evaluating multi-task models.

Sections (each self-contained; add new ones below, leave the others alone):

* binary attributes (CelebA): per-attribute accuracy beside its majority-class baseline,
  balanced accuracy and F1; mean task accuracy and exact-match accuracy.
* results across seeds (CIFAR-100): the report's table with mean and spread over seeds.
* the noise rule, the one test every notebook uses to ask "did it help?": whether a
  difference over seeds is larger than seed-to-seed noise (a two-sample t-test), for one
  metric (:func:`compare_to_baseline`) or for every task (:func:`compare_tasks`).
* mean rank (MR), the recent papers' second summary beside Delta_m: each method's rank on
  every metric, averaged (:func:`metric_ranks`, :func:`mean_rank`).
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


# =========================================================================================
# Results across seeds (CIFAR-100)
# =========================================================================================
#
# One training run is one draw: a different seed gives a different initialisation, data
# order and augmentation, and a different final accuracy. A difference between two models
# means something only when it is larger than that seed-to-seed spread.

CIFAR_COLUMNS = {
    "fine loss": "fine_loss",
    "coarse loss": "coarse_loss",
    "fine acc": "fine_accuracy",
    "coarse acc": "coarse_accuracy",
}
"""The columns of the 2019 report's Table 2 and the history keys they come from."""


def final_values(
    runs: Mapping[str, Sequence[Mapping[str, Sequence[float]]]],
    *,
    prefix: str = "val_",
    columns: Mapping[str, str] = CIFAR_COLUMNS,
) -> pd.DataFrame:
    """Last-epoch values of every run: one row per (model, seed run), one column per metric.

    ``runs`` maps a model name to its histories (one per seed); ``prefix`` picks the split
    (``"val_"`` as in the report, ``"test_"``, or ``""`` for training).
    """
    rows = []
    for model, histories in runs.items():
        for i, history in enumerate(histories):
            missing = [f"{prefix}{k}" for k in columns.values() if f"{prefix}{k}" not in history]
            if missing:
                raise KeyError(f"The history of {model!r} (run {i}) has no {missing}.")
            row = {"model": model, "run": i}
            row.update({name: history[f"{prefix}{key}"][-1] for name, key in columns.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def seed_table(values: pd.DataFrame) -> pd.DataFrame:
    """The report's table with mean and spread across seeds: ``"49.09 ± 0.41"`` cells.

    Accuracies are shown in percent; the spread is the sample standard deviation across
    seeds (blank with a single seed, where it is unknown).
    """
    metrics = [c for c in values.columns if c not in ("model", "run")]
    grouped = values.groupby("model", sort=False)[metrics]
    mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.size()
    table = pd.DataFrame(index=mean.index)
    for metric in metrics:
        scale, digits = (100.0, 2) if "acc" in metric else (1.0, 3)
        table[metric] = [
            f"{scale * m:.{digits}f}" + ("" if k < 2 else f" ± {scale * s:.{digits}f}")
            for m, s, k in zip(mean[metric], std[metric], n)
        ]
    table["seeds"] = n
    return table


# =========================================================================================
# The noise rule: one test for every "did it help?" across seeds
# =========================================================================================
#
# Every notebook that compares two ways of training (notebook 02's architectures, notebook
# 05's runs with and without DST) asks the same question with the same test: is the
# difference of the means over seeds larger than the two-sample t-test's 95 % threshold?
# (compare_to_baseline; compare_tasks applies it to every task of a multi-task table.)

# Two-sided 95 % critical values of Student's t, by degrees of freedom.
_T95 = {
    1: 12.71,
    2: 4.30,
    3: 3.18,
    4: 2.78,
    5: 2.57,
    6: 2.45,
    7: 2.36,
    8: 2.31,
    9: 2.26,
    10: 2.23,
    12: 2.18,
    15: 2.13,
    20: 2.09,
    30: 2.04,
}


def t_critical(dof: int) -> float:
    """The two-sided 95 % critical value of Student's t (1.96 for large samples).

    ``dof`` (degrees of freedom) must be a positive whole number: two samples of n and m
    values have ``n + m - 2``, so a t-test needs at least three values in all.
    """
    if isinstance(dof, bool) or not isinstance(dof, (int, np.integer)) or dof < 1:
        raise ValueError(
            f"t_critical(dof={dof!r}): the degrees of freedom must be a positive whole "
            "number (n + m - 2 for two samples of n and m values); with none, seed-to-seed "
            "noise cannot be estimated. Run more seeds."
        )
    known = [d for d in _T95 if d <= dof]
    return 1.96 if dof > 30 else _T95[max(known)]


def compare_to_baseline(values: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """Is each model's difference from ``baseline`` larger than seed-to-seed noise?

    For each model: the difference of the means over seeds, its standard error (from both
    models' spreads), and a verdict from a two-sample t-test at the 95 % level: a
    difference smaller than ``t x standard error`` is "within noise". With few seeds the
    critical t is large (4.3 for two seeds each), which is the honest price of few runs;
    with one seed the noise cannot be estimated at all and the verdict says so. A value
    that is NaN (or infinite) makes that model's verdict "unknown", with the count of such
    values in it, and its difference and standard error NaN: a diverged or missing run is
    not silently dropped, nor allowed to decide the verdict.
    """
    grouped = values.groupby("model", sort=False)[metric]
    mean, var, n = grouped.mean(), grouped.var(ddof=1), grouped.size()
    if baseline not in mean.index:
        raise KeyError(f"No runs of the baseline {baseline!r}; models are {list(mean.index)}.")
    missing = grouped.apply(lambda v: int((~np.isfinite(v.to_numpy(float))).sum()))
    rows = []
    for model in mean.index:
        broken = [m for m in dict.fromkeys((model, baseline)) if missing[m]]
        diff = float("nan") if broken else mean[model] - mean[baseline]
        if broken:
            error = float("nan")
            verdict = (
                "unknown ("
                + "; ".join(
                    f"{missing[m]} of the {n[m]} {metric} values of {m!r} are NaN or infinite"
                    for m in broken
                )
                + ": a run diverged or was not evaluated; rerun or drop it)"
            )
        elif min(n[model], n[baseline]) < 2:
            error, verdict = float("nan"), "unknown (one seed: no spread to compare with)"
        else:
            error = float(np.sqrt(var[model] / n[model] + var[baseline] / n[baseline]))
            threshold = t_critical(int(n[model] + n[baseline] - 2)) * error
            if abs(diff) <= threshold or error == 0:
                verdict = "within noise" if error > 0 else "no spread measured: cannot tell"
            else:
                verdict = ("better" if diff > 0 else "worse") + " beyond noise"
        rows.append(
            {
                "model": model,
                f"{metric} difference": diff,
                "standard error": error,
                "verdict": "baseline" if model == baseline else verdict,
            }
        )
    return pd.DataFrame(rows).set_index("model")


def seed_values(
    tables: Mapping[str, Sequence[pd.DataFrame]], column: str = "accuracy"
) -> pd.DataFrame:
    """Per-seed attribute tables as :func:`compare_to_baseline` reads them.

    ``tables`` maps a model (or arm: ``"no DST"``, ``"DST"``) to its per-seed tables from
    :func:`attribute_table`. Returns one row per (model, run) with the ``column`` of every
    row of the tables (each attribute, and ``mean over tasks``) as columns.
    """
    rows = [{"model": model, "run": i, **table[column].to_dict()}
            for model, runs in tables.items() for i, table in enumerate(runs)]  # fmt: skip
    return pd.DataFrame(rows)


def compare_tasks(values: pd.DataFrame, baseline: str, tasks: Sequence[str]) -> pd.DataFrame:
    """:func:`compare_to_baseline` for every task column of ``values`` (see :func:`seed_values`).

    One row per (task, model other than ``baseline``): both means ± their spread over seeds
    (sample standard deviation), the difference, its standard error and the verdict.
    """
    rows = []
    for task in tasks:
        verdicts = compare_to_baseline(values, baseline, task).drop(baseline)
        grouped = values.groupby("model", sort=False)[task]
        mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
        for model, verdict in verdicts.iterrows():
            rows.append({
                "task": task, "model": model,
                baseline: f"{mean[baseline]:.4f} ± {std[baseline]:.4f}",
                "compared": f"{mean[model]:.4f} ± {std[model]:.4f}",
                "difference": verdict[f"{task} difference"],
                "standard error": verdict["standard error"], "verdict": verdict["verdict"],
            })  # fmt: skip
    return pd.DataFrame(rows).set_index("task")


# =========================================================================================
# Mean rank (MR) across methods
# =========================================================================================
#
# The papers since Nash-MTL (2022) -- FAMO, FairGrad and others -- summarise a table of
# methods x metrics by two numbers: Delta_m (the mean relative change against single-task
# models; mtlkit.analysis.comparison.delta_p is the same with the opposite sign) and MR,
# the mean rank. For every metric the methods are ranked, 1 for the best value; a method's
# MR is the average of its ranks over all metrics (lower is better). MR says nothing about
# the size of a difference: a method that loses every metric by 0.01 % ranks last.


def _checked_values(values: pd.DataFrame) -> pd.DataFrame:
    """``values`` as a float table, or an error for what cannot be ranked."""
    if not isinstance(values, pd.DataFrame):
        raise TypeError(
            f"mean_rank takes a pandas DataFrame (methods as rows, metrics as columns), got "
            f"{type(values).__name__}."
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(
            f"mean_rank needs at least one method (row) and one metric (column); the table "
            f"has {values.shape[0]} rows and {values.shape[1]} columns."
        )
    for axis, labels in (("method (row)", values.index), ("metric (column)", values.columns)):
        repeated = sorted({str(label) for label in labels[labels.duplicated()]})
        if repeated:
            raise ValueError(f"Each {axis} must appear once; repeated: {repeated}.")
    text = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if text:
        raise ValueError(f"Metric column(s) {text} are not numbers: rank numeric values only.")
    numbers = values.astype(float)
    bad = ~np.isfinite(numbers.to_numpy())
    if bad.any():
        cells = [f"({numbers.index[i]!r}, {numbers.columns[j]!r})" for i, j in np.argwhere(bad)]
        raise ValueError(
            f"(method, metric) {', '.join(cells)} is NaN or infinite: a missing result cannot "
            "be ranked. Fill it in, or leave that method or metric out of the table (a missing "
            "value is refused rather than ranked last or skipped, since either would change "
            "every other method's MR)."
        )
    return numbers


def _higher_is_better(metrics: Sequence, higher_is_better) -> dict:
    """``{metric: bool}`` for every metric, from one bool or a mapping, or a clear error."""
    if isinstance(higher_is_better, (bool, np.bool_)):
        return {m: bool(higher_is_better) for m in metrics}
    if not isinstance(higher_is_better, Mapping):
        raise TypeError(
            "higher_is_better must be True, False (the same for every metric) or a mapping "
            f"{{metric: True or False}}, got {type(higher_is_better).__name__}."
        )
    unknown = [m for m in metrics if m not in higher_is_better]
    extra = [m for m in higher_is_better if m not in set(metrics)]
    if unknown or extra:
        raise ValueError(
            f"higher_is_better must give a direction for exactly the table's metrics: none "
            f"given for {unknown}, and {extra} are not columns of the table. True where a "
            "larger value is better (accuracy, F1), False where a smaller one is (error, loss)."
        )
    wrong = {m: v for m, v in higher_is_better.items() if not isinstance(v, (bool, np.bool_))}
    if wrong:
        raise TypeError(f"higher_is_better values must be True or False, got {wrong}.")
    return {m: bool(higher_is_better[m]) for m in metrics}


def metric_ranks(values: pd.DataFrame, higher_is_better: bool | Mapping[str, bool]) -> pd.DataFrame:
    """Each method's rank on each metric: 1 for the best value, ``len(values)`` for the worst.

    ``values``: one row per method, one column per metric (numbers; no NaN, see
    :func:`mean_rank`). ``higher_is_better``: ``True`` or ``False`` for every metric, or a
    mapping ``{metric: True or False}`` naming every column and nothing else. **Ties share the
    average of the ranks they span** (two methods tied for best both get 1.5; pandas'
    ``rank(method="average")``), so every column's ranks add up to ``n (n + 1) / 2`` for n
    methods. Values are compared exactly as given: round them first to rank at the precision
    a paper prints.
    """
    numbers = _checked_values(values)
    directions = _higher_is_better(list(numbers.columns), higher_is_better)
    ranks = pd.DataFrame(index=numbers.index)
    for metric in numbers.columns:
        ranks[metric] = numbers[metric].rank(method="average", ascending=not directions[metric])
    return ranks


def mean_rank(values: pd.DataFrame, higher_is_better: bool | Mapping[str, bool]) -> pd.Series:
    """Mean rank (MR) of each method over all metrics, as reported by Nash-MTL, FAMO and FairGrad.

    For every column of ``values`` (methods as rows, metrics as columns) the methods are
    ranked, 1 = best, respecting each metric's direction (``higher_is_better``: one bool, or
    ``{metric: bool}`` for every column); a method's MR is the average of its ranks over the
    columns (:func:`metric_ranks`). **Lower is better**; with n methods MR lies between 1
    and n, and the MRs of all methods average ``(n + 1) / 2``. Ties get the average of the
    ranks they span (the papers do not say how they break ties; this is the usual choice).

    MR depends on which methods are in the table: adding a method changes the others' ranks,
    so compare MRs only within one table. Every metric weighs the same, however small its
    differences.

    Refused with a clear error: a table that is not a DataFrame or is empty; repeated method
    or metric names; non-numeric columns; a direction missing for a metric (or given for a
    name that is not a column); and **NaN or infinite values, with the (method, metric) of each
    named** -- ranking a missing result last, or skipping it, would silently change every other
    method's MR. Returns a Series indexed like ``values`` (its row order), named ``"MR"``;
    ``.sort_values()`` lists the best first.
    """
    result = metric_ranks(values, higher_is_better).mean(axis=1)
    result.name = "MR"
    return result
