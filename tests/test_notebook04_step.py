"""Notebook 04's gated-step cells are the step ``mtlkit.training.train`` runs, on TensorFlow
(the cell tagged ``gated-step``) and on JAX (the cells tagged ``gated-step-jax``).

The test reads the notebook, takes the cell tagged ``gated-step``, runs its source with a
small model, optimizer, losses and loss weights in its namespace (the names the notebook
says it expects), and trains a copy of the same model from the same start with
``training.train`` on the same batches with the same gates: the weights must agree.
"""

from __future__ import annotations

import linecache
from pathlib import Path

import keras
import nbformat
import numpy as np
import pytest
import tensorflow as tf
from _on_backend import run_json

from mtlkit import training
from mtlkit.methods import dst
from mtlkit.models import tasks

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_dst.ipynb"
TAG = "gated-step"
TASKS = ("a", "b", "c")
LOSS_WEIGHTS = {"a": 2.0, "b": 0.5, "c": 1.0}
GATES = {"a": 1, "b": 0, "c": 1}


def gated_step_source() -> str:
    """The source of the notebook's one cell tagged ``gated-step``."""
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells
             if TAG in c.get("metadata", {}).get("tags", [])]  # fmt: skip
    assert len(cells) == 1, f"{NOTEBOOK.name} must have exactly one cell tagged {TAG!r}"
    assert cells[0].cell_type == "code"
    return cells[0].source


def build() -> keras.Model:
    """A shared trunk (with BatchNorm, which must see training=True) and three binary heads."""
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(12, activation="relu", name="trunk")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(x, {t: keras.layers.Dense(1, name=t)(h) for t in TASKS})


def batches(n: int = 96, batch: int = 16) -> tf.data.Dataset:
    """Binary labels with some unknown (-1) ones, which both steps must leave out."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {t: (x[:, i] > 0).astype("int32") for i, t in enumerate(TASKS)}
    y["c"][rng.random(n) < 0.3] = -1
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def losses() -> dict:
    return {t: keras.losses.BinaryCrossentropy(from_logits=True) for t in TASKS}


def notebook_step(model: keras.Model, optimizer) -> dict:
    """Run the cell's source with the names the notebook says it expects; return its namespace."""
    optimizer.build(model.trainable_variables)  # as the notebook's set-up cell does
    namespace = {"tf": tf, "keras": keras, "tasks": tasks, "model": model, "optimizer": optimizer,
                 "losses": losses(), "loss_weights": dict(LOSS_WEIGHTS)}  # fmt: skip
    source, filename = gated_step_source(), f"<{NOTEBOOK.name} cell {TAG}>"
    # let AutoGraph read the source back, as it can from a notebook cell
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace


class FixedGates(dst.DSTScheduler):
    """A DST scheduler whose every epoch draws the same gates."""

    def sample(self):
        self._gates = dict(GATES)
        return dict(GATES)


def trainable(model: keras.Model) -> list[np.ndarray]:
    return [v.numpy().copy() for v in model.trainable_variables]


def max_diff(u, v) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(u, v))


@pytest.mark.parametrize("make_optimizer", [lambda: keras.optimizers.Adam(0.05),
                                            lambda: keras.optimizers.SGD(0.2)])  # fmt: skip
def test_the_cell_with_gates_leaves_the_weights_train_leaves(make_optimizer):
    keras.utils.set_random_seed(0)
    ours, theirs = build(), build()
    theirs.set_weights(ours.get_weights())
    start, b_start = trainable(ours), ours.get_layer("b").kernel.numpy().copy()

    namespace = notebook_step(ours, make_optimizer())
    namespace["coefficients"].assign([GATES[t] * LOSS_WEIGHTS[t] for t in ours.output_names])
    for x, y in batches():
        namespace["gated_step"](x, y)

    scheduler = FixedGates(TASKS, metrics=())  # every metric off: only the gates matter here
    history = training.train(theirs, batches(), epochs=1, losses=losses(),
                             optimizer=make_optimizer(), loss_weights=LOSS_WEIGHTS,
                             scheduler=scheduler, verbose=0)  # fmt: skip
    assert history.history["b_gate"] == [0.0]

    assert max_diff(trainable(ours), start) > 1e-2  # both really trained
    assert max_diff(trainable(ours), trainable(theirs)) <= 1e-6
    # the dropped task's head kept its start (gradient 0; a fresh Adam has no momentum)
    np.testing.assert_array_equal(ours.get_layer("b").kernel.numpy(), b_start)
    np.testing.assert_array_equal(theirs.get_layer("b").kernel.numpy(), b_start)


def test_the_cell_without_gates_is_train_without_a_scheduler():
    """All gates 1 (the cell's starting coefficients): every weight agrees, BatchNorm's moving
    statistics included (no measuring pass without a scheduler)."""
    keras.utils.set_random_seed(1)
    ours, theirs = build(), build()
    theirs.set_weights(ours.get_weights())
    namespace = notebook_step(ours, keras.optimizers.Adam(0.05))
    for _ in range(2):  # two epochs
        for x, y in batches():
            namespace["gated_step"](x, y)
    training.train(theirs, batches(), epochs=2, losses=losses(),
                   optimizer=keras.optimizers.Adam(0.05), loss_weights=LOSS_WEIGHTS,
                   verbose=0)  # fmt: skip
    assert max_diff(ours.get_weights(), theirs.get_weights()) <= 1e-6


def test_the_cell_returns_each_tasks_loss_over_its_labelled_examples():
    keras.utils.set_random_seed(2)
    model = build()
    namespace = notebook_step(model, keras.optimizers.SGD(0.0))  # a step that changes nothing
    x, y = next(iter(batches()))
    returned = namespace["gated_step"](x, y)
    logits = model(x, training=True)
    known = y["c"].numpy() >= 0
    expected = keras.losses.BinaryCrossentropy(from_logits=True)(
        y["c"].numpy()[known].astype("float32"), logits["c"].numpy()[known]
    )
    assert set(returned) == set(TASKS)
    np.testing.assert_allclose(float(returned["c"]), float(expected), rtol=1e-6)


def test_the_jax_cells_step_is_the_loops_step_on_jax():
    """The cells tagged ``gated-step-jax`` against ``training.train`` with the same gates, in
    a process on Keras's JAX backend (``tests/_notebook04_jax.py``)."""
    result = run_json(Path(__file__).with_name("_notebook04_jax.py"))
    assert result["backend"] == "jax" and result["step"] == "jax_gated_step"
    assert result["trained"] > 1e-2  # both really trained
    assert result["to_loop"] <= 1e-6
    assert result["head_kept"]  # the dropped task's head kept its start
    assert result["returned"] == sorted(TASKS)
