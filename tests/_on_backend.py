"""Run a test script in a process on another Keras backend (Keras picks its backend once, at
import) and read the one JSON line it prints last."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

QUICK_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
"""XLA:CPU flags for the JAX processes of the unit tests, which compile hundreds of small
programs and run each for a few steps: LLVM without its optimisations, and XLA's older
fusion emitters, which compile faster. Measured on a 2-core Xeon (2026-12-07): the weighting
and partial-label tests on JAX 78 s with XLA's defaults, 53 s without the fusion emitters,
45 s with both; the JAX training suite in CI's setting 283 s -> 186 s. Without the fusion
emitters ``bench_backends.py``'s models train as fast (ResNet18 at 40 px 232 against 233
img/s, the CIFAR-100 ``independent`` model 40.1 against 40.2); the unoptimised LLVM code
may run slower, which the tests' small models do not feel. Test processes only: the
notebooks and the kit keep XLA's defaults (the kit adds only its own
``--xla_disable_hlo_passes=algsimp``, see ``mtlkit/__init__``). A flag this XLA does not
know (XLA stops the process on one) is left out."""


@functools.cache
def _known(flag: str) -> bool:
    """Whether this JAX's XLA accepts ``flag`` (XLA aborts on an unknown one)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    code = "import jax; jax.devices()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return done.returncode == 0


def jax_env(**extra: str) -> dict:
    """The environment of a test process on Keras's JAX backend (on the CPU): ``os.environ``,
    ``extra``, and :data:`QUICK_COMPILE` added to ``XLA_FLAGS``."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", **extra}
    flags = [env.get("XLA_FLAGS", ""), *(f for f in QUICK_COMPILE if _known(f))]
    env["XLA_FLAGS"] = " ".join(f for f in flags if f)
    return env


def run_json(script: Path, backend: str = "jax", timeout: int = 600, env=None) -> dict:
    """``python script`` with ``KERAS_BACKEND=backend`` (JAX on the CPU, see :func:`jax_env`)
    and ``env`` added; its last line, parsed."""
    if backend == "jax":
        env = jax_env(**(env or {}))
    else:
        env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", **(env or {})}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def message_of(call) -> str:
    """The message of the ValueError ``call()`` raises, or ``"no error"`` (what the scripts
    record for a test to read)."""
    try:
        call()
    except ValueError as err:
        return str(err)
    return "no error"
