"""The work count (``mtlkit.work``): what a run did, counted exactly, and nothing when off."""

import json

import keras
import pytest
from test_training_loop import LOSSES, build, dataset

from mtlkit import training, work


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    path = tmp_path / "work.json"
    monkeypatch.setenv("MTLKIT_WORK_LOG", str(path))
    monkeypatch.setattr(work, "_totals", {})
    return path


def test_forward_gflop_counts_dense_and_conv_layers():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(x)  # 8*8*4 outputs, 3*3*3 MACs each
    y = keras.layers.Dense(2)(keras.layers.Flatten()(h))  # 256*2 MACs
    model = keras.Model(x, y)
    assert work.forward_gflop(model) == pytest.approx(2 * (8 * 8 * 4 * 27 + 256 * 2) / 1e9)


def test_a_model_of_any_input_size_is_not_counted():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, keras.layers.Conv2D(4, 3)(x))
    assert work.forward_gflop(model) != work.forward_gflop(model)  # NaN


def test_the_loop_counts_images_traces_and_checkpoints(ledger, tmp_path):
    model = build()
    training.train(model, dataset(96), epochs=2, losses=LOSSES, verbose=0,
                   optimizer=keras.optimizers.Adam(1e-3), validation_data=dataset(64),
                   run_dir=tmp_path / "run", checkpoints=False)  # fmt: skip
    counted = json.loads(ledger.read_text())
    gflop = work.forward_gflop(model)
    assert counted["train_images"] == 2 * 96 and counted["eval_images"] == 2 * 64
    assert counted["train_gflop"] == pytest.approx(2 * 96 * 3 * gflop)
    assert counted["traces"] == 2  # the training and evaluation steps, once each
    assert counted["checkpoints"] == 1  # checkpoints=False: at the end only


def test_fit_counts_the_images_it_was_given(ledger, tmp_path):
    def compiled():
        model = build()
        model.compile("adam", loss=LOSSES)
        return model

    training.fit_resumable(compiled, dataset(96), epochs=2, run_dir=tmp_path / "fit",
                           validation_data=dataset(64), verbose=0, backups=False)  # fmt: skip
    counted = json.loads(ledger.read_text())
    assert counted["train_images"] == 2 * 96 and counted["eval_images"] == 2 * 64
    assert "checkpoints" not in counted  # backups=False


def test_nothing_is_counted_when_off(monkeypatch, tmp_path):
    monkeypatch.delenv("MTLKIT_WORK_LOG", raising=False)
    monkeypatch.setattr(work, "_totals", {})
    training.train(build(), dataset(64), epochs=1, losses=LOSSES, verbose=0,
                   optimizer=keras.optimizers.Adam(1e-3))  # fmt: skip
    assert work.totals() == {}


def test_fit_counts_its_traces_once_per_model(ledger, tmp_path):
    model = build()
    model.compile("adam", loss=LOSSES)
    for run in ("one", "two"):  # the second fit reuses the model's traced steps
        training.fit_resumable(lambda: model, dataset(64), epochs=1, run_dir=tmp_path / run,
                               verbose=0, backups=False)  # fmt: skip
    assert json.loads(ledger.read_text())["traces"] == 1  # the train function, once


def test_each_notebook_of_a_run_keeps_its_own_log(tmp_path, monkeypatch):
    """run_notebooks.py names each kernel's notebook; "{notebook}" in the path takes it, so
    two notebooks run side by side do not overwrite one file."""
    monkeypatch.setenv("MTLKIT_WORK_LOG", str(tmp_path / "{notebook}.json"))
    monkeypatch.setenv("MTLKIT_NOTEBOOK", "02_cifar100_comparison")
    assert work.log_path() == tmp_path / "02_cifar100_comparison.json"
    monkeypatch.delenv("MTLKIT_NOTEBOOK")
    assert work.log_path().name.startswith("process-")  # a plain process: its pid
    monkeypatch.setenv("MTLKIT_WORK_LOG", str(tmp_path / "one.json"))
    assert work.log_path() == tmp_path / "one.json"  # no placeholder: the file as named
