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
