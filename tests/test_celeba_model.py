"""The CelebA model: ResNet18 shared by one linear head per attribute."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtlkit.architectures import build_celeba
from mtlkit.celeba import ATTRIBUTES, EIGHT


def test_eight_heads_and_parameter_count():
    model = build_celeba(EIGHT, weights=None, image_size=64)
    assert sorted(model.output_names) == sorted(EIGHT)  # keras sorts dict outputs
    assert model.count_params() == 11_190_216  # 11,186,112 backbone + 8 x 513 heads
    outputs = model(np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8))
    assert set(outputs) == set(EIGHT)
    assert all(tuple(v.shape) == (2, 1) for v in outputs.values())


@pytest.mark.parametrize("attributes", [["Bald"], ["Young", "5_o_Clock_Shadow", "Wearing_Necktie"]])
def test_any_subset_of_the_forty(attributes):
    model = build_celeba(attributes, weights=None, image_size=32)
    assert sorted(model.output_names) == sorted(attributes)
    assert model.count_params() == 11_186_112 + 513 * len(attributes)


def test_all_forty():
    model = build_celeba(ATTRIBUTES, weights=None, image_size=32)
    assert len(model.output_names) == 40


def test_model_resizes_rescales_and_normalises_its_input():
    """uint8 crops of any size in; the backbone sees ImageNet-normalised image_size pixels."""
    model = build_celeba(["Male"], weights=None, image_size=48)
    prepare = keras.Model(model.input, model.get_layer("imagenet_normalization").output)
    crops = np.random.default_rng(2).integers(0, 256, size=(3, 178, 178, 3), dtype=np.uint8)
    seen = keras.ops.convert_to_numpy(prepare(crops))
    assert seen.shape == (3, 48, 48, 3)
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(crops.astype("float32"), (48, 48)))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(seen, (resized / 255 - mean) / std, atol=1e-4)
    same_size = keras.ops.convert_to_numpy(prepare(crops[:, :48, :48]))
    np.testing.assert_allclose(same_size, (crops[:, :48, :48] / 255 - mean) / std, atol=1e-4)
    # uint8 and float input give the same logits
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(crops)["Male"]),
                               keras.ops.convert_to_numpy(model(crops.astype("float32"))["Male"]),
                               atol=1e-5)


def test_unknown_attribute():
    with pytest.raises(ValueError, match="Unknown CelebA attribute.*Beard"):
        build_celeba(["Male", "Beard"], weights=None)


def test_model_trains_on_one_batch_with_fit():
    """One fit step with the notebook's compile settings lowers nothing to NaN."""
    from mtlkit.training import compile_multitask

    model = compile_multitask(build_celeba(["Male", "Smiling"], weights=None, image_size=32),
                              learning_rate=1e-3, binary=True)
    x = np.random.default_rng(1).integers(0, 256, size=(8, 40, 40, 3), dtype=np.uint8)
    y = {"Male": np.array([0, 1] * 4), "Smiling": np.array([1, 1, 0, 0] * 2)}
    history = model.fit(x, y, epochs=1, verbose=0)
    assert {"Male_loss", "Smiling_accuracy"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])


def test_pretrained_weights_fail_loudly_without_internet():
    """Offline, asking for ImageNet weights is an error that says how to go on."""
    try:
        model = build_celeba(EIGHT, weights="imagenet", image_size=32)
    except RuntimeError as err:
        assert "weights=None" in str(err) and "internet" in str(err)
    else:  # the preset was reachable: the weights must then really be loaded
        assert model.count_params() == 11_190_216
