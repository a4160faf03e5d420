"""Numbers from the reports and papers the notebooks compare against, each typed once.

* the 2019 report's CIFAR-100 Table 2 (:data:`REPORT_TABLE2`);
* the 2023 report's CelebA test accuracies (:data:`REPORTED_ACCURACY`), beside the
  majority-class accuracy of CelebA's test split (:data:`MAJORITY_TEST`):
  :func:`reported_table`, :func:`report_comparison`;
* published CelebA results of the multi-task methods (``shared/reference/mtl_methods.md``):
  :func:`celeba_methods` (Sener & Koltun) and :func:`celeba_attributes` (Liu et al.), and
  :func:`celeba40_beside`, which sets the kit's own 40-attribute runs beside the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlkit.analysis.evaluation import CIFAR_COLUMNS

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
    (``table``: :func:`mtlkit.analysis.evaluation.attribute_table`)."""
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
    :func:`mtlkit.analysis.evaluation.attribute_table`; its ``mean over tasks`` row is left out)."""
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
    rows = {}
    for method, runs in tables.items():
        if not runs:
            raise ValueError(f"{method!r} has no runs: give at least one test table.")
        counts = {len(t["accuracy"].drop("mean over tasks", errors="ignore")) for t in runs}
        if counts != {40}:
            raise ValueError(f"{method!r}: tables over {sorted(counts)} attributes; the published "
                             "average is over all 40 (train the 'celeba40' study).")  # fmt: skip
        errors = [average_error(t) for t in runs]
        spread = float(np.std(errors, ddof=1)) if len(errors) > 1 else float("nan")
        rows[method] = {
            "this kit: average error (%)": float(np.mean(errors)),
            "this kit: std over seeds": spread,
            "this kit: seeds": len(errors),
        }
    return celeba_methods().join(pd.DataFrame.from_dict(rows, orient="index"), how="outer")


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
