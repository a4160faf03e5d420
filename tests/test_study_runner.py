"""One study runner for both datasets: the same arms, one run type, one folder layout.

``run_cifar100`` and ``run_celeba`` take the same ``arm`` (``fit``, the custom loop, DST, a
weighting method), return a ``studies.Run`` with a test table and the training time, keep it
in ``run_folder(...)`` and read it back -- with its DST scheduler -- on a second call.
"""

import dataclasses
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


@pytest.fixture(scope="module")
def small_celeba():
    return studies.celeba_settings(
        "quick", "synthetic", study="comparison", image_size=32, train_limit=32, eval_limit=32,
        epochs=1, batch_size=16, recalibrate_bn=0, attributes=("Male", "Smiling"),
    )  # fmt: skip


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", 2**32])
def test_a_bad_seed_is_refused_before_the_run_folder_is_used(tmp_path, cifar, seed):
    with pytest.raises(ValueError, match=r"seed=.*whole number >= 0"):
        studies.run_celeba(seed, studies.celeba_settings("quick", "synthetic"), runs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seed=.*whole number >= 0"):
        studies.run_cifar100("shared_conv", seed, cifar, runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_dst_options_name_their_own_folder(tmp_path, small_celeba):
    default = studies.run_folder(small_celeba, 0, "dst", runs_dir=tmp_path)
    assert default == tmp_path / small_celeba.tag / "dst" / "seed0"  # as before the options
    same = {"alpha": 0.1, "metrics": ("depth", "samples", "incompleteness", "stagnancy")}
    assert studies.run_folder(small_celeba, 0, "dst", runs_dir=tmp_path,
                              scheduler_options=same) == default  # fmt: skip
    other = [studies.run_folder(small_celeba, 0, "dst", runs_dir=tmp_path, scheduler_options=o)
             for o in ({"alpha": 0.5}, {"rescale_losses": True}, {"metrics": "depth"})]  # fmt: skip
    assert len({default, *other}) == 4 and other[0].parent.name.startswith("dst-")
    bad = (({"alpha": 0.5}, "ew", "only arm='dst'"), ({"beta": 1}, "dst", "not an option"),
           ({"alpha": 2.0}, "dst", "alpha"), ({"alpha": "x"}, "dst", "alpha"),
           ({"metrics": ("magic",)}, "dst", "Unknown DST metric"))  # fmt: skip
    for options, arm, match in bad:
        with pytest.raises(ValueError, match=match):
            studies.run_celeba(0, small_celeba, arm=arm, scheduler_options=options,
                               runs_dir=tmp_path)  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_a_dst_run_with_options_is_read_back_with_them(tmp_path, small_celeba):
    options = {"rescale_losses": True, "alpha": 0.5, "metrics": ("depth", "incompleteness")}
    run = studies.run_celeba(0, small_celeba, arm="dst", scheduler_options=options,
                             runs_dir=tmp_path)  # fmt: skip
    plain = studies.run_folder(small_celeba, 0, "dst", runs_dir=tmp_path)
    assert not plain.exists() and run.run_dir != plain  # the defaults' run is another one
    again = studies.run_celeba(0, small_celeba, arm="dst", scheduler_options=options,
                               runs_dir=tmp_path)  # fmt: skip
    assert again.read_back and again.scheduler.rescale_losses and again.scheduler.alpha == 0.5
    assert again.scheduler.metrics == ("depth", "incompleteness")
    assert again.scheduler.loss_scales == run.scheduler.loss_scales


def test_a_celeba_run_killed_before_results_json_has_its_time_unknown(tmp_path, small_celeba):
    settings = dataclasses.replace(small_celeba, checkpoints=True)
    run = studies.run_celeba(0, settings, arm="train", runs_dir=tmp_path)
    (run.run_dir / "results.json").unlink()  # killed during the test evaluation
    again = studies.run_celeba(0, settings, arm="train", runs_dir=tmp_path)
    assert same_history(again.history, run.history) and math.isnan(again.seconds)
    assert np.allclose(again.table.to_numpy(), run.table.to_numpy())
