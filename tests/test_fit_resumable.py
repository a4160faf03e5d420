"""Keras fit that survives an interruption and remembers finished runs (the notebooks' path)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlkit import training
from mtlkit.training import runs


def tiny_build():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(
        inputs,
        {
            "a": keras.layers.Dense(3, name="a")(hidden),
            "b": keras.layers.Dense(2, name="b")(hidden),
        },
    )
    return training.compile_multitask(model, learning_rate=1e-2, loss_weights={"a": 2, "b": 1})


def tiny_data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1), "b": (x[:, 2] > 0).astype("int32")}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


class StopAt(keras.callbacks.Callback):
    """Simulate a disconnect: raise at the start of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("session disconnected")


def test_interrupted_fit_resumes_after_the_last_finished_epoch(tmp_path):
    training.set_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(
            tiny_build, tiny_data(), epochs=4, run_dir=tmp_path, callbacks=[StopAt(2)], verbose=0
        )
    assert len(training.read_history_csv(tmp_path / "log.csv")["loss"]) == 2
    assert not (tmp_path / "history.json").exists()

    epochs_run = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
    history = training.fit_resumable(
        tiny_build,
        tiny_data(),
        epochs=4,
        run_dir=tmp_path,
        validation_data=tiny_data(),
        callbacks=[counter],
        verbose=0,
    )
    assert epochs_run == [2, 3]  # only the missing epochs were trained
    assert len(history["loss"]) == 4
    assert {"a_loss", "b_accuracy"} <= set(history)
    stored = json.loads((tmp_path / "history.json").read_text())
    assert stored["epochs_done"] == 4 and stored["finished"]
    assert stored["history"]["loss"] == history["loss"]
    assert not (tmp_path / "backup").exists()


def test_finished_runs_are_read_back_not_retrained(tmp_path):
    first = training.fit_resumable(
        tiny_build,
        tiny_data(),
        epochs=2,
        run_dir=tmp_path,
        extra_eval={"test": tiny_data()},
        verbose=0,
    )
    assert len(first["test_loss"]) == 2 and "test_a_accuracy" in first

    def must_not_build():
        raise AssertionError("a finished run was trained again")

    assert training.fit_resumable(must_not_build, tiny_data(), epochs=2, run_dir=tmp_path) == first
    with pytest.raises(ValueError, match="recompute=True"):
        training.fit_resumable(must_not_build, tiny_data(), epochs=3, run_dir=tmp_path)
    again = training.fit_resumable(
        tiny_build, tiny_data(), epochs=3, run_dir=tmp_path, recompute=True, verbose=0
    )
    assert len(again["loss"]) == 3


def test_an_epoch_logged_twice_keeps_its_last_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n1,0.8\n2,0.7\n")
    assert training.read_history_csv(path) == {"loss": [1.0, 0.8, 0.7]}


def test_non_finite_loss_stops_with_the_task_and_epoch(tmp_path):
    x = np.full((32, 6), 3e38, dtype="float32")  # overflows to inf, then NaN
    y = {"a": np.zeros(32, "int32"), "b": np.zeros(32, "int32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(FloatingPointError, match=r"a_loss.*epoch 1"):
        training.fit_resumable(tiny_build, ds, epochs=2, run_dir=tmp_path, verbose=0)
    assert not (tmp_path / "history.json").exists()


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    runs.atomic_write_json(path, {"ok": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(OSError, match="free some space"):
        runs.atomic_write_json(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 1}  # the old file is intact
    assert not list(tmp_path.glob("*.tmp"))


def test_loss_weights_must_name_outputs():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(inputs)})
    with pytest.raises(ValueError, match="loss_weights must name only the tasks"):
        training.compile_multitask(model, learning_rate=1e-3, loss_weights={"fine": 2})


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        training.set_seed("0")


def test_empty_training_data_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="train_data is empty"):
        training.fit_resumable(tiny_build, tiny_data().take(0), epochs=1, run_dir=tmp_path)


def test_a_backup_from_a_different_model_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(
            tiny_build, tiny_data(), epochs=3, run_dir=tmp_path, callbacks=[StopAt(1)], verbose=0
        )

    def wider():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5)(inputs)
        model = keras.Model(
            inputs,
            {
                "a": keras.layers.Dense(3, name="a")(hidden),
                "b": keras.layers.Dense(2, name="b")(hidden),
            },
        )
        return training.compile_multitask(model, learning_rate=1e-2)

    with pytest.raises(ValueError, match="written by a different model"):
        training.fit_resumable(wider, tiny_data(), epochs=3, run_dir=tmp_path, verbose=0)


def test_gpu_speed_options_are_off_by_default_and_named_when_on():
    from mtlkit import studies

    plain = studies.cifar100_settings("quick")
    assert plain.jit_compile is False and plain.mixed_precision is False
    assert studies.build_compiled("shared_conv", plain).jit_compile is False
    fast = studies.cifar100_settings("quick", jit_compile=True, mixed_precision=True)
    assert "mixed float16" in fast.data_label and "jit_compile=True" in fast.data_label
    assert fast.tag != plain.tag  # their runs are stored apart
    try:
        model = studies.build_compiled("shared_conv", fast)
        assert model.dtype_policy.name == "mixed_float16"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert all(out.dtype == "float32" for out in model.outputs)  # logits stay float32
        model = studies.build_compiled("shared_conv", plain)  # back to float32
        assert model.dtype_policy.name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


class _AddsToLogs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["added"] = epoch + 0.5


def test_values_a_callback_adds_are_kept_in_the_history(tmp_path):
    history = training.fit_resumable(tiny_build, tiny_data(), epochs=2, run_dir=tmp_path,
                                     callbacks=[_AddsToLogs()], verbose=0)  # fmt: skip
    assert history["added"] == [0.5, 1.5]


def test_recalibrate_batchnorm_sets_the_moving_statistics_to_the_batch():
    x = keras.Input((3,))
    h = keras.layers.Dense(4, name="d")(x)
    model = keras.Model(x, {"a": keras.layers.BatchNormalization(name="a")(h)})
    images = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)).astype("float32")
    training.recalibrate_batchnorm(model, images)
    bn = model.get_layer("a")
    features = keras.ops.convert_to_numpy(model.get_layer("d")(images))
    moving_mean = keras.ops.convert_to_numpy(bn.moving_mean)
    moving_variance = keras.ops.convert_to_numpy(bn.moving_variance)
    np.testing.assert_allclose(moving_mean, features.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(moving_variance, features.var(0), rtol=1e-3)
    assert bn.momentum == 0.99  # restored


def _interrupted(run_dir, epochs=4, at=2):
    training.set_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(tiny_build, tiny_data(), epochs=epochs, run_dir=run_dir,
                               callbacks=[StopAt(at)], verbose=0)  # fmt: skip


def test_a_log_line_cut_short_is_dropped_and_its_epoch_trained_again(tmp_path):
    _interrupted(tmp_path)
    log = tmp_path / "log.csv"
    log.write_text(log.read_text() + "2,0.5,0.")  # a kill in the middle of the next line
    with pytest.warns(UserWarning, match="cut short by an interrupted write"):
        history = training.fit_resumable(tiny_build, tiny_data(), epochs=4, run_dir=tmp_path,
                                         verbose=0)  # fmt: skip
    assert len(history["loss"]) == 4 and np.isfinite(history["loss"]).all()


def test_a_damaged_history_or_log_is_named(tmp_path):
    training.fit_resumable(tiny_build, tiny_data(), epochs=1, run_dir=tmp_path, verbose=0)
    text = (tmp_path / "history.json").read_text()
    (tmp_path / "history.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="history.json is damaged.*recompute=True"):
        training.fit_resumable(tiny_build, tiny_data(), epochs=1, run_dir=tmp_path, verbose=0)
    (tmp_path / "log.csv").write_text("1,0.5\n")  # no header line
    with pytest.raises(ValueError, match="log.csv is damaged"):
        training.read_history_csv(tmp_path / "log.csv")


def test_a_truncated_backup_is_named(tmp_path):
    _interrupted(tmp_path)
    files = [f for f in (tmp_path / "backup").rglob("*") if f.is_file()]
    assert files, "the interrupted run left no backup to damage"
    for f in files:
        f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
    with pytest.raises(ValueError, match="backup .* is damaged.*recompute=True"):
        training.fit_resumable(tiny_build, tiny_data(), epochs=4, run_dir=tmp_path, verbose=0)


def test_extra_eval_after_the_last_epoch_only(tmp_path):
    training.set_seed(0)
    history = training.fit_resumable(
        tiny_build, tiny_data(), epochs=3, run_dir=tmp_path, validation_data=tiny_data(),
        extra_eval={"test": tiny_data(32)}, extra_eval_last=True, verbose=0,
    )  # fmt: skip
    assert np.isnan(history["test_loss"][:2]).all()
    assert np.isnan(history["test_a_accuracy"][:2]).all()
    assert np.isfinite(history["test_loss"][2]) and np.isfinite(history["test_a_accuracy"][2])
    assert {k.removeprefix("val_") for k in history if k.startswith("val_")} == {
        k.removeprefix("test_") for k in history if k.startswith("test_")
    }
