"""CIFAR-100 loading: the official pickle layout, the report's split, augmentation,
the synthetic stand-in, and every bad input."""

import pickle

import numpy as np
import pytest
import tensorflow as tf

from mtlkit import data
from mtlkit.data import cifar100


def write_official(root, n_train=50, n_test=20, seed=0):
    """Write a tiny copy of ``cifar-100-python/`` in the official pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {
        b"fine_label_names": [n.encode() for n in cifar100.FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in cifar100.COARSE_NAMES],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        batch = {
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
            b"batch_label": split.encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": cifar100.FINE_TO_COARSE[fine].tolist(),
            # rows are channel-major: all red values, then green, then blue
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
        }
        (folder / split).write_bytes(pickle.dumps(batch))
        arrays[split] = (images, fine, cifar100.FINE_TO_COARSE[fine])
    return arrays


def test_hierarchy_is_the_official_one():
    assert len(cifar100.FINE_NAMES) == 100 and len(cifar100.COARSE_NAMES) == 20
    assert np.bincount(cifar100.FINE_TO_COARSE).tolist() == [5] * 20
    names = cifar100.class_names()
    maple = names["fine"].index("maple_tree")
    assert names["coarse"][cifar100.FINE_TO_COARSE[maple]] == "trees"


def test_folder_reader_decodes_pixels_and_both_labels(tmp_path):
    truth = write_official(tmp_path)
    images, fine, coarse = cifar100.read_cifar100_folder(tmp_path, "test")
    np.testing.assert_array_equal(images, truth["test"][0])
    np.testing.assert_array_equal(fine, truth["test"][1])
    np.testing.assert_array_equal(coarse, truth["test"][2])


def test_load_cifar100_yields_float_images_and_a_label_dict(tmp_path):
    truth = write_official(tmp_path)
    ds = data.load_cifar100("test", "folder", data_dir=tmp_path)
    image, labels = next(iter(ds))
    assert image.shape == (32, 32, 3) and image.dtype == tf.float32
    assert set(labels) == {"fine", "coarse"}
    np.testing.assert_allclose(image.numpy(), truth["test"][0][0] / 255.0, atol=1e-6)
    assert int(labels["fine"]) == truth["test"][1][0]
    assert int(labels["coarse"]) == truth["test"][2][0]
    assert ds.cardinality() == 20


def test_seeded_80_20_split_of_the_training_images(tmp_path):
    write_official(tmp_path, n_train=50)
    train = data.load_cifar100_arrays("train", "folder", data_dir=tmp_path, split_seed=3)
    val = data.load_cifar100_arrays("validation", "folder", data_dir=tmp_path, split_seed=3)
    assert len(train[0]) == 40 and len(val[0]) == 10

    def keys(images):
        return {image.tobytes() for image in images}

    assert not keys(train[0]) & keys(val[0])  # disjoint
    full = cifar100.read_cifar100_folder(tmp_path, "train")[0]
    assert keys(train[0]) | keys(val[0]) == keys(full)  # and complete
    again = data.load_cifar100_arrays("validation", "folder", data_dir=tmp_path, split_seed=3)
    np.testing.assert_array_equal(again[0], val[0])
    other = data.load_cifar100_arrays("validation", "folder", data_dir=tmp_path, split_seed=4)
    assert keys(other[0]) != keys(val[0])


def test_limit_and_the_test_split_is_the_official_one(tmp_path):
    truth = write_official(tmp_path)
    images, _, _ = data.load_cifar100_arrays("test", "folder", data_dir=tmp_path, limit=5)
    np.testing.assert_array_equal(images, truth["test"][0][:5])


# ---------------------------------------------------------------- bad input
def test_missing_file_names_it_and_the_fix(tmp_path):
    write_official(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(FileNotFoundError, match=r"test.*cifar-100-python"):
        data.load_cifar100("test", "folder", data_dir=tmp_path)


def test_missing_meta_is_an_incomplete_copy(tmp_path):
    write_official(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(FileNotFoundError, match="meta"):
        data.load_cifar100("train", "folder", data_dir=tmp_path)


def test_missing_folder(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar100("train", "folder", data_dir=tmp_path / "nowhere")
    for part in ("source='folder'", "Download the CIFAR-100", "MTLKIT_CIFAR100_DIR", "'synthetic'"):
        assert part in str(err.value)
    monkeypatch.delenv("MTLKIT_CIFAR100_DIR", raising=False)
    with pytest.raises(ValueError, match="source='folder' needs data_dir.*MTLKIT_CIFAR100_DIR"):
        data.load_cifar100("train", "folder")
    monkeypatch.setenv("MTLKIT_CIFAR100_DIR", str(tmp_path))
    write_official(tmp_path)
    images, _, _ = data.load_cifar100_arrays("test", "folder")
    assert images.shape == (20, 32, 32, 3)


def test_truncated_pickle(tmp_path):
    write_official(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated or corrupt"):
        data.load_cifar100("train", "folder", data_dir=tmp_path)


def _cut_images(batch):
    batch[b"data"] = batch[b"data"][:, :3000]


def _cut_labels(batch):
    batch[b"fine_labels"] = batch[b"fine_labels"][:-1]


@pytest.mark.parametrize(
    "change, match",
    [
        (_cut_images, r"\(N, 3072\)"),  # wrong image shape
        (_cut_labels, "20 images but 19 fine"),  # labels that do not match the images
    ],
)
def test_inconsistent_test_batch(tmp_path, change, match):
    write_official(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    batch = pickle.loads(path.read_bytes())
    change(batch)
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=match):
        data.load_cifar100("test", "folder", data_dir=tmp_path)


def test_labels_that_break_the_hierarchy_are_refused(tmp_path):
    """A fine label under the wrong superclass used to be trained on as it was."""
    truth = write_official(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    batch = pickle.loads(path.read_bytes())
    fine = truth["train"][1]
    for i in (7, 30):  # move two examples to the next superclass
        batch[b"coarse_labels"][i] = int((cifar100.FINE_TO_COARSE[fine[i]] + 1) % 20)
    path.write_bytes(pickle.dumps(batch))
    name = cifar100.FINE_NAMES[fine[7]]
    right = cifar100.COARSE_NAMES[cifar100.FINE_TO_COARSE[fine[7]]]
    with pytest.raises(ValueError) as err:
        data.load_cifar100("train", "folder", data_dir=tmp_path)
    message = str(err.value)
    assert f"example 7 has fine label {fine[7]} ({name})" in message
    assert f"but {name} belongs to {right}" in message and "2 of 50 examples" in message
    data.load_cifar100("test", "folder", data_dir=tmp_path)  # the other split is fine


def test_meta_with_other_class_names_is_refused(tmp_path):
    write_official(tmp_path)
    path = tmp_path / "cifar-100-python" / "meta"
    meta = pickle.loads(path.read_bytes())
    names = meta[b"fine_label_names"]
    names[0], names[1] = names[1], names[0]  # apple <-> aquarium_fish
    path.write_bytes(pickle.dumps(meta))
    with pytest.raises(ValueError, match=r"label 0 is 'aquarium_fish' where CIFAR-100 has 'apple'"):
        data.load_cifar100("test", "folder", data_dir=tmp_path)


def test_unreachable_download_says_how_to_go_on(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve host")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError) as err:
        data.load_cifar100("train", "tfds", data_dir=tmp_path)
    message = str(err.value)
    assert "source='folder'" in message and "source='synthetic'" in message
    assert "Failed to resolve host" in message


def test_bad_split_source_and_limit():
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_cifar100("val", "synthetic")
    with pytest.raises(ValueError, match="Unknown source"):
        data.load_cifar100("train", "internet")
    with pytest.raises(ValueError, match="positive"):
        data.load_cifar100("test", "synthetic", limit=0, synthetic_sizes={"test": 10})


@pytest.mark.parametrize("limit", [-5, 0, 2.5, "10", True])
def test_limit_must_be_a_positive_int_or_none(limit):
    """-5 used to keep all but the last five examples; 2.5 and "10" failed with a TypeError."""
    for load in (data.load_cifar100, data.load_cifar100_arrays):
        with pytest.raises(ValueError, match=r"limit=.*positive whole number.*or None"):
            load("test", "synthetic", limit=limit, synthetic_sizes={"test": 10})
    images, _, _ = data.load_cifar100_arrays(
        "test", "synthetic", limit=np.int64(3), synthetic_sizes={"test": 10}
    )
    assert len(images) == 3


@pytest.mark.parametrize("batch_size", [2.5, 0, -1, "8", None])
def test_batch_size_must_be_a_positive_int(batch_size):
    ds = tf.data.Dataset.range(10)
    with pytest.raises(ValueError, match=r"batch_size=.*positive whole number"):
        data.batched(ds, batch_size)


# ---------------------------------------------------------------- synthetic data
def test_synthetic_is_deterministic_and_hierarchical():
    a = cifar100.synthetic_cifar100(500, seed=7)
    b = cifar100.synthetic_cifar100(500, seed=7)
    c = cifar100.synthetic_cifar100(500, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    images, fine, coarse = a
    assert images.shape == (500, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(coarse, cifar100.FINE_TO_COARSE[fine])


def _centroid_accuracy(train, test, labels_index, n_classes):
    x_train = train[0].reshape(len(train[0]), -1).astype(np.float32)
    x_test = test[0].reshape(len(test[0]), -1).astype(np.float32)
    y_train, y_test = train[labels_index], test[labels_index]
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(n_classes)])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == y_test).mean())


def test_synthetic_is_learnable_and_coarse_is_easier():
    train = cifar100.synthetic_cifar100(4000, seed=0)
    test = cifar100.synthetic_cifar100(1000, seed=1)
    fine_acc = _centroid_accuracy(train, test, 1, 100)
    coarse_acc = _centroid_accuracy(train, test, 2, 20)
    assert fine_acc > 5 * 0.01  # well above chance (1 %)
    assert coarse_acc > 5 * 0.05  # well above chance (5 %)
    assert coarse_acc > fine_acc


# ---------------------------------------------------------------- pipeline
def test_augmentation_changes_training_batches_only_and_is_seeded():
    ds = data.load_cifar100("test", "synthetic", synthetic_sizes={"test": 64})
    plain = next(iter(data.batched(ds, 32)))[0].numpy()
    first = next(iter(data.batched(ds, 32, augment=data.augmentation(seed=5))))[0].numpy()
    again = next(iter(data.batched(ds, 32, augment=data.augmentation(seed=5))))[0].numpy()
    assert first.shape == plain.shape == (32, 32, 32, 3)
    assert not np.allclose(first, plain)
    np.testing.assert_array_equal(first, again)


def test_batched_shuffles_reproducibly():
    ds = data.load_cifar100("test", "synthetic", synthetic_sizes={"test": 50})

    def order(seed):
        batches = data.batched(ds, 10, shuffle=True, seed=seed)
        return np.concatenate([y["fine"].numpy() for _, y in batches])

    assert (order(1) == order(1)).all()
    assert sorted(order(1)) == sorted(order(2)) and not (order(1) == order(2)).all()


def test_data_is_the_one_entry_point_for_loading():
    """mtlkit.data re-exports the loaders and nothing else of the data modules."""
    from mtlkit.data import celeba

    assert set(data.__all__) == {
        "load_cifar100", "load_cifar100_arrays", "load_celeba", "load_labels", "batched",
        "augmentation", "EIGHT",
    }  # fmt: skip
    for name in data.__all__:
        assert getattr(data, name) is not None
    assert data.load_cifar100 is cifar100.load_cifar100 and data.load_celeba is celeba.load_celeba
    for other in ("read_cifar100_folder", "synthetic_cifar100", "label_stats", "ATTRIBUTES"):
        assert not hasattr(data, other), other
