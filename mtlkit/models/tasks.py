"""The tasks of a multi-task model: their names, losses and accuracies, checked once.

A multi-task model in the kit is a functional Keras model whose outputs are a dict keyed by
task name (``model.output_names``). Everything that is given *per task* -- losses,
``loss_weights``, DST depths, labels -- must name exactly those tasks; :func:`check_names`
is the one place that says so when it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf

from mtlkit import backend
from mtlkit.data import celeba_labels


def check_names(
    given: Iterable[str], tasks: Iterable[str], what: str, *, every: bool = True
) -> None:
    """Raise a clear ValueError unless ``given`` names only (and, if ``every``, all) ``tasks``."""
    given, tasks = list(given), list(tasks)
    unknown = sorted(set(given) - set(tasks))
    missing = [t for t in tasks if t not in given] if every else []
    if unknown or missing:
        parts = [f"unknown: {unknown}" if unknown else "", f"missing: {missing}" if missing else ""]
        raise ValueError(
            f"{what} must name {'exactly' if every else 'only'} the tasks {tasks} "
            f"({'; '.join(p for p in parts if p)})."
        )


def check_loss_weights(loss_weights, tasks: Iterable[str]) -> dict[str, float]:
    """``loss_weights`` as ``{task: float}``, checked: a dict naming only ``tasks`` (a task
    left out weighs 1), each weight a finite number >= 0. A list is refused: ``compile``
    would map it by the outputs' order, which a dict of outputs does not make plain."""
    if loss_weights is None:
        return {}
    if not isinstance(loss_weights, Mapping):
        raise TypeError(
            f"loss_weights={loss_weights!r}: pass a dict keyed by task (output) name, e.g. "
            f"{dict.fromkeys(tasks, 1.0)}; a task left out weighs 1."
        )
    check_names(loss_weights, tasks, "loss_weights", every=False)
    bad = {t: w for t, w in loss_weights.items() if not _is_weight(w)}
    if bad:
        raise ValueError(
            f"loss_weights {bad}: each weight must be a finite number >= 0 (0 leaves the task "
            "out of the trained loss); NaN, infinite or negative weights train nothing sensible."
        )
    return {t: float(w) for t, w in loss_weights.items()}


def _is_weight(value) -> bool:
    """Whether ``value`` is a finite real number >= 0 (a bool is not a weight)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value) and value >= 0)


def classification_losses(tasks: Iterable[str], *, binary: bool = False) -> dict:
    """One cross-entropy on logits per task: sparse categorical, or binary."""
    if binary:
        return {t: keras.losses.BinaryCrossentropy(from_logits=True) for t in tasks}
    return {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}


def as_loss(loss) -> keras.losses.Loss:
    """A ``keras.losses.Loss`` object from a Loss, a name (``"binary_crossentropy"``), or a
    function ``(y_true, y_pred) -> per-example losses``."""
    if isinstance(loss, keras.losses.Loss):
        return loss
    function = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not callable(function):
        raise ValueError(f"{loss!r} is not a loss: give a keras Loss, its name or a function.")
    if isinstance(function, keras.losses.Loss):
        return function
    return _FunctionLoss(function)


class _FunctionLoss(keras.losses.Loss):
    """A loss function as a Loss object (mean over the batch, like ``compile`` makes it)."""

    def __init__(self, fn: Callable):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn, self._fn_kwargs = fn, {}

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def task_losses(losses, tasks: list[str]) -> dict[str, keras.losses.Loss]:
    """``{task: Loss}`` from a dict of losses or from one loss for every task."""
    if not isinstance(losses, Mapping):
        losses = {t: losses for t in tasks}
    check_names(losses, tasks, "losses")
    return {t: as_loss(losses[t]) for t in tasks}


_ACCURACIES: dict[str, Callable] = {
    "binary_crossentropy": lambda name, logits: keras.metrics.BinaryAccuracy(
        threshold=0.0 if logits else 0.5, name=name
    ),
    "sparse_categorical_crossentropy": lambda name, logits: keras.metrics.SparseCategoricalAccuracy(
        name=name
    ),
    "categorical_crossentropy": lambda name, logits: keras.metrics.CategoricalAccuracy(name=name),
}


def loss_kind(loss: keras.losses.Loss) -> str | None:
    """The cross-entropy a loss computes (``"binary_crossentropy"``, ...), or None."""
    function = getattr(loss, "fn", None)
    name = getattr(function, "__name__", None)
    return name if name in _ACCURACIES else None


def accuracy_for(loss, name: str) -> keras.metrics.Metric | None:
    """The accuracy metric that goes with a cross-entropy loss (None for other losses).

    Works for Loss objects and for losses given by name, on logits or probabilities.
    """
    loss = as_loss(loss)
    kind = loss_kind(loss)
    if kind is None:
        return None
    from_logits = bool(getattr(loss, "_fn_kwargs", {}).get("from_logits", False))
    return _ACCURACIES[kind](name, from_logits)


def accuracy_metrics(losses: Mapping[str, keras.losses.Loss]) -> dict[str, list]:
    """``{task: [accuracy]}`` for ``compile``, logged as ``<task>_accuracy``."""
    metrics = {t: accuracy_for(loss, "accuracy") for t, loss in losses.items()}
    return {t: [m] for t, m in metrics.items() if m is not None}


BAD_BINARY_LABELS = "binary labels must be 0 or 1, or -1 for unknown"
NEGATIVE_LABELS = "labels below -1 (only -1 means unknown)"
LABEL_TOO_BIG = "class labels must be below the number of outputs of the head"
NOT_WHOLE = "class labels must be whole numbers (class indices)"


def masked_loss(loss: keras.losses.Loss, labels, predictions, *, binary: bool = False):
    """One task's mean loss over the examples that carry a label, and how many do.

    A label of ``-1`` means "unknown": that example adds nothing to the task's loss; any
    other negative label stops the step (for every kind of task), and so does a class label
    at or above the number of the head's outputs, or a float class label that is not a
    whole number. Bool labels count as 0 and 1. A batch without any labelled example
    gives exactly 0 (and no gradient).
    NaN labels are not "unknown": they make the loss NaN, which the loops report.
    Binary tasks must have labels in {-1, 0, 1}: anything else stops the step.
    """
    total, count = masked_sum(loss, labels, predictions, binary=binary)
    return keras.ops.divide_no_nan(total, count), count


def masked_sum(loss: keras.losses.Loss, labels, predictions, *, binary: bool = False):
    """One task's loss *summed* over the examples that carry a label, and how many do:
    :func:`masked_loss` before its division. On several devices the loop adds both up over
    the replicas first, so the mean is over the labelled examples of the global batch."""
    ops = keras.ops
    labels = as_labels(labels)
    mask = label_mask(labels)
    if keras.backend.backend() == "tensorflow":  # (JAX's loop checks the labels on the host)
        labels = _checked_labels(labels, predictions, binary, is_sparse(loss))
    known = ops.where(labels < 0, ops.zeros_like(labels), labels)
    if binary:
        known = ops.cast(known, predictions.dtype)
    per_example = ops.cast(loss.call(known, predictions), "float32")
    per_example = ops.mean(ops.reshape(per_example, (ops.shape(labels)[0], -1)), axis=1)
    return ops.sum(per_example * mask), ops.sum(mask)


def is_sparse(loss) -> bool:
    """Whether ``loss`` takes class indices (a sparse categorical cross-entropy)."""
    return loss_kind(loss) == "sparse_categorical_crossentropy"


def _checked_labels(labels, predictions, binary: bool, sparse: bool):
    """``labels``, after in-graph checks (TensorFlow) that stop the step on a bad label.
    Class labels (integers, or floats given to a sparse loss) must lie below the head's
    width; float ones given to a sparse loss must be whole numbers."""
    number = tf.cast(labels, tf.float32)
    # tf.debugging.Assert: one op each (assert_equal's summaries of its inputs cost about
    # 60 ms of tracing per check, which 40 tasks multiply)
    checks = [tf.debugging.Assert(tf.logical_not(tf.reduce_any(number < -1)), [NEGATIVE_LABELS])]
    classes = predictions.shape[-1]
    if not binary and classes is not None and (labels.dtype.is_integer or sparse):
        fits = tf.logical_not(tf.reduce_any(number >= classes))
        checks.append(tf.debugging.Assert(fits, [f"{LABEL_TOO_BIG} ({classes})"]))
    if sparse and labels.dtype.is_floating:  # 2.7 would be read as class 2
        whole = (number == tf.floor(number)) | tf.math.is_nan(number)
        checks.append(tf.debugging.Assert(tf.reduce_all(whole), [NOT_WHOLE]))
    if binary:
        allowed = (labels == -1) | (labels == 0) | (labels == 1) | tf.math.is_nan(number)
        checks.append(tf.debugging.Assert(tf.reduce_all(allowed), [BAD_BINARY_LABELS]))
    with tf.control_dependencies(checks):  # before the loss's own checks, which name no task
        return tf.identity(labels)


def as_labels(labels):
    """``labels`` as a tensor; bool labels (binary tasks) as the integers 0 and 1."""
    labels = keras.ops.convert_to_tensor(labels)
    if keras.backend.standardize_dtype(labels.dtype) == "bool":
        return keras.ops.cast(labels, "int32")
    return labels


def label_mask(labels):
    """1.0 for every example whose label is known (not below 0), else 0.0; shape (batch,)."""
    ops = keras.ops
    labels = as_labels(labels)
    per_label = ops.reshape(labels, (ops.shape(labels)[0], -1))
    return ops.cast(ops.all(ops.logical_not(per_label < 0), axis=1), "float32")


class TaskMeters:
    """Per-task running means of the loss and accuracies, kept in variables (no host sync)."""

    def __init__(self, names: list[str], losses: Mapping[str, keras.losses.Loss], prefix=""):
        self.tasks = names
        self.total = keras.metrics.Mean(name=f"{prefix}loss")
        self.loss = {t: keras.metrics.Mean(name=f"{prefix}{t}_loss") for t in names}
        self.labelled = {t: keras.metrics.Sum(name=f"{t}_labelled") for t in names}
        accuracies = {t: accuracy_for(losses[t], f"{prefix}{t}_accuracy") for t in names}
        self.accuracy = {t: m for t, m in accuracies.items() if m is not None}

    def update(self, total, task_losses, counts, y, y_pred, batch_size) -> None:
        """Add one batch (called inside the compiled step).

        On several devices (TensorFlow) each replica adds its own share: the metrics' variables
        are summed over the replicas when read. ``total``, ``task_losses`` and ``counts`` are
        the global batch's there (the same on every replica), so each replica counts
        ``counts / replicas`` of them; ``batch_size``, ``y`` and ``y_pred`` are its own."""
        share = backend.replicas()
        self.total.update_state(total, sample_weight=batch_size)
        for t, value, count in zip(self.tasks, task_losses, counts):
            count = count / share if share > 1 else count
            self.loss[t].update_state(value, sample_weight=count)
            self.labelled[t].update_state(count)
        for t, metric in self.accuracy.items():
            labels = as_labels(y[t])
            known = keras.ops.where(labels < 0, keras.ops.zeros_like(labels), labels)
            metric.update_state(known, y_pred[t], sample_weight=label_mask(labels))

    @property
    def variables(self) -> list:
        """Every metric's variables (what a stateless JAX step passes in and out)."""
        return [v for m in self.all() + self._counters() for v in m.variables]

    def all(self) -> list[keras.metrics.Metric]:
        return [self.total, *self.loss.values(), *self.accuracy.values()]

    def _counters(self) -> list[keras.metrics.Metric]:
        return list(self.labelled.values())

    def results(self) -> dict:
        """The running values as tensors (the progress bar fetches them in its own thread)."""
        return {m.name: m.result() for m in self.all()}

    def reset(self) -> None:
        for m in self.all() + self._counters():
            m.reset_state()

    def read(self) -> dict[str, float]:
        """The epoch's values as Python floats: the one host round trip per epoch. A task
        without any labelled example in the epoch reads NaN (missing), not 0."""
        values = {k: float(v) for k, v in self.results().items()}
        for t, counter in self.labelled.items():
            if float(counter.result()) == 0:
                for key in (self.loss[t].name, getattr(self.accuracy.get(t), "name", None)):
                    if key in values:
                        values[key] = float("nan")
        return values


def check_batches(data, names: list[str], what: str) -> None:
    """``data`` must yield ``(inputs, {task: labels})`` batches covering every task."""
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            f"{what} must be a batched tf.data.Dataset of (inputs, {{task: labels}}) (or, for "
            f"train_data, a function epoch -> such a dataset); got {type(data).__name__}."
        )
    spec = data.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping)):
        raise ValueError(
            f"{what} must yield (inputs, {{task: labels}}) pairs; its elements look like "
            f"{spec}. Map it with `lambda x, y: (x, y)` into that form (sample weights are "
            "not supported)."
        )
    missing = [t for t in names if t not in spec[1]]
    if missing:
        raise ValueError(
            f"{what} has no labels for task(s) {missing}; its label keys are {sorted(spec[1])}."
        )


def check_input_shape(model, data, what: str) -> None:
    """The inputs of ``data`` must have the shape the (one-input) model was built for."""
    inputs, spec = getattr(model, "inputs", None) or [], data.element_spec[0]
    if len(inputs) != 1 or not isinstance(spec, tf.TensorSpec):
        return  # several inputs: Keras's own check names the one that does not fit
    if spec.shape.rank == len(inputs[0].shape) - 1:
        raise ValueError(f"{what}'s inputs have no batch dimension: the data looks unbatched. "
                         "Call .batch(n) on the dataset.")  # fmt: skip
    expected, given = tuple(inputs[0].shape[1:]), tuple(spec.shape[1:])
    clash = len(expected) != len(given) or any(
        e is not None and g is not None and e != g for e, g in zip(expected, given)
    )
    if clash:
        raise ValueError(
            f"{what} gives inputs of shape {given} per example, but {model.name!r} takes "
            f"{expected}: resize the images in the pipeline (tf.image.resize) or build the "
            "model for this size."
        )


def check_label_forms(x, y, y_pred_shapes: Mapping, binary: Mapping[str, bool]) -> None:
    """Refuse label forms that train without error but mean something else (first batch,
    host side, once per run): CelebA's own +-1 labels given to a binary task, one-hot labels
    given to a sparse loss, a two-logit head given a binary loss, unbatched data."""
    for t, is_binary in binary.items():
        labels = tf.convert_to_tensor(y[t])
        if labels.shape.rank == 0:
            raise ValueError(f"Task {t!r}'s labels are scalars: the data looks unbatched. "
                             "Call .batch(n) on the dataset.")  # fmt: skip
        width = y_pred_shapes[t][-1]
        if is_binary:
            if celeba_labels.raw_celeba_form(tf.cast(labels, tf.float32).numpy()):
                raise ValueError(f"Task {t!r}: {celeba_labels.RAW_FORM}")
            if width != 1:
                raise ValueError(f"Task {t!r} has a binary loss but its head gives {width} "
                                 "logits: use a Dense(1) head, or a sparse categorical loss "
                                 "for two classes.")  # fmt: skip
        elif labels.shape.rank >= 2 and labels.shape[-1] == width and width not in (None, 1):
            raise ValueError(
                f"Task {t!r}'s labels look one-hot (last axis {width}, the head's width) but "
                "its loss is sparse: pass class indices (tf.argmax(labels, -1)) or use "
                "CategoricalCrossentropy."
            )


def binary_labels_ok(labels) -> bool:
    """Whether every label is 0, 1, -1 (unknown) or NaN (a data error the loss reports)."""
    values = np.asarray(labels, dtype=np.float32).ravel()
    return bool(((values == -1) | (values == 0) | (values == 1) | (values != values)).all())
