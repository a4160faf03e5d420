"""The readable training loop: equal to fit, DST gates, resume, determinism, failures."""

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlkit.methods.dst import DSTScheduler
from mtlkit.training import runs, set_seed, train
from mtlkit.training.runs import CHECKPOINT

LOSSES = {
    "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "b": keras.losses.BinaryCrossentropy(from_logits=True),
}


def build(dropout=0.0):
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name="drop")(h)
    heads = {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)}
    return keras.Model(x, heads)


def arrays(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = {
        "a": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1),
        "b": (x[:, 2:3] > 0).astype("float32"),
    }
    return x, y


def dataset(n=192, batch=32, seed=0):
    return tf.data.Dataset.from_tensor_slices(arrays(n, seed)).batch(batch)


# the same builders here and in the subprocesses below
BUILD = "\n\n".join(inspect.getsource(f) for f in (build, arrays, dataset))


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def max_diff(u, v):
    return max(float(np.abs(a - b).max()) for a, b in zip(u, v))


# ------------------------------------------------------------------ equal to fit
def test_train_without_scheduler_equals_fit():
    set_seed(3)
    fitted = build()
    start = weights_of(fitted)
    fitted.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=LOSSES, loss_weights={"a": 2.0, "b": 0.5}
    )
    fit_history = fitted.fit(dataset(), epochs=3, verbose=0).history
    ours = build()
    ours.set_weights(start)
    history = train(
        ours,
        dataset(),
        epochs=3,
        losses=LOSSES,
        optimizer=keras.optimizers.Adam(1e-2),
        loss_weights={"a": 2.0, "b": 0.5},
        verbose=0,
    ).history
    assert max_diff(weights_of(fitted), start) > 1e-2  # training did move the weights
    assert max_diff(weights_of(fitted), weights_of(ours)) < 1e-5  # BatchNorm statistics included
    for key in ("loss", "a_loss", "b_loss"):
        np.testing.assert_allclose(history[key], fit_history[key], rtol=1e-5)


# ------------------------------------------------------------------ DST gates
class Gates(keras.callbacks.Callback):
    """Keep every head's weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.heads = []

    def on_epoch_end(self, epoch, logs=None):
        self.heads.append({t: weights_of(self.model.get_layer(t)) for t in ("a", "b", "trunk")})


def run_with_b_dropped_in_epoch_2(optimizer):
    """Two epochs; the scheduler's gates are forced to a=1, b=0 in the second."""
    set_seed(0)
    model = build()
    scheduler = DSTScheduler(["a", "b"], metrics=("incompleteness",), seed=0)
    forced = iter([{"a": 1, "b": 1}, {"a": 1, "b": 0}])
    scheduler.sample = lambda: next(forced)
    recorder = Gates()
    history = train(
        model,
        dataset(),
        epochs=2,
        losses=LOSSES,
        optimizer=optimizer,
        scheduler=scheduler,
        callbacks=[recorder],
        verbose=0,
    )
    return recorder.heads, history


def test_a_dropped_task_sends_no_gradient_into_its_head():
    (first, second), history = run_with_b_dropped_in_epoch_2(keras.optimizers.SGD(0.1))
    assert history.history["b_gate"] == [1.0, 0.0]
    # plain SGD moves a weight by lr * gradient: b's head stands still, so its gradient was 0
    for before, after in zip(first["b"], second["b"]):
        np.testing.assert_array_equal(before, after)
    assert max_diff(first["a"], second["a"]) > 1e-4
    assert max_diff(first["trunk"], second["trunk"]) > 1e-4
    # the dropped task's loss is still measured
    assert np.isfinite(history.history["b_loss"][1])


def test_with_adam_a_dropped_head_still_drifts_by_momentum():
    # the teaching point of the docstring: gradient 0, but Adam's first moment is not
    (first, second), _ = run_with_b_dropped_in_epoch_2(keras.optimizers.Adam(1e-2))
    assert max_diff(first["b"], second["b"]) > 1e-4


def test_new_gates_do_not_retrace_the_step():
    _, history = run_with_b_dropped_in_epoch_2(keras.optimizers.SGD(0.1))
    assert history.step_function.experimental_get_tracing_count() == 1
    # nor does a smaller last batch (192 = 3 x 50 + 42) on TensorFlow, whose step has an
    # input signature with no fixed batch size; jax.jit traces once per batch shape (as the
    # loop's _compile_jax says), so there the two shapes, 50 and 42, give exactly two traces
    history = train(
        build(),
        dataset(batch=50),
        epochs=1,
        losses=LOSSES,
        optimizer=keras.optimizers.SGD(0.1),
        verbose=0,
    )
    batch_shapes = 2 if keras.backend.backend() == "jax" else 1
    assert history.step_function.experimental_get_tracing_count() == batch_shapes


def test_measuring_pass_gives_the_starting_losses():
    set_seed(1)
    model = build()
    x, y = arrays()
    predictions = model(x, training=True)  # training mode, as the measuring pass
    expected = {t: float(LOSSES[t](y[t], predictions[t])) for t in LOSSES}
    scheduler = DSTScheduler(["a", "b"], metrics=("incompleteness", "stagnancy"), seed=0)
    # one batch of the whole set: the batch mean is the data mean
    train(
        model,
        dataset(batch=192),
        epochs=1,
        losses=LOSSES,
        optimizer=keras.optimizers.SGD(0.1),
        scheduler=scheduler,
        verbose=0,
    )
    assert scheduler.initial == pytest.approx(expected, rel=1e-5)


def test_progress_bar_and_history_keys(capsys):
    scheduler = DSTScheduler(["a", "b"], metrics=("incompleteness", "stagnancy"), seed=0)
    history = train(
        build(),
        dataset(),
        epochs=2,
        losses=LOSSES,
        optimizer=keras.optimizers.Adam(1e-2),
        scheduler=scheduler,
        validation_data=dataset(seed=1),
        verbose=1,
    ).history
    assert "Epoch 2/2" in capsys.readouterr().out
    for key in (
        "loss",
        "a_loss",
        "a_accuracy",
        "b_accuracy",
        "a_gate",
        "b_keep_prob",
        "val_loss",
        "val_a_loss",
        "val_b_accuracy",
    ):
        assert len(history[key]) == 2, key
    assert history["a_keep_prob"][0] == 1.0 and history["a_gate"][0] == 1.0
    assert history["a_keep_prob"][1] == pytest.approx(scheduler.history[0]["next_probability"]["a"])


def test_early_stopping_works_and_is_remembered(tmp_path):
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=0)
    kwargs = dict(
        epochs=6, losses=LOSSES, optimizer=keras.optimizers.Adam(1e-2), run_dir=tmp_path, verbose=0
    )
    history = train(build(), dataset(), callbacks=[stop], **kwargs).history
    assert len(history["loss"]) == 2
    again = train(build(), dataset(), **kwargs).history  # the stopped run is not continued
    assert again == history


# ----------------------------------------------------------------- determinism
def test_same_seed_twice_gives_identical_histories():
    runs = []
    for _ in range(2):
        set_seed(5)
        model = build(dropout=0.3)
        scheduler = DSTScheduler(["a", "b"], metrics=("incompleteness", "stagnancy"))

        def data(e):
            return tf.data.Dataset.from_tensor_slices(arrays()).shuffle(192, seed=5 + e).batch(32)

        runs.append(
            train(
                model,
                data,
                epochs=3,
                losses=LOSSES,
                optimizer=keras.optimizers.Adam(1e-2),
                scheduler=scheduler,
                seed=5,
                verbose=0,
            ).history
        )
    assert runs[0] == runs[1]
    set_seed(6)
    other = train(
        build(dropout=0.3),
        dataset(),
        epochs=3,
        losses=LOSSES,
        optimizer=keras.optimizers.Adam(1e-2),
        seed=6,
        verbose=0,
    ).history
    assert other["loss"] != runs[0]["loss"]


# ------------------------------------------------------------------ resume
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (
    textwrap.dedent("""
    import json, os, sys
    import numpy as np, keras, tensorflow as tf
    from mtlkit.training import train, set_seed
    from mtlkit.methods.dst import DSTScheduler
    LOSSES = {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "b": keras.losses.BinaryCrossentropy(from_logits=True)}
""")
    + BUILD
    + textwrap.dedent("""
    run_dir, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]

    class Kill(keras.callbacks.Callback):  # dies in the middle of epoch 3
        def on_train_batch_begin(self, batch, logs=None):
            if self.params and self._epoch == 2 and batch == 3:
                os._exit(17)
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    class Count(keras.callbacks.Callback):
        steps = 0
        def on_train_batch_end(self, batch, logs=None):
            Count.steps += 1

    set_seed(11)
    model = build(dropout=0.2)
    scheduler = DSTScheduler(
        ["a", "b"], depths={"a": 3, "b": 2}, sample_counts={"a": 5, "b": 4}, seed=11
    )

    def data(e):
        return tf.data.Dataset.from_tensor_slices(arrays()).shuffle(192, seed=100 + e).batch(32)

    callbacks = [Kill()] if mode == "kill" else [Count()]
    history = train(model, data, epochs=4, losses=LOSSES, optimizer=keras.optimizers.Adam(1e-2),
                    scheduler=scheduler, run_dir=run_dir, seed=11, callbacks=callbacks, verbose=0)
    np.savez(out, *model.get_weights())
    with open(out + ".json", "w") as f:
        json.dump({"history": history.history, "steps": Count.steps}, f)
""")
)


def start_script(tmp_path, run_dir, mode, name) -> subprocess.Popen:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    # the scripts import this checkout's mtlkit, not another one installed in the environment
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), mode, str(tmp_path / name)],
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(tmp_path, run_dir, mode, name):
    proc = start_script(tmp_path, run_dir, mode, name)
    _, stderr = proc.communicate(timeout=120)
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, None, stderr)
    return completed, str(tmp_path / name)


def load(out):
    with np.load(out + ".npz") as f:
        weights = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
    return weights, json.load(open(out + ".json"))


def test_straight_and_killed_then_resumed_runs_end_identically(tmp_path):
    # the straight run and the run killed in epoch 3 side by side (two CPU cores)
    killed = start_script(tmp_path, tmp_path / "resumed", "kill", "killed")
    proc, straight = run_script(tmp_path, tmp_path / "straight", "run", "straight")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert killed.wait(timeout=120) == 17, killed.stderr.read()[-2000:]
    stored = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert stored["epochs_done"] == 2  # the kill in epoch 3 lost only that epoch
    proc, resumed = run_script(tmp_path, tmp_path / "resumed", "run", "resumed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (w_straight, r_straight), (w_resumed, r_resumed) = load(straight), load(resumed)
    assert r_resumed["steps"] == 2 * 6  # epochs 3 and 4 only, 6 batches each
    assert r_resumed["history"] == r_straight["history"]
    for a, b in zip(w_straight, w_resumed):
        np.testing.assert_array_equal(a, b)
    # a finished run is returned without training, with its final weights loaded
    model = build(dropout=0.2)
    again = train(
        model,
        dataset(),
        epochs=4,
        losses=LOSSES,
        optimizer=keras.optimizers.Adam(1e-2),
        scheduler=DSTScheduler(["a", "b"], depths={"a": 3, "b": 2}, sample_counts={"a": 5, "b": 4}),
        run_dir=tmp_path / "resumed",
        verbose=0,
    )
    assert again.history == r_straight["history"]
    for a, b in zip(w_straight, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def fresh_run(run_dir, epochs, data=None, **kwargs):
    set_seed(2)
    model = build()
    history = train(
        model,
        data or dataset(),
        epochs=epochs,
        losses=LOSSES,
        optimizer=keras.optimizers.Adam(1e-2),
        run_dir=run_dir,
        verbose=0,
        **kwargs,
    )
    return model, history


def test_leftover_temporary_file_from_an_interrupted_write_is_ignored(tmp_path):
    model, _ = fresh_run(tmp_path, 1)
    (tmp_path / (CHECKPOINT + ".tmp")).write_bytes(b"half a checkp")
    resumed, history = fresh_run(tmp_path, 2)
    assert len(history.history["loss"]) == 2
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()


def test_failure_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    fresh_run(tmp_path, 1)
    real_savez = np.savez

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left.*run again"):
        fresh_run(tmp_path, 2)
    monkeypatch.setattr(runs.np, "savez", real_savez)
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()
    assert json.loads((tmp_path / "history.json").read_text())["epochs_done"] == 1
    _, history = fresh_run(tmp_path, 2)  # resumes from the intact epoch-1 checkpoint
    assert len(history.history["loss"]) == 2


def test_run_dir_of_a_different_model_is_refused(tmp_path):
    fresh_run(tmp_path, 1)
    x = keras.Input((8,))
    other = keras.Model(
        x, {"a": keras.layers.Dense(3, name="a")(x), "b": keras.layers.Dense(1, name="b")(x)}
    )
    with pytest.raises(ValueError, match="different model.*fresh run_dir"):
        train(
            other,
            dataset(),
            epochs=2,
            losses=LOSSES,
            optimizer=keras.optimizers.Adam(),
            run_dir=tmp_path,
            verbose=0,
        )


def test_unreadable_checkpoint_says_what_to_do(tmp_path):
    fresh_run(tmp_path, 1)
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read.*Delete it"):
        fresh_run(tmp_path, 2)


def test_resume_must_match_scheduler_use_and_epochs(tmp_path):
    fresh_run(tmp_path, 2)
    with pytest.raises(ValueError, match="without a DST scheduler"):
        fresh_run(tmp_path, 3, scheduler=DSTScheduler(["a", "b"], metrics=()))
    with pytest.raises(ValueError, match="more than epochs=1"):
        fresh_run(tmp_path, 1)


# ------------------------------------------------------------- non-finite loss
def test_non_finite_loss_stops_naming_task_and_epoch(tmp_path):
    x, y = arrays()
    bad = {
        "a": y["a"],
        "b": np.where(np.arange(192)[:, None] == 40, np.nan, y["b"]).astype("float32"),
    }

    def data(e):
        return dataset() if e == 0 else tf.data.Dataset.from_tensor_slices((x, bad)).batch(32)

    with pytest.raises(
        FloatingPointError, match=r"task 'b' became NaN or infinite at step 2 of epoch 2"
    ):
        fresh_run(tmp_path, 3, data=data)
    assert json.loads((tmp_path / "history.json").read_text())["epochs_done"] == 1
    model, history = fresh_run(tmp_path, 1)  # the good checkpoint is still there and readable
    assert len(history.history["loss"]) == 1


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"losses": {"a": LOSSES["a"]}}, ValueError, r"missing: \['b'\]"),
        ({"loss_weights": {"c": 1.0}}, ValueError, "loss_weights must name only"),
        ({"epochs": 0}, ValueError, "positive int"),
        ({"scheduler": DSTScheduler(["a", "c"], metrics=())}, ValueError, "scheduler's tasks"),
        ({"train_data": np.zeros((4, 8))}, TypeError, "tf.data.Dataset"),
        (
            {
                "train_data": tf.data.Dataset.from_tensor_slices(
                    (np.zeros((4, 8), "float32"), {"a": np.zeros(4)})
                ).batch(2)
            },
            ValueError,
            r"no labels for task\(s\) \['b'\]",
        ),
        ({"train_data": dataset().take(0)}, ValueError, "no batches"),
        ({"jit_compile": "yes"}, ValueError, "jit_compile='yes'"),
    ],
)
def test_bad_input(change, error, match):
    kwargs = dict(
        train_data=dataset(),
        epochs=1,
        losses=LOSSES,
        optimizer=keras.optimizers.SGD(0.1),
        verbose=0,
    )
    kwargs.update(change)
    with pytest.raises(error, match=match):
        train(build(), **kwargs)


def test_mixed_precision_scales_the_loss_so_small_gradients_survive():
    """Under mixed_float16, gradients of 1e-7-weighted losses underflow float16 to exactly 0;
    train wraps the optimizer in a LossScaleOptimizer (as compile does), so they survive."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        set_seed(0)
        model = build()
        before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
        history = train(
            model,
            dataset(),
            epochs=1,
            losses=LOSSES,
            optimizer=keras.optimizers.SGD(1.0),
            loss_weights={"a": 1e-7, "b": 1e-7},
            verbose=0,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # float32 weights
    assert np.isfinite(history.history["loss"][0])
    # without loss scaling this is exactly 0.0 (checked by hand when the test was written)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert max_diff(before, after) > 0


class _AddsToLogs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["added"] = epoch + 0.5


def test_values_a_callback_adds_join_the_history_and_the_run_dir(tmp_path):
    history = train(build(), dataset(), epochs=2, losses=LOSSES, verbose=0,
                    optimizer=keras.optimizers.SGD(0.1), callbacks=[_AddsToLogs()],
                    run_dir=tmp_path)  # fmt: skip
    assert history.history["added"] == [0.5, 1.5]
    stored = json.loads((tmp_path / "history.json").read_text())
    assert stored["history"]["added"] == [0.5, 1.5]


def test_dst_first_epoch_is_the_run_without_dst():
    """DST's measuring pass (training mode) leaves BatchNorm and dropout state as it found it:
    with every gate at 1 in epoch 1, the DST run's first epoch -- validation included -- is
    the plain run's, so the two arms differ only by DST."""
    histories = []
    for scheduler in (None, DSTScheduler(["a", "b"], {"a": 1, "b": 1}, {"a": 1, "b": 1})):
        set_seed(3)
        model = build(dropout=0.3)
        histories.append(train(model, dataset(), epochs=1, losses=LOSSES, seed=3, verbose=0,
                               optimizer=keras.optimizers.Adam(1e-2), scheduler=scheduler,
                               validation_data=dataset(64, seed=1)).history)  # fmt: skip
    plain, dst = histories
    assert {k: plain[k] for k in plain} == {k: dst[k] for k in plain}


def test_the_loop_recalibrates_batchnorm_before_validation_as_fit_does():
    """Callbacks see on_test_begin before the loop's validation, so RecalibrateBatchNorm
    sets the moving statistics from training images there, as it does in fit."""
    from mtlkit.training import RecalibrateBatchNorm

    set_seed(0)
    model = build()
    train_data = dataset()
    train(model, train_data, epochs=1, losses=LOSSES, seed=0, verbose=0,
          optimizer=keras.optimizers.Adam(1e-2), validation_data=dataset(64, seed=1),
          callbacks=[RecalibrateBatchNorm(train_data, 32)])  # fmt: skip
    images = next(iter(train_data))[0][:32]
    trunk = keras.Model(model.input, model.get_layer("trunk").output)
    hidden = keras.ops.convert_to_numpy(trunk(images))
    moving_mean = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)
    assert np.allclose(moving_mean, hidden.mean(axis=0), atol=1e-5)
