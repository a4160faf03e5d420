"""Training the Keras way: ``compile`` and a resumable ``fit``.

Two ways to train a multi-task model live in the kit, both exported by :mod:`mtlkit.training`:

* Keras's own ``compile``/``fit`` (:func:`compile_multitask`, :func:`fit_resumable`, here),
  used by the CIFAR-100 comparison and the CelebA study;
* :func:`mtlkit.training.loop.train`, a custom loop written to be read, which adds Dropped
  Scheduled Task (DST) gating on top (see :mod:`mtlkit.methods.dst`).

Both keep what they have done in a *run directory* (:mod:`mtlkit.training.runs`), so a run killed
halfway (a Colab disconnect, say) continues where it stopped when started again.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from mtlkit import work
from mtlkit.data.celeba_images import damaged_images_named
from mtlkit.models.tasks import accuracy_metrics, check_loss_weights, classification_losses
from mtlkit.training import runs

FINAL_WEIGHTS = "final.weights.h5"
"""The file in which :func:`fit_resumable` keeps a finished run's weights (on request)."""


def speed_options_label(mixed_precision: bool, jit_compile: bool | str) -> str:
    """ ", mixed float16, jit_compile=True" for the options that are on ("" for none): the
    suffix of every title and run name, since both options change the numbers."""
    return "".join(
        [
            ", mixed float16" if mixed_precision else "",
            f", jit_compile={jit_compile}" if jit_compile else "",
        ]
    )


def compile_multitask(
    model: keras.Model,
    *,
    learning_rate: float,
    loss_weights: Mapping[str, float] | None = None,
    binary: bool = False,
    jit_compile: bool | str = False,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> keras.Model:
    """Compile ``model`` with Adam, a cross-entropy per output, and per-task accuracy.

    The CIFAR-100 report: ``learning_rate=5e-4, loss_weights={"fine": 2, "coarse": 1}``.
    The CelebA report: ``learning_rate=1e-3, binary=True``.
    ``jit_compile``: ``False`` (default; XLA changes results in the last digits), ``True``
    (XLA: usually faster on a GPU) or ``"auto"`` (Keras decides: XLA on a GPU).
    Under a ``mixed_float16`` policy Keras wraps Adam in a ``LossScaleOptimizer`` itself.
    ``optimizer``: another optimizer instead of ``Adam(learning_rate)`` (e.g. with weight decay).
    ``learning_rate``: a positive, finite number (or a Keras learning-rate schedule).
    ``loss_weights``: a dict keyed by output name, as :func:`mtlkit.training.train` takes it:
    a task left out weighs 1, each weight is a finite number >= 0; a list is refused (a
    dict of outputs has no plain order to map it by).

    Keras ``fit`` has no notion of unknown labels: a label of -1 is trained on as a label
    value. :func:`fit_resumable` refuses such labels; train partially labelled data with
    :func:`mtlkit.training.train`, which leaves them out.
    """
    names = list(model.output_names)
    _check_learning_rate(learning_rate)
    weights = check_loss_weights(loss_weights, names)
    losses = classification_losses(names, binary=binary)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=losses,
        loss_weights={t: weights.get(t, 1.0) for t in names} if loss_weights is not None else None,
        metrics=accuracy_metrics(losses),
        jit_compile=jit_compile,
    )
    return model


def _check_learning_rate(rate) -> None:
    """Refuse a learning rate that is not a positive, finite number (or a schedule): a
    negative one would climb the loss (gradient ascent), 0 or NaN train nothing."""
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return
    number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
    if not (number and math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"learning_rate={rate!r}: pass a positive, finite number (the report's are 5e-4 "
            "for CIFAR-100 and 1e-3 for CelebA), or a keras.optimizers.schedules schedule."
        )


def restart(
    model: keras.Model, fresh: keras.Model, optimizer=None, method=None, seed: int | None = None
) -> None:
    """Put ``model`` (and its ``optimizer`` and weighting ``method``) back to the start of a
    run: ``fresh``'s values (the same architecture, built after this run's ``set_seed``: its
    initial weights, BatchNorm statistics and dropout seeds) and a new optimizer's.

    Then ``fit`` (on a compiled model) or :func:`train` (given the same objects) reuse the
    steps they traced for ``model`` instead of tracing new ones -- seconds per run for the
    kit's models -- and the run matches one made with new objects, bit for bit. ``method``
    gets a new method's state, and its random generator is started from ``seed``, as
    :func:`train` does for a new method object.
    """
    if [v.shape for v in model.variables] != [v.shape for v in fresh.variables]:
        raise ValueError("restart() needs a fresh model of the same architecture.")
    for variable, value in zip(model.variables, fresh.variables):
        variable.assign(value)
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        twin = type(optimizer).from_config(optimizer.get_config())
        extra = list(method.variables) if method is not None else []
        twin.build(model.trainable_variables + extra)
        for variable, value in zip(optimizer.variables, twin.variables):
            variable.assign(value)
    if method is not None:
        method.set_state(type(method)(method.tasks).get_state())
        if seed is not None:
            method.reseed(seed)


class EvaluateEachEpoch(keras.callbacks.Callback):
    """Evaluate on extra datasets at every epoch end and add the results to the logs.

    ``EvaluateEachEpoch({"test": test_ds})`` adds ``test_loss``, ``test_fine_accuracy``,
    ... beside fit's own ``val_`` entries, so a single history holds train, validation
    and test curves. ``last_epoch=n``: evaluate only after epoch ``n`` (or when training
    stops early); the epochs before log NaN (missing) under the same names.
    """

    def __init__(self, datasets: Mapping[str, tf.data.Dataset], last_epoch: int | None = None):
        super().__init__()
        self.datasets, self.last_epoch = dict(datasets), last_epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        names = [k.removeprefix("val_") for k in logs if k.startswith("val_")]
        early = self.last_epoch is not None and epoch + 1 < self.last_epoch
        if early and names and not self.model.stop_training:  # the names fit's own val_ use
            logs.update({f"{p}_{n}": float("nan") for p in self.datasets for n in names})
            return
        for prefix, data in self.datasets.items():
            results = self.model.evaluate(data, verbose=0, return_dict=True)
            logs.update({f"{prefix}_{k}": float(v) for k, v in results.items()})


def recalibrate_batchnorm(model: keras.Model, images) -> None:
    """Set every BatchNormalization layer's moving statistics to those of ``images``.

    One training-mode pass with momentum 0 (nested blocks included). After a few dozen
    steps the moving averages still remember their starting values (mean 0, variance 1),
    far from the real ones, so inference-mode accuracy sits at chance although the
    network has learned: recomputing them from a batch of training images fixes that.
    """
    layers = [
        la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(images, training=True)
        work.add_images(model, int(images.shape[0]), training=False)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Before every evaluation in ``fit``, :func:`recalibrate_batchnorm` on ``num_images``
    training images (the first ones of ``train_data``'s first batch; used by the quick
    profile). ``num_images`` must be a positive whole number: to turn recalibration off,
    leave the callback out (the settings' ``recalibrate_bn=0`` does)."""

    def __init__(self, train_data: tf.data.Dataset, num_images: int):
        super().__init__()
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(
                f"num_images={num_images!r}: pass a positive whole number of training images "
                "(a negative one would keep all but the last ones, 0 none); to turn the "
                "recalibration off, leave this callback out."
            )
        self.train_data, self.num_images, self.images = train_data, num_images, None

    def on_train_begin(self, logs=None):
        self.images = next(iter(self.train_data))[0][: self.num_images]

    def on_test_begin(self, logs=None):
        recalibrate_batchnorm(self.model, self.images)


def _drop_cut_line(log_file: Path) -> None:
    """Remove a last line of ``log.csv`` that a kill cut short (no line end): its epoch was
    not backed up either, so the resumed run trains and logs it again."""
    if not log_file.exists():
        return
    text = log_file.read_text()
    if text and not text.endswith("\n"):
        cut = text.splitlines()[-1]
        warnings.warn(f"{log_file}: dropped its last line, cut short by an interrupted write "
                      f"({cut!r}); that epoch is trained again.", stacklevel=3)  # fmt: skip
        log_file.write_text(text[: text.rfind("\n") + 1])


def read_history_csv(path: Path) -> dict[str, list[float]]:
    """Read a CSVLogger file, keeping the last row of any epoch logged twice.

    An epoch is logged twice when a run was killed after the log line was written but
    before the backup was: the resumed run repeats that epoch. Columns that are empty
    throughout (CSVLogger's ``val_`` placeholders when there is no validation) are dropped.
    """
    frame = pd.read_csv(path)
    if "epoch" not in frame.columns:
        raise ValueError(f"{path} is damaged (no header line with 'epoch'): delete its run "
                         "folder, or pass recompute=True, to train the run again.")  # fmt: skip
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
    frame = frame.dropna(axis="columns", how="all")
    return {c: frame[c].astype(float).tolist() for c in frame.columns if c != "epoch"}


class CountWork(keras.callbacks.Callback):
    """Counts what ``fit`` did for :mod:`mtlkit.work` (only while ``MTLKIT_WORK_LOG`` is set).

    ``watch(dataset, training)`` returns the dataset with a counter of the images it gives;
    at the end of training the counts go to :mod:`mtlkit.work`, with one backup per epoch
    and the step functions ``fit`` traced for a model that had none yet.
    """

    def __init__(self, backups: bool = True, traces: int = 0):
        super().__init__()
        self.backups, self.traces = backups, traces  # the step functions fit will trace
        self.counters: list[tuple[tf.Variable, bool]] = []
        self.epochs = 0

    def watch(self, dataset: tf.data.Dataset | None, training: bool):
        if dataset is None or work.log_path() is None:
            return dataset
        counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.counters.append((counter, training))

        def tick(x, *rest):
            size = tf.shape(tf.nest.flatten(x)[0], out_type=tf.int64)[0]
            with tf.control_dependencies([counter.assign_add(size)]):
                return (tf.nest.map_structure(tf.identity, x), *rest)

        return dataset.map(tick)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1

    def on_train_end(self, logs=None):
        for counter, training in self.counters:
            work.add_images(self.model, int(counter.numpy()), training=training)
        work.add_traces(self.traces)
        for _ in range(self.epochs if self.backups else 0):
            work.add_checkpoint()  # BackupAndRestore writes one per epoch


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop ``fit`` with an error naming the task whose loss became NaN or infinite.

    ``skip``: prefixes of logged values not to check (extra evaluations, which log NaN in
    the epochs they skip).
    """

    def __init__(self, skip: tuple[str, ...] = ()):
        super().__init__()
        self.skip = tuple(skip)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if self.skip and key.startswith(self.skip):
                continue
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise FloatingPointError(
                    f"The training loss {key!r} became {value} at epoch {epoch + 1}. "
                    "Lower the learning rate or check the inputs for NaNs; the last good "
                    "backup in the run directory was kept."
                )


UNKNOWN_IN_FIT = "has labels below 0 (-1 marks an unknown label)"


def known_labels_only(data: tf.data.Dataset | None, tasks: list[str], what: str):
    """``data`` with a check in its ``tf.data`` pipeline (outside ``fit``'s compiled step,
    on every backend, batch by batch as they come) that no label of ``tasks`` is below 0:
    Keras ``fit`` would train on a -1 ("unknown") as a label value. The error it raises is
    turned into a ValueError by :func:`_refuse_unknown_labels`."""
    if data is None:
        return None

    def check(x, y, *rest):
        named = y if isinstance(y, Mapping) else {tasks[0]: y}
        asserts = [
            tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(tf.cast(named[t], tf.float32) < 0)),
                [_tag(what, t)],  # (no quotes: the error text escapes them)
            )
            for t in tasks
            if t in named
        ]
        with tf.control_dependencies(asserts):
            return (x, tf.nest.map_structure(tf.identity, y), *rest)

    return data.map(check)


def _tag(what: str, task: str) -> str:
    """The text of :func:`known_labels_only`'s check for one dataset and task."""
    return f"{what}, task {task} {UNKNOWN_IN_FIT}"


def _refuse_unknown_labels(err: Exception, names: list[str], sources: list[str]) -> None:
    """Raise a ValueError naming the data (of ``sources``) and tasks if ``err`` is the check
    of :func:`known_labels_only`; return otherwise."""
    text = str(err)
    if UNKNOWN_IN_FIT not in text:
        return
    found = [f"{w}: task {t!r}" for w in sources for t in names if _tag(w, t) in text]
    raise ValueError(
        f"{', '.join(found) or 'The data'} {UNKNOWN_IN_FIT}. Keras fit has no notion of an "
        "unknown label: it would train on -1 as a label value and count it in the accuracy. "
        "Train partially labelled data with mtlkit.training.train (the study runners' "
        "arm='train' or a weighting arm), whose loop leaves -1 labels out; or drop the "
        "examples without labels before fit."
    ) from None


def build_training_state(model: keras.Model, data: tf.data.Dataset) -> None:
    """Create a compiled model's loss trackers, metrics and optimizer variables before ``fit``.

    Keras's TensorFlow trainer creates them while it traces the first training step, and a
    ``tf.function`` that creates variables is traced twice (about 1 s more per model, measured
    on the CIFAR-100 models). Here they are made eagerly from one example of zeros shaped like
    ``data``'s elements; nothing is drawn from ``data`` or from any random generator, and the
    metrics are reset afterwards.
    """
    spec = data.element_spec
    x, y = spec[0], spec[1]

    def zeros(s):
        return tf.zeros([1, *s.shape[1:]], s.dtype)

    x, y = tf.nest.map_structure(zeros, x), tf.nest.map_structure(zeros, y)
    strategy = getattr(model, "distribute_strategy", None)  # (TensorFlow: tf.distribute)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        model.compute_metrics(x, y, y_pred, sample_weight=None)
        model.optimizer.build(model.trainable_variables)
    model.reset_metrics()


@damaged_images_named()  # a damaged image file in the data: a clear error
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
    save_weights: bool = False,
    backups: bool = True,
    extra_eval_last: bool = False,
) -> dict[str, list[float]]:
    """``model.fit`` that survives a disconnect, and remembers finished runs.

    * ``build()`` returns a compiled model (called only when training is needed);
    * every epoch end backs up weights and optimizer state (Keras's ``BackupAndRestore``)
      and appends the epoch's logs to ``log.csv``; started again with the same
      ``run_dir``, training resumes after the last finished epoch;
    * once all ``epochs`` are done, the history is written to ``history.json`` and later
      calls return it without training, unless ``recompute=True``.

    ``backups=False`` leaves out the per-epoch backup (a run killed halfway starts again):
    for runs of a few minutes (the quick profile), where writing weights and optimizer state
    every epoch costs more than redoing the run.
    ``extra_eval_last=True`` evaluates ``extra_eval`` only after the last epoch (NaN in the
    epochs before; needs ``validation_data``, whose names it uses): the quick profile, which
    reads only the last epoch's test values.
    ``save_weights=True`` keeps the final weights as ``run_dir/final.weights.h5`` (load them
    with ``model.load_weights``) so a finished run can still be evaluated.
    ``callbacks`` run after the extra evaluation and before the log, so values they add
    to the logs are kept. Returns the per-epoch history
    (``loss``, ``fine_accuracy``, ``val_...``, ``test_...``).

    Labels below 0 (-1: unknown) in any of the datasets are refused with a ValueError as
    their batch comes (``fit`` would train on them as a label value): train such data with
    :func:`mtlkit.training.train`.
    """
    run_dir = Path(run_dir)
    log_file, backup = run_dir / "log.csv", run_dir / "backup"
    if recompute and run_dir.exists():
        shutil.rmtree(run_dir)
    stored = runs.read_history(run_dir)
    if stored is not None and stored["finished"]:
        if stored["epochs_done"] == epochs:
            return stored["history"]
        raise ValueError(
            f"{run_dir} holds a finished run of {stored['epochs_done']} epochs, not {epochs}. "
            "Pass recompute=True to train again, or use another run directory."
        )
    if int(train_data.cardinality()) == 0:
        raise ValueError(
            "train_data is empty (0 batches): check the split, the `limit` and the data "
            "folder you passed."
        )
    runs.make_run_dir(run_dir)
    _drop_cut_line(log_file)
    model = build()
    evaluates = validation_data is not None or bool(extra_eval)
    fresh = getattr(model, "train_function", None) is None  # else fit reuses its traced steps
    if fresh:
        build_training_state(model, train_data)
    count = CountWork(backups, traces=(1 + evaluates) if fresh else 0)
    names = list(model.output_names)
    train_data = count.watch(known_labels_only(train_data, names, "train_data"), training=True)
    validation_data = known_labels_only(validation_data, names, "validation_data")
    validation_data = count.watch(validation_data, training=False)
    sources = ["train_data", "validation_data", *(f"extra_eval[{k}]" for k in extra_eval or {})]
    extra_eval = {k: count.watch(known_labels_only(v, names, f"extra_eval[{k}]"), False)
                  for k, v in (extra_eval or {}).items()}  # fmt: skip
    callbacks = [
        count,
        EvaluateEachEpoch(extra_eval, last_epoch=epochs if extra_eval_last else None),
        *(callbacks or []),  # before the log, so that what they add to the logs is kept
        StopOnNonFinite(skip=tuple(f"{prefix}_" for prefix in extra_eval)),
        keras.callbacks.CSVLogger(str(log_file), append=True),
    ]
    if backups:
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False))
    try:  # the data is a tf.data pipeline that shuffles itself: shuffle=False says so
        model.fit(train_data, epochs=epochs, validation_data=validation_data,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # fmt: skip
    except tf.errors.InvalidArgumentError as err:
        _refuse_unknown_labels(err, names, sources)
        raise
    except ValueError as err:
        text = str(err).lower()
        if backup.exists() and ("shape" in text or "could not be loaded" in text):
            raise ValueError(
                f"The backup in {backup} was written by a different model ({err}). "
                "Use a fresh run directory, or recompute=True to discard it."
            ) from err
        raise
    except OSError as err:  # h5py's "truncated file", an unreadable JSON of Keras's
        if backup.exists():
            raise ValueError(
                f"The backup in {backup} is damaged ({err}): a write was cut short. Delete "
                f"{backup} to start this run again from its first epoch, or pass "
                "recompute=True."
            ) from err
        raise
    if save_weights:
        model.save_weights(run_dir / FINAL_WEIGHTS)
    history = read_history_csv(log_file)
    runs.write_history(run_dir, history, finished=True, metadata=metadata)
    shutil.rmtree(backup, ignore_errors=True)
    return history
