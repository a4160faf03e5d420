"""Run a test script in a process on another Keras backend (Keras picks its backend once, at
import) and read the one JSON line it prints last."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_json(script: Path, backend: str = "jax", timeout: int = 600, env=None) -> dict:
    """``python script`` with ``KERAS_BACKEND=backend`` (JAX on the CPU) and ``env`` added;
    its last line, parsed."""
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
