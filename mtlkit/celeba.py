"""CelebA: annotation files, label statistics and image pipelines.

Three sources give the same thing, an unbatched ``tf.data.Dataset`` of
``(image, {attribute: 0 or 1})`` pairs (see :func:`load_celeba`):

* ``"tfds"`` -- TensorFlow Datasets' ``celeb_a`` (downloads 1.4 GB the first time; the
  hosted download often fails);
* ``"folder"`` -- a local folder in the official layout, the route when the download fails::

      <data_dir>/img_align_celeba/000001.jpg ...
      <data_dir>/list_attr_celeba.txt
      <data_dir>/list_eval_partition.txt

* ``"synthetic"`` -- an embedded stand-in whose images carry one learnable visual cue per
  attribute, with labels drawn at CelebA's real positive rates. It is only used when asked for.

Preprocessing (the 2023 report's): the aligned 178x218 (width x height) image is centre
cropped to its central 178x178 square -- the face, without most of the background above
and below -- optionally shrunk (antialiased) to ``image_size`` x ``image_size``. Images stay uint8
(0..255). Everything else happens inside the model
(:func:`mtlkit.architectures.build_celeba`): resizing to the network's input size, scaling
to [0, 1] and the ImageNet normalisation. So the CPU only decodes and crops (the libjpeg
decode is the cost; see ``benchmarks/README.md``), the resize runs on the accelerator, the
same images serve a pretrained and a randomly initialised network, a cache holds a quarter
of what float32 would take, and plots show the images as they are.
Caching, shuffling, batching and prefetching are left to :func:`mtlkit.data.batched`. For
data too large to cache (the full train split is 15 GB even as uint8 178x178), pass
``shuffle_seed`` to :func:`load_celeba`: it shuffles the cheap list of files (or encoded
TFDS records) every epoch *before* decoding, so no big shuffle buffer of images is needed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips "
    "Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin "
    "Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open "
    "Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
"""The 40 official attribute names, in the column order of ``list_attr_celeba.txt``."""

EIGHT = (
    "Male",
    "Smiling",
    "Young",
    "Eyeglasses",
    "Wearing_Hat",
    "Wearing_Necklace",
    "Wearing_Earrings",
    "Wearing_Lipstick",
)
"""The eight attributes of the 2023 report."""

SPLITS = ("train", "validation", "test")
"""The official partition; ``list_eval_partition.txt`` codes them 0, 1, 2."""

SOURCES = ("tfds", "folder", "synthetic")

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"

OFFICIAL_SPLIT_SIZES = {"train": 162_770, "validation": 19_867, "test": 19_962}

TRAIN_POSITIVE_RATES = {
    "5_o_Clock_Shadow": 0.1117, "Arched_Eyebrows": 0.2659, "Attractive": 0.5136,
    "Bags_Under_Eyes": 0.2045, "Bald": 0.0228, "Bangs": 0.1517, "Big_Lips": 0.2409,
    "Big_Nose": 0.2356, "Black_Hair": 0.2390, "Blond_Hair": 0.1491, "Blurry": 0.0514,
    "Brown_Hair": 0.2039, "Bushy_Eyebrows": 0.1437, "Chubby": 0.0577, "Double_Chin": 0.0465,
    "Eyeglasses": 0.0646, "Goatee": 0.0635, "Gray_Hair": 0.0424, "Heavy_Makeup": 0.3843,
    "High_Cheekbones": 0.4524, "Male": 0.4194, "Mouth_Slightly_Open": 0.4822,
    "Mustache": 0.0408, "Narrow_Eyes": 0.1159, "No_Beard": 0.8342, "Oval_Face": 0.2832,
    "Pale_Skin": 0.0430, "Pointy_Nose": 0.2755, "Receding_Hairline": 0.0801,
    "Rosy_Cheeks": 0.0647, "Sideburns": 0.0563, "Smiling": 0.4797, "Straight_Hair": 0.2086,
    "Wavy_Hair": 0.3194, "Wearing_Earrings": 0.1865, "Wearing_Hat": 0.0494,
    "Wearing_Lipstick": 0.4696, "Wearing_Necklace": 0.1214, "Wearing_Necktie": 0.0730,
    "Young": 0.7789,
}
"""Positive rate of each attribute on the official train split (162,770 images), computed
once from the official ``list_attr_celeba.txt`` and embedded here for the synthetic set."""

SYNTHETIC_SIZES = {"train": 3_000, "validation": 650, "test": 650}
"""Default number of synthetic images per split."""



# ------------------------------------------------------------------ annotation files
def _read_lines(path: Path) -> list[str]:
    """The file's lines without line ends (CRLF or LF), trailing blank lines dropped."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. A CelebA folder needs {ATTR_FILE}, {PARTITION_FILE} "
            f"and {IMAGE_FOLDER}/ side by side; point data_dir at that folder."
        )
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _first_bad_row(lines: Sequence[str], first: int, n_fields: int, allowed: set[int]) -> str:
    """Describe the first row (1-based line number) that does not parse, or ''."""
    for number, line in enumerate(lines[first:], start=first + 1):
        fields = line.split()
        if len(fields) != n_fields:
            return f"line {number} has {len(fields)} fields, expected {n_fields}: {line[:80]!r}"
        bad = [v for v in fields[1:] if v.lstrip("-").isdigit() is False or int(v) not in allowed]
        if bad:
            return (
                f"line {number} ({fields[0]}) has the value {bad[0]!r}; only "
                f"{' / '.join(map(str, sorted(allowed)))} are allowed"
            )
    return ""


def _parse_table(path: Path, lines: list[str], first: int, n_fields: int, allowed: set[int]):
    """Parse ``lines[first:]`` as whitespace-separated ``image value value ...`` rows.

    The fast path is pandas' C parser; when it (or the value check) fails, a slow pass
    over the lines finds and names the first bad line.
    """
    body = "\n".join(lines[first:])
    fix = f"Repair or re-download {path.name} (the official file has no such rows)."
    try:
        table = pd.read_csv(
            pd.io.common.StringIO(body), sep=r"\s+", header=None, index_col=0,
            dtype={0: str}, engine="c",
        )
    except (pd.errors.ParserError, ValueError):
        table = None
    ok = (
        table is not None
        and table.shape[1] == n_fields - 1
        and not table.isna().any().any()
        and all(pd.api.types.is_integer_dtype(t) for t in table.dtypes)
        and bool(table.isin(list(allowed)).all(axis=None))
    )
    if not ok:
        problem = _first_bad_row(lines, first, n_fields, allowed) or "it could not be parsed"
        raise ValueError(f"{path}: {problem}. {fix}")
    table.index.name = "image"
    return table


def read_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """Parse ``list_attr_celeba.txt`` into a DataFrame of 0/1 labels (int8).

    Rows are indexed by image file name, columns are the 40 attributes in file order.
    Copes with CRLF or LF line ends and one or two spaces between columns. Raises
    ``ValueError`` naming the file, the line and the fix for a truncated file (fewer rows
    than the count on the first line), a malformed row or a value other than 1 / -1.
    """
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(
            f"{path}: line 1 should be the image count and line 2 the attribute names. "
            f"Is this really {ATTR_FILE}? Re-download it."
        )
    declared, names = int(lines[0].strip()), lines[1].split()
    if len(lines) - 2 != declared:
        raise ValueError(
            f"{path}: line 1 announces {declared:,} images but the file has "
            f"{len(lines) - 2:,} rows (last line {len(lines)}); the file is truncated or "
            "was edited. Copy or download it again (MD5 of the official file: "
            "75e246fa4810816ffd6ee81facbd244c)."
        )
    table = _parse_table(path, lines, 2, len(names) + 1, {1, -1})
    table.columns = names
    return (table == 1).astype(np.int8)


def read_partition(path: str | os.PathLike) -> pd.Series:
    """Parse ``list_eval_partition.txt`` into a Series image -> "train" / "validation" / "test"."""
    path = Path(path)
    lines = _read_lines(path)
    table = _parse_table(path, lines, 0, 2, {0, 1, 2})
    codes = table.iloc[:, 0].to_numpy()
    return pd.Series(np.asarray(SPLITS)[codes], index=table.index, name="split")


def read_annotations(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Attributes (0/1) plus a ``split`` column, from a folder's two annotation files.

    Raises ``ValueError`` when the partition file and the attribute file list different
    images (naming an example image and the counts).
    """
    data_dir = Path(data_dir)
    attributes = read_attributes(data_dir / ATTR_FILE)
    partition = read_partition(data_dir / PARTITION_FILE)
    if not attributes.index.equals(partition.index):
        only_attr = attributes.index.difference(partition.index)
        only_part = partition.index.difference(attributes.index)
        example = (
            f"{only_attr[0]} is in {ATTR_FILE} but not in {PARTITION_FILE}"
            if len(only_attr)
            else f"{only_part[0]} is in {PARTITION_FILE} but not in {ATTR_FILE}"
            if len(only_part)
            else "the images are listed in a different order"
        )
        raise ValueError(
            f"{data_dir}: {PARTITION_FILE} ({len(partition):,} images) and {ATTR_FILE} "
            f"({len(attributes):,} images) disagree: {example} "
            f"({len(only_attr):,} only in the attribute file, {len(only_part):,} only in "
            "the partition file). Both files must come from the same copy of CelebA."
        )
    return attributes.assign(split=partition)


# ------------------------------------------------------------------ label statistics
def check_attributes(attributes: Sequence[str] | str) -> list[str]:
    """The attributes as a list; ``ValueError`` for unknown names, duplicates or none."""
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"Unknown CelebA attribute(s) {unknown}. Use names from the header of "
            f"{ATTR_FILE} (mtlkit.celeba.ATTRIBUTES), e.g. {', '.join(EIGHT[:3])}."
        )
    if not attributes or len(set(attributes)) != len(attributes):
        raise ValueError(f"attributes must be non-empty and without repeats, got {attributes}.")
    return attributes


def check_split(split: str) -> str:
    """The split name, or ``ValueError`` when it is not one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    return split


def label_stats(
    annotations: pd.DataFrame | Mapping[str, pd.DataFrame] | str | os.PathLike,
    attributes: Sequence[str] = EIGHT,
) -> pd.DataFrame:
    """Label statistics per attribute and split, from the annotation files alone.

    ``annotations`` is a folder (read with :func:`read_annotations`), its result, or a
    mapping ``{split: labels}`` of :func:`load_labels` results (any source). One row
    per (split, attribute) with: ``examples`` (images in the split), ``labelled`` (images
    carrying a label for the task -- every CelebA image is labelled for every attribute,
    but DST's ground-truth-sample metric counts them per task), ``positives``,
    ``positive_rate``, ``majority_class`` (0 or 1) and ``majority_accuracy`` (the accuracy
    of always predicting the majority class of that split).
    """
    if isinstance(annotations, Mapping):
        annotations = pd.concat([v.assign(split=k) for k, v in annotations.items()])
    elif not isinstance(annotations, pd.DataFrame):
        annotations = read_annotations(annotations)
    attributes = check_attributes(attributes)
    present = [s for s in SPLITS if (annotations["split"] == s).any()]
    grouped = annotations.groupby("split")[attributes]
    long = pd.DataFrame({
        "examples": grouped.size().reindex(present).repeat(len(attributes)).to_numpy(),
        "labelled": grouped.count().reindex(present).stack().to_numpy(),
        "positives": grouped.sum().reindex(present).stack().to_numpy(),
    }, index=pd.MultiIndex.from_product([present, attributes], names=["split", "attribute"]))
    long["positive_rate"] = long["positives"] / long["labelled"]
    long["majority_class"] = (long["positive_rate"] > 0.5).astype(int)
    long["majority_accuracy"] = np.maximum(long["positive_rate"], 1 - long["positive_rate"])
    return long


def majority_classes(labels: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, int]:
    """The majority class (0 or 1) of each attribute in ``labels`` (e.g. the train labels)."""
    return {a: int(np.mean(v) > 0.5) for a, v in dict(labels).items()}


# ---------------------------------------------------------------------- images
ALIGNED_SHAPE = (218, 178)  # height, width of every aligned CelebA image
FACE_SIDE = 178  # side of their centre square
DCT_RATIOS = (1, 2, 4, 8)  # the scales libjpeg can decode at directly (1/1, 1/2, 1/4, 1/8)


def _resize(square: tf.Tensor, image_size: int, shrink: bool) -> tf.Tensor:
    method = "area" if shrink else "bilinear"
    resized = tf.image.resize(square, (image_size, image_size), method=method)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def resize_square(square: tf.Tensor, image_size: int | None) -> tf.Tensor:
    """Square uint8 image -> uint8 ``image_size`` x ``image_size`` (None: unchanged).

    Shrinking uses ``method="area"`` (each output pixel averages the input pixels it
    covers, so fine detail does not alias); enlarging uses plain bilinear interpolation
    (antialiasing has nothing to do when enlarging, and the plain kernel is 2.5 times
    faster). The result is rounded back to uint8: a quarter of float32's memory in a cache.
    """
    if image_size is None:
        return square
    return tf.cond(
        tf.shape(square)[0] > image_size,
        lambda: _resize(square, image_size, shrink=True),
        lambda: _resize(square, image_size, shrink=False),
    )


def loader_size(image_size: int) -> int | None:
    """The ``load_celeba`` size for a model that takes ``image_size`` pixels: shrink on the
    CPU (antialiased, and a smaller cache), but leave enlarging to the model's ``Resizing``
    layer, on the accelerator (None: the native 178x178 crop)."""
    return image_size if image_size < FACE_SIDE else None


def dct_ratio(image_size: int, shape: tuple[int, int] = ALIGNED_SHAPE) -> int:
    """The coarsest libjpeg scale 1/r to decode a ``shape`` image's centre square at, when
    it is shrunk to ``image_size`` afterwards.

    r must leave at least 1.5 times ``image_size`` to average down from (an area resize by
    less blurs like a sub-pixel shift), and the square must fall on whole pixels of the
    scaled image (else the picture shifts). For CelebA's 178x178 square, 20 px from the top:
    r = 2 up to 59 px, else 1 (178 is not a multiple of 4).
    """
    height, width = shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    usable = [r for r in DCT_RATIOS
              if side % r == top % r == left % r == 0 and 2 * (side // r) >= 3 * image_size]
    return max(usable, default=1)


def crop_and_resize(image: tf.Tensor, image_size: int | None) -> tf.Tensor:
    """Decoded uint8 HxWx3 image -> its centred square, resized (see :func:`resize_square`).

    The largest centred square of CelebA's 178x218 aligned images is 178x178: the face,
    without the strips of background above and below.
    """
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    return resize_square(image[top : top + side, left : left + side], image_size)


def decode_face(raw: tf.Tensor, image_size: int | None) -> tf.Tensor:
    """Encoded JPEG bytes -> uint8 centre square at ``image_size`` (None: native side).

    The same picture as decoding the whole file and calling :func:`crop_and_resize`, for
    less work: ``tf.io.decode_and_crop_jpeg`` decodes only the square, and for small sizes
    libjpeg decodes it directly at half scale (an average in the DCT domain, see
    :func:`dct_ratio`) before the final area resize. The scale and the filter are chosen
    once, in Python, for CelebA's 178x218 aligned images (per-image ``tf.cond`` costs a
    quarter of the decode time): an image of another size still comes out at
    ``image_size``, only through a less fitting filter. See ``benchmarks/README.md``.
    """
    ratio = 1 if image_size is None else dct_ratio(image_size)
    shape = tf.io.extract_jpeg_shape(raw)
    height, width = (shape[0] + ratio - 1) // ratio, (shape[1] + ratio - 1) // ratio
    side = tf.minimum(height, width)
    window = tf.stack([(height - side) // 2, (width - side) // 2, side, side])
    square = tf.io.decode_and_crop_jpeg(raw, window, channels=3, ratio=ratio)
    if image_size is None:
        return square
    return _resize(square, image_size, shrink=image_size < FACE_SIDE // ratio)


def _labels_dict(labels: pd.DataFrame, attributes: Sequence[str]) -> dict[str, np.ndarray]:
    return {a: labels[a].to_numpy(np.int32) for a in attributes}


def _jpeg_looks_complete(path: Path) -> bool:
    """Cheap structural check: JPEG start marker at the head, end marker near the tail."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(max(0, path.stat().st_size - 64))
            tail = f.read()
    except OSError:
        return False
    return head == b"\xff\xd8" and b"\xff\xd9" in tail


def _undecodable(paths: Sequence[str]) -> list[int]:
    """Indices of files TensorFlow cannot decode as JPEG (decoded in parallel)."""
    ok = (
        tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), list(paths)))
        .map(lambda i, p: (i, tf.shape(tf.io.decode_jpeg(tf.io.read_file(p)))[0]),
             num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
        .map(lambda i, _: i)
    )
    good = {int(i) for i in ok.as_numpy_iterator()}
    return [i for i in range(len(paths)) if i not in good]


def _check_images(
    folder: Path, names: Sequence[str], verify: str, skip_unreadable: bool
) -> np.ndarray:
    """Boolean mask of usable images; raise for the first bad one unless skipping."""
    if verify not in ("header", "decode"):
        raise ValueError(f"verify={verify!r}: use 'header' (fast) or 'decode' (thorough).")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: a CelebA folder keeps its JPEGs in {IMAGE_FOLDER}/ "
            "next to the annotation files (unzip img_align_celeba.zip there)."
        )
    present = set(os.listdir(folder))
    usable = np.array([n in present for n in names])
    missing = [n for n, ok in zip(names, usable) if not ok]
    if missing and not skip_unreadable:
        raise FileNotFoundError(
            f"{folder / missing[0]} is listed in {ATTR_FILE} but missing ({len(missing):,} "
            "listed images are missing in all). Copy the complete img_align_celeba folder, "
            "or pass skip_unreadable=True to leave missing images out."
        )
    if verify == "header":
        bad = [i for i in np.flatnonzero(usable) if not _jpeg_looks_complete(folder / names[i])]
    else:
        kept = np.flatnonzero(usable)
        bad = [kept[j] for j in _undecodable([str(folder / names[i]) for i in kept])]
    if bad and not skip_unreadable:
        raise ValueError(
            f"{folder / names[bad[0]]} is not a complete JPEG image ({len(bad):,} such "
            "files). Replace it with the original file, or pass skip_unreadable=True to "
            "leave unreadable images out."
        )
    usable[bad] = False
    if not usable.all():
        warnings.warn(
            f"Skipped {int((~usable).sum()):,} of {len(names):,} images in {folder} "
            f"({len(missing):,} missing, {len(bad):,} unreadable).",
            stacklevel=3,
        )
    return usable


def _maybe_shuffle(ds: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Reshuffle a dataset of small, undecoded elements every epoch (all of it at once)."""
    if seed is None:
        return ds
    size = int(ds.cardinality())
    return ds.shuffle(size if size > 0 else 20_000, seed=seed, reshuffle_each_iteration=True)


def _folder_dataset(
    data_dir: Path, split: str, attributes: list[str], image_size: int | None,
    limit: int | None, skip_unreadable: bool, verify: str, shuffle_seed: int | None,
) -> tf.data.Dataset:
    labels = read_annotations(data_dir)
    labels = labels[labels["split"] == split].iloc[:limit]
    folder = data_dir / IMAGE_FOLDER
    usable = _check_images(folder, list(labels.index), verify, skip_unreadable)
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
    try:
        return tfds.load("celeb_a", split=tfds_split, data_dir=data_dir, download=download,
                         decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as err:  # download / preparation errors come in many types
        raise RuntimeError(
            f"TensorFlow Datasets could not provide celeb_a ({type(err).__name__}: {err}). "
            "Its Google Drive download often fails. Download CelebA yourself "
            f"(img_align_celeba.zip, {ATTR_FILE}, {PARTITION_FILE}), unzip it into one "
            "folder and use load_celeba(..., source='folder', data_dir=that_folder) "
            "(notebook 03: set CELEBA_DIR or MTLKIT_CELEBA_DIR), or ask explicitly for "
            "the embedded stand-in with source='synthetic'."
        ) from err


def _tfds_dataset(
    data_dir: str | os.PathLike | None, split: str, attributes: list[str], image_size: int | None,
    limit: int | None, download: bool, shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    def convert(example):
        image = decode_face(example["image"], image_size)  # TFDS keeps celeb_a as JPEG
        return image, {a: tf.cast(example["attributes"][a], tf.int32) for a in attributes}

    ds = _maybe_shuffle(_tfds_raw(data_dir, split, limit, download), shuffle_seed)
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------- synthetic set
def synthetic_labels(
    split: str, attributes: Sequence[str] = EIGHT, n: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """0/1 labels for the synthetic set: each attribute independently, with exactly
    ``round(rate * n)`` positives at its real CelebA train-split rate, in shuffled order."""
    attributes = check_attributes(attributes)
    n = SYNTHETIC_SIZES[check_split(split)] if n is None else n
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    columns = {}
    for a in attributes:
        column = np.zeros(n, np.int8)
        column[: round(TRAIN_POSITIVE_RATES[a] * n)] = 1
        columns[a] = rng.permutation(column)
    index = pd.Index([f"synthetic_{split}_{i:06d}.png" for i in range(n)], name="image")
    return pd.DataFrame(columns, index=index)


def _cue_layers(attributes: Sequence[str], image_size: int) -> np.ndarray:
    """One coloured square per attribute, at the attribute's own cell of a grid.

    Returns float32 [A, H, W, 3]; a positive label adds its layer to the image. Cells are
    fixed per name (its index among the 40), so a cue means the same thing whatever subset
    of attributes is requested.
    """
    grid = int(np.ceil(np.sqrt(len(attributes))))
    cell = image_size / grid
    half = max(1, int(cell * 0.28))
    layers = np.zeros((len(attributes), image_size, image_size, 3), np.float32)
    for k, a in enumerate(attributes):
        rng = np.random.default_rng(ATTRIBUTES.index(a))
        colour = rng.uniform(-0.5, 0.5, size=3).astype(np.float32)
        colour += np.sign(colour) * 0.15
        cy, cx = int((k // grid + 0.5) * cell), int((k % grid + 0.5) * cell)
        layers[k, cy - half : cy + half, cx - half : cx + half] = colour
    return layers


def _synthetic_dataset(
    split: str, attributes: list[str], image_size: int, n: int | None, seed: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    labels = synthetic_labels(split, attributes, n, seed)
    cues = tf.constant(_cue_layers(attributes, image_size))
    yy, xx = np.mgrid[:image_size, :image_size] / image_size - 0.5
    face = np.exp(-((yy / 0.42) ** 2 + (xx / 0.32) ** 2) * 3)[..., None].astype(np.float32)
    face = tf.constant(face * np.array([0.45, 0.3, 0.2], np.float32) + 0.25)
    jitter = max(1, image_size // 32)
    split_id = SPLITS.index(split)

    def render(index, y):
        keys = tf.stack([tf.constant(seed, tf.int64), split_id * 10**7 + index])
        k1, k2, k3 = tf.unstack(tf.random.experimental.stateless_split(keys, 3))
        on = tf.cast(tf.stack([y[a] for a in attributes]), tf.float32)
        strength = tf.random.stateless_uniform([len(attributes)], k1, 0.2, 0.8) * on
        shift = tf.random.stateless_uniform([2], k2, -jitter, jitter + 1, tf.int32)
        marks = tf.roll(tf.tensordot(strength, cues, axes=1), shift, axis=[0, 1])
        noise = tf.random.stateless_normal([image_size, image_size, 3], k3, stddev=0.15)
        image = tf.clip_by_value(face + marks + noise, 0.0, 1.0)
        return tf.saturate_cast(tf.round(image * 255.0), tf.uint8), y  # like the real loaders

    ds = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(labels), dtype=np.int64), _labels_dict(labels, attributes))
    )
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
        data_dir: the CelebA folder (``source="folder"``, required) or TFDS' data dir.
        skip_unreadable: leave out listed images that are missing or not readable JPEGs
            (with a warning giving the count; ``ds.skipped`` holds it) instead of raising.
        limit: keep only the first ``limit`` images of the split (file order) -- for quick
            runs; for the synthetic set, the number of images (default
            :data:`SYNTHETIC_SIZES`).
        seed: the synthetic set's seed (same seed, same images and labels).
        verify: folder check done up front on every image: "header" (fast: JPEG start and
            end markers) or "decode" (decodes every image once; slow on the full set).
        download: let TFDS download the data when it is not prepared yet.
        shuffle_seed: if given, reshuffle the examples every epoch *before* decoding
            (cheap: file names or encoded records), from this seed. For training on data
            too large to cache; with a small cached set shuffle in ``batched`` instead.

    Images stay uint8 with values 0..255: :func:`mtlkit.architectures.build_celeba`'s
    model resizes, rescales and ImageNet-normalises them itself. Nothing is cached or
    batched here; use :func:`mtlkit.data.batched`.
    """
    split = check_split(split)
    attributes = check_attributes(attributes)
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(
            f"image_size={image_size!r}: pass a positive number of pixels (e.g. 56), or None "
            f"for the crop's own size ({FACE_SIDE}x{FACE_SIDE})."
        )
    if source == "folder":
        if data_dir is None:
            raise ValueError(
                "source='folder' needs data_dir: the folder holding img_align_celeba/, "
                f"{ATTR_FILE} and {PARTITION_FILE}."
            )
        return _folder_dataset(Path(data_dir).expanduser(), split, attributes, image_size,
                               limit, skip_unreadable, verify, shuffle_seed)
    if source == "tfds":
        return _tfds_dataset(data_dir, split, attributes, image_size, limit, download,
                             shuffle_seed)
    if source == "synthetic":
        return _synthetic_dataset(split, attributes, image_size or FACE_SIDE, limit, seed,
                                  shuffle_seed)
    raise ValueError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")


def load_labels(
    split: str,
    attributes: Sequence[str] = EIGHT,
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The 0/1 labels of a split without decoding any image (same order as
    :func:`load_celeba` with the same arguments, before any skipped images).

    Useful for majority-class baselines computed from the training labels.
    """
    split = check_split(split)
    attributes = check_attributes(attributes)
    if source == "folder":
        labels = read_annotations(data_dir)
        return labels.loc[labels["split"] == split, attributes].iloc[:limit]
    if source == "synthetic":
        return synthetic_labels(split, attributes, limit, seed)
    if source == "tfds":
        raw = _tfds_raw(data_dir, split, limit, download=True)  # images never decoded
        rows = raw.map(lambda e: {a: e["attributes"][a] for a in attributes}).batch(4096)
        parts = [pd.DataFrame(b) for b in rows.as_numpy_iterator()]
        return pd.concat(parts, ignore_index=True).astype(np.int8)
    raise ValueError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")


def describe_source(
    source: str, data_dir: str | os.PathLike | None = None, n_train: int | None = None
) -> str:
    """A short phrase naming the data, for titles: 'CelebA folder celeba_mini (3,031 train
    images)', 'synthetic stand-in (3,000 train images)', 'CelebA (TFDS celeb_a)'."""
    count = f" ({n_train:,} train images)" if n_train is not None else ""
    if source == "folder":
        return f"CelebA folder {Path(data_dir).name}{count}"
    if source == "synthetic":
        return f"synthetic stand-in for CelebA{count}"
    return f"CelebA (TFDS celeb_a){count}"
