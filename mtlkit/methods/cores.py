"""The cores of the loss weightings and gradient methods: pure functions of ``keras.ops``.

Each function runs inside a compiled training step on Keras's TensorFlow backend (in
``tf.function``) and on its JAX backend (in ``jax.jit``), and can be checked on NumPy arrays on
its own. :mod:`mtlkit.methods.weighting` wraps each in a method object that keeps its state and
that the training loop drives; the functions here take the task losses, the (K, D) matrix of
task gradients, or both, and return weights, coefficients or a combined gradient. The helpers
at the end (:func:`split_gradient`, :func:`last_shared_kernel`, :func:`epoch_losses`) give the
loop what the methods need; the (K, D) matrix itself comes from the backend's gradient
(:func:`mtlkit.backend.task_gradient_matrix`).

**The recent methods** (2021-2023) are each checked against a NumPy transliteration of their
authors' code (LibMTL's for IMTL-G, whose authors released none) in
``tests/test_weighting_recent.py``; every difference is stated in the method's docstring
(:mod:`mtlkit.methods.weighting`). FAMO is a loss method: its task logits learn from the
losses' decrease between steps, at the cost of equal weighting. IMTL-G, CAGrad and Aligned-MTL
give the shared variables a combination of the task gradients (heads keep their plain
gradients, as in the authors' code and LibMTL); Nash-MTL trains on ``sum_j alpha_j L_j`` and
clips the shared gradient. Their small K x K problems (a linear system, a simplex problem, a
fixed point, an eigen-decomposition) are solved with ``keras.ops`` in float64 where the backend
computes in it -- TensorFlow, and JAX with ``jax_enable_x64`` -- and in float32 otherwise
(JAX's default: :func:`_solver_dtype`); CAGrad's and Nash-MTL's by loops with a fixed budget of
iterations where the authors call scipy or cvxpy.

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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

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


def uncertainty_total(losses, log_vars, active=None) -> Tensor:
    """UW (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses",
    CVPR 2018): ``sum_j exp(-s_j) L_j + s_j`` with ``s_j = log sigma_j^2`` trainable.

    ``active`` ((K,) booleans or labelled-example counts; ``None``: every task): the sum
    runs over the active tasks only, so an inactive task's ``s_j`` gets no gradient (its
    ``+ s_j`` alone would push it up by 1 a step). With every task active the terms and
    their sum are those of the plain formula, bit for bit."""
    losses = ops.convert_to_tensor(losses)
    log_vars = ops.cast(ops.convert_to_tensor(log_vars), losses.dtype)
    terms = ops.exp(-log_vars) * losses + log_vars
    if active is not None:
        on = _active_mask(active, terms.shape[0])
        terms = ops.where(on, terms, ops.zeros_like(terms))
    return ops.sum(terms)


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
    that can end before the fixed point (:class:`~mtlkit.methods.weighting.NashMTL`).

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


def _finite_number(value) -> bool:
    """Whether ``value`` is a real number (NumPy's too, not a bool), neither NaN nor infinite."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value)
