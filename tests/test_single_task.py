"""Single-task baselines as a loss weight of 0: the same run as a one-head model, one trace.

Notebook 07's eight single-task baselines train the eight-head model with one attribute's
loss weight 1 and the others' 0 (``CelebaSettings.single_task``): the other heads get no
gradient, so the backbone and the one head train exactly as a one-head model would, and
the eight runs reuse one traced step (loss weights are a variable's value, not a constant
of the trace).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_training_loop import LOSSES, arrays, build

from mtlkit import studies
from mtlkit.studies import runners
from mtlkit.training import loop, set_seed, train


def _one_head(two: keras.Model) -> keras.Model:
    """The model ``build()`` makes, without head "a", with ``two``'s weights."""
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    one = keras.Model(x, {"b": keras.layers.Dense(1, name="b")(h)})
    for name in ("trunk", "bn", "b"):
        one.get_layer(name).set_weights(two.get_layer(name).get_weights())
    return one


def test_a_zero_loss_weight_trains_like_a_one_head_model():
    set_seed(0)
    two = build()
    one = _one_head(two)
    head_a = [w.copy() for w in two.get_layer("a").get_weights()]
    x, y = arrays()
    data_two = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    data_one = tf.data.Dataset.from_tensor_slices((x, {"b": y["b"]})).batch(32)
    options = dict(epochs=2, verbose=0, seed=0)
    h_two = train(two, data_two, losses=LOSSES, loss_weights={"a": 0.0},
                  optimizer=keras.optimizers.Adam(0.01), **options).history  # fmt: skip
    h_one = train(one, data_one, losses={"b": LOSSES["b"]},
                  optimizer=keras.optimizers.Adam(0.01), **options).history  # fmt: skip
    np.testing.assert_allclose(h_two["b_loss"], h_one["b_loss"], rtol=1e-6)
    for name in ("trunk", "bn", "b"):
        for w2, w1 in zip(two.get_layer(name).get_weights(), one.get_layer(name).get_weights()):
            np.testing.assert_allclose(w2, w1, rtol=1e-5, atol=1e-7)
    for before, after in zip(head_a, two.get_layer("a").get_weights()):
        assert np.array_equal(before, after), "a head with loss weight 0 moved"


def test_new_loss_weights_reuse_the_traced_steps():
    set_seed(0)
    model, optimizer = build(), keras.optimizers.Adam(0.01)
    x, y = arrays()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    options = dict(epochs=1, verbose=0, losses=LOSSES, validation_data=data)
    train(model, data, optimizer=optimizer, **options)
    traced = loop._TRACED[model][1].tracing_count()
    history = train(model, data, optimizer=optimizer, loss_weights={"a": 0.0}, **options).history
    assert loop._TRACED[model][1].tracing_count() == traced, "new loss weights retraced"
    # the trained and the validation totals now count task b alone
    np.testing.assert_allclose(history["loss"], history["b_loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], history["val_b_loss"], rtol=1e-5)


def test_single_task_baselines_share_one_model(tmp_path):
    kwargs = dict(study="remedies", attributes=("Male", "Smiling"), image_size=32,
                  train_limit=32, eval_limit=32, epochs=1)  # fmt: skip
    runners._LAST_MODEL.clear()
    models, tags = [], set()
    for attribute in ("Male", "Smiling"):
        settings = studies.celeba_settings("quick", "synthetic", single_task=attribute,
                                               **kwargs)  # fmt: skip
        run = studies.run_celeba(0, settings, arm="train", runs_dir=tmp_path)
        models.append(next(iter(runners._LAST_MODEL.values()))[0])
        tags.add(settings.tag)
        assert f"trained on {attribute} alone" in settings.data_label
        assert run.history[f"{attribute}_loss"] == pytest.approx(run.history["loss"], rel=1e-5)
        assert list(run.table.index) == [attribute, "mean over tasks"]  # the trained head only
    assert models[0] is models[1] and len(tags) == 2


def test_single_task_bad_input():
    with pytest.raises(ValueError, match="not one of the attributes"):
        studies.celeba_settings("quick", "synthetic", single_task="Mael")
    settings = studies.celeba_settings("quick", "synthetic", single_task="Male")
    with pytest.raises(ValueError, match="use arm='train' or 'fit'"):
        studies.run_celeba(0, settings, arm="uw")
    # the field is hashed only when set: run folders made before it existed keep their names
    # (the tag below is the one this profile had before single_task was added). On JAX the
    # kit hashes the backend's name too (runs on JAX get folders of their own), so its tag
    # differs; still without single_task: hashed as None it would end in 10e2f7d8 instead
    plain = studies.CelebaSettings(profile="quick", source="synthetic")
    digest = "1c1931f5" if keras.backend.backend() == "jax" else "2d1c6f20"
    assert plain.tag == f"celeba-quick-synthetic-{digest}"
