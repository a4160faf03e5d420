"""``import mtlkit`` asks TensorFlow for its oneDNN CPU kernels, and respects an explicit no.

TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX;
on AVX2-only CPUs its Eigen kernels train the kit's ResNet18 several times slower
(``benchmarks/bench_cpu.py``). Each case runs in a fresh interpreter: the setting only works
before TensorFlow starts.
"""

import os
import subprocess
import sys

PROBE = (
    "import os, mtlkit\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled())\n"
)


def _probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_turns_onednn_on_when_unset():
    assert _probe() == ["1", "True"]


def test_an_explicit_choice_is_kept():
    assert _probe(TF_ENABLE_ONEDNN_OPTS="0") == ["0", "False"]


def test_tensorflow_imported_first_with_eigen_kernels_warns():
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    # TF_ENABLE_ONEDNN_OPTS=0 read by TensorFlow, then removed before mtlkit looks at it
    code = (
        "import os; os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'\n"
        "import tensorflow\n"
        "del os.environ['TF_ENABLE_ONEDNN_OPTS']\n"
        "import warnings; warnings.simplefilter('error')\n"
        "import mtlkit\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True)
    assert out.returncode != 0 and "Import mtlkit first" in out.stderr
