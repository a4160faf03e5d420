"""What the Keras fit path (compile_multitask, fit_resumable, the study runners' arm="fit",
RecalibrateBatchNorm) does with input that would otherwise give a silently wrong result."""

import keras
import pytest
import tensorflow as tf
from test_fit_resumable import tiny_build, tiny_data

from mtlkit import studies, training


def _labels_with_unknown(task="b", at=40, n=64):
    """tiny_data's batches of 16, with a -1 ("unknown") label in the third batch only."""
    x, y = next(iter(tiny_data(n).unbatch().batch(n)))
    y = {t: v.numpy().copy() for t, v in y.items()}
    y[task][at] = -1
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_fit_resumable_refuses_unknown_labels(tmp_path):
    named = r"train_data: task 'b' has labels below 0.*training\.train"
    with pytest.raises(ValueError, match=named):
        training.fit_resumable(
            tiny_build, _labels_with_unknown(), epochs=1, run_dir=tmp_path, verbose=0
        )
    test = {"test": _labels_with_unknown("a")}
    with pytest.raises(ValueError, match=r"extra_eval\[test\]: task 'a' has labels below 0"):
        training.fit_resumable(
            tiny_build, tiny_data(), epochs=1, run_dir=tmp_path / "2", extra_eval=test, verbose=0
        )


def test_run_celeba_refuses_fit_with_hidden_labels(tmp_path):
    hidden = {"Wearing_Necklace": 0.9}
    settings = studies.celeba_settings("quick", "synthetic", hide_labels=hidden, train_limit=64,
                                       eval_limit=32, image_size=32, epochs=1)  # fmt: skip
    with pytest.raises(ValueError, match="arm='fit' with hide_labels.*arm='train'"):
        studies.run_celeba(0, settings, runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _model():
    x = keras.Input((6,))
    h = keras.layers.Dense(4)(x)
    return keras.Model(x, {"a": keras.layers.Dense(3, name="a")(h),
                           "b": keras.layers.Dense(2, name="b")(h)})  # fmt: skip


@pytest.mark.parametrize(
    "weights, error, match",
    [
        ({"a": float("nan")}, ValueError, "finite number >= 0"),
        ({"a": -2.0}, ValueError, "finite number >= 0"),
        ([1.0, 2.0], TypeError, "dict keyed by task"),
    ],
)
def test_compile_multitask_refuses_bad_loss_weights(weights, error, match):
    with pytest.raises(error, match=match):
        training.compile_multitask(_model(), learning_rate=1e-3, loss_weights=weights)


def test_compile_multitask_weighs_a_task_left_out_by_1_as_train_does():
    model = training.compile_multitask(_model(), learning_rate=1e-3, loss_weights={"a": 2.0})
    logs = model.evaluate(tiny_data(16), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(2 * logs["a_loss"] + logs["b_loss"], rel=1e-5)


@pytest.mark.parametrize("rate", [-1e-3, 0.0, float("nan"), float("inf"), "1e-3"])
def test_compile_multitask_refuses_a_learning_rate_that_is_not_positive(rate):
    with pytest.raises(ValueError, match="learning_rate=.*positive, finite number"):
        training.compile_multitask(_model(), learning_rate=rate)


@pytest.mark.parametrize("count", [-5, 0, 2.5, True])
def test_recalibrate_batchnorm_needs_a_positive_count(count):
    with pytest.raises(ValueError, match="num_images=.*positive whole number.*leave this callback"):
        training.RecalibrateBatchNorm(tiny_data(), count)
