"""Run unit-test files again in a pytest process of their own on Keras's JAX backend.

Keras picks its backend once, at import, so a file runs on JAX only in a new process with
``KERAS_BACKEND=jax``. A small plugin reports back which backend ran and how many tests it
collected and failed, so an empty selection or a silent TensorFlow run cannot pass.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from _on_backend import QUICK_COMPILE, jax_env

HERE = Path(__file__).resolve().parent

REPORT = """
import json, os
import keras

def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["MTLKIT_BACKEND_REPORT"], "w") as f:
        json.dump({"backend": keras.backend.backend(), "collected": session.testscollected,
                   "failed": session.testsfailed}, f)
"""

COMPILE_ONCE = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}  # fmt: skip
"""JAX's compilation cache for every program: the tests build the same small models again
and again (straight, killed and resumed runs), and XLA then compiles each program once per
process instead of once per model (the training files: 630 s -> 449 s on 2 cores). Each
process gets a folder of its own (the cache writes its files without a lock)."""


def run_on_jax(files, tmp_path: Path, deselect: str | None = None, flags=QUICK_COMPILE) -> dict:
    """``pytest files`` under ``KERAS_BACKEND=jax`` (JAX on the CPU, XLA ``flags`` added: see
    ``_on_backend``); asserts it passed and ran on JAX, and returns its report (``backend``,
    ``collected``, ``failed``)."""
    (tmp_path / "backend_report.py").write_text(REPORT)
    report = tmp_path / "report.json"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = jax_env(flags, MTLKIT_BACKEND_REPORT=str(report), PYTHONPATH=path, **COMPILE_ONCE,
                  JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"))  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
               "backend_report", "-o", "addopts=", *(["-k", deselect] if deselect else []),
               *(str(HERE / name) for name in files)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500,
                          cwd=HERE.parent)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    ran = json.loads(report.read_text())
    assert ran["backend"] == "jax" and ran["failed"] == 0, ran
    return ran
