"""Weighting methods: every pure function against an independent NumPy computation, the
method objects' interface, their state round trip, and the errors on bad input.

The file runs on both Keras backends (helpers in ``_neutral_weighting``). JAX computes the
float64 test inputs in float32 here, so a few comparisons take a wider tolerance there
(:data:`EXACT` and the comments beside the others, with the measured differences); the
tape-based pieces of the TensorFlow loop (:func:`tensorflow_step`,
``backend.task_gradient_matrix``) have their JAX counterparts beside them."""

import itertools
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from _neutral_weighting import JAX, compiled, gradient, numpy, variable_gradients
from keras import ops

from mtlkit import backend
from mtlkit.methods import cores, weighting
from mtlkit.methods.cores import (
    dwa_weights,
    gradnorm_gradient,
    gradnorm_loss,
    mgda_weights,
    pcgrad,
    pcgrad_orders,
    project_conflicts,
    rlw_weights,
    uncertainty_total,
)
from mtlkit.methods.weighting import METHODS

TASKS = ["a", "b", "c"]
EXACT = 1e-6 if JAX else 1e-12
"""The relative tolerance of a closed form computed in float64 (TensorFlow); JAX computes
the float64 inputs in float32 here (measured: 7.0e-8 for PCGrad's two- and three-task
sums, 6.0e-8 for MGDA's two-task alpha and its sum over many tasks)."""


# ----------------------------------------------------------------- independent NumPy versions
def numpy_pcgrad(G, orders):
    """PCGrad written out one task at a time, projecting on the original gradients."""
    total = np.zeros(G.shape[1])
    for i in range(len(G)):
        g = G[i].copy()
        for j in orders[i]:
            if g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        total += g
    return total


def exact_min_norm(G):
    """min over the simplex of |alpha^T G|^2 by trying every support: on a support S the
    optimum of alpha^T M alpha with sum 1 is M_S^-1 1 normalised (kept when non-negative)."""
    M, K = G @ G.T, len(G)
    best = np.inf
    for size in range(1, K + 1):
        for S in map(list, itertools.combinations(range(K), size)):
            a = np.linalg.solve(M[np.ix_(S, S)], np.ones(size))
            if a.sum() > 0 and (a / a.sum() >= 0).all():
                a = a / a.sum()
                best = min(best, a @ M[np.ix_(S, S)] @ a)
    return best


def copy_of(rng: keras.random.SeedGenerator) -> keras.random.SeedGenerator:
    """A second generator in ``rng``'s state: it draws what ``rng`` draws next."""
    twin = keras.random.SeedGenerator(0)
    twin.state.assign(rng.state.value)
    return twin


def generator(seed: int) -> keras.random.SeedGenerator:
    return keras.random.SeedGenerator(seed)


def scalars(*values) -> list:
    """Each value as a scalar tensor of the backend (float32 for Python floats)."""
    return [ops.convert_to_tensor(v) for v in values]


# ------------------------------------------------------------------------------- PCGrad
def test_pcgrad_two_tasks_exactly():
    g1, g2 = np.array([1.0, 0.0, 2.0]), np.array([-2.0, 1.0, 0.5])  # g1 . g2 = -1: a conflict
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    result = numpy(pcgrad(np.stack([g1, g2]), generator(0)))
    np.testing.assert_allclose(result, expected, rtol=EXACT)
    agree = np.stack([g1, np.array([1.0, 1.0, 0.0])])  # no conflict: the plain sum
    np.testing.assert_allclose(pcgrad(agree, generator(0)), agree.sum(0))


def test_pcgrad_three_tasks_follow_the_order_drawn():
    G = np.array([[1.0, 0.0], [-0.6, 1.0], [-0.6, -1.0]])  # every pair conflicts
    # the order matters here, so matching the drawn order is a real check
    assert not np.allclose(
        numpy_pcgrad(G, [[1, 2], [0, 2], [0, 1]]), numpy_pcgrad(G, [[2, 1], [0, 2], [0, 1]])
    )
    rng = generator(7)
    for _ in range(5):
        orders = numpy(pcgrad_orders(3, copy_of(rng)))
        for i, order in enumerate(orders):
            assert sorted(order) == sorted(set(range(3)) - {i})
        # JAX, in float32: measured 7.7e-7 (three projections in a row)
        rtol = 5e-6 if JAX else 1e-12
        np.testing.assert_allclose(numpy(pcgrad(G, rng)), numpy_pcgrad(G, orders), rtol=rtol)


def test_pcgrad_really_shuffles():
    rng = generator(1)
    firsts = {tuple(numpy(pcgrad_orders(3, rng))[0]) for _ in range(40)}
    assert firsts == {(1, 2), (2, 1)}


def test_pcgrad_random_many_tasks_and_inside_tf_function():
    G = np.random.default_rng(0).normal(size=(5, 12)).astype("float32")
    orders = np.array(
        [np.random.default_rng(i).permutation([j for j in range(5) if j != i]) for i in range(5)]
    )
    np.testing.assert_allclose(
        project_conflicts(G, orders), numpy_pcgrad(G, orders), rtol=1e-4, atol=1e-5
    )
    rng = generator(3)
    expected = numpy_pcgrad(G, numpy(pcgrad_orders(5, copy_of(rng))))
    step = compiled(lambda G: pcgrad(G, rng), rng)
    np.testing.assert_allclose(step(ops.convert_to_tensor(G)), expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------- MGDA
# alpha_1 inside (0, 1), clipped at 1, clipped at 0, inside with a conflict, and g1 = g2
PAIRS = [([1, 0], [0, 2]), ([1, 1], [3, 4]), ([3, 4], [1, 1]), ([2, -1], [-1, 3]), ([1, 2], [1, 2])]


@pytest.mark.parametrize("g1, g2", PAIRS)
def test_mgda_two_tasks_closed_form(g1, g2):
    g1, g2 = np.array(g1, float), np.array(g2, float)
    d = (g1 - g2) @ (g1 - g2)
    a1 = 0.5 if d == 0 else np.clip((g2 - g1) @ g2 / d, 0.0, 1.0)
    alpha = numpy(mgda_weights(np.stack([g1, g2])))
    np.testing.assert_allclose(alpha, [a1, 1 - a1], rtol=EXACT)
    grid = np.linspace(0, 1, 2001)  # no point of the segment does better
    norms = np.linalg.norm(grid[:, None] * g1 + (1 - grid[:, None]) * g2, axis=1)
    assert np.linalg.norm(alpha @ np.stack([g1, g2])) <= norms.min() + 1e-12


@pytest.mark.parametrize("K, seed", [(3, 0), (4, 1), (5, 2), (6, 3), (3, 4), (5, 5)])
def test_mgda_many_tasks_is_the_minimum_norm_point(K, seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(K, 8)) + rng.normal(size=8) * rng.uniform(0, 2)  # some agreement
    alpha = numpy(mgda_weights(G)).astype(float)
    assert alpha.min() >= 0 and math.isclose(alpha.sum(), 1.0, rel_tol=EXACT)
    found = alpha @ G @ G.T @ alpha
    best = exact_min_norm(G)
    assert found <= best * (1 + (1e-6 if JAX else 1e-8)) + 1e-12  # JAX: measured 1.2e-7
    samples = np.vstack([np.eye(K), rng.dirichlet(np.ones(K), size=20000)])
    assert (np.einsum("nk,kl,nl->n", samples, G @ G.T, samples) >= found - 1e-10).all()


def test_mgda_runs_compiled_in_float32():
    G = np.random.default_rng(9).normal(size=(4, 30)).astype("float32")
    alpha = numpy(compiled(mgda_weights)(ops.convert_to_tensor(G)))
    eager64 = numpy(mgda_weights(G.astype("float64")))
    np.testing.assert_allclose(alpha, eager64, atol=1e-4)


# ----------------------------------------------------------------------------- DWA, UW
def test_dwa_by_hand():
    history = np.array([[2.0, 1.0, 4.0], [1.0, 0.9, 3.0], [0.8, 0.9, 1.5]])
    assert (dwa_weights(np.zeros((0, 3))) == 1).all() and (dwa_weights(history[:1]) == 1).all()
    r = [0.8 / 1.0, 0.9 / 0.9, 1.5 / 3.0]  # the last two epochs
    e = [math.exp(x / 2.0) for x in r]
    np.testing.assert_allclose(dwa_weights(history), [3 * x / sum(e) for x in e], rtol=1e-12)
    e1 = [math.exp(x / 0.5) for x in r]
    np.testing.assert_allclose(dwa_weights(history, 0.5), [3 * x / sum(e1) for x in e1])


def test_dwa_object_per_epoch_and_too_early():
    method = weighting.get("dwa", TASKS)
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        method.combine([1.0, 2.0, 3.0])
    history = np.array([[2.0, 1.0, 4.0], [1.0, 0.9, 3.0]])
    method.on_epoch_start(0, np.zeros((0, 3)))
    assert method.weights_for_logging() == dict.fromkeys(TASKS, 1.0)
    with pytest.raises(ValueError, match="epoch 3 need the mean losses of the 2 epochs"):
        method.on_epoch_start(2, history[:1])
    method.on_epoch_start(2, history)
    lam = dwa_weights(history)
    total = method.combine(scalars(1.0, 2.0, 3.0))
    assert math.isclose(float(total), lam @ [1.0, 2.0, 3.0], rel_tol=1e-6)
    assert list(method.weights_for_logging().values()) == pytest.approx(lam)


def test_uncertainty_total_by_hand_and_its_optimum():
    losses, s = [2.0, 0.5], [0.0, math.log(2.0)]
    expected = 2.0 * math.exp(-0.0) + 0.0 + 0.5 * math.exp(-math.log(2.0)) + math.log(2.0)
    assert math.isclose(float(uncertainty_total(losses, s)), expected, rel_tol=1e-6)
    # d/ds_j = 1 - exp(-s_j) L_j: zero exactly at s_j = log L_j
    as_float64 = ops.convert_to_tensor(np.array(losses))  # (JAX: float32)
    _, slope = gradient(lambda log_vars: uncertainty_total(as_float64, log_vars), np.log(losses))
    # JAX computes in float32 here: measured |slope| 6.0e-8
    np.testing.assert_allclose(numpy(slope), [0.0, 0.0], atol=1e-6 if JAX else 1e-12)


def test_uw_object_trains_its_log_variances():
    method = weighting.get("uw", ["a", "b"])
    assert method.variables == [method.log_vars] and method.log_vars.dtype == "float32"
    optimizer = keras.optimizers.SGD(0.1)
    total, grads = variable_gradients(lambda: method.combine(scalars(3.0, 0.5)), method.variables)
    assert math.isclose(float(total), 3.5)  # s = 0: the plain sum
    optimizer.apply_gradients(zip(grads, method.variables))
    # s_j -= 0.1 * (1 - L_j): the larger loss gets the smaller weight exp(-s_j)
    np.testing.assert_allclose(numpy(method.log_vars), [0.2, -0.05], rtol=1e-6)
    w = method.weights_for_logging()
    assert w["a"] == pytest.approx(math.exp(-0.2)) and w["b"] == pytest.approx(math.exp(0.05))


# ------------------------------------------------------------------------------------ RLW
def test_rlw_weights_on_the_simplex_and_reproducible():
    a, b = generator(5), generator(5)
    for _ in range(10):
        z = numpy(keras.random.normal((4,), seed=copy_of(a)))
        w = numpy(rlw_weights(4, a))
        np.testing.assert_allclose(w, np.exp(z) / np.exp(z).sum(), rtol=1e-6)
        assert (w > 0).all() and math.isclose(w.sum(), 1.0, rel_tol=1e-6)
        np.testing.assert_array_equal(w, numpy(rlw_weights(4, b)))
    assert not np.allclose(rlw_weights(4, a), rlw_weights(4, a))  # new weights each step


# ------------------------------------------------------------------------------- GradNorm
def test_gradnorm_loss_by_hand():
    norms, w = [3.0, 1.0], np.ones(2, "float32")
    losses, initial = [1.0, 0.5], [2.0, 2.0]  # Ltilde = (0.5, 0.25), r = (4/3, 2/3)
    g_bar = 2.0
    targets = [g_bar * (4 / 3) ** 1.5, g_bar * (2 / 3) ** 1.5]
    value, taped = gradient(lambda w: gradnorm_loss(w, norms, losses, initial, alpha=1.5), w)
    assert math.isclose(float(value), abs(3 - targets[0]) + abs(1 - targets[1]), rel_tol=1e-6)
    # targets held constant: dL/dw_j = sign(G_j - target_j) * n_j
    expected = [np.sign(3 - targets[0]) * 3.0, np.sign(1 - targets[1]) * 1.0]
    taped = numpy(taped)
    np.testing.assert_allclose(taped, expected, rtol=1e-6)
    np.testing.assert_array_equal(numpy(gradnorm_gradient(w, norms, losses, initial, 1.5)), taped)


@pytest.mark.parametrize("seed", range(6))
def test_gradnorm_closed_form_gradient_is_the_tapes(seed):
    """GradNorm's step uses gradnorm_gradient, not a nested tape: on random weights (some
    negative, one 0), losses, counted tasks and exact ties G_j = target_j (where the
    derivative of |x| is taken as 0), it equals TensorFlow's autodiff of gradnorm_loss bit
    for bit. JAX's autodiff takes that derivative as 1: there the two agree bit for bit off
    the ties, and at a tie autodiff gives 0 or the slope +-n_j where the kit gives 0."""
    rng = np.random.default_rng(seed)
    K = 4
    weights = rng.normal(size=K).astype("float32")
    weights[0] = 0.0
    norms = rng.uniform(0.1, 3.0, K).astype("float32")
    losses = rng.uniform(0.2, 2.0, K).astype("float32")
    initial = rng.uniform(0.5, 2.0, K).astype("float32")
    counted = rng.uniform(size=K) > 0.3 if seed % 2 else None
    if seed == 4:  # every task at its target: equal ratios, equal G_j
        weights, norms = np.ones(K, "float32"), np.full(K, 2.0, "float32")
        losses, initial = np.ones(K, "float32"), np.ones(K, "float32")
    _, taped = gradient(lambda w: gradnorm_loss(w, norms, losses, initial, 1.5, counted), weights)
    taped = numpy(taped)
    closed = numpy(gradnorm_gradient(weights, norms, losses, initial, 1.5, counted))
    off = np.ones(K, bool)  # where autodiff and the closed form must agree bit for bit
    if JAX:  # jax.grad(abs)(0.0) is 1, not 0: at a tie JAX's autodiff takes the slope +-n_j
        off = closed != 0
        assert ((taped[~off] == 0) | (np.abs(taped[~off]) == norms[~off])).all()
    np.testing.assert_array_equal(closed[off], taped[off])
    assert closed[0] == 0.0  # sign(w_0) = 0
    if seed == 4:
        assert not closed.any()


def test_gradnorm_step_balances_the_gradient_norms():
    method = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.SGD(0.1))
    assert method.logged.dtype == "float32"
    G = np.array([[3.0, 0.0], [0.0, 1.0]])  # n = (3, 1); first step: L = L(0), r = 1, target 2
    coefficients, shared = method.combine_gradients(scalars(0.7, 0.4), G)
    assert shared is None and numpy(coefficients).tolist() == [1.0, 1.0]  # weights before
    stepped = np.array([1.0 - 0.1 * 3.0, 1.0 + 0.1 * 1.0])  # w -= lr * sign(G - 2) * n
    expected = 2 * stepped / stepped.sum()  # renormalised to sum K = 2
    np.testing.assert_allclose(numpy(method.logged), expected, rtol=1e-6)
    assert abs(expected[0] * 3 - expected[1] * 1) < abs(3 - 1)  # the norms moved closer
    np.testing.assert_allclose(numpy(method.initial), [0.7, 0.4], rtol=1e-6)
    coefficients, _ = method.combine_gradients(scalars(0.35, 0.4), G)
    np.testing.assert_allclose(coefficients, expected, rtol=1e-6)
    np.testing.assert_allclose(numpy(method.initial), [0.7, 0.4], rtol=1e-6)  # kept


# ----------------------------------------------------------------- the shared interface
def run_steps(method, steps, seed=0):
    """Drive a method for a few steps on random losses and gradients; return what it gave."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        losses = [ops.convert_to_tensor(v) for v in rng.uniform(0.5, 2.0, 3).astype("float32")]
        if method.kind == "loss":
            out.append(float(method.combine(losses)))
        else:
            G = ops.convert_to_tensor(rng.normal(size=(3, 6)).astype("float32"))
            coefficients, shared = method.combine_gradients(losses, G)
            out.append(np.concatenate([coefficients, [] if shared is None else shared]).tolist())
        out.append(method.weights_for_logging())
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_round_trip_continues_identically(name):
    options = {"seed": 11} if name in ("rlw", "pcgrad") else {}
    method = weighting.get(name, TASKS, **options)
    method.on_epoch_start(0, np.zeros((0, 3)))
    if name == "uw":
        method.log_vars.assign([0.1, -0.2, 0.3])
    run_steps(method, 3, seed=1)
    if name == "dwa":
        method.on_epoch_start(2, [[1.0, 2.0, 3.0], [0.5, 1.9, 2.0]])
    state = json.loads(json.dumps(method.get_state()))
    straight = run_steps(method, 3, seed=2)
    other = weighting.get(name, TASKS, **({"seed": 99} if options else {}))
    other.set_state(state)
    assert run_steps(other, 3, seed=2) == straight


@pytest.mark.parametrize("name", ["rlw", "pcgrad"])
def test_reseed_restarts_the_generator_as_a_new_object(name):
    """reseed(s) draws what a new object seeded with s draws; seed None draws from the
    operating system's entropy (two such objects differ), and reseed makes it reproducible."""
    used = weighting.get(name, TASKS, seed=3)
    run_steps(used, 2)
    used.reseed(8)
    assert run_steps(used, 3, seed=4) == run_steps(weighting.get(name, TASKS, seed=8), 3, seed=4)
    free = [weighting.get(name, TASKS) for _ in range(2)]
    assert free[0].get_state()["rng"] != free[1].get_state()["rng"]
    free[0].reseed(8)
    assert run_steps(free[0], 3, seed=4) == run_steps(weighting.get(name, TASKS, seed=8), 3, seed=4)


@pytest.mark.parametrize("name", ["rlw", "pcgrad"])
def test_a_state_from_an_earlier_version_is_refused_clearly(name):
    """Earlier versions kept a tf.random.Generator's state, three numbers: a run folder
    with one asks to be recomputed, instead of failing somewhere in Keras."""
    method = weighting.get(name, TASKS, seed=0)
    state = json.loads(json.dumps(method.get_state()))
    state["rng"] = [0, 0, 12345]
    with pytest.raises(ValueError, match="earlier version.*fresh run_dir, or recompute=True"):
        method.set_state(state)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_in_a_compiled_step(name, jit):
    method = weighting.get(name, TASKS, **({"seed": 0} if name in ("rlw", "pcgrad") else {}))
    method.on_epoch_start(0, np.zeros((0, 3)))
    losses = ops.convert_to_tensor([1.0, 2.0, 0.5])
    G = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(3, 4)).astype("float32"))

    def one_step(losses, G):
        if method.kind == "loss":
            return method.combine(ops.unstack(losses)), ops.zeros([4])
        coefficients, shared = method.combine_gradients(ops.unstack(losses), G)
        return coefficients, ops.zeros([4]) if shared is None else shared

    step = compiled(one_step, method, jit_compile=jit)  # (JAX: jax.jit either way)
    first, _ = step(losses, G)
    assert np.isfinite(numpy(first)).all()
    step(losses * 0.5, G)  # a second call runs the same trace
    assert step.experimental_get_tracing_count() == 1


def test_pcgrad_object_returns_the_surgery_and_unit_coefficients():
    method = weighting.get("pcgrad", ["a", "b"], seed=0)
    G = np.array([[1.0, 0.0], [-1.0, 1.0]], dtype="float32")
    coefficients, shared = method.combine_gradients(scalars(1.0, 1.0), G)
    assert numpy(coefficients).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(shared, numpy_pcgrad(G.astype(float), [[1], [0]]), rtol=1e-6)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_object_normalises_then_solves(normalization):
    method = weighting.get("mgda", ["a", "b"], normalization=normalization)
    assert method.needs == "representation"
    G, losses = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([4.0, 0.5])
    scale = {"none": [1, 1], "l2": [2, 1], "loss": losses, "loss+": losses * [2, 1]}
    expected = numpy(mgda_weights(G / np.asarray(scale[normalization], float)[:, None]))
    coefficients, shared = method.combine_gradients(ops.convert_to_tensor(losses, "float32"), G)
    assert shared is None
    np.testing.assert_allclose(coefficients, expected, rtol=1e-6)
    assert weighting.get("mgda", TASKS, upper_bound=False).needs == "shared_variables"


def task_gradient_rows(losses, variables) -> tuple:
    """``(G, rows)`` for the task losses ``losses(values)`` of the ``variables``: ``rows[j][k]``
    is loss j's gradient w.r.t. variable k, ``G`` the (K, D) matrix the loop builds. On
    TensorFlow, :func:`backend.task_gradient_matrix` from a persistent tape (as the TensorFlow
    loop does); on JAX, which has no tape and builds G inside its step, the rows of
    :func:`mtlkit.backend.task_gradients`, flattened and joined in the same layout."""
    if JAX:
        _, rows = backend.task_gradients(losses, [v.value for v in variables])
        flat = [ops.concatenate([ops.reshape(g, (-1,)) for g in row], axis=0) for row in rows]
        return ops.stack(flat), rows
    with tf.GradientTape(persistent=True) as tape:  # the Keras variables themselves, as
        out = losses(variables)  # the loop passes them (one a task does not reach included)
    rows = [[tape.gradient(loss, v) for v in variables] for loss in out]
    return backend.task_gradient_matrix(tape, out, variables), rows


def test_gradient_helpers_round_trip():
    variables = [keras.Variable(np.zeros(shape, "float32")) for shape in ((2, 3), (3,), (4,))]
    x = ops.convert_to_tensor([[1.0, 2.0]])

    def losses(values):  # neither reaches variables[2]
        h = ops.matmul(x, values[0]) + values[1] + 1.0
        return [ops.sum(h**2), ops.sum(h)]

    G, rows = task_gradient_rows(losses, variables)
    assert G.shape == (2, 6 + 3 + 4)
    np.testing.assert_array_equal(numpy(G[:, -4:]), np.zeros((2, 4)))
    parts = cores.split_gradient(G[1], variables)
    np.testing.assert_array_equal(numpy(parts[0]), numpy(rows[1][0]))
    assert cores.last_shared_kernel(variables) == [variables[0]]
    history = {"a_loss": [1.0, 0.5], "b_loss": [2.0, 1.5], "loss": [3.0, 2.0]}
    np.testing.assert_array_equal(cores.epoch_losses(history, ["a", "b"]), [[1.0, 2.0], [0.5, 1.5]])
    assert cores.epoch_losses({}, ["a", "b"]).shape == (0, 2)


def test_kinds_and_needs():
    kinds = {name: cls.kind for name, cls in METHODS.items()}
    assert kinds == {
        "ew": "loss",
        "uw": "loss",
        "dwa": "loss",
        "rlw": "loss",
        "pcgrad": "gradient",
        "mgda": "gradient",
        "gradnorm": "gradient",
        "famo": "loss",
        "imtl_g": "gradient",
        "cagrad": "gradient",
        "nash_mtl": "gradient",
        "aligned_mtl": "gradient",
    }
    assert weighting.get("gradnorm", TASKS).needs == "last_shared_layer"
    for name in ("imtl_g", "cagrad", "nash_mtl", "aligned_mtl"):
        assert weighting.get(name, TASKS).needs == "shared_variables"
    with pytest.raises(TypeError, match="combine_gradients"):
        weighting.get("pcgrad", TASKS).combine([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="combine\\(task_losses\\)"):
        weighting.get("ew", TASKS).combine_gradients([1.0, 2.0, 3.0], np.eye(3))


# ------------------------------------------------------------------------------ bad input
def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown weighting method 'nash'") as info:
        weighting.get("nash", TASKS)
    for name in METHODS:
        assert repr(name) in str(info.value)


def test_get_accepts_an_object_for_the_same_tasks_only():
    method = weighting.get("ew", TASKS)
    assert weighting.get(method, TASKS) is method
    with pytest.raises(ValueError, match="built for tasks"):
        weighting.get(method, ["a", "b"])


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "gradnorm"])
def test_gradient_method_without_shared_variables(name):
    method = weighting.get(name, TASKS)
    with pytest.raises(ValueError, match="reached by two or more tasks"):
        method.check_sources([], "model 'independent'")
    method.check_sources([keras.Variable(1.0)])  # something shared: fine
    weighting.get("uw", TASKS).check_sources([])  # a loss method needs nothing shared


def test_other_bad_input():
    with pytest.raises(ValueError, match="G must be a \\(tasks, parameters\\) matrix"):
        mgda_weights(np.ones(3))
    with pytest.raises(ValueError, match="loss_history must be an \\(epochs, tasks\\)"):
        dwa_weights([])
    with pytest.raises(ValueError, match="finite, positive"):
        dwa_weights([[1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="3 task losses for tasks"):
        weighting.get("ew", ["a", "b"]).combine([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="distinct"):
        weighting.get("ew", ["a", "a"])
    with pytest.raises(ValueError, match="normalization"):
        weighting.get("mgda", TASKS, normalization="max")
    state = weighting.get("uw", TASKS).get_state()
    with pytest.raises(ValueError, match="build the same method"):
        weighting.get("uw", ["a", "b"]).set_state(state)


# ------------------------------------------------- the loop contract, on a tiny shared model
def tiny_model():
    x = keras.Input((4,))
    z = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    outputs = {t: keras.layers.Dense(1, name=t)(z) for t in TASKS}
    return keras.Model(x, [z, outputs])


def tensorflow_step(net, method, optimizer, shared):
    """The step of the module docstring, written out with a persistent ``tf.GradientTape``:
    ``step(x, y)`` updates the model and returns the sum of the task losses before it."""

    @tf.function
    def step(x, y):
        variables = net.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            z, out = net(x)
            losses = [tf.reduce_mean((y[t] - out[t]) ** 2) for t in TASKS]
            if method.kind == "loss":
                total = method.combine(losses)
        if method.kind == "loss":
            variables = variables + method.variables
            grads = tape.gradient(total, variables)
        else:
            sources = {
                "representation": [z],
                "shared_variables": shared,
                "last_shared_layer": cores.last_shared_kernel(shared),
            }[method.needs]
            c, shared_grad = method.combine_gradients(
                losses, backend.task_gradient_matrix(tape, losses, sources)
            )
            grads = tape.gradient(losses, variables, output_gradients=tf.unstack(c))
            if shared_grad is not None:
                replaced = dict(zip(map(id, shared), cores.split_gradient(shared_grad, shared)))
                grads = [replaced.get(id(v), g) for v, g in zip(variables, grads)]
        optimizer.apply_gradients(zip(grads, variables))
        return tf.add_n(losses)

    return step


def jax_step(net, method, optimizer, shared):
    """The same step on JAX, which has no tape: the per-task gradients and the update come
    from the kit's JAX steps (:class:`mtlkit.backend.JaxStep` for a loss method,
    :class:`mtlkit.backend.JaxGradientStep` for a gradient method), the loop's own
    equivalent of the documented step. ``step(x, y)`` returns the same sum."""
    trainable = net.trainable_variables + method.variables
    state = [*net.non_trainable_variables, *method.state_variables.values()]
    heads = {t: net.get_layer(t) for t in TASKS}

    def task_losses(y, out):
        return [ops.mean((y[t] - out[t]) ** 2) for t in TASKS]

    if method.kind == "loss":

        def compute(x, y):
            losses = task_losses(y, net(x)[1])
            return method.combine(losses), ops.sum(ops.stack(losses))

        return backend.JaxStep(compute, trainable, state, optimizer)

    def vector(x, y, z=None):  # the K losses and a regularisation penalty of 0
        losses = task_losses(y, net(x)[1] if z is None else {t: heads[t](z) for t in TASKS})
        return ops.stack([*losses, ops.zeros(())]), ops.sum(ops.stack(losses))

    def finish(losses, G, total):
        c, shared_grad = method.combine_gradients([losses[j] for j in range(len(TASKS))], G)
        return c, shared_grad, total

    if method.needs == "representation":
        trunk = net.get_layer("trunk")
        return backend.JaxGradientStep(vector, finish, trainable, state, optimizer, trunk=trunk)
    chosen = shared if method.needs == "shared_variables" else cores.last_shared_kernel(shared)
    where = {id(v): i for i, v in enumerate(trainable)}
    sources = [where[id(v)] for v in chosen]
    return backend.JaxGradientStep(vector, finish, trainable, state, optimizer, sources=sources)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_documented_loop_step_trains(name):
    """The training step the module docstring describes, written out (TensorFlow; on JAX the
    kit's JAX steps, see :func:`jax_step`): every method learns."""
    keras.utils.set_random_seed(0)
    net, method = tiny_model(), weighting.get(name, TASKS)
    shared = net.get_layer("trunk").trainable_variables
    optimizer = keras.optimizers.Adam(0.02)
    optimizer.build(net.trainable_variables + method.variables)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = {
        t: x @ np.random.default_rng(i + 1).normal(size=(4, 1)).astype("float32")
        for i, t in enumerate(TASKS)
    }
    step = (jax_step if JAX else tensorflow_step)(net, method, optimizer, shared)
    method.on_epoch_start(0, np.zeros((0, 3)))
    first = float(step(x, y))
    for _ in range(150):
        last = float(step(x, y))
    assert last < 0.3 * first
    assert all(np.isfinite(v) for v in method.weights_for_logging().values())


# ---------------------------------------------- tasks without labels in a batch (inactive)
@pytest.mark.parametrize("K, seed", [(2, 0), (3, 1), (4, 2)])
def test_mgda_solves_over_the_active_tasks_only(K, seed):
    """An unlabelled task's gradient row is 0; left in, the min-norm point is that zero
    vector (alpha all on it: a zero step). Left out, alpha is the labelled tasks' solution."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(K, 6))
    G[1] = 0.0  # task 1 had no label in this batch
    active = np.arange(K) != 1
    alpha = numpy(mgda_weights(G, active=active))
    assert alpha[1] == 0.0
    np.testing.assert_allclose(alpha[active], numpy(mgda_weights(G[active])), atol=1e-8)
    method = weighting.get("mgda", [f"t{i}" for i in range(K)])
    losses = [ops.convert_to_tensor(0.0 if i == 1 else 1.0) for i in range(K)]
    counts = np.where(active, 5.0, 0.0)  # counts of labelled examples do as well as booleans
    coefficients, _ = method.combine_gradients(losses, G, counts)
    np.testing.assert_allclose(coefficients, alpha, atol=1e-6)
    assert not numpy(mgda_weights(G, active=np.zeros(K, bool))).any()  # none: no step


def test_pcgrad_with_a_zero_row_is_pcgrad_of_the_others():
    """Today's behaviour, kept: a zero row neither is projected against nor changes others."""
    G = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.5]])
    expected = numpy_pcgrad(G[[0, 2]], [[1], [0]])
    for active in (None, [True, False, True]):
        method = weighting.get("pcgrad", TASKS, seed=0)
        coefficients, shared = method.combine_gradients([1.0, 0.0, 1.0], G, active)
        np.testing.assert_allclose(numpy(shared), expected, rtol=EXACT)
    assert numpy(coefficients).tolist() == [1.0, 0.0, 1.0]  # the unlabelled task: weight 0


def test_gradnorm_starts_a_task_at_its_first_positive_loss():
    """A task with no label in the first batch (loss 0, gradient 0) is left out until it has
    a loss: L_j(0) is its loss then, and no weight ever becomes NaN."""
    method = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.SGD(0.1))
    first = np.array([[0.0, 0.0], [0.0, 1.0]])  # 'a': no labels, so loss 0 and zero gradient
    coefficients, _ = method.combine_gradients(scalars(0.0, 0.7), first)
    assert np.isfinite(numpy(coefficients)).all() and numpy(coefficients)[1] == 1.0
    np.testing.assert_allclose(numpy(method.logged), [1.0, 1.0])  # one task: nothing to balance
    np.testing.assert_allclose(numpy(method.initial), [0.0, 0.7], rtol=1e-6)
    # 'a' labelled but flagged inactive: still not started
    method.combine_gradients(scalars(0.9, 0.7), first, [False, True])
    np.testing.assert_allclose(numpy(method.initial), [0.0, 0.7], rtol=1e-6)
    G = np.array([[3.0, 0.0], [0.0, 1.0]])
    method.combine_gradients(scalars(0.5, 0.35), G)
    np.testing.assert_allclose(numpy(method.initial), [0.5, 0.7], rtol=1e-6)
    # Ltilde = (1, 0.5), r = (4/3, 2/3), G = (3, 1), target = 2 r^1.5
    targets = 2.0 * np.array([4 / 3, 2 / 3]) ** 1.5
    stepped = 1.0 - 0.1 * np.sign([3.0, 1.0] - targets) * [3.0, 1.0]
    np.testing.assert_allclose(numpy(method.logged), 2 * stepped / stepped.sum(), rtol=1e-6)


def test_gradnorm_weights_stay_positive_after_a_large_step():
    method = weighting.get("gradnorm", TASKS, optimizer=keras.optimizers.SGD(0.1))
    G = np.diag([10.0, 11.3, 0.1])  # w -= 0.1 n sign(...): [0, -0.13, 1.01] before the floor
    method.combine_gradients([1.0, 1.0, 1.0], G)
    weights = numpy(method.logged)
    assert (weights > 0).all() and weights.sum() == pytest.approx(3.0, rel=1e-6)
    assert weights[2] > 2.9  # the task with the small gradient got nearly all the weight
    method.combine_gradients([0.5, 0.5, 0.5], G)
    assert (numpy(method.logged) > 0).all()


def test_gradnorm_leaves_an_inactive_task_weight_as_it_was():
    method = weighting.get("gradnorm", TASKS, optimizer=keras.optimizers.Adam(0.1))
    G = np.diag([3.0, 1.0, 2.0])
    method.combine_gradients([1.0, 1.0, 1.0], G)  # Adam now has momentum for every weight
    before = numpy(method.logged)
    G[1] = 0.0
    coefficients, _ = method.combine_gradients([0.8, 0.0, 0.9], G, [True, False, True])
    after = numpy(method.logged)
    assert numpy(coefficients)[1] == 0.0 and after[1] == before[1]
    assert after.sum() == pytest.approx(3.0, rel=1e-6) and after[0] != before[0]


# ------------------------------------------------------------------- non-finite input
NAN_CASES = {
    "mgda_weights 2": lambda: mgda_weights(np.array([[1.0, 0.0], [np.nan, 1.0]])),
    "mgda_weights 3": lambda: mgda_weights(np.array([[1.0, 0.0], [0.0, 1.0], [np.inf, 1.0]])),
    "pcgrad": lambda: pcgrad(np.array([[1.0, 0.0], [np.nan, 1.0]]), generator(0)),
    "gradnorm_loss": lambda: gradnorm_loss([1.0, 1.0], [1.0, np.nan], [1.0, 1.0], [1.0, 1.0]),
}


@pytest.mark.parametrize("case", sorted(NAN_CASES))
def test_pure_cores_refuse_non_finite_input(case):
    with pytest.raises(ValueError, match="NaN or infinite"):
        NAN_CASES[case]()


@pytest.mark.parametrize("name, options, losses, row", [
    ("mgda", {"normalization": "loss+"}, [1.0, np.nan, 1.0], [1.0, 1.0]),
    ("mgda", {}, [1.0, 1.0, 1.0], [np.nan, 1.0]),
    ("gradnorm", {}, [1.0, 1.0, 1.0], [np.nan, 1.0]),
    ("gradnorm", {}, [1.0, np.inf, 1.0], [1.0, 1.0]),
    ("pcgrad", {"seed": 0}, [1.0, 1.0, 1.0], [np.nan, 1.0]),
])  # fmt: skip
def test_methods_refuse_non_finite_input_naming_the_task(name, options, losses, row):
    """Eagerly: a ValueError naming task 'b'. Compiled (a Python raise is impossible there):
    a NaN result, which the loop's check then reports with the task's name."""
    G = np.array([[1.0, 0.5], row, [0.2, 1.0]], dtype="float32")
    method = weighting.get(name, TASKS, **options)
    with pytest.raises(ValueError, match=r"\['b'\].*NaN or infinite"):
        method.combine_gradients([ops.convert_to_tensor(v, "float32") for v in losses], G)
    method = weighting.get(name, TASKS, **options)
    step = compiled(lambda L, G: method.combine_gradients(ops.unstack(L), G), method)
    coefficients, shared = step(ops.convert_to_tensor(losses, "float32"), ops.convert_to_tensor(G))
    result = coefficients if shared is None else shared
    assert np.isnan(numpy(result)).any()


def test_dwa_refuses_a_nan_temperature():
    with pytest.raises(ValueError, match="temperature"):
        weighting.get("dwa", TASKS, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        dwa_weights([[1.0, 1.0], [0.5, 0.5]], temperature=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        weighting.get("gradnorm", TASKS, alpha=float("nan"))


# ------------------------------------------------------------- reviewed defects (UW, GradNorm)
def test_uw_leaves_an_inactive_task_out_and_keeps_the_all_active_numbers():
    """An inactive task drops both terms (its s_j gets no gradient); with every task active
    the total and gradients are the plain formula's, bit for bit."""
    method = weighting.get("uw", ["a", "b"])
    method.log_vars.assign(np.array([0.3, -0.2], "float32"))
    plain = variable_gradients(lambda: method.combine(scalars(0.7, 0.4)), method.variables)
    every = variable_gradients(
        lambda: method.combine(scalars(0.7, 0.4), np.array([True, True])), method.variables
    )
    assert float(plain[0]) == float(every[0])
    np.testing.assert_array_equal(numpy(plain[1][0]), numpy(every[1][0]))
    total, grads = variable_gradients(
        lambda: method.combine(scalars(0.7, 0.0), np.array([3, 0])), method.variables
    )
    assert float(total) == pytest.approx(math.exp(-0.3) * 0.7 + 0.3, rel=1e-6)
    assert numpy(grads[0])[1] == 0.0 and numpy(grads[0])[0] != 0.0


def test_gradnorm_takes_an_optimizer_by_name_and_states_it_in_its_options():
    by_name = weighting.get("gradnorm", ["a", "b"], optimizer="adam")
    assert isinstance(by_name.optimizer, keras.optimizers.Adam)
    assert by_name.options() == weighting.get("gradnorm", ["a", "b"]).options()
    other = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.Adam(0.05))
    sgd = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.SGD(0.5))
    assert len({repr(m.options()) for m in (by_name, other, sgd)}) == 3


def test_gradnorm_state_of_another_optimizer_starts_the_moments_afresh_keeping_the_rate():
    """restart() passes a default GradNorm's state: no KeyError, the user's rate stays."""
    adam = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.Adam(0.05))
    adam.combine_gradients([1.0, 0.5], np.diag([3.0, 1.0]))  # moments and step count move
    sgd = weighting.get("gradnorm", ["a", "b"], optimizer=keras.optimizers.SGD(0.5))
    sgd.set_state(weighting.get("gradnorm", ["a", "b"]).get_state())
    assert float(sgd.optimizer.learning_rate) == 0.5
    adam.set_state(json.loads(json.dumps(weighting.get("gradnorm", ["a", "b"]).get_state())))
    assert float(adam.optimizer.learning_rate) == pytest.approx(0.05)
    assert int(numpy(adam.optimizer.iterations)) == 0
    np.testing.assert_array_equal(numpy(adam.logged), [1.0, 1.0])


def test_famo_per_task_min_losses_are_among_the_options():
    low = weighting.get("famo", ["a", "b"], min_losses=(0.0, 0.0))
    high = weighting.get("famo", ["a", "b"], min_losses=(0.5, 0.2))
    assert low.options()["min_losses"] == (0.0, 0.0) and low.options() != high.options()
    assert "variables" not in weighting.get("ew", ["a", "b"]).options()
