"""Data-parallel training on two virtual CPU devices ends where one device does.

``tests/_devices_run.py`` trains the same small model on one device and on two -- on
TensorFlow with ``tf.distribute.MirroredStrategy`` over two logical CPUs, on JAX with
``keras.distribution.DataParallel`` over two host devices -- with a task whose labels are
missing from one device's half of every batch. Each backend runs in its own process (the
devices must be made before TensorFlow or JAX starts). ``MTLKIT_DEVICE_ARMS="all"`` runs
every weighting method and ``fit`` (about 2 minutes per backend on 2 CPU cores); CI runs the
ones the issue names.
"""

import os
from pathlib import Path

import pytest
from _on_backend import run_json

SCRIPT = Path(__file__).with_name("_devices_run.py")
CHOSEN = {
    "tensorflow": "ew dst uw pcgrad mgda gradnorm fit",
    "jax": "ew dst uw pcgrad mgda",
}
TOLERANCE = 1e-6
"""float32 rounding: the two devices add the same numbers in another order."""
LOOSER = {("jax", "gradnorm"): 1e-4, ("jax", "cagrad"): 1e-4}
"""On JAX (float32 solvers: no x64) GradNorm's weights and CAGrad's inner solve amplify the
rounding: measured 2.3e-5 and 1.3e-5 -- still far below the wrong-reduction control."""


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def result(request) -> dict:
    backend = request.param
    arms = os.environ.get("MTLKIT_DEVICE_ARMS", CHOSEN[backend])
    env = {"CUDA_VISIBLE_DEVICES": ""}  # (CPU devices, also on a machine with a GPU)
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    if arms != "all":
        env["MTLKIT_DEVICE_ARMS"] = arms
    return run_json(SCRIPT, backend, env=env)


def test_each_process_ran_on_its_backend(result):
    assert result["backend"] in ("tensorflow", "jax")
    assert result["arms"]


def test_two_devices_end_at_the_weights_of_one(result):
    for arm, found in result["arms"].items():
        assert "error" not in found, (arm, found.get("error"))
        tolerance = LOOSER.get((result["backend"], arm), TOLERANCE)
        assert found["weights"] < tolerance, (arm, found)
        assert found["history"] < 10 * tolerance, (arm, found)  # losses, accuracies, weights
        assert found["keys_equal"], arm
        assert found["moved"] > 0.1, arm  # the runs trained: the comparison means something


def test_the_tolerance_tells_a_wrong_reduction(result):
    """Averaging each device's own masked mean (a device without labels counted as 0) is
    EW with the task's loss halved here: far outside the tolerance."""
    halved = result["controls"]["halved"]
    assert halved["weights"] > 1000 * TOLERANCE and halved["history"] > 1000 * TOLERANCE


def test_a_run_on_two_devices_resumes_exactly(result):
    resumed = result["controls"]["resumed"]
    assert resumed["weights"] == 0.0 and resumed["history"] == 0.0


def test_bad_setups_get_clear_errors(result):
    messages = result["messages"]
    assert "does not split evenly across the 2 devices" in messages["uneven"]
    assert "multiple of 2" in messages["uneven"]
    if result["backend"] == "jax":
        assert "Set the distribution first" in messages["model_outside"]
    else:
        assert "inside `with strategy.scope():`" in messages["model_outside"]
        assert "make the optimizer inside" in messages["optimizer_outside"]


def test_a_study_trains_on_two_devices_and_says_so(result):
    study = result["study"]
    one, two = study["tags"]
    assert one != two  # the device count is part of the run's tag
    assert "data-parallel on 2 devices" in study["label"]
    assert study["metadata_devices"] == 2
    assert len(study["trained"]) == 1 and study["trained"][0] > 0
    assert "Ask for at most that many" in study["too_many"]
    assert "does not split evenly across 2 devices" in study["uneven"]
