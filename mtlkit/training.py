"""Training: one seed for everything, Keras ``fit`` the report's way, and resumable runs.

Two ways to train a multi-task model live here:

* Keras's own ``compile``/``fit`` (:func:`compile_multitask`, :func:`fit_resumable`), used by
  the CIFAR-100 and CelebA comparison notebooks;
* :func:`train`, a custom loop written to be read, which adds Dropped Scheduled Task
  (DST) gating on top (see :mod:`mtlkit.dst`).

Both keep what they have done in a *run directory*, so a run killed halfway (a Colab
disconnect, say) continues where it stopped when started again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf


# ------------------------------------------------------------------------ seeding
def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy, Keras and TensorFlow in one call.

    Pass the same ``seed`` to the data pipeline (shuffling, augmentation) and the DST
    scheduler: with all of them seeded, two runs on the CPU give identical histories.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__}).")
    keras.utils.set_random_seed(seed)


# ---------------------------------------------------------------- compile and fit
def classification_losses(tasks, *, binary: bool = False) -> dict[str, keras.losses.Loss]:
    """One cross-entropy on logits per task: sparse categorical, or binary."""
    if binary:
        return {t: keras.losses.BinaryCrossentropy(from_logits=True) for t in tasks}
    return {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}


def accuracy_metrics(tasks, *, binary: bool = False) -> dict[str, list]:
    """An ``accuracy`` metric per task that works on logits (logged as ``<task>_accuracy``)."""
    if binary:
        return {t: [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")] for t in tasks}
    return {t: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for t in tasks}


def compile_multitask(
    model: keras.Model,
    *,
    learning_rate: float,
    loss_weights: Mapping[str, float] | None = None,
    binary: bool = False,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile ``model`` with Adam, a cross-entropy per output, and per-task accuracy.

    The CIFAR-100 report: ``learning_rate=5e-4, loss_weights={"fine": 2, "coarse": 1}``.
    The CelebA report: ``learning_rate=1e-3, binary=True``.
    """
    tasks = list(model.output_names)
    if loss_weights is not None:
        unknown = set(loss_weights) - set(tasks)
        if unknown:
            raise ValueError(
                f"loss_weights names {sorted(unknown)}, which are not outputs of the model "
                f"(its outputs are {tasks})."
            )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=classification_losses(tasks, binary=binary),
        loss_weights=dict(loss_weights) if loss_weights is not None else None,
        metrics=accuracy_metrics(tasks, binary=binary),
        jit_compile=jit_compile,
    )
    return model


class EvaluateEachEpoch(keras.callbacks.Callback):
    """Evaluate on extra datasets at every epoch end and add the results to the logs.

    ``EvaluateEachEpoch({"test": test_ds})`` adds ``test_loss``, ``test_fine_accuracy``,
    ... beside fit's own ``val_`` entries, so a single history holds train, validation
    and test curves.
    """

    def __init__(self, datasets: Mapping[str, tf.data.Dataset]):
        super().__init__()
        self.datasets = dict(datasets)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix, data in self.datasets.items():
            results = self.model.evaluate(data, verbose=0, return_dict=True)
            logs.update({f"{prefix}_{k}": float(v) for k, v in results.items()})


def atomic_write_json(path: Path, payload) -> None:
    """Write JSON to ``path`` so that a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"Could not write {path} ({err}). If the disk is full, free some space (or "
            "point MTLKIT_RUNS_DIR at a larger disk) and run again: finished epochs are kept."
        ) from err


def read_history_csv(path: Path) -> dict[str, list[float]]:
    """Read a CSVLogger file, keeping the last row of any epoch logged twice.

    An epoch is logged twice when a run was killed after the log line was written but
    before the backup was: the resumed run repeats that epoch.
    """
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return {c: frame[c].astype(float).tolist() for c in frame.columns if c != "epoch"}


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop ``fit`` with an error naming the task whose loss became NaN or infinite."""

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise FloatingPointError(
                    f"The training loss {key!r} became {value} at epoch {epoch + 1}. "
                    "Lower the learning rate or check the inputs for NaNs; the last good "
                    "backup in the run directory was kept."
                )


def fit_resumable(
    build: Callable[[], keras.Model],
    train_data: tf.data.Dataset,
    *,
    epochs: int,
    run_dir: str | os.PathLike,
    validation_data: tf.data.Dataset | None = None,
    extra_eval: Mapping[str, tf.data.Dataset] | None = None,
    recompute: bool = False,
    verbose: int = 1,
    metadata: Mapping | None = None,
) -> dict[str, list[float]]:
    """``model.fit`` that survives a disconnect, and remembers finished runs.

    * ``build()`` returns a compiled model (called only when training is needed);
    * every epoch end backs up weights and optimizer state (Keras's ``BackupAndRestore``)
      and appends the epoch's logs to ``log.csv``; started again with the same
      ``run_dir``, training resumes after the last finished epoch;
    * once all ``epochs`` are done, the history is written to ``history.json`` and later
      calls return it without training, unless ``recompute=True``.

    Returns the per-epoch history (``loss``, ``fine_accuracy``, ``val_...``, ``test_...``).
    """
    run_dir = Path(run_dir)
    done_file, log_file, backup = run_dir / "history.json", run_dir / "log.csv", run_dir / "backup"
    if recompute and run_dir.exists():
        shutil.rmtree(run_dir)
    if done_file.exists():
        stored = json.loads(done_file.read_text())
        if stored.get("epochs") == epochs:
            return stored["history"]
        raise ValueError(
            f"{run_dir} holds a finished run of {stored.get('epochs')} epochs, not {epochs}. "
            "Pass recompute=True to train again, or use another run directory."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build()
    callbacks = [
        EvaluateEachEpoch(extra_eval or {}),
        StopOnNonFinite(),
        keras.callbacks.CSVLogger(str(log_file), append=True),
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
    ]
    try:
        model.fit(
            train_data,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=callbacks,
            verbose=verbose,
        )
    except ValueError as err:
        if backup.exists() and "shape" in str(err).lower():
            raise ValueError(
                f"The backup in {backup} was written by a different model ({err}). "
                "Use a fresh run directory, or recompute=True to discard it."
            ) from err
        raise
    history = read_history_csv(log_file)
    atomic_write_json(done_file, {"epochs": epochs, "metadata": dict(metadata or {}), "history": history})
    shutil.rmtree(backup, ignore_errors=True)
    return history
