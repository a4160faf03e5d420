"""What the tasks of a model share, for the gradient methods of :mod:`mtlkit.weighting`.

* :func:`shared_variables` -- the trainable variables that two or more tasks' losses reach
  (the rule of :func:`mtlkit.diagnostics.task_gradients`, with the loop's masked losses);
* :func:`shared_representation` -- the last tensor that every task's output depends on (the
  trunk's output: the pooled ResNet18 features, the CIFAR ``conv_layers`` output), exposed
  by a second model over the same layers that returns it beside the outputs;
* :func:`gradient_step` -- the training step of a gradient method: per-task gradients
  w.r.t. what the method needs, combined by the method, then applied. A task without a
  labelled example in the batch (or with a DST gate or loss weight of 0) is not ``active``:
  the method leaves it out of that batch's combination.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtlkit import diagnostics, weighting


def shared_variables(model: keras.Model, x, y, losses) -> list:
    """The trainable variables with a non-zero gradient from at least two tasks on a batch.

    Each task's loss is the loop's: its mean over the examples carrying its label (a label
    below 0 is unknown, never used as a value). A task with no labelled example in the batch
    is traced through its output instead (its loss there is 0, with no gradient to follow),
    so the answer does not depend on which labels the first batch happens to carry.
    """
    paths = set(diagnostics.shared_paths(model, x, y, losses))
    return [v for v in model.trainable_variables if v.path in paths]


def _depends_on(tensor, operation) -> bool:
    """Whether ``operation`` (a top-level layer of the model) lies on ``tensor``'s path."""
    seen, stack = set(), [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None or id(history[0]) in seen:
            continue
        if history[0] is operation:
            return True
        seen.add(id(history[0]))
        stack.extend(history[0]._inbound_nodes[history[1]].input_tensors)
    return False


def shared_representation(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A model over the same layers whose outputs are ``(representation, model outputs)``.

    ``layer`` names the layer whose output is the shared representation; by default the
    last layer (in the model's order) on the path to every output.
    """
    candidates = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if layer is None:
        common = [la for la in candidates if all(_depends_on(o, la) for o in model.outputs)]
        if not common:
            raise ValueError(
                f"No layer of {model.name!r} lies on the path to every task: the tasks share "
                "no representation. Use a method on the shared weights (pcgrad, gradnorm) or "
                "a loss weighting, or name the layer with representation_layer=."
            )
        chosen = common[-1]
    else:
        chosen = next((la for la in candidates if la.name == layer), None)
        if chosen is None:
            names = [la.name for la in candidates]
            raise ValueError(f"The model has no layer {layer!r}; its layers are {names}.")
    return keras.Model(model.inputs, [chosen.output, model.output], name=f"{model.name}_with_z")


def prepare(loop, method, data, representation_layer: str | None = None) -> None:
    """Make ``loop`` (the custom loop's steps) train with ``method``; a gradient method gets
    what the tasks share, found on the first batch of ``data``."""
    loop.weighting = method
    if method.kind != "gradient":
        return
    if method.needs == "representation":
        loop.with_representation = shared_representation(loop.model, representation_layer)
        return
    x, y = next(iter(data))
    loop.sources = shared_variables(loop.model, x, y, loop.losses)
    method.check_sources(loop.sources, repr(loop.model.name))
    if method.needs == "last_shared_layer":
        loop.sources = weighting.last_shared_kernel(loop.sources)


def gradient_step(loop, x, y):
    """One step of a gradient method (PCGrad, MGDA-UB, GradNorm), traced by ``loop``.

    Each task's weighted loss ``c_j L_j`` (DST gate x loss weight) is differentiated on its
    own w.r.t. what the method needs; the method turns the (K, D) matrix into per-task
    coefficients (and, for PCGrad, the shared variables' new gradient); every variable then
    gets the gradient of ``sum_j coefficient_j c_j L_j``. The method is told which tasks are
    active in the batch (:func:`_active`), and leaves the others out.
    """
    method, variables = loop.weighting, loop.model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        if method.needs == "representation":
            z, y_pred = loop.with_representation(x, training=True)
        else:
            y_pred = loop.model(x, training=True)
        task_losses, counts = loop.task_losses(y, y_pred)
        weighted = [c * loss for c, loss in zip(tf.unstack(loop.coefficients), task_losses)]
        penalty = tf.add_n(loop.model.losses) if loop.model.losses else None
    sources = [z] if method.needs == "representation" else loop.sources
    G = weighting.task_gradient_matrix(tape, weighted, sources)
    coefficients, shared = method.combine_gradients(weighted, G, _active(loop, counts))
    given = {}  # PCGrad: the shared variables take the surgery's sum, not another backward pass
    if shared is not None:
        given = dict(zip(map(id, loop.sources), weighting.split_gradient(shared, loop.sources)))
    rest = [v for v in variables if id(v) not in given]
    combined = tape.gradient(weighted, rest, output_gradients=tf.unstack(coefficients))
    given.update(zip(map(id, rest), combined))
    gradients = [given[id(v)] for v in variables]
    if penalty is not None:
        extra = tape.gradient(penalty, variables)
        gradients = [g if e is None else (e if g is None else g + e)
                     for g, e in zip(gradients, extra)]  # fmt: skip
    del tape
    loop.optimizer.apply_gradients(zip(gradients, variables))
    total = tf.add_n([c * w for c, w in zip(tf.unstack(coefficients), weighted)])
    return y_pred, task_losses, counts, total


def _active(loop, counts) -> tf.Tensor:
    """(K,) booleans: the tasks with a loss in this batch -- a labelled example, and a
    coefficient (DST gate x loss weight) that is not 0. The others have a zero gradient row,
    which a method must not mistake for a task that is already satisfied."""
    return tf.logical_and(tf.stack(counts) > 0, tf.not_equal(loop.coefficients, 0.0))
