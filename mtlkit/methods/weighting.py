"""Loss weighting and gradient surgery: the classic remedies for task interference.

Each method's core is a pure function of TensorFlow ops (it runs inside a compiled training
step, and can be checked on NumPy arrays on its own); a small method object drives it. Loss
methods (``kind == "loss"``: EW, UW, DWA, RLW) give the total loss, inside the tape::

    total = method.combine(task_losses)   # K scalars in method.tasks order; + regularisation
    grads = tape.gradient(total, model.trainable_variables + method.variables)

Gradient methods (``kind == "gradient"``: PCGrad, MGDA-UB, GradNorm) first see the per-task
gradients w.r.t. ``method.needs`` -- ``"shared_variables"`` (every trainable variable reached
by two or more tasks), ``"last_shared_layer"`` (:func:`last_shared_kernel` of those) or
``"representation"`` (the shared trunk's output tensor) -- from a persistent tape::

    G = task_gradient_matrix(tape, task_losses, sources)           # (K, D)
    c, shared = method.combine_gradients(task_losses, G, active)   # c: (K,) coefficients
    grads = tape.gradient(task_losses, variables, output_gradients=tf.unstack(c))
    # PCGrad: shared is (D,): the shared variables' gradients become split_gradient(shared, ...)

**Tasks without labels.** ``active`` (K booleans, or the per-task counts of labelled
examples) says which tasks have a loss in this batch. A task without labelled examples has
loss 0 and a zero gradient row; a gradient method leaves it out of that batch's combination
(coefficient 0): MGDA solves its min-norm problem over the active tasks only (else the zero
row would be the minimum and the whole step would vanish), GradNorm neither balances nor
moves its weight, PCGrad neither projects on its row nor keeps it.

**Non-finite input.** Called eagerly, the pure functions and the methods raise a
``ValueError`` naming the task (row) whose loss or gradient is NaN or infinite. Inside a
compiled step a Python raise is impossible, so there the result is NaN instead: the custom
loop's finiteness check then stops training and names the task whose loss went bad.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

FIX = "check that task's labels and inputs for NaNs, or lower the learning rate"
"""What to do about a NaN or infinite loss or gradient (the end of the error messages)."""


# ------------------------------------------------------------------- the pure functions
def _matrix(G) -> tf.Tensor:
    """``G`` as a floating (K, D) tensor with a known K, or a clear error."""
    G = tf.convert_to_tensor(G)
    if not G.dtype.is_floating:
        G = tf.cast(G, tf.float32)
    if G.shape.rank != 2 or G.shape[0] is None:
        raise ValueError(f"G must be a (tasks, parameters) matrix, got shape {G.shape}.")
    return G


def _active_mask(active, num_tasks: int) -> tf.Tensor:
    """``active`` as (K,) booleans: ``None`` means every task; numbers (the counts of
    labelled examples) mean ``count > 0``."""
    if active is None:
        return tf.ones([num_tasks], tf.bool)
    active = tf.convert_to_tensor(active)
    if active.dtype != tf.bool:
        active = active > tf.zeros([], active.dtype)
    if active.shape.rank != 1 or active.shape[0] != num_tasks:
        raise ValueError(f"active must hold one entry per task ({num_tasks}), got {active.shape}.")
    return active


def _refuse_non_finite(values, what: str, names: Sequence[str] | None = None) -> None:
    """Eagerly, raise a ValueError naming the tasks whose entries (rows) of ``values`` are
    NaN or infinite; inside a traced function do nothing (the callers return NaN there)."""
    if not tf.executing_eagerly():
        return
    rows = np.asarray(values, dtype=float)
    rows = rows.reshape(rows.shape[0], -1) if rows.ndim else rows.reshape(1, 1)
    bad = [i for i, row in enumerate(rows) if not np.isfinite(row).all()]
    if bad:
        named = [names[i] for i in bad] if names is not None else [f"row {i}" for i in bad]
        raise ValueError(f"{what} of task(s) {named} is NaN or infinite: {FIX}.")


def _nan_unless(finite, values) -> tf.Tensor:
    """``values``, or NaN everywhere when ``finite`` (a scalar boolean tensor) is false."""
    return tf.where(finite, values, tf.constant(np.nan, values.dtype))


def _all_finite(*tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def pcgrad_orders(num_tasks: int, rng: tf.random.Generator) -> tf.Tensor:
    """For each task i, a random order of the other tasks, (K, K-1), drawn from ``rng`` (a
    ``tf.random.Generator``: its state is a variable, checkpointed so that a resumed run draws
    the same orders as a straight one)."""
    keys = rng.uniform([num_tasks, num_tasks]) + 2.0 * tf.eye(num_tasks)  # own task sorts last
    return tf.argsort(keys, axis=1)[:, : num_tasks - 1]


def project_conflicts(G, orders, active=None) -> tf.Tensor:
    """PCGrad's surgery in given orders -> the (D,) sum of the projected task gradients: task
    i's copy g_i' visits the tasks ``orders[i]`` in turn; when g_i' . g_j < 0 it loses its
    component along the *original* g_j: g_i' <- g_i' - (g_i' . g_j / |g_j|^2) g_j. Each g_i'
    stays a combination ``C[i] @ G`` of the originals, so the surgery runs on the K x K Gram
    matrix; the D-long vectors are read only for ``G G^T`` and the final sum.

    ``active`` (K booleans or counts; ``None``, the default: all): an inactive task's row is
    neither projected on nor summed. A task without labels needs no mask: its row is 0, and
    a zero row already changes nothing (its dot products are 0, so nothing is projected on
    it, and it adds 0 to the sum).
    """
    G = _matrix(G)
    k = G.shape[0]
    gram = tf.matmul(G, G, transpose_b=True)
    _refuse_non_finite(tf.linalg.diag_part(gram), "project_conflicts: the gradient (row of G)")
    if active is not None:
        on = _active_mask(active, k)
        G = tf.where(on[:, None], G, tf.zeros_like(G))
        gram = tf.where(on[:, None] & on[None, :], gram, tf.zeros_like(gram))
    squared = tf.linalg.diag_part(gram)
    coefficients = tf.eye(k, dtype=G.dtype)  # row i: g_i' in terms of the original g's
    orders = tf.convert_to_tensor(orders, tf.int32)
    for step in range(k - 1):  # all tasks take their step-th partner at once
        partner = orders[:, step]
        dot = tf.reduce_sum(coefficients * tf.gather(gram, partner), axis=1)  # g_i' . g_j
        scale = tf.math.divide_no_nan(tf.minimum(dot, 0.0), tf.gather(squared, partner))
        coefficients -= scale[:, None] * tf.one_hot(partner, k, dtype=G.dtype)
    return tf.linalg.matvec(G, tf.reduce_sum(coefficients, axis=0), transpose_a=True)


def pcgrad(G, rng: tf.random.Generator, active=None) -> tf.Tensor:
    """PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020): ``G``
    (K, D) shared-weight gradients -> (D,) ``sum_i g_i'``, :func:`project_conflicts` in orders
    drawn from ``rng`` (:func:`pcgrad_orders`; with two tasks the order does not matter), over
    the ``active`` tasks (default all)."""
    G = _matrix(G)
    return project_conflicts(G, pcgrad_orders(G.shape[0], rng), active)


def mgda_weights(G, iterations: int = 250, tolerance: float = 1e-6, active=None) -> tf.Tensor:
    """MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

    ``G`` (K, D) -> ``alpha`` (K,) on the simplex minimising ``|sum_j alpha_j g_j|^2``. Two
    tasks: ``alpha_1 = clip((g_2 - g_1) . g_2 / |g_1 - g_2|^2, 0, 1)`` (0.5 when g_1 = g_2).
    More: pairwise Frank-Wolfe on the Gram matrix M = G G^T (the authors' Frank-Wolfe with an
    away step, which converges linearly: Lacoste-Julien & Jaggi, NeurIPS 2015). From the
    uniform point, weight moves from the support vertex with the largest (M alpha)_t to the
    vertex with the smallest, by the exact line search; at most ``iterations`` steps, stopping
    once alpha moves less than ``tolerance``.

    ``active`` (K booleans or counts, default all): the problem is solved over the active
    tasks only; an inactive task gets alpha 0 (a task without labels has a zero gradient,
    which would otherwise be the minimum-norm point: a zero step for everyone). No active
    task: alpha is all 0. A NaN or infinite G raises eagerly and gives NaN when traced.
    """
    G = _matrix(G)
    K = G.shape[0]
    M = tf.matmul(G, G, transpose_b=True)
    _refuse_non_finite(tf.linalg.diag_part(M), "mgda_weights: the gradient (row of G)")
    on = _active_mask(active, K)
    share = tf.cast(on, G.dtype)
    return _nan_unless(_all_finite(M), _min_norm(M, share, iterations, tolerance))


def _min_norm(M, share, iterations: int, tolerance: float) -> tf.Tensor:
    """:func:`mgda_weights` on the Gram matrix ``M`` over the tasks where ``share`` is 1."""
    K, dtype = M.shape[0], M.dtype
    if K == 1:
        return share
    if K == 2:
        denominator = M[0, 0] + M[1, 1] - 2.0 * M[0, 1]
        a1 = tf.clip_by_value(tf.math.divide_no_nan(M[1, 1] - M[0, 1], denominator), 0.0, 1.0)
        a1 = tf.where(denominator > 0, a1, tf.constant(0.5, dtype))
        both = tf.reduce_all(share > 0)
        return tf.where(both, tf.stack([a1, 1.0 - a1]), share)  # one active: all on it
    start = share / tf.maximum(tf.reduce_sum(share), 1.0)  # uniform over the active tasks
    barred = tf.where(share > 0, tf.zeros_like(share), tf.constant(np.inf, dtype))

    def step(i, alpha, change):
        m_alpha = tf.linalg.matvec(M, alpha)
        toward = tf.argmin(m_alpha + barred)  # the vertex the gradient points at (active)
        away = tf.argmax(tf.where(alpha > 0, m_alpha, tf.constant(-np.inf, dtype)))
        curvature = M[toward, toward] + M[away, away] - 2.0 * M[toward, away]
        gamma = tf.math.divide_no_nan(m_alpha[away] - m_alpha[toward], curvature)
        gamma = tf.clip_by_value(gamma, 0.0, alpha[away])  # exact line search, kept feasible
        move = gamma * (tf.one_hot(toward, K, dtype=dtype) - tf.one_hot(away, K, dtype=dtype))
        return i + 1, alpha + move, 2.0 * gamma

    go_on = lambda i, alpha, change: tf.logical_and(i < iterations, change > tolerance)  # noqa: E731
    return tf.while_loop(go_on, step, (0, start, tf.constant(np.inf, dtype)))[1]


def dwa_weights(loss_history, temperature: float = 2.0) -> np.ndarray:
    """DWA (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019).

    ``loss_history`` (E, K): the epoch-mean training losses of the E epochs so far -> (K,)
    weights for the next epoch, ``lambda_j = K exp(r_j / T) / sum_k exp(r_k / T)`` with
    ``r_j = L_j(E) / L_j(E - 1)`` (the last two rows); all 1 while E < 2.
    """
    _check_temperature(temperature)
    history = np.asarray(loss_history, dtype=float)
    if history.ndim != 2:
        raise ValueError(f"loss_history must be an (epochs, tasks) array, not {history.shape}.")
    if history.shape[0] < 2:
        return np.ones(history.shape[1])
    if not np.all(np.isfinite(history[-2:])) or np.any(history[-2] <= 0):
        raise ValueError(f"DWA needs finite, positive epoch losses, got {history[-2:].tolist()}.")
    r = history[-1] / history[-2] / temperature
    e = np.exp(r - r.max())
    return len(e) * e / e.sum()


def _check_temperature(temperature) -> None:
    """DWA's temperature must be a finite number above 0 (NaN would pass ``<= 0``)."""
    if not _finite_number(temperature) or temperature <= 0:
        raise ValueError(f"DWA's temperature must be a finite number above 0, got {temperature!r}.")


def uncertainty_total(losses, log_vars) -> tf.Tensor:
    """UW (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses",
    CVPR 2018): ``sum_j exp(-s_j) L_j + s_j`` with ``s_j = log sigma_j^2`` trainable."""
    losses = tf.convert_to_tensor(losses)
    log_vars = tf.cast(log_vars, losses.dtype)
    return tf.reduce_sum(tf.exp(-log_vars) * losses + log_vars)


def rlw_weights(num_tasks: int, rng: tf.random.Generator) -> tf.Tensor:
    """RLW (Lin et al., "Reasonable Effectiveness of Random Weighting", TMLR 2022):
    ``w = softmax(z)``, ``z ~ N(0, I)`` drawn from ``rng``; the weights sum to 1."""
    return tf.nn.softmax(rng.normal([num_tasks]))


def gradnorm_loss(
    weights, norms, losses, initial_losses, alpha: float = 1.5, counted=None
) -> tf.Tensor:
    """GradNorm's ``L_grad`` (Chen et al., "GradNorm", ICML 2018): ``G_j = |w_j| n_j`` (``n_j``
    the norm of task j's unweighted loss gradient on the chosen layer), ``r_j = Ltilde_j /
    mean_k Ltilde_k`` with ``Ltilde_j = L_j / L_j(0)``, and ``L_grad = sum_j |G_j - mean_k(G_k)
    r_j^alpha|``, the target term held constant.

    Sums and means run over the ``counted`` tasks (K booleans; default: those with
    ``L_j(0) > 0``): a task that has had no loss yet has no ratio, and is left out.
    """
    weights = tf.convert_to_tensor(weights)
    cast = lambda x: tf.cast(x, weights.dtype)  # noqa: E731
    norms, losses, initial = cast(norms), cast(losses), cast(initial_losses)
    for what, values in (("norm", norms), ("loss", losses), ("L_j(0)", initial)):
        _refuse_non_finite(values, f"gradnorm_loss: the {what}")
    on = initial > 0 if counted is None else _active_mask(counted, weights.shape[0])
    zero = tf.zeros_like(weights)
    n = tf.maximum(tf.reduce_sum(tf.cast(on, weights.dtype)), 1.0)
    G = tf.abs(weights) * norms
    relative = tf.where(on, tf.math.divide_no_nan(losses, initial), zero)
    mean_g, mean_r = tf.reduce_sum(tf.where(on, G, zero)) / n, tf.reduce_sum(relative) / n
    target = tf.stop_gradient(mean_g * tf.math.divide_no_nan(relative, mean_r) ** alpha)
    return tf.reduce_sum(tf.where(on, tf.abs(G - target), zero))


# ------------------------------------------------------------------ helpers for the loop
def task_gradient_matrix(tape: tf.GradientTape, task_losses: Sequence, sources: Sequence):
    """The (K, D) matrix of every task loss's gradient w.r.t. ``sources`` (variables or
    watched tensors), from a persistent tape; a source a task does not reach counts as 0."""
    rows = [tape.gradient(L, sources, unconnected_gradients="zero") for L in task_losses]
    return tf.stack([tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0) for grads in rows])


def split_gradient(vector, variables: Sequence) -> list[tf.Tensor]:
    """A (D,) gradient back into one tensor per variable (the inverse of one row above)."""
    parts = tf.split(vector, [int(np.prod(v.shape)) for v in variables])
    return [tf.reshape(p, v.shape) for p, v in zip(parts, variables)]


def last_shared_kernel(shared_variables: Sequence) -> list:
    """GradNorm's W: the last shared variable with at least 2 dimensions (a kernel)."""
    kernels = [v for v in shared_variables if len(v.shape) >= 2]
    if not kernels:
        raise ValueError("No shared kernel (a variable of rank >= 2) among the shared variables.")
    return [kernels[-1]]


def epoch_losses(history: Mapping[str, Sequence[float]], tasks: Sequence[str]) -> np.ndarray:
    """The (E, K) epoch-mean training losses from a Keras-style history (``<task>_loss``)."""
    missing = [t for t in tasks if f"{t}_loss" not in history]
    if missing and history:
        raise ValueError(f"The history has no '<task>_loss' entry for {missing}.")
    columns = [list(history.get(f"{t}_loss", [])) for t in tasks]
    return np.array(columns, dtype=float).reshape(len(tasks), -1).T


def _generator(seed: int | None) -> tf.random.Generator:
    """A generator seeded by ``seed`` (``None``: from the operating system's entropy)."""
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


# -------------------------------------------------------------------- the method objects
class Weighting:
    """The interface every method shares; a method fills in combine or combine_gradients."""

    name, kind, needs = "base", "loss", None  # kind: "loss" (combine) or "gradient"
    needs_epoch_losses = False  # True: weighs tasks by their epoch losses (every task needs one)

    def __init__(self, tasks: Sequence[str], seed: int | None = None):
        self.tasks = list(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names, at least one; got {self.tasks}.")
        self.num_tasks, self.seed = len(self.tasks), seed
        self.variables: list = []  # trainable: the loop's optimizer updates them too
        self.state_variables: dict = {}  # name -> variable: what get_state saves
        self.logged = None  # the variable holding the weights to log (None: all 1)

    def on_epoch_start(self, epoch: int, loss_history) -> None:
        """Host side, before epoch ``epoch`` (0-based); ``loss_history`` (epoch, K)."""

    def combine(self, task_losses: Sequence) -> tf.Tensor:
        """Loss methods: the total loss (call it inside the tape)."""
        raise TypeError(f"{self.name!r} is a gradient method: call combine_gradients().")

    def combine_gradients(self, task_losses: Sequence, gradients, active=None) -> tuple:
        """Gradient methods: ``G`` (K, D) -> (coefficients (K,), shared (D,) or None).

        ``active``: (K,) booleans, or the per-task counts of labelled examples in the batch
        (``None``: every task). An inactive task is left out of the combination and gets
        coefficient 0 (module doc: tasks without labels).
        """
        raise TypeError(f"{self.name!r} is a loss method: call combine(task_losses).")

    def check_sources(self, sources: Sequence, model_name: str = "the model") -> None:
        """A gradient method needs something shared to differentiate: refuse an empty list."""
        if self.kind == "gradient" and not list(sources):
            raise ValueError(
                f"{self.name!r} works on gradients w.r.t. {self.needs}, and {model_name} has "
                "none: no trainable variable (or tensor) is reached by two or more tasks' "
                "losses. Use a loss weighting (ew, uw, dwa, rlw), or a model with a shared trunk."
            )

    def reseed(self, seed: int) -> None:
        """Start the method's random generator again from ``seed`` (no-op without one)."""
        self.seed = seed
        if hasattr(self, "generator"):
            self.generator.reset_from_seed(seed)

    def weights_for_logging(self) -> dict[str, float]:
        """The per-task weights in use, ``{task: float}`` (host side, once an epoch)."""
        values = np.ones(self.num_tasks) if self.logged is None else self.logged.numpy()
        return {t: float(v) for t, v in zip(self.tasks, values)}

    def options(self) -> dict:
        """The method's settings (its constructor's plain options): a resumed run must have
        the same."""
        skip = ("seed", "num_tasks", "epoch", "tasks")
        plain = (bool, int, float, str)
        return {k: v for k, v in sorted(vars(self).items())
                if k not in skip and not k.startswith("_") and isinstance(v, plain)}  # fmt: skip

    def get_state(self) -> dict:
        """Everything needed to continue exactly (JSON-able)."""
        values = {k: np.asarray(v.numpy()).tolist() for k, v in self.state_variables.items()}
        return {"name": self.name, "tasks": self.tasks, **values}

    def set_state(self, state: Mapping) -> None:
        """Restore :meth:`get_state`'s output (same method, same tasks)."""
        if state.get("name") != self.name or list(state.get("tasks", [])) != self.tasks:
            raise ValueError(
                f"This state is for {state.get('name')!r} on tasks {state.get('tasks')}, not "
                f"{self.name!r} on {self.tasks}: build the same method to resume."
            )
        for key, variable in self.state_variables.items():
            variable.assign(tf.cast(state[key], variable.dtype))

    def _refuse(self, what: str, values) -> None:
        """Eagerly, raise a ValueError naming the tasks whose ``values`` are not finite."""
        _refuse_non_finite(values, f"{self.name}: the {what}", self.tasks)

    def _stack(self, task_losses) -> tf.Tensor:
        losses = task_losses if tf.is_tensor(task_losses) else tf.stack(list(task_losses))
        if losses.shape[0] != self.num_tasks:
            raise ValueError(f"Got {losses.shape[0]} task losses for tasks {self.tasks}.")
        return losses

    def _weighted_sum(self, weights, task_losses) -> tf.Tensor:
        """``sum_j weights_j L_j``."""
        losses = self._stack(task_losses)
        return tf.tensordot(tf.cast(weights, losses.dtype), losses, 1)


class EqualWeighting(Weighting):
    """EW: ``sum_j L_j``, the baseline every remedy is compared with."""

    name = "ew"

    def combine(self, task_losses):
        return tf.reduce_sum(self._stack(task_losses))


class UncertaintyWeighting(Weighting):
    """UW (Kendall et al., CVPR 2018): :func:`uncertainty_total` with one trainable ``s_j``
    per task, starting at 0; logs ``exp(-s_j)``, the weight each loss gets."""

    name = "uw"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_vars = keras.Variable(np.zeros(self.num_tasks, "float32"), name="uw_log_vars")
        self.variables, self.state_variables = [self.log_vars], {"log_vars": self.log_vars}

    def combine(self, task_losses):
        return uncertainty_total(self._stack(task_losses), self.log_vars)

    def weights_for_logging(self):
        return {t: float(np.exp(-s)) for t, s in zip(self.tasks, self.log_vars.numpy())}


class DynamicWeightAverage(Weighting):
    """DWA (Liu et al., CVPR 2019): ``sum_j lambda_j L_j``, :func:`dwa_weights` set per epoch."""

    name = "dwa"
    needs_epoch_losses = True

    def __init__(self, tasks, temperature: float = 2.0):
        super().__init__(tasks)
        _check_temperature(temperature)
        self.temperature, self.epoch = float(temperature), None  # the epoch of the weights
        self.logged = tf.Variable(tf.ones([self.num_tasks]), trainable=False)
        self.state_variables = {"weights": self.logged}

    def on_epoch_start(self, epoch, loss_history):
        history = np.asarray(loss_history, dtype=float).reshape(-1, self.num_tasks)
        if history.shape[0] < epoch:
            raise ValueError(
                f"DWA's weights for epoch {epoch + 1} need the mean losses of the {epoch} "
                f"epochs before it; loss_history holds {history.shape[0]}."
            )
        last = history[max(epoch - 2, 0) : epoch]
        missing = [t for t, ok in zip(self.tasks, np.isfinite(last).all(axis=0)) if not ok]
        if epoch >= 2 and missing:
            raise ValueError(
                f"DWA weighs each task by its last two epochs' mean losses, and task(s) "
                f"{missing} had none (no labelled example in epoch {epoch - 1} or {epoch}: "
                "their losses are NaN). Give them labels, or train without them."
            )
        self.logged.assign(dwa_weights(history[:epoch], self.temperature))
        self.epoch = epoch

    def combine(self, task_losses):
        if self.epoch is None:
            raise RuntimeError("DWA has no weights yet: call on_epoch_start() every epoch.")
        return self._weighted_sum(self.logged, task_losses)

    def get_state(self):
        return {**super().get_state(), "epoch": self.epoch}

    def set_state(self, state):
        super().set_state(state)
        self.epoch = state["epoch"]


class RandomLossWeighting(Weighting):
    """RLW (Lin et al., TMLR 2022): new :func:`rlw_weights` every step; logs the last ones."""

    name = "rlw"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.logged = tf.Variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks))
        self.state_variables = {"rng": self.generator.state, "last": self.logged}

    def combine(self, task_losses):
        weights = self.logged.assign(rlw_weights(self.num_tasks, self.generator))
        return self._weighted_sum(weights, task_losses)


class PCGrad(Weighting):
    """PCGrad (Yu et al., NeurIPS 2020): the shared weights get :func:`pcgrad` of the task
    gradients; everything else its plain gradient of ``sum_j L_j`` (coefficients 1, and 0
    for a task that is not ``active`` in the batch). An inactive task's gradient row is 0
    (no labels, or a DST gate of 0), which the surgery already leaves out: it is not
    masked again, so the step costs no more than before."""

    name, kind, needs = "pcgrad", "gradient", "shared_variables"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.state_variables = {"rng": self.generator.state}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        return tf.cast(on, losses.dtype), pcgrad(G, self.generator)


class MGDA(Weighting):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): train on ``sum_j alpha_j L_j``, alpha from
    :func:`mgda_weights` of the task gradients w.r.t. the shared representation
    (``upper_bound=False``: the shared weights). ``normalization`` first divides each g_j by
    1 (``"none"``), |g_j| (``"l2"``), L_j (``"loss"``) or L_j |g_j| (``"loss+"``: the
    authors' CelebA run). Tasks that are not ``active`` in a batch get alpha 0 there: the
    min-norm problem is solved over the others. Logs the last batch's alpha."""

    name, kind = "mgda", "gradient"
    NORMALIZATIONS = ("none", "l2", "loss", "loss+")

    def __init__(self, tasks, upper_bound=True, normalization="none", iterations=250):
        super().__init__(tasks)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(f"normalization={normalization!r}: use one of {self.NORMALIZATIONS}.")
        whole = isinstance(iterations, numbers.Integral) and not isinstance(iterations, bool)
        if not whole or iterations < 1:
            raise ValueError(f"iterations must be a positive whole number, got {iterations!r}.")
        self.normalization, self.iterations = normalization, int(iterations)
        self.needs = "representation" if upper_bound else "shared_variables"
        self.logged = tf.Variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks))
        self.state_variables = {"last": self.logged}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        scale = tf.ones_like(G[:, 0])
        if self.normalization in ("l2", "loss+"):
            scale *= tf.norm(G, axis=1)
        if self.normalization in ("loss", "loss+"):
            scale *= tf.cast(losses, G.dtype)
        on = _active_mask(active, self.num_tasks)
        alpha = mgda_weights(tf.math.divide_no_nan(G, scale[:, None]), self.iterations, active=on)
        if self.normalization in ("loss", "loss+"):  # (an infinite loss would scale g_j to 0)
            alpha = _nan_unless(_all_finite(losses), alpha)
        return tf.cast(self.logged.assign(tf.cast(alpha, tf.float32)), losses.dtype), None


class GradNorm(Weighting):
    """GradNorm (Chen et al., ICML 2018): the network trains on ``sum_j w_j L_j``; then the
    weights (start 1) take a step of their own ``optimizer`` (default Adam 1e-3) along the
    gradient of :func:`gradnorm_loss`, and are renormalised to sum to K.
    ``on="shared_variables"`` measures the norms as LibMTL does.

    * ``L_j(0)`` is task j's loss at the first step where it is active with a positive loss
      (with partial labels, the first batch carrying its labels). Until then the task is
      left out of ``L_grad`` (its ratio would be 0/0).
    * A task that is not ``active`` in a batch gets coefficient 0 there, takes no part in
      ``L_grad``, and its weight stays as it was (an optimizer's momentum does not move it);
      the others are renormalised to sum to K minus its weight.
    * After the optimizer's step the weights are clipped at ``min_weight`` (default 1e-3)
      before renormalising: a large step can push a weight below 0 (one SGD(0.1) step gave
      ``[-0.02, -0.13, 3.15]``), which would make the network climb that task's loss. 1e-3
      is far below any weight GradNorm means to give (they average 1), so the balance is not
      biased, while a task is never switched off and can climb back in a few steps. After
      renormalising a weight may end a little below ``min_weight``, never at or below 0.
    """

    name, kind = "gradnorm", "gradient"

    def __init__(
        self,
        tasks,
        alpha: float = 1.5,
        optimizer=None,
        on: str = "last_shared_layer",
        min_weight: float = 1e-3,
    ):
        super().__init__(tasks)
        if on not in ("last_shared_layer", "shared_variables"):
            raise ValueError(f"on={on!r}: use 'last_shared_layer' (paper) or 'shared_variables'.")
        if not _finite_number(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
        if not (_finite_number(min_weight) and 0 < min_weight < 1):
            raise ValueError(f"min_weight must be a number in (0, 1), got {min_weight!r}.")
        self.alpha, self.needs, self.min_weight = float(alpha), on, float(min_weight)
        self.logged = keras.Variable(np.ones(self.num_tasks, "float32"), name="gradnorm_weights")
        self.initial = tf.Variable(tf.zeros([self.num_tasks]), trainable=False)  # 0: not yet
        self.optimizer = optimizer or keras.optimizers.Adam(1e-3)
        self.optimizer.build([self.logged])
        moments = {f"optimizer_{i}": v for i, v in enumerate(self.optimizer.variables)}
        self.state_variables = {"weights": self.logged, "initial": self.initial, **moments}

    def combine_gradients(self, task_losses, gradients, active=None):
        dtype, losses = self._stack(task_losses).dtype, tf.cast(self._stack(task_losses), "float32")
        G = _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        norms = tf.cast(tf.norm(G, axis=1), tf.float32)
        on = _active_mask(active, self.num_tasks)
        weights = self.logged.value
        in_use = tf.identity(weights)  # the network's coefficients: before the update
        started = on & (losses > 0)  # L_j(0): the first step with a positive loss
        initial = self.initial.assign(tf.where(started & (self.initial <= 0), losses, self.initial))
        counted = on & (initial > 0)
        with tf.GradientTape() as tape:
            loss = gradnorm_loss(weights, norms, losses, initial, self.alpha, counted)
        self.optimizer.apply_gradients([(tape.gradient(loss, weights), self.logged)])
        self.logged.assign(self._renormalised(self.logged.value, in_use, counted))
        coefficients = tf.where(on, in_use, tf.zeros_like(in_use))
        return tf.cast(_nan_unless(_all_finite(losses, norms), coefficients), dtype), None

    def _renormalised(self, stepped, before, counted) -> tf.Tensor:
        """The weights after a step: the counted ones clipped at ``min_weight`` and scaled so
        that all sum to K; the others as they were ``before`` the step."""
        zero = tf.zeros_like(before)
        kept = tf.reduce_sum(tf.where(counted, zero, before))
        clipped = tf.where(counted, tf.maximum(stepped, self.min_weight), zero)
        scaled = tf.math.divide_no_nan((self.num_tasks - kept) * clipped, tf.reduce_sum(clipped))
        return tf.where(counted, scaled, before)


def _finite_number(value) -> bool:
    """Whether ``value`` is a real number (NumPy's too, not a bool), neither NaN nor infinite."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value)


METHODS: dict[str, type[Weighting]] = {cls.name: cls for cls in Weighting.__subclasses__()}
"""Every method by name: ``ew``, ``uw``, ``dwa``, ``rlw``, ``pcgrad``, ``mgda``, ``gradnorm``."""


def get(method: str | Weighting, tasks: Sequence[str], **options) -> Weighting:
    """A method object from its name (``options`` go to its constructor), or ``method``
    itself when it already is one (its tasks must be ``tasks``)."""
    if isinstance(method, Weighting):
        if method.tasks != list(tasks) or options:
            raise ValueError(
                f"The {method.name!r} object was built for tasks {method.tasks} (and takes no "
                f"options here); got tasks {list(tasks)}, options {sorted(options)}."
            )
        return method
    key = method.lower() if isinstance(method, str) else None
    if key not in METHODS:
        raise ValueError(f"Unknown weighting method {method!r}; valid names: {sorted(METHODS)}.")
    return METHODS[key](tasks, **options)
