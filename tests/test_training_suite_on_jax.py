"""Partial labels, every weighting method in the loop and the loop's bad input, run again on
JAX in CI; the loop's, the methods' and the diagnostics' other files on request.

Each file below (both lists) passes unchanged on both backends: the expected values come from NumPy
references or from gradients taken by hand on the backend that runs
(``tests/_reference_gradients.py``: a tape on TensorFlow, ``jax.grad`` of
``model.stateless_call`` on JAX). Where JAX differs by design the test says so beside the
check: JAX runs without float64 (the K x K solvers of IMTL-G, CAGrad, Nash-MTL and
Aligned-MTL solve in float32 there: tolerances per backend, measured values beside them),
``jax.jit`` traces once per batch shape, and the run tags hash the backend.

TensorFlow-only by nature, and so not run here: the TensorFlow half of a backend comparison
(``test_backends.py``, ``test_weighting_jax.py``, ``test_devices.py``, whose JAX halves run
in processes of their own), notebook 04's ``GradientTape`` step (``test_notebook04_step.py``;
its JAX step is checked in ``_notebook04_jax.py``), the notebooks' cells and exercises written
with ``tf.GradientTape`` (``test_shown_ideas.py``, ``test_notebook_exercises.py``; the JAX
notebooks run in ``test_jax_notebooks.py``), and TensorFlow's CPU kernels and logging
(``test_cpu_kernels.py``, ``test_quiet.py``).
"""

from _jax_suite import run_on_jax

TRAINING_FILES = (
    "test_partial_labels.py", "test_weighting_loop.py", "test_training_bad_input.py",
)  # fmt: skip
"""Partial labels, every weighting method in the loop, and the loop's bad input, on JAX in CI."""

ALSO_ON_JAX = (
    "test_training_loop.py", "test_fit_resumable.py", "test_diagnostics.py",
    "test_weighting.py", "test_weighting_recent.py", "test_single_task.py", "test_reuse.py",
    "test_celeba40.py", "test_run_lock.py", "test_study_runner.py",
)  # fmt: skip
"""Files that pass unchanged on JAX too (checked 2026-12-06) but are left out of CI's JAX run
for its 20 minutes (with them, CI took 1,375 s on a 2-core Xeon): the loop, resume and the
diagnostics are compared with TensorFlow on JAX in ``test_backends.py``, the weighting cores
in ``test_weighting_jax.py``; the rest is study plumbing above the backend. Run them with
``KERAS_BACKEND=jax JAX_PLATFORMS=cpu python -m pytest tests/<file>``."""


def test_the_loop_methods_and_diagnostics_unit_tests_pass_on_jax(tmp_path):
    ran = run_on_jax(TRAINING_FILES, tmp_path)
    assert ran["collected"] > 60, ran  # every file's tests, not an empty selection
