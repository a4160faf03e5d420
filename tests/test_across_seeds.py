"""The results table across seeds and the noise check (CIFAR-100 notebook 02)."""

import math

import numpy as np
import pandas as pd
import pytest

from mtlkit.analysis import across_seeds


def history(fine_acc, coarse_acc, fine_loss=2.0, coarse_loss=1.0):
    return {
        "val_fine_accuracy": [0.1, fine_acc],
        "val_coarse_accuracy": [0.2, coarse_acc],
        "val_fine_loss": [3.0, fine_loss],
        "val_coarse_loss": [2.0, coarse_loss],
    }


def test_final_values_take_the_last_epoch_of_each_run():
    values = across_seeds.final_values({"a": [history(0.5, 0.6), history(0.52, 0.62)]})
    assert values["fine acc"].tolist() == [0.5, 0.52]
    assert values["coarse loss"].tolist() == [1.0, 1.0]
    with pytest.raises(KeyError, match="val_fine_accuracy"):
        across_seeds.final_values({"b": [{"loss": [1.0]}]})


def test_seed_table_shows_mean_and_sample_spread():
    values = across_seeds.final_values(
        {"a": [history(0.50, 0.6), history(0.52, 0.6)], "b": [history(0.40, 0.7)]}
    )
    table = across_seeds.seed_table(values)
    assert table.loc["a", "fine acc"] == "51.00 ± 1.41"  # sd of 50 and 52 is sqrt(2)
    assert table.loc["b", "fine acc"] == "40.00"  # one seed: no spread shown
    assert table.loc["a", "seeds"] == 2


def test_noise_check_uses_the_t_test_over_seeds():
    runs = {
        "base": [history(0.50, 0.6), history(0.52, 0.6), history(0.51, 0.6)],
        "close": [history(0.515, 0.6), history(0.525, 0.6), history(0.505, 0.6)],
        "far": [history(0.60, 0.6), history(0.61, 0.6), history(0.62, 0.6)],
    }
    verdict = across_seeds.compare_to_baseline(across_seeds.final_values(runs), "base", "fine acc")
    assert verdict.loc["base", "verdict"] == "baseline"
    assert verdict.loc["close", "verdict"] == "within noise"
    assert verdict.loc["far", "verdict"] == "better beyond noise"
    assert verdict.loc["far", "fine acc difference"] == pytest.approx(0.10)
    assert verdict.loc["far", "standard error"] == pytest.approx(math.sqrt(0.01**2 / 3 * 2))


def test_one_seed_or_no_spread_gives_no_verdict():
    one = {"base": [history(0.5, 0.6)], "other": [history(0.7, 0.6)]}
    verdict = across_seeds.compare_to_baseline(across_seeds.final_values(one), "base", "fine acc")
    assert verdict.loc["other", "verdict"].startswith("unknown")
    same = {"base": [history(0.5, 0.6)] * 2, "other": [history(0.7, 0.6)] * 2}
    verdict = across_seeds.compare_to_baseline(across_seeds.final_values(same), "base", "fine acc")
    assert verdict.loc["other", "verdict"].startswith("no spread")
    with pytest.raises(KeyError, match="baseline"):
        across_seeds.compare_to_baseline(across_seeds.final_values(one), "missing", "fine acc")


def test_t_critical_values():
    assert across_seeds.t_critical(2) == 4.30
    assert across_seeds.t_critical(11) == 2.23
    assert across_seeds.t_critical(1000) == 1.96


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["other", "base"])
def test_a_nan_among_the_seeds_makes_the_verdict_unknown(bad, where):
    runs = {
        "base": [history(0.50, 0.6), history(0.51, 0.6), history(0.52, 0.6)],
        "other": [history(0.60, 0.6), history(0.61, 0.6), history(0.62, 0.6)],
    }
    runs[where][1] = history(bad, 0.6)  # a run that diverged
    verdict = across_seeds.compare_to_baseline(across_seeds.final_values(runs), "base", "fine acc")
    row = verdict.loc["other"]
    assert row["verdict"].startswith("unknown")
    assert f"1 of the 3 fine acc values of '{where}' are NaN or infinite" in row["verdict"]
    assert math.isnan(row["standard error"]) and math.isnan(row["fine acc difference"])
    tasks = across_seeds.compare_tasks(across_seeds.final_values(runs), "base", ["fine acc"])
    assert tasks.loc["fine acc", "verdict"].startswith("unknown")


@pytest.mark.parametrize("dof", [0, -1, 2.5, None])
def test_t_critical_needs_degrees_of_freedom(dof):
    with pytest.raises(ValueError, match="degrees of freedom must be a positive whole number"):
        across_seeds.t_critical(dof)


# ------------------------------------------------------------ more bad input
def test_a_nan_seed_makes_the_seed_table_cell_unknown_and_is_counted():
    values = pd.DataFrame(
        {"model": ["wide"] * 3, "run": [0, 1, 2], "coarse acc": [0.61, np.nan, 0.63]}
    )
    table = across_seeds.seed_table(values)
    assert table.loc["wide", "coarse acc"] == "unknown (1 of the 3 values are NaN or infinite)"
    assert table.loc["wide", "seeds"] == 3


def test_compare_tasks_shows_no_spread_for_one_seed_and_unknown_for_a_nan():
    one = pd.DataFrame({"model": ["ew", "dst"], "run": [0, 0], "Male": [0.91, 0.93]})
    row = across_seeds.compare_tasks(one, "ew", ["Male"]).loc["Male"]
    assert row["ew"] == "0.9100" and row["compared"] == "0.9300"  # no "± 0.0000"
    nan = pd.DataFrame(
        {
            "model": ["ew", "ew", "dst", "dst"],
            "run": [0, 1, 0, 1],
            "Male": [0.9, 0.92, 0.95, np.nan],
        }
    )
    row = across_seeds.compare_tasks(nan, "ew", ["Male"]).loc["Male"]
    assert row["compared"] == "unknown (1 of the 2 values are NaN or infinite)"
    assert row["ew"] == "0.9100 ± 0.0141"


def test_final_values_of_a_history_without_epochs_is_named():
    empty = {k: [] for k in ("val_fine_loss", "val_coarse_loss", "val_fine_accuracy",
                             "val_coarse_accuracy")}  # fmt: skip
    with pytest.raises(ValueError, match=r"'deep' \(run 0\) holds no epoch"):
        across_seeds.final_values({"deep": [empty]})
