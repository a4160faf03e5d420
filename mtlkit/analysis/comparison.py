"""Comparing multi-task remedies: Delta_p against single-task models, published numbers, costs.

* :func:`delta_p` -- LibMTL's Delta_p of one multi-task model against the single-task
  baselines (positive = the multi-task model is better); :func:`single_task_table` builds the
  baselines from per-attribute runs, and :func:`delta_p_values` gives one Delta_p per seed in
  the form :func:`mtlkit.analysis.across_seeds.compare_to_baseline` reads (the one noise rule);
* :func:`cost_table` -- each method's training time per step beside equal weighting's.

The published numbers to compare with are in :mod:`mtlkit.analysis.published`; the figure
of each method's task weights is :func:`mtlkit.plots.plot_task_weights`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlkit.analysis.scoring import MEAN_ROW

HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "f1": True,
                    "error": False, "loss": False}  # fmt: skip
"""Whether a larger value of a metric is better, for the metric names the kit's tables use."""


# ------------------------------------------------------------------------------- Delta_p
def _directions(metrics: Sequence[str], higher_is_better: bool | Mapping[str, bool] | None) -> dict:
    """``{metric: +1 or -1}``: +1 where higher is better, or a clear error for a metric of
    unknown direction or a direction that is not True or False."""
    if isinstance(higher_is_better, (bool, np.bool_)):
        higher_is_better = dict.fromkeys(metrics, bool(higher_is_better))
    if higher_is_better is not None and not isinstance(higher_is_better, Mapping):
        raise TypeError(
            "higher_is_better must be None (the kit's directions), True or False (for every "
            f"metric) or a mapping {{metric: True or False}}, got "
            f"{type(higher_is_better).__name__}."
        )
    wrong = {m: v for m, v in (higher_is_better or {}).items()
             if not isinstance(v, (bool, np.bool_))}  # fmt: skip
    if wrong:
        raise TypeError(
            f"higher_is_better values must be True or False, got {wrong} (a string such as "
            "'False' is not False)."
        )
    known = {**HIGHER_IS_BETTER, **dict(higher_is_better or {})}
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(
            f"No direction known for metric(s) {unknown}: pass higher_is_better="
            "{name: True or False} (True for accuracy-like metrics, False for errors and losses)."
        )
    return {m: 1.0 if known[m] else -1.0 for m in metrics}


def delta_p(
    multi: pd.DataFrame,
    singles: pd.DataFrame,
    metrics: Sequence[str] | str = ("accuracy",),
    higher_is_better: bool | Mapping[str, bool] | None = None,
) -> float:
    """Delta_p (LibMTL's ``count_improvement``), in percent: the mean relative gain of a
    multi-task model over the single-task models, task by task.

    ``Delta_p = 100/K sum_j 1/M sum_m s_m (N_jm - B_jm) / B_jm`` over the K tasks of
    ``singles`` (its index) and the M ``metrics``, where N is the multi-task model's value
    (``multi``, indexed by task: an :func:`mtlkit.analysis.scoring.attribute_table`, whose extra
    ``mean over tasks`` row is ignored), B the single-task model's, and ``s_m = +1`` when a
    higher value of metric m is better (accuracy), ``-1`` when lower is better (error, loss).
    **Sign: positive = the multi-task model beats the single-task ones** on average; -1.5
    means it is 1.5 % worse, relative to the baselines. (Nash-MTL's Delta_m is the same with
    the opposite sign.) Directions come from :data:`HIGHER_IS_BETTER` or ``higher_is_better``
    (``{metric: True or False}``, or one bool for every metric). ``metrics`` may be one name
    (``"accuracy"``). A ``mean over tasks`` row of ``singles`` is ignored too: it is no task.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    signs = _directions(metrics, higher_is_better)
    tasks = [t for t in singles.index if t != MEAN_ROW]
    missing = [t for t in tasks if t not in multi.index]
    absent = [m for m in metrics if m not in multi.columns or m not in singles.columns]
    if missing or absent or not tasks or not metrics:
        raise ValueError(
            f"delta_p needs every task of the baselines {tasks} and every metric {metrics} in "
            f"both tables; missing tasks {missing}, missing metrics {absent}."
        )
    B = singles.loc[tasks, metrics].to_numpy(dtype=float)
    N = multi.loc[tasks, metrics].to_numpy(dtype=float)
    bad = [(t, m) for (i, t) in enumerate(tasks) for (k, m) in enumerate(metrics)
           if not np.isfinite(B[i, k]) or B[i, k] == 0 or not np.isfinite(N[i, k])]  # fmt: skip
    if bad:
        raise ValueError(
            f"Delta_p divides by the baseline: (task, metric) {bad} is zero or not finite. "
            "Leave that metric out (F1 is 0 for a model that never predicts the attribute)."
        )
    s = np.array([signs[m] for m in metrics])
    return float(100.0 * np.mean(s * (N - B) / B))


def single_task_table(runs: Mapping[str, Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """The single-task baselines, one row per task: the mean over seeds of each task's own
    row in its single-task runs' tables (``{attribute: [table per seed]}``). A NaN (or
    infinite) value in a seed makes that mean NaN ("unknown", as in
    :func:`mtlkit.analysis.across_seeds.compare_to_baseline`), with a warning that counts
    them: it is not averaged over the other seeds, and :func:`delta_p` refuses it."""
    rows = {}
    for task, tables in runs.items():
        if not tables or any(task not in t.index for t in tables):
            raise ValueError(
                f"The single-task runs of {task!r} must be tables with a {task!r} row."
            )
        seeds = pd.concat([t.loc[[task]] for t in tables]).select_dtypes("number")
        broken = (~np.isfinite(seeds.astype(float))).sum()
        _warn_broken(f"the single-task runs of {task!r}", broken[broken > 0].to_dict(), len(seeds))
        rows[task] = seeds.mean(skipna=False).where(broken == 0)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "attribute"
    return table


def delta_p_values(
    tables: Mapping[str, Sequence[pd.DataFrame]],
    singles: pd.DataFrame,
    metrics: Sequence[str] = ("accuracy",),
    higher_is_better: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """One Delta_p per (model, seed run) against the same baselines, as rows ``model, run,
    delta_p`` -- the form :func:`mtlkit.analysis.across_seeds.compare_to_baseline` reads. ``tables``
    maps a model to its per-seed attribute tables. The baselines' own seed spread is not
    in these values (they are averaged first): with one single-task seed it is unknown."""
    rows = [{"model": model, "run": i, "delta_p": delta_p(t, singles, metrics, higher_is_better)}
            for model, runs in tables.items() for i, t in enumerate(runs)]  # fmt: skip
    return pd.DataFrame(rows)


SPREAD_COLUMNS = ["mean", "std", "min", "max", "seeds"]
"""The columns of :func:`spread`."""


def spread(values: pd.DataFrame, column: str = "delta_p") -> pd.DataFrame:
    """Mean, sample standard deviation (NaN with one seed), min, max and seeds per model.

    ``seeds`` counts every run. A NaN (or infinite) value makes that model's mean, std, min
    and max NaN ("unknown", as in :func:`mtlkit.analysis.across_seeds.compare_to_baseline`),
    with a warning that counts them: a diverged run is not silently left out."""
    grouped = values.groupby("model", sort=False)[column]
    rows = {model: _spread_row(model, group.to_numpy(float), column) for model, group in grouped}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=SPREAD_COLUMNS)
    table.index.name = "model"
    table["seeds"] = table["seeds"].astype(int)
    return table


def _spread_row(model: str, numbers: np.ndarray, column: str) -> list[float]:
    """One row of :func:`spread`: NaN statistics (and a warning) if a value is not finite."""
    broken = int((~np.isfinite(numbers)).sum())
    if broken:
        _warn_broken(f"model {model!r}", {column: broken}, numbers.size)
        return [np.nan] * 4 + [numbers.size]
    std = numbers.std(ddof=1) if numbers.size > 1 else np.nan
    return [numbers.mean(), std, numbers.min(), numbers.max(), numbers.size]


def _warn_broken(what: str, broken: Mapping[str, int], runs: int) -> None:
    """Warn that ``broken`` (``{column: count}``) values of ``what``'s runs are NaN or
    infinite, so those results are NaN (unknown); nothing when there are none."""
    if not broken:
        return
    counts = ", ".join(f"{n} of the {runs} {c} values" for c, n in broken.items())
    warnings.warn(
        f"{counts} of {what} are NaN or infinite: the result is NaN (unknown), not a mean of "
        "the other runs. A run diverged or was not evaluated: rerun or drop it.",
        stacklevel=3,
    )


# ----------------------------------------------------------------------------- costs
def cost_table(runs: Mapping[str, Sequence], steps: int, baseline: str = "ew") -> pd.DataFrame:
    """Training seconds per step of each method (mean over its runs, ``{method: [studies.Run]}``)
    and its throughput relative to ``baseline``. ``steps``: training steps per run. Wall time
    of whole runs: validation and (DST) the measuring pass included, and tracing where a run
    traced its steps (a study's second seed reuses the first's); the benchmark
    ``benchmarks/bench_weighting.py`` measures the steps alone, side by side."""
    if baseline not in runs:
        raise ValueError(f"No runs of the baseline {baseline!r}; methods are {list(runs)}.")
    per_step = {m: np.mean([r.seconds for r in rs]) / steps for m, rs in runs.items()}
    table = pd.DataFrame({"s per step": per_step})
    table["throughput vs " + baseline] = per_step[baseline] / table["s per step"]
    table.index.name = "method"
    return table


def steps_per_run(settings) -> int:
    """Training steps of one run under CelebA ``settings`` (162,770 images without a limit)."""
    images = settings.train_limit or 162_770
    return settings.epochs * math.ceil(images / settings.batch_size)
