"""The five recent methods (FAMO, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL) against NumPy
transliterations of their authors' public code, then partial labels, the loop, exact resume
and bad input.

The references below are written from the authors' files (named in each docstring) with
NumPy and scipy in place of PyTorch and cvxpy; they are test code, not part of the kit.

The file runs on both Keras backends. TensorFlow solves the K x K problems in float64, as
the references do; JAX (without ``jax_enable_x64``) converts the float64 test matrices to
float32 and solves in float32, so there the comparisons with a reference use wider
tolerances, chosen by :func:`tolerances` from the largest relative difference measured on
JAX (in a comment beside each)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _neutral_weighting import compiled, gradient, numpy
from keras import ops
from scipy.optimize import minimize

from mtlkit.methods import weighting
from mtlkit.methods.cores import (
    aligned_mtl_weights,
    cagrad_objective,
    cagrad_weights,
    famo_total,
    imtl_g_weights,
    nash_mtl_weights,
)
from mtlkit.training import set_seed, train

JAX = keras.backend.backend() == "jax"
"""JAX solves the K x K problems in float32 here; TensorFlow in float64."""

RECENT = ("famo", "imtl_g", "cagrad", "nash_mtl", "aligned_mtl")
GRADIENT_CORES = {
    "imtl_g": imtl_g_weights,
    "cagrad": cagrad_weights,
    "nash_mtl": nash_mtl_weights,
    "aligned_mtl": aligned_mtl_weights,
}
KINDS = ("random", "conflicting", "near_parallel", "rank_deficient")


def gradients(K: int, kind: str, seed: int, D: int = 12) -> np.ndarray:
    """A (K, D) float64 task-gradient matrix of the given kind, from a fixed seed."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.2, 3.0, (K, 1))
    if kind == "random":
        return rng.normal(size=(K, D)) * scales
    if kind == "conflicting":  # task 1 nearly opposes task 0
        G = rng.normal(size=(K, D)) * scales
        G[1] = -0.9 * G[0] + 0.2 * rng.normal(size=D)
        return G
    if kind == "near_parallel":
        return (rng.normal(size=D) + 0.05 * rng.normal(size=(K, D))) * scales
    # rank 1 (K = 2) or 2: all in a plane, on one side of it (so Nash-MTL has a solution)
    rank = 1 if K == 2 else 2
    coefficients = rng.normal(size=(K, rank))
    coefficients[:, 0] = np.abs(coefficients[:, 0]) + 1.0
    return coefficients @ rng.normal(size=(rank, D))


CASES = [(K, kind, seed) for K in (2, 3, 5) for kind in KINDS for seed in (0, 1)]


def assert_close(kit, reference, rtol, atol, what):
    """The one comparison every reference test uses (and the test below makes it fail)."""
    kit, reference = np.asarray(kit, float), np.asarray(reference, float)
    assert kit.shape == reference.shape, f"{what}: shape {kit.shape} != {reference.shape}"
    assert np.isfinite(kit).all(), f"{what}: not finite: {kit}"
    np.testing.assert_allclose(kit, reference, rtol=rtol, atol=atol, err_msg=what)


def tolerances(tensorflow: tuple, jax: float, reference) -> tuple:
    """The ``(rtol, atol)`` of a comparison with a float64 reference: ``tensorflow`` as given
    on TensorFlow; on JAX, ``jax`` both per entry and times the reference's largest entry
    (float32 rounding is relative to the size of the numbers in play)."""
    if not JAX:
        return tensorflow
    return jax, jax * float(np.abs(np.asarray(reference, float)).max())


def test_the_comparison_rejects_a_wrong_core():
    """A perturbed output (one entry off by 1e-3, or two entries swapped) fails the same
    assertion helper and tolerances the tests use: the comparisons can fail."""
    G = gradients(3, "random", 0)
    good, reference = numpy(imtl_g_weights(G)), reference_imtl_g(G)
    tol = tolerances((1e-7, 1e-9), IMTL_G_JAX["random"], reference)
    assert_close(good, reference, *tol, "IMTL-G")
    with pytest.raises(AssertionError):
        assert_close(good + [1e-3, 0, 0], reference, *tol, "IMTL-G")
    with pytest.raises(AssertionError):
        assert_close(good[[1, 0, 2]], reference, *tol, "IMTL-G")
    wrong_aligned = numpy(aligned_mtl_weights(G, "rmse"))  # the wrong scale: rejected
    reference = reference_aligned_mtl(G, "min")
    with pytest.raises(AssertionError):
        assert_close(wrong_aligned, reference, *tolerances((1e-7, 1e-9), ALIGNED_JAX, reference),
                     "Aligned")  # fmt: skip
    alpha = numpy(nash_mtl_weights(G))
    with pytest.raises(AssertionError):
        assert_nash_fixed_point(alpha * 1.01, G)


# ===================================================================== IMTL-G (LibMTL)
def reference_imtl_g(G):
    """LibMTL, ``LibMTL/weighting/IMTL.py`` (median-research-group/LibMTL), the gradient part
    of ``IMTL.backward`` (the authors released no code): ``D = g_1 - g_j``, ``U = u_1 - u_j``
    (unit gradients), ``alpha_{2..K} = g_1 U^T (D U^T)^-1``, ``alpha_1 = 1 - sum``."""
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    D = G[0:1] - G[1:]
    U = unit[0:1] - unit[1:]
    alpha = G[0] @ U.T @ np.linalg.inv(D @ U.T)
    return np.concatenate([[1.0 - alpha.sum()], alpha])


IMTL_G_JAX = {"random": 5e-6, "conflicting": 5e-6, "near_parallel": 1e-3, "rank_deficient": 5e-6}
"""JAX's tolerance for IMTL-G against LibMTL, by kind of matrix (float32; measured largest
difference over the largest entry: random 5.9e-7, conflicting 1.5e-6, near_parallel 3.8e-4,
an ill-conditioned system; rank-deficient matrices are not compared)."""


@pytest.mark.parametrize("K, kind, seed", CASES)
def test_imtl_g_equals_libmtl(K, kind, seed):
    G = gradients(K, kind, seed)
    alpha = numpy(imtl_g_weights(G)).astype(float)
    projections = (alpha @ G) @ (G / np.linalg.norm(G, axis=1, keepdims=True)).T
    # the defining property: the combined gradient projects equally on every task (on JAX
    # to 2e-6 of the largest gradient's norm, float32; measured 8.8e-7, rank-deficient K=3)
    spread = (1e-8, 1e-10) if not JAX else (1e-8, 2e-6 * np.linalg.norm(G, axis=1).max())
    assert_close(projections, np.full(K, projections[0]), *spread, "IMTL-G projections")
    assert alpha.sum() == pytest.approx(1.0, abs=5e-6 if JAX else 1e-10)  # JAX: 1.1e-6
    if np.linalg.matrix_rank(G) == K:  # LibMTL's inverse exists
        reference = reference_imtl_g(G)
        tol = tolerances((1e-6, 1e-9), IMTL_G_JAX[kind], reference)
        assert_close(alpha, reference, *tol, "IMTL-G vs LibMTL")


def test_imtl_g_with_parallel_gradients_is_finite_where_libmtl_is_not():
    G = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]])  # g_2 = 2 g_1: U has a zero row
    alpha = numpy(imtl_g_weights(G))
    assert np.isfinite(alpha).all() and alpha.sum() == pytest.approx(1.0)
    with pytest.raises(np.linalg.LinAlgError):
        reference_imtl_g(G)


# ============================================================= Aligned-MTL (authors)
def reference_aligned_mtl(G, scale_mode="min"):
    """SamsungLabs/MTL, ``code/optim/aligned/solver.py``, ``ProcrustesSolver.apply`` (and
    ``balancer.py``: the update is the aligned gradients' sum, ``weights.sum(-1)``):
    eigen-decomposition of ``G G^T``, rank by ``max(lambda) K eps_float32``, eigenvalues in
    descending order, ``weights = V sqrt(ref) / sqrt(lambda) V^T``."""
    M = G @ G.T
    values, vectors = np.linalg.eigh(M)
    tol = values.max() * max(M.shape) * np.finfo(np.float32).eps
    rank = int((values > tol).sum())
    order = np.argsort(values)[::-1]
    values, vectors = values[order][:rank], vectors[:, order][:, :rank]
    reference = {
        "min": values[-1],
        "median": np.sort(values)[(rank - 1) // 2],  # torch.median: the lower middle one
        "rmse": values.mean(),
    }[scale_mode]
    weights = vectors * np.sqrt(reference) / np.sqrt(values)[None, :]
    return (weights @ vectors.T).sum(-1)


ALIGNED_JAX = 1e-4
"""JAX's tolerance for Aligned-MTL against the authors (float32; measured largest difference
over the largest entry: 3.7e-5, near-parallel gradients)."""


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("K, kind, seed", CASES)
def test_aligned_mtl_equals_the_authors(K, kind, seed, scale_mode):
    G = gradients(K, kind, seed)
    kit, reference = numpy(aligned_mtl_weights(G, scale_mode)), reference_aligned_mtl(G, scale_mode)
    assert_close(kit, reference, *tolerances((1e-7, 1e-9), ALIGNED_JAX, reference), "Aligned-MTL")


# ================================================================== CAGrad (authors)
def reference_cagrad(G, alpha=0.4, rescale=1):
    """Cranial-XIX/CAGrad, ``nyuv2/utils.py``: ``cagrad`` (written for 3 tasks there; K here,
    as LibMTL's ``CAGrad.py`` does) and ``overwrite_grad`` (``newgrad * 3``: times K).
    Returns the shared update, the simplex weights and the objective's parts."""
    K = len(G)
    GG = G @ G.T
    g0_norm = np.sqrt(GG.mean() + 1e-8)
    x_start = np.ones(K) / K
    b = x_start.copy()
    c = alpha * g0_norm + 1e-8

    def objective(x):
        return x @ GG @ b + c * np.sqrt(x @ GG @ x + 1e-8)

    constraint = {"type": "eq", "fun": lambda x: 1 - sum(x)}
    w = minimize(objective, x_start, bounds=[(0, 1)] * K, constraints=constraint).x
    gw = (G * w[:, None]).sum(0)
    g = G.mean(0) + c / (np.linalg.norm(gw) + 1e-8) * gw
    g = {0: g, 1: g / (1 + alpha**2), 2: g / (1 + alpha)}[rescale]
    return g * K, w, objective, (GG, b, c)


def kit_simplex_weights(a, K, c=0.4):
    """Recover the kit's w from its coefficients ``a = K (b + lambda w) / (1 + c^2)``."""
    v = a * (1 + c**2) / K - 1.0 / K
    return v / v.sum() if v.sum() > 0 else np.full(K, 1.0 / K)


@pytest.mark.parametrize("K, kind, seed", CASES)
def test_cagrad_reaches_scipys_optimum(K, kind, seed):
    """The inner problem is solved differently (projected gradient in TF vs SLSQP): the
    kit's objective value is at most scipy's plus 1e-7 relative (often lower), and the
    updates agree to 2e-3 of their size (SLSQP's own accuracy). On JAX (float32) the
    objective is computed, and the optimum reached, to 3e-5 relative (measured: 9.0e-6
    between the kit's objective and NumPy's at one point, 1.0e-5 above scipy's optimum)."""
    G = gradients(K, kind, seed)
    a = numpy(cagrad_weights(G)).astype(float)
    update, w_scipy, objective, (A, b, cc) = reference_cagrad(G)
    w_kit = kit_simplex_weights(a, K)
    assert w_kit.min() >= -1e-12 and w_kit.sum() == pytest.approx(1.0)
    f_kit = float(cagrad_objective(w_kit[None], A, b, cc)[0])
    assert f_kit == pytest.approx(objective(w_kit), rel=3e-5 if JAX else 1e-9)  # the same
    above = 3e-5 if JAX else 1e-7
    assert f_kit <= objective(w_scipy) + above * abs(objective(w_scipy)) + 1e-12
    assert_close(a @ G, update, 2e-3, 2e-3 * np.abs(update).max(), "CAGrad update")


@pytest.mark.parametrize("rescale", [0, 2])
def test_cagrad_rescale_options(rescale):
    G = gradients(3, "conflicting", 4)
    update = reference_cagrad(G, rescale=rescale)[0]
    kit = numpy(cagrad_weights(G, rescale=rescale)) @ G
    assert_close(kit, update, 2e-3, 2e-3 * np.abs(update).max(), "CAGrad rescale")


# ================================================================ Nash-MTL (authors)
def reference_nash_mtl(G, optim_niter=20):
    """AvivNavon/nash-mtl, ``methods/weight_methods.py``, ``NashMTL.solve_optimization`` and
    ``_init_optim_problem`` on ``GTG / |GTG|_F``, from the authors' first-step start (ones).
    Each cvxpy/ECOS sub-problem is solved by scipy's SLSQP; its constraint ``-log(alpha_i
    nf) - log((G' alpha)_i) <= 0`` is written ``alpha_i nf (G' alpha)_i >= 1`` (the same set
    for alpha >= 0, and defined where SLSQP may step outside the logs' domain)."""
    K = len(G)
    GTG = G @ G.T
    nf = np.linalg.norm(GTG)
    Gn = GTG / nf
    alpha_t = np.ones(K)
    for _ in range(optim_niter):
        previous = alpha_t
        phi_tag = 1 / previous + (1 / (Gn @ previous)) @ Gn
        constraints = [
            {"type": "ineq", "fun": lambda a, i=i: a[i] * nf * (Gn @ a)[i] - 1} for i in range(K)
        ]
        solution = minimize(
            lambda a: np.sum(Gn @ a) + phi_tag @ (a - previous) / nf,
            previous,
            jac=lambda a: Gn.sum(0) + phi_tag / nf,
            method="SLSQP",
            bounds=[(0, None)] * K,
            constraints=constraints,
            options={"maxiter": 100, "ftol": 1e-12},
        ).x
        stop = np.linalg.norm(Gn @ previous - 1 / (previous + 1e-10)) < 1e-3
        if stop or np.linalg.norm(solution - previous) < 1e-6:
            break
        alpha_t = solution
    return alpha_t


def nash_residual(alpha, G):
    """max_j |alpha_j (G G^T alpha)_j - 1|: 0 at the Nash bargaining solution."""
    return np.abs(alpha * (G @ G.T @ alpha) - 1.0).max()


NASH_RESIDUAL = 1e-4 if JAX else 1e-8
"""How close the kit's alpha comes to the fixed point: 1e-8 in float64 (TensorFlow); 1e-4
in JAX's float32 (measured largest residual: 2.7e-5)."""
NASH_JAX = 2e-5
"""JAX's tolerance for Nash-MTL against the authors and without an inactive task (float32;
measured largest difference over the largest entry: 4.1e-6 and 8.6e-6)."""


def assert_nash_fixed_point(alpha, G, tolerance=NASH_RESIDUAL):
    assert np.isfinite(alpha).all() and (alpha > 0).all(), alpha
    assert nash_residual(alpha, G) < tolerance, (alpha, nash_residual(alpha, G))


def test_nash_mtl_equals_the_authors_where_their_loop_converges():
    """The kit's damped Newton reaches the fixed point G G^T alpha = 1/alpha (residual
    < 1e-8; JAX, float32: 1e-4) on every case; where the authors' loop (sub-problems by
    SLSQP) reaches it too (residual < 1e-6; it does not always, e.g. when G G^T 1 has a
    negative entry), the two alphas agree to 1e-6 (JAX: :data:`NASH_JAX`)."""
    compared = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for K, kind, seed in CASES:
            G = gradients(K, kind, seed)
            alpha = numpy(nash_mtl_weights(G)).astype(float)
            assert_nash_fixed_point(alpha, G)
            reference = reference_nash_mtl(G)
            if np.isfinite(reference).all() and nash_residual(reference, G) < 1e-6:
                tol = tolerances((1e-6, 1e-9), NASH_JAX, reference)
                assert_close(alpha, reference, *tol, f"Nash-MTL {K} {kind} {seed}")
                compared += 1
    assert compared >= len(CASES) * 2 // 3  # the comparison ran on most cases


def test_nash_mtl_object_clips_the_shared_gradient_and_reuses_alpha():
    G = gradients(3, "random", 2).astype("float32")
    losses = [ops.convert_to_tensor(1.0)] * 3
    method = weighting.get("nash_mtl", ["a", "b", "c"], update_weights_every=2)
    alpha, shared = method.combine_gradients(losses, G)
    expected = numpy(nash_mtl_weights(G))
    np.testing.assert_allclose(alpha, expected, rtol=1e-5)
    combined = expected @ G  # |.| = sqrt(K) > 1 at the fixed point: clipped to 1
    np.testing.assert_allclose(shared, combined / np.linalg.norm(combined), rtol=1e-5)
    again, _ = method.combine_gradients(losses, G * 3.0)  # step 2: alpha reused
    np.testing.assert_array_equal(again, alpha)
    third, _ = method.combine_gradients(losses, G * 3.0)  # step 3: solved again
    np.testing.assert_allclose(third, expected / 3.0, rtol=1e-5)
    unclipped = weighting.get("nash_mtl", ["a", "b", "c"], max_norm=0.0)
    np.testing.assert_allclose(unclipped.combine_gradients(losses, G)[1], combined, rtol=1e-5)


# ===================================================================== FAMO (authors)
class ReferenceFAMO:
    """Cranial-XIX/FAMO, ``famo.py`` (class FAMO: ``get_weighted_loss``, ``update``) with
    PyTorch's ``Adam(lr=w_lr, weight_decay=gamma)`` written out (L2 decay added to the
    gradient; bias-corrected moments; betas 0.9, 0.999; eps 1e-8)."""

    def __init__(self, K, w_lr=0.025, gamma=1e-3):
        self.w, self.lr, self.decay = np.zeros(K), w_lr, gamma
        self.m, self.v, self.step = np.zeros(K), np.zeros(K), 0
        self.min_losses = np.zeros(K)

    def weighted_loss(self, losses):
        """(loss, d loss / d losses) of ``get_weighted_loss``."""
        self.prev_loss = losses
        z = np.exp(self.w - self.w.max())
        z = z / z.sum()
        D = losses - self.min_losses + 1e-8
        c = (z / D).sum()
        return (np.log(D) * z / c).sum(), z / (c * D)

    def update(self, curr_loss):
        delta = np.log(self.prev_loss - self.min_losses + 1e-8) - np.log(
            curr_loss - self.min_losses + 1e-8
        )
        z = np.exp(self.w - self.w.max())
        z = z / z.sum()
        d = (np.diag(z) - np.outer(z, z)).T @ delta  # autograd.grad(softmax, w, delta)
        grad = d + self.decay * self.w
        self.step += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        denominator = np.sqrt(self.v) / np.sqrt(1 - 0.999**self.step) + 1e-8
        self.w = self.w - self.lr / (1 - 0.9**self.step) * self.m / denominator


def kit_famo_step(method, losses, active=None):
    """The kit's total and its gradient w.r.t. the losses (the weights the network gets);
    the method's state moves on as in an eager step."""
    combine = lambda L: method.combine(ops.unstack(L), active)  # noqa: E731
    total, weights = gradient(combine, np.asarray(losses, "float32"), method)
    return float(total), numpy(weights)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_famo_equals_the_authors_fed_the_next_steps_losses(K):
    """The authors update the logits with ``update(new_losses)`` after each step; the kit
    does it at the next step's ``combine`` with that step's losses. Fed the same loss
    sequence (the reference's ``new_losses`` = the kit's next losses), totals, loss
    weights and logits agree at every step."""
    rng = np.random.default_rng(K)
    decay = np.exp(-np.outer(np.arange(40), np.linspace(0.01, 0.1, K)))  # task 0: slowest
    sequence = rng.uniform(0.5, 3.0, K) * decay * rng.uniform(0.9, 1.1, (40, K))
    reference = ReferenceFAMO(K)
    method = weighting.get("famo", [f"t{i}" for i in range(K)])
    for step, losses in enumerate(sequence):
        if step > 0:
            reference.update(losses)
        want_total, want_weights = reference.weighted_loss(losses)
        total, weights = kit_famo_step(method, losses)
        assert_close(weights, want_weights, 1e-4, 1e-7, f"FAMO weights, step {step}")
        assert total == pytest.approx(want_total, rel=1e-4, abs=1e-6)
        assert_close(numpy(method.logits), reference.w, 1e-4, 1e-6, f"FAMO logits {step}")
    assert np.ptp(reference.w) > 0.05  # the logits did move apart: a real comparison
    logged = method.weights_for_logging()
    assert list(logged.values()) == pytest.approx(want_weights.tolist(), rel=1e-4)


def test_famo_leaves_an_inactive_task_out():
    method = weighting.get("famo", ["a", "b", "c"])
    kit_famo_step(method, [1.0, 2.0, 0.5])
    kit_famo_step(method, [0.8, 1.5, 0.4])  # the logits move
    logits = numpy(method.logits).copy()
    total, weights = kit_famo_step(method, [0.7, 0.0, 0.3], [True, False, True])
    assert weights[1] == 0 and np.isfinite(weights).all() and np.isfinite(total)
    assert weights.sum() == pytest.approx(1.0)
    assert numpy(method.logits)[1] == logits[1]  # not moved (no decrease measured)
    other, _ = kit_famo_step(weighting.get("famo", ["a", "b", "c"]), [0.7, 5.0, 0.3], [1, 0, 1])
    alone, _ = kit_famo_step(weighting.get("famo", ["a", "c"]), [0.7, 0.3])
    assert other == pytest.approx(alone)  # the inactive loss plays no part
    kit_famo_step(method, [0.6, 1.0, 0.3])  # b back: no decrease across its gap either
    assert numpy(method.logits)[1] == logits[1]
    kit_famo_step(method, [0.5, 0.9, 0.25])
    assert numpy(method.logits)[1] != logits[1]


# ================================================================== partial labels
@pytest.mark.parametrize("name", sorted(GRADIENT_CORES))
@pytest.mark.parametrize("kind", KINDS)
def test_an_inactive_task_is_left_out_of_the_combination(name, kind):
    """Inactive (its row zeroed, as a batch without labels gives): coefficient 0, and the
    others get what the core gives without that task; a zero row among active tasks, and
    no active task at all, give no NaN."""
    core = GRADIENT_CORES[name]
    G = gradients(4, kind, 5)
    G[2] = 0.0
    active = np.array([True, True, False, True])
    kit = numpy(core(G, active=active))
    without = numpy(core(G[active]))
    assert kit[2] == 0.0
    # JAX (float32): IMTL-G measured 3.3e-5 of the largest entry, Nash-MTL 8.6e-6, the
    # others 8.8e-7 or less
    jax = {"imtl_g": 1e-4, "nash_mtl": NASH_JAX}.get(name, 5e-6)
    tol = tolerances((1e-6, 1e-9), jax, without)
    assert_close(kit[active], without, *tol, f"{name} without the inactive task")
    assert np.isfinite(numpy(core(G))).all()  # the zero row while "active": left out too
    assert numpy(core(G, active=np.zeros(4, bool))).tolist() == [0.0] * 4
    single = np.array([False, True, False, False])
    assert np.isfinite(numpy(core(G, active=single))).all()


@pytest.mark.parametrize("name", ["imtl_g", "cagrad", "nash_mtl", "aligned_mtl"])
def test_method_objects_give_an_inactive_task_coefficient_zero(name):
    G = gradients(3, "random", 6).astype("float32")
    G[0] = 0.0
    method = weighting.get(name, ["a", "b", "c"])
    losses = [ops.convert_to_tensor(0.0), 1.0, 2.0]
    coefficients, shared = method.combine_gradients(losses, G, [0, 5, 7])
    assert numpy(coefficients)[0] == 0 and method.weights_for_logging()["a"] == 0.0
    assert np.isfinite(numpy(shared)).all() and np.isfinite(numpy(coefficients)).all()


# ===================================================================== the loop
LOSSES = {
    "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "b": keras.losses.BinaryCrossentropy(from_logits=True),
}


def build():
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(12, activation="tanh", name="trunk")(x)
    h = keras.layers.Dense(8, activation="tanh", name="trunk2")(h)
    return keras.Model(
        x, {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)}
    )


def partially_labelled(n=64):
    """Task b is unknown (-1) in the whole first batch and on every third example after."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1), "b": (x[:, 2:3] > 0).astype("float32")}
    y["b"][:16] = -1
    y["b"][16::3] = -1
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def run(name, epochs, run_dir=None):
    set_seed(0)
    model = build()
    history = train(model, partially_labelled(), epochs=epochs, losses=LOSSES, verbose=0,
                    seed=0, optimizer=keras.optimizers.Adam(1e-2), weighting=name,
                    run_dir=run_dir).history  # fmt: skip
    return model, history


@pytest.mark.parametrize("name", RECENT)
def test_trains_with_partial_labels_logs_weights_and_resumes_exactly(name, tmp_path):
    straight, history = run(name, 2)
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["b_loss"]).all()
    weights = [history[f"{t}_weight"] for t in ("a", "b")]
    assert np.isfinite(weights).all() and len(weights[0]) == 2
    assert all(np.isfinite(w).all() for w in straight.get_weights())
    run(name, 1, run_dir=tmp_path)  # "killed" after epoch 1
    resumed, resumed_history = run(name, 2, run_dir=tmp_path)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed_history == history


@pytest.mark.parametrize("name", ["famo", "imtl_g", "aligned_mtl"])
def test_one_labelled_task_gives_its_plain_step(name):
    """With task b unlabelled in the batch, FAMO, IMTL-G and Aligned-MTL put all the weight,
    1, on task a: the step is the plain SGD step of task a."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": -np.ones((16, 1), "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    set_seed(0)
    model = build()
    start = model.get_weights()
    options = dict(epochs=1, losses=LOSSES, verbose=0)
    with pytest.warns(UserWarning, match="'b' had no labelled example"):
        train(model, data, optimizer=keras.optimizers.SGD(0.5), **options)
    plain = model.get_weights()
    model.set_weights(start)
    with pytest.warns(UserWarning, match="'b' had no labelled example"):
        train(model, data, optimizer=keras.optimizers.SGD(0.5), weighting=name, **options)
    assert np.abs(model.get_weights()[0] - start[0]).max() > 1e-4
    for p, m in zip(plain, model.get_weights()):
        np.testing.assert_allclose(m, p, rtol=1e-5, atol=1e-6)


# ===================================================================== bad input
@pytest.mark.parametrize("name, options, message", [
    ("famo", {"w_lr": 0.0}, "w_lr must be a finite number above 0"),
    ("famo", {"gamma": float("nan")}, "gamma must be a finite number"),
    ("famo", {"min_losses": [0.0, np.inf, 0.0]}, "min_losses must be finite"),
    ("cagrad", {"c": -0.1}, "c must be a finite number >= 0"),
    ("cagrad", {"rescale": 3}, "rescale must be 0, 1"),
    ("cagrad", {"iterations": 0}, "iterations must be a positive whole number"),
    ("nash_mtl", {"update_weights_every": 0}, "update_weights_every must be a positive"),
    ("nash_mtl", {"max_norm": -1.0}, "max_norm must be a finite number >= 0"),
    ("nash_mtl", {"iterations": 2.5}, "iterations must be a positive whole number"),
    ("aligned_mtl", {"scale_mode": "max"}, "scale_mode='max': use one of"),
    ("imtl_g", {"c": 0.4}, "unexpected keyword argument 'c'"),
])  # fmt: skip
def test_bad_options_are_refused_clearly(name, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        weighting.get(name, ["a", "b", "c"], **options)


def test_famo_refuses_a_loss_below_min_losses_of_an_active_task_only():
    method = weighting.get("famo", ["a", "b"], min_losses=1.0)
    with pytest.raises(ValueError, match="must be above"):
        method.combine([2.0, 0.5])
    total = method.combine([2.0, 0.0], active=[True, False])  # b: no labels, loss 0
    assert np.isfinite(float(total))


@pytest.mark.parametrize("name", RECENT)
def test_non_finite_input_names_the_task_eagerly_and_gives_nan_compiled(name):
    tasks = ["a", "b", "c"]
    losses = np.array([1.0, np.nan, 0.5] if name == "famo" else [1.0, 1.0, 1.0], "float32")
    G = np.array([[1.0, 0.5], [np.nan if name != "famo" else 1.0, 1.0], [0.2, 1.0]], "float32")

    def call(method, L, G):
        if method.kind == "loss":
            return method.combine(ops.unstack(L)), None
        return method.combine_gradients(ops.unstack(L), G)

    with pytest.raises(ValueError, match=r"\['b'\].*NaN or infinite"):
        call(weighting.get(name, tasks), ops.convert_to_tensor(losses), ops.convert_to_tensor(G))
    method = weighting.get(name, tasks)
    result, shared = compiled(lambda L, G: call(method, L, G), method)(losses, G)
    assert np.isnan(numpy(result if shared is None else shared)).any()


@pytest.mark.parametrize("core", sorted(GRADIENT_CORES))
def test_pure_cores_refuse_non_finite_input(core):
    with pytest.raises(ValueError, match="NaN or infinite"):
        GRADIENT_CORES[core](np.array([[1.0, 0.0], [np.inf, 1.0]]))


def test_famo_total_by_hand():
    total, coefficients = famo_total([1.0, 4.0], [0.0, np.log(3.0)])  # z = [1/4, 3/4]
    c = 0.25 / 1.0 + 0.75 / 4.0
    assert float(total) == pytest.approx(0.75 * np.log(4.0) / c, rel=1e-5)
    np.testing.assert_allclose(coefficients, [0.25 / c, 0.75 / 4.0 / c], rtol=1e-5)


def test_nash_mtl_gives_a_task_its_solved_alpha_back_after_a_batch_without_labels():
    """update_weights_every > 1: a batch without task b's labels masks b's alpha for that
    batch only; the next batch reuses the solved alpha (saved with the state)."""
    G = gradients(2, "random", 0).astype("float32")
    losses = [ops.convert_to_tensor(1.0)] * 2
    method = weighting.get("nash_mtl", ["a", "b"], update_weights_every=3, max_norm=0.0)
    solved, _ = method.combine_gradients(losses, G, np.array([True, True]))
    masked, _ = method.combine_gradients(losses, G * [[1.0], [0.0]], np.array([True, False]))
    assert numpy(masked)[1] == 0.0 and numpy(masked)[0] == numpy(solved)[0]
    state = method.get_state()
    again, _ = method.combine_gradients(losses, G, np.array([True, True]))
    np.testing.assert_array_equal(again, solved)
    resumed = weighting.get("nash_mtl", ["a", "b"], update_weights_every=3, max_norm=0.0)
    resumed.set_state(state)
    np.testing.assert_array_equal(resumed.combine_gradients(losses, G)[0], solved)
    old = {k: v for k, v in state.items() if k != "solved"}  # saved before "solved" was kept
    resumed.set_state(old)
    np.testing.assert_array_equal(numpy(resumed.solved), numpy(masked))
