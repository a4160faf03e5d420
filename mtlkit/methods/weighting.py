"""Loss weighting and gradient surgery: the classic remedies for task interference.

Each method's core is a pure function of TensorFlow ops (it runs inside a compiled training
step, and can be checked on NumPy arrays on its own); a small method object drives it. Loss
methods (``kind == "loss"``: EW, UW, DWA, RLW, FAMO) give the total loss, inside the tape::

    total = method.combine(task_losses)   # K scalars in method.tasks order; + regularisation
    grads = tape.gradient(total, model.trainable_variables + method.variables)

(FAMO, ``wants_active``, also takes ``active``: ``method.combine(task_losses, active)``.)
Gradient methods (``kind == "gradient"``: PCGrad, MGDA-UB, GradNorm, IMTL-G, CAGrad, Nash-MTL,
Aligned-MTL) first see the per-task gradients w.r.t. ``method.needs`` --
``"shared_variables"`` (every trainable variable reached by two or more tasks),
``"last_shared_layer"`` (:func:`last_shared_kernel` of those) or ``"representation"`` (the
shared trunk's output tensor) -- from a persistent tape::

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
linear system, a simplex problem, a fixed point, an eigen-decomposition) are solved in float64
with TensorFlow ops, CAGrad's and Nash-MTL's by loops with a fixed budget of iterations where
the authors call scipy or cvxpy.

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
    losses = keras.ops.convert_to_tensor(losses)
    log_vars = keras.ops.cast(keras.ops.convert_to_tensor(log_vars), losses.dtype)
    return keras.ops.sum(keras.ops.exp(-log_vars) * losses + log_vars)


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


# ------------------------------------------------- recent methods (2021-2023): the cores
def _gram(G, what: str) -> tuple[tf.Tensor, tf.Tensor]:
    """``G`` (K, D) -> (``G``, its Gram matrix ``G G^T`` in float64), refusing NaN eagerly.
    The K x K problems below are solved in float64: they are tiny, and the methods divide by
    small eigenvalues and norms."""
    G = _matrix(G)
    M = tf.matmul(G, G, transpose_b=True)
    _refuse_non_finite(tf.linalg.diag_part(M), f"{what}: the gradient (row of G)")
    return G, tf.cast(M, tf.float64)


def _in_play(active, M) -> tf.Tensor:
    """The tasks a gradient method combines: ``active`` ones with a gradient that is not 0
    (a zero row has no direction to align, project on or bargain with)."""
    return _active_mask(active, M.shape[0]) & (tf.linalg.diag_part(M) > 0)


def _outer_mask(on) -> tf.Tensor:
    return on[:, None] & on[None, :]


def famo_total(losses, logits, min_losses=0.0, active=None) -> tuple[tf.Tensor, tf.Tensor]:
    """FAMO's objective (Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023): ``(total, coefficients)``.

    ``z = softmax(logits)`` over the ``active`` tasks, ``D_j = L_j - min_j + 1e-8``,
    ``c = sum_j z_j / D_j`` (held constant), ``total = sum_j z_j log(D_j) / c``. Its gradient
    is ``sum_j (z_j / (c D_j)) grad L_j``: the network descends the weighted log-losses, and
    ``coefficients`` (K,) are those effective weights ``z_j / (c D_j)`` (they sum to 1). An
    inactive task (no labels in the batch) has coefficient 0 and no part in ``z`` or ``c``.
    """
    losses = tf.convert_to_tensor(losses)
    on = _active_mask(active, losses.shape[0])
    z = tf.stop_gradient(tf.cast(_masked_softmax(logits, on), losses.dtype))
    gap = losses - tf.cast(min_losses, losses.dtype) + 1e-8
    gap = tf.where(on, gap, tf.ones_like(gap))  # (an inactive loss of 0 would give log 0)
    c = tf.stop_gradient(tf.reduce_sum(tf.where(on, z / gap, tf.zeros_like(z))))
    total = tf.math.divide_no_nan(tf.reduce_sum(tf.where(on, z * tf.math.log(gap), 0.0)), c)
    coefficients = tf.stop_gradient(tf.where(on, tf.math.divide_no_nan(z / gap, c), 0.0))
    return total, coefficients


def famo_logit_gradient(logits, previous_losses, losses, min_losses=0.0, active=None):
    """FAMO's gradient for its task logits: with ``delta_j = log D_j(before) - log D_j(after)``
    (each loss's log-decrease over one step), ``d = J_softmax(logits)^T delta = z * (delta -
    z . delta)``, ``z`` the softmax over the ``active`` tasks; 0 for the others. Descending
    ``d`` raises the weight of the tasks whose loss fell the least."""
    losses = tf.convert_to_tensor(losses)
    on = _active_mask(active, losses.shape[0])
    dtype = tf.convert_to_tensor(logits).dtype
    low = tf.cast(min_losses, dtype)
    before = tf.cast(previous_losses, dtype) - low + 1e-8
    after = tf.cast(losses, dtype) - low + 1e-8
    one = tf.ones_like(after)
    delta = tf.math.log(tf.where(on, before, one)) - tf.math.log(tf.where(on, after, one))
    z = _masked_softmax(logits, on)
    return tf.where(on, z * (delta - tf.reduce_sum(z * delta)), tf.zeros_like(z))


def _masked_softmax(logits, on) -> tf.Tensor:
    """softmax over the entries where ``on`` is true; 0 elsewhere (all 0 when none is)."""
    logits = tf.convert_to_tensor(logits)
    top = tf.reduce_max(tf.where(on, logits, tf.constant(-np.inf, logits.dtype)))
    e = tf.where(on, tf.exp(logits - tf.where(tf.reduce_any(on), top, 0.0)), 0.0)
    return tf.math.divide_no_nan(e, tf.reduce_sum(e))


def adam_l2_step(params, grad, m, v, t, lr, weight_decay, moving=None,
                 betas=(0.9, 0.999), eps=1e-8) -> tuple:  # fmt: skip
    """One step of PyTorch's ``Adam(lr, weight_decay)`` (decay added to the gradient, L2
    style, not AdamW's) with a step count ``t`` per entry; entries where ``moving`` is false
    keep their value, moments and count. -> ``(params, m, v, t)``."""
    params = tf.convert_to_tensor(params)
    moving = tf.ones_like(params, tf.bool) if moving is None else moving
    b1, b2 = betas
    grad = grad + weight_decay * params
    m_new = b1 * m + (1.0 - b1) * grad
    v_new = b2 * v + (1.0 - b2) * grad * grad
    t_new = t + 1.0
    denominator = tf.sqrt(v_new) / tf.sqrt(1.0 - b2**t_new) + eps
    stepped = params - lr / (1.0 - b1**t_new) * m_new / denominator
    keep = lambda new, old: tf.where(moving, new, old)  # noqa: E731
    return keep(stepped, params), keep(m_new, m), keep(v_new, v), keep(t_new, t)


def imtl_g_weights(G, active=None) -> tf.Tensor:
    """IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021): ``alpha`` (K,)
    with ``sum alpha = 1`` such that ``g = sum_j alpha_j g_j`` has the same projection on
    every task's unit gradient ``u_j``: ``g . u_j = t`` for all j.

    On the Gram matrix ``M``, with ``n_j = |g_j|``: ``(M alpha)_j / n_j = t`` and ``1^T alpha
    = 1``, one (K+1) linear system, solved by pseudo-inverse. With independent gradients this
    is LibMTL's ``alpha = g_1 U^T (D U^T)^-1`` (rows ``D_j = g_1 - g_j``, ``U_j = u_1 - u_j``)
    exactly; with dependent ones (parallel gradients: many alphas do it) the pseudo-inverse
    picks the smallest solution where LibMTL's inverse gives inf or NaN. Tasks not ``active``,
    or with a zero gradient, get alpha 0 and no equation. No task: all 0.
    """
    G, M = _gram(G, "imtl_g_weights")
    on = _in_play(active, M)
    K, onf = M.shape[0], tf.cast(on, tf.float64)
    n = tf.sqrt(tf.linalg.diag_part(M))
    projections = tf.math.divide_no_nan(M, n[:, None])  # row j: (M alpha)_j / n_j
    eye = tf.eye(K, dtype=tf.float64)
    top = tf.where(_outer_mask(on), projections, eye)  # an inactive task: alpha_j = 0
    system = tf.concat(
        [tf.concat([top, -onf[:, None]], axis=1),
         tf.concat([onf[None, :], tf.zeros([1, 1], tf.float64)], axis=1)],
        axis=0,
    )  # fmt: skip
    right = tf.one_hot(K, K + 1, dtype=tf.float64)
    solution = tf.linalg.matvec(tf.linalg.pinv(system), right)
    alpha = tf.where(on, solution[:K], 0.0)
    return tf.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


def cagrad_weights(G, c: float = 0.4, rescale: int = 1, iterations: int = 200,
                   active=None) -> tf.Tensor:  # fmt: skip
    """CAGrad (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021): coefficients ``a`` (K,) of the shared update ``sum_j a_j g_j``.

    With ``g_0`` the mean gradient and ``c' = c |g_0|``, ``w`` minimises ``F(w) = g_w . g_0 +
    c' |g_w|`` over the simplex (``g_w = sum_j w_j g_j``), and the update is ``K (g_0 + c' /
    |g_w| g_w) / s``: ``s = 1 + c^2`` (``rescale=1``, the authors' default), ``1 + c`` (2) or 1
    (0); the factor K (the authors' ``newgrad * 3``, "to match the sum loss") puts it on the
    scale of the sum of the losses' gradients. The authors' constants are kept (``|g_0| =
    sqrt(mean(G G^T) + 1e-8)``, ``c' + 1e-8``, ``|g_w| + 1e-8``).

    The authors minimise F with ``scipy.optimize.minimize`` (SLSQP). Here, inside the graph:
    accelerated projected gradient descent on the simplex from the uniform point, each step
    trying 40 step lengths (1, 1/2, ..., 2^-39 along the gradient scaled to a largest entry
    of 1) at once and keeping the best; at most ``iterations`` steps, stopping once no step
    lowers F. Tasks not ``active`` (or with a zero gradient) are left out: g_0,
    K and the simplex are over the others, and their coefficient is 0.
    """
    G, M = _gram(G, "cagrad_weights")
    on = _in_play(active, M)
    onf = tf.cast(on, tf.float64)
    A = tf.where(_outer_mask(on), M, 0.0)
    count = tf.reduce_sum(onf)
    b = tf.math.divide_no_nan(onf, count)  # uniform over the tasks in play
    g0_norm = tf.sqrt(tf.math.divide_no_nan(tf.reduce_sum(A), count**2) + 1e-8)
    cc = c * g0_norm + 1e-8
    w = _cagrad_simplex(A, b, cc, on, iterations)
    gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(A, w), 1), 0.0))
    scale = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    a = tf.where(on, count * (b + cc / (gw_norm + 1e-8) * w) / scale, 0.0)
    return tf.cast(_nan_unless(_all_finite(M), a), G.dtype)


def cagrad_objective(w, A, b, cc) -> tf.Tensor:
    """CAGrad's ``F(w) = w^T A b + cc sqrt(w^T A w + 1e-8)`` for a batch of rows ``w``."""
    w = tf.convert_to_tensor(w)
    Aw = tf.matmul(w, A)  # (S, K): rows w^T A (A symmetric)
    return tf.linalg.matvec(Aw, b) + cc * tf.sqrt(tf.reduce_sum(Aw * w, axis=1) + 1e-8)


def _simplex_projection(V, on) -> tf.Tensor:
    """Euclidean projection of each row of ``V`` (S, K) onto the simplex of the ``on``
    coordinates (the others are 0): sort, find the threshold, clip."""
    K = V.shape[1]
    count = tf.reduce_sum(tf.cast(on, tf.int32))
    u = tf.sort(tf.where(on[None, :], V, tf.constant(-np.inf, V.dtype)), direction="DESCENDING")
    inside = tf.range(K) < count  # the first `count` sorted entries are the on ones
    u = tf.where(inside[None, :], u, 0.0)
    positions = tf.cast(tf.range(1, K + 1), V.dtype)
    thresholds = (tf.cumsum(u, axis=1) - 1.0) / positions
    fits = inside[None, :] & (u - thresholds > 0)
    last = tf.reduce_max(tf.where(fits, tf.range(K)[None, :], 0), axis=1)
    theta = tf.gather(thresholds, last, batch_dims=1)
    return tf.where(on[None, :], tf.maximum(V - theta[:, None], 0.0), 0.0)


def _cagrad_simplex(A, b, cc, on, iterations: int) -> tf.Tensor:
    """:func:`cagrad_weights`' minimiser of F over the simplex of the ``on`` tasks: projected
    gradient steps from a look-ahead point ``y`` (Nesterov's momentum, restarted whenever a
    step fails to lower F), the best of 40 step lengths each time."""
    lengths = tf.constant(0.5 ** np.arange(40), A.dtype)[:, None]
    Ab = tf.linalg.matvec(A, b)

    def step(i, w, y, k, value, go):
        Ay = tf.linalg.matvec(A, y)
        gradient = tf.where(on, Ab + cc * Ay / tf.sqrt(tf.tensordot(y, Ay, 1) + 1e-8), 0.0)
        gradient = tf.math.divide_no_nan(gradient, tf.reduce_max(tf.abs(gradient)))
        tries = _simplex_projection(y[None, :] - lengths * gradient[None, :], on)
        values = cagrad_objective(tries, A, b, cc)
        best = tf.argmin(values)
        better = values[best] < value
        w_new = tf.where(better, tries[best], w)
        y_new = tf.where(better, w_new + (k - 1.0) / (k + 2.0) * (w_new - w), w_new)
        k_new = tf.where(better, k + 1.0, tf.ones_like(k))  # a failed step: restart
        return i + 1, w_new, y_new, k_new, tf.minimum(values[best], value), better | (k > 1.0)

    one = tf.constant(1.0, A.dtype)
    start = (0, b, b, one, cagrad_objective(b[None, :], A, b, cc)[0], tf.constant(True))
    go_on = lambda i, w, y, k, value, go: (i < iterations) & go  # noqa: E731
    return tf.while_loop(go_on, step, start)[1]


def nash_mtl_weights(G, iterations: int = 100, tolerance: float = 1e-10,
                     active=None) -> tf.Tensor:  # fmt: skip
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022):
    ``alpha > 0`` (K,) solving ``G G^T alpha = 1 / alpha`` -- each task's share of the update
    ``g = sum_j alpha_j g_j`` satisfies ``alpha_j (g_j . g) = 1``, the Nash bargaining
    solution.

    That alpha is the minimiser of the strictly convex ``f(alpha) = 1/2 alpha^T M alpha -
    sum_j log alpha_j`` (``M = G G^T``; its gradient is ``M alpha - 1/alpha``), found here by
    damped Newton steps (``alpha <- alpha - H^-1 grad f / (1 + lambda)``, ``lambda`` the Newton
    decrement; a full step once ``lambda < 1/4``): f is self-concordant, so every step stays
    positive and the iteration converges from any start, here ``1 / |g_j|``; at most
    ``iterations`` steps, stopping once ``lambda^2 < tolerance``. It runs on ``M / |M|_F`` and
    rescales (as the authors normalise). The authors solve the same fixed point by a
    sequence of convex problems (cvxpy/ECOS) warm-started from the previous batch's alpha,
    at most 20 of them, and stop on tests that can end before the fixed point
    (:class:`NashMTL`).

    Tasks not ``active`` (or with a zero gradient) are left out (alpha 0; a zero row would
    make f unbounded below). Gradients whose positive combination is 0 (exactly opposite
    ones) have no solution: alpha then grows with the iterations.
    """
    G, M = _gram(G, "nash_mtl_weights")
    on = _in_play(active, M)
    A = tf.where(_outer_mask(on), M, 0.0)
    norm = tf.norm(A)
    beta = _nash_newton(tf.math.divide_no_nan(A, norm), on, iterations, tolerance)
    alpha = tf.where(on, tf.math.divide_no_nan(beta, tf.sqrt(norm)), 0.0)
    return tf.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


def _nash_newton(A, on, iterations: int, tolerance: float) -> tf.Tensor:
    """Damped Newton on ``1/2 b^T A b - sum_on log b_j`` (the entries off ``on`` stay 1)."""
    onf = tf.cast(on, A.dtype)
    diagonal = tf.linalg.diag_part(A)
    start = tf.where(on, 1.0 / tf.sqrt(tf.where(on, diagonal, 1.0)), 1.0)

    def step(i, beta, decrement):
        gradient = tf.linalg.matvec(A, beta) - onf / beta
        hessian = A + tf.linalg.diag(tf.where(on, 1.0 / beta**2, 1.0))
        direction = tf.linalg.solve(hessian, gradient[:, None])[:, 0]
        squared = tf.maximum(tf.tensordot(gradient, direction, 1), 0.0)
        size = tf.sqrt(squared)
        damping = tf.where(size < 0.25, tf.ones_like(size), 1.0 / (1.0 + size))
        return i + 1, beta - damping * direction, squared

    go_on = lambda i, beta, decrement: (i < iterations) & (decrement > tolerance)  # noqa: E731
    start_values = (0, start, tf.constant(np.inf, A.dtype))
    return tf.while_loop(go_on, step, start_values)[1]


ALIGNED_SCALES = ("min", "median", "rmse")


def aligned_mtl_weights(G, scale_mode: str = "min", active=None) -> tf.Tensor:
    """Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023): ``alpha`` (K,), the shared update being ``sum_j alpha_j g_j``.

    The Gram matrix ``M = G G^T = V diag(lambda) V^T``; eigenvalues up to ``max(lambda) K
    eps_float32`` count as 0 (the authors' rank test). ``B = V diag(sqrt(lambda_ref /
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
    K = M.shape[0]
    values, vectors = tf.linalg.eigh(tf.where(_outer_mask(on), M, 0.0))  # ascending
    tol = tf.reduce_max(values) * K * float(np.finfo(np.float32).eps)
    kept = values > tol
    count = tf.reduce_sum(tf.cast(kept, tf.int32))
    if scale_mode == "min":
        reference = tf.reduce_min(tf.where(kept, values, tf.constant(np.inf, tf.float64)))
    elif scale_mode == "median":  # torch.median: the lower of the two middle ones
        reference = tf.gather(values, K - count + (count - 1) // 2)
    else:
        reference = tf.math.divide_no_nan(
            tf.reduce_sum(tf.where(kept, values, 0.0)), tf.cast(count, tf.float64)
        )
    scales = tf.where(kept, tf.sqrt(tf.math.divide_no_nan(reference, values)), 0.0)
    B = tf.matmul(vectors * scales[None, :], vectors, transpose_b=True)
    alpha = tf.where(on & (count > 0), tf.reduce_sum(B, axis=1), 0.0)
    return tf.cast(_nan_unless(_all_finite(M), alpha), G.dtype)


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
    wants_active = False  # True (FAMO): combine(task_losses, active) -- the loop passes active
    backends = ("tensorflow",)  # the Keras backends its step runs on (keras.ops: every one)

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
            dtype = keras.backend.standardize_dtype(variable.dtype)
            variable.assign(np.asarray(state[key]).astype(dtype))

    def _refuse(self, what: str, values) -> None:
        """Eagerly, raise a ValueError naming the tasks whose ``values`` are not finite."""
        _refuse_non_finite(values, f"{self.name}: the {what}", self.tasks)

    def _stack(self, task_losses):
        ops = keras.ops
        losses = task_losses if ops.is_tensor(task_losses) else ops.stack(list(task_losses))
        if losses.shape[0] != self.num_tasks:
            raise ValueError(f"Got {losses.shape[0]} task losses for tasks {self.tasks}.")
        return losses

    def _weighted_sum(self, weights, task_losses):
        """``sum_j weights_j L_j``."""
        losses = self._stack(task_losses)
        weights = keras.ops.cast(keras.ops.convert_to_tensor(weights), losses.dtype)
        return keras.ops.tensordot(weights, losses, 1)


class EqualWeighting(Weighting):
    """EW: ``sum_j L_j``, the baseline every remedy is compared with."""

    name = "ew"
    backends = ("tensorflow", "jax")

    def combine(self, task_losses):
        return keras.ops.sum(self._stack(task_losses))


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
    backends = ("tensorflow", "jax")

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
    backends = ("tensorflow", "jax")

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
        self._low = tf.constant(low, tf.float32)
        zeros = lambda: tf.Variable(tf.zeros([self.num_tasks]), trainable=False)  # noqa: E731
        self.logits, self.m, self.v, self.t = zeros(), zeros(), zeros(), zeros()
        self.previous, self.previous_on = zeros(), zeros()  # last step's losses; 1: measured
        self.logged = tf.Variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks))
        self.state_variables = {"logits": self.logits, "adam_m": self.m, "adam_v": self.v,
                                "adam_t": self.t, "previous": self.previous,
                                "previous_on": self.previous_on, "last": self.logged}  # fmt: skip

    def combine(self, task_losses, active=None):
        losses = self._stack(task_losses)
        self._refuse("loss", losses)
        current = tf.cast(losses, tf.float32)
        on = _active_mask(active, self.num_tasks)
        above = tf.where(on, current - self._low + 1e-8 > 0, True)  # (inactive: loss 0)
        if tf.executing_eagerly() and not bool(tf.reduce_all(above)):
            raise ValueError(
                f"FAMO takes the log of L_j - min_losses_j: the losses "
                f"{current.numpy().tolist()} must be above {self.min_losses}."
            )
        finite = _all_finite(current) & tf.reduce_all(above)
        both = on & (self.previous_on > 0) & finite  # a decrease measured over the last step
        d = famo_logit_gradient(self.logits, self.previous, current, self._low, both)
        logits, m, v, t = adam_l2_step(self.logits, d, self.m, self.v, self.t, self.w_lr,
                                       self.gamma, moving=both)  # fmt: skip
        for variable, value in ((self.logits, logits), (self.m, m), (self.v, v), (self.t, t)):
            variable.assign(value)
        keep = on & finite
        self.previous.assign(tf.where(keep, current, self.previous))
        self.previous_on.assign(tf.cast(keep, tf.float32))
        total, coefficients = famo_total(losses, logits, tf.cast(self._low, losses.dtype), on)
        self.logged.assign(tf.where(finite, tf.cast(coefficients, tf.float32), self.logged))
        return _nan_unless(finite, total)


class _SharedCombination(Weighting):
    """A method whose shared variables take ``sum_j a_j g_j`` (``a`` from :meth:`weights`),
    while every other variable takes its plain gradient of ``sum_j L_j`` (coefficient 1, 0
    for a task not ``active``): the authors' (and LibMTL's) treatment of task heads for
    IMTL-G, CAGrad and Aligned-MTL. Logs the last batch's ``a``."""

    kind, needs = "gradient", "shared_variables"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.logged = tf.Variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks))
        self.state_variables = {"last": self.logged}

    def weights(self, G, active) -> tf.Tensor:
        raise NotImplementedError

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        a = self.weights(G, on)
        self.logged.assign(tf.cast(a, tf.float32))
        return tf.cast(on, losses.dtype), tf.linalg.matvec(G, a, transpose_a=True)


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
    solved by a fixed-budget projected gradient descent in TensorFlow instead of scipy's
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

    * the solver: damped Newton on the fixed point's convex potential, in TensorFlow, at
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
        self.logged = tf.Variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks))
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.state_variables = {"last": self.logged, "steps": self.steps}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        fresh = tf.equal(self.steps % self.update_weights_every, 0)
        solve = lambda: tf.cast(nash_mtl_weights(G, self.iterations, active=on), tf.float32)  # noqa: E731
        alpha = tf.cond(fresh, solve, lambda: tf.identity(self.logged))
        alpha = tf.where(on, alpha, 0.0)
        self.steps.assign_add(1)
        self.logged.assign(alpha)
        alpha = tf.cast(alpha, G.dtype)
        shared = tf.linalg.matvec(G, alpha, transpose_a=True)
        if self.max_norm > 0:
            shared = tf.clip_by_norm(shared, self.max_norm)
        return tf.cast(alpha, losses.dtype), shared


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
