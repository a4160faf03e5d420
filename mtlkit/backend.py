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

The per-task gradients that the diagnostics and the gradient methods read differ the same way:
one persistent tape (:func:`task_gradient_matrix`, :func:`task_gradients`) or one
``jax.grad`` / ``jax.vjp`` per task (:func:`task_gradients`, :class:`JaxGradientStep`).

``KERAS_BACKEND`` chooses the backend before Keras is imported; :func:`check_supported`
refuses the others when the training code is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

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


# ------------------------------------------------------------------ several devices
# On TensorFlow a ``tf.distribute`` strategy runs the step once per replica, each on its
# share of the global batch; these three functions turn a replica's partial sums into the
# global batch's values. On JAX (``keras.distribution.DataParallel``) the step is one
# program over the global batch that XLA splits across the devices, so they change nothing.
def replicas() -> int:
    """How many replicas run the current step together (1 outside a strategy, and on JAX)."""
    if name() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def global_sum(value):
    """``value`` summed over the replicas (TensorFlow, inside ``strategy.run``). The gradient
    of the sum reaches every replica's own part, so a loss computed from it is the global
    batch's loss on every replica."""
    if replicas() == 1:
        return value
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_concat(value, axis: int):
    """The replicas' ``value`` put side by side along ``axis``, in replica order (the order
    of the global batch)."""
    if replicas() == 1:
        return value
    import tensorflow as tf

    whole = tf.distribute.get_replica_context().all_gather(value, axis=axis)
    shape = list(value.shape)  # (all_gather forgets the static shape)
    shape[axis] = None if shape[axis] is None else shape[axis] * replicas()
    return tf.ensure_shape(whole, shape)


def strategy_of(model):
    """The ``tf.distribute`` strategy a model was built under (in ``strategy.scope()``, as
    Keras's guide says), or None: one device, or the JAX backend. Raises when called inside
    a strategy's scope with a model built outside it."""
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    built_under = getattr(model, "_distribute_strategy", None)  # Keras notes it at build
    if tf.distribute.has_strategy() and tf.distribute.get_strategy() is not built_under:
        raise ValueError(
            f"The model {model.name!r} was built outside this tf.distribute strategy's scope, "
            "so its variables live on one device. Build the model (and make its optimizer) "
            "inside `with strategy.scope():`, then train it."
        )
    return built_under


def jax_distribution(model=None):
    """The ``keras.distribution`` in use on JAX (None without one, and on TensorFlow).
    With ``model``: raises unless the model's variables were laid out by that distribution
    (it must be set *before* the model is built, as Keras's guide says)."""
    if name() != "jax":
        return None
    distribution = keras.distribution.distribution()
    if model is None:
        return distribution
    wanted = set(distribution.device_mesh.backend_mesh.devices.flat) if distribution else set()
    spread = {d for v in model.variables for d in v.value.sharding.device_set}
    if distribution is not None and spread != wanted:
        raise ValueError(
            f"keras.distribution.set_distribution(...) was called after the model "
            f"{model.name!r} was built: its variables live on {len(spread)} device(s), not on "
            f"the distribution's {len(wanted)}. Set the distribution first, then build the "
            "model (and its optimizer)."
        )
    if distribution is None and len(spread) > 1:
        raise ValueError(
            f"The model {model.name!r} was built under a keras.distribution over "
            f"{len(spread)} devices that is no longer set: set it again "
            "(keras.distribution.set_distribution) before training."
        )
    return distribution


def device_count(model) -> int:
    """How many devices train ``model`` together: a ``tf.distribute`` strategy's replicas
    or a JAX ``keras.distribution``'s devices (1 without either)."""
    strategy, distribution = strategy_of(model), jax_distribution()
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)


def on_devices(batch):
    """A batch (NumPy arrays) placed for JAX's ``keras.distribution``: split along the batch
    axis across its devices; unchanged without one. A batch the devices cannot split
    evenly (a smaller last batch) is left whole: every device then computes all of it,
    with the same result."""
    distribution = jax_distribution()
    if distribution is None:
        return batch
    import jax

    devices = distribution.device_mesh.devices.size

    def put(array):
        if array.ndim == 0 or array.shape[0] % devices:
            return array
        return jax.device_put(array, distribution.get_data_layout(array.shape).backend_layout)

    return keras.tree.map_structure(put, batch)


def tensorflow_step(compute: Callable, variables: Sequence, optimizer) -> tuple:
    """One TensorFlow update: ``compute() -> (total, aux)`` on a tape, then the gradient of
    ``total`` (scaled under mixed precision) applied to ``variables``. Returns
    ``(total, aux)``. Call it inside a ``tf.function``.

    Under a ``tf.distribute`` strategy ``total`` is the global batch's loss on every
    replica (:func:`global_sum`); each replica differentiates ``total / replicas`` and the
    optimizer sums the replicas' gradients, which gives the global batch's gradient (the
    rule of Keras's own ``fit``)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total, aux = compute()
        shared = total / replicas() if replicas() > 1 else total
        scaled = optimizer.scale_loss(shared)  # loss scaling under mixed_float16
    gradients = tape.gradient(scaled, list(variables))
    optimizer.apply_gradients(zip(gradients, variables))  # (unscales them first)
    return total, aux


def task_gradients(fn: Callable, values: Sequence, watched: Sequence[int] | None = None):
    """Differentiate each of the K scalars ``fn(values)`` returns (one per task) on its own.

    Returns ``(the K scalars stacked, rows)``: ``rows[j][k]`` is the gradient of scalar ``j``
    with respect to ``values[watched[k]]`` (every value when ``watched`` is None), zeros where
    scalar ``j`` does not depend on it. Each scalar is differentiated alone, so one task's
    NaN (a NaN label) cannot leak into another task's gradient through a zero times NaN.
    TensorFlow: one persistent tape, one backward pass per task; JAX: one ``jax.grad`` per
    task (under ``jax.jit`` XLA computes the shared forward pass once).
    """
    values = list(values)
    watched = list(range(len(values))) if watched is None else list(watched)

    def of_chosen(chosen):
        full = list(values)
        for i, value in zip(watched, chosen):
            full[i] = value
        return list(fn(full))

    chosen = [values[i] for i in watched]
    if name() == "jax":
        import jax

        out = of_chosen(chosen)
        rows = [jax.grad(lambda c, j=j: of_chosen(c)[j])(chosen) for j in range(len(out))]
        return keras.ops.stack(out), rows
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(chosen)
        out = of_chosen(chosen)
    zero = tf.UnconnectedGradients.ZERO
    rows = [tape.gradient(entry, chosen, unconnected_gradients=zero) for entry in out]
    return tf.stack(out), rows


def task_gradient_matrix(tape: tf.GradientTape, task_losses: Sequence, sources: Sequence):
    """The (K, D) matrix of every task loss's gradient w.r.t. ``sources`` (variables or
    watched tensors), from a persistent tape; a source a task does not reach counts as 0.

    TensorFlow only, by nature: it takes a ``tf.GradientTape`` (on JAX the per-task
    gradients come from ``jax.jacrev`` or one ``jax.grad`` per task instead)."""
    import tensorflow as tf

    rows = []
    for loss in task_losses:  # (unconnected_gradients="zero" would fail on a Keras variable
        grads = tape.gradient(loss, sources)  # a task does not reach: its dtype is a string)
        grads = [tf.zeros(s.shape, s.dtype) if g is None else g for s, g in zip(sources, grads)]
        rows.append(tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0))
    return tf.stack(rows)


def compile_function(fn: Callable) -> Callable:
    """``fn`` compiled for the backend: ``tf.function`` (no AutoGraph: the kit's functions
    have no Python control flow on tensors) or ``jax.jit``. It must take every variable
    value it reads as an argument (``jax.jit`` would freeze values it reads itself)."""
    if name() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, autograph=False)


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

    def _run(self, trainable, state, x, y, optimizer_values=None):
        """``compute`` on the given values; its total (scaled under mixed precision, when
        ``optimizer_values`` are given), outputs and the new state values."""
        mapping = [*zip(self.trainable, trainable), *zip(self.state, state)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            total, outputs = self.compute(x, y)
        new_state = [scope.get_current_value(v) for v in self.state]
        if optimizer_values is not None:  # a LossScaleOptimizer reads its scale variable
            scale = list(zip(self.optimizer_variables, optimizer_values))
            with keras.StatelessScope(state_mapping=scale):
                total = self.optimizer.scale_loss(total)  # (unchanged by other optimizers)
        return total, (outputs, new_state)

    def _step(self, trainable, state, optimizer_values, x, y):
        import jax

        self.traces += 1  # (Python runs here once per trace)
        if self.optimizer is None:
            _, (outputs, state) = self._run(trainable, state, x, y)
            return trainable, state, optimizer_values, outputs
        gradient = jax.value_and_grad(self._run, has_aux=True)
        (_, (outputs, state)), grads = gradient(trainable, state, x, y, optimizer_values)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        return trainable, state, optimizer_values, outputs

    def __call__(self, x, y):
        """Run one step on a batch (TensorFlow tensors or NumPy arrays) and write back."""
        x, y = on_devices(keras.tree.map_structure(np.asarray, (x, y)))
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


class JaxGradientStep(JaxStep):
    """A gradient method's step on JAX (the loop's ``_gradient_step`` on TensorFlow).

    ``losses(x, y)`` -- or ``losses(x, y, z)`` with a ``trunk(x) -> z`` -- returns the vector
    of the K weighted task losses followed by the regularisation penalty, and ``aux``.
    ``finish(vector, G, aux)`` gets the (K, D) matrix of the K losses' gradients w.r.t. the
    ``sources`` (indices into ``trainable``: the shared variables) or w.r.t. ``z`` (the
    shared representation), and returns ``(coefficients (K,), shared (D,) or None,
    outputs)``. Every variable then gets the gradient of ``sum_j coefficient_j L_j +
    penalty``, except the sources when ``shared`` is given (PCGrad, IMTL-G, ...: they take
    ``shared``, plus the penalty's gradient). One ``jax.vjp`` gives the losses and their
    pullback; the pullback mapped over K rows of the identity gives the K gradients (K
    backward passes), and once more over the coefficients gives the update.
    """

    def __init__(self, losses: Callable, finish: Callable, trainable: Sequence,
                 state: Sequence, optimizer, sources: Sequence[int] = (),
                 trunk: Callable | None = None):  # fmt: skip
        super().__init__(losses, trainable, state, optimizer)
        self.finish, self.sources, self.trunk = finish, list(sources), trunk

    def _scoped(self, fn, trainable, state, *args):
        """``fn(*args)`` with the variables holding the given values; its result and the
        state values after it."""
        mapping = [*zip(self.trainable, trainable), *zip(self.state, state)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            result = fn(*args)
        return result, [scope.get_current_value(v) for v in self.state]

    def _step(self, trainable, state, optimizer_values, x, y):
        import jax
        import jax.numpy as jnp

        self.traces += 1

        def losses(state, *args):  # -> (vector, (aux, state after))
            (vector, aux), state = self._scoped(self.compute, *args[:1], state, x, y, *args[1:])
            return vector, (aux, state)

        if self.trunk is None:
            vector, pullback, (aux, state) = jax.vjp(
                lambda t: losses(state, t), trainable, has_aux=True
            )
        else:
            z, trunk_pullback, state = jax.vjp(
                lambda t: self._scoped(self.trunk, t, state, x), trainable, has_aux=True
            )
            vector, pullback, (aux, state) = jax.vjp(
                lambda t, z: losses(state, t, z), trainable, z, has_aux=True
            )
        K = vector.shape[0] - 1
        rows = jax.vmap(pullback)(jnp.eye(K + 1, dtype=vector.dtype)[:K])
        if self.trunk is None:
            G = jnp.concatenate([rows[0][i].reshape(K, -1) for i in self.sources], axis=1)
        else:
            G = rows[1].reshape(K, -1)
        (coefficients, shared, outputs), state = self._scoped(
            self.finish, trainable, state, vector, G, aux
        )
        cotangent = jax.lax.stop_gradient(
            jnp.concatenate([coefficients.astype(vector.dtype), jnp.ones(1, vector.dtype)])
        )
        if self.trunk is None:
            grads = list(pullback(cotangent)[0])
        else:  # the heads' part, plus the trunk's through z
            head_grads, z_grad = pullback(cotangent)
            grads = [a + b for a, b in zip(head_grads, trunk_pullback(z_grad)[0])]
        if shared is not None:  # the sources take `shared`, plus the penalty's gradient
            penalty = pullback(jnp.eye(K + 1, dtype=vector.dtype)[K])[0]
            sizes = [int(np.prod(trainable[i].shape)) for i in self.sources]
            parts = jnp.split(shared, np.cumsum(sizes)[:-1])
            for i, part in zip(self.sources, parts):
                grads[i] = part.reshape(trainable[i].shape).astype(grads[i].dtype) + penalty[i]
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        return trainable, state, optimizer_values, outputs


def describe() -> str:
    """What the notebooks print beside their settings: ``"Keras 3.x, jax backend"``."""
    return f"Keras {keras.__version__}, {name()} backend"
