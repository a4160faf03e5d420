"""Every weighting core and method object on the Keras backend in use, compiled as the
training loop compiles its steps; ``python tests/_weighting_jax_run.py OUT.npz`` (with
``KERAS_BACKEND=jax``) writes the results to a ``.npz`` file.

:mod:`test_weighting_jax` runs this file once on JAX in a subprocess, and calls
:func:`collect` of the same module in its own (TensorFlow) process, so both backends make
the very same calls:

* on TensorFlow each call runs in a ``tf.function``; on JAX in ``jax.jit``, a method
  object's variables read and assigned under a ``keras.StatelessScope`` and written back
  after each call (as ``mtlkit.backend.JaxStep`` does in the loop);
* the cores run on four kinds of task-gradient matrices (``KINDS``), the method objects for
  three steps each, RLW and PCGrad with a seed (twice, and again after ``reseed``);
* on JAX, after that float32 pass, ``jax_enable_x64`` is turned on and the cores that solve
  K x K problems run again (keys ``x64/...``): JAX then computes them in float64, as
  TensorFlow always does.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import keras
import numpy as np
from _on_backend import message_of
from keras import ops

from mtlkit.methods import cores
from mtlkit.methods import weighting as w

KINDS = ("conflicting", "near_parallel", "rank_deficient", "inactive")
TASKS = ("a", "b", "c")
SOLVERS = ("imtl_g", "cagrad", "nash_mtl", "aligned_min", "aligned_median", "aligned_rmse")
"""The cores that solve their K x K problem in float64 where the backend offers it."""
SEEDED = ("rlw", "pcgrad")
SHAPES = ((2, 3), (4,), (1, 2, 2))  # split_gradient's variables: 6 + 4 + 4 = 14 entries
STEPS = 3


# ---------------------------------------------------------------------------- the inputs
def matrix(kind: str, K: int = 4, D: int = 14, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 (K, D) task-gradient matrix of the given kind and its ``active`` mask.

    Its entries are multiples of 1/64 below 8 in size, so ``G G^T`` is exact in float32:
    both backends start their K x K problems from the same Gram matrix (with general
    float32 entries, their matrix products round differently, and an ill-conditioned
    problem -- the rank-deficient one -- turns that last bit into visible differences)."""
    rng = np.random.default_rng(seed)
    dyadic = lambda x: np.round(np.clip(x, -7.9, 7.9) * 64) / 64  # noqa: E731
    scales = rng.uniform(0.3, 2.0, (K, 1))
    active = np.ones(K, bool)
    if kind == "conflicting":  # task 1 nearly opposes task 0
        G = dyadic(rng.normal(size=(K, D)) * scales)
        G[1] = dyadic(-0.9 * G[0] + 0.2 * rng.normal(size=D))
    elif kind == "near_parallel":
        G = dyadic((rng.normal(size=D) + 0.05 * rng.normal(size=(K, D))) * scales)
    elif kind == "rank_deficient":  # rank 2 exactly, all on one side of the plane
        mix = np.round(rng.normal(size=(K, 2)) * 2) / 2
        mix[:, 0] = np.abs(mix[:, 0]) + 1.0
        G = mix @ (np.round(rng.normal(size=(2, D)) * 4) / 4)
    else:  # "inactive": task 2 has no labels in this batch
        G = dyadic(rng.normal(size=(K, D)) * scales)
        G[2], active[2] = 0.0, False
    return G.astype("float32"), active


def core_inputs(kind: str) -> dict:
    """Every input the cores take, for one kind of matrix (all float32 or int32)."""
    G, active = matrix(kind)
    K = len(G)
    rng = np.random.default_rng(KINDS.index(kind) + 10)
    f32 = lambda x: np.asarray(x, "float32")  # noqa: E731
    losses = f32(np.where(active, rng.uniform(0.3, 2.0, K), 0.0))
    others = [[j for j in range(K) if j != i] for i in range(K)]
    return {
        "G": G,
        "active": active,
        "losses": losses,
        "previous": f32(rng.uniform(0.5, 2.5, K)),
        "logits": f32(rng.normal(size=K)),
        "weights": f32(np.r_[0.0, rng.uniform(0.2, 2.0, K - 1)]),  # one weight 0: sign 0
        "norms": f32(np.linalg.norm(G, axis=1)),
        "initial": f32(rng.uniform(0.5, 2.0, K)),
        "orders": np.array([rng.permutation(o) for o in others], "int32"),
        "rows": f32(rng.dirichlet(np.ones(K), size=5)),  # points of the simplex
        "gram": f32(G @ G.T),
        "vector": f32(rng.normal(size=sum(int(np.prod(s)) for s in SHAPES))),
        "adam": f32(rng.normal(size=(4, K)) ** 2),  # params, grad, m, v (t: below)
    }


def core_calls() -> dict:
    """name -> (function of arrays, the names of its inputs in :func:`core_inputs`)."""
    shapes = [SimpleNamespace(shape=s) for s in SHAPES]
    calls = {
        "project_conflicts": (cores.project_conflicts, ("G", "orders", "active")),
        "mgda_weights": (lambda G, a: cores.mgda_weights(G, active=a), ("G", "active")),
        "uncertainty_total": (cores.uncertainty_total, ("losses", "logits")),
        "gradnorm_loss": (cores.gradnorm_loss, ("weights", "norms", "losses", "initial")),
        "gradnorm_gradient": (cores.gradnorm_gradient, ("weights", "norms", "losses", "initial")),
        "famo_total": (
            lambda L, z, a: cores.famo_total(L, z, 0.0, a),
            ("losses", "logits", "active"),
        ),
        "famo_logit_gradient": (_famo_logit_gradient, ("logits", "previous", "losses", "active")),
        "adam_l2_step": (_adam_l2_step, ("adam", "active")),
        "imtl_g": (lambda G, a: cores.imtl_g_weights(G, a), ("G", "active")),
        "cagrad": (lambda G, a: cores.cagrad_weights(G, active=a), ("G", "active")),
        "cagrad_objective": (_cagrad_objective, ("rows", "gram", "logits")),
        "nash_mtl": (lambda G, a: cores.nash_mtl_weights(G, active=a), ("G", "active")),
        "split_gradient": (lambda v: cores.split_gradient(v, shapes), ("vector",)),
    }
    for mode in cores.ALIGNED_SCALES:
        calls[f"aligned_{mode}"] = (_aligned(mode), ("G", "active"))
    return calls


def _famo_logit_gradient(logits, previous, losses, active):
    return cores.famo_logit_gradient(logits, previous, losses, 0.0, active)


def _adam_l2_step(adam, active):
    params, grad, m, v = ops.unstack(adam)
    return cores.adam_l2_step(params, grad, m, v, 2.0, 0.025, 1e-3, active)


def _cagrad_objective(rows, gram, logits):
    return cores.cagrad_objective(rows, gram, rows[0], logits[0] ** 2)


def _aligned(mode: str):
    return lambda G, active: cores.aligned_mtl_weights(G, mode, active)


def step_inputs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(losses, G, active) of each step the method objects take (three tasks)."""
    steps = []
    for i, kind in enumerate(("near_parallel", "inactive", "conflicting")):
        G, active = matrix(kind, K=3, D=8, seed=20 + i)
        losses = np.where(active, np.random.default_rng(i).uniform(0.3, 2.0, 3), 0.0)
        steps.append((losses.astype("float32"), G, active))
    return steps


# ---------------------------------------------------------------- compiling, as the loop
def compiled(function):
    """``function`` compiled as the loop compiles a step on this backend."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function, autograph=False)


def stateful(method, function):
    """``function`` compiled with the method's variables (``variables`` and
    ``state_variables``) as state: on JAX their values go into ``jax.jit`` and come back
    from a ``keras.StatelessScope``."""
    if keras.backend.backend() != "jax":
        return compiled(function)
    import jax

    variables = list({id(v): v for v in [*method.variables, *method.state_variables.values()]}
                     .values())  # fmt: skip

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            out = function(*args)
        return out, [scope.get_current_value(v) for v in variables]

    jitted = jax.jit(pure)

    def call(*args):
        out, values = jitted([v.value for v in variables], *args)
        for variable, value in zip(variables, values):
            variable.assign(value)
        return out

    return call


def as_arrays(prefix: str, result) -> dict:
    """A result (a tensor, or a tuple or list of them) as flat NumPy arrays."""
    if isinstance(result, (tuple, list)):
        parts = [as_arrays(f"{prefix}/{i}", r) for i, r in enumerate(result)]
        return {k: v for part in parts for k, v in part.items()}
    return {prefix: np.asarray(ops.convert_to_numpy(result))}


# -------------------------------------------------------------------------- the results
def core_results(prefix: str = "core", only=None) -> dict:
    out = {}
    for name, (function, names) in core_calls().items():
        if only is not None and name not in only:
            continue
        run = compiled(function)
        for kind in KINDS:
            inputs = core_inputs(kind)
            out.update(as_arrays(f"{prefix}/{name}/{kind}", run(*[inputs[n] for n in names])))
    return out


def method(name: str) -> w.Weighting:
    """A method object on ``TASKS``, with some state to start from."""
    found = w.get(name, TASKS, **({"seed": 5} if name in SEEDED else {}))
    if name == "dwa":
        found.on_epoch_start(2, [[1.0, 2.0, 3.0], [0.5, 1.9, 2.0]])
    if name == "uw":
        found.log_vars.assign(np.array([0.1, -0.2, 0.3], "float32"))
    return found


def drive(found: w.Weighting, steps) -> list:
    """The method's outputs, weights and (PCGrad) the orders it drew, at every step."""

    def step(losses, G, active):
        task_losses = ops.unstack(losses)
        if found.kind == "loss":
            if found.wants_active:
                return found.combine(task_losses, active), ops.zeros((G.shape[1],))
            return found.combine(task_losses), ops.zeros((G.shape[1],))
        coefficients, shared = found.combine_gradients(task_losses, G, active)
        return coefficients, ops.zeros((G.shape[1],)) if shared is None else shared

    run, records = stateful(found, step), []
    for losses, G, active in steps:
        record = {}
        if found.name == "pcgrad":  # what it will draw: a twin in its generator's state
            twin = keras.random.SeedGenerator(0)
            twin.state.assign(found.generator.state.value)
            record["orders"] = np.asarray(cores.pcgrad_orders(len(TASKS), twin))
        result, shared = run(losses, G, active)
        record.update(result=np.asarray(result), shared=np.asarray(shared))
        record["logged"] = np.array(list(found.weights_for_logging().values()))
        records.append(record)
    return records


def methods() -> dict:
    out = {}
    for name in sorted(w.METHODS):
        for i, record in enumerate(drive(method(name), step_inputs())):
            out.update({f"method/{name}/{i}/{k}": v for k, v in record.items()})
    return out


def random_draws() -> dict:
    """RLW and PCGrad seeded twice alike, and one of them again after ``reseed``; the
    cores' draws from two generators with one seed, and from one generator twice."""
    out, steps = {}, step_inputs()[:2]
    for name in SEEDED:
        key = "shared" if name == "pcgrad" else "logged"
        first, second = method(name), method(name)
        runs = {"first": drive(first, steps), "second": drive(second, steps)}
        first.reseed(5)
        runs["reseeded"] = drive(first, steps)
        for label, records in runs.items():
            out.update({f"random/{name}/{label}/{i}": r[key] for i, r in enumerate(records)})
    for core in ("rlw_weights", "pcgrad_orders"):
        for label in ("one", "two"):
            generator = keras.random.SeedGenerator(7)
            holder = SimpleNamespace(variables=[], state_variables={"rng": generator.state})
            draw = stateful(holder, lambda g=generator, f=getattr(cores, core): f(len(TASKS), g))
            for call in range(2):  # the second call draws anew
                out[f"random/{core}/{label}/{call}"] = np.asarray(draw())
    return out


def non_finite() -> dict:
    """A NaN gradient and a FAMO loss below ``min_losses``: a ValueError eagerly (its
    message kept), NaN compiled (where no Python raise can happen)."""
    G = np.array([[1.0, 0.0], [np.nan, 1.0], [0.5, 0.5]], "float32")
    losses = np.array([2.0, 0.5, 3.0], "float32")
    famo = w.get("famo", TASKS, min_losses=1.0)
    combine = stateful(famo, lambda L: famo.combine(ops.unstack(L)))
    out = {"non_finite/mgda/compiled": np.asarray(compiled(cores.mgda_weights)(G)),
           "non_finite/famo/compiled": np.asarray(combine(losses))}  # fmt: skip
    fresh = w.get("famo", TASKS, min_losses=1.0)
    eager = {"mgda": lambda: cores.mgda_weights(G), "famo": lambda: fresh.combine(list(losses))}
    for name, call in eager.items():
        out[f"non_finite/{name}/eager"] = np.asarray(message_of(call))
    return out


def collect() -> dict:
    """Everything, on the backend in use (the test's TensorFlow side calls this)."""
    found = {"backend": np.asarray(keras.backend.backend())}
    found["solver_dtype"] = np.asarray(cores._solver_dtype())
    return {**found, **core_results(), **methods(), **random_draws(), **non_finite()}


def main(out: str) -> None:
    results = collect()
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        results["x64/solver_dtype"] = np.asarray(cores._solver_dtype())
        results.update(core_results("x64/core", only=SOLVERS))
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
