"""Numbers from the reports and papers the notebooks compare against, each typed once.

* the 2019 report's CIFAR-100 Table 2 (:data:`REPORT_TABLE2`);
* the 2023 report's CelebA test accuracies (:data:`REPORTED_ACCURACY`), beside the
  majority-class accuracy of CelebA's test split (:data:`MAJORITY_TEST`):
  :func:`reported_table`, :func:`report_comparison`;
* published CelebA results of the multi-task methods (``shared/reference/mtl_methods.md``):
  :func:`celeba_methods` (Sener & Koltun) and :func:`celeba_attributes` (Liu et al.), and
  :func:`celeba40_beside`, which sets the kit's own 40-attribute runs beside the first;
* the recent methods' CelebA-40 table (FAMO, FairGrad and the methods before them):
  :func:`celeba40_recent`, and :func:`celeba40_delta_m`, the kit's runs measured the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlkit.analysis import comparison
from mtlkit.analysis.across_seeds import CIFAR_COLUMNS
from mtlkit.methods import weighting

# ------------------------------------------------------------------------ CIFAR-100
REPORT_TABLE2 = pd.DataFrame(
    [
        ("independent", 1.96, 1.15, 48.86, 64.16),
        ("shared_conv", 1.94, 1.16, 49.09, 64.20),
        ("reuse_coarse", 1.83, 1.21, 51.50, 62.29),
        ("reuse_fine", 1.95, 1.07, 49.14, 68.38),
        ("shared_reuse_coarse", 1.86, 1.16, 50.34, 63.91),
        ("shared_reuse_fine", 1.84, 1.06, 50.91, 67.11),
    ],
    columns=["model", *CIFAR_COLUMNS],
).set_index("model")
"""The 2019 report's Table 2: real CIFAR-100, its validation split, 100 epochs, one run
per model (accuracies in percent)."""


# --------------------------------------------------------------------------- CelebA
MAJORITY_TEST = {
    "Male": 0.6135,
    "Smiling": 0.5003,
    "Young": 0.7571,
    "Eyeglasses": 0.9354,
    "Wearing_Hat": 0.9580,
    "Wearing_Necklace": 0.8621,
    "Wearing_Earrings": 0.7934,
    "Wearing_Lipstick": 0.5219,
}
"""Majority-class accuracy on CelebA's official test split (19,962 images)."""

REPORTED_ACCURACY = {
    "Male": 0.9688,
    "Smiling": 0.9115,
    "Young": 0.8638,
    "Eyeglasses": 0.9795,
    "Wearing_Hat": 0.7972,
    "Wearing_Necklace": 0.6718,
    "Wearing_Earrings": 0.8152,
    "Wearing_Lipstick": 0.9877,
}
"""Test accuracies of the 2023 report (ResNet18, ImageNet weights, 5 epochs); their mean
is 0.8744, the "overall accuracy" of its DST section."""


def reported_table() -> pd.DataFrame:
    """The 2023 report's test accuracies beside the majority-class accuracy of the test split."""
    table = pd.DataFrame(
        {"report accuracy (2023)": REPORTED_ACCURACY, "majority baseline (test)": MAJORITY_TEST}
    )
    table["report vs majority"] = table.iloc[:, 0] - table.iloc[:, 1]
    table.index.name = "attribute"
    return table


def report_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`reported_table` beside this run's accuracy and its distance to its baseline
    (``table``: :func:`mtlkit.analysis.scoring.attribute_table`)."""
    shared = [a for a in table.index if a in REPORTED_ACCURACY]
    ours = table.loc[shared, ["accuracy", "vs_majority"]]
    ours.columns = ["this run accuracy", "this run vs majority"]
    return reported_table().loc[shared].join(ours)


def celeba_methods() -> pd.DataFrame:
    """Published CelebA results of the methods (Sener & Koltun, NeurIPS 2018, Table 2):
    average test error over **all 40 attributes**, ResNet-18 at 64x64, Adam 5e-4, batch 256,
    trained to convergence. ``mean accuracy`` is 100 minus the error; the last column is the
    relative change of the *average* error against single-task models (positive = fewer
    errors), which is close to, but not, a Delta_p over tasks."""
    error = {"single-task": 8.77, "ew": 9.62, "uw": 9.53, "gradnorm": 8.44, "mgda": 8.25}
    table = pd.DataFrame({"average error, 40 attributes (%)": error})
    table["mean accuracy (%)"] = 100 - table.iloc[:, 0]
    single = error["single-task"]
    table["error change vs single-task (%)"] = 100 * (single - table.iloc[:, 0]) / single
    table.index.name = "method"
    return table


def average_error(table: pd.DataFrame) -> float:
    """A run's average test error over its attributes, in percent, as Sener & Koltun report
    it: 100 times one minus the mean accuracy (``table``: a per-attribute table of
    :func:`mtlkit.analysis.scoring.attribute_table`; its ``mean over tasks`` row is left out)."""
    accuracy = table["accuracy"].drop("mean over tasks", errors="ignore")
    if accuracy.isna().any():
        missing = list(accuracy.index[accuracy.isna()])
        raise ValueError(
            f"No accuracy for {missing}: an average error over the attributes needs every "
            "attribute's (a task without test labels has none)."
        )
    return float(100 * (1 - accuracy.mean()))


def celeba40_beside(tables: Mapping[str, Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """:func:`celeba_methods` with the kit's runs beside it: for each method (``"ew"``,
    ``"mgda"``, ... or ``"single-task"``) the mean and standard deviation over seeds of
    :func:`average_error`, and the number of seeds. ``tables``: method -> the test tables of
    its runs over all **40** attributes (the ``celeba40`` study of
    :func:`mtlkit.studies.celeba_settings`); anything else is refused, because the published
    numbers average the 40. Methods the paper lacks get a row of their own."""
    for method, runs in tables.items():
        counts = {len(t["accuracy"].drop("mean over tasks", errors="ignore")) for t in runs}
        if runs and counts != {40}:
            raise ValueError(f"{method!r}: tables over {sorted(counts)} attributes; the published "
                             "average is over all 40 (train the 'celeba40' study).")  # fmt: skip
    return _beside(celeba_methods(), tables, average_error, "average error (%)")


def _beside(table: pd.DataFrame, tables: Mapping, measure, column: str) -> pd.DataFrame:
    """``table`` joined with, per method of ``tables`` (method -> its runs' test tables), the
    mean and standard deviation over seeds of ``measure(test table)`` and the seed count."""
    rows = {}
    for method, runs in tables.items():
        if not runs:
            raise ValueError(f"{method!r} has no runs: give at least one test table.")
        values = [measure(t) for t in runs]
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows[method] = {
            f"this kit: {column}": float(np.mean(values)),
            "this kit: std over seeds": spread,
            "this kit: seeds": len(values),
        }
    return table.join(pd.DataFrame.from_dict(rows, orient="index"), how="outer")


RECENT_CELEBA40 = {
    # kit name (or the paper's, lower case): (name in the paper, Delta_m %, MR of 14 methods)
    "ew": ("LS", 4.15, 7.85),
    "si": ("SI", 7.20, 9.75),
    "rlw": ("RLW", 1.46, 6.90),
    "dwa": ("DWA", 3.20, 8.72),
    "uw": ("UW", 3.23, 7.38),
    "mgda": ("MGDA", 14.85, 12.97),
    "pcgrad": ("PCGrad", 3.17, 8.53),
    "cagrad": ("CAGrad", 2.48, 8.10),
    "imtl_g": ("IMTL-G", 0.84, 6.25),
    "nash_mtl": ("Nash-MTL", 2.84, 6.50),
    "famo": ("FAMO", 1.21, 6.45),
    "fairgrad": ("FairGrad", 0.37, 6.92),
}
"""The CelebA column of Qin et al., "NTKMTL" (NeurIPS 2025, arXiv:2510.18258), Table 2, which
repeats the Delta_m of FAMO's table (Liu et al., NeurIPS 2023) and FairGrad's (Ban & Ji,
ICML 2024) for every method but its own; mean of 3 seeds per method."""


def celeba40_recent() -> pd.DataFrame:
    """The recent papers' CelebA-40 table: Delta_m (%) of each method against single-task
    models, and its mean rank (MR), as printed (:data:`RECENT_CELEBA40`).

    Their protocol (github.com/Cranial-XIX/FAMO, ``experiments/celeba``, which FairGrad's code
    repeats): all **40 attributes at 64x64**, a 9-layer convolutional network (7 conv layers with
    batch norm, 2 dense) with one sigmoid head per attribute, Adam 3e-4, batch 256, **15
    epochs**, and per attribute the test **F1** (not accuracy) of the epoch with the best mean
    validation F1; Delta_m = -100/K sum_j (F1_j - F1_j^single) / F1_j^single, so **lower is
    better** and negative beats the single-task models (this kit's Delta_p is its negative:
    the last column). MR ranks each method on every attribute among the **14 methods** of that
    table (these 12, NTKMTL and NTKMTL-SR): compare MRs only within it. ``mgda`` there is MGDA
    on the shared weights' gradients (the kit's ``weighting.get("mgda", tasks,
    upper_bound=False)``), not the kit's default MGDA-UB; SI and FairGrad are not in the kit.
    """
    rows = {k: dict(zip(("paper name", "Delta_m (%)", "MR (of 14)"), v))
            for k, v in RECENT_CELEBA40.items()}  # fmt: skip
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["in the kit"] = table.index.isin(list(weighting.METHODS))
    table["Delta_p (%) = -Delta_m"] = -table["Delta_m (%)"]
    table.index.name = "method"
    return table


def celeba40_delta_m(
    tables: Mapping[str, Sequence[pd.DataFrame]], singles: pd.DataFrame
) -> pd.DataFrame:
    """:func:`celeba40_recent` with the kit's runs beside it, measured as the table measures:
    Delta_m (%) on each attribute's test **F1** against the single-task models (``singles``:
    :func:`mtlkit.analysis.comparison.single_task_table` of the 40 baselines), mean and
    standard deviation over seeds, and the number of seeds. ``tables``: method -> the test
    tables of its runs over all **40** attributes (the ``celeba40`` study); anything else is
    refused, and so is a baseline whose F1 is 0 or missing (Delta_m divides by it).

    What still differs from the papers' protocol: the ``celeba40`` study trains Sener & Koltun's
    ResNet18 (Adam 5e-4, their schedule), not FAMO's 9-layer network (Adam 3e-4, 15 epochs:
    ``epochs=15, learning_rate=3e-4, learning_rate_decay=()`` gives their optimizer and
    length), and the kit scores each run's last epoch where the papers take the epoch of best
    validation F1."""
    if len(singles.index) != 40:
        raise ValueError(
            f"singles has {len(singles.index)} attributes; Delta_m on CelebA-40 needs the "
            "single-task baselines of all 40 (train the 'celeba40' study)."
        )
    if "f1" not in singles.columns:
        raise ValueError("singles has no 'f1' column: give the baselines' attribute tables.")
    f1 = singles["f1"].to_numpy(dtype=float)
    unusable = list(singles.index[~(np.isfinite(f1) & (f1 > 0))])
    if unusable:
        raise ValueError(
            f"The single-task baselines of {unusable} have an F1 of 0 or none (they never "
            "predict their attribute), and Delta_m divides by it: train them longer (the "
            "standard or full profile) before measuring Delta_m on F1."
        )
    delta_m = lambda t: -comparison.delta_p(t, singles, metrics=["f1"])  # noqa: E731
    return _beside(celeba40_recent(), tables, delta_m, "Delta_m on F1 (%)")


def celeba_attributes() -> pd.DataFrame:
    """Per-attribute test accuracy (%) of LNets+ANet (Liu et al. 2015, the dataset's paper;
    40 attributes, mean 87) for the kit's eight, beside the majority-class accuracy of the
    official test split (:data:`MAJORITY_TEST`): Wearing_Necklace (71) is below its
    baseline (86.2)."""
    accuracy = {"Male": 98, "Smiling": 92, "Young": 87, "Eyeglasses": 99, "Wearing_Hat": 99,
                "Wearing_Necklace": 71, "Wearing_Earrings": 82, "Wearing_Lipstick": 93}  # fmt: skip
    majority = {a: round(100 * rate, 2) for a, rate in MAJORITY_TEST.items()}
    table = pd.DataFrame({"LNets+ANet accuracy (%)": accuracy, "majority baseline (%)": majority})
    table["above baseline"] = table.iloc[:, 0] > table.iloc[:, 1]
    table.index.name = "attribute"
    return table
