"""The loop on Keras's TensorFlow and JAX backends: same weights, same batches, same results.

Each backend runs in its own process (Keras picks its backend once, at import):
``tests/_backend_run.py`` trains a small two-task model from one ``.weights.h5`` file --
equal weights, DST (a gate drops a task) and every weighting method, with a task whose labels
are partly unknown -- measures the interference diagnostics, and the test compares the final
weights, histories and measurements. RLW draws its weights from each backend's own random
stream, so only its form is compared.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _backend_run import ARMS as RUN_ARMS
from _on_backend import jax_env, known_flags

SCRIPT = Path(__file__).with_name("_backend_run.py")
ARMS = tuple(a for a in RUN_ARMS if a != "rlw")  # (RLW draws from each backend's own stream)
MIXED_TOLERANCE = 5e-3
"""float16 compute: each side rounds its activations and gradients to about 1e-3."""


def _run(backend: str, tmp: Path) -> dict:
    env = jax_env() if backend == "jax" else {**os.environ, "KERAS_BACKEND": backend}
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
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=_atol(arm))
    keys = [k for k in results["tensorflow"] if k.startswith(f"{arm}/history/")]
    assert f"{arm}/history/val_kind_accuracy" in keys
    for key in keys:
        # GradNorm's weights step along sign(|w_j| n_j - target_j) with their own Adam(1e-3):
        # where the two sides tie within rounding the sign can flip, moving a weight by ~1e-4
        atol = 1e-3 if arm == "gradnorm" and key.endswith("_weight") else 0.0
        np.testing.assert_allclose(results["tensorflow"][key], results["jax"][key], rtol=1e-4,
                                   atol=atol)  # fmt: skip


def _atol(arm: str) -> float:
    """1e-5; 1e-4 for the four methods with a K x K solve, which JAX does in float32 (no
    x64) and TensorFlow in float64: CAGrad's weights differ by 1.6e-5 here, and the cores
    alone by up to 8.8e-5 (tests/test_weighting_jax.py)."""
    return 1e-4 if arm in ("imtl_g", "cagrad", "nash_mtl", "aligned_mtl") else 1e-5


def test_the_tolerance_tells_methods_apart(results):
    """The comparison can fail: every other arm's weights are not EW's within it."""
    ew = _weights(results["jax"], "ew")
    for arm in ARMS[1:]:
        with pytest.raises(AssertionError):
            for a, b in zip(ew, _weights(results["jax"], arm)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=_atol(arm))


def test_dst_dropped_a_task_and_partial_labels_counted(results):
    jax = results["jax"]
    assert 0.0 in jax["dst/history/kind_gate"]
    assert np.isfinite(jax["ew/history/kind_loss"]).all()  # the batch without labels adds 0
    for arm in ("uw", "dwa", "pcgrad", "mgda", "gradnorm", "famo", "nash_mtl"):
        assert f"{arm}/history/kind_weight" in jax, arm


def test_a_resumed_jax_run_is_the_straight_run_bit_for_bit(results):
    jax = results["jax"]
    for a, b in zip(_weights(jax, "ew"), _weights(jax, "ew-resumed")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax["ew/history/loss"], jax["ew-resumed/history/loss"])


def test_mixed_precision_trains_alike_on_both_backends(results):
    """float16 compute with loss scaling: the two backends agree within float16 rounding,
    and both differ from the float32 run by more than that (the policy was used)."""
    tf_side, jax_side = _weights(results["tensorflow"], "mixed"), _weights(results["jax"], "mixed")
    assert len(tf_side) == len(jax_side) == 10
    gaps = [float(np.max(np.abs(a - b))) for a, b in zip(tf_side, jax_side)]
    assert max(gaps) < MIXED_TOLERANCE, gaps
    float32 = _weights(results["jax"], "ew")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(jax_side, float32)) > 1e-5
    for key in ("loss", "kind_loss", "flag_accuracy"):
        np.testing.assert_allclose(results["tensorflow"][f"mixed/history/{key}"],
                                   results["jax"][f"mixed/history/{key}"], rtol=1e-2)  # fmt: skip


def test_jax_refuses_a_run_folder_of_the_other_backend(results):
    other = str(results["jax"]["message/other_backend"])
    assert "trained on Keras's 'tensorflow' backend" in other and "KERAS_BACKEND" in other


def test_jax_refuses_a_jit_compile_typo(results):
    assert "jit_compile='yes': use True, False or 'auto'" in str(
        results["jax"]["message/jit_compile"]
    )


def test_rlw_runs_on_both_and_draws_from_each_backends_stream(results):
    for backend in results:
        weights = results[backend]["rlw/history/kind_weight"]
        assert np.isfinite(weights).all() and (0 < weights).all() and (weights < 1).all()


def test_the_diagnostics_agree_across_backends(results):
    tf_, jax_ = results["tensorflow"], results["jax"]
    assert list(tf_["diagnostics/shared"]) == list(jax_["diagnostics/shared"])
    assert "shared/kernel" in list(jax_["diagnostics/shared"])
    np.testing.assert_allclose(tf_["diagnostics/gram"], jax_["diagnostics/gram"], rtol=1e-4)
    np.testing.assert_allclose(tf_["diagnostics/kind_kernel"], jax_["diagnostics/kind_kernel"],
                               rtol=1e-4, atol=1e-7)  # fmt: skip


def test_the_pretrained_resnet18_preset_loads_the_same_weights_on_jax(results):
    """``weights="imagenet"`` through a local preset folder (written on TensorFlow)."""
    tf_, jax_ = results["tensorflow"], results["jax"]
    keys = [k for k in tf_ if k.startswith("preset/")]
    assert len(keys) > 50 and set(keys) == {k for k in jax_ if k.startswith("preset/")}
    for key in keys:
        np.testing.assert_allclose(tf_[key], jax_[key], rtol=1e-6)


def test_an_unsupported_backend_is_refused_at_import():
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    done = subprocess.run([sys.executable, "-c", "import mtlkit.training"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: mtlkit's training code runs on the Keras backends")
    assert "['tensorflow', 'jax']" in last and "'numpy'" in last


def test_the_jax_test_processes_leave_out_flags_their_xla_does_not_know():
    """XLA stops a process on an unknown flag: the quicker compile settings of the JAX test
    processes (``_on_backend``) must not stop them on a JAX that lacks one."""
    unknown, known = "--xla_no_such_flag_in_any_xla=true", "--xla_cpu_multi_thread_eigen=true"
    assert known_flags((unknown, known)) == (known,)
    assert known_flags((unknown,)) == ()
    flags = jax_env((unknown,), XLA_FLAGS="--xla_force_host_platform_device_count=2")["XLA_FLAGS"]
    assert flags == "--xla_force_host_platform_device_count=2"  # what was set is kept
