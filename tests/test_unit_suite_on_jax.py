"""The unit tests that are written for any Keras backend, run again on JAX.

Keras picks its backend once, at import, so they run in a pytest process of their own with
``KERAS_BACKEND=jax``. The files below hold no TensorFlow-only idiom (``tf.function``,
``GradientTape``, ``.numpy()``); the other files' JAX side is covered by the processes of
``test_backends.py``, ``test_weighting_jax.py``, ``test_devices.py`` and the JAX notebooks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ON_ANY_BACKEND = (
    "test_architectures.py", "test_celeba_data.py", "test_celeba_model.py",
    "test_cifar100_data.py", "test_delta_p.py", "test_dst.py", "test_durations.py",
    "test_evaluation.py", "test_evaluation_seeds.py", "test_exercises.py", "test_layers.py",
    "test_mean_rank.py", "test_plots.py", "test_study_plots.py", "test_work.py",
)  # fmt: skip
"""Unit-test files with no TensorFlow-only idiom, checked on JAX too."""

REPORT = """
import json, os
import keras

def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["MTLKIT_BACKEND_REPORT"], "w") as f:
        json.dump({"backend": keras.backend.backend(), "collected": session.testscollected,
                   "failed": session.testsfailed}, f)
"""


def test_the_backend_neutral_unit_tests_pass_on_jax(tmp_path):
    (tmp_path / "backend_report.py").write_text(REPORT)
    report = tmp_path / "report.json"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "MTLKIT_BACKEND_REPORT": str(report), "PYTHONPATH": path}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
               "backend_report", "-o", "addopts=", "-k", "not trains_on_one_batch_with_fit",
               *(str(HERE / name) for name in ON_ANY_BACKEND)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                          cwd=HERE.parent)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    ran = json.loads(report.read_text())
    assert ran["backend"] == "jax" and ran["failed"] == 0
    assert ran["collected"] > 300, ran  # every file's tests, not an empty selection
