"""Test-session settings shared by the unit tests and the notebook runs (nbval).

* Notebooks run in the quick profile unless MTLKIT_PROFILE says otherwise.
* TensorFlow runs its oneDNN CPU kernels, as in the notebooks (see ``mtlkit/__init__.py``).
* When the project's shared data sits beside the checkout (``../shared/data``, as in CI),
  the CelebA notebooks (03, 05, 06, 07) use its real images (``celeba_mini``) rather than the
  synthetic stand-in.
* Runs and figures of the test session go to a temporary folder, so a test run neither
  reuses nor overwrites your own results.
"""

import os
import tempfile
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("MTLKIT_SHARED_DATA", Path(__file__).parent.parent / "shared" / "data")
)

os.environ.setdefault("MTLKIT_PROFILE", "quick")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels on every x86 CPU, as `import mtlkit` asks; set here because test modules
# import keras (and so TensorFlow) before mtlkit
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if (SHARED_DATA / "celeba_mini").is_dir():
    os.environ.setdefault("MTLKIT_CELEBA_DIR", str(SHARED_DATA / "celeba_mini"))
_tmp = Path(tempfile.mkdtemp(prefix="mtlkit-tests-"))
os.environ.setdefault("MTLKIT_RUNS_DIR", str(_tmp / "runs"))
os.environ.setdefault("MTLKIT_FIGURES_DIR", str(_tmp / "figures"))

SLOW_FIRST = (
    "test_jax_notebooks.py",
    "test_training_suite_on_jax.py",
    "test_devices.py",
    "test_backends.py",
    "test_standard_path.py",
    "07_remedies.ipynb",
    "06_interference.ipynb",
    "02_cifar100_comparison.ipynb",
    "test_weighting_jax.py",
    "test_unit_suite_on_jax.py",
)
"""The longest test files (see ``--durations``), started first: with two pytest-xdist
workers (the README's test command) a long file started last leaves one worker idle."""


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable
