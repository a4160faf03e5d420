"""Loss weighting and gradient surgery: the classic remedies for task interference.

Each method's core is a pure function of ``keras.ops`` (it runs inside a compiled training
step on Keras's TensorFlow backend, in ``tf.function``, and on its JAX backend, in
``jax.jit``, and can be checked on NumPy arrays on its own); a small method object drives it,
keeping its state in Keras variables (on JAX the step reads and assigns them under a
``keras.StatelessScope``, :class:`mtlkit.backend.JaxStep`). Loss methods (``kind ==
"loss"``: EW, UW, DWA, RLW, FAMO) give the total loss, inside the tape::

    total = method.combine(task_losses)   # K scalars in method.tasks order; + regularisation
    grads = tape.gradient(total, model.trainable_variables + method.variables)

(FAMO, ``wants_active``, also takes ``active``: ``method.combine(task_losses, active)``.)
Gradient methods (``kind == "gradient"``: PCGrad, MGDA-UB, GradNorm, IMTL-G, CAGrad, Nash-MTL,
Aligned-MTL) first see the per-task gradients w.r.t. ``method.needs`` --
``"shared_variables"`` (every trainable variable reached by two or more tasks),
``"last_shared_layer"`` (:func:`last_shared_kernel` of those) or ``"representation"`` (the
shared trunk's output tensor) -- from a persistent tape (on TensorFlow)::

    G = task_gradient_matrix(tape, task_losses, sources)           # (K, D)
    c, shared = method.combine_gradients(task_losses, G, active)   # c: (K,) coefficients
    grads = tape.gradient(task_losses, variables, output_gradients=tf.unstack(c))
    # PCGrad, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL: shared is (D,): the shared variables'
    # gradients become split_gradient(shared, ...)

**The recent methods** (2021-2023) are each checked against a NumPy transliteration of their
authors' code (LibMTL's for IMTL-G, whose authors released none) in
``tests/test_weighting_recent.py``; every difference is stated in the method's docstring. FAMO
is a loss method: its task logits learn from the losses' decrease between steps, at the cost of
equal weighting. IMTL-G, CAGrad and Aligned-MTL give the shared variables a combination of the
task gradients (heads keep their plain gradients, as in the authors' code and LibMTL); Nash-MTL
trains on ``sum_j alpha_j L_j`` and clips the shared gradient. Their small K x K problems (a
linear system, a simplex problem, a fixed point, an eigen-decomposition) are solved with
``keras.ops`` in float64 where the backend computes in it -- TensorFlow, and JAX with
``jax_enable_x64`` -- and in float32 otherwise (JAX's default: :func:`_solver_dtype`);
CAGrad's and Nash-MTL's by loops with a fixed budget of iterations where the authors call
scipy or cvxpy.

**Tasks without labels.** ``active`` (K booleans, or the per-task counts of labelled
examples) says which tasks have a loss in this batch. A task without labelled examples has
loss 0 and a zero gradient row; a gradient method leaves it out of that batch's combination
(coefficient 0): MGDA solves its min-norm problem over the active tasks only (else the zero
row would be the minimum and the whole step would vanish), GradNorm neither balances nor
moves its weight, PCGrad neither projects on its row nor keeps it; IMTL-G, CAGrad, Nash-MTL
and Aligned-MTL solve their problem over the active tasks (an inactive task, or one whose
gradient row is exactly 0, gets no equation and coefficient 0: a zero row would make their
Gram matrix singular); FAMO leaves the task out of its softmax and does not move its logit.

**Non-finite input.** Called eagerly, the pure functions and the methods raise a
``ValueError`` naming the task (row) whose loss or gradient is NaN or infinite. Inside a
compiled step (``tf.function``, ``jax.jit``) a Python raise is impossible, so there the
result is NaN instead: the custom loop's finiteness check then stops training and names the
task whose loss went bad.

**Random draws** (PCGrad's task orders, RLW's weights) come from a
``keras.random.SeedGenerator``, whose state variable is saved with the method's state. The
same seed gives the same draws on one backend; TensorFlow and JAX draw different numbers
from it.
"""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from mtlkit import backend

if TYPE_CHECKING:
    import tensorflow as tf

Tensor = Any
"""A tensor of the Keras backend in use (``tf.Tensor`` on TensorFlow, ``jax.Array`` on JAX)."""

FIX = "check that task's labels and inputs for NaNs, or lower the learning rate"
"""What to do about a NaN or infinite loss or gradient (the end of the error messages)."""


# ------------------------------------------------------------------- the pure functions
def _matrix(G) -> Tensor:
    """``G`` as a floating (K, D) tensor with a known K, or a clear error."""
    G = ops.convert_to_tensor(G)
    if not keras.backend.is_float_dtype(G.dtype):
        G = ops.cast(G, "float32")
    if len(G.shape) != 2 or G.shape[0] is None:
        raise ValueError(f"G must be a (tasks, parameters) matrix, got shape {G.shape}.")
    return G


def _active_mask(active, num_tasks: int) -> Tensor:
    """``active`` as (K,) booleans: ``None`` means every task; numbers (the counts of
    labelled examples) mean ``count > 0``."""
    if active is None:
        return ops.ones((num_tasks,), "bool")
    active = ops.convert_to_tensor(active)
    if keras.backend.standardize_dtype(active.dtype) != "bool":
        active = ops.greater(active, 0)
    if len(active.shape) != 1 or active.shape[0] != num_tasks:
        raise ValueError(f"active must hold one entry per task ({num_tasks}), got {active.shape}.")
    return active


def _numbers(values) -> np.ndarray | None:
    """``values`` as a NumPy array when they hold numbers now (eagerly), ``None`` while a
    step is being traced.

    The same test on every backend: a traced value has no numbers yet, and NumPy cannot
    read it -- TensorFlow's symbolic tensor inside ``tf.function`` raises
    ``NotImplementedError``, a JAX tracer inside ``jax.jit`` a
    ``TracerArrayConversionError`` (a ``TypeError``) -- while an eager tensor, a concrete
    JAX array or a NumPy array converts."""
    try:
        return np.asarray(values)
    except (NotImplementedError, TypeError):
        return None


def _refuse_non_finite(values, what: str, names: Sequence[str] | None = None) -> None:
    """Eagerly, raise a ValueError naming the tasks whose entries (rows) of ``values`` are
    NaN or infinite; inside a traced function do nothing (the callers return NaN there)."""
    known = _numbers(values)
    if known is None:
        return
    rows = known.astype(float)
    rows = rows.reshape(rows.shape[0], -1) if rows.ndim else rows.reshape(1, 1)
    bad = [i for i, row in enumerate(rows) if not np.isfinite(row).all()]
    if bad:
        named = [names[i] for i in bad] if names is not None else [f"row {i}" for i in bad]
        raise ValueError(f"{what} of task(s) {named} is NaN or infinite: {FIX}.")


def _nan_unless(finite, values) -> Tensor:
    """``values``, or NaN everywhere when ``finite`` (a scalar boolean tensor) is false."""
    return ops.where(finite, values, ops.full_like(values, np.nan))


def _all_finite(*tensors) -> Tensor:
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors]))


def _read(variable) -> Tensor:
    """A Keras variable's value as a tensor, taken now: a later ``assign`` leaves it as it
    is. (On TensorFlow, ``convert_to_tensor`` of a variable gives the variable itself, which
    an assignment changes, so this copies; on JAX a raw variable cannot go into every op.)"""
    return ops.copy(variable)


def _solver_dtype() -> str:
    """The dtype of the K x K problems: ``"float64"`` where the backend computes in it --
    TensorFlow, and JAX with ``jax_enable_x64`` (off by default) -- else ``"float32"``."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.read("jax_enable_x64") else "float32"
    return "float64"


def pcgrad_orders(num_tasks: int, rng: keras.random.SeedGenerator) -> Tensor:
    """For each task i, a random order of the other tasks, (K, K-1), drawn from ``rng`` (a
    ``keras.random.SeedGenerator``: its state is a variable, checkpointed so that a resumed
    run draws the same orders as a straight one)."""
    keys = keras.random.uniform((num_tasks, num_tasks), seed=rng)
    keys = keys + 2.0 * ops.eye(num_tasks, dtype=keys.dtype)  # own task sorts last
    return ops.argsort(keys, axis=1)[:, : num_tasks - 1]


def project_conflicts(G, orders, active=None) -> Tensor:
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
    gram = ops.matmul(G, ops.transpose(G))
    _refuse_non_finite(ops.diagonal(gram), "project_conflicts: the gradient (row of G)")
    if active is not None:
        on = _active_mask(active, k)
        G = ops.where(on[:, None], G, ops.zeros_like(G))
        gram = ops.where(_outer_mask(on), gram, ops.zeros_like(gram))
    squared = ops.diagonal(gram)
    coefficients = ops.eye(k, dtype=G.dtype)  # row i: g_i' in terms of the original g's
    orders = ops.cast(ops.convert_to_tensor(orders), "int32")
    for step in range(k - 1):  # all tasks take their step-th partner at once
        partner = orders[:, step]
        dot = ops.sum(coefficients * ops.take(gram, partner, axis=0), axis=1)  # g_i' . g_j
        scale = ops.divide_no_nan(ops.minimum(dot, 0.0), ops.take(squared, partner))
        coefficients = coefficients - scale[:, None] * ops.one_hot(partner, k, dtype=G.dtype)
    return ops.matmul(ops.sum(coefficients, axis=0), G)


def pcgrad(G, rng: keras.random.SeedGenerator, active=None) -> Tensor:
    """PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020): ``G``
    (K, D) shared-weight gradients -> (D,) ``sum_i g_i'``, :func:`project_conflicts` in orders
    drawn from ``rng`` (:func:`pcgrad_orders`; with two tasks the order does not matter), over
    the ``active`` tasks (default all)."""
    G = _matrix(G)
    return project_conflicts(G, pcgrad_orders(G.shape[0], rng), active)


def mgda_weights(G, iterations: int = 250, tolerance: float = 1e-6, active=None) -> Tensor:
    """MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

    ``G`` (K, D) -> ``alpha`` (K,) on the simplex minimising ``|sum_j alpha_j g_j|^2``. Two
    tasks: ``alpha_1 = clip((g_2 - g_1) . g_2 / |g_1 - g_2|^2, 0, 1)`` (0.5 when g_1 = g_2).
    More: pairwise Frank-Wolfe on the Gram matrix M = G G^T (the authors' Frank-Wolfe with an
    away step, which converges linearly: Lacoste-Julien & Jaggi, NeurIPS 2015). From the
    uniform point, weight moves from the support vertex with the largest (M alpha)_t to the
    vertex with the smallest, by the exact line search; at most ``iterations`` steps, stopping
    once alpha moves less than ``tolerance``. Computed in G's dtype.

    ``active`` (K booleans or counts, default all): the problem is solved over the active
    tasks only; an inactive task gets alpha 0 (a task without labels has a zero gradient,
    which would otherwise be the minimum-norm point: a zero step for everyone). No active
    task: alpha is all 0. A NaN or infinite G raises eagerly and gives NaN when traced.
    """
    G = _matrix(G)
    K = G.shape[0]
    M = ops.matmul(G, ops.transpose(G))
    _refuse_non_finite(ops.diagonal(M), "mgda_weights: the gradient (row of G)")
    on = _active_mask(active, K)
    share = ops.cast(on, G.dtype)
    return _nan_unless(_all_finite(M), _min_norm(M, share, iterations, tolerance))


def _entry(M, i, j) -> Tensor:
    """``M[i, j]`` for scalar index tensors ``i`` and ``j``."""
    return ops.take(ops.take(M, i, axis=0), j)


def _min_norm(M, share, iterations: int, tolerance: float) -> Tensor:
    """:func:`mgda_weights` on the Gram matrix ``M`` over the tasks where ``share`` is 1."""
    K, dtype = M.shape[0], M.dtype
    if K == 1:
        return share
    if K == 2:
        denominator = M[0, 0] + M[1, 1] - 2.0 * M[0, 1]
        a1 = ops.clip(ops.divide_no_nan(M[1, 1] - M[0, 1], denominator), 0.0, 1.0)
        a1 = ops.where(denominator > 0, a1, ops.full_like(a1, 0.5))
        both = ops.all(share > 0)
        return ops.where(both, ops.stack([a1, 1.0 - a1]), share)  # one active: all on it
    start = share / ops.maximum(ops.sum(share), 1.0)  # uniform over the active tasks
    barred = ops.where(share > 0, ops.zeros_like(share), ops.full_like(share, np.inf))

    def step(i, alpha, change):
        m_alpha = ops.matmul(M, alpha)
        toward = ops.argmin(m_alpha + barred)  # the vertex the gradient points at (active)
        away = ops.argmax(ops.where(alpha > 0, m_alpha, ops.full_like(m_alpha, -np.inf)))
        across = _entry(M, toward, away)
        curvature = _entry(M, toward, toward) + _entry(M, away, away) - 2.0 * across
        gain = ops.take(m_alpha, away) - ops.take(m_alpha, toward)
        gamma = ops.divide_no_nan(gain, curvature)
        gamma = ops.clip(gamma, 0.0, ops.take(alpha, away))  # exact line search, kept feasible
        move = gamma * (ops.one_hot(toward, K, dtype=dtype) - ops.one_hot(away, K, dtype=dtype))
        return i + 1, alpha + move, 2.0 * gamma

    go_on = lambda i, alpha, change: (i < iterations) & (change > tolerance)  # noqa: E731
    start_values = (_counter(), start, ops.convert_to_tensor(np.inf, dtype))
    return ops.while_loop(go_on, step, start_values)[1]


def _counter() -> Tensor:
    """A loop counter's start, 0 (int32: a loop variable keeps its dtype on JAX)."""
    return ops.convert_to_tensor(0, "int32")


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


def uncertainty_total(losses, log_vars) -> Tensor:
    """UW (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses",
    CVPR 2018): ``sum_j exp(-s_j) L_j + s_j`` with ``s_j = log sigma_j^2`` trainable."""
    losses = ops.convert_to_tensor(losses)
    log_vars = ops.cast(ops.convert_to_tensor(log_vars), losses.dtype)
    return ops.sum(ops.exp(-log_vars) * losses + log_vars)


def rlw_weights(num_tasks: int, rng: keras.random.SeedGenerator) -> Tensor:
    """RLW (Lin et al., "Reasonable Effectiveness of Random Weighting", TMLR 2022):
    ``w = softmax(z)``, ``z ~ N(0, I)`` drawn from ``rng`` (a ``keras.random.SeedGenerator``);
    the weights sum to 1."""
    return ops.softmax(keras.random.normal((num_tasks,), seed=rng))


def gradnorm_loss(
    weights, norms, losses, initial_losses, alpha: float = 1.5, counted=None
) -> Tensor:
    """GradNorm's ``L_grad`` (Chen et al., "GradNorm", ICML 2018): ``G_j = |w_j| n_j`` (``n_j``
    the norm of task j's unweighted loss gradient on the chosen layer), ``r_j = Ltilde_j /
    mean_k Ltilde_k`` with ``Ltilde_j = L_j / L_j(0)``, and ``L_grad = sum_j |G_j - mean_k(G_k)
    r_j^alpha|``, the target term held constant.

    Sums and means run over the ``counted`` tasks (K booleans; default: those with
    ``L_j(0) > 0``): a task that has had no loss yet has no ratio, and is left out.
    """
    _, _, G, target, on = _gradnorm_terms(weights, norms, losses, initial_losses, alpha, counted)
    return ops.sum(ops.where(on, ops.abs(G - target), ops.zeros_like(G)))


def gradnorm_gradient(
    weights, norms, losses, initial_losses, alpha: float = 1.5, counted=None
) -> Tensor:
    """``d L_grad / d w`` of :func:`gradnorm_loss` (same arguments) in closed form, no
    autodiff: ``counted_j sign(G_j - target_j) sign(w_j) n_j``, the target held constant
    and ``sign(0) = 0`` -- what TensorFlow's autodiff of ``abs`` gives, bit for bit."""
    terms = _gradnorm_terms(weights, norms, losses, initial_losses, alpha, counted)
    weights, norms, G, target, on = terms
    slope = ops.sign(G - target) * ops.sign(weights) * norms
    return ops.where(on, slope, ops.zeros_like(slope))


def _gradnorm_terms(weights, norms, losses, initial_losses, alpha, counted) -> tuple:
    """GradNorm's parts: ``(w, n, G, target, counted)``, in the weights' dtype, refusing
    non-finite norms and losses eagerly."""
    weights = ops.convert_to_tensor(weights)
    cast = lambda x: ops.cast(x, weights.dtype)  # noqa: E731
    norms, losses, initial = cast(norms), cast(losses), cast(initial_losses)
    for what, values in (("norm", norms), ("loss", losses), ("L_j(0)", initial)):
        _refuse_non_finite(values, f"gradnorm_loss: the {what}")
    on = initial > 0 if counted is None else _active_mask(counted, weights.shape[0])
    zero = ops.zeros_like(weights)
    n = ops.maximum(ops.sum(ops.cast(on, weights.dtype)), 1.0)
    G = ops.abs(weights) * norms
    relative = ops.where(on, ops.divide_no_nan(losses, initial), zero)
    mean_g, mean_r = ops.sum(ops.where(on, G, zero)) / n, ops.sum(relative) / n
    target = ops.stop_gradient(mean_g * ops.divide_no_nan(relative, mean_r) ** alpha)
    return weights, norms, G, target, on


# ------------------------------------------------- recent methods (2021-2023): the cores
def _gram(G, what: str) -> tuple[Tensor, Tensor]:
    """``G`` (K, D) -> (``G``, its Gram matrix ``G G^T`` in :func:`_solver_dtype`), refusing
    NaN eagerly. The K x K problems below are solved in float64 where the backend offers it
    (TensorFlow; JAX with ``jax_enable_x64``), else in float32: they are tiny, and the
    methods divide by small eigenvalues and norms."""
    G = _matrix(G)
    M = ops.matmul(G, ops.transpose(G))
    _refuse_non_finite(ops.diagonal(M), f"{what}: the gradient (row of G)")
    return G, ops.cast(M, _solver_dtype())


def _in_play(active, M) -> Tensor:
    """The tasks a gradient method combines: ``active`` ones with a gradient that is not 0
    (a zero row has no direction to align, project on or bargain with)."""
    return _active_mask(active, M.shape[0]) & (ops.diagonal(M) > 0)


def _outer_mask(on) -> Tensor:
    return on[:, None] & on[None, :]


def famo_total(losses, logits, min_losses=0.0, active=None) -> tuple[Tensor, Tensor]:
    """FAMO's objective (Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023): ``(total, coefficients)``.

    ``z = softmax(logits)`` over the ``active`` tasks, ``D_j = L_j - min_j + 1e-8``,
    ``c = sum_j z_j / D_j`` (held constant), ``total = sum_j z_j log(D_j) / c``. Its gradient
    is ``sum_j (z_j / (c D_j)) grad L_j``: the network descends the weighted log-losses, and
    ``coefficients`` (K,) are those effective weights ``z_j / (c D_j)`` (they sum to 1). An
    inactive task (no labels in the batch) has coefficient 0 and no part in ``z`` or ``c``.
    """
    losses = ops.convert_to_tensor(losses)
    on = _active_mask(active, losses.shape[0])
    z = ops.stop_gradient(ops.cast(_masked_softmax(logits, on), losses.dtype))
    zero = ops.zeros_like(z)
    gap = losses - ops.cast(min_losses, losses.dtype) + 1e-8
    gap = ops.where(on, gap, ops.ones_like(gap))  # (an inactive loss of 0 would give log 0)
    c = ops.stop_gradient(ops.sum(ops.where(on, z / gap, zero)))
    total = ops.divide_no_nan(ops.sum(ops.where(on, z * ops.log(gap), zero)), c)
    coefficients = ops.stop_gradient(ops.where(on, ops.divide_no_nan(z / gap, c), zero))
    return total, coefficients


def famo_logit_gradient(logits, previous_losses, losses, min_losses=0.0, active=None):
    """FAMO's gradient for its task logits: with ``delta_j = log D_j(before) - log D_j(after)``
    (each loss's log-decrease over one step), ``d = J_softmax(logits)^T delta = z * (delta -
    z . delta)``, ``z`` the softmax over the ``active`` tasks; 0 for the others. Descending
    ``d`` raises the weight of the tasks whose loss fell the least."""
    losses = ops.convert_to_tensor(losses)
    on = _active_mask(active, losses.shape[0])
    dtype = ops.convert_to_tensor(logits).dtype
    low = ops.cast(min_losses, dtype)
    before = ops.cast(previous_losses, dtype) - low + 1e-8
    after = ops.cast(losses, dtype) - low + 1e-8
    one = ops.ones_like(after)
    delta = ops.log(ops.where(on, before, one)) - ops.log(ops.where(on, after, one))
    z = _masked_softmax(logits, on)
    return ops.where(on, z * (delta - ops.sum(z * delta)), ops.zeros_like(z))


def _masked_softmax(logits, on) -> Tensor:
    """softmax over the entries where ``on`` is true; 0 elsewhere (all 0 when none is)."""
    logits = ops.convert_to_tensor(logits)
    top = ops.max(ops.where(on, logits, ops.full_like(logits, -np.inf)))
    shift = ops.where(ops.any(on), top, ops.zeros_like(top))
    e = ops.where(on, ops.exp(logits - shift), ops.zeros_like(logits))
    return ops.divide_no_nan(e, ops.sum(e))


def adam_l2_step(params, grad, m, v, t, lr, weight_decay, moving=None,
                 betas=(0.9, 0.999), eps=1e-8) -> tuple:  # fmt: skip
    """One step of PyTorch's ``Adam(lr, weight_decay)`` (decay added to the gradient, L2
    style, not AdamW's) with a step count ``t`` per entry; entries where ``moving`` is false
    keep their value, moments and count. -> ``(params, m, v, t)``."""
    params = ops.convert_to_tensor(params)
    moving = ops.ones_like(params, dtype="bool") if moving is None else moving
    b1, b2 = betas
    grad = grad + weight_decay * params
    m_new = b1 * m + (1.0 - b1) * grad
    v_new = b2 * v + (1.0 - b2) * grad * grad
    t_new = t + 1.0
    denominator = ops.sqrt(v_new) / ops.sqrt(1.0 - b2**t_new) + eps
    stepped = params - lr / (1.0 - b1**t_new) * m_new / denominator
    keep = lambda new, old: ops.where(moving, new, old)  # noqa: E731
    return keep(stepped, params), keep(m_new, m), keep(v_new, v), keep(t_new, t)


def imtl_g_weights(G, active=None) -> Tensor:
    """IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021): ``alpha`` (K,)
    with ``sum alpha = 1`` such that ``g = sum_j alpha_j g_j`` has the same projection on
    every task's unit gradient ``u_j``: ``g . u_j = t`` for all j.

    On the Gram matrix ``M``, with ``n_j = |g_j|``: ``(M alpha)_j / n_j = t`` and ``1^T alpha
    = 1``, one (K+1) linear system, solved by pseudo-inverse (``keras.ops.pinv``, in
    float64 where the backend offers it, :func:`_gram`). With independent gradients this
    is LibMTL's ``alpha = g_1 U^T (D U^T)^-1`` (rows ``D_j = g_1 - g_j``, ``U_j = u_1 - u_j``)
    exactly; with dependent ones (parallel gradients: many alphas do it) the pseudo-inverse
    picks the smallest solution where LibMTL's inverse gives inf or NaN. Tasks not ``active``,
    or with a zero gradient, get alpha 0 and no equation. No task: all 0.
    """
    G, M = _gram(G, "imtl_g_weights")
    on = _in_play(active, M)
    K, dtype = M.shape[0], M.dtype
    onf = ops.cast(on, dtype)
    n = ops.sqrt(ops.diagonal(M))
    projections = ops.divide_no_nan(M, n[:, None])  # row j: (M alpha)_j / n_j
    top = ops.where(_outer_mask(on), projections, ops.eye(K, dtype=dtype))  # inactive: alpha_j = 0
    system = ops.concatenate(
        [ops.concatenate([top, -onf[:, None]], axis=1),
         ops.concatenate([onf[None, :], ops.zeros((1, 1), dtype)], axis=1)],
        axis=0,
    )  # fmt: skip
    solution = ops.pinv(system)[:, K]  # the system times the right-hand side (0, ..., 0, 1)
    alpha = ops.where(on, solution[:K], ops.zeros_like(onf))
    return ops.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


def cagrad_weights(G, c: float = 0.4, rescale: int = 1, iterations: int = 200,
                   active=None) -> Tensor:  # fmt: skip
    """CAGrad (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021): coefficients ``a`` (K,) of the shared update ``sum_j a_j g_j``.

    With ``g_0`` the mean gradient and ``c' = c |g_0|``, ``w`` minimises ``F(w) = g_w . g_0 +
    c' |g_w|`` over the simplex (``g_w = sum_j w_j g_j``), and the update is ``K (g_0 + c' /
    |g_w| g_w) / s``: ``s = 1 + c^2`` (``rescale=1``, the authors' default), ``1 + c`` (2) or 1
    (0); the factor K (the authors' ``newgrad * 3``, "to match the sum loss") puts it on the
    scale of the sum of the losses' gradients. The authors' constants are kept (``|g_0| =
    sqrt(mean(G G^T) + 1e-8)``, ``c' + 1e-8``, ``|g_w| + 1e-8``).

    The authors minimise F with ``scipy.optimize.minimize`` (SLSQP). Here, inside the graph
    (``keras.ops``, in float64 where the backend offers it, :func:`_gram`): accelerated
    projected gradient descent on the simplex from the uniform point, each step trying 40
    step lengths (1, 1/2, ..., 2^-39 along the gradient scaled to a largest entry of 1) at
    once and keeping the best; at most ``iterations`` steps, stopping once no step lowers F.
    Tasks not ``active`` (or with a zero gradient) are left out: g_0, K and the simplex are
    over the others, and their coefficient is 0.
    """
    G, M = _gram(G, "cagrad_weights")
    on = _in_play(active, M)
    onf = ops.cast(on, M.dtype)
    A = ops.where(_outer_mask(on), M, ops.zeros_like(M))
    count = ops.sum(onf)
    b = ops.divide_no_nan(onf, count)  # uniform over the tasks in play
    g0_norm = ops.sqrt(ops.divide_no_nan(ops.sum(A), count**2) + 1e-8)
    cc = c * g0_norm + 1e-8
    w = _cagrad_simplex(A, b, cc, on, iterations)
    gw_norm = ops.sqrt(ops.maximum(ops.tensordot(w, ops.matmul(A, w), 1), 0.0))
    scale = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    a = ops.where(on, count * (b + cc / (gw_norm + 1e-8) * w) / scale, ops.zeros_like(onf))
    return ops.cast(_nan_unless(_all_finite(M), a), G.dtype)


def cagrad_objective(w, A, b, cc) -> Tensor:
    """CAGrad's ``F(w) = w^T A b + cc sqrt(w^T A w + 1e-8)`` for a batch of rows ``w``."""
    w = ops.convert_to_tensor(w)
    Aw = ops.matmul(w, ops.cast(A, w.dtype))  # (S, K): rows w^T A (A symmetric)
    return ops.matmul(Aw, ops.cast(b, w.dtype)) + cc * ops.sqrt(ops.sum(Aw * w, axis=1) + 1e-8)


def _simplex_projection(V, on) -> Tensor:
    """Euclidean projection of each row of ``V`` (S, K) onto the simplex of the ``on``
    coordinates (the others are 0): sort, find the threshold, clip."""
    K = V.shape[1]
    count = ops.sum(ops.cast(on, "int32"))
    masked = ops.where(on[None, :], V, ops.full_like(V, -np.inf))
    u = -ops.sort(-masked, axis=1)  # descending
    positions = ops.arange(K, dtype="int32")
    inside = positions < count  # the first `count` sorted entries are the on ones
    u = ops.where(inside[None, :], u, ops.zeros_like(u))
    thresholds = (ops.cumsum(u, axis=1) - 1.0) / ops.cast(positions + 1, V.dtype)
    fits = inside[None, :] & (u - thresholds > 0)
    last = ops.max(ops.where(fits, positions[None, :], 0), axis=1)
    theta = ops.take_along_axis(thresholds, last[:, None], axis=1)[:, 0]
    return ops.where(on[None, :], ops.maximum(V - theta[:, None], 0.0), ops.zeros_like(V))


def _cagrad_simplex(A, b, cc, on, iterations: int) -> Tensor:
    """:func:`cagrad_weights`' minimiser of F over the simplex of the ``on`` tasks: projected
    gradient steps from a look-ahead point ``y`` (Nesterov's momentum, restarted whenever a
    step fails to lower F), the best of 40 step lengths each time."""
    lengths = ops.convert_to_tensor(0.5 ** np.arange(40), A.dtype)[:, None]
    Ab = ops.matmul(A, b)

    def step(i, w, y, k, value, go):
        Ay = ops.matmul(A, y)
        gradient = Ab + cc * Ay / ops.sqrt(ops.tensordot(y, Ay, 1) + 1e-8)
        gradient = ops.where(on, gradient, ops.zeros_like(gradient))
        gradient = ops.divide_no_nan(gradient, ops.max(ops.abs(gradient)))
        tries = _simplex_projection(y[None, :] - lengths * gradient[None, :], on)
        values = cagrad_objective(tries, A, b, cc)
        best = ops.argmin(values)
        lowest = ops.take(values, best)
        better = lowest < value
        w_new = ops.where(better, ops.take(tries, best, axis=0), w)
        y_new = ops.where(better, w_new + (k - 1.0) / (k + 2.0) * (w_new - w), w_new)
        k_new = ops.where(better, k + 1.0, ops.ones_like(k))  # a failed step: restart
        return i + 1, w_new, y_new, k_new, ops.minimum(lowest, value), better | (k > 1.0)

    one = ops.ones((), A.dtype)
    value = cagrad_objective(b[None, :], A, b, cc)[0]
    start = (_counter(), b, b, one, value, ops.convert_to_tensor(True))
    go_on = lambda i, w, y, k, value, go: (i < iterations) & go  # noqa: E731
    return ops.while_loop(go_on, step, start)[1]


def nash_mtl_weights(G, iterations: int = 100, tolerance: float = 1e-10,
                     active=None) -> Tensor:  # fmt: skip
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022):
    ``alpha > 0`` (K,) solving ``G G^T alpha = 1 / alpha`` -- each task's share of the update
    ``g = sum_j alpha_j g_j`` satisfies ``alpha_j (g_j . g) = 1``, the Nash bargaining
    solution.

    That alpha is the minimiser of the strictly convex ``f(alpha) = 1/2 alpha^T M alpha -
    sum_j log alpha_j`` (``M = G G^T``; its gradient is ``M alpha - 1/alpha``), found here by
    damped Newton steps (``alpha <- alpha - H^-1 grad f / (1 + lambda)``, ``lambda`` the Newton
    decrement; a full step once ``lambda < 1/4``): f is self-concordant, so every step stays
    positive and the iteration converges from any start, here ``1 / |g_j|``; at most
    ``iterations`` steps, stopping once ``lambda^2 < tolerance`` (in float32, where the
    backend has no float64 (:func:`_gram`), that test may never pass: the loop then runs all
    ``iterations`` steps). It runs on ``M / |M|_F`` and rescales (as the authors normalise).
    The authors solve the same fixed point by a sequence of convex problems (cvxpy/ECOS)
    warm-started from the previous batch's alpha, at most 20 of them, and stop on tests
    that can end before the fixed point (:class:`NashMTL`).

    Tasks not ``active`` (or with a zero gradient) are left out (alpha 0; a zero row would
    make f unbounded below). Gradients whose positive combination is 0 (exactly opposite
    ones) have no solution: alpha then grows with the iterations.
    """
    G, M = _gram(G, "nash_mtl_weights")
    on = _in_play(active, M)
    A = ops.where(_outer_mask(on), M, ops.zeros_like(M))
    norm = ops.norm(A)  # Frobenius
    beta = _nash_newton(ops.divide_no_nan(A, norm), on, iterations, tolerance)
    alpha = ops.where(on, ops.divide_no_nan(beta, ops.sqrt(norm)), ops.zeros_like(beta))
    return ops.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


def _nash_newton(A, on, iterations: int, tolerance: float) -> Tensor:
    """Damped Newton on ``1/2 b^T A b - sum_on log b_j`` (the entries off ``on`` stay 1)."""
    onf = ops.cast(on, A.dtype)
    diagonal = ops.diagonal(A)
    ones = ops.ones_like(diagonal)
    start = ops.where(on, 1.0 / ops.sqrt(ops.where(on, diagonal, ones)), ones)

    def step(i, beta, decrement):
        gradient = ops.matmul(A, beta) - onf / beta
        hessian = A + ops.diag(ops.where(on, 1.0 / beta**2, ones))
        direction = ops.solve(hessian, gradient[:, None])[:, 0]
        squared = ops.maximum(ops.tensordot(gradient, direction, 1), 0.0)
        size = ops.sqrt(squared)
        damping = ops.where(size < 0.25, ops.ones_like(size), 1.0 / (1.0 + size))
        return i + 1, beta - damping * direction, squared

    go_on = lambda i, beta, decrement: (i < iterations) & (decrement > tolerance)  # noqa: E731
    start_values = (_counter(), start, ops.convert_to_tensor(np.inf, A.dtype))
    return ops.while_loop(go_on, step, start_values)[1]


ALIGNED_SCALES = ("min", "median", "rmse")


def aligned_mtl_weights(G, scale_mode: str = "min", active=None) -> Tensor:
    """Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023): ``alpha`` (K,), the shared update being ``sum_j alpha_j g_j``.

    The Gram matrix ``M = G G^T = V diag(lambda) V^T`` (``keras.ops.eigh``, in float64 where
    the backend offers it, :func:`_gram`); eigenvalues up to ``max(lambda) K eps_float32``
    count as 0 (the authors' rank test). ``B = V diag(sqrt(lambda_ref /
    lambda)) V^T`` over the others makes the task gradients ``G^T B`` orthogonal with equal
    norms sqrt(lambda_ref) (``scale_mode``: the smallest kept eigenvalue, "min", the
    authors' default; their lower median, "median"; their mean, "rmse"); the update is their
    sum, so ``alpha = B 1``. Tasks not ``active`` (or with a zero gradient) are left out:
    their rows and columns of M are 0, their alpha 0.
    """
    if scale_mode not in ALIGNED_SCALES:
        raise ValueError(f"scale_mode={scale_mode!r}: use one of {ALIGNED_SCALES}.")
    G, M = _gram(G, "aligned_mtl_weights")
    on = _in_play(active, M)
    K, dtype = M.shape[0], M.dtype
    values, vectors = ops.eigh(ops.where(_outer_mask(on), M, ops.zeros_like(M)))  # ascending
    zero = ops.zeros_like(values)
    tol = ops.max(values) * K * float(np.finfo(np.float32).eps)
    kept = values > tol
    count = ops.sum(ops.cast(kept, "int32"))
    if scale_mode == "min":
        reference = ops.min(ops.where(kept, values, ops.full_like(values, np.inf)))
    elif scale_mode == "median":  # torch.median: the lower of the two middle ones
        reference = ops.take(values, K - count + (count - 1) // 2)
    else:
        total = ops.sum(ops.where(kept, values, zero))
        reference = ops.divide_no_nan(total, ops.cast(count, dtype))
    scales = ops.where(kept, ops.sqrt(ops.divide_no_nan(reference, values)), zero)
    B = ops.matmul(vectors * scales[None, :], ops.transpose(vectors))
    alpha = ops.where(on & (count > 0), ops.sum(B, axis=1), zero)
    return ops.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


# ------------------------------------------------------------------ helpers for the loop
def task_gradient_matrix(tape: tf.GradientTape, task_losses: Sequence, sources: Sequence):
    """The (K, D) matrix of every task loss's gradient w.r.t. ``sources`` (variables or
    watched tensors), from a persistent tape; a source a task does not reach counts as 0.

    TensorFlow only, by nature: it takes a ``tf.GradientTape`` (on JAX the per-task
    gradients come from ``jax.jacrev`` or one ``jax.grad`` per task instead)."""
    import tensorflow as tf

    rows = [tape.gradient(L, sources, unconnected_gradients="zero") for L in task_losses]
    return tf.stack([tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0) for grads in rows])


def split_gradient(vector, variables: Sequence) -> list[Tensor]:
    """A (D,) gradient back into one tensor per variable (the inverse of one row above)."""
    ends = np.cumsum([int(np.prod(v.shape)) for v in variables]).tolist()
    starts = [0, *ends[:-1]]
    return [ops.reshape(vector[a:b], tuple(v.shape)) for a, b, v in zip(starts, ends, variables)]


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


_SEED_RANGE = 2**31
"""Seeds are taken modulo this (a ``keras.random.SeedGenerator``'s state is an int32 or
uint32 pair on some backends)."""


def _seed_number(seed: int | None) -> int:
    """``seed`` folded into ``[0, _SEED_RANGE)``; ``None``: a number from the operating
    system's entropy (a non-deterministic generator, independent of Python's ``random``)."""
    if seed is None:
        return secrets.randbelow(_SEED_RANGE)
    return int(seed) % _SEED_RANGE


def _generator(seed: int | None) -> keras.random.SeedGenerator:
    """A generator seeded by ``seed`` (``None``: from the operating system's entropy). Its
    state, ``[seed, draws so far]``, is a Keras variable."""
    return keras.random.SeedGenerator(_seed_number(seed))


def _restart(generator: keras.random.SeedGenerator, seed: int | None) -> None:
    """Put ``generator`` where ``_generator(seed)`` starts: state ``[seed, 0]``."""
    dtype = keras.backend.standardize_dtype(generator.state.dtype)
    generator.state.assign(np.array([_seed_number(seed), 0], dtype))


# -------------------------------------------------------------------- the method objects
class Weighting:
    """The interface every method shares; a method fills in combine or combine_gradients."""

    name, kind, needs = "base", "loss", None  # kind: "loss" (combine) or "gradient"
    needs_epoch_losses = False  # True: weighs tasks by their epoch losses (every task needs one)
    wants_active = False  # True (FAMO): combine(task_losses, active) -- the loop passes active

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

    def combine(self, task_losses: Sequence) -> Tensor:
        """Loss methods: the total loss (call it inside the tape). A method with
        ``wants_active`` also takes ``active`` (as :meth:`combine_gradients` does)."""
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
                "losses. Use a loss weighting (ew, uw, dwa, rlw, famo), or a model with a "
                "shared trunk."
            )

    def reseed(self, seed: int) -> None:
        """Start the method's random generator again from ``seed``, exactly where a new
        object with that seed starts (no-op without one)."""
        self.seed = seed
        if hasattr(self, "generator"):
            _restart(self.generator, seed)

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
            value = np.asarray(state[key])
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"The saved state of {self.name!r} holds {key!r} with shape {value.shape}; "
                    f"this version of mtlkit keeps shape {tuple(variable.shape)}. The run folder "
                    "was written by an earlier version (its random generator kept another "
                    "state): recompute it -- use a fresh run_dir, or recompute=True."
                )
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))

    def _refuse(self, what: str, values) -> None:
        """Eagerly, raise a ValueError naming the tasks whose ``values`` are not finite."""
        _refuse_non_finite(values, f"{self.name}: the {what}", self.tasks)

    def _stack(self, task_losses):
        losses = task_losses if ops.is_tensor(task_losses) else ops.stack(list(task_losses))
        if losses.shape[0] != self.num_tasks:
            raise ValueError(f"Got {losses.shape[0]} task losses for tasks {self.tasks}.")
        return losses

    def _weighted_sum(self, weights, task_losses):
        """``sum_j weights_j L_j``."""
        losses = self._stack(task_losses)
        weights = ops.cast(ops.convert_to_tensor(weights), losses.dtype)
        return ops.tensordot(weights, losses, 1)


class EqualWeighting(Weighting):
    """EW: ``sum_j L_j``, the baseline every remedy is compared with."""

    name = "ew"

    def combine(self, task_losses):
        return ops.sum(self._stack(task_losses))


class UncertaintyWeighting(Weighting):
    """UW (Kendall et al., CVPR 2018): :func:`uncertainty_total` with one trainable ``s_j``
    per task, starting at 0; logs ``exp(-s_j)``, the weight each loss gets.

    **Which form.** The kit uses ``exp(-s_j) L_j + s_j`` for every task. Kendall et al.
    derive ``exp(-s) L + s/2`` for a classification loss and ``1/2 exp(-s) L + s/2`` for a
    regression one; LibMTL uses ``1/2 (exp(-s) L + s)``. At the optimum over ``s_j`` the
    kit's weight is ``exp(-s_j) = 1 / L_j``, the classification form's ``1 / (2 L_j)``:
    the same *relative* weights between tasks, only a global factor 2, which Adam (whose
    steps do not depend on the scale of the loss) largely removes. LibMTL's form is half of
    the kit's, so it has the very same optimum. The numbers are kept as they were, so that
    earlier runs stay comparable."""

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
        self.logged = keras.Variable(np.ones(self.num_tasks, "float32"), trainable=False)
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
    """RLW (Lin et al., TMLR 2022): new :func:`rlw_weights` every step; logs the last ones.

    The draws come from a ``keras.random.SeedGenerator`` seeded with ``seed`` (``None``: from
    the operating system's entropy); its state is saved with the method's (``"rng"``)."""

    name = "rlw"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"rng": self.generator.state, "last": self.logged}

    def combine(self, task_losses):
        weights = rlw_weights(self.num_tasks, self.generator)
        self.logged.assign(weights)
        return self._weighted_sum(weights, task_losses)


class PCGrad(Weighting):
    """PCGrad (Yu et al., NeurIPS 2020): the shared weights get :func:`pcgrad` of the task
    gradients; everything else its plain gradient of ``sum_j L_j`` (coefficients 1, and 0
    for a task that is not ``active`` in the batch). An inactive task's gradient row is 0
    (no labels, or a DST gate of 0), which the surgery already leaves out: it is not
    masked again, so the step costs no more than before. The task orders come from a
    ``keras.random.SeedGenerator`` seeded with ``seed`` (as :class:`RandomLossWeighting`)."""

    name, kind, needs = "pcgrad", "gradient", "shared_variables"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.state_variables = {"rng": self.generator.state}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        return ops.cast(on, losses.dtype), pcgrad(G, self.generator)


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
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"last": self.logged}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        scale = ops.ones_like(G[:, 0])
        if self.normalization in ("l2", "loss+"):
            scale = scale * ops.norm(G, axis=1)
        if self.normalization in ("loss", "loss+"):
            scale = scale * ops.cast(losses, G.dtype)
        on = _active_mask(active, self.num_tasks)
        alpha = mgda_weights(ops.divide_no_nan(G, scale[:, None]), self.iterations, active=on)
        if self.normalization in ("loss", "loss+"):  # (an infinite loss would scale g_j to 0)
            alpha = _nan_unless(_all_finite(losses), alpha)
        alpha = ops.cast(alpha, "float32")
        self.logged.assign(alpha)
        return ops.cast(alpha, losses.dtype), None


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
    * The gradient of ``L_grad`` w.r.t. the weights is :func:`gradnorm_gradient`'s closed
      form (the one autodiff gives), so the step needs no nested tape; ``optimizer`` applies
      it (on JAX inside the step's ``keras.StatelessScope``, as ``stateless_apply`` does).
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
        self.initial = _zeros_variable(self.num_tasks)  # 0: not yet
        self.optimizer = optimizer or keras.optimizers.Adam(1e-3)
        self.optimizer.build([self.logged])
        moments = {f"optimizer_{i}": v for i, v in enumerate(self.optimizer.variables)}
        self.state_variables = {"weights": self.logged, "initial": self.initial, **moments}

    def combine_gradients(self, task_losses, gradients, active=None):
        stacked = self._stack(task_losses)
        dtype, losses = stacked.dtype, ops.cast(stacked, "float32")
        G = _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        norms = ops.cast(ops.norm(G, axis=1), "float32")
        on = _active_mask(active, self.num_tasks)
        in_use = _read(self.logged)  # the network's coefficients: before the update
        started = on & (losses > 0)  # L_j(0): the first step with a positive loss
        before = _read(self.initial)
        initial = ops.where(started & (before <= 0), losses, before)
        self.initial.assign(initial)
        counted = on & (initial > 0)
        gradient = gradnorm_gradient(in_use, norms, losses, initial, self.alpha, counted)
        # (on several devices the optimizer sums the replicas' identical gradients)
        self.optimizer.apply_gradients([(gradient / backend.replicas(), self.logged)])
        self.logged.assign(self._renormalised(_read(self.logged), in_use, counted))
        coefficients = ops.where(on, in_use, ops.zeros_like(in_use))
        return ops.cast(_nan_unless(_all_finite(losses, norms), coefficients), dtype), None

    def _renormalised(self, stepped, before, counted) -> Tensor:
        """The weights after a step: the counted ones clipped at ``min_weight`` and scaled so
        that all sum to K; the others as they were ``before`` the step."""
        zero = ops.zeros_like(before)
        kept = ops.sum(ops.where(counted, zero, before))
        clipped = ops.where(counted, ops.maximum(stepped, self.min_weight), zero)
        scaled = ops.divide_no_nan((self.num_tasks - kept) * clipped, ops.sum(clipped))
        return ops.where(counted, scaled, before)


class FAMO(Weighting):
    """FAMO (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023): a loss method -- no per-task
    gradients, the cost of equal weighting per step. The network trains on
    :func:`famo_total` (the weighted log-losses); the task logits (start 0) learn, with their
    own Adam (``w_lr``, L2 ``gamma``: PyTorch's ``Adam(weight_decay=gamma)``,
    :func:`adam_l2_step`), to favour the tasks whose loss fell the least over a step
    (:func:`famo_logit_gradient`). Logs the effective weights ``z_j / (c D_j)`` (sum 1).

    Differences from the authors' code (github.com/Cranial-XIX/FAMO, ``famo.py`` and
    ``methods/weight_methods.py``), on purpose:

    * **Which losses measure the decrease.** The authors run the network again on the same
      batch after the step (an extra forward pass) and update the logits with
      ``log L(before) - log L(after)`` on that batch. Here the logits are updated at the start
      of the *next* step, from the losses of the previous batch (before its step) and of the
      current batch (before its step): no extra forward pass, but the decrease mixes in the
      difference between the two batches. The logits then weigh the current step, as the
      authors' updated logits weigh their next step. (LibMTL's FAMO, at the version read,
      recomputes on the same batch as the authors do.)
    * **gamma.** The authors' defaults differ by file (1e-2 in ``famo.py`` and their
      argument parser, 1e-5 in ``weight_methods.py``); 1e-3 is what their NYU-v2, CelebA and
      QM9 scripts pass and LibMTL's default.
    * **max_norm.** The authors clip the shared parameters' gradient norm at 1.0. A loss
      method here gives one total loss, not gradients; clip with the optimizer if wanted
      (``keras.optimizers.Adam(global_clipnorm=...)``, which clips every variable).

    Partial labels: a task not ``active`` in a batch has no part in the softmax, the total
    or ``c``, and its logit (and Adam moments) does not move at this step or the next (no
    decrease is measured across a batch without its labels). Needs ``active``, so the loop
    passes it (``wants_active``). Losses must stay above ``min_losses`` (default 0). The
    loop's ``loss`` history is then FAMO's objective (weighted log-losses: it can be below 0),
    while ``<task>_loss`` are the losses themselves.
    """

    name = "famo"
    wants_active = True  # combine(task_losses, active): the loop passes the active tasks

    def __init__(self, tasks, w_lr: float = 0.025, gamma: float = 1e-3, min_losses=0.0):
        super().__init__(tasks)
        for what, value in (("w_lr", w_lr), ("gamma", gamma)):
            if not _finite_number(value) or value < 0 or (what == "w_lr" and value == 0):
                raise ValueError(f"FAMO's {what} must be a finite number above 0 (gamma: or 0), "
                                 f"got {value!r}.")  # fmt: skip
        low = np.broadcast_to(np.asarray(min_losses, dtype=float), (self.num_tasks,))
        if not np.isfinite(low).all():
            raise ValueError(f"min_losses must be finite numbers, one or one per task, got "
                             f"{min_losses!r}.")  # fmt: skip
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        self.min_losses = float(low[0]) if np.ndim(min_losses) == 0 else tuple(low.tolist())
        self._low = low.astype("float32")
        zeros = lambda: _zeros_variable(self.num_tasks)  # noqa: E731
        self.logits, self.m, self.v, self.t = zeros(), zeros(), zeros(), zeros()
        self.previous, self.previous_on = zeros(), zeros()  # last step's losses; 1: measured
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"logits": self.logits, "adam_m": self.m, "adam_v": self.v,
                                "adam_t": self.t, "previous": self.previous,
                                "previous_on": self.previous_on, "last": self.logged}  # fmt: skip

    def combine(self, task_losses, active=None):
        losses = self._stack(task_losses)
        self._refuse("loss", losses)
        current = ops.cast(losses, "float32")
        on = _active_mask(active, self.num_tasks)
        above = ops.logical_not(on) | (current - self._low + 1e-8 > 0)  # (inactive: loss 0)
        known = _numbers(above)  # None while traced: then the result is NaN instead
        if known is not None and not known.all():
            raise ValueError(
                f"FAMO takes the log of L_j - min_losses_j: the losses "
                f"{_numbers(current).tolist()} must be above {self.min_losses}."
            )
        finite = _all_finite(current) & ops.all(above)
        logits, previous = _read(self.logits), _read(self.previous)
        both = on & (_read(self.previous_on) > 0) & finite  # a decrease measured last step
        d = famo_logit_gradient(logits, previous, current, self._low, both)
        logits, m, v, t = adam_l2_step(logits, d, _read(self.m), _read(self.v), _read(self.t),
                                       self.w_lr, self.gamma, moving=both)  # fmt: skip
        for variable, value in ((self.logits, logits), (self.m, m), (self.v, v), (self.t, t)):
            variable.assign(value)
        keep = on & finite
        self.previous.assign(ops.where(keep, current, previous))
        self.previous_on.assign(ops.cast(keep, "float32"))
        total, coefficients = famo_total(losses, logits, ops.cast(self._low, losses.dtype), on)
        logged = ops.where(finite, ops.cast(coefficients, "float32"), _read(self.logged))
        self.logged.assign(logged)
        return _nan_unless(finite, total)


class _SharedCombination(Weighting):
    """A method whose shared variables take ``sum_j a_j g_j`` (``a`` from :meth:`weights`),
    while every other variable takes its plain gradient of ``sum_j L_j`` (coefficient 1, 0
    for a task not ``active``): the authors' (and LibMTL's) treatment of task heads for
    IMTL-G, CAGrad and Aligned-MTL. Logs the last batch's ``a``."""

    kind, needs = "gradient", "shared_variables"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"last": self.logged}

    def weights(self, G, active) -> Tensor:
        raise NotImplementedError

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        a = self.weights(G, on)
        self.logged.assign(ops.cast(a, "float32"))
        return ops.cast(on, losses.dtype), ops.matmul(a, G)


class IMTLG(_SharedCombination):
    """IMTL-G (Liu et al., ICLR 2021), the gradient half of IMTL: :func:`imtl_g_weights`.

    The authors released no code; the reference is LibMTL's ``LibMTL/weighting/IMTL.py``
    (its gradient part; the loss-scaling half, IMTL-L, is not included). Differences: the
    alphas come from a pseudo-inverse on the Gram matrix (equal to LibMTL's inverse when the
    gradients are independent, finite when they are not), and the shared variables
    (``rep_grad=False``, LibMTL's default) are differentiated."""

    name = "imtl_g"

    def weights(self, G, active):
        return imtl_g_weights(G, active)


class CAGrad(_SharedCombination):
    """CAGrad (Liu et al., NeurIPS 2021): :func:`cagrad_weights` with ``c`` (0.4, the
    authors' NYU-v2 and Cityscapes runs) and ``rescale`` (1: divide by ``1 + c^2``, the
    authors' default in ``nyuv2/utils.py``). Reference: github.com/Cranial-XIX/CAGrad,
    ``cagrad`` and ``overwrite_grad`` in ``nyuv2/utils.py``. Difference: the inner problem is
    solved by a fixed-budget projected gradient descent in ``keras.ops`` instead of scipy's
    SLSQP (:func:`cagrad_weights`); it reaches scipy's objective value or a lower one on the
    tests' matrices. LibMTL's ``CAGrad.py`` leaves out the factor K (its update is 1/K of
    the authors')."""

    name = "cagrad"

    def __init__(self, tasks, c: float = 0.4, rescale: int = 1, iterations: int = 200):
        super().__init__(tasks)
        if not _finite_number(c) or c < 0:
            raise ValueError(f"CAGrad's c must be a finite number >= 0, got {c!r}.")
        if rescale not in (0, 1, 2) or isinstance(rescale, bool):
            raise ValueError(f"rescale must be 0, 1 (divide by 1 + c^2) or 2 (by 1 + c), got "
                             f"{rescale!r}.")  # fmt: skip
        self.c, self.rescale, self.iterations = float(c), int(rescale), _count(iterations)

    def weights(self, G, active):
        return cagrad_weights(G, self.c, self.rescale, self.iterations, active)


class AlignedMTL(_SharedCombination):
    """Aligned-MTL (Senushkin et al., CVPR 2023): :func:`aligned_mtl_weights` on the shared
    variables' gradients (the authors' ``amtl`` balancer; ``scale_mode="min"`` and heads
    left unscaled, ``scale_decoder_grad=False``, are their defaults). Reference:
    github.com/SamsungLabs/MTL, ``code/optim/aligned/solver.py`` (``ProcrustesSolver``) and
    ``balancer.py``; LibMTL's ``Aligned_MTL.py`` is the same. No difference but the
    leaving out of tasks without labels."""

    name = "aligned_mtl"

    def __init__(self, tasks, scale_mode: str = "min"):
        super().__init__(tasks)
        if scale_mode not in ALIGNED_SCALES:
            raise ValueError(f"scale_mode={scale_mode!r}: use one of {ALIGNED_SCALES}.")
        self.scale_mode = scale_mode

    def weights(self, G, active):
        return aligned_mtl_weights(G, self.scale_mode, active)


class NashMTL(Weighting):
    """Nash-MTL (Navon et al., ICML 2022): train on ``sum_j alpha_j L_j`` with alpha from
    :func:`nash_mtl_weights` of the shared variables' gradients, recomputed every
    ``update_weights_every`` steps (the steps between reuse the last alpha); the shared
    variables' combined gradient ``sum_j alpha_j g_j`` is then clipped to norm ``max_norm``
    (default 1.0; 0: no clipping), as the authors' ``clip_grad_norm_(shared_parameters)``
    does -- the heads keep ``alpha_j grad L_j`` unclipped, as theirs do. Logs the last alpha.

    Reference: github.com/AvivNavon/nash-mtl, ``methods/weight_methods.py``, class NashMTL
    (defaults ``update_weights_every=1``, ``optim_niter=20``, ``max_norm=1.0``). Differences:

    * the solver: damped Newton on the fixed point's convex potential, in ``keras.ops``, at
      most ``iterations`` (100) steps with a stopping test on the Newton decrement, started
      afresh each time; the authors run at most 20 convex sub-problems (cvxpy/ECOS), warm
      started from the previous alpha, and stop when ``|M' alpha - 1/alpha| < 1e-3`` for the
      *normalised* ``M' = M / |M|_F`` (which is not the fixed point they solve, ``M alpha = 1 /
      alpha``, unless ``|M|_F = 1``) or when alpha moves less than 1e-6 -- or keep the last
      alpha when ECOS fails. Where their loop reaches the fixed point, the alphas agree;
    * clipping acts on the shared gradient the method returns, before the regularisation
      penalties' gradients are added (the authors clip after ``loss.backward()``, which
      includes any penalty in the loss).

    Tasks not ``active`` get alpha 0 and are left out of the bargaining.
    """

    name, kind, needs = "nash_mtl", "gradient", "shared_variables"

    def __init__(self, tasks, update_weights_every: int = 1, max_norm: float = 1.0,
                 iterations: int = 100):  # fmt: skip
        super().__init__(tasks)
        self.update_weights_every = _count(update_weights_every, "update_weights_every")
        if not _finite_number(max_norm) or max_norm < 0:
            raise ValueError(f"max_norm must be a finite number >= 0 (0: no clipping), got "
                             f"{max_norm!r}.")  # fmt: skip
        self.max_norm, self.iterations = float(max_norm), _count(iterations)
        self.logged = _uniform_weights(self.num_tasks)
        # "int": int64 on TensorFlow, int32 on JAX (as Keras's optimizers count their steps)
        self.steps = keras.Variable(0, dtype="int", trainable=False)
        self.state_variables = {"last": self.logged, "steps": self.steps}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        steps = _read(self.steps)
        fresh = ops.equal(steps % self.update_weights_every, 0)
        solve = lambda: ops.cast(nash_mtl_weights(G, self.iterations, active=on), "float32")  # noqa: E731
        alpha = ops.cond(fresh, solve, lambda: _read(self.logged))
        alpha = ops.where(on, alpha, ops.zeros_like(alpha))
        self.steps.assign(steps + 1)
        self.logged.assign(alpha)
        alpha = ops.cast(alpha, G.dtype)
        shared = ops.matmul(alpha, G)
        if self.max_norm > 0:
            shared = _clip_by_norm(shared, self.max_norm)
        return ops.cast(alpha, losses.dtype), shared


def _clip_by_norm(vector, limit: float) -> Tensor:
    """``vector`` scaled down to norm ``limit`` when it is longer (``tf.clip_by_norm``'s
    formula: ``vector * limit / max(|vector|, limit)``, a zero vector kept as it is)."""
    squared = ops.sum(vector * vector)
    positive = squared > 0
    norm = ops.where(positive, ops.sqrt(ops.where(positive, squared, ops.ones_like(squared))),
                     squared)  # fmt: skip
    return vector * limit / ops.maximum(norm, limit)


def _uniform_weights(num_tasks: int) -> keras.Variable:
    """A (K,) float32 variable holding ``1 / K`` (the weights logged before the first step)."""
    return keras.Variable(np.full(num_tasks, 1.0 / num_tasks, "float32"), trainable=False)


def _zeros_variable(num_tasks: int) -> keras.Variable:
    return keras.Variable(np.zeros(num_tasks, "float32"), trainable=False)


def _count(value, what: str = "iterations") -> int:
    """A positive whole number (not a bool), or a clear error."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}.")
    return int(value)


def _finite_number(value) -> bool:
    """Whether ``value`` is a real number (NumPy's too, not a bool), neither NaN nor infinite."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value)


def _named_methods(base: type) -> dict:
    """Every subclass of ``base`` with a name of its own, however deep (the helper base
    ``_SharedCombination`` has none)."""
    found = {}
    for cls in base.__subclasses__():
        if "name" in vars(cls):
            found[cls.name] = cls
        found.update(_named_methods(cls))
    return found


METHODS: dict[str, type[Weighting]] = _named_methods(Weighting)
"""Every method by name: ``ew``, ``uw``, ``dwa``, ``rlw``, ``pcgrad``, ``mgda``, ``gradnorm``,
``famo``, ``imtl_g``, ``cagrad``, ``nash_mtl``, ``aligned_mtl``."""


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
