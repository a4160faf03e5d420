"""The weighting cores and method objects on Keras's JAX backend give TensorFlow's results.

Keras picks its backend once per process, so ``tests/_weighting_jax_run.py`` runs once in a
subprocess with ``KERAS_BACKEND=jax``: every core inside ``jax.jit``, every method object's
``combine`` / ``combine_gradients`` inside ``jax.jit`` with its variables under a
``keras.StatelessScope`` (as the loop's JAX step calls them). This (TensorFlow) process
makes the very same calls in ``tf.function`` -- the same module's :func:`collect` -- and
compares. The gradient matrices have entries that make ``G G^T`` exact in float32, so both
backends start their K x K problems from the same Gram matrix.

Tolerances, as the largest difference over the largest entry (in brackets: measured):

* both backends in float32 -- PCGrad's surgery, MGDA, GradNorm, FAMO, UW, the splitting:
  ``SAME`` = 5e-5 [1.7e-5, MGDA's Frank-Wolfe on conflicting gradients; most 0 or ~1e-7];
* the K x K solvers of IMTL-G, CAGrad, Nash-MTL and Aligned-MTL: TensorFlow solves in
  float64; JAX, without ``jax_enable_x64`` (its default), in float32: ``FALLBACK`` = 5e-4
  [8.8e-5, IMTL-G on near-parallel gradients, an ill-conditioned system; 1e-4 in the
  objects' three steps]. With ``jax_enable_x64`` JAX solves in float64 too: ``X64`` = 1e-6
  [1.2e-7: Nash-MTL; the others agree exactly after the cast back to float32];
* random draws: one seed gives the same draws on one backend (two objects alike, and one
  after ``reseed``), checked on each. TensorFlow's and JAX's streams differ (keras.random
  runs a different generator on each), so across backends PCGrad is checked on the orders
  JAX drew and RLW by what its weights must be.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _on_backend import jax_env

SCRIPT = Path(__file__).with_name("_weighting_jax_run.py")
SAME, FALLBACK, X64 = 5e-5, 5e-4, 1e-6
SOLVER_CORES = ("imtl_g", "cagrad", "nash_mtl", "aligned_min", "aligned_median", "aligned_rmse")
SOLVER_METHODS = ("imtl_g", "cagrad", "nash_mtl", "aligned_mtl")
RANDOM = ("rlw", "pcgrad")


@pytest.fixture(scope="module")
def jax(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("weighting_jax") / "jax.npz"
    env = jax_env()
    root = str(Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as results:
        return {k: results[k] for k in results.files}


@pytest.fixture(scope="module")
def tensorflow() -> dict:
    import _weighting_jax_run

    return _weighting_jax_run.collect()


def assert_close(found, expected, tolerance: float, what: str) -> None:
    """``|found - expected| <= tolerance * max(1, |expected|)``, entry by entry's worst."""
    found, expected = np.asarray(found, float), np.asarray(expected, float)
    assert found.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(found, expected, rtol=0, atol=tolerance * scale, err_msg=what)


def test_each_side_ran_on_its_backend(jax, tensorflow):
    assert str(jax["backend"]) == "jax" and str(tensorflow["backend"]) == "tensorflow"
    assert str(tensorflow["solver_dtype"]) == "float64"
    assert str(jax["solver_dtype"]) == "float32" and str(jax["x64/solver_dtype"]) == "float64"
    assert set(tensorflow) == {k for k in jax if not k.startswith("x64/")}


def test_every_core_gives_tensorflows_result(jax, tensorflow):
    from _weighting_jax_run import KINDS, core_calls

    keys = [k for k in tensorflow if k.startswith("core/")]
    assert {k.split("/")[1] for k in keys} == set(core_calls()) >= set(SOLVER_CORES)
    assert {k.split("/")[2] for k in keys} == set(KINDS)
    for key in keys:
        solver = key.split("/")[1] in SOLVER_CORES
        assert_close(jax[key], tensorflow[key], FALLBACK if solver else SAME, key)


def test_the_solvers_agree_closely_when_jax_has_float64(jax, tensorflow):
    keys = [k for k in jax if k.startswith("x64/core/")]
    assert {k.split("/")[2] for k in keys} == set(SOLVER_CORES)
    for key in keys:
        assert_close(jax[key], tensorflow[key.removeprefix("x64/")], X64, key)


def test_every_method_object_gives_tensorflows_steps(jax, tensorflow):
    keys = [k for k in tensorflow if k.startswith("method/")]
    assert len({k.split("/")[1] for k in keys}) == 12
    for key in keys:
        name = key.split("/")[1]
        if name in RANDOM:
            continue  # below: their draws differ between backends
        assert_close(jax[key], tensorflow[key], FALLBACK if name in SOLVER_METHODS else SAME, key)


def test_pcgrad_on_jax_is_the_surgery_in_the_orders_it_drew(jax):
    from _weighting_jax_run import TASKS, step_inputs

    from mtlkit.methods import cores

    for i, (_, G, active) in enumerate(step_inputs()):
        orders = jax[f"method/pcgrad/{i}/orders"]
        assert [sorted(row) for row in orders.tolist()] == [
            [j for j in range(len(TASKS)) if j != t] for t in range(len(TASKS))
        ]
        expected = cores.project_conflicts(G, orders).numpy()
        assert_close(jax[f"method/pcgrad/{i}/shared"], expected, SAME, f"PCGrad step {i}")
        np.testing.assert_array_equal(jax[f"method/pcgrad/{i}/result"], active)  # 1, or 0


def test_rlw_on_jax_draws_weights_on_the_simplex(jax):
    from _weighting_jax_run import step_inputs

    previous = None
    for i, (losses, _, _) in enumerate(step_inputs()):
        weights = jax[f"method/rlw/{i}/logged"]
        assert (weights > 0).all() and weights.sum() == pytest.approx(1.0, rel=1e-6)
        assert float(jax[f"method/rlw/{i}/result"]) == pytest.approx(weights @ losses, rel=1e-6)
        assert previous is None or not np.allclose(weights, previous)  # new weights each step
        previous = weights


@pytest.mark.parametrize("side", ["jax", "tensorflow"])
def test_one_seed_draws_alike_on_each_backend(side, jax, tensorflow):
    """Two RLW (PCGrad) objects seeded alike take the same steps, and so does the first
    again after reseed; two generators seeded alike draw alike, and a second call anew."""
    results = {"jax": jax, "tensorflow": tensorflow}[side]
    for name in RANDOM:
        for step in range(2):
            first = results[f"random/{name}/first/{step}"]
            np.testing.assert_array_equal(first, results[f"random/{name}/second/{step}"])
            np.testing.assert_array_equal(first, results[f"random/{name}/reseeded/{step}"])
    for core in ("rlw_weights", "pcgrad_orders"):
        for call in range(2):
            one, two = results[f"random/{core}/one/{call}"], results[f"random/{core}/two/{call}"]
            np.testing.assert_array_equal(one, two)
    calls = [results[f"random/rlw_weights/one/{call}"] for call in range(2)]
    assert not np.allclose(*calls)


def test_non_finite_input_raises_eagerly_and_gives_nan_compiled(jax, tensorflow):
    for results in (jax, tensorflow):
        assert "['row 1'] is NaN or infinite" in str(results["non_finite/mgda/eager"])
        assert "must be above 1.0" in str(results["non_finite/famo/eager"])
        assert np.isnan(results["non_finite/mgda/compiled"]).all()
        assert np.isnan(results["non_finite/famo/compiled"])
