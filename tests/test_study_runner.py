"""One study runner for both datasets: the same arms, one run type, one folder layout.

``run_cifar100`` and ``run_celeba`` take the same ``arm`` (``fit``, the custom loop, DST, a
weighting method), return a ``studies.Run`` with a test table and the training time, keep it
in ``run_folder(...)`` and read it back -- with its DST scheduler -- on a second call.
"""

import math

import numpy as np
import pandas as pd
import pytest

from mtlkit import studies


def same_history(a: dict, b: dict) -> bool:
    """Equal histories, NaN included (the quick profile logs NaN before the last test)."""
    return pd.DataFrame(a).equals(pd.DataFrame(b))


@pytest.fixture(scope="module")
def cifar():
    return studies.cifar100_settings("quick", "synthetic", train_limit=100, eval_limit=100,
                                     epochs=2, synthetic_sizes=(100, 100))  # fmt: skip


@pytest.mark.parametrize("arm", ["fit", "dst", "uw"])
def test_a_cifar_run_of_every_arm_is_stored_and_read_back(tmp_path, cifar, arm):
    run = studies.run_cifar100("reuse_coarse", 0, cifar, arm=arm, runs_dir=tmp_path)
    assert run.run_dir == studies.run_folder(cifar, 0, arm, name="reuse_coarse", runs_dir=tmp_path)
    assert list(run.table.index) == ["fine", "coarse"] and list(run.table) == ["loss", "accuracy"]
    assert np.isfinite(run.table.to_numpy()).all() and run.seconds > 0 and not run.read_back
    assert {"fine_loss", "val_coarse_accuracy"} <= set(run.history)
    assert (run.scheduler is not None) == (arm == "dst")
    again = studies.run_cifar100("reuse_coarse", 0, cifar, arm=arm, runs_dir=tmp_path)
    assert again.read_back and same_history(again.history, run.history)
    assert again.seconds == run.seconds
    assert np.array_equal(again.table.to_numpy(), run.table.to_numpy())
    if arm == "dst":  # the scheduler comes back as the run left it
        assert again.scheduler.initial == run.scheduler.initial
        assert again.scheduler.history_frame().equals(run.scheduler.history_frame())
        assert again.scheduler.depths == run.scheduler.depths


def test_folders_follow_one_layout(tmp_path, cifar):
    celeba = studies.celeba_settings("quick", "synthetic", study="remedies")
    folder = studies.run_folder(celeba, 1, "dst", runs_dir=tmp_path)
    assert folder == tmp_path / celeba.tag / "dst" / "seed1"
    assert studies.run_folder(cifar, 0, name="shared_conv", runs_dir=tmp_path) == (
        tmp_path / cifar.tag / "shared_conv" / "seed0"  # fit: the folders made before arms
    )
    assert studies.run_folder(cifar, 0, "uw", name="shared_conv", runs_dir=tmp_path) == (
        tmp_path / cifar.tag / "shared_conv" / "uw" / "seed0"
    )
    with pytest.raises(ValueError, match="architecture's name"):
        studies.run_folder(cifar, 0)
    with pytest.raises(ValueError, match="arm='sgd'"):
        studies.run_cifar100("shared_conv", 0, cifar, arm="sgd", runs_dir=tmp_path)


def test_a_fit_run_stored_before_results_json_is_read_with_its_time_unknown(tmp_path, cifar):
    run = studies.run_cifar100("shared_conv", 0, cifar, runs_dir=tmp_path)
    (run.run_dir / "results.json").unlink()  # as a folder from before the one runner
    again = studies.run_cifar100("shared_conv", 0, cifar, runs_dir=tmp_path)
    assert same_history(again.history, run.history) and math.isnan(again.seconds)
    assert np.allclose(again.table.to_numpy(), run.table.to_numpy())
