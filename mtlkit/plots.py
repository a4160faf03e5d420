"""Plotting helpers: learning curves of several models, averaged over seeds.

Every figure carries a caption line naming the data and profile that produced it, and is
saved under :func:`mtlkit.config.figures_dir` when a file name is given.
"""

from __future__ import annotations

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
        ax = axes[row][col]
        for i, (model, histories) in enumerate(runs.items()):
            for style, (split, prefix) in zip(styles, splits.items()):
                values = _stack(histories, f"{prefix}{task}_{metric}")
                if values is None:
                    continue
                x = np.arange(1, values.shape[1] + 1)
                colour = colours[i % len(colours)]
                ax.plot(x, values.mean(0), style, color=colour, label=f"{model} ({split})")
                if len(values) > 1:
                    ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.15)
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("epoch")
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


def image_grid(images, titles: Sequence[str], *, caption: str, columns: int = 8, filename: str | None = None):
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


def plot_architecture(model, filename: str, *, show_shapes: bool = True, dpi: int = 48) -> Path:
    """Draw a functional model like ``keras.utils.plot_model`` and save it under figures/.

    Same picture as ``plot_model``, but with straight edge segments: Graphviz's orthogonal
    edge router (Keras's default) crashes on some graphs with a shared trunk and a reuse
    connection (``maze.c: chkSgraph`` assertion in Graphviz 2.4x).
    """
    import keras

    dot = keras.utils.model_to_dot(model, show_shapes=show_shapes, dpi=dpi)
    dot.set("splines", "polyline")
    path = config.figures_dir() / filename
    dot.write_png(str(path))
    return path
