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


def raise_label_error(loop, y, message: str) -> None:
    """Raise a ValueError naming the tasks whose labels fail the check ``message`` names."""
    if message in LABEL_ERRORS:
        bad = [t for t in loop.tasks if not _labels_ok(y[t], message, loop, t)]
        if bad:
            raise ValueError(f"Task(s) {bad}: {message}. {LABEL_ERRORS[message]}") from None
        return
    binary = [t for t, b in zip(loop.tasks, loop.binary) if b]
    bad = [t for t in binary if not task_utils.binary_labels_ok(y[t])]
    if bad:
        raise ValueError(
            f"Task(s) {bad}: {task_utils.BAD_BINARY_LABELS}. Map the labels to 0/1 (CelebA's "
            "files use -1 for 'absent': the kit's loaders already map it to 0) and keep -1 only "
            "for examples whose label is unknown."
        ) from None


def check_first_batch(model: keras.Model, data, losses: dict, names: list[str]) -> None:
    """The label forms of the first batch (:func:`mtlkit.tasks.check_label_forms`)."""
    first = next(iter(data), None)
    if first is None:
        raise ValueError("train_data gave no batches: is the dataset empty?")
    x, y = first
    shapes = dict(zip(model.output_names, [tuple(o.shape) for o in model.outputs]))
    binary = {t: task_utils.loss_kind(losses[t]) == "binary_crossentropy" for t in names}
    task_utils.check_label_forms(x, y, shapes, binary)


LABEL_ERRORS = {
    task_utils.NEGATIVE_LABELS: "Mark unknown labels with -1 and nothing else.",
    task_utils.LABEL_TOO_BIG: "Check the labels' range against the head's width, or the "
    "head's width against the number of classes.",
}


def _labels_ok(labels, message: str, loop, task: str) -> bool:
    """Whether one task's labels pass the check that ``message`` names (host side, once)."""
    values = np.asarray(labels)
    if message == task_utils.NEGATIVE_LABELS:
        return not (values < -1).any()
    width = loop.model.outputs[loop.tasks.index(task)].shape[-1]
    return loop.binary[loop.tasks.index(task)] or not (values >= width).any()


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
    loss is logged as NaN, and about a task whose loss grew far beyond its loss at the first
    step (``start``; 0 when its first batch had no label: then not checked)."""
    for t in tasks:
        losses = history.get(f"{t}_loss", [])
        if losses and math.isnan(losses[-1]) and not any(map(math.isnan, losses[:-1])):
            warnings.warn(
                f"Task {t!r} had no labelled example in epoch {epoch + 1} (every label -1): its "
                "loss and accuracy are logged as NaN (missing), and it trained nothing. Check "
                "its labels, or leave the task out.",
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
