"""The checks of :func:`mtlkit.training.loop.train`: what it refuses before training (the
backend's limits, the devices' set-up, the first batch's label forms), the labels a step
refuses (named per task), and what it watches once an epoch (tasks without labels, losses
that grow, weights that are no longer finite).
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from mtlkit import backend
from mtlkit.models import tasks as task_utils


def check_devices(strategy, model, optimizer, method, data) -> None:
    """Under a ``tf.distribute`` strategy: the optimizer and the weighting method's variables
    made in its scope too. Under a JAX ``keras.distribution``: set before the model was
    built. On several devices: a batch they can split evenly."""
    backend.jax_distribution(model)  # (raises for a distribution set after the build)
    devices = backend.device_count(model)
    if devices > 1:
        batch = static_batch_size(next(iter(data))[0])
        if batch % devices:
            raise ValueError(
                f"The batch size {batch} does not split evenly across the {devices} devices: "
                f"batch by a multiple of {devices} (the batch size is the global batch; each "
                f"device trains on batch_size / {devices} examples)."
            )
    if strategy is None:
        return
    made_in = getattr(optimizer, "_distribution_strategy", None)
    if made_in is not strategy:
        raise ValueError(
            f"The model {model.name!r} was built in a tf.distribute strategy's scope but the "
            "optimizer was made outside it: make the optimizer inside the same "
            "`with strategy.scope():` block."
        )
    outside = [v.path for v in (method.variables if method is not None else [])
               if not strategy.extended.variable_created_in_scope(v.value)]  # fmt: skip
    if outside:
        raise ValueError(
            f"The weighting method {method.name!r} was made outside the model's strategy "
            f"scope (its variables {outside} live on one device): pass weighting="
            f"{method.name!r} by name, or make the method inside `with strategy.scope():`."
        )


def raise_label_error(loop, y, message: str, what: str = "train_data") -> None:
    """Raise a ValueError naming the tasks whose labels (in ``what``: train_data,
    validation_data) fail the check ``message`` names."""
    if message in LABEL_ERRORS:
        bad = [t for t in loop.tasks if not _labels_ok(y[t], message, loop, t)]
        if bad:
            raise ValueError(f"Task(s) {bad}: {message} (in {what}). "
                             f"{LABEL_ERRORS[message]}") from None  # fmt: skip
        return
    binary = [t for t, b in zip(loop.tasks, loop.binary) if b]
    bad = [t for t in binary if not task_utils.binary_labels_ok(y[t])]
    if bad:
        raise ValueError(
            f"Task(s) {bad}: {task_utils.BAD_BINARY_LABELS} (in {what}). Map the labels to 0/1 "
            "(CelebA's files use -1 for 'absent': the kit's loaders already map it to 0) and "
            "keep -1 only for examples whose label is unknown."
        ) from None


def check_first_batch(model: keras.Model, data, losses: dict, names: list[str]) -> None:
    """The label forms of the first batch (:func:`mtlkit.tasks.check_label_forms`)."""
    first = next(iter(data), None)
    if first is None:
        check_not_empty(0, "train_data")
    x, y = first
    shapes = dict(zip(model.output_names, [tuple(o.shape) for o in model.outputs]))
    binary = {t: task_utils.loss_kind(losses[t]) == "binary_crossentropy" for t in names}
    task_utils.check_label_forms(x, y, shapes, binary)


LABEL_ERRORS = {
    task_utils.NEGATIVE_LABELS: "Mark unknown labels with -1 and nothing else.",
    task_utils.LABEL_TOO_BIG: "Check the labels' range against the head's width, or the "
    "head's width against the number of classes.",
    task_utils.NOT_WHOLE: "A float label such as 2.7 would be cut to class 2: round or cast the "
    "labels to integers in the pipeline (tf.cast(labels, tf.int64)) where they are whole.",
}


def _labels_ok(labels, message: str, loop, task: str) -> bool:
    """Whether one task's labels pass the check that ``message`` names, on the host (JAX:
    every batch; TensorFlow: to name the task after a graph check failed): the same rules as
    :func:`mtlkit.models.tasks.masked_sum`'s in-graph checks."""
    values = np.asarray(labels)
    values = values.astype("int32") if values.dtype == bool else values
    if message == task_utils.NEGATIVE_LABELS:
        return not (values < -1).any()
    index = loop.tasks.index(task)
    sparse = task_utils.is_sparse(loop.losses[task])
    floating = np.issubdtype(values.dtype, np.floating)
    if loop.binary[index] or not (sparse or np.issubdtype(values.dtype, np.integer)):
        return True  # (binary labels have their own check; other losses take any number)
    if message == task_utils.NOT_WHOLE:
        known = values[~np.isnan(values)] if floating else values  # (NaN: the loss reports it)
        return not sparse or bool((np.floor(known) == known).all())
    return not (values >= loop.model.outputs[index].shape[-1]).any()


def static_batch_size(x) -> int:
    """The batch size of an eager batch, read from its shape (no device round trip); of
    the global batch when it is split across replicas."""
    first = keras.tree.flatten(x)[0]
    parts = getattr(first, "values", None)  # a tf.distribute PerReplica value: its parts'
    if isinstance(parts, tuple):  # shapes, without putting them back together each step
        return sum(int(part.shape[0]) for part in parts)
    return int(first.shape[0])


def on_host(value):
    """A batch's tensor; a distributed one (one part per replica) put back together."""
    parts = getattr(value, "values", None)
    if isinstance(parts, tuple):  # a tf.distribute PerReplica value
        return tf.concat(parts, axis=0)
    return value


# ------------------------------------------------------------------ checks once an epoch
DIVERGENCE = 10.0
"""A task whose epoch loss exceeds this many times its loss at the first step is reported."""


def check_progress(history: dict, tasks: list[str], epoch: int, start: dict) -> None:
    """Warn (once per task and run) about a task without any label this epoch, whose
    loss is logged as NaN (in the training data, or in the validation data: ``val_``), and
    about a task whose loss grew far beyond its loss at the first step (``start``; 0 when
    its first batch had no label: then not checked)."""
    for t in tasks:
        losses = history.get(f"{t}_loss", [])
        if _newly_nan(losses):
            warnings.warn(
                f"Task {t!r} had no labelled example in epoch {epoch + 1} (every label -1): its "
                "loss and accuracy are logged as NaN (missing), and it trained nothing. Check "
                "its labels, or leave the task out.",
                stacklevel=3,
            )
        if _newly_nan(history.get(f"val_{t}_loss", [])):
            warnings.warn(
                f"Task {t!r} had no labelled example in validation_data after epoch {epoch + 1} "
                "(every label -1): its val_ loss and accuracy are logged as NaN (missing), and "
                "val_loss leaves it out. Give the validation data labels for every task.",
                stacklevel=3,
            )
        first = start.get(t) or math.nan
        grown = [v for v in losses if v > DIVERGENCE * first]
        if len(grown) == 1 and losses[-1] == grown[0]:
            warnings.warn(
                f"Task {t!r}'s training loss rose to {losses[-1]:.4g} in epoch {epoch + 1}, over "
                f"{DIVERGENCE:g} times its loss at the first step ({first:.4g}): training is "
                "diverging. Lower the learning rate (resuming with a lower one is allowed).",
                stacklevel=3,
            )


def _newly_nan(values: list[float]) -> bool:
    """Whether the last value is NaN and none before it was (warn once per run)."""
    return bool(values) and math.isnan(values[-1]) and not any(map(math.isnan, values[:-1]))


def check_not_empty(batches: int, what: str) -> None:
    """Refuse data that gave no batches (``batches``: a count, or a cardinality: -1 and -2
    mean unknown and infinite)."""
    if batches == 0:
        raise ValueError(
            f"{what} gave no batches: is the dataset empty (a filter or take(0) that keeps "
            "nothing, a split of size 0), or was it consumed? Pass data with at least one batch."
        )


def refuse_unlabelled(values: dict, tasks: list[str], when: str, who: str = "DST") -> None:
    """DST and DWA need every task's epoch loss: refuse a task that had no label at all."""
    missing = [t for t in tasks if math.isnan(values[f"{t}_loss"])]
    if missing:
        raise ValueError(
            f"Task(s) {missing} had no labelled example in {when} (every label -1), so {who} "
            "has no loss to weigh them by. Give each task some labels in every epoch, or "
            "leave such a task out of the model."
        )


def check_weights(model: keras.Model, epoch: int) -> None:
    """Raise if a weight is NaN or infinite (a last step can break them after the epoch's
    losses were measured finite), before a checkpoint would keep them."""
    bad = [v.path for v in model.trainable_variables if not np.isfinite(v.numpy()).all()]
    if bad:
        raise FloatingPointError(
            f"After epoch {epoch}, {len(bad)} weight variable(s) hold NaN or infinite values "
            f"(first: {bad[0]}). The last good checkpoint in run_dir was kept. Lower the "
            "learning rate and resume (train accepts a new learning rate on resume)."
        )
