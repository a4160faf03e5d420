"""What the custom loop does with input that would otherwise give a silently wrong result."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_training_loop import LOSSES, arrays, build, dataset

from mtlkit.methods.dst import DSTScheduler
from mtlkit.training import set_seed, train


def _train(run_dir, epochs=1, **kwargs):
    set_seed(0)
    options = dict(losses=LOSSES, optimizer=keras.optimizers.Adam(1e-3), verbose=0)
    return train(build(), dataset(), epochs=epochs, run_dir=run_dir, **{**options, **kwargs})


@pytest.mark.parametrize(
    "changed, match",
    [
        (dict(loss_weights={"a": 2.0}), "loss_weights"),
        (dict(seed=1), "seed"),
        (dict(weighting=None), "trained with the weighting 'dwa'"),  # (checked before)
        (dict(optimizer=keras.optimizers.SGD(1e-3)), "another kind of optimizer"),
    ],
)
def test_resuming_with_other_settings_is_refused(tmp_path, changed, match):
    _train(tmp_path, seed=0, weighting="dwa")
    with pytest.raises(ValueError, match=match):
        _train(tmp_path, epochs=2, **{"seed": 0, "weighting": "dwa", **changed})


def test_resuming_with_another_dst_alpha_is_refused(tmp_path):
    def scheduler(alpha):
        return DSTScheduler(["a", "b"], {"a": 1, "b": 1}, {"a": 1, "b": 1}, alpha=alpha, seed=0)

    _train(tmp_path, scheduler=scheduler(0.1))
    with pytest.raises(ValueError, match="dst_alpha"):
        _train(tmp_path, epochs=2, scheduler=scheduler(0.5))


def test_resuming_with_a_lower_learning_rate_uses_it(tmp_path):
    _train(tmp_path)
    optimizer = keras.optimizers.Adam(1e-4)
    with pytest.warns(UserWarning, match="learning rate 0.0001"):
        _train(tmp_path, epochs=2, optimizer=optimizer)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)


def test_weights_broken_on_the_last_step_are_not_checkpointed(tmp_path):
    class BreakOnLastStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:  # 192 / 32 = 6 steps: the last one, after its loss was measured
                kernel = self.model.get_layer("trunk").kernel
                kernel.assign(np.full(kernel.shape, np.inf, "float32"))

    _train(tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    with pytest.raises(FloatingPointError, match="weight variable"):
        _train(tmp_path / "run", epochs=2, callbacks=[BreakOnLastStep()])
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before


def test_a_diverging_loss_is_reported():
    set_seed(0)  # Adam at 100: losses of 1e4 and more, never NaN
    with pytest.warns(UserWarning, match="diverging"):
        train(build(), dataset(), epochs=2, losses=LOSSES, verbose=0,
              optimizer=keras.optimizers.Adam(100.0))  # fmt: skip


def test_dst_with_a_task_that_has_no_label_is_refused():
    x, y = arrays()
    y = {**y, "b": -np.ones_like(y["b"])}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    scheduler = DSTScheduler(["a", "b"], {"a": 1, "b": 1}, {"a": 1, "b": 1}, seed=0)
    with pytest.raises(ValueError, match=r"\['b'\] had no labelled example"):
        train(build(), data, epochs=1, losses=LOSSES, scheduler=scheduler, verbose=0,
              optimizer=keras.optimizers.Adam(1e-3))  # fmt: skip


def test_dwa_with_a_task_that_has_no_label_is_refused_after_its_first_epoch():
    x, y = arrays()
    y = {**y, "b": -np.ones_like(y["b"])}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    epochs = []
    count = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    with pytest.raises(ValueError, match=r"\['b'\] had no labelled example in epoch 1.*DWA"):
        train(build(), data, epochs=4, losses=LOSSES, weighting="dwa", verbose=0,
              optimizer=keras.optimizers.Adam(1e-3), callbacks=[count])  # fmt: skip
    assert epochs == [0]  # refused at once, not after DWA's two epochs of equal weights
    from mtlkit.methods import weighting  # the method alone names the task too

    method = weighting.get("dwa", ["a", "b"])
    with pytest.raises(ValueError, match=r"\['b'\] had none"):
        method.on_epoch_start(2, [[1.0, float("nan")], [0.9, float("nan")]])


@pytest.mark.parametrize(
    "task, value, match",
    [("a", -2, "below -1"), ("b", -2.0, "below -1"), ("a", 3, "below the number")],
)
def test_bad_label_values_are_named(task, value, match):
    x, y = arrays()
    y[task] = y[task].copy()
    y[task][0] = value
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(ValueError, match=rf"\['{task}'\].*{match}"):
        train(build(), data, epochs=1, losses=LOSSES, verbose=0,
              optimizer=keras.optimizers.Adam(1e-3))  # fmt: skip


def _labels(task, values):
    x, y = arrays(64)
    y = {**y, task: values}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


@pytest.mark.parametrize(
    "task, values, match",
    [
        ("b", np.where(arrays(64)[1]["b"] > 0, 1.0, -1.0), "CelebA's file form"),
        ("a", np.eye(3, dtype="float32")[arrays(64)[1]["a"]], "look one-hot"),
    ],
)
def test_label_forms_that_would_train_wrongly_are_refused(task, values, match):
    with pytest.raises(ValueError, match=match):
        train(build(), _labels(task, values), epochs=1, losses=LOSSES, verbose=0,
              optimizer=keras.optimizers.Adam(1e-3))  # fmt: skip


def test_unbatched_data_is_named():
    x, y = arrays(64)
    unbatched = tf.data.Dataset.from_tensor_slices((x, {"a": y["a"], "b": y["b"][:, 0]}))
    with pytest.raises(ValueError, match="unbatched"):
        train(build(), unbatched, epochs=1, losses=LOSSES, verbose=0,
              optimizer=keras.optimizers.Adam(1e-3))  # fmt: skip


def test_an_optimizer_name_works_and_a_gradient_method_needs_two_tasks():
    history = train(build(), dataset(64), epochs=1, losses=LOSSES, verbose=0, optimizer="adam")
    assert np.isfinite(history.history["loss"]).all()
    x = keras.Input((8,))
    single = keras.Model(x, {"a": keras.layers.Dense(3, name="a")(keras.layers.Dense(4)(x))})
    with pytest.raises(ValueError, match="has one"):
        train(single, dataset(64).map(lambda x, y: (x, {"a": y["a"]})), epochs=1,
              losses=LOSSES["a"], optimizer="adam", weighting="pcgrad", verbose=0)  # fmt: skip


def test_images_of_the_wrong_size_are_named():
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="trunk")(x))
    model = keras.Model(x, {"a": keras.layers.Dense(3, name="a")(h)})
    images = np.zeros((8, 16, 16, 3), "float32")
    data = tf.data.Dataset.from_tensor_slices((images, {"a": np.zeros(8, "int64")})).batch(4)
    with pytest.raises(ValueError, match=r"inputs of shape \(16, 16, 3\).*takes \(8, 8, 3\)"):
        train(model, data, epochs=1, losses={"a": LOSSES["a"]}, optimizer="adam", verbose=0)
    right = tf.data.Dataset.from_tensor_slices((images[:, :8, :8], {"a": np.zeros(8, "int64")}))
    with pytest.raises(ValueError, match="validation_data gives inputs of shape"):
        train(model, right.batch(4), epochs=1, losses={"a": LOSSES["a"]}, optimizer="adam",
              validation_data=data, verbose=0)  # fmt: skip


def _fit(data, **kwargs):
    set_seed(0)
    options = dict(losses=LOSSES, optimizer=keras.optimizers.SGD(1e-2), verbose=0)
    return train(build(), data, epochs=1, **{**options, **kwargs})


def _with(task, value, n=64, dtype=None):
    """Batches of 32 whose last example's ``task`` label is ``value``."""
    x, y = arrays(n)
    y[task] = y[task].astype(dtype or y[task].dtype)
    y[task][-1] = value
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def test_an_empty_validation_set_is_refused():
    with pytest.raises(ValueError, match="validation_data gave no batches"):
        _fit(dataset(64), validation_data=dataset(32).take(0))
    unknown_size = dataset(32).filter(lambda x, y: False)  # found after the first epoch
    with pytest.raises(ValueError, match="validation_data gave no batches"):
        _fit(dataset(64), validation_data=unknown_size)


def test_a_validation_task_without_labels_is_reported():
    x, y = arrays(32)
    unlabelled = tf.data.Dataset.from_tensor_slices((x, {**y, "b": -np.ones_like(y["b"])}))
    with pytest.warns(UserWarning, match="'b' had no labelled example in validation_data"):
        history = _fit(dataset(64), validation_data=unlabelled.batch(32)).history
    assert np.isnan(history["val_b_loss"][0]) and np.isfinite(history["val_loss"][0])


@pytest.mark.parametrize(
    "task, value, match", [("a", 3, "below the number"), ("b", -2.0, "below -1")]
)
def test_bad_validation_labels_are_named(task, value, match):
    with pytest.raises(ValueError, match=rf"\['{task}'\]: .*{match}.*\(in validation_data\)"):
        _fit(dataset(64), validation_data=_with(task, value))


@pytest.mark.parametrize("value, match", [(3.0, "below the number"), (1.5, "whole numbers")])
def test_float_class_labels_are_checked(value, match):
    with pytest.raises(ValueError, match=rf"\['a'\]: .*{match}.*\(in train_data\)"):
        _fit(_with("a", value, dtype="float32"))


def test_float_class_labels_that_are_whole_train_as_integers():
    whole = _fit(_with("a", 2, dtype="float32")).history["a_loss"]
    assert whole == _fit(_with("a", 2)).history["a_loss"]


def test_bool_binary_labels_train_as_0_and_1():
    x, y = arrays(64)
    as_bool = tf.data.Dataset.from_tensor_slices((x, {**y, "b": y["b"] > 0.5})).batch(32)
    history = _fit(as_bool, validation_data=as_bool).history
    assert history["b_loss"] == _fit(dataset(64)).history["b_loss"]
    assert np.isfinite(history["val_b_accuracy"]).all()


@pytest.mark.parametrize(
    "weights, error, match",
    [
        ({"a": float("nan")}, ValueError, "finite number >= 0"),
        ({"a": float("inf")}, ValueError, "finite number >= 0"),
        ({"b": -1.0}, ValueError, "finite number >= 0"),
        ({"a": "2"}, ValueError, "finite number >= 0"),
        ([1.0, 2.0], TypeError, "dict keyed by task"),
    ],
)
def test_bad_loss_weights_are_refused_up_front(weights, error, match):
    with pytest.raises(error, match=match):
        _fit(dataset(64), loss_weights=weights)


def test_a_run_dir_that_is_a_file_is_named(tmp_path):
    """A ``run_dir`` that is a file, or lies under one, gets a message naming the folder (it
    used to be a raw ``FileExistsError`` or ``NotADirectoryError``)."""
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for run_dir in (taken, taken / "run"):
        with pytest.raises(ValueError, match=r"cannot be a folder: .*taken is a file"):
            _train(run_dir)


def test_a_checkpoint_without_its_state_is_named(tmp_path):
    """A ``checkpoint.npz`` that lacks the kit's state (its ``signature``, ``history``...) is
    refused with the fix, not a ``KeyError``."""
    _train(tmp_path, epochs=1)
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as stored:
        arrays_ = {k: stored[k] for k in stored.files}
    state = json.loads(str(arrays_["state"]))
    for key in ("signature", "history"):
        damaged = {k: v for k, v in state.items() if k != key}
        np.savez(path, **{**arrays_, "state": np.array(json.dumps(damaged))})
        with pytest.raises(ValueError, match=rf"lacks \['{key}'\].*Delete it"):
            _train(tmp_path, epochs=2)


@pytest.mark.parametrize("seed", ["x", 1.5, True])
def test_a_dst_seed_that_is_not_a_number_is_refused(seed):
    with pytest.raises(TypeError, match="use a whole number"):
        DSTScheduler(["a", "b"], metrics=("incompleteness",), seed=seed)
    with pytest.raises(TypeError, match="use a whole number"):
        DSTScheduler(["a", "b"], metrics=("incompleteness",), seed=0).reseed(seed)


@pytest.mark.parametrize("setting", ["rescale_losses", "redraw_if_all_dropped"])
def test_resuming_with_other_dst_settings_is_refused(tmp_path, setting):
    """A DST setting that changes the losses or the gates must match on resume."""

    def scheduler(**kwargs):
        return DSTScheduler(["a", "b"], metrics=("incompleteness",), seed=0, **kwargs)

    _train(tmp_path, scheduler=scheduler(**{setting: True}))
    with pytest.raises(ValueError, match=f"dst_{setting}: stored True, now False"):
        _train(tmp_path, epochs=2, scheduler=scheduler(**{setting: False}))


def test_resuming_with_the_dst_metrics_in_another_order_is_accepted(tmp_path):
    def scheduler(metrics):
        return DSTScheduler(["a", "b"], metrics=metrics, seed=0)

    _train(tmp_path, scheduler=scheduler(("stagnancy", "incompleteness")))
    history = _train(tmp_path, epochs=2, scheduler=scheduler(("incompleteness", "stagnancy")))
    assert len(history.history["loss"]) == 2


def _piecewise(boundaries, values):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return keras.optimizers.Adam(schedule)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: _piecewise([20], [1e-3, 5e-4]),  # other boundaries, same first rate
        lambda: _piecewise([10], [2e-3, 5e-4]),  # another first rate (was a TypeError)
        lambda: keras.optimizers.Adam(1e-3),  # a plain rate
    ],
)
def test_resuming_with_another_learning_rate_schedule_is_refused(tmp_path, optimizer):
    _train(tmp_path, optimizer=_piecewise([10], [1e-3, 5e-4]))
    match = r"learning-rate schedule PiecewiseConstantDecay.*\(learning_rate_schedule\)"
    with pytest.raises(ValueError, match=match):
        _train(tmp_path, epochs=2, optimizer=optimizer())


def test_resuming_with_the_same_learning_rate_schedule_is_accepted(tmp_path):
    _train(tmp_path, optimizer=_piecewise([10], [1e-3, 5e-4]))
    history = _train(tmp_path, epochs=2, optimizer=_piecewise([10], [1e-3, 5e-4]))
    assert len(history.history["loss"]) == 2
