"""train(..., weighting=...): every method runs, logs its weights, and resumes exactly."""

import _reference_gradients as reference
import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlkit.methods import cores, weighting
from mtlkit.methods.dst import DSTScheduler
from mtlkit.training import set_seed, train

LOSSES = {
    "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "b": keras.losses.BinaryCrossentropy(from_logits=True),
}


def build(shared: bool = True):
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    h = keras.layers.Dense(8, activation="relu", name="trunk2")(h)
    g = h if shared else keras.layers.Dense(8, activation="relu", name="own")(x)
    return keras.Model(
        x, {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(g)}
    )


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1), "b": (x[:, 2:3] > 0).astype("float32")}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def run(method, epochs, run_dir=None, **kwargs):
    set_seed(0)
    model = build()
    history = train(model, dataset(), epochs=epochs, losses=LOSSES, verbose=0, seed=0,
                    optimizer=keras.optimizers.Adam(1e-2), weighting=method, run_dir=run_dir,
                    **kwargs).history  # fmt: skip
    return model, history


@pytest.mark.parametrize("method", sorted(weighting.METHODS))
def test_each_method_trains_logs_weights_and_resumes_bit_identically(method, tmp_path):
    straight, history = run(method, 3)
    assert np.isfinite(history["loss"]).all()
    assert len(history["a_weight"]) == 3 and len(history["b_weight"]) == 3
    run(method, 2, run_dir=tmp_path)  # "killed" after epoch 2
    resumed, resumed_history = run(method, 3, run_dir=tmp_path)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed_history == history


def test_weighting_works_beside_dst_gates():
    scheduler = DSTScheduler(["a", "b"], metrics=("incompleteness",), seed=1)
    _, history = run("uw", 3, scheduler=scheduler)
    assert "a_gate" in history and "a_weight" in history


def test_uncertainty_weights_move_and_are_logged_as_exp_minus_s():
    model, history = run("uw", 3)
    assert history["a_weight"][-1] != pytest.approx(1.0, abs=1e-4)


def test_gradient_method_on_a_model_sharing_nothing_is_refused():
    x = keras.Input((6,))
    heads = {"a": keras.layers.Dense(3, name="a")(x), "b": keras.layers.Dense(1, name="b")(x)}
    model = keras.Model(x, heads)
    with pytest.raises(ValueError, match="share nothing|reached by two or more"):
        train(model, dataset(), epochs=1, losses=LOSSES, optimizer=keras.optimizers.SGD(0.1),
              weighting="pcgrad", verbose=0)  # fmt: skip


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid names.*pcgrad"):
        run("nash", 1)


def test_resuming_with_another_method_is_refused(tmp_path):
    run("dwa", 1, run_dir=tmp_path)
    with pytest.raises(ValueError, match="trained with the weighting 'dwa'"):
        run("uw", 2, run_dir=tmp_path)


def test_pcgrad_leaves_the_heads_their_plain_gradients():
    """With two tasks that do not conflict PCGrad changes nothing: equal to plain training."""
    set_seed(0)
    plain = build()
    train(plain, dataset().take(1), epochs=1, losses=LOSSES, optimizer=keras.optimizers.SGD(0.1),
          verbose=0)  # fmt: skip
    set_seed(0)
    surgery = build()
    method = weighting.PCGrad(["a", "b"], seed=0)
    train(surgery, dataset().take(1), epochs=1, losses=LOSSES,
          optimizer=keras.optimizers.SGD(0.1), weighting=method, verbose=0)  # fmt: skip
    for name in ("a", "b"):  # heads: own gradients, whatever the surgery did to the trunk
        for p, s in zip(plain.get_layer(name).get_weights(), surgery.get_layer(name).get_weights()):
            np.testing.assert_allclose(p, s, rtol=1e-5, atol=1e-6)


def numpy_weights(model, seed):
    """Glorot-uniform kernels and zero biases drawn with NumPy: the same starting weights on
    every backend (Keras's own initializers draw from each backend's random stream)."""
    rng, weights = np.random.default_rng(seed), []
    for w in model.get_weights():
        limit = np.sqrt(6 / sum(w.shape))
        drawn = rng.uniform(-limit, limit, w.shape) if w.ndim == 2 else np.zeros_like(w)
        weights.append(drawn.astype(w.dtype))
    return weights


def task_gradients(model, x, y, task):
    """One task's plain gradient on every trainable variable, by hand (zeros where its loss
    does not reach): a GradientTape on TensorFlow, jax.grad of model.stateless_call on JAX."""

    def loss(outputs):
        """The task's loss on the batch (every example is labelled)."""
        return LOSSES[task](y[task], outputs[task])

    return reference.gradients(model, x, loss, model.trainable_variables)


def test_pcgrad_step_is_the_surgery_on_the_trunk_and_plain_gradients_on_the_heads():
    """One SGD(1) step of the loop against per-task gradients by hand and cores.pcgrad, on a
    batch where the two tasks' trunk gradients conflict (so the surgery changes something)."""
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="trunk")(x)
    model = keras.Model(x, {"a": keras.layers.Dense(3, name="a")(h),
                            "b": keras.layers.Dense(1, name="b")(h)})  # fmt: skip
    model.set_weights(numpy_weights(model, seed=4))  # a start where the tasks conflict
    xb, yb = next(dataset().as_numpy_iterator())
    variables = model.trainable_variables
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    grads = {task: task_gradients(model, xb, yb, task) for task in ("a", "b")}
    trunk = [i for i, v in enumerate(variables) if v.path.startswith("trunk")]
    G = np.stack([np.concatenate([grads[t][i].ravel() for i in trunk]) for t in "ab"])
    assert float(G[0] @ G[1]) < 0  # they conflict on this batch
    surgery = cores.pcgrad(G, keras.random.SeedGenerator(0))  # 2 tasks: no order
    surgery = keras.ops.convert_to_numpy(surgery)
    train(
        model,
        dataset().take(1),
        epochs=1,
        losses=LOSSES,
        verbose=0,
        optimizer=keras.optimizers.SGD(1.0),
        weighting=weighting.PCGrad(["a", "b"], seed=0),
    )
    offset = 0
    for i, (v, old) in enumerate(zip(variables, before)):
        if i in trunk:
            expected = surgery[offset : offset + old.size].reshape(old.shape)
            offset += old.size
        else:  # a head: its own task's plain gradient (the other task's is zero there)
            expected = sum(g[i] for g in grads.values())
        moved = old - keras.ops.convert_to_numpy(v)
        np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["mgda", "gradnorm", "pcgrad"])
def test_a_task_with_coefficient_zero_is_left_out_like_an_unlabelled_one(method):
    """A loss weight (or DST gate) of 0 gives a zero gradient row, as a batch without labels
    does: MGDA must not put all its weight there (a zero step). The step is then the plain
    step of the other task."""
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    model = keras.Model(x, {"a": keras.layers.Dense(3, name="a")(h),
                            "b": keras.layers.Dense(1, name="b")(h)})  # fmt: skip
    start = model.get_weights()
    options = dict(epochs=1, losses=LOSSES, loss_weights={"a": 0.0}, verbose=0)
    train(model, dataset().take(1), optimizer=keras.optimizers.SGD(0.5), **options)
    plain = model.get_weights()
    model.set_weights(start)
    train(model, dataset().take(1), optimizer=keras.optimizers.SGD(0.5), weighting=method,
          **options)  # fmt: skip
    assert np.abs(model.get_weights()[0] - start[0]).max() > 1e-4
    for p, m in zip(plain, model.get_weights()):
        np.testing.assert_allclose(m, p, rtol=1e-5, atol=1e-6)


GRADIENT_METHODS = sorted(n for n, m in weighting.METHODS.items() if m.kind == "gradient")


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_a_layer_shared_by_two_of_three_tasks_trains(method):
    """A layer that tasks a and b share and c does not reach is one of the shared variables
    (shared by two tasks or more); c's gradient there is zero. On TensorFlow the gradient
    matrix used to fail on it ('str' object has no attribute '_type_enum')."""
    x = keras.Input((6,))
    common = keras.layers.Dense(8, activation="relu", name="common")(x)
    pair = keras.layers.Dense(8, activation="relu", name="a_and_b")(common)
    outputs = {"a": keras.layers.Dense(3, name="a")(pair),
               "b": keras.layers.Dense(1, name="b")(pair),
               "c": keras.layers.Dense(1, name="c")(common)}  # fmt: skip
    model = keras.Model(x, outputs)
    data = dataset().map(lambda x, y: (x, {**y, "c": y["b"]}))
    start = model.get_layer("a_and_b").get_weights()[0]
    history = train(model, data, epochs=1, losses={**LOSSES, "c": LOSSES["b"]}, verbose=0,
                    optimizer=keras.optimizers.SGD(0.1), weighting=method).history  # fmt: skip
    assert np.isfinite(history["loss"]).all() and len(history["c_weight"]) == 1
    assert np.abs(model.get_layer("a_and_b").get_weights()[0] - start).max() > 0


@pytest.mark.parametrize(
    "first, second",
    [
        (lambda: weighting.GradNorm(["a", "b"], optimizer=keras.optimizers.SGD(0.1)),
         lambda: weighting.GradNorm(["a", "b"])),
        (lambda: weighting.GradNorm(["a", "b"]),
         lambda: weighting.GradNorm(["a", "b"], optimizer=keras.optimizers.Adam(0.05))),
        (lambda: weighting.FAMO(["a", "b"], min_losses=(0.0, 0.0)),
         lambda: weighting.FAMO(["a", "b"], min_losses=(0.1, 0.05))),
    ],
    ids=["gradnorm_sgd_then_default", "gradnorm_other_rate", "famo_min_losses"],
)  # fmt: skip
def test_resuming_with_other_method_options_is_refused(first, second, tmp_path):
    """GradNorm's own optimizer (class and rate) and FAMO's per-task min_losses are among
    the settings a resumed run must share: the loop's clear message, no KeyError."""
    run(first(), 1, run_dir=tmp_path)
    with pytest.raises(ValueError, match="trained with other settings.*weighting"):
        run(second(), 2, run_dir=tmp_path)
