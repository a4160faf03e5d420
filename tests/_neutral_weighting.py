"""Small helpers that let the weighting tests run unchanged on Keras's TensorFlow and JAX
backends (``test_weighting.py``, ``test_weighting_recent.py``).

They stand in for the TensorFlow idioms those tests were first written with:

* :func:`numpy` for ``tensor.numpy()``;
* :func:`compiled` for ``tf.function``: on JAX a ``jax.jit`` whose Keras variables (a method
  object's state, a random generator's) are read and assigned under a
  ``keras.StatelessScope`` and written back after each call, as the loop's JAX step does;
* :func:`gradient` and :func:`variable_gradients` for a ``tf.GradientTape`` around one
  scalar: :func:`mtlkit.backend.task_gradients` on TensorFlow, ``jax.value_and_grad`` (or
  the same ``task_gradients``) on JAX.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from mtlkit import backend

JAX = keras.backend.backend() == "jax"
"""True on the JAX backend, which computes without float64 here (no ``jax_enable_x64``)."""


def numpy(x) -> np.ndarray:
    """A tensor or variable of either backend as a NumPy array."""
    return np.asarray(ops.convert_to_numpy(x))


def variables_of(*holders) -> list:
    """The Keras variables a method object (``variables`` and ``state_variables``), a
    ``keras.random.SeedGenerator`` (its state) or a variable stands for, without repeats."""
    found = []
    for holder in holders:
        if isinstance(holder, keras.random.SeedGenerator):
            found.append(holder.state)
        elif isinstance(holder, keras.Variable):
            found.append(holder)
        else:
            found += [*holder.variables, *holder.state_variables.values()]
    return list({id(v): v for v in found}.values())


class _JaxCompiled:
    """``function`` in ``jax.jit``, the given variables passed in and written back."""

    def __init__(self, function: Callable, variables: list):
        import jax

        self.function, self.variables, self.traces = function, variables, 0
        self._jitted = jax.jit(self._pure)

    def _pure(self, values, *args):
        self.traces += 1  # (Python runs here once per trace)
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))) as scope:
            out = self.function(*args)
        return out, [scope.get_current_value(v) for v in self.variables]

    def __call__(self, *args):
        out, values = self._jitted([v.value for v in self.variables], *args)
        for variable, value in zip(self.variables, values):
            variable.assign(value)
        return out

    def experimental_get_tracing_count(self) -> int:
        """How many times the function was traced (the name ``tf.function`` uses)."""
        return self.traces


def compiled(function: Callable, *holders, jit_compile: bool | None = None):
    """``function`` compiled as a training step is: ``tf.function`` (XLA with
    ``jit_compile=True``) or ``jax.jit``, where ``holders`` (see :func:`variables_of`) name
    the variables it reads or assigns. Both results count their traces with
    ``experimental_get_tracing_count()``."""
    if JAX:
        return _JaxCompiled(function, variables_of(*holders))
    if jit_compile is None:
        return backend.compile_function(function)
    import tensorflow as tf

    return tf.function(function, jit_compile=jit_compile, autograph=False)


def gradient(fn: Callable, value, *holders) -> tuple:
    """``(fn(value), d fn / d value)`` for a scalar ``fn`` of one tensor, called once, as an
    eager call under a tape would be: the variables of ``holders`` that ``fn`` assigns (a
    method object's state) keep the new values."""
    value = ops.convert_to_tensor(value)
    if not JAX:
        out, rows = backend.task_gradients(lambda values: [fn(values[0])], [value])
        return out[0], rows[0][0]
    import jax

    variables = variables_of(*holders)

    def pure(value, state):
        with keras.StatelessScope(state_mapping=list(zip(variables, state))) as scope:
            out = fn(value)
        return out, [scope.get_current_value(v) for v in variables]

    differentiate = jax.value_and_grad(pure, has_aux=True)
    (out, state), grad = differentiate(value, [v.value for v in variables])
    for variable, new in zip(variables, state):
        variable.assign(new)
    return out, grad


def variable_gradients(fn: Callable, variables) -> tuple:
    """``(fn(), [d fn / d v for v in variables])`` for a scalar ``fn()`` that reads the
    Keras ``variables`` (and assigns none): each reads a watched copy of its value under a
    ``keras.StatelessScope``, and :func:`mtlkit.backend.task_gradients` differentiates."""
    variables = list(variables)

    def of_values(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return [fn()]

    out, rows = backend.task_gradients(of_values, [ops.copy(v.value) for v in variables])
    return out[0], rows[0]
