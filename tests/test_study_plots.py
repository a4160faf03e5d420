"""The DST study's figures (gated losses, gates, accuracy beside the baseline) and the one
noise rule applied per task."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mtlkit import plots
from mtlkit.analysis import across_seeds

matplotlib.use("Agg")

TASKS = ("Male", "Wearing_Hat")
DST_HISTORY = {
    "Male_loss": [0.7, 0.5, 0.4, 0.35],
    "Wearing_Hat_loss": [0.3, 0.25, 0.26, 0.2],
    "Male_gate": [1, 1, 0, 1],
    "Wearing_Hat_gate": [1, 0, 0, 1],
    "Male_keep_prob": [1.0, 0.9, 0.6, 0.8],
    "Wearing_Hat_keep_prob": [1.0, 0.5, 0.4, 0.7],
}
PLAIN_HISTORY = {"Male_loss": [0.7, 0.55, 0.45, 0.4], "Wearing_Hat_loss": [0.3, 0.2, 0.2, 0.2]}


@pytest.fixture(autouse=True)
def figures(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLKIT_FIGURES_DIR", str(tmp_path))
    yield tmp_path
    matplotlib.pyplot.close("all")


def _markers(ax, hollow: bool) -> dict[str, set[int]]:
    """Epochs carrying a filled (or hollow) marker, per task line label."""
    found: dict[str, set[int]] = {}
    for line in ax.get_lines():
        if line.get_marker() != "o" or len(line.get_xdata()) == 0:
            continue
        is_hollow = line.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0))
        if is_hollow == hollow:
            colour = matplotlib.colors.to_hex(line.get_color())
            found.setdefault(colour, set()).update(int(x) for x in line.get_xdata())
    return found


def _gate0_epochs(history, task) -> set[int]:
    return {e + 1 for e, g in enumerate(history.get(f"{task}_gate", [])) if g == 0}


def test_gated_losses_marks_exactly_the_dropped_epochs(figures):
    fig = plots.plot_gated_losses(
        {"no DST": PLAIN_HISTORY, "DST": DST_HISTORY}, TASKS, caption="demo data, quick profile",
        filename="gated.png",
    )  # fmt: skip
    plain, dst_ax = fig.axes[:2]
    colours = [matplotlib.colors.to_hex(c) for c in matplotlib.cm.tab10.colors[:2]]
    hollow = _markers(dst_ax, hollow=True)
    for colour, task in zip(colours, TASKS):
        assert hollow.get(colour, set()) == _gate0_epochs(DST_HISTORY, task)
        filled = _markers(dst_ax, hollow=False)[colour]
        assert filled == set(range(1, 5)) - _gate0_epochs(DST_HISTORY, task)
    assert not _markers(plain, hollow=True)  # no gates logged: every epoch trained
    # the loss curves are the histories' values
    male = next(line for line in dst_ax.get_lines() if line.get_label() == "Male")
    np.testing.assert_allclose(male.get_ydata(), DST_HISTORY["Male_loss"])
    assert fig.get_suptitle() == "demo data, quick profile"
    assert (figures / "gated.png").stat().st_size > 0


@pytest.mark.parametrize("epochs", [4, 37])
def test_per_epoch_axes_have_whole_epoch_ticks(epochs):
    history = {k: list(np.resize(v, epochs)) for k, v in DST_HISTORY.items()}
    for fig in (
        plots.plot_gated_losses({"DST": history}, TASKS, caption="c"),
        plots.plot_gates(history, TASKS, caption="c"),
    ):
        ax = fig.axes[0]
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert min(ticks) >= 1 and max(ticks) <= epochs


def test_gates_plot_colours_keep_probabilities_and_frames_dropped_cells():
    fig = plots.plot_gates(DST_HISTORY, TASKS, caption="demo data, quick profile")
    ax = fig.axes[0]
    image = ax.get_images()[0]
    np.testing.assert_allclose(image.get_array(), [DST_HISTORY[f"{t}_keep_prob"] for t in TASKS])
    frames = {(round(p.get_x() + 0.45), round(p.get_y() + 0.45)) for p in ax.patches}
    expected = {(e, row) for row, t in enumerate(TASKS) for e in _gate0_epochs(DST_HISTORY, t)}
    assert frames == expected  # (epoch, task row) of every gate at 0
    assert [t.get_text() for t in ax.get_yticklabels()] == list(TASKS)


def _table(accuracy: dict[str, float], baseline: dict[str, float]) -> pd.DataFrame:
    table = pd.DataFrame({"accuracy": accuracy, "majority_baseline": baseline})
    table.loc["mean over tasks"] = table.mean()
    return table


BASELINE = {"Male": 0.6, "Wearing_Hat": 0.95}
TABLES = {
    "no DST": [_table({"Male": 0.80, "Wearing_Hat": 0.94}, BASELINE),
               _table({"Male": 0.84, "Wearing_Hat": 0.96}, BASELINE)],
    "DST": [_table({"Male": 0.86, "Wearing_Hat": 0.93}, BASELINE),
            _table({"Male": 0.88, "Wearing_Hat": 0.95}, BASELINE)],
}  # fmt: skip


def test_accuracy_plot_bars_are_seed_means_beside_the_baseline():
    fig = plots.plot_attribute_accuracy(TABLES, caption="demo data, quick profile")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    expected = [np.mean([t.loc[a, "accuracy"] for t in runs])
                for runs in TABLES.values() for a in TASKS]  # fmt: skip
    np.testing.assert_allclose(heights, expected)
    marks = ax.collections[0].get_segments()  # the baseline's horizontal marks
    np.testing.assert_allclose([s[0][1] for s in marks], [BASELINE[a] for a in TASKS])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TASKS)  # no "mean over tasks"
    seed_dots = [line for line in ax.get_lines() if line.get_marker() == "."]
    assert sum(len(line.get_xdata()) for line in seed_dots) == 2 * 2 * len(TASKS)


# ------------------------------------------------------------------ the noise rule
def test_seed_values_has_one_row_per_model_and_seed():
    values = across_seeds.seed_values(TABLES)
    assert list(values["model"]) == ["no DST", "no DST", "DST", "DST"]
    assert list(values["run"]) == [0, 1, 0, 1]
    assert values.loc[2, "Male"] == 0.86
    assert values.loc[3, "mean over tasks"] == pytest.approx((0.88 + 0.95) / 2)


def test_compare_tasks_is_compare_to_baseline_per_task():
    values = across_seeds.seed_values(TABLES)
    table = across_seeds.compare_tasks(values, "no DST", [*TASKS, "mean over tasks"])
    assert list(table.index) == [*TASKS, "mean over tasks"]
    for task in TASKS:
        one = across_seeds.compare_to_baseline(values, "no DST", task).loc["DST"]
        assert table.loc[task, "difference"] == pytest.approx(one[f"{task} difference"])
        assert table.loc[task, "standard error"] == pytest.approx(one["standard error"])
        assert table.loc[task, "verdict"] == one["verdict"]
    # Male: a difference of 0.87 - 0.82 = 0.05, standard error sqrt(var_a / 2 + var_b / 2)
    var_plain, var_dst = np.var([0.80, 0.84], ddof=1), np.var([0.86, 0.88], ddof=1)
    error = math.sqrt(var_plain / 2 + var_dst / 2)
    assert table.loc["Male", "difference"] == pytest.approx(0.05)
    assert table.loc["Male", "standard error"] == pytest.approx(error)
    # two seeds each: t(2 dof) = 4.30, and 0.05 < 4.30 * 0.0224, so within noise
    assert 0.05 < across_seeds.t_critical(2) * error
    assert table.loc["Male", "verdict"] == "within noise"
    assert table.loc["Male", "no DST"] == "0.8200 ± 0.0283"
    assert table.loc["Male", "compared"] == "0.8700 ± 0.0141"


def test_compare_tasks_with_one_seed_says_the_noise_is_unknown():
    one_seed = {name: runs[:1] for name, runs in TABLES.items()}
    table = across_seeds.compare_tasks(across_seeds.seed_values(one_seed), "no DST", TASKS)
    assert table["verdict"].str.startswith("unknown").all()


def test_plot_task_losses_draws_train_and_validation():
    history = {"a_loss": [0.7, 0.5], "val_a_loss": [0.8, 0.6], "b_loss": [0.3, 0.2]}
    fig = plots.plot_task_losses(history, ["a", "b"], "t")
    assert len(fig.axes[0].lines) == 3 and fig.axes[0].get_title() == "t"
