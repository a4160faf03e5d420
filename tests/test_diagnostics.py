"""Task interference diagnostics: gradients, cosines, GMS, the probe callback, bad input."""

import json
import math

import _reference_gradients as reference
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtlkit import training
from mtlkit.analysis import diagnostics
from mtlkit.models.architectures import build_cifar100

LOSSES = {
    "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "b": keras.losses.BinaryCrossentropy(from_logits=True),
}
CIFAR_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(extra_head: bool = False) -> keras.Model:
    """A trunk sub-model (Dense, BatchNorm, Dropout) shared by two heads, one with dropout."""
    inner = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu", name="trunk_dense")(inner)
    h = keras.layers.BatchNormalization(name="trunk_bn")(h)
    trunk = keras.Model(inner, keras.layers.Dropout(0.3, name="trunk_drop")(h), name="trunk")
    x = keras.Input((8,), name="x")
    features = trunk(x)
    a = keras.layers.Dense(8, activation="relu", name="a_hidden")(features)
    a = keras.layers.Dropout(0.5, name="a_drop")(a)
    outputs = {
        "a": keras.layers.Dense(3, name="a")(a),
        "b": keras.layers.Dense(1, name="b")(features),
    }
    if extra_head:
        outputs["c"] = keras.layers.Dense(1, name="c")(keras.layers.Dense(4, name="c_hidden")(x))
    return keras.Model(x, outputs, name="tiny")


def arrays(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1), "b": (x[:, 2:3] > 0).astype("float32")}
    return x, y


def dataset(batch=32):
    return tf.data.Dataset.from_tensor_slices(arrays()).batch(batch)


def probe_batch(n=16):
    x, y = arrays(n, seed=7)
    return x, y


def cifar_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 32, 32, 3)).astype("float32")
    return x, {"fine": rng.integers(0, 100, n), "coarse": rng.integers(0, 20, n)}


def snapshot(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]


# ---------------------------------------------------------------- gradients
def reference_gradients(model, x, y, variables):
    """One task at a time, by hand: a GradientTape around model(x, training=True) with the
    state restored (TensorFlow), jax.grad of model.stateless_call (JAX). Every task sees
    the same BatchNorm statistics and dropout draw."""
    result = {}
    for task, loss in LOSSES.items():

        def of_outputs(outputs, task=task, loss=loss):
            """The task's plain loss (every example is labelled here)."""
            return loss(y[task], outputs[task])

        result[task] = reference.gradients(model, x, of_outputs, variables)
    return result


def test_task_gradients_equal_one_task_at_a_time_with_gradient_tape():
    training.set_seed(0)
    model = build()
    x, y = probe_batch()
    grads = diagnostics.task_gradients(model, x, y, LOSSES)
    trunk = model.get_layer("trunk").trainable_variables
    assert list(grads["a"]) == [v.path for v in trunk]  # the default: the shared trunk
    expected = reference_gradients(model, x, y, trunk)
    for task in LOSSES:
        for got, want in zip(grads[task].values(), expected[task]):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-7)
    # dropout was on: with another dropout draw the gradients differ
    model.get_layer("trunk").get_layer("trunk_drop").seed_generator.next()
    moved = diagnostics.task_gradients(model, x, y, LOSSES)
    assert not np.allclose(moved["a"][trunk[0].path], grads["a"][trunk[0].path])


def test_chosen_variables_by_object_layer_name_or_path():
    model = build()
    x, y = probe_batch()
    trunk = model.get_layer("trunk").trainable_variables
    by_object = diagnostics.task_gradients(model, x, y, LOSSES, variables=trunk)
    by_layer = diagnostics.task_gradients(model, x, y, LOSSES, variables=["trunk"])
    by_path = diagnostics.task_gradients(model, x, y, LOSSES, variables=["trunk_dense", "trunk_bn"])
    assert list(by_object["b"]) == list(by_layer["b"]) == list(by_path["b"])
    # a head only one task reaches: the other task's gradient there is zero
    head = diagnostics.task_gradients(model, x, y, LOSSES, variables=["a_hidden"])
    assert all(not np.any(keras.ops.convert_to_numpy(g)) for g in head["b"].values())
    assert all(np.any(keras.ops.convert_to_numpy(g)) for g in head["a"].values())


def numpy_stats(grads):
    vectors = {
        t: np.concatenate([keras.ops.convert_to_numpy(g).ravel() for g in per.values()])
        for t, per in grads.items()
    }
    a, b = vectors["a"].astype(float), vectors["b"].astype(float)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return a @ b / (na * nb), 2 * na * nb / (na**2 + nb**2), na, nb


def test_cosine_norms_and_gms_agree_with_numpy_on_the_same_vectors():
    training.set_seed(1)
    model = build()
    x, y = probe_batch()
    grads = diagnostics.task_gradients(model, x, y, LOSSES)
    cosine, gms, norm_a, norm_b = numpy_stats(grads)
    stats = diagnostics.gradient_stats(model, x, y, LOSSES)
    table = diagnostics.gradient_similarity(model, x, y, LOSSES)
    assert list(table.index) == list(table.columns) == ["a", "b"]
    assert table.loc["a", "b"] == pytest.approx(cosine, rel=1e-6)
    assert stats.magnitude_similarity().loc["b", "a"] == pytest.approx(gms, rel=1e-6)
    assert stats.norms().to_dict() == pytest.approx({"a": norm_a, "b": norm_b}, rel=1e-6)
    # per layer: the same formulas on each layer's part of the vectors
    per_layer = stats.per_layer()
    assert list(per_layer.index) == ["trunk_dense", "trunk_bn"]
    for layer in per_layer.index:
        part = {
            t: {p: g for p, g in per.items() if p.startswith(layer + "/")}
            for t, per in grads.items()
        }
        c, _, na, nb = numpy_stats(part)
        assert per_layer.loc[layer, "cos a|b"] == pytest.approx(c, rel=1e-6)
        assert per_layer.loc[layer, ["norm a", "norm b"]].tolist() == pytest.approx(
            [na, nb], rel=1e-6
        )


def test_matrix_formulas_on_hand_made_vectors():
    g = np.array([[3.0, 4.0, 0.0], [-3.0, -4.0, 0.0], [0.0, 0.0, 10.0]])
    gram = g @ g.T
    assert diagnostics.cosine_matrix(gram)[0, 1] == pytest.approx(-1.0)
    assert diagnostics.cosine_matrix(gram)[0, 2] == pytest.approx(0.0)
    assert diagnostics.magnitude_matrix(gram)[0, 1] == pytest.approx(1.0)
    assert diagnostics.magnitude_matrix(gram)[0, 2] == pytest.approx(2 * 5 * 10 / (25 + 100))
    assert np.isnan(diagnostics.cosine_matrix(np.diag([1.0, 0.0]))[0, 1])  # zero gradient


# ------------------------------------------------- the default variables on CIFAR models
def reached_by_perturbation(model, x):
    """For every trainable variable, the outputs that change when it is perturbed (forward
    passes only: an independent check of the gradient-based default). ``predict_on_batch``
    compiles the inference pass once and reads the variables at each call (on JAX, an eager
    call of the 18-million-parameter model took 33 s here, mostly compiling op by op)."""
    base = model.predict_on_batch(x)
    rng = np.random.default_rng(0)
    reached = {}
    for v in model.trainable_variables:
        old = keras.ops.convert_to_numpy(v)
        v.assign(old + rng.normal(0, 0.5, old.shape).astype(old.dtype))
        out = model.predict_on_batch(x)
        reached[v.path] = {k for k in base if not np.array_equal(out[k], base[k])}
        v.assign(old)
    return reached


@pytest.mark.parametrize(
    "name, conv_shared, head_kernels",
    [
        ("shared_conv", 5, set()),  # the whole trunk, no head
        ("reuse_coarse", 5, {20, 128, 256, 512, 1024}),  # one trunk of two, the coarse head
    ],
)
def test_default_variables_are_the_ones_both_tasks_reach(name, conv_shared, head_kernels):
    training.set_seed(0)
    model = build_cifar100(name)
    x, y = cifar_batch()
    grads = diagnostics.task_gradients(model, x, y, CIFAR_LOSS)
    chosen = list(grads["fine"])
    reached = reached_by_perturbation(model, x[:2])
    assert set(chosen) == {p for p, tasks in reached.items() if tasks == {"fine", "coarse"}}
    by_path = {v.path: v for v in model.trainable_variables}
    kernels = [by_path[p] for p in chosen if by_path[p].path.endswith("kernel")]
    assert sum(len(k.shape) == 4 for k in kernels) == conv_shared
    all_convs = sum(len(v.shape) == 4 for v in model.trainable_variables)
    assert all_convs == (5 if name == "shared_conv" else 10)
    assert {k.shape[-1] for k in kernels if len(k.shape) == 2} == head_kernels
    # in reuse_coarse the fine loss reaches the coarse logits layer, and pulls on it
    if name == "reuse_coarse":
        coarse_logits = next(
            p for p in chosen if by_path[p].shape[-1:] == (20,) and len(by_path[p].shape) == 2
        )
        assert np.any(keras.ops.convert_to_numpy(grads["fine"][coarse_logits]))


def test_independent_networks_share_nothing_and_say_so():
    model = build_cifar100("independent")
    x, y = cifar_batch(2)
    with pytest.raises(ValueError, match="share nothing.*variables="):
        diagnostics.gradient_similarity(model, x, y, CIFAR_LOSS)


# ------------------------------------------------------------ no state changes
def test_measuring_changes_no_state_but_a_training_forward_pass_would():
    training.set_seed(2)
    model = build()
    x, y = probe_batch()
    paths = [v.path for v in model.non_trainable_variables]
    assert any("moving_mean" in p for p in paths) and any("seed_generator" in p for p in paths)
    before = snapshot(model)
    diagnostics.gradient_stats(model, x, y, LOSSES)
    probe = diagnostics.GradientProbe(x, y, LOSSES)
    probe.set_model(model)
    probe.on_train_begin()
    probe.on_epoch_begin(0)
    probe.on_epoch_end(0)  # one compiled probe
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)
    model(x, training=True)  # the control: a plain training-mode call moves both
    changed = [
        p
        for p, a, b in zip([v.path for v in model.variables], before, snapshot(model))
        if not np.array_equal(a, b)
    ]
    assert any("moving_mean" in p for p in changed) and any("seed_generator" in p for p in changed)


def train_run(probe=None, epochs=3, run_dir=None, extra=()):
    training.set_seed(5)
    model = build()
    callbacks = ([probe] if probe else []) + list(extra)
    history = training.train(
        model,
        dataset(),
        epochs=epochs,
        losses=LOSSES,
        run_dir=run_dir,
        optimizer=keras.optimizers.Adam(1e-2),
        callbacks=callbacks,
        verbose=0,
    )
    return model, history.history


def test_training_with_the_probe_is_bit_identical_with_train_and_fit():
    model, history = train_run()
    probe = diagnostics.GradientProbe(*probe_batch(), LOSSES, every=1)
    probed, probed_history = train_run(probe)
    assert len(probe.records) == 1 + 3 * 6  # before training, then after every step
    for a, b in zip(snapshot(model), snapshot(probed)):
        np.testing.assert_array_equal(a, b)
    assert {k: probed_history[k] for k in history} == history

    def fit(callbacks):
        training.set_seed(5)
        m = build()
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSSES)
        return m, m.fit(dataset(), epochs=2, verbose=0, callbacks=callbacks).history

    (plain, h_plain), (with_probe, h_probe) = (
        fit([]),
        fit([diagnostics.GradientProbe(*probe_batch(), every=2)]),
    )
    for a, b in zip(snapshot(plain), snapshot(with_probe)):
        np.testing.assert_array_equal(a, b)
    assert {k: h_probe[k] for k in h_plain} == h_plain


def test_epoch_logs_summarise_the_probes_of_each_epoch():
    training.set_seed(5)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSSES)
    probe = diagnostics.GradientProbe(*probe_batch(), every=2)
    history = model.fit(dataset(), epochs=2, verbose=0, callbacks=[probe]).history
    frame = probe.frame()
    assert frame["step"].tolist() == [0, 2, 4, 6, 8, 10, 12]  # 6 steps an epoch, every 2 + end
    for epoch in (0, 1):
        rows = frame[(frame.index > epoch) & (frame.index <= epoch + 1)]
        assert history["grad_cos_a_b"][epoch] == pytest.approx(rows["cos a|b"].mean())
        assert history["grad_conflict_a_b"][epoch] == pytest.approx((rows["cos a|b"] < 0).mean())
        assert history["grad_norm_b"][epoch] == pytest.approx(rows["norm b"].mean())
    layers = probe.layer_frame("a", "b")
    assert list(layers.columns) == ["trunk_dense", "trunk_bn"] and len(layers) == len(frame)
    assert probe.stats(0).losses.tolist() == pytest.approx(list(probe.initial_losses.values()))


class StopAtEpochEnd(keras.callbacks.Callback):
    """Raise after the probe has written epoch ``epoch`` but before train() checkpoints it."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("killed")


def test_probe_series_survives_an_interrupted_and_resumed_train(tmp_path):
    straight = diagnostics.GradientProbe(*probe_batch(), LOSSES, every=4, path=tmp_path / "a.json")
    train_run(straight, run_dir=tmp_path / "straight")
    path, run_dir = tmp_path / "b.json", tmp_path / "resumed"
    first = diagnostics.GradientProbe(*probe_batch(), LOSSES, every=4, path=path)
    with pytest.raises(KeyboardInterrupt):
        train_run(first, run_dir=run_dir, extra=[StopAtEpochEnd(1)])
    stored = json.loads(path.read_text())
    assert max(r["epoch"] for r in stored["records"]) == 1  # epoch 2 written, not checkpointed
    second = diagnostics.GradientProbe(*probe_batch(), LOSSES, every=4, path=path)
    train_run(second, run_dir=run_dir)
    pd.testing.assert_frame_equal(second.frame(), straight.frame(), rtol=1e-6)
    assert second.epoch_steps == straight.epoch_steps == [6, 6, 6]
    pd.testing.assert_frame_equal(diagnostics.GradientProbe.read(path).frame(), second.frame())


def test_convergence_ratios():
    history = {"a_loss": [2.0, 1.0], "b_loss": [0.5, 0.4]}
    ratios = diagnostics.convergence(history, ["a", "b"], {"a": 4.0, "b": 0.5})
    assert ratios.loc[0].tolist() == [1.0, 1.0]
    assert ratios["a"].tolist() == [1.0, 0.5, 0.25] and ratios.loc[2, "b"] == pytest.approx(0.8)
    assert diagnostics.convergence(history, ["a"]).loc[2, "a"] == 0.5  # no initial: to epoch 1


# ----------------------------------------------------------------- bad input
def test_bad_input_is_named_with_its_fix():
    model, (x, y) = build(extra_head=True), probe_batch()
    with pytest.raises(ValueError, match=r"\['zz'\] are not outputs.*'a', 'b', 'c'"):
        diagnostics.task_gradients(model, x, y, {"a": LOSSES["a"], "zz": LOSSES["b"]})
    with pytest.raises(ValueError, match=r"no labels for task\(s\) \['b'\]"):
        diagnostics.task_gradients(model, x, {"a": y["a"]}, LOSSES)
    with pytest.raises(ValueError, match=r"No task's loss reaches \['c_hidden/kernel'"):
        diagnostics.task_gradients(model, x, y, LOSSES, variables=["c_hidden"])
    with pytest.raises(ValueError, match="'nope' is no trainable variable or layer"):
        diagnostics.task_gradients(model, x, y, LOSSES, variables=["nope"])
    listed = keras.Model(model.input, [model.output["a"], model.output["b"]])
    with pytest.raises(TypeError, match="not a dict.*keras.Model"):
        diagnostics.task_gradients(listed, x, y, LOSSES)
    with pytest.raises(ValueError, match="not compiled: pass losses="):
        diagnostics.task_gradients(build(), x, y, None)
    with pytest.raises(ValueError, match="every must be"):
        diagnostics.GradientProbe(x, y, LOSSES, every=0)


def test_celeba_file_labels_and_too_large_classes_are_refused_as_in_training():
    model, (x, y) = build(), probe_batch()
    raw = {"a": y["a"], "b": y["b"] * 2 - 1}  # CelebA's file form: -1 absent, 1 present
    with pytest.raises(ValueError, match=r"'b'.*-1 and 1 and never 0.*\(labels \+ 1\) // 2"):
        diagnostics.gradient_stats(model, x, raw, LOSSES)
    big = {"a": np.full_like(y["a"], 3), "b": y["b"]}  # head "a" has 3 logits: classes 0..2
    with pytest.raises(ValueError, match=r"\['a'\]: class labels must be below.*\{'a': 3\}"):
        diagnostics.gradient_stats(model, x, big, LOSSES)


def test_convergence_of_a_task_whose_first_loss_is_nan_uses_its_first_finite_loss():
    history = {"a_loss": [float("nan"), 0.8, 0.4], "b_loss": [1.0, 0.5, 0.25]}
    with pytest.warns(UserWarning, match=r"first loss of \['a'\] is NaN.*'a' to epoch 2"):
        ratios = diagnostics.convergence(history, ["a", "b"])
    assert ratios["a"].tolist()[1:] == [1.0, 0.5] and math.isnan(ratios.loc[1, "a"])
    assert ratios["b"].tolist() == [1.0, 0.5, 0.25]
