"""The Colab path: every training notebook runs end to end in the standard profile.

The standard profile is what a Colab user gets: CIFAR-100 and CelebA through TensorFlow
Datasets and the ImageNet-pretrained ResNet18 through keras-hub. Here both are offline
stand-ins (``tfds.testing.mock_data`` and a preset folder written by ``save_to_preset``),
and the profile is shrunk to one epoch on a few dozen images, the steps run eagerly (see
``tests/_standard_path``). A path test, not a result: it fails when a notebook cannot run on
that path. Each notebook's wall and CPU time are printed (``pytest -s``).

The cheaper tests below guard the settings the notebooks rely on in-process.
"""

from __future__ import annotations

import dataclasses
import resource
import shutil
import socket
import time

import keras
import numpy as np
import papermill
import pytest
import tensorflow_datasets as tfds
from _standard_path import (
    CELEBA_SHRINK,
    CIFAR_SHRINK,
    MOCK_EXAMPLES,
    execute,
    failure_summary,
    numbered_notebooks,
    parameters_cell,
    printed_text,
    slowest_cells,
    stored_runs,
    training_notebooks,
    with_setup,
)

from mtlkit import data, studies
from mtlkit.data import cifar100
from mtlkit.models import architectures

SEEDS: dict[str, tuple[int, ...]] = {}
"""Notebooks that need more than one seed per run for their comparison code (default: 1)."""

PARAMETERS = {"07_remedies": {"METHODS": ["ew", "uw", "mgda", "dst"]}}
"""Notebook parameters besides the profile. Notebook 07 trains its methods one after the
other through the same code; the path needs one of each kind (a loss weighting, a gradient
method, DST), not the standard profile's nine, which took 96 s of CI. Every method's own
path is tested in the unit tests."""

LOCAL_DATA = ("MTLKIT_CELEBA_DIR", "MTLKIT_CIFAR100_DIR")  # unset: the TFDS route is taken


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A local ResNet18 preset (random weights) and the weights it holds, by variable path."""
    folder = tmp_path_factory.mktemp("presets") / "resnet18"
    backbone = architectures.resnet18_backbone(None)
    backbone.save_to_preset(str(folder))
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in backbone.weights}
    return folder, weights


@pytest.fixture
def no_local_data(monkeypatch):
    """No local copy of either dataset: the settings choose TensorFlow Datasets."""
    for name in LOCAL_DATA:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """One runs folder for all the notebooks, as on Colab: notebook 06 reads 02's runs back.

    Removed afterwards: the runs' checkpoints come to about 3 GB (a ResNet18 and its Adam
    state per CelebA run), and pytest keeps its last three temporary folders.
    """
    folder = tmp_path_factory.mktemp("runs")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def standard_env(monkeypatch, tmp_path, preset, runs_dir, no_local_data):
    """The environment of a Colab session with no local data, every folder temporary."""
    monkeypatch.setenv("MTLKIT_PROFILE", "standard")
    monkeypatch.setenv("MTLKIT_RESNET18_PRESET", str(preset[0]))
    monkeypatch.setenv("MTLKIT_RUNS_DIR", str(runs_dir))
    for name, folder in (("FIGURES", "figures"), ("DATA", "data")):
        monkeypatch.setenv(f"MTLKIT_{name}_DIR", str(tmp_path / folder))
    return tmp_path


# ---------------------------------------------------------- the settings they rely on
@pytest.mark.parametrize("notebook", numbered_notebooks(), ids=lambda path: path.stem)
def test_a_notebook_opened_in_colab_runs_the_standard_profile(notebook, monkeypatch):
    """Colab sets no MTLKIT_PROFILE: the parameters cell's own default is what runs there."""
    monkeypatch.delenv("MTLKIT_PROFILE", raising=False)
    namespace = {}
    exec(parameters_cell(notebook).source, namespace)  # plain assignments (papermill's cell)
    assert namespace.get("PROFILE") == "standard", f"{notebook.name}: {namespace.get('PROFILE')!r}"


USE_CODE = tfds.testing.MockPolicy.USE_CODE  # records built from the builders' features


def _examples(batches) -> int:
    """How many examples a batched dataset yields."""
    return sum(len(images) for images, _ in batches)


def test_mocked_tfds_gives_every_split_of_the_shrunk_profiles(no_local_data):
    """The harness' sizes: each split of each study is non-empty and as small as asked."""
    cifar = studies.cifar100_settings("standard", **CIFAR_SHRINK)
    celeba = studies.celeba_settings("standard", **CELEBA_SHRINK)
    assert cifar.source == celeba.source == "tfds"
    validation = round(cifar100.VALIDATION_FRACTION * MOCK_EXAMPLES)
    expected = {
        "cifar": {
            "train": min(CIFAR_SHRINK["train_limit"], MOCK_EXAMPLES - validation),
            "validation": min(CIFAR_SHRINK["eval_limit"], validation),
            "test": min(CIFAR_SHRINK["eval_limit"], MOCK_EXAMPLES),
        },
        "celeba": {
            "train": min(CELEBA_SHRINK["train_limit"], MOCK_EXAMPLES),
            "validation": min(CELEBA_SHRINK["eval_limit"], MOCK_EXAMPLES),
            "test": min(CELEBA_SHRINK["eval_limit"], MOCK_EXAMPLES),
        },
    }
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, policy=USE_CODE):
        cifar_sets = studies.cifar100_datasets(cifar, seed=0)
        celeba_sets = studies.celeba_datasets(celeba, seed=0)
        celeba_sets["train"] = celeba_sets["train"](0)  # the batches of epoch 0
        sizes = {
            "cifar": {split: _examples(ds) for split, ds in cifar_sets.items()},
            "celeba": {split: _examples(ds) for split, ds in celeba_sets.items()},
        }
        image, labels = next(iter(celeba_sets["train"]))
    assert sizes == expected
    assert all(n > 0 for study in sizes.values() for n in study.values())
    assert tuple(image.shape[1:]) == (32, 32, 3) and set(labels) == set(data.EIGHT)


def test_standard_celeba_settings_build_the_pretrained_model(monkeypatch, preset, no_local_data):
    """``celeba_settings("standard")``: TFDS, ImageNet weights from the preset, its epochs;
    the published benchmark (``celeba40``) starts from random weights, as its authors did."""
    folder, saved = preset
    monkeypatch.setenv("MTLKIT_RESNET18_PRESET", str(folder))
    for study, profiles in studies.CELEBA_PROFILES.items():
        settings = studies.celeba_settings("standard", study=study)
        weights, label = ("imagenet", "ImageNet-pretrained")
        if study == "celeba40":
            weights, label = (None, "random-init")
        assert (settings.source, settings.weights) == ("tfds", weights), study
        assert settings.epochs == profiles["standard"]["epochs"] <= profiles["full"]["epochs"]
        assert label in settings.data_label
        assert "CelebA (TFDS celeb_a)" in settings.data_label
    settings = studies.celeba_settings("standard", study="attributes")
    model = studies.build_celeba_model(dataclasses.replace(settings, image_size=32))
    backbone = model.get_layer("resnet18")
    assert [w.path for w in backbone.weights] == list(saved)
    for weight in backbone.weights:  # the preset's (random) weights, not a fresh draw
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), saved[weight.path])


def _unreachable(*args, **kwargs):
    raise ConnectionError("network unreachable (blocked by the test)")


def test_standard_celeba_without_tfds_says_how_to_go_on(monkeypatch, tmp_path, no_local_data):
    """No local copy, TFDS unreachable: the loader's error names the folder route."""
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))  # nothing prepared
    monkeypatch.setattr(socket, "getaddrinfo", _unreachable)
    monkeypatch.setattr(socket.socket, "connect", _unreachable)
    for method in ("download", "download_and_extract"):  # no retries with back-off either
        monkeypatch.setattr(tfds.download.DownloadManager, method, _unreachable)
    settings = studies.celeba_settings("standard")
    assert settings.source == "tfds"
    with pytest.raises(RuntimeError) as err:
        studies.celeba_datasets(settings, seed=0)
    message = str(err.value)
    assert message.startswith("source='tfds': TensorFlow Datasets could not provide celeb_a")
    for advice in ("source='folder'", "data_dir=", "MTLKIT_CELEBA_DIR", "source='synthetic'"):
        assert advice in message, advice
    assert err.value.__cause__ is not None  # TFDS' own error is kept


# ------------------------------------------------------------------ the notebooks
def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the kernels papermill ran)."""
    usages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


@pytest.mark.parametrize("notebook", training_notebooks(), ids=lambda path: path.stem)
def test_notebook_runs_on_the_standard_path(notebook, standard_env, runs_dir):
    """Executed by papermill with TFDS mocked and the local preset; its runs used TFDS."""
    tmp_path = standard_env
    prepared = with_setup(notebook, tmp_path / notebook.name, SEEDS.get(notebook.stem, (0,)))
    executed = tmp_path / f"executed_{notebook.name}"
    start, cpu, failure = time.perf_counter(), _cpu_seconds(), None
    try:
        execute(prepared, executed, parameters=PARAMETERS.get(notebook.stem))
    except papermill.PapermillExecutionError as err:
        failure = f"{notebook.name}, standard path: {failure_summary(err, executed)}"
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    print(f"\n{notebook.name}: {wall:.1f} s wall, {cpu:.1f} s CPU on the standard path "
          f"(slowest: {slowest_cells(executed)})")  # fmt: skip
    if failure:
        pytest.fail(failure, pytrace=False)

    text = printed_text(executed)
    assert "CIFAR-100 (TensorFlow Datasets)" in text or "CelebA (TFDS celeb_a)" in text, (
        "the notebook printed no data label naming TensorFlow Datasets"
    )
    for stand_in in ("(not CIFAR-100)", "(not CelebA)"):  # how the synthetic data is labelled
        assert stand_in not in text, f"a synthetic stand-in was used: {stand_in}"
    recorded = [run for run in stored_runs(runs_dir) if "source" in run]
    for run in recorded:  # every stored run says which settings made it
        assert (run["profile"], run["source"]) == ("standard", "tfds"), run["folder"]
    pretrained = [run["weights"] for run in recorded if "weights" in run]
    if pretrained:  # a CelebA notebook: the preset's ImageNet weights were asked for
        assert "imagenet" in pretrained, pretrained
