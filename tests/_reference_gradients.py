"""Reference gradients for the tests, taken by hand on TensorFlow or JAX, without the kit.

A test that checks a gradient the kit computes needs an expected value from somewhere else.
:func:`gradients` gives it from the plainest recipe each backend has: on TensorFlow a
``tf.GradientTape`` around ``model(x, training=...)``; on JAX ``jax.grad`` of a function of
the trainable values that calls ``model.stateless_call`` (keras-io's guide "Writing a
training loop from scratch in JAX"). The model's state (BatchNorm's moving statistics,
dropout's seed) is the same before and after, on both backends: every call sees the same
dropout draw.
"""

from collections.abc import Callable, Sequence

import keras
import numpy as np


def gradients(model: keras.Model, x, loss: Callable, variables: Sequence, training=True) -> list:
    """The gradient of ``loss(model's outputs on x)`` w.r.t. ``variables`` (trainable
    variables of ``model``), as NumPy arrays; zeros where the loss does not reach."""
    if keras.backend.backend() == "jax":
        return _jax_gradients(model, x, loss, variables, training)
    return _tensorflow_gradients(model, x, loss, variables, training)


def _tensorflow_gradients(model, x, loss, variables, training) -> list:
    """A tape around one forward pass; the state the pass changed is put back."""
    import tensorflow as tf

    saved = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        value = loss(model(x, training=training))
    found = tape.gradient(value, list(variables))  # None: not reached
    for v, s in zip(model.non_trainable_variables, saved):
        v.assign(s)
    return [
        np.zeros(v.shape, v.dtype) if g is None else keras.ops.convert_to_numpy(g)
        for v, g in zip(variables, found)
    ]


def _jax_gradients(model, x, loss, variables, training) -> list:
    """``jax.grad`` of a pure function of the trainable values (the state is only read)."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]

    def of(values):
        outputs, _ = model.stateless_call(values, fixed, x, training=training)
        return loss(outputs)

    found = jax.grad(of)(trainable)
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    return [np.asarray(found[position[id(v)]]) for v in variables]
