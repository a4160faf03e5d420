"""Notebooks 04 (DST's gated step, written out for both backends) and 07 (the remedies side by
side) run end to end on Keras's JAX backend in the quick profile, through
``run_notebooks.py`` in a process with ``KERAS_BACKEND=jax`` (the rest of the suite runs every
notebook on TensorFlow, under nbval). ``MTLKIT_JAX_NOTEBOOKS`` names others ("01 02 ... 07":
all seven pass, benchmarks/results/notebooks_jax.json). Their run folders are their own: a
study's tag hashes the backend when it is not TensorFlow.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = tuple(os.environ.get("MTLKIT_JAX_NOTEBOOKS", "04 07").split())


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("jax-notebooks")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "MTLKIT_PROFILE": "quick", "MTLKIT_RUNS_DIR": str(tmp / "runs"),
           "MTLKIT_FIGURES_DIR": str(tmp / "figures")}  # fmt: skip
    # one notebook at a time: CI's other pytest worker has the second core
    args = [sys.executable, str(ROOT / "run_notebooks.py"), "--only", *NOTEBOOKS, "--jobs", "1",
            "--output-dir", str(tmp / "executed")]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500)
    return done, tmp / "executed"


def test_the_notebooks_run_on_jax(jax_run):
    done, _ = jax_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.count(" ok") >= len(NOTEBOOKS), done.stdout[-2000:]


def test_the_notebooks_say_they_ran_on_jax(jax_run):
    _, executed = jax_run
    notebook04 = next(executed.glob("04_*.ipynb")).read_text()
    assert "jax backend" in notebook04 and "the step in use: jax_gated_step" in notebook04
