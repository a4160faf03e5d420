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
import numpy as np
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


def speed_options_label(mixed_precision: bool, jit_compile: bool | str) -> str:
    """", mixed float16, jit_compile=True" for the options that are on ("" for none): the
    suffix of every title and run name, since both options change the numbers."""
    return "".join([", mixed float16" if mixed_precision else "",
                    f", jit_compile={jit_compile}" if jit_compile else ""])


def compile_multitask(
    model: keras.Model,
    *,
    learning_rate: float,
    loss_weights: Mapping[str, float] | None = None,
    binary: bool = False,
    jit_compile: bool | str = False,
) -> keras.Model:
    """Compile ``model`` with Adam, a cross-entropy per output, and per-task accuracy.

    The CIFAR-100 report: ``learning_rate=5e-4, loss_weights={"fine": 2, "coarse": 1}``.
    The CelebA report: ``learning_rate=1e-3, binary=True``.
    ``jit_compile``: ``False`` (default; XLA changes results in the last digits), ``True``
    (XLA: usually faster on a GPU) or ``"auto"`` (Keras decides: XLA on a GPU).
    Under a ``mixed_float16`` policy Keras wraps Adam in a ``LossScaleOptimizer`` itself.
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


def atomic_write(path: Path, write: Callable, *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file, then rename it to ``path``.

    A reader never sees a half-written ``path``: it is the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"Could not write {path} ({err}). If the disk is full, free some space (or "
            "point MTLKIT_RUNS_DIR at a larger disk) and run again: finished epochs are kept."
        ) from err


def atomic_write_json(path: Path, payload) -> None:
    """Write JSON to ``path`` so that a reader never sees a half-written file."""
    atomic_write(path, lambda f: json.dump(payload, f, indent=1))


def read_history_csv(path: Path) -> dict[str, list[float]]:
    """Read a CSVLogger file, keeping the last row of any epoch logged twice.

    An epoch is logged twice when a run was killed after the log line was written but
    before the backup was: the resumed run repeats that epoch. Columns that are empty
    throughout (CSVLogger's ``val_`` placeholders when there is no validation) are dropped.
    """
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    frame = frame.dropna(axis="columns", how="all")
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
    callbacks: list | None = None,
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

    ``callbacks`` are added after the kit's own. Returns the per-epoch history
    (``loss``, ``fine_accuracy``, ``val_...``, ``test_...``).
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
    if int(train_data.cardinality()) == 0:
        raise ValueError(
            "train_data is empty (0 batches): check the split, the `limit` and the data "
            "folder you passed."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build()
    callbacks = [
        EvaluateEachEpoch(extra_eval or {}),
        StopOnNonFinite(),
        keras.callbacks.CSVLogger(str(log_file), append=True),
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        *(callbacks or []),
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


# --- the custom training loop (DST) ---
#
# ``train`` below is Keras's ``fit`` written out so that a student can read it, with DST's
# per-epoch task gates added. One training step is::
#
#     with tf.GradientTape() as tape:
#         predictions = model(x, training=True)
#         task_losses = [loss_j(y_j, prediction_j) for every task j]   # mean over the batch
#         total = sum_j coefficient_j * task_losses[j] + regularisation
#     gradients = tape.gradient(total, model.trainable_variables)
#     optimizer.apply_gradients(zip(gradients, model.trainable_variables))
#
# with ``coefficient_j = gate_j * w_j * loss_weight_j`` held in a ``tf.Variable``: new
# gates each epoch are a variable assignment, not a new trace of the step function.

CHECKPOINT = "checkpoint.npz"
"""The file in a ``run_dir`` that holds the last finished epoch of :func:`train`."""


def _task_losses(losses, tasks: list[str]) -> dict[str, keras.losses.Loss]:
    """One loss object per task (a single loss is used for every task)."""
    if not isinstance(losses, Mapping):
        losses = {t: losses for t in tasks}
    unknown = sorted(set(losses) - set(tasks))
    missing = [t for t in tasks if t not in losses]
    if unknown or missing:
        raise ValueError(
            f"losses must name exactly the model's outputs {tasks} "
            f"(unknown: {unknown}, missing: {missing})."
        )
    return {t: keras.losses.get(losses[t]) for t in tasks}


def _accuracy_for(loss: keras.losses.Loss, name: str) -> keras.metrics.Metric | None:
    """The accuracy that goes with a cross-entropy loss (None for other losses)."""
    from_logits = getattr(loss, "from_logits", False) or loss.get_config().get("from_logits", False)
    if isinstance(loss, keras.losses.BinaryCrossentropy):
        return keras.metrics.BinaryAccuracy(threshold=0.0 if from_logits else 0.5, name=name)
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        return keras.metrics.CategoricalAccuracy(name=name)
    return None


def _use_xla(model: keras.Model, jit_compile: bool | str) -> bool:
    """``jit_compile`` as ``fit`` reads it: ``"auto"`` means XLA on an accelerator."""
    if jit_compile != "auto":
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile={jit_compile!r}: use True, False or 'auto'.")
        return jit_compile
    accelerators = [d for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    if not accelerators or tf.config.experimental.is_op_determinism_enabled():
        return False
    return all(getattr(layer, "supports_jit", True) for layer in model._flatten_layers())


class _TaskMeters:
    """Per-task running means of the loss and accuracies, kept in variables (no host sync)."""

    def __init__(self, tasks: list[str], losses: Mapping[str, keras.losses.Loss], prefix: str = ""):
        self.tasks = tasks
        self.total = keras.metrics.Mean(name=f"{prefix}loss")
        self.loss = {t: keras.metrics.Mean(name=f"{prefix}{t}_loss") for t in tasks}
        accuracies = {t: _accuracy_for(losses[t], f"{prefix}{t}_accuracy") for t in tasks}
        self.accuracy = {t: m for t, m in accuracies.items() if m is not None}

    def update(self, total, task_losses, y, y_pred, batch_size) -> None:
        """Add one batch (called inside the compiled step)."""
        self.total.update_state(total, sample_weight=batch_size)
        for t, value in zip(self.tasks, task_losses):
            self.loss[t].update_state(value, sample_weight=batch_size)
        for t, metric in self.accuracy.items():
            metric.update_state(y[t], y_pred[t])

    def all(self) -> list[keras.metrics.Metric]:
        return [self.total, *self.loss.values(), *self.accuracy.values()]

    def results(self) -> dict:
        """The running values as tensors (the progress bar fetches them in its own thread)."""
        return {m.name: m.result() for m in self.all()}

    def reset(self) -> None:
        for m in self.all():
            m.reset_state()

    def read(self) -> dict[str, float]:
        """The epoch's values as Python floats: the one host round trip per epoch."""
        return {k: float(v) for k, v in self.results().items()}


class _Loop:
    """The compiled training, evaluation and measuring steps of :func:`train`."""

    def __init__(self, model, losses, optimizer, loss_weights, train_spec, val_spec=None,
                 jit_compile: bool | str = False):
        self.model, self.optimizer = model, optimizer
        self.tasks = list(model.output_names)
        self.losses = losses
        self.loss_weights = [float(loss_weights.get(t, 1.0)) for t in self.tasks]
        # gate_j * w_j * loss_weight_j, changed once per epoch without retracing
        self.coefficients = tf.Variable(self.loss_weights, trainable=False, dtype=tf.float32)
        self.train_meters = _TaskMeters(self.tasks, losses)
        # the step (1-based, within the epoch) at which each task's loss was first not finite
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.first_non_finite = tf.Variable([0] * len(self.tasks), trainable=False, dtype=tf.int64)
        self.val_meters = _TaskMeters(self.tasks, losses, prefix="val_")
        # one trace per step function: the datasets' specs (batch dimension None) fix the
        # input signature, so a smaller last batch does not trigger a second trace
        jit = _use_xla(model, jit_compile)
        self.train_step = tf.function(self._train_step, input_signature=train_spec, jit_compile=jit)
        self.measure_step = tf.function(self._measure_step, input_signature=train_spec, jit_compile=jit)
        self.eval_step = tf.function(self._eval_step, input_signature=val_spec, jit_compile=jit)

    def set_coefficients(self, gates: Mapping[str, int], scales: Mapping[str, float]) -> None:
        values = [gates[t] * scales[t] * w for t, w in zip(self.tasks, self.loss_weights)]
        self.coefficients.assign(values)

    def reset_epoch(self) -> None:
        self.train_meters.reset()
        self.steps.assign(0)
        self.first_non_finite.assign(tf.zeros_like(self.first_non_finite))

    def _watch(self, task_losses) -> None:
        """Remember the first step at which each task's loss was NaN or infinite."""
        step = self.steps.assign_add(1)
        bad = tf.logical_not(tf.math.is_finite(tf.stack(task_losses)))
        first = self.first_non_finite
        first.assign(tf.where(tf.logical_and(bad, tf.equal(first, 0)), step, first))

    def check_finite(self, epoch: int) -> None:
        """Raise if a loss was not finite in this epoch, naming the task that went first."""
        first = self.first_non_finite.numpy()
        if not first.any():
            return
        order = sorted((int(s), t) for s, t in zip(first, self.tasks) if s > 0)
        (step, task), later = order[0], order[1:]
        where = "the measuring pass (epoch 0)" if epoch == 0 else f"epoch {epoch}"
        also = "; then " + ", ".join(f"{t!r} at step {s}" for s, t in later) if later else ""
        raise FloatingPointError(
            f"The training loss of task {task!r} became NaN or infinite at step {step} of "
            f"{where}{also}. Lower the learning rate or check that task's labels and inputs "
            "for NaNs; the last good checkpoint in run_dir was kept."
        )

    def _forward(self, x, y, training: bool):
        """Predictions, the per-task mean losses, and their weighted sum."""
        y_pred = self.model(x, training=training)
        task_losses = [self.losses[t](y[t], y_pred[t]) for t in self.tasks]
        weights = tf.unstack(self.coefficients) if training else self.loss_weights
        total = tf.add_n([w * loss for w, loss in zip(weights, task_losses)])
        if self.model.losses:  # regularisation penalties, as fit adds them
            total = total + tf.add_n(self.model.losses)
        return y_pred, task_losses, total

    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            y_pred, task_losses, total = self._forward(x, y, training=True)
            scaled = self.optimizer.scale_loss(total)  # loss scaling under mixed_float16
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))  # (unscales them first)
        self._watch(task_losses)
        self.train_meters.update(total, task_losses, y, y_pred, _batch_size(x))
        return self.train_meters.results()

    def _eval_step(self, x, y):
        y_pred, task_losses, total = self._forward(x, y, training=False)
        self.val_meters.update(total, task_losses, y, y_pred, _batch_size(x))

    def _measure_step(self, x, y):
        """DST's epoch 0: the training-mode losses, and no update of any trainable weight."""
        y_pred = self.model(x, training=True)
        task_losses = [self.losses[t](y[t], y_pred[t]) for t in self.tasks]
        self._watch(task_losses)
        self.train_meters.update(tf.add_n(task_losses), task_losses, y, y_pred, _batch_size(x))


def _batch_size(x) -> tf.Tensor:
    first = tf.nest.flatten(x)[0]
    return tf.cast(tf.shape(first)[0], tf.float32)


def _check_data(data, tasks: list[str], name: str) -> None:
    """``data`` must yield ``(inputs, {task: labels})`` batches covering every task."""
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            f"{name} must be a batched tf.data.Dataset of (inputs, {{task: labels}}) "
            f"(or, for train_data, a function epoch -> such a dataset); got {type(data).__name__}."
        )
    spec = data.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping)):
        raise ValueError(
            f"{name} must yield (inputs, {{task: labels}}) pairs; its elements look like {spec}. "
            "Map it with `lambda x, y: (x, y)` into that form (sample weights are not supported)."
        )
    missing = [t for t in tasks if t not in spec[1]]
    if missing:
        raise ValueError(f"{name} has no labels for task(s) {missing}; its label keys are {sorted(spec[1])}.")


def _steps(data: tf.data.Dataset) -> int | None:
    n = int(data.cardinality())
    return n if n >= 0 else None


# ------------------------------------------------------------- checkpoints of train()
def model_signature(model: keras.Model) -> list[list]:
    """Every variable's short name and shape, in order: what a checkpoint must match.

    Short names (``kernel``, ``gamma``), not full paths: automatic layer names such as
    ``dense_3`` depend on what else was built in the same Python process.
    """
    return [[v.path.split("/")[-1], list(v.shape)] for v in model.variables]


def _write_checkpoint(run_dir: Path, model, optimizer, state: dict) -> None:
    """Save weights, optimizer variables and ``state`` to a temporary file, then rename it."""
    arrays = {f"model_{i}": v.numpy() for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    arrays["state"] = json.dumps(state)
    atomic_write(run_dir / CHECKPOINT, lambda f: np.savez(f, **arrays), binary=True)
    atomic_write_json(run_dir / "history.json", {"epoch": state["epoch"], "history": state["history"]})


def _read_checkpoint(run_dir: Path, model, optimizer) -> dict | None:
    """Load the last finished epoch into ``model`` and ``optimizer``; return its state."""
    (run_dir / (CHECKPOINT + ".tmp")).unlink(missing_ok=True)  # an interrupted write
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        state = json.loads(str(arrays.pop("state")))
    except Exception as err:
        raise ValueError(
            f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}). Delete it to "
            "start this run again from epoch 1, or use another run_dir."
        ) from err
    expected, found = model_signature(model), state["signature"]
    if expected != found:
        diff = next((i for i, (a, b) in enumerate(zip(expected, found)) if a != b), min(len(expected), len(found)))
        raise ValueError(
            f"{run_dir} holds a checkpoint of a different model: {len(found)} variables against "
            f"this model's {len(expected)}, first difference at variable {diff} "
            f"({found[diff] if diff < len(found) else 'none'} vs "
            f"{expected[diff] if diff < len(expected) else 'none'}). Use a fresh run_dir for this model."
        )
    for i, variable in enumerate(model.variables):
        variable.assign(arrays[f"model_{i}"])
    optimizer_arrays = [arrays[f"optimizer_{i}"] for i in range(len(optimizer.variables))]
    if len(optimizer_arrays) != state["optimizer_variables"]:
        raise ValueError(f"{path} was written with another kind of optimizer; use the same one, or a fresh run_dir.")
    for variable, value in zip(optimizer.variables, optimizer_arrays):
        variable.assign(value)
    return state


# ------------------------------------------------------------------------- train()
def train(
    model: keras.Model,
    train_data,
    *,
    epochs: int,
    losses,
    optimizer: keras.optimizers.Optimizer,
    loss_weights: Mapping[str, float] | None = None,
    scheduler=None,
    validation_data: tf.data.Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 1,
    jit_compile: bool | str = False,
) -> keras.callbacks.History:
    """Train a multi-task model with a readable loop, optionally with DST task gates.

    Args:
        model: a functional model whose outputs are a dict keyed by task.
        train_data: batched ``tf.data.Dataset`` of ``(inputs, {task: labels})``; or a
            function ``epoch -> dataset`` (epoch counted from 0), which makes shuffling
            depend on the epoch only -- then a resumed run sees the same order as a
            straight one (``lambda e: ds.shuffle(n, seed=seed + e).batch(b)``).
        epochs: the total number of epochs (also when resuming).
        losses: ``{task: loss}`` (each reduced as the mean over the batch, like ``fit``), or
            one loss for every task.
        optimizer: a Keras optimizer; it is built on the model's trainable variables.
        loss_weights: ``{task: weight}``; the trained loss is ``sum_j weight_j * L_j``.
        scheduler: a :class:`mtlkit.dst.DSTScheduler`. Then an epoch-0 pass measures the
            starting losses (training mode, so BatchNorm's moving statistics do move; no
            trainable weight changes), and epoch ``e`` trains on
            ``sum_j gate_j * w_j * weight_j * L_j``. A dropped task's loss is still measured
            and logged; its gradient is exactly 0. **With Adam a dropped task's head still
            moves**: Adam's momentum from earlier epochs keeps updating every weight even when
            its gradient is 0 (plain SGD leaves it where it was).
        validation_data: evaluated (inference mode) at every epoch end, as ``val_*``.
        run_dir: folder for a checkpoint written at every epoch end (weights, optimizer,
            scheduler and its random generator, history; written to a temporary file, then
            renamed). Called again with the same ``run_dir`` it continues after the last
            finished epoch; when all ``epochs`` are done (or EarlyStopping stopped the run)
            it loads the final weights and returns the stored history without training.
            Callbacks' own state (EarlyStopping's patience counter) is not kept.
        seed: calls :func:`set_seed` (Python, NumPy, Keras, TensorFlow) and seeds a scheduler
            made with ``seed=None``. Shuffling and augmentation in ``train_data`` are the
            caller's: seed them too. With all of that, two runs on a CPU are identical.
        callbacks: Keras callbacks (``EarlyStopping``, ``CSVLogger``, ...); they see ``logs``
            with every value of the history below.
        verbose: 0 silent, 1 a Keras progress bar.
        jit_compile: compile the steps with XLA: ``False`` (default; XLA changes results in
            the last digits), ``True``, or ``"auto"`` (XLA on an accelerator, like ``fit``).

    Mixed precision: build the model under ``keras.mixed_precision.set_global_policy(
    "mixed_float16")`` (the kit's logits layers stay float32). ``train`` then wraps the
    optimizer in a ``keras.optimizers.LossScaleOptimizer``, as ``compile`` does, so small
    float16 gradients do not underflow; a step whose gradients overflow is skipped.

    Returns:
        a ``keras.callbacks.History``; ``.history`` holds per-epoch lists: ``loss`` (the
        trained, gated sum), ``<task>_loss``, ``<task>_accuracy`` (cross-entropy losses),
        ``val_...`` with validation data, and with a scheduler ``<task>_gate`` and
        ``<task>_keep_prob`` (the probability its gate was drawn with).
        ``.step_function`` is the compiled training step.

    Raises:
        FloatingPointError: a task's mean training loss became NaN or infinite (the
            message names the task and the epoch; the last good checkpoint stays).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    tasks = list(model.output_names)
    task_losses = _task_losses(losses, tasks)
    weights = dict(loss_weights or {})
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ValueError(f"loss_weights names {unknown}, which are not outputs of the model {tasks}.")
    if scheduler is not None and sorted(scheduler.tasks) != sorted(tasks):
        raise ValueError(f"The scheduler's tasks {scheduler.tasks} are not the model's outputs {tasks}.")
    data_for = train_data if callable(train_data) else (lambda epoch: train_data)
    _check_data(data_for(0), tasks, "train_data")
    if validation_data is not None:
        _check_data(validation_data, tasks, "validation_data")
    if seed is not None:
        set_seed(seed)
        if scheduler is not None and scheduler.seed is None:
            scheduler.reseed(seed)
    if model.dtype_policy.name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    record = {"epoch": 0, "history": {}, "stopped": False}
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = _read_checkpoint(run_dir, model, optimizer) or record
        _restore_scheduler(record, scheduler, run_dir)
        if record["epoch"] > epochs:
            raise ValueError(
                f"{run_dir} already holds {record['epoch']} epochs, more than epochs={epochs}. "
                "Ask for at least that many, or use a fresh run_dir."
            )
    val_spec = validation_data.element_spec if validation_data is not None else None
    loop = _Loop(model, task_losses, optimizer, weights, data_for(0).element_spec, val_spec,
                 jit_compile)
    result = _history(model, record["history"])
    result.step_function = loop.train_step
    if record["epoch"] >= epochs or record["stopped"]:
        return result

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=_steps(data_for(record["epoch"])),
    )
    model.stop_training = False
    callback_list.on_train_begin()
    if scheduler is not None and scheduler.initial is None:
        scheduler.observe_initial(_measuring_pass(loop, data_for(0)))
    for epoch in range(record["epoch"], epochs):
        logs = _run_epoch(loop, data_for(epoch), epoch, scheduler, validation_data, callback_list)
        callback_list.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            record["history"].setdefault(key, []).append(float(value))
        record.update(epoch=epoch + 1, stopped=bool(model.stop_training))
        if run_dir is not None:
            _save(run_dir, model, optimizer, scheduler, record)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return _history(model, record["history"], step_function=loop.train_step)


def _restore_scheduler(record: dict, scheduler, run_dir: Path) -> None:
    """Put the scheduler back where the checkpoint left it (or refuse a mismatch)."""
    stored = record.get("scheduler")
    if record["epoch"] == 0:
        return
    if (stored is None) != (scheduler is None):
        raise ValueError(
            f"{run_dir} was trained {'with' if stored else 'without'} a DST scheduler; resume it "
            f"the same way, or use a fresh run_dir."
        )
    if scheduler is not None:
        scheduler.set_state(stored)


def _save(run_dir: Path, model, optimizer, scheduler, record: dict) -> None:
    state = {
        **record,
        "signature": model_signature(model),
        "optimizer_variables": len(optimizer.variables),
        "scheduler": scheduler.get_state() if scheduler is not None else None,
    }
    _write_checkpoint(run_dir, model, optimizer, state)


def _history(model, history: dict, step_function=None) -> keras.callbacks.History:
    """A ``keras.callbacks.History`` holding ``history`` (as ``fit`` returns one)."""
    result = keras.callbacks.History()
    result.set_model(model)
    result.history = {k: list(v) for k, v in history.items()}
    result.epoch = list(range(len(next(iter(history.values()), []))))
    result.step_function = step_function
    return result


def _measuring_pass(loop: _Loop, data: tf.data.Dataset) -> dict[str, float]:
    """DST's epoch 0: every task's mean training loss before any update."""
    loop.reset_epoch()
    for x, y in data:
        loop.measure_step(x, y)
    loop.check_finite(0)
    values = loop.train_meters.read()
    return {t: values[f"{t}_loss"] for t in loop.tasks}


def _run_epoch(loop: _Loop, data, epoch: int, scheduler, validation_data, callback_list) -> dict:
    """Train one epoch (0-based ``epoch``) and return its logs."""
    logs: dict[str, float] = {}
    scales = {t: 1.0 for t in loop.tasks}
    gates = dict(scales)
    if scheduler is not None:
        probabilities = dict(scheduler.probabilities)
        gates, scales = scheduler.sample(), scheduler.loss_scales
        logs.update({f"{t}_keep_prob": probabilities[t] for t in loop.tasks})
        logs.update({f"{t}_gate": float(gates[t]) for t in loop.tasks})
    loop.set_coefficients(gates, scales)
    loop.reset_epoch()
    callback_list.on_epoch_begin(epoch)
    steps = 0
    for steps, (x, y) in enumerate(data, start=1):
        callback_list.on_train_batch_begin(steps - 1)
        step_logs = loop.train_step(x, y)
        callback_list.on_train_batch_end(steps - 1, step_logs)
    if steps == 0:
        raise ValueError("train_data gave no batches: is the dataset empty, or was it consumed (an iterator)?")
    loop.check_finite(epoch + 1)
    values = loop.train_meters.read()
    if scheduler is not None:
        scheduler.observe_epoch({t: values[f"{t}_loss"] for t in loop.tasks})
    logs = {**values, **logs}
    if validation_data is not None:
        loop.val_meters.reset()
        for x, y in validation_data:
            loop.eval_step(x, y)
        logs.update(loop.val_meters.read())
    return logs
