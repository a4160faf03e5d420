"""Partial labels: a label of -1 means "unknown" for that task and that example."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtlkit import dst, tasks
from mtlkit.training import set_seed, train

BCE = keras.losses.BinaryCrossentropy(from_logits=True)


def build():
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="trunk")(x)
    outputs = {t: keras.layers.Dense(1, name=t)(h) for t in ("a", "b")}
    return keras.Model(x, outputs)


def test_masked_loss_averages_over_labelled_examples_only():
    labels = np.array([[1.0], [-1.0], [0.0], [-1.0]], "float32")
    logits = np.array([[2.0], [5.0], [-1.0], [-3.0]], "float32")
    loss, count = tasks.masked_loss(BCE, labels, logits, binary=True)
    by_hand = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])  # examples 0 and 2
    assert float(count) == 2
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)


def test_a_batch_without_labels_gives_zero_loss_and_no_gradient():
    model = build()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    with tf.GradientTape() as tape:
        out = model(x)
        loss, count = tasks.masked_loss(BCE, -np.ones((6, 1), "float32"), out["a"], binary=True)
    gradients = tape.gradient(loss, model.get_layer("a").trainable_variables)
    assert float(count) == 0 and float(loss) == 0.0 and np.isfinite(float(loss))
    assert all(g is None or not np.any(g.numpy()) for g in gradients)


def test_training_with_a_task_never_labelled_stays_finite_and_leaves_its_head():
    set_seed(0)
    model = build()
    head_before = [w.copy() for w in model.get_layer("b").get_weights()]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = {"a": (x[:, :1] > 0).astype("float32"), "b": -np.ones((64, 1), "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = train(model, data, epochs=2, losses=BCE, optimizer=keras.optimizers.SGD(0.1),
                    verbose=0).history  # fmt: skip
    assert np.isfinite(history["loss"]).all() and history["b_loss"] == [0.0, 0.0]
    for before, after in zip(head_before, model.get_layer("b").get_weights()):
        np.testing.assert_array_equal(before, after)  # SGD and no gradient: not moved


def test_masked_accuracy_counts_labelled_examples_only():
    meters = tasks.TaskMeters(["a"], {"a": BCE})
    labels = {"a": np.array([[1.0], [-1.0], [0.0], [1.0]], "float32")}
    logits = {"a": np.array([[3.0], [3.0], [2.0], [-1.0]], "float32")}  # right, -, wrong, wrong
    meters.update(tf.constant(0.0), [tf.constant(0.0)], [tf.constant(3.0)], labels, logits, 4.0)
    assert meters.read()["a_accuracy"] == pytest.approx(1 / 3)


def test_binary_labels_outside_minus_one_zero_one_are_refused():
    x = np.zeros((8, 4), "float32")
    y = {"a": np.full((8, 1), 2.0, "float32"), "b": np.zeros((8, 1), "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=r"Task\(s\) \['a'\]: binary labels must be 0 or 1"):
        train(build(), data, epochs=1, losses=BCE, optimizer=keras.optimizers.SGD(0.1), verbose=0)


def test_dst_sample_counts_come_from_the_masks():
    labels = pd.DataFrame({"a": [1, 0, -1, 1], "b": [-1, -1, -1, 0]})
    assert dst.labelled_counts(labels) == {"a": 3, "b": 1}
    assert dst.labelled_counts({"a": np.array([0, -1])}) == {"a": 1}


def test_a_loss_given_by_name_works_in_the_loop():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = {"a": (x[:, :1] > 0).astype("float32"), "b": (x[:, 1:2] > 0).astype("float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = train(build(), data, epochs=1, losses="binary_crossentropy",
                    optimizer=keras.optimizers.SGD(0.1), verbose=0).history  # fmt: skip
    assert "a_accuracy" in history and np.isfinite(history["loss"][0])
    # a name for a sparse task too (the reported bug: 'function' has no attribute get_config)
    assert isinstance(tasks.accuracy_for("sparse_categorical_crossentropy", "acc"),
                      keras.metrics.SparseCategoricalAccuracy)  # fmt: skip
