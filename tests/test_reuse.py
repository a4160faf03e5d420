"""A study's next seed reuses the last run's traced steps, and gets the same run as without.

Tracing a ResNet18's or a CIFAR-100 model's steps costs seconds per run; the study runners
restart the last run's model, optimizer and weighting method for the next seed instead
(``runners._reusable``, ``training.restart``). These tests show that a restarted run is
the run a fresh process would make, bit for bit, for ``fit`` and for the custom loop.
"""

import dataclasses

import numpy as np
import pytest

from mtlkit import studies
from mtlkit.studies import runners


def _fresh_then_reused(run, tmp_path):
    """Seed 1 after seed 0 (reusing its objects), and seed 1 alone (new objects)."""
    runners._LAST_MODEL.clear()
    run(0, tmp_path / "a")
    first = runners._LAST_MODEL and next(iter(runners._LAST_MODEL.values()))[0]
    reused = run(1, tmp_path / "a")
    second = next(iter(runners._LAST_MODEL.values()))[0]
    assert second is first, "the second seed built a new model instead of reusing the first's"
    runners._LAST_MODEL.clear()
    alone = run(1, tmp_path / "b")
    return reused, alone


@pytest.mark.parametrize("arm", ["uw", "dst"])  # a method with variables; the gates
def test_celeba_loop_reuse_is_exact(tmp_path, arm):
    settings = studies.celeba_settings(
        "quick", "synthetic", study="remedies", image_size=32, train_limit=64, eval_limit=32,
        epochs=2,
    )  # fmt: skip

    def run(seed, runs_dir):
        return studies.run_celeba(seed, settings, arm=arm, runs_dir=runs_dir)

    reused, alone = _fresh_then_reused(run, tmp_path)
    assert reused.history == alone.history
    assert np.array_equal(reused.table.to_numpy(), alone.table.to_numpy())


def test_cifar_fit_reuse_is_exact(tmp_path):
    settings = studies.cifar100_settings(
        "quick", "synthetic", train_limit=100, eval_limit=100, epochs=1, synthetic_sizes=(100, 100)
    )

    def run(seed, runs_dir):
        return studies.run_cifar100("shared_conv", seed, settings, runs_dir=runs_dir)

    reused, alone = _fresh_then_reused(run, tmp_path)
    assert reused.history == alone.history
    assert np.array_equal(reused.table.to_numpy(), alone.table.to_numpy())


def test_plain_arms_share_one_model_and_stay_exact(tmp_path):
    """Equal weights, DST and the plain loop have the same traced step: a DST run after an
    EW run reuses the EW run's model (no new trace) and equals a DST run made alone."""
    settings = studies.celeba_settings(
        "quick", "synthetic", study="comparison", image_size=32, train_limit=64, eval_limit=32,
        epochs=2,
    )  # fmt: skip
    runners._LAST_MODEL.clear()
    ew = studies.run_celeba(0, settings, arm="ew", runs_dir=tmp_path / "a")
    model = next(iter(runners._LAST_MODEL.values()))[0]
    after = studies.run_celeba(1, settings, arm="dst", runs_dir=tmp_path / "a")
    assert next(iter(runners._LAST_MODEL.values()))[0] is model
    runners._LAST_MODEL.clear()
    alone = studies.run_celeba(1, settings, arm="dst", runs_dir=tmp_path / "b")
    assert after.history == alone.history
    assert np.array_equal(after.table.to_numpy(), alone.table.to_numpy())
    assert after.schedule.equals(alone.schedule)
    assert not any(k.endswith("_weight") for k in ew.history)  # EW: the plain sum, no method


def test_runs_whose_optimizer_or_devices_differ_build_their_own_objects():
    """The reuse key holds what the optimizer's schedule (epochs, steps) and the variables'
    distribution (devices) depend on: a 30-epoch run does not restart a 10-epoch run's
    optimizer (its decays would stop at epoch 10), nor 2 devices 1 device's variables."""
    ten = studies.celeba_settings("quick", "synthetic", study="celeba40", epochs=10)
    thirty = dataclasses.replace(ten, epochs=30)
    assert runners._model_settings(ten) != runners._model_settings(thirty)
    assert runners._model_settings(ten) != runners._model_settings(
        dataclasses.replace(ten, devices=2)
    )
    assert runners._model_settings(ten) == runners._model_settings(
        dataclasses.replace(ten, seeds=(5,), hide_labels=(("Male", 0.5),))
    )  # data and seeds alone: still reused
