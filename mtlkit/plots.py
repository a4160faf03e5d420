"""Figures of results: learning curves averaged over seeds, gates, task weights, accuracies,
interference. The diagrams of the models themselves are :mod:`mtlkit.diagrams`'s.

Every figure carries a caption line naming the data and profile that produced it, and is
saved under :func:`mtlkit.config.figures_dir` when a file name is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mtlkit import config

History = Mapping[str, Sequence[float]]


def _stack(histories: Sequence[History], key: str) -> np.ndarray | None:
    """(seeds, epochs) array of one logged value, or None when it was not logged."""
    series = [h[key] for h in histories if key in h]
    if not series:
        return None
    epochs = min(len(s) for s in series)
    return np.array([s[:epochs] for s in series], dtype=float)


def plot_learning_curves(
    runs: Mapping[str, Sequence[History]],
    tasks: Sequence[str],
    *,
    caption: str,
    splits: Mapping[str, str] = {"train": "", "validation": "val_"},
    metrics: Sequence[str] = ("loss", "accuracy"),
    filename: str | None = None,
):
    """Curves of ``<task>_<metric>`` per epoch: one panel per (metric, task), one colour per
    model, line style per split; with several seeds the line is the mean and the band the
    spread (min to max). ``runs`` maps a model name to its histories, one per seed.
    """
    fig, axes = plt.subplots(
        len(metrics), len(tasks), figsize=(5 * len(tasks), 3.4 * len(metrics)), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    panels = [(r, m, c, t) for r, m in enumerate(metrics) for c, t in enumerate(tasks)]
    for row, metric, col, task in panels:
        ax, epochs = axes[row][col], 1
        for i, (model, histories) in enumerate(runs.items()):
            for style, (split, prefix) in zip(styles, splits.items()):
                values = _stack(histories, f"{prefix}{task}_{metric}")
                if values is None:
                    continue
                x = np.arange(1, values.shape[1] + 1)
                epochs = max(epochs, len(x))
                colour = colours[i % len(colours)]
                marker = "o" if len(x) <= 10 else None  # a few epochs: show each one
                ax.plot(x, values.mean(0), style, color=colour, marker=marker, markersize=3,
                        label=f"{model} ({split})")  # fmt: skip
                if len(values) > 1:
                    ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.15)
        ax.set_title(f"{task}: {metric}")
        _epoch_axis(ax, epochs)  # whole epochs only: 1, 2, ... never 1.5
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.025 * (len(labels) // 4), 1, 0.95))
    if filename:
        save(fig, filename)
    return fig


def save(fig, filename: str) -> Path:
    """Save ``fig`` under the figures folder and return the path."""
    path = config.figures_dir() / filename
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_task_losses(history: Mapping[str, Sequence[float]], tasks: Sequence[str], title: str):
    """Per-task loss per epoch (the report's Figure 1), training solid, validation dashed.

    ``history`` is ``model.fit(...).history`` (keys ``<task>_loss``, ``val_<task>_loss``).
    Returns the matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = np.arange(1, len(history[f"{tasks[0]}_loss"]) + 1)
    for i, task in enumerate(tasks):
        colour = plt.cm.tab10(i % 10)
        ax.plot(epochs, history[f"{task}_loss"], "-o", color=colour, label=task)
        if f"val_{task}_loss" in history:
            ax.plot(epochs, history[f"val_{task}_loss"], "--", color=colour, alpha=0.7)
    ax.set(xlabel="epoch", ylabel="binary cross-entropy", title=title, xticks=epochs)
    ax.legend(fontsize=8, ncol=2, title="solid: train, dashed: validation", title_fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(
    images, titles: Sequence[str], *, caption: str, columns: int = 8, filename: str | None = None
):
    """A grid of images (values in [0, 1] or uint8) with a title under each."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig


# ------------------------------------------------ multi-task studies: gates and baselines
def _epoch_axis(ax, epochs: int) -> None:
    """An x axis of whole epochs 1..``epochs`` (never 1.5)."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))


def _finish(fig, caption: str, filename: str | None):
    """Caption (wrapped to the figure's width), layout, and the file under figures/."""
    fig.suptitle(caption, fontsize=10, wrap=True)
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig


def plot_gated_losses(
    histories: Mapping[str, History],
    tasks: Sequence[str],
    *,
    caption: str,
    filename: str | None = None,
):
    """Training loss of every task per epoch, one panel per run (``{"no DST": h, "DST": h}``).

    A filled dot marks an epoch in which the task was trained; a hollow circle one in which
    its gate (``<task>_gate`` in the history) was 0 -- its loss is still measured then.
    ``caption`` names the data and profile.
    """
    fig, axes = plt.subplots(1, len(histories), figsize=(6 * len(histories), 4.3),
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, (name, history) in zip(axes[0], histories.items()):
        for i, task in enumerate(tasks):
            loss = np.asarray(history[f"{task}_loss"], dtype=float)
            epochs = np.arange(1, len(loss) + 1)
            off = np.asarray(history.get(f"{task}_gate", np.ones(len(loss)))) == 0
            colour = plt.cm.tab10(i % 10)
            ax.plot(epochs, loss, "-", color=colour, label=task)
            ax.plot(epochs[~off], loss[~off], "o", color=colour, ms=5)
            ax.plot(epochs[off], loss[off], "o", color=colour, mfc="white", ms=9, mew=2)
        ax.plot([], [], "o", color="0.3", mfc="white", ms=9, mew=2, label="gate 0 (dropped)")
        ax.set(title=name, ylabel="training loss")
        _epoch_axis(ax, len(loss))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    return _finish(fig, caption, filename)


def plot_gates(
    history: History, tasks: Sequence[str], *, caption: str, filename: str | None = None
):
    """DST's keep probabilities and gates: one row per task, one column per epoch.

    The colour (and number) is the keep probability the epoch's gate was drawn with
    (``<task>_keep_prob``); a red frame marks a cell whose gate was 0 (``<task>_gate``).
    """
    keep = np.array([history[f"{t}_keep_prob"] for t in tasks], dtype=float)
    gates = np.array([history[f"{t}_gate"] for t in tasks], dtype=float)
    epochs = keep.shape[1]
    fig, ax = plt.subplots(figsize=(min(4 + 0.8 * epochs, 14), 1.2 + 0.45 * len(tasks)))
    extent = (0.5, epochs + 0.5, len(tasks) - 0.5, -0.5)
    image = ax.imshow(keep, cmap="viridis", vmin=0.2, vmax=1.0, aspect="auto", extent=extent)
    for row, column in zip(*np.nonzero(gates == 0)):
        frame = plt.Rectangle((column + 0.55, row - 0.45), 0.9, 0.9, fill=False, ec="red", lw=2.5)
        ax.add_patch(frame)
    if epochs <= 20:
        for (row, column), p in np.ndenumerate(keep):
            ax.text(column + 1, row, f"{p:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if p < 0.6 else "black")  # fmt: skip
    ax.plot([], [], "s", mfc="none", mec="red", mew=2.5, ms=10, label="gate 0 (dropped)")
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    _epoch_axis(ax, epochs)
    fig.colorbar(image, ax=ax, label="keep probability")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12 - 0.5 / len(tasks)), fontsize=8)
    return _finish(fig, caption, filename)


def plot_attribute_accuracy(
    tables: Mapping[str, Sequence],
    *,
    caption: str,
    column: str = "accuracy",
    filename: str | None = None,
):
    """Per-attribute accuracy beside the majority baseline (the 2023 report's Figure 4, made
    honest).

    ``tables`` maps a run name (``"no DST"``, ``"DST"``) to its per-seed test tables
    (:func:`mtlkit.analysis.scoring.attribute_table`). Bars: mean over seeds; dots: the seeds;
    black bars: the majority-class baseline. A bar below its black mark is worse than
    always answering the training set's majority class.
    """
    attributes = [a for a in next(iter(tables.values()))[0].index if a != "mean over tasks"]
    x, width = np.arange(len(attributes)), 0.8 / len(tables)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(attributes)), 4.3))
    for i, (name, runs) in enumerate(tables.items()):
        values = np.array([[t.loc[a, column] for a in attributes] for t in runs], dtype=float)
        offset = x - 0.4 + width * (i + 0.5)
        ax.bar(offset, values.mean(0), width * 0.9, label=f"{name} ({len(runs)} seed(s))")
        ax.plot(np.repeat(offset, len(runs)), values.T.ravel(), ".", color="0.2", ms=4)
    baseline = np.mean([[t.loc[a, "majority_baseline"] for a in attributes]
                        for runs in tables.values() for t in runs], axis=0)  # fmt: skip
    ax.hlines(baseline, x - 0.45, x + 0.45, color="black", lw=2.5, label="majority baseline")
    ax.set_xticks(x, attributes, rotation=20, fontsize=8)
    low = min(float(baseline.min()), *(float(t[column].min()) for r in tables.values() for t in r))
    ax.set(ylabel=f"test {column}", ylim=(max(0.0, low - 0.05), 1.0))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, caption, filename)


# ---------------------------------------------------------------- task interference
def plot_series(
    frame, *, caption: str, ylabel: str, reference: float | None = 0.0, filename: str | None = None
):
    """One line per column of ``frame`` over its index -- e.g. gradient cosines over epochs
    trained (``GradientProbe.layer_frame()``), or loss ratios ``L_j / L_j(0)`` -- with a
    dotted line at ``reference``."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for column in frame.columns:
        ax.plot(frame.index, frame[column], marker=".", label=str(column))
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, ls=":")
    ax.set(xlabel=frame.index.name or "", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=1 + len(frame.columns) // 9)
    return _finish(fig, caption, filename)


def plot_cosine_matrices(tables: Mapping, *, caption: str, filename: str | None = None):
    """Task x task cosine tables side by side (``{title: DataFrame}``), one -1..1 scale."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables) + 1, 4.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (title, table) in zip(axes[0], tables.items()):
        image = ax.imshow(table.to_numpy(), cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xticks(range(len(table.columns)), table.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cosine of the task gradients")
    fig.suptitle(caption, fontsize=10)
    if filename:
        save(fig, filename)
    return fig


# ------------------------------------------------------------ weighting methods
def plot_task_weights(
    histories: Mapping[str, Sequence[Mapping[str, Sequence[float]]]],
    tasks: Sequence[str],
    *,
    caption: str,
    relative: bool = True,
    filename: str | None = None,
):
    """Each method's per-task weight over the epochs: one panel per method, one line per task
    (mean over seeds; with several seeds a band from min to max).

    ``histories`` maps a method to its per-seed histories. A panel shows ``<task>_weight``
    (logged by ``train(..., weighting=...)``) or, for DST, ``<task>_keep_prob``. With
    ``relative`` the weights of each epoch are divided by their mean over tasks, so 1 is an
    equal share whatever the method's scale (UW's exp(-s) and GradNorm's sum to ~K, MGDA's
    alpha and RLW's softmax to 1); keep probabilities are drawn as they are.
    """
    columns = min(3, len(histories))
    rows = math.ceil(len(histories) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    for ax, (name, runs) in zip(axes.flat, histories.items()):
        key = "weight" if f"{tasks[0]}_weight" in runs[0] else "keep_prob"
        values = np.array([[h[f"{t}_{key}"] for t in tasks] for h in runs], dtype=float)
        if relative and key == "weight":  # (seeds, tasks, epochs) / mean over tasks
            values = values / values.mean(axis=1, keepdims=True)
        epochs = np.arange(1, values.shape[2] + 1)
        for i, task in enumerate(tasks):
            colour = plt.cm.tab10(i % 10)
            ax.plot(epochs, values[:, i].mean(0), "o-", color=colour, ms=3, label=task)
            if len(values) > 1:
                ax.fill_between(epochs, values[:, i].min(0), values[:, i].max(0),
                                color=colour, alpha=0.12)  # fmt: skip
        label = "keep probability" if key == "keep_prob" else "weight" + (" / mean" * relative)
        ax.set(title=f"{name} ({len(runs)} seed(s))", xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(histories) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(caption, fontsize=10, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    if filename:
        save(fig, filename)
    return fig
