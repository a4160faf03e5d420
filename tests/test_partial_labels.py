"""Partial labels: a label of -1 means "unknown" for that task and that example."""

import _reference_gradients as reference
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtlkit.analysis import diagnostics
from mtlkit.methods import dst, weighting
from mtlkit.models import tasks
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
    unknown = -np.ones((6, 1), "float32")

    def masked(outputs):
        """Task 'a''s loss over its labelled examples (none here), and how many there are."""
        return tasks.masked_loss(BCE, unknown, outputs["a"], binary=True)

    loss, count = masked(model(x))
    head = model.get_layer("a").trainable_variables
    gradients = reference.gradients(model, x, lambda out: masked(out)[0], head, training=False)
    assert float(count) == 0 and float(loss) == 0.0 and np.isfinite(float(loss))
    assert all(not np.any(g) for g in gradients)  # (zeros: no NaN either)


def test_training_with_a_task_never_labelled_stays_finite_and_leaves_its_head():
    set_seed(0)
    model = build()
    head_before = [w.copy() for w in model.get_layer("b").get_weights()]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = {"a": (x[:, :1] > 0).astype("float32"), "b": -np.ones((64, 1), "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.warns(UserWarning, match="'b' had no labelled example in epoch 1"):
        history = train(model, data, epochs=2, losses=BCE, optimizer=keras.optimizers.SGD(0.1),
                        verbose=0).history  # fmt: skip
    assert np.isfinite(history["loss"]).all()
    # missing, not a perfect loss and a zero accuracy
    assert np.isnan(history["b_loss"]).all() and np.isnan(history["b_accuracy"]).all()
    for before, after in zip(head_before, model.get_layer("b").get_weights()):
        np.testing.assert_array_equal(before, after)  # SGD and no gradient: not moved


def test_masked_accuracy_counts_labelled_examples_only():
    meters = tasks.TaskMeters(["a"], {"a": BCE})
    labels = {"a": np.array([[1.0], [-1.0], [0.0], [1.0]], "float32")}
    logits = {"a": np.array([[3.0], [3.0], [2.0], [-1.0]], "float32")}  # right, -, wrong, wrong
    scalar = keras.ops.convert_to_tensor
    meters.update(scalar(0.0), [scalar(0.0)], [scalar(3.0)], labels, logits, 4.0)
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


# ----------------------------------------- gradient methods and diagnostics, partial labels
SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
MIXED = {"a": SPARSE, "b": BCE, "c": BCE}  # 'a': sparse labels (3 classes), 'b', 'c': binary


def build_mixed(heads=("a", "b")):
    """A shared trunk with a 3-class head 'a' and binary heads 'b', 'c' (no dropout, no BN:
    a reference gradient is then one plain forward pass)."""
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    outputs = {t: keras.layers.Dense(3 if t == "a" else 1, name=t)(h) for t in heads}
    return keras.Model(x, outputs)


def mixed_arrays(n, seed=0, heads=("a", "b")):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {
        "a": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5),
        "b": (x[:, 2:3] > 0).astype("float32"),
        "c": (x[:, 3:4] > 0).astype("float32"),
    }
    return x, {t: y[t] for t in heads}


def hide(y, task, rows):
    """A copy of the labels ``y`` with task ``task`` unknown (-1) on ``rows``."""
    y = {t: v.copy() for t, v in y.items()}
    y[task][rows] = -1
    return y


def losses_for(heads):
    return {t: MIXED[t] for t in heads}


MIXED_AB = losses_for(("a", "b"))


GRADIENT_METHODS = {
    "pcgrad": lambda: weighting.PCGrad(["a", "b"], seed=0),
    "mgda": lambda: weighting.MGDA(["a", "b"]),  # upper bound: the trunk's output
    "mgda_shared": lambda: weighting.MGDA(["a", "b"], upper_bound=False),
    "gradnorm": lambda: weighting.GradNorm(["a", "b"]),
}


@pytest.mark.parametrize("hidden", ["a", "b"])  # sparse, binary
@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_a_step_with_one_task_unlabelled_is_the_plain_step_of_the_other(method, hidden):
    """With no label for one task in the batch, every gradient method leaves that task out:
    the step is the plain gradient step of the labelled task (not zero, not a crash)."""
    x, y = mixed_arrays(16)
    data = tf.data.Dataset.from_tensor_slices((x, hide(y, hidden, slice(None)))).batch(16)
    set_seed(0)
    plain = build_mixed()
    start = [w.copy() for w in plain.get_weights()]
    train(plain, data, epochs=1, losses=MIXED_AB, optimizer=keras.optimizers.SGD(0.5), verbose=0)
    model = build_mixed()
    model.set_weights(start)
    train(model, data, epochs=1, losses=MIXED_AB, optimizer=keras.optimizers.SGD(0.5),
          weighting=GRADIENT_METHODS[method](), verbose=0)  # fmt: skip
    trunk = model.get_layer("trunk").get_weights()[0]
    assert np.abs(trunk - start[0]).max() > 1e-4  # the step was taken
    for p, m in zip(plain.get_weights(), model.get_weights()):
        np.testing.assert_allclose(m, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", ["a", "b"])
@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_gradient_methods_train_when_the_first_batch_lacks_a_task(method, hidden):
    x, y = mixed_arrays(48)
    y = hide(hide(y, hidden, slice(0, 16)), hidden, slice(20, 48, 3))  # batch 1: none; then some
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    set_seed(0)
    model, chosen = build_mixed(), GRADIENT_METHODS[method]()
    history = train(model, data, epochs=2, losses=MIXED_AB, optimizer=keras.optimizers.Adam(1e-2),
                    weighting=chosen, verbose=0).history  # fmt: skip
    assert np.isfinite(history["loss"]).all() and np.isfinite(history[f"{hidden}_loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    logged = [history[f"{t}_weight"][-1] for t in ("a", "b")]
    assert np.isfinite(logged).all() and min(logged) >= 0
    if method == "gradnorm":  # L_j(0) of the hidden task: from batch 2, its first labels
        assert (keras.ops.convert_to_numpy(chosen.initial) > 0).all() and min(logged) > 0


def reference_gradients(model, x, y, variables):
    """Each task's gradient of its mean loss over its labelled examples, by hand: the plain
    loss on the labelled rows picked out of the outputs (no mask arithmetic)."""
    result = {}
    for task in y:
        keep = np.all(np.reshape(y[task], (len(x), -1)) >= 0, axis=1)
        rows = np.flatnonzero(keep)

        def loss(outputs, task=task, keep=keep, rows=rows):
            """The task's loss on its labelled rows only."""
            return MIXED[task](y[task][keep], keras.ops.take(outputs[task], rows, axis=0))

        result[task] = reference.gradients(model, x, loss, variables)
    return result


@pytest.mark.parametrize("hidden", ["a", "b"])
def test_task_gradients_average_over_labelled_examples_only(hidden):
    set_seed(0)
    model = build_mixed()
    x, y = mixed_arrays(16, seed=3)
    y = hide(y, hidden, [0, 3, 4, 9, 15])
    grads = diagnostics.task_gradients(model, x, y, MIXED_AB)
    trunk = model.get_layer("trunk").trainable_variables
    expected = reference_gradients(model, x, y, trunk)
    for task in ("a", "b"):
        for got, want in zip(grads[task].values(), expected[task]):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hidden", ["a", "c"])  # sparse, binary
def test_a_task_without_labels_in_the_batch_gives_nan_statistics_and_a_warning(hidden):
    heads = ("a", "b", "c")
    set_seed(0)
    model = build_mixed(heads)
    x, y = mixed_arrays(16, seed=4, heads=heads)
    y = hide(y, hidden, slice(None))
    with pytest.warns(UserWarning, match=f"'{hidden}'.*no labelled example"):
        stats = diagnostics.gradient_stats(model, x, y, losses_for(heads))
    others = [t for t in heads if t != hidden]
    alone = diagnostics.gradient_stats(model, x, {t: y[t] for t in others}, losses_for(others))
    cosine, gms, norms = stats.cosine(), stats.magnitude_similarity(), stats.norms()
    assert cosine.loc[hidden].isna().all() and cosine[hidden].isna().all()
    assert gms.loc[hidden].isna().all() and np.isnan(norms[hidden])
    assert np.isnan(stats.losses[heads.index(hidden)])
    assert cosine.loc[others[0], others[1]] == pytest.approx(
        alone.cosine().loc[others[0], others[1]]
    )
    assert norms[others].tolist() == pytest.approx(alone.norms().tolist())
    with pytest.raises(ValueError, match="No labelled example for any of the tasks"):
        diagnostics.gradient_similarity(model, x, {t: hide(y, t, slice(None))[t] for t in heads},
                                        losses_for(heads))  # fmt: skip


@pytest.mark.parametrize("hidden", ["a", "c"])
def test_the_probe_reports_an_unlabelled_task_as_nan_not_as_no_conflict(hidden):
    heads = ("a", "b", "c")
    x, y = mixed_arrays(48, heads=heads)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    px, py = mixed_arrays(8, seed=5, heads=heads)
    with pytest.warns(UserWarning, match=f"'{hidden}'"):
        probe = diagnostics.GradientProbe(px, hide(py, hidden, slice(None)), losses_for(heads),
                                          every=None)  # fmt: skip
        set_seed(0)
        history = train(build_mixed(heads), data, epochs=1, losses=losses_for(heads),
                        optimizer=keras.optimizers.SGD(0.1), callbacks=[probe],
                        verbose=0).history  # fmt: skip
    for i, j, name in [(0, 1, "a_b"), (0, 2, "a_c"), (1, 2, "b_c")]:
        with_hidden = hidden in (heads[i], heads[j])
        for key in (f"grad_cos_{name}", f"grad_conflict_{name}"):
            assert np.isnan(history[key][0]) == with_hidden, key
    assert np.isnan(history[f"grad_norm_{hidden}"][0])


@pytest.mark.parametrize("method", ["pcgrad", "mgda", "gradnorm"])
def test_a_nan_label_under_a_gradient_method_is_named_by_the_loop(method):
    x, y = mixed_arrays(32)
    y["b"][5] = np.nan
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(FloatingPointError, match=r"task 'b' became NaN or infinite at step 1"):
        train(build_mixed(), data, epochs=1, losses=MIXED_AB,
              optimizer=keras.optimizers.SGD(0.1), weighting=method, verbose=0)  # fmt: skip


def test_uw_leaves_the_weight_of_a_task_without_labels_as_it_was():
    """UW: in batches without task b's labels s_b gets no gradient (SGD: it stays exactly
    where the one labelled batch put it)."""
    x, y = mixed_arrays(48)
    y = hide(y, "b", slice(16, 48))  # b labelled in the first batch only

    def b_weight(n):
        set_seed(0)
        data = tf.data.Dataset.from_tensor_slices((x[:n], {t: v[:n] for t, v in y.items()}))
        history = train(build_mixed(), data.batch(16), epochs=1, losses=MIXED_AB,
                        optimizer=keras.optimizers.SGD(0.5), weighting="uw", verbose=0)  # fmt: skip
        return history.history["b_weight"][-1], history.history["a_weight"][-1]

    (after_one, a_one), (after_all, a_all) = b_weight(16), b_weight(48)
    assert after_one != 1.0 and after_all == after_one and a_all != a_one
