"""The loop on Keras's TensorFlow and JAX backends: same weights, same batches, same results.

Each backend runs in its own process (Keras picks its backend once, at import):
``tests/_backend_run.py`` trains a small two-task model from one ``.weights.h5`` file -- with
equal weights, DST (a gate drops a task), UW and DWA, a task with partial labels -- and the
test compares the final weights and histories.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("_backend_run.py")
ARMS = ("ew", "dst", "uw", "dwa")


def _run(backend: str, tmp: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    out = tmp / f"{backend}.npz"
    args = [sys.executable, str(SCRIPT), str(tmp / "initial.weights.h5"), str(out), str(tmp)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as results:
        return {k: results[k] for k in results.files}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("backends")
    return {backend: _run(backend, tmp) for backend in ("tensorflow", "jax")}  # TF first


def _weights(results: dict, arm: str) -> list:
    return [results[k] for k in sorted(results) if k.startswith(f"{arm}/weight")]


def test_each_backend_ran_on_itself(results):
    assert [str(results[b]["backend"]) for b in results] == ["tensorflow", "jax"]


@pytest.mark.parametrize("arm", ARMS)
def test_tensorflow_and_jax_end_at_the_same_weights(results, arm):
    tf_weights, jax_weights = _weights(results["tensorflow"], arm), _weights(results["jax"], arm)
    assert len(tf_weights) == len(jax_weights) == 10  # three Dense layers, BatchNorm
    for a, b in zip(tf_weights, jax_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    keys = [k for k in results["tensorflow"] if k.startswith(f"{arm}/history/")]
    assert f"{arm}/history/val_kind_accuracy" in keys
    for key in keys:
        np.testing.assert_allclose(results["tensorflow"][key], results["jax"][key], rtol=1e-4)


def test_the_tolerance_tells_methods_apart(results):
    """The comparison can fail: UW's, DWA's and DST's weights are not EW's within it."""
    ew = _weights(results["jax"], "ew")
    for arm in ("uw", "dwa", "dst"):
        with pytest.raises(AssertionError):
            for a, b in zip(ew, _weights(results["jax"], arm)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dst_dropped_a_task_and_partial_labels_counted(results):
    jax = results["jax"]
    assert 0.0 in jax["dst/history/kind_gate"]
    assert np.isfinite(jax["ew/history/kind_loss"]).all()  # the batch without labels adds 0
    assert "uw/history/kind_weight" in jax and "dwa/history/flag_weight" in jax


def test_a_resumed_jax_run_is_the_straight_run_bit_for_bit(results):
    jax = results["jax"]
    for a, b in zip(_weights(jax, "ew"), _weights(jax, "ew-resumed")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax["ew/history/loss"], jax["ew-resumed/history/loss"])


def test_jax_refuses_what_it_does_not_run_yet_with_a_clear_message(results):
    pcgrad = str(results["jax"]["message/pcgrad"])
    assert "'pcgrad' runs on the TensorFlow backend only" in pcgrad
    assert "['ew', 'uw', 'dwa']" in pcgrad and "KERAS_BACKEND=tensorflow" in pcgrad
    other = str(results["jax"]["message/other_backend"])
    assert "trained on Keras's 'tensorflow' backend" in other and "KERAS_BACKEND" in other


def test_an_unsupported_backend_is_refused_at_import():
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    done = subprocess.run([sys.executable, "-c", "import mtlkit.training"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: mtlkit's training code runs on the Keras backends")
    assert "['tensorflow', 'jax']" in last and "'numpy'" in last
