"""The data sets of the two studies -- CIFAR-100 and CelebA -- and the pipeline that feeds them.
This package's entry point is the one way in for loading data, for notebooks and studies.

* CIFAR-100, fine and coarse labels: :func:`load_cifar100` (a ``tf.data.Dataset``) and
  :func:`load_cifar100_arrays` (NumPy), with the report's :func:`augmentation`
  (see :mod:`mtlkit.data.cifar100`);
* CelebA, face attributes: :func:`load_celeba` (images and labels) and :func:`load_labels`
  (labels alone, for baselines and statistics), the report's eight attributes :data:`EIGHT`
  (see :mod:`mtlkit.data.celeba`);
* :func:`batched`, the tf.data pipeline that feeds training: cache, shuffle, batch,
  augment on the fly, prefetch.

Everything else (annotation parsing, label statistics, class names, the synthetic
stand-ins) is used through its own module: :mod:`~mtlkit.data.cifar100`,
:mod:`~mtlkit.data.celeba`, :mod:`~mtlkit.data.celeba_labels`,
:mod:`~mtlkit.data.celeba_images`, :mod:`~mtlkit.data.celeba_synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from mtlkit.checks import positive_int
from mtlkit.data.celeba import EIGHT, load_celeba, load_labels
from mtlkit.data.cifar100 import augmentation, load_cifar100, load_cifar100_arrays

__all__ = [
    "EIGHT",
    "augmentation",
    "batched",
    "load_celeba",
    "load_cifar100",
    "load_cifar100_arrays",
    "load_labels",
]

MAX_SHUFFLE_BUFFER = 50_000
"""Examples held for shuffling: all of CIFAR-100's training split; for larger sets, shuffle
the file list before decoding instead (``load_celeba(..., shuffle_seed=...)``)."""


def batched(
    ds: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    augment: Callable | None = None,
    cache: bool = True,
) -> tf.data.Dataset:
    """Turn an unbatched ``(image, labels)`` dataset into training or evaluation batches.

    Decoded examples are cached in memory (``cache=True``) so later epochs skip decoding;
    ``shuffle`` reshuffles every epoch from ``seed``; ``augment`` (e.g.
    :func:`augmentation`) runs on each batch, on the fly, training data only.
    Batches are prefetched so the input pipeline overlaps with training.

    Augmentation runs in a single ``map`` call (not in parallel) so that its random
    draws come in a fixed order: with a seed, two runs see the same augmented images.
    """
    batch_size = positive_int(batch_size, "batch_size", "examples per batch")
    if cache:
        ds = ds.cache()
    if shuffle:
        size = int(ds.cardinality())
        buffer = min(size, MAX_SHUFFLE_BUFFER) if size > 0 else 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (_in_pipeline(augment, x), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def _in_pipeline(augment, x):
    """``augment(x, training=True)`` inside ``tf.data``, layer by layer: Keras's preprocessing
    layers run there in TensorFlow on every Keras backend, but a ``keras.Sequential`` of them
    runs on the backend's own ops (JAX's cannot take a ``tf.data`` tensor)."""
    layers = augment.layers if isinstance(augment, keras.Sequential) else [augment]
    for layer in layers:
        x = layer(x, training=True)
    return x
