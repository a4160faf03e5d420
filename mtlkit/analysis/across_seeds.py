"""Comparing runs over seeds: is a difference larger than seed-to-seed noise?

* results across seeds (CIFAR-100): each run's final values (:func:`final_values`) and the
  report's table with mean and spread over seeds (:func:`seed_table`);
* the noise rule, the one test every notebook uses to ask "did it help?": whether a
  difference over seeds is larger than seed-to-seed noise (a two-sample t-test), for one
  metric (:func:`compare_to_baseline`) or for every task (:func:`compare_tasks`);
* mean rank (MR), the recent papers' second summary beside Delta_m: each method's rank on
  every metric, averaged (:func:`metric_ranks`, :func:`mean_rank`).

Scoring one model is :mod:`mtlkit.analysis.scoring`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

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
    (``"val_"`` as in the report, ``"test_"``, or ``""`` for training). A history without a
    key is a ``KeyError``, one whose key holds no epoch a ``ValueError``, both naming the run.
    """
    rows = []
    for model, histories in runs.items():
        for i, history in enumerate(histories):
            missing = [f"{prefix}{k}" for k in columns.values() if f"{prefix}{k}" not in history]
            if missing:
                raise KeyError(f"The history of {model!r} (run {i}) has no {missing}.")
            empty = [f"{prefix}{k}" for k in columns.values() if not len(history[f"{prefix}{k}"])]
            if empty:
                raise ValueError(
                    f"The history of {model!r} (run {i}) holds no epoch of {empty}: the run "
                    "stopped before its first epoch ended. Train it again, or leave it out."
                )
            row = {"model": model, "run": i}
            row.update({name: history[f"{prefix}{key}"][-1] for name, key in columns.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def seed_table(values: pd.DataFrame) -> pd.DataFrame:
    """The report's table with mean and spread across seeds: ``"49.09 ± 0.41"`` cells.

    Accuracies are shown in percent; the spread is the sample standard deviation across
    seeds (blank with a single seed, where it is unknown). A NaN (or infinite) value makes
    that cell "unknown (k of the n values are NaN or infinite)", as in
    :func:`compare_to_baseline`: a diverged run is not silently left out of the mean, and
    ``seeds`` counts every run.
    """
    metrics = [c for c in values.columns if c not in ("model", "run")]
    grouped = values.groupby("model", sort=False)
    table = pd.DataFrame(index=grouped.size().index)
    for metric in metrics:
        scale, digits = (100.0, 2) if "acc" in metric else (1.0, 3)
        table[metric] = [
            mean_and_spread(group[metric].to_numpy(float), scale, digits) for _, group in grouped
        ]
    table["seeds"] = grouped.size()
    return table


def mean_and_spread(values: np.ndarray, scale: float = 1.0, digits: int = 4) -> str:
    """``"mean ± sd"`` of one model's values over seeds (times ``scale``); the mean alone with
    one seed (no spread can be estimated); "unknown (...)" if any is NaN or infinite."""
    values = np.asarray(values, dtype=float)
    broken = int((~np.isfinite(values)).sum())
    if broken:
        return f"unknown ({broken} of the {values.size} values are NaN or infinite)"
    text = f"{scale * values.mean():.{digits}f}"
    if values.size < 2:
        return text
    return f"{text} ± {scale * values.std(ddof=1):.{digits}f}"


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
    (sample standard deviation; the mean alone with one seed, where no spread can be
    estimated; "unknown (...)" where a value is NaN, see :func:`mean_and_spread`), the
    difference, its standard error and the verdict.
    """
    rows = []
    for task in tasks:
        verdicts = compare_to_baseline(values, baseline, task).drop(baseline)
        cells = {m: mean_and_spread(v.to_numpy(float))
                 for m, v in values.groupby("model", sort=False)[task]}  # fmt: skip
        for model, verdict in verdicts.iterrows():
            rows.append({
                "task": task, "model": model,
                baseline: cells[baseline],
                "compared": cells[model],
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
