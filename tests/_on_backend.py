"""Run a test script in a process on another Keras backend (Keras picks its backend once, at
import) and read the one JSON line it prints last."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

NO_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
"""XLA:CPU's older fusion emitters, which compile faster than its default ones. Without them
``bench_backends.py``'s models train as fast (2-core Xeon, 2026-12-07: the ResNet18 at 40 px
232 against 233 img/s, the CIFAR-100 ``independent`` model 40.1 against 40.2)."""

QUICK_COMPILE = (NO_FUSION_EMITTERS, "--xla_backend_optimization_level=0")
"""XLA:CPU flags for the JAX test processes that compile hundreds of small programs and run
each for a few steps (the loop's unit tests, the devices, the backend comparisons): the
older fusion emitters, and LLVM without its optimisations. Measured on a 2-core Xeon
(2026-12-07, ``benchmarks/bench_test_compile.py``): the weighting and partial-label tests on
JAX 78 s with XLA's defaults, 53 s without the fusion emitters, 45 s with both; in CI the
JAX training suite 283 -> 149 s, the devices' JAX process 86 -> 41 s, the backend
comparison 95 -> 46 s. Unoptimised code runs the large models slower: the data, model and
study unit tests (which build the 18-million-parameter CIFAR-100 models) took 80 s with
the defaults, 74 s without the fusion emitters and 88 s with both, so that suite takes
:data:`NO_FUSION_EMITTERS` alone. Test processes only: the notebooks and the kit keep XLA's
defaults (the kit adds only ``--xla_disable_hlo_passes=algsimp``, see ``mtlkit/__init__``).
A flag this XLA does not know (XLA stops the process on one) is left out."""


def _jax_starts(flags: tuple[str, ...]) -> bool:
    """Whether JAX starts with ``XLA_FLAGS`` set to ``flags`` (XLA stops on an unknown flag)."""
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    code = "import jax; jax.devices()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return done.returncode == 0


@functools.cache
def known_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The ``flags`` this JAX's XLA knows: one JAX start when it knows them all, else one
    start per flag."""
    if _jax_starts(flags):
        return flags
    return tuple(f for f in flags if _jax_starts((f,)))


def jax_env(flags: tuple[str, ...] = QUICK_COMPILE, **extra: str) -> dict:
    """The environment of a test process on Keras's JAX backend (on the CPU): ``os.environ``,
    ``extra``, and ``flags`` (those this XLA knows) added to ``XLA_FLAGS``."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", **extra}
    joined = [env.get("XLA_FLAGS", ""), *known_flags(tuple(flags))]
    env["XLA_FLAGS"] = " ".join(f for f in joined if f)
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
