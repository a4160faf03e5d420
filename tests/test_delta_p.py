"""analysis.comparison: Delta_p by hand, its sign, lower-is-better metrics, baselines, costs."""

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mtlkit import plots
from mtlkit.analysis import across_seeds, comparison, published

matplotlib.use("Agg")


def table(rows: dict) -> pd.DataFrame:
    """An attribute table: ``{task: {metric: value}}``, plus the usual ``mean over tasks`` row."""
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.loc["mean over tasks"] = frame.mean()
    return frame


SINGLES = pd.DataFrame({"accuracy": {"a": 0.80, "b": 0.50}, "loss": {"a": 0.50, "b": 0.25}})


def test_delta_p_on_accuracy_by_hand():
    multi = table({"a": {"accuracy": 0.84}, "b": {"accuracy": 0.55}})
    # a: (0.84 - 0.80) / 0.80 = +0.05; b: (0.55 - 0.50) / 0.50 = +0.10; mean 0.075 -> 7.5 %
    assert comparison.delta_p(multi, SINGLES) == pytest.approx(7.5)


def test_sign_positive_when_the_multitask_model_is_better_negative_when_worse():
    better = table({"a": {"accuracy": 0.81}, "b": {"accuracy": 0.51}})
    worse = table({"a": {"accuracy": 0.79}, "b": {"accuracy": 0.49}})
    assert comparison.delta_p(better, SINGLES) > 0 > comparison.delta_p(worse, SINGLES)
    same = table({"a": {"accuracy": 0.80}, "b": {"accuracy": 0.50}})
    assert comparison.delta_p(same, SINGLES) == 0.0


def test_lower_is_better_metric_counts_a_smaller_value_as_a_gain():
    lower = table({"a": {"loss": 0.40}, "b": {"loss": 0.30}})
    # a: -(0.40 - 0.50) / 0.50 = +0.2; b: -(0.30 - 0.25) / 0.25 = -0.2; mean 0
    assert comparison.delta_p(lower, SINGLES, metrics=["loss"]) == pytest.approx(0.0)
    only_a = table({"a": {"loss": 0.40}, "b": {"loss": 0.25}})
    assert comparison.delta_p(only_a, SINGLES, metrics=["loss"]) == pytest.approx(10.0)


def test_two_metrics_per_task_are_averaged_within_the_task_then_over_tasks():
    multi = table({"a": {"accuracy": 0.88, "loss": 0.60}, "b": {"accuracy": 0.50, "loss": 0.20}})
    # a: acc +0.10, loss -0.20 -> -0.05; b: acc 0, loss +0.20 -> +0.10; mean 0.025 -> 2.5 %
    result = comparison.delta_p(multi, SINGLES, metrics=["accuracy", "loss"])
    assert result == pytest.approx(2.5)


def libmtl_style(base: dict, new: dict, weight: dict) -> float:
    """An independent transcription of the reference formula on dicts of lists:
    100/K sum_t 1/M_t sum_m (-1)^w (B - N) / B, w = 1 where higher is better."""
    total = 0.0
    for task in base:
        terms = [(-1) ** w * (b - n) / b for b, n, w in zip(base[task], new[task], weight[task])]
        total += sum(terms) / len(terms)
    return 100 * total / len(base)


def test_matches_an_independent_computation_on_random_tables():
    rng = np.random.default_rng(3)
    tasks, metrics = ["t0", "t1", "t2", "t3"], ["accuracy", "f1", "error"]
    base = pd.DataFrame(rng.uniform(0.2, 0.9, (4, 3)), index=tasks, columns=metrics)
    new = pd.DataFrame(rng.uniform(0.2, 0.9, (4, 3)), index=tasks, columns=metrics)
    weight = {t: [1, 1, 0] for t in tasks}
    expected = libmtl_style(base.T.to_dict("list"), new.T.to_dict("list"), weight)
    assert comparison.delta_p(new, base, metrics) == pytest.approx(expected)


def test_directions_can_be_given_and_unknown_ones_are_refused():
    multi = table({"a": {"score": 2.0}, "b": {"score": 1.0}})
    singles = pd.DataFrame({"score": {"a": 1.0, "b": 1.0}})
    with pytest.raises(ValueError, match="higher_is_better"):
        comparison.delta_p(multi, singles, ["score"])
    up = comparison.delta_p(multi, singles, ["score"], higher_is_better={"score": True})
    down = comparison.delta_p(multi, singles, ["score"], higher_is_better={"score": False})
    assert up == pytest.approx(50.0) and down == pytest.approx(-50.0)


def test_zero_baseline_and_missing_tasks_are_clear_errors():
    singles = pd.DataFrame({"f1": {"a": 0.0, "b": 0.5}})
    multi = table({"a": {"f1": 0.2}, "b": {"f1": 0.5}})
    with pytest.raises(ValueError, match=r"\('a', 'f1'\).*zero"):
        comparison.delta_p(multi, singles, ["f1"])
    with pytest.raises(ValueError, match="missing tasks \\['b'\\]"):
        comparison.delta_p(table({"a": {"accuracy": 0.8}}), SINGLES)


def test_single_task_table_takes_each_tasks_own_row_averaged_over_seeds():
    runs = {"a": [table({"a": {"accuracy": 0.7}}), table({"a": {"accuracy": 0.9}})],
            "b": [table({"b": {"accuracy": 0.6}})]}  # fmt: skip
    singles = comparison.single_task_table(runs)
    assert singles.loc["a", "accuracy"] == pytest.approx(0.8)
    assert list(singles.index) == ["a", "b"]
    with pytest.raises(ValueError, match="'b' row"):
        comparison.single_task_table({"b": [table({"a": {"accuracy": 0.7}})]})


def test_delta_p_values_feed_the_noise_rule():
    tables = {
        "ew": [table({"a": {"accuracy": 0.80}, "b": {"accuracy": 0.50}}),
               table({"a": {"accuracy": 0.82}, "b": {"accuracy": 0.50}})],
        "uw": [table({"a": {"accuracy": 0.88}, "b": {"accuracy": 0.55}}),
               table({"a": {"accuracy": 0.88}, "b": {"accuracy": 0.56}})],
    }  # fmt: skip
    values = comparison.delta_p_values(tables, SINGLES)
    assert values.loc[0, "delta_p"] == pytest.approx(0.0)
    assert values.loc[1, "delta_p"] == pytest.approx(1.25)  # (0.02 / 0.8) / 2
    summary = comparison.spread(values)
    assert summary.loc["uw", "seeds"] == 2
    assert summary.loc["uw", "mean"] == pytest.approx(np.mean([10.0, 11.0]))
    verdicts = across_seeds.compare_to_baseline(values, "ew", "delta_p")
    assert verdicts.loc["uw", "delta_p difference"] == pytest.approx(10.5 - 0.625)


def test_published_numbers_are_consistent():
    methods = published.celeba_methods()
    assert (methods.iloc[:, 0] + methods["mean accuracy (%)"]).eq(100).all()
    change = methods["error change vs single-task (%)"]
    assert change["single-task"] == 0 and change["mgda"] > 0 > change["ew"]
    attributes = published.celeba_attributes()
    assert not attributes.loc["Wearing_Necklace", "above baseline"]
    assert attributes.loc["Male", "above baseline"]
    majority = attributes["majority baseline (%)"] / 100  # the test split's rates, typed once
    assert majority.to_dict() == pytest.approx(published.MAJORITY_TEST)
    reported = published.reported_table()["majority baseline (test)"]
    assert reported.to_dict() == pytest.approx(majority.to_dict())


def test_cost_table_divides_by_steps_and_relates_to_equal_weighting(tmp_path):
    run = lambda seconds: SimpleNamespace(seconds=seconds, run_dir=tmp_path)  # noqa: E731
    runs = {"ew": [run(10.0), run(30.0)], "pcgrad": [run(40.0)]}
    costs = comparison.cost_table(runs, steps=10)
    assert costs.loc["ew", "s per step"] == pytest.approx(2.0)
    assert costs.loc["pcgrad", "throughput vs ew"] == pytest.approx(0.5)
    settings = SimpleNamespace(train_limit=600, batch_size=32, epochs=3)
    assert comparison.steps_per_run(settings) == 3 * 19


def test_plot_task_weights_relative_weights_average_one_and_dst_uses_keep_probabilities():
    history = lambda wa, wb: {"a_weight": wa, "b_weight": wb}  # noqa: E731
    histories = {"uw": [history([1.0, 3.0], [1.0, 1.0]), history([1.0, 2.0], [1.0, 2.0])],
                 "dst": [{"a_keep_prob": [1.0, 0.7], "b_keep_prob": [1.0, 0.9]}]}  # fmt: skip
    fig = plots.plot_task_weights(histories, ["a", "b"], caption="test data")
    uw, dst = fig.axes[0], fig.axes[1]
    a, b = (line.get_ydata() for line in uw.lines)
    np.testing.assert_allclose((a + b) / 2, 1.0)  # means over seeds of shares that average 1
    np.testing.assert_allclose(a, [1.0, (1.5 + 1.0) / 2])
    np.testing.assert_allclose(dst.lines[0].get_ydata(), [1.0, 0.7])
    assert dst.get_ylabel() == "keep probability"


# ------------------------------------------------------------------ bad input
def attribute_rows(accuracy: dict) -> pd.DataFrame:
    frame = pd.DataFrame({"accuracy": accuracy})
    frame.loc["mean over tasks"] = frame.mean()
    return frame


def test_a_nan_single_task_seed_makes_the_baseline_unknown():
    runs = {"Male": [attribute_rows({"Male": 0.9}), attribute_rows({"Male": np.nan})],
            "Young": [attribute_rows({"Young": 0.8})]}  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"1 of the 2 accuracy values of the single-task runs of 'Male'"
    ):
        singles = comparison.single_task_table(runs)
    assert np.isnan(singles.loc["Male", "accuracy"])
    assert singles.loc["Young", "accuracy"] == pytest.approx(0.8)


def test_spread_with_a_nan_run_is_unknown_and_counts_every_seed():
    values = pd.DataFrame(
        {"model": ["pcgrad"] * 3, "run": [0, 1, 2], "delta_p": [0.5, np.nan, 1.5]}
    )
    with pytest.warns(UserWarning, match=r"1 of the 3 delta_p values of model 'pcgrad'"):
        table = comparison.spread(values)
    assert table.loc["pcgrad"][["mean", "std", "min", "max"]].isna().all()
    assert table.loc["pcgrad", "seeds"] == 3


def test_delta_p_directions_must_be_bools():
    multi, singles = attribute_rows({"Male": 0.9}), attribute_rows({"Male": 0.8})
    with pytest.raises(TypeError, match="must be True or False.*'False'"):
        comparison.delta_p(multi, singles, higher_is_better={"accuracy": "False"})


def test_delta_p_ignores_the_mean_row_of_the_baselines_as_of_the_multi_task_table():
    multi = attribute_rows({"Male": 0.9, "Young": 0.6})
    singles = attribute_rows({"Male": 0.8, "Young": 0.5})  # its mean row: 0.65
    expected = 100 * ((0.9 - 0.8) / 0.8 + (0.6 - 0.5) / 0.5) / 2  # 16.25, the row would give 15.96
    assert comparison.delta_p(multi, singles) == pytest.approx(expected)
    assert comparison.delta_p(multi, singles.drop("mean over tasks")) == pytest.approx(expected)


def test_delta_p_takes_one_metric_name():
    multi, singles = attribute_rows({"Male": 0.9}), attribute_rows({"Male": 0.8})
    assert comparison.delta_p(multi, singles, metrics="accuracy") == pytest.approx(12.5)
