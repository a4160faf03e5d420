"""The CelebA model: ResNet18 shared by one linear head per attribute."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtlkit.data.celeba import ATTRIBUTES, EIGHT
from mtlkit.models.architectures import build_celeba


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
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(crops)["Male"]),
        keras.ops.convert_to_numpy(model(crops.astype("float32"))["Male"]),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "attributes, match",
    [
        (["Male", "Beard"], "Unknown CelebA attribute.*Beard"),
        (["Male", "Male"], "repeats"),
        ([], "non-empty"),
    ],
)
def test_attributes_are_checked_like_the_loader_does(attributes, match):
    with pytest.raises(ValueError, match=match):
        build_celeba(attributes, weights=None)


def test_model_trains_on_one_batch_with_fit():
    """One fit step with the notebook's compile settings lowers nothing to NaN."""
    from mtlkit.training import compile_multitask

    model = compile_multitask(
        build_celeba(["Male", "Smiling"], weights=None, image_size=32),
        learning_rate=1e-3,
        binary=True,
    )
    x = np.random.default_rng(1).integers(0, 256, size=(8, 40, 40, 3), dtype=np.uint8)
    y = {"Male": np.array([0, 1] * 4), "Smiling": np.array([1, 1, 0, 0] * 2)}
    history = model.fit(x, y, epochs=1, verbose=0)
    assert {"Male_loss", "Smiling_accuracy"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])


def test_pretrained_weights_come_from_the_preset_named_by_the_environment(tmp_path, monkeypatch):
    """A preset folder written by save_to_preset stands in for Kaggle's download."""
    from mtlkit.models.architectures import resnet18_backbone

    saved = resnet18_backbone(None)  # random weights: only a real load can reproduce them
    saved.save_to_preset(str(tmp_path / "resnet18"))
    monkeypatch.setenv("MTLKIT_RESNET18_PRESET", str(tmp_path / "resnet18"))
    model = build_celeba(EIGHT, weights="imagenet", image_size=32)
    loaded = model.get_layer(saved.name)
    assert [w.path for w in loaded.weights] == [w.path for w in saved.weights]
    for ours, theirs in zip(loaded.weights, saved.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )
    fresh = resnet18_backbone(None)
    assert not np.array_equal(
        keras.ops.convert_to_numpy(fresh.weights[0]), keras.ops.convert_to_numpy(saved.weights[0])
    )


def test_a_missing_preset_says_how_to_go_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLKIT_RESNET18_PRESET", str(tmp_path / "no_such_preset"))
    with pytest.raises(RuntimeError) as err:
        build_celeba(EIGHT, weights="imagenet", image_size=32)
    message = str(err.value)
    assert "no_such_preset" in message and "MTLKIT_RESNET18_PRESET" in message
    for advice in ("Kaggle", "save_to_preset", "weights=None", "say so beside any result"):
        assert advice in message


def test_the_default_preset_needs_kaggle(monkeypatch):
    """Offline, asking for ImageNet weights is an error that says how to go on."""
    monkeypatch.delenv("MTLKIT_RESNET18_PRESET", raising=False)
    try:
        model = build_celeba(EIGHT, weights="imagenet", image_size=32)
    except RuntimeError as err:
        assert "resnet_18_imagenet" in str(err) and "weights=None" in str(err)
    else:  # Kaggle was reachable: the weights must then really be loaded
        assert model.count_params() == 11_190_216


def test_bad_weights_argument():
    with pytest.raises(ValueError, match="weights='random'.*None"):
        build_celeba(EIGHT, weights="random")
