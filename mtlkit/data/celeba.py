"""CelebA loaders: images and labels from TFDS, a local folder or the synthetic stand-in.

Three sources give the same thing, an unbatched ``tf.data.Dataset`` of
``(image, {attribute: 0 or 1})`` pairs (see :func:`load_celeba`):

* ``"tfds"`` -- TensorFlow Datasets' ``celeb_a`` (downloads 1.4 GB the first time; the
  hosted download often fails);
* ``"folder"`` -- a local folder in the official layout, the route when the download fails
  (``data_dir``, or the environment variable ``MTLKIT_CELEBA_DIR``)::

      <data_dir>/img_align_celeba/000001.jpg ...
      <data_dir>/list_attr_celeba.txt
      <data_dir>/list_eval_partition.txt

* ``"synthetic"`` -- an embedded stand-in with CelebA's positive rates whose attributes are
  easy or hard to see as on the real images (:mod:`mtlkit.data.celeba_synthetic`). It is only
  used when asked for.

Images are the uint8 centre square of each face, optionally shrunk on the CPU
(:mod:`mtlkit.data.celeba_images`); the model resizes, rescales and normalises them itself.
Caching, shuffling, batching and prefetching are left to :func:`mtlkit.data.batched`. For
data too large to cache (the full train split is 15 GB even as uint8 178x178), pass
``shuffle_seed``: the cheap list of files (or encoded TFDS records) is reshuffled every
epoch *before* decoding, so no big shuffle buffer of images is needed.

**Partial labels.** ``hide_labels={"Wearing_Necklace": 0.9}`` marks a seeded 90 % of that
attribute's labels as unknown (-1), to study tasks labelled on only part of the images
(:func:`mtlkit.data.celeba_labels.with_hidden_labels`).

The annotation files and label statistics live in :mod:`mtlkit.data.celeba_labels`; the names
used throughout the kit (:data:`EIGHT`, :data:`ATTRIBUTES`, :func:`label_stats`,
:func:`majority_classes`, :func:`check_attributes`, :func:`loader_size`, ...) are
importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from mtlkit import config
from mtlkit.checks import positive_int
from mtlkit.data.celeba_images import (
    FACE_SIDE,
    check_image_size,
    check_images,
    decode_face,
    loader_size,
)
from mtlkit.data.celeba_labels import (
    ATTR_FILE,
    ATTRIBUTES,
    EIGHT,
    IMAGE_FOLDER,
    PARTITION_FILE,
    SPLITS,
    UNKNOWN,
    check_attributes,
    check_hidden,
    check_split,
    hidden_mask,
    label_stats,
    majority_classes,
    read_annotations,
    with_hidden_labels,
)
from mtlkit.data.celeba_synthetic import SYNTHETIC_SIZES, cue_shown, renderer, synthetic_labels

__all__ = [
    "ATTRIBUTES", "ATTR_FILE", "EIGHT", "FACE_SIDE", "IMAGE_FOLDER", "PARTITION_FILE",
    "SOURCES", "SPLITS", "SYNTHETIC_SIZES", "UNKNOWN", "check_attributes", "describe_source",
    "label_stats", "load_celeba", "load_labels", "loader_size", "majority_classes",
    "read_annotations",
]  # fmt: skip

SOURCES = ("tfds", "folder", "synthetic")

FOLDER_ENV = "MTLKIT_CELEBA_DIR"

FOLDER_HELP = (
    f"Download CelebA yourself (img_align_celeba.zip, {ATTR_FILE}, {PARTITION_FILE}), unzip "
    f"it into one folder and use source='folder' with data_dir=that_folder (or set "
    f"{FOLDER_ENV}=that_folder), or ask explicitly for the embedded stand-in with "
    "source='synthetic' (its numbers are not CelebA results)."
)


# ---------------------------------------------------------------- shared helpers
def _labels_dict(labels: pd.DataFrame, attributes: Sequence[str]) -> dict[str, np.ndarray]:
    return {a: labels[a].to_numpy(np.int32) for a in attributes}


def _maybe_shuffle(ds: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Reshuffle a dataset of small, undecoded elements every epoch (all of it at once)."""
    if seed is None:
        return ds
    size = int(ds.cardinality())
    return ds.shuffle(size if size > 0 else 20_000, seed=seed, reshuffle_each_iteration=True)


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
    return source


def _check_limit(limit: int | None) -> int | None:
    """``limit`` as an int, None, or a ``ValueError`` (see :func:`mtlkit.checks.positive_int`)."""
    return positive_int(limit, "limit", "the first images of the split to keep", allow_none=True)


def _folder(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else the folder named by ``MTLKIT_CELEBA_DIR``, else a clear error."""
    folder = data_dir or config.env_path(FOLDER_ENV)
    if folder is None:
        raise ValueError(
            f"source='folder' needs data_dir (or {FOLDER_ENV}): the folder holding "
            f"{IMAGE_FOLDER}/, {ATTR_FILE} and {PARTITION_FILE}."
        )
    return Path(folder).expanduser()


def _folder_labels(
    data_dir: Path, split: str, attributes: list[str], limit: int | None
) -> pd.DataFrame:
    labels = read_annotations(data_dir)
    return labels.loc[labels["split"] == split, attributes].iloc[:limit]


# ------------------------------------------------------------------------ sources
def _folder_dataset(
    data_dir: Path, split: str, attributes: list[str], image_size: int | None,
    limit: int | None, skip_unreadable: bool, verify: str, shuffle_seed: int | None,
    hidden: Mapping[str, float], hide_seed: int,
) -> tf.data.Dataset:  # fmt: skip
    labels = _folder_labels(data_dir, split, attributes, limit)
    labels = with_hidden_labels(labels, hidden, hide_seed, split)
    folder = data_dir / IMAGE_FOLDER
    usable = check_images(folder, list(labels.index), verify, skip_unreadable)
    labels = labels[usable]
    paths = [str(folder / n) for n in labels.index]

    def load(path, y):
        return decode_face(tf.io.read_file(path), image_size), y

    ds = tf.data.Dataset.from_tensor_slices((paths, _labels_dict(labels, attributes)))
    ds = _maybe_shuffle(ds, shuffle_seed).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds.skipped = int((~usable).sum())  # how many listed images were left out
    return ds


def _tfds_raw(
    data_dir: str | os.PathLike | None, split: str, limit: int | None, download: bool
) -> tf.data.Dataset:
    """TFDS ``celeb_a`` records with the images still encoded, or a clear RuntimeError."""
    import tensorflow_datasets as tfds

    tfds_split = split if limit is None else f"{split}[:{limit}]"
    data_dir = data_dir or config.data_dir() / "tensorflow_datasets"  # as CIFAR-100's
    try:
        raw = tfds.load(
            "celeb_a", split=tfds_split, data_dir=str(data_dir), download=download,
            decoders={"image": tfds.decode.SkipDecoding()},
        )  # fmt: skip
    except Exception as err:  # download / preparation errors come in many types
        raise RuntimeError(
            f"source='tfds': TensorFlow Datasets could not provide celeb_a "
            f"({type(err).__name__}: {err}). Its Google Drive download often fails. "
            f"{FOLDER_HELP} (notebooks: set {FOLDER_ENV})"
        ) from err
    return raw if limit is None else raw.take(limit)


def _count(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(np.int64(0), lambda count, _: count + 1))


def _tfds_dataset(
    data_dir: str | os.PathLike | None, split: str, attributes: list[str],
    image_size: int | None, limit: int | None, download: bool, shuffle_seed: int | None,
    hidden: Mapping[str, float], hide_seed: int,
) -> tf.data.Dataset:  # fmt: skip
    raw = _tfds_raw(data_dir, split, limit, download)
    n = _count(raw) if hidden else 0
    masks = {a: tf.constant(hidden_mask(n, a, s, hide_seed, split)) for a, s in hidden.items()}

    def convert(index, example):
        image = decode_face(example["image"], image_size)  # TFDS keeps celeb_a as JPEG
        labels = {a: tf.cast(example["attributes"][a], tf.int32) for a in attributes}
        for a, mask in masks.items():
            labels[a] = tf.where(mask[index], tf.constant(UNKNOWN, tf.int32), labels[a])
        return image, labels

    ds = _maybe_shuffle(raw.enumerate(), shuffle_seed)  # positions fixed before shuffling
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def _synthetic_dataset(
    split: str, attributes: list[str], image_size: int, n: int | None, seed: int,
    shuffle_seed: int | None, hidden: Mapping[str, float], hide_seed: int,
) -> tf.data.Dataset:  # fmt: skip
    truth = synthetic_labels(split, attributes, n, seed)
    render = renderer(cue_shown(truth, split, seed), split, image_size, seed)
    labels = with_hidden_labels(truth, hidden, hide_seed, split)  # the images stay the same
    indices = np.arange(len(labels), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, _labels_dict(labels, attributes)))
    return _maybe_shuffle(ds, shuffle_seed).map(render, num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------------ public
def load_celeba(
    split: str,
    attributes: Sequence[str] = EIGHT,
    source: str = "tfds",
    image_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    skip_unreadable: bool = False,
    limit: int | None = None,
    seed: int = 0,
    verify: str = "header",
    download: bool = True,
    shuffle_seed: int | None = None,
    hide_labels: Mapping[str, float] | None = None,
    hide_seed: int = 0,
) -> tf.data.Dataset:
    """CelebA images and labels: an unbatched ``tf.data.Dataset`` of
    ``(uint8 RGB image [image_size, image_size, 3], {attribute: int32 0 or 1})``.

    Args:
        split: "train", "validation" or "test" (the official partition).
        attributes: any of the 40 :data:`ATTRIBUTES`; default the report's :data:`EIGHT`.
        source: "tfds", "folder" (official layout in ``data_dir``) or "synthetic".
        image_size: side of the square images after the centre crop. None (the default)
            keeps the crop's own size, 178x178 for CelebA: the fastest choice, and the one
            to use when the model enlarges (``build_celeba(image_size=224)`` resizes on the
            accelerator). Ask for a smaller size here to shrink on the CPU, with
            antialiasing, and to cache less. The synthetic set renders at 178 for None.
        data_dir: the CelebA folder (``source="folder"``; default ``MTLKIT_CELEBA_DIR``)
            or TFDS' data dir.
        skip_unreadable: leave out listed images that are missing or not readable JPEGs
            (with a warning giving the count; ``ds.skipped`` holds it) instead of raising.
        limit: keep only the first ``limit`` images of the split (file order) -- for quick
            runs; for the synthetic set, the number of images (default
            :data:`SYNTHETIC_SIZES`). A positive int or None (all); anything else, such as
            0, -5 or 2.5, is a ``ValueError``.
        seed: the synthetic set's seed (same seed, same images and labels).
        verify: folder check done up front on every image: "header" (fast: JPEG start and
            end markers) or "decode" (decodes every image once; slow on the full set; also
            refuses a file whose decoding makes libjpeg report corrupt data). A file whose
            compressed data is damaged passes "header": it then trains as partly noise, or
            stops training with TensorFlow's "Invalid JPEG data or crop window", which
            names no file. Run once with "decode" to find such files.
        download: let TFDS download the data when it is not prepared yet.
        shuffle_seed: if given, reshuffle the examples every epoch *before* decoding
            (cheap: file names or encoded records), from this seed. For training on data
            too large to cache; with a small cached set shuffle in ``batched`` instead.
        hide_labels: ``{attribute: share}``: set exactly ``round(share * n)`` of that
            attribute's ``n`` labels in this split to -1 ("unknown"), e.g.
            ``{"Wearing_Necklace": 0.9}`` keeps it on 10 % of the images. Images and other
            attributes are untouched. Meant for the training split: evaluate on full labels.
        hide_seed: which labels are hidden: the same seed, split, ``limit`` and source hide
            the same images (the same as :func:`load_labels` with these arguments).

    Images stay uint8 with values 0..255: :func:`mtlkit.models.architectures.build_celeba`'s
    model resizes, rescales and ImageNet-normalises them itself. Nothing is cached or
    batched here; use :func:`mtlkit.data.batched`.
    """
    split = check_split(split)
    attributes = check_attributes(attributes)
    image_size = check_image_size(image_size)
    limit = _check_limit(limit)
    hidden = check_hidden(hide_labels, attributes)
    source = _check_source(source)
    if source == "folder":
        return _folder_dataset(
            _folder(data_dir), split, attributes, image_size, limit, skip_unreadable, verify,
            shuffle_seed, hidden, hide_seed,
        )  # fmt: skip
    if source == "tfds":
        return _tfds_dataset(
            data_dir, split, attributes, image_size, limit, download, shuffle_seed, hidden,
            hide_seed,
        )  # fmt: skip
    return _synthetic_dataset(
        split, attributes, image_size or FACE_SIDE, limit, seed, shuffle_seed, hidden, hide_seed
    )


def load_labels(
    split: str,
    attributes: Sequence[str] = EIGHT,
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    hide_labels: Mapping[str, float] | None = None,
    hide_seed: int = 0,
) -> pd.DataFrame:
    """The labels of a split without decoding any image (int8: 0, 1, or -1 where hidden),
    in the order of :func:`load_celeba` with the same arguments, before any skipped images.

    Useful for majority-class baselines (:func:`majority_classes`) and label statistics
    (:func:`label_stats`) computed from the training labels.
    """
    split = check_split(split)
    attributes = check_attributes(attributes)
    limit = _check_limit(limit)
    hidden = check_hidden(hide_labels, attributes)
    source = _check_source(source)
    if source == "folder":
        labels = _folder_labels(_folder(data_dir), split, attributes, limit)
    elif source == "synthetic":
        labels = synthetic_labels(split, attributes, limit, seed)
    else:
        raw = _tfds_raw(data_dir, split, limit, download=True)  # images never decoded
        rows = raw.map(lambda e: {a: e["attributes"][a] for a in attributes}).batch(4096)
        parts = [pd.DataFrame(b) for b in rows.as_numpy_iterator()]
        labels = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=attributes)
        labels = labels[attributes].astype(np.int8)
    return with_hidden_labels(labels, hidden, hide_seed, split)


def describe_source(
    source: str, data_dir: str | os.PathLike | None = None, n_train: int | None = None
) -> str:
    """A short phrase naming the data, for titles: 'CelebA folder celeba_mini (3,031 train
    images)', 'synthetic stand-in for CelebA (3,000 train images)', 'CelebA (TFDS celeb_a)'."""
    count = f" ({n_train:,} train images)" if n_train is not None else ""
    if source == "folder":
        return f"CelebA folder {_folder(data_dir).name}{count}"
    if source == "synthetic":
        return f"synthetic stand-in for CelebA{count}"
    return f"CelebA (TFDS celeb_a){count}"
