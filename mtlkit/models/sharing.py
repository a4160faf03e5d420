"""What the tasks of a multi-task model share, found by following their gradients.

A task *reaches* a trainable variable when its loss has a non-zero gradient there; the
variables two or more tasks reach are the ones they share (:func:`shared_variables`): the
trunk of ``shared_conv``; the coarse trunk and head of ``reuse_coarse``, which the fine loss
reaches through the reused logits. Each task's loss is the training loop's: its mean over
the examples carrying its label (:func:`mtlkit.models.tasks.masked_loss`).

The forward pass is a training-mode ``model.stateless_call`` whose new moving statistics
and random states are thrown away, so looking changes nothing in the model. The gradients
come from :func:`mtlkit.backend.task_gradients`: the same search on TensorFlow and JAX. The gradient
methods (:mod:`mtlkit.methods.weighting`) train on what :func:`shared_variables` finds; the
interference measurements (:mod:`mtlkit.analysis.diagnostics`) build on :func:`task_reach`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

import keras
import numpy as np

from mtlkit import backend
from mtlkit.models import tasks as task_utils


def loss_functions(model: keras.Model, losses, outputs: Mapping, y) -> dict:
    """``{task: keras Loss}`` for the measured tasks (the keys of a dict of losses)."""
    losses = losses if losses is not None else getattr(model, "loss", None)
    if losses is None:
        raise ValueError("No losses given and the model is not compiled: pass losses=.")
    if not isinstance(losses, Mapping):
        losses = {t: losses for t in outputs}
    unknown = [t for t in losses if t not in outputs]
    if unknown:
        raise ValueError(
            f"Task(s) {unknown} are not outputs of model {model.name!r}, whose outputs are "
            f"{list(outputs)}. Name the losses after the model's outputs."
        )
    if len(losses) < 2:
        raise ValueError(f"Interference needs two or more tasks; losses names {list(losses)}.")
    labels = y if isinstance(y, Mapping) else {}
    if any(t not in labels for t in losses):
        raise ValueError(
            f"The batch has no labels for task(s) {[t for t in losses if t not in labels]} (y "
            f"must be a dict {{task: labels}}; its keys: {sorted(labels)}). Give labels for every "
            "measured task, or pass losses only for the tasks the batch has labels for."
        )
    try:
        return {t: task_utils.as_loss(losses[t]) for t in outputs if t in losses}  # model's order
    except ValueError as err:
        raise ValueError(f"{err} Give a keras.losses name, object or function.") from err


def output_order(model: keras.Model) -> list[str]:
    """The tasks in the order the model's dict of outputs was written (``model.output_names``
    is sorted), the same on every backend: the order of the measured tasks."""
    return list(model.output) if isinstance(model.output, Mapping) else list(model.output_names)


def forward(model, trainable, non_trainable, x) -> Mapping:
    """Training-mode outputs computed from the given variable values; no state changes."""
    outputs, _ = model.stateless_call(trainable, non_trainable, x, training=True)
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"Model {model.name!r} returns {type(outputs).__name__}, not a dict: build it "
            "with dict outputs, keras.Model(inputs, {task_name: output, ...})."
        )
    return outputs


def masked_losses(loss_fns: Mapping, y, outputs: Mapping) -> tuple[dict, dict]:
    """Each task's mean loss over the examples that carry its label, and how many do (the
    training loop's :func:`mtlkit.models.tasks.masked_loss`; 0 and 0 without any)."""
    pairs = {
        t: task_utils.masked_loss(f, y[t], outputs[t], binary=_is_binary(f))
        for t, f in loss_fns.items()
    }
    return {t: p[0] for t, p in pairs.items()}, {t: p[1] for t, p in pairs.items()}


def _is_binary(loss: keras.losses.Loss) -> bool:
    return task_utils.loss_kind(loss) == "binary_crossentropy"


def _check_labels(loss_fns: Mapping, y) -> None:
    """On the host, before any gradient: labels below -1, and binary labels outside
    {-1, 0, 1}, get a ValueError naming the tasks (a compiled JAX step cannot raise)."""
    negative = [t for t in loss_fns if (np.asarray(y[t], dtype=float) < -1).any()]
    if negative:
        raise ValueError(f"Task(s) {negative}: {task_utils.NEGATIVE_LABELS}.")
    binary = [t for t, f in loss_fns.items() if _is_binary(f)]
    bad = [t for t in binary if not task_utils.binary_labels_ok(y[t])]
    if bad:
        raise ValueError(f"Task(s) {bad}: {task_utils.BAD_BINARY_LABELS}.")


def _output_probe(output):
    """A scalar that depends on every entry of a task's output (a projection on fixed random
    directions): what the task reaches when it has no labelled example to take a loss on."""
    shape = tuple(output.shape)
    dtype = keras.backend.standardize_dtype(output.dtype)
    directions = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    return keras.ops.sum(output * directions)


def variable_values(variables) -> list:
    """The variables' current values as tensors (what a stateless call takes); of a
    variable mirrored across devices (``tf.distribute``), its first copy's."""
    if backend.name() == "tensorflow":
        import tensorflow as tf

        return [tf.convert_to_tensor(v.value) for v in variables]  # (keras.ops would keep
    return [keras.ops.convert_to_tensor(v.value) for v in variables]  # a tf.Variable)


def labelled_tasks(loss_fns: Mapping, y) -> dict[str, bool]:
    """Whether each task has at least one labelled example in the batch (host side)."""
    return {t: bool(np.asarray(task_utils.label_mask(y[t])).sum() > 0) for t in loss_fns}


def task_reach(model, x, y, losses) -> SimpleNamespace:
    """Every task's gradient of its masked mean loss on every trainable variable (zeros:
    not reached), and which variables each task reaches. A task with no labelled example
    in the batch has no gradient (``labelled`` is False); its reach is traced through its
    output instead, so the variables the tasks share do not depend on the labels at hand."""
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: call it on a batch first.")
    loss_fns = loss_functions(model, losses, dict.fromkeys(output_order(model)), y)
    _check_labels(loss_fns, y)
    labelled = labelled_tasks(loss_fns, y)
    x = keras.tree.map_structure(keras.ops.convert_to_tensor, x)
    fixed = variable_values(model.non_trainable_variables)

    def targets(trainable):
        outputs = forward(model, trainable, fixed, x)
        values = masked_losses(loss_fns, y, outputs)[0]
        return [values[t] if labelled[t] else _output_probe(outputs[t]) for t in loss_fns]

    out, rows = backend.task_gradients(targets, variable_values(model.trainable_variables))
    values = dict(zip(loss_fns, keras.ops.unstack(out)))
    raw = dict(zip(loss_fns, rows))
    reach = {t: [bool(keras.ops.any(g != 0)) for g in raw[t]] for t in raw}
    paths = [v.path for v in model.trainable_variables]
    return SimpleNamespace(
        fns=loss_fns, values=values, labelled=labelled, raw=raw, reach=reach, paths=paths
    )


def shared_paths(model: keras.Model, x, y, losses) -> list[str]:
    """The paths of the trainable variables that two or more tasks reach on a batch (what
    the interference measurements look at by default). A task reaches a variable when its
    masked loss has a non-zero gradient there, or, with no labelled example in the batch,
    its output."""
    t = task_reach(model, x, y, losses)
    reached = np.sum(list(t.reach.values()), axis=0)
    return [p for p, n in zip(t.paths, reached) if n >= 2]


def shared_variables(model: keras.Model, x, y, losses) -> list:
    """The trainable variables with a non-zero gradient from at least two tasks on a batch.

    A task with no labelled example in the batch is traced through its output instead (its
    loss there is 0, with no gradient to follow), so the answer does not depend on which
    labels the first batch happens to carry.
    """
    paths = set(shared_paths(model, x, y, losses))
    return [v for v in model.trainable_variables if v.path in paths]
