"""The real TensorFlow Datasets code paths, run offline on tfds' mocked records.

``tfds.testing.mock_data`` replaces what ``tfds.load`` reads with random examples built
from each dataset's own feature specification (CIFAR-100: a 32x32x3 image, ``label`` and
``coarse_label``; celeb_a: a 218x178 JPEG and a dict of 40 boolean ``attributes``), and
skips the download. The same records are read here directly, so every check compares the
kit's loaders with what TFDS itself hands out.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mtlkit import data
from mtlkit.data import celeba, cifar100
from mtlkit.data.celeba_labels import UNKNOWN

MOCK = {"policy": tfds.testing.MockPolicy.USE_CODE}  # from the builders' code: no files


def _tfds_arrays(name: str, split: str) -> dict[str, np.ndarray]:
    """The mocked split as TFDS gives it, every feature stacked (images decoded)."""
    rows = list(tfds.as_numpy(tfds.load(name, split=split)))
    return {key: np.stack([r[key] for r in rows]) for key in ("image", "label", "coarse_label")}


def _rows(images: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> list[tuple]:
    """Examples as hashable rows, to compare splits as sets."""
    return sorted((x.tobytes(), int(f), int(c)) for x, f, c in zip(images, fine, coarse))


# ------------------------------------------------------------------------ CIFAR-100
def test_cifar100_tfds_split_shapes_and_label_keys(tmp_path):
    n = 50
    with tfds.testing.mock_data(num_examples=n, **MOCK):
        truth = _tfds_arrays("cifar100", "train")
        train = data.load_cifar100_arrays("train", "tfds", data_dir=tmp_path, split_seed=3)
        val = data.load_cifar100_arrays("validation", "tfds", data_dir=tmp_path, split_seed=3)
    n_val = round(cifar100.VALIDATION_FRACTION * n)  # the report's 80/20 split
    assert len(train[0]) == n - n_val and len(val[0]) == n_val
    for images, fine, coarse in (train, val):
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
        assert fine.dtype == coarse.dtype == np.int32
    # together, train and validation are exactly the mocked training records, no overlap
    together = [np.concatenate(parts) for parts in zip(train, val)]
    assert _rows(*together) == _rows(truth["image"], truth["label"], truth["coarse_label"])


def test_cifar100_tfds_dataset_maps_label_and_coarse_label(tmp_path):
    with tfds.testing.mock_data(num_examples=12, **MOCK):
        truth = _tfds_arrays("cifar100", "test")
        ds = data.load_cifar100("test", "tfds", data_dir=tmp_path)
        examples = list(ds)
    assert len(examples) == 12
    image, labels = examples[0]
    assert image.shape == (32, 32, 3) and image.dtype == tf.float32
    assert set(labels) == {"fine", "coarse"} and labels["fine"].dtype == tf.int32
    np.testing.assert_allclose(image.numpy(), truth["image"][0] / 255.0, rtol=1e-6)
    assert [int(y["fine"]) for _, y in examples] == truth["label"].tolist()
    assert [int(y["coarse"]) for _, y in examples] == truth["coarse_label"].tolist()


def test_cifar100_tfds_limit(tmp_path):
    with tfds.testing.mock_data(num_examples=20, **MOCK):
        images, fine, _ = data.load_cifar100_arrays("test", "tfds", data_dir=tmp_path, limit=7)
    assert images.shape == (7, 32, 32, 3) and fine.shape == (7,)


# --------------------------------------------------------------------------- CelebA
def _celeba_truth(split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The mocked records, their JPEGs decoded whole (the mock draws the encoded bytes)."""
    skip = {"image": tfds.decode.SkipDecoding()}
    rows = list(tfds.as_numpy(tfds.load("celeb_a", split=split, decoders=skip)))
    images = np.stack([tf.io.decode_jpeg(r["image"], channels=3).numpy() for r in rows])
    return images, {a: np.array([r["attributes"][a] for r in rows]) for a in celeba.ATTRIBUTES}


def test_celeba_tfds_images_and_attribute_mapping(tmp_path):
    attributes = ["Male", "Wearing_Hat", "Young"]
    with tfds.testing.mock_data(num_examples=6, **MOCK):
        images, truth = _celeba_truth("validation")
        native = list(
            celeba.load_celeba("validation", attributes, source="tfds", data_dir=tmp_path)
        )
        small = list(
            data.load_celeba(
                "validation", attributes, source="tfds", image_size=24, data_dir=tmp_path
            )
        )
    assert images.shape[1:] == (218, 178, 3)  # the aligned CelebA shape
    assert len(native) == len(small) == 6
    for i, (image, labels) in enumerate(native):
        assert image.dtype == tf.uint8
        np.testing.assert_array_equal(image.numpy(), images[i, 20:198])  # the face square
        assert set(labels) == set(attributes)
        for a in attributes:  # tfds' booleans become int32 0 / 1
            assert labels[a].dtype == tf.int32 and int(labels[a]) == int(truth[a][i])
    assert {tuple(image.shape) for image, _ in small} == {(24, 24, 3)}


def test_celeba_tfds_labels_and_limit(tmp_path):
    with tfds.testing.mock_data(num_examples=9, **MOCK):
        _, truth = _celeba_truth("train")
        labels = data.load_labels("train", source="tfds", data_dir=tmp_path)
        first = data.load_labels("train", source="tfds", data_dir=tmp_path, limit=4)
        images = list(data.load_celeba("train", source="tfds", image_size=16, limit=4))
    assert list(labels.columns) == list(data.EIGHT) and len(labels) == 9
    assert all(labels[a].dtype == np.int8 for a in data.EIGHT)
    for a in data.EIGHT:
        assert labels[a].tolist() == truth[a].astype(int).tolist()
    assert len(first) == 4 and len(images) == 4
    assert first.equals(labels.iloc[:4])


def test_celeba_tfds_hidden_labels_match_load_labels(tmp_path):
    hide = {"Wearing_Necklace": 0.5, "Male": 0.25}
    with tfds.testing.mock_data(num_examples=8, **MOCK):
        full = data.load_labels("train", source="tfds", data_dir=tmp_path)
        labels = data.load_labels("train", source="tfds", data_dir=tmp_path, hide_labels=hide)
        ds = data.load_celeba(
            "train", source="tfds", image_size=16, data_dir=tmp_path, hide_labels=hide,
            shuffle_seed=1,
        )  # fmt: skip
        streamed = [{a: int(v) for a, v in y.items()} for _, y in ds]
    assert (labels["Wearing_Necklace"] == UNKNOWN).sum() == round(0.5 * 8)
    assert (labels["Male"] == UNKNOWN).sum() == round(0.25 * 8)
    known = labels != UNKNOWN
    assert labels[known].equals(full[known])  # what is not hidden is the true label
    # the same rows are hidden in the image stream (shuffled before decoding)
    expected = sorted(tuple(r) for r in labels[list(data.EIGHT)].to_numpy().tolist())
    assert sorted(tuple(r[a] for a in data.EIGHT) for r in streamed) == expected


@pytest.mark.parametrize("loader", ["load_celeba", "load_labels"])
def test_celeba_tfds_unknown_attribute_before_any_download(loader):
    with pytest.raises(ValueError, match="Unknown CelebA attribute"):
        getattr(data, loader)("train", ["Male", "Hat"], source="tfds")
