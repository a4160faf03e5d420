"""Data for the two studies, in one place.

* CIFAR-100, fine and coarse labels: :func:`load_cifar100` (see :mod:`mtlkit.cifar100`);
* CelebA, face attributes: :func:`load_celeba` (see :mod:`mtlkit.celeba`);
* :func:`batched`, the tf.data pipeline that feeds training: cache, shuffle, batch,
  augment on the fly, prefetch.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from mtlkit.cifar100 import (  # noqa: F401  (re-exported)
    COARSE_NAMES,
    FINE_NAMES,
    FINE_TO_COARSE,
    augmentation,
    class_names,
    load_cifar100,
    load_cifar100_arrays,
    read_cifar100_folder,
    synthetic_cifar100,
)
from mtlkit.celeba import (  # noqa: F401  (re-exported)
    ATTRIBUTES,
    EIGHT,
    TRAIN_POSITIVE_RATES,
    describe_source,
    label_stats,
    load_celeba,
    load_labels,
    majority_classes,
    read_annotations,
    read_attributes,
    read_partition,
    synthetic_labels,
)

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
    :func:`mtlkit.cifar100.augmentation`) runs on each batch, on the fly, training data only.
    Batches are prefetched so the input pipeline overlaps with training.

    Augmentation runs in a single ``map`` call (not in parallel) so that its random
    draws come in a fixed order: with a seed, two runs see the same augmented images.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if cache:
        ds = ds.cache()
    if shuffle:
        size = int(ds.cardinality())
        buffer = min(size, MAX_SHUFFLE_BUFFER) if size > 0 else 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y))
    return ds.prefetch(tf.data.AUTOTUNE)
