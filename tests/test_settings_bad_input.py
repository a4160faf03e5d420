"""Study settings refuse what would fail later, at the call that sets it."""

import keras
import numpy as np
import pytest

from mtlkit import studies
from mtlkit.studies import runners


@pytest.mark.parametrize("epochs", [0, -1, 2.5, True])
def test_epochs_must_be_a_positive_whole_number(epochs):
    with pytest.raises(ValueError, match="epochs="):
        studies.cifar100_settings("quick", epochs=epochs)
    with pytest.raises(ValueError, match="epochs="):
        studies.celeba_settings("quick", epochs=epochs)


def test_a_bad_trunk_width_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="trunk_width=0"):
        studies.cifar100_settings("quick", trunk_width=0)


def test_cifar_tags_of_the_report_width_are_unchanged():
    """``trunk_width`` is hashed only when it is not the report's 1: the run folders made
    before it existed keep their names (the tags below are the ones they had)."""
    old_tags = {  # per backend: the backend is hashed into the tag on JAX
        "tensorflow": ("cifar100-standard-tfds-9c9b923b", "cifar100-standard-tfds-31636381"),
        "jax": ("cifar100-standard-tfds-021a67bb", "cifar100-standard-tfds-39c1543c"),
    }[keras.backend.backend()]
    assert studies.CifarSettings(profile="standard", source="tfds").tag == old_tags[0]
    assert studies.cifar100_settings("standard").tag == old_tags[1]
    narrow = studies.cifar100_settings("standard", trunk_width=0.5)
    assert narrow.tag != studies.cifar100_settings("standard").tag


def test_a_hidden_share_outside_0_1_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="hide_labels\\['Male'\\] = 2"):
        studies.celeba_settings("quick", hide_labels={"Male": 2})


def test_a_damaged_results_file_is_named(tmp_path):
    settings = studies.celeba_settings("quick", "synthetic", study="remedies")
    run_dir = tmp_path / settings.tag / "ew" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / runners.RESULTS).write_text('{"history": {"loss": [1.0]')  # cut short
    with pytest.raises(ValueError, match="is damaged"):
        studies.run_celeba(0, settings, arm="ew", runs_dir=tmp_path)


def test_a_run_read_back_keeps_its_training_time(tmp_path):
    settings = studies.celeba_settings(
        "quick", "synthetic", study="remedies", image_size=32, train_limit=32, eval_limit=32,
        epochs=1,
    )  # fmt: skip
    trained = studies.run_celeba(0, settings, arm="ew", runs_dir=tmp_path)
    again = studies.run_celeba(0, settings, arm="ew", runs_dir=tmp_path)
    assert not trained.read_back and again.read_back
    assert again.seconds == pytest.approx(trained.seconds) and again.seconds > 0


@pytest.mark.parametrize("options", [{"weight_decay": -1e-4}, {"weight_decay": float("nan")},
                                     {"learning_rate": 0}, {"learning_rate": "1e-3"}])  # fmt: skip
def test_a_bad_learning_rate_or_weight_decay_is_refused(options):
    with pytest.raises(ValueError, match=next(iter(options)) + "="):
        studies.celeba_settings("quick", **options)


def test_weight_decay_reaches_the_optimizer_and_the_label():
    plain = studies.celeba_settings("quick", "synthetic", study="remedies")
    decayed = studies.celeba_settings("quick", "synthetic", study="remedies", weight_decay=1e-4)
    assert runners.celeba_optimizer(plain).weight_decay is None
    assert runners.celeba_optimizer(decayed).weight_decay == pytest.approx(1e-4)
    assert "weight decay 0.0001" in decayed.data_label and "weight decay" not in plain.data_label
    assert decayed.tag != plain.tag
    assert runners._model_settings(decayed) != runners._model_settings(plain)


@pytest.mark.parametrize("make", ["cifar100_settings", "celeba_settings"])
@pytest.mark.parametrize(
    "options, named",
    [({"recalibrate_bn": -5}, "recalibrate_bn=-5"), ({"batch_size": 2.5}, "batch_size=2.5"),
     ({"batch_size": 0}, "batch_size=0"), ({"train_limit": 0}, "train_limit=0"),
     ({"eval_limit": -1}, "eval_limit=-1"), ({"seeds": ()}, r"seeds=\(\)"),
     ({"seeds": 0}, "seeds=0"), ({"seeds": (0, -1)}, "seeds="),
     ({"learning_rate": -1.0}, "learning_rate=-1.0"), ({"learning_rate": 0}, "learning_rate=0")],
)  # fmt: skip
def test_a_size_count_or_rate_that_would_fail_in_a_run_is_refused_where_it_is_made(
    make, options, named
):
    with pytest.raises(ValueError, match=named):
        getattr(studies, make)("quick", "synthetic", **options)


def test_seeds_may_be_any_sequence_of_whole_numbers_and_are_kept_as_a_tuple():
    assert studies.celeba_settings("quick", "synthetic", seeds=range(2)).seeds == (0, 1)
    assert studies.cifar100_settings("quick", "synthetic", seeds=[np.int64(3)]).seeds == (3,)
    with pytest.raises(ValueError, match="image_size=-32"):
        studies.celeba_settings("quick", "synthetic", image_size=-32)


def test_all_devices_takes_the_most_that_split_the_batch_and_says_so(monkeypatch):
    """The full profiles ask for ``devices="all"``: on a machine with 3 GPUs and CelebA's
    batch of 32 that is 2 devices and a warning, not an error; a number asked for is kept
    or refused."""
    monkeypatch.setattr(studies.devices, "available", lambda: 3)
    with pytest.warns(UserWarning, match="2 of them train and 1 stay idle"):
        assert studies.devices.resolve("all", 32) == 2
    assert studies.devices.resolve("all", 30) == 3  # an even split: all three, no warning
    with pytest.raises(ValueError, match="does not split evenly across 3 devices"):
        studies.devices.resolve(3, 32)
    with pytest.warns(UserWarning, match="devices='all'"):
        assert studies.celeba_settings("full", "synthetic").devices == 2
