"""The one place where Keras's backends differ in the kit's loop: taking a gradient.

Everything else in :mod:`mtlkit.training.loop` is written with ``keras.ops`` and Keras
variables, and runs the same on both backends. What differs is how one training step
turns a loss into an update:

* **TensorFlow** records the forward pass on a ``tf.GradientTape`` inside a
  ``tf.function`` and applies the gradients to the variables in place
  (:func:`tensorflow_step`).
* **JAX** differentiates a *pure* function of the variables' values: the step reads every
  variable it touches, runs the same Keras code inside a ``keras.StatelessScope`` (reads
  see the values passed in, assignments are collected instead of made), takes
  ``jax.value_and_grad`` of the loss, applies ``optimizer.stateless_apply`` and only then
  writes the new values back (:class:`JaxStep`) -- the pattern of keras-io's guide "Writing
  a training loop from scratch in JAX".

``KERAS_BACKEND`` chooses the backend before Keras is imported; :func:`check_supported`
refuses the others when the training code is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

SUPPORTED = ("tensorflow", "jax")
"""The Keras backends the kit's training loop runs on."""


def name() -> str:
    """The Keras backend in use (``"tensorflow"``, ``"jax"``, ...)."""
    return keras.backend.backend()


def check_supported() -> None:
    """Raise a clear error when Keras runs on a backend the loop does not support."""
    if name() not in SUPPORTED:
        raise ImportError(
            f"mtlkit's training code runs on the Keras backends {list(SUPPORTED)}; Keras is "
            f"using {name()!r}. Set KERAS_BACKEND=tensorflow (the default) or "
            "KERAS_BACKEND=jax before Python starts (or before the first `import keras`)."
        )


def tensorflow_step(compute: Callable, variables: Sequence, optimizer) -> tuple:
    """One TensorFlow update: ``compute() -> (total, aux)`` on a tape, then the gradient of
    ``total`` (scaled under mixed precision) applied to ``variables``. Returns
    ``(total, aux)``. Call it inside a ``tf.function``."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total, aux = compute()
        scaled = optimizer.scale_loss(total)  # loss scaling under mixed_float16
    gradients = tape.gradient(scaled, list(variables))
    optimizer.apply_gradients(zip(gradients, variables))  # (unscales them first)
    return total, aux


class JaxStep:
    """``compute(x, y)`` on JAX, compiled once with ``jax.jit``, as a stateless function.

    ``compute`` is ordinary Keras code that reads and assigns Keras variables (a model's
    forward pass, BatchNorm's moving statistics, metrics, the loop's counters) and returns
    ``(total, outputs)``. With an ``optimizer``, the gradient of ``total`` with respect to
    ``trainable`` is applied with ``optimizer.stateless_apply``; without one, nothing is
    differentiated (evaluation). ``state`` lists every other variable ``compute`` reads or
    assigns. After each call the new values are written back into the variables, so the
    Keras objects hold the run's state between steps, as they do on TensorFlow.
    """

    def __init__(self, compute: Callable, trainable: Sequence, state: Sequence,
                 optimizer=None):  # fmt: skip
        import jax

        self.compute, self.optimizer = compute, optimizer
        self.trainable = list(trainable) if optimizer is not None else []
        seen = {id(v) for v in self.trainable}
        self.state = [v for v in _unique(state) if id(v) not in seen]
        self.optimizer_variables = list(optimizer.variables) if optimizer is not None else []
        self.traces = 0
        self._jitted = jax.jit(self._step)

    def _run(self, trainable, state, x, y):
        """``compute`` on the given values; its total, outputs and the new state values."""
        mapping = [*zip(self.trainable, trainable), *zip(self.state, state)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            total, outputs = self.compute(x, y)
        new_state = [scope.get_current_value(v) for v in self.state]
        return total, (outputs, new_state)

    def _step(self, trainable, state, optimizer_values, x, y):
        import jax

        self.traces += 1  # (Python runs here once per trace)
        if self.optimizer is None:
            _, (outputs, state) = self._run(trainable, state, x, y)
            return trainable, state, optimizer_values, outputs
        gradient = jax.value_and_grad(self._run, has_aux=True)
        (_, (outputs, state)), grads = gradient(trainable, state, x, y)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        return trainable, state, optimizer_values, outputs

    def __call__(self, x, y):
        """Run one step on a batch (TensorFlow tensors or NumPy arrays) and write back."""
        x, y = keras.tree.map_structure(np.asarray, (x, y))
        groups = (self.trainable, self.state, self.optimizer_variables)
        values = [[v.value for v in group] for group in groups]
        *new, outputs = self._jitted(*values, x, y)
        for group, group_values in zip(groups, new):
            for variable, value in zip(group, group_values):
                variable.assign(value)
        return outputs

    def experimental_get_tracing_count(self) -> int:
        """How many times the step was traced (the name ``tf.function`` uses)."""
        return self.traces


def _unique(variables: Sequence) -> list:
    """``variables`` without repeats (the same variable reached twice), in order."""
    seen, unique = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            unique.append(v)
    return unique
