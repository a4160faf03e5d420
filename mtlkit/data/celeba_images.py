"""CelebA images: decoding the face square, resizing, and checking image files.

The aligned CelebA images are 178x218 (width x height) JPEGs. The 2023 report's
preprocessing keeps their central 178x178 square -- the face, without most of the
background above and below -- optionally shrunk (antialiased) to ``image_size`` pixels.
Images stay uint8 (0..255); resizing up, scaling and normalising happen inside the model
(:func:`mtlkit.models.architectures.build_celeba`). :func:`decode_face` decodes only that square,
at half scale where it can (see ``benchmarks/README.md``); :func:`check_images` finds
missing or broken files up front, with an error that says how to go on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtlkit.data.celeba_labels import ATTR_FILE, IMAGE_FOLDER

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


def check_image_size(image_size: int | None) -> int | None:
    """``image_size`` if it is None or a positive int, else ``ValueError`` saying what to pass."""
    if image_size is not None and (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < 1
    ):
        raise ValueError(
            f"image_size={image_size!r}: pass a positive number of pixels (e.g. 56), or None "
            f"for the crop's own size ({FACE_SIDE}x{FACE_SIDE})."
        )
    return image_size


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
    usable = [
        r
        for r in DCT_RATIOS
        if side % r == top % r == left % r == 0 and 2 * (side // r) >= 3 * image_size
    ]
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


LIBJPEG_WARNINGS = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Invalid SOS parameters",
    "Inconsistent progression sequence",
)
"""How libjpeg's warnings about damaged compressed data begin. TensorFlow's decoder prints
them on the process's standard error and goes on: the image comes out, partly garbage."""


@contextlib.contextmanager
def libjpeg_warnings() -> Iterator[list[str]]:
    """Collect libjpeg's warnings (:data:`LIBJPEG_WARNINGS`) printed while the block runs.

    libjpeg writes them to file descriptor 2 (not to Python's ``sys.stderr``), so that
    descriptor points at a temporary file meanwhile; the list yielded is filled when the
    block ends, and every other line is written back to standard error. Where descriptor 2
    cannot be redirected, the list stays empty.
    """
    found: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield found
        return
    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    try:
        yield found
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        others = []
        for line in sink.read().decode(errors="replace").splitlines():
            (found if line.startswith(LIBJPEG_WARNINGS) else others).append(line)
        sink.close()
        if others:
            os.write(2, ("\n".join(others) + "\n").encode())


def _undecodable(paths: Sequence[str]) -> list[int]:
    """Indices of files TensorFlow cannot decode as JPEG (decoded in parallel)."""
    ok = (
        tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), list(paths)))
        .map(
            lambda i, p: (i, tf.shape(tf.io.decode_jpeg(tf.io.read_file(p)))[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()
        .map(lambda i, _: i)
    )
    good = {int(i) for i in ok.as_numpy_iterator()}
    return [i for i in range(len(paths)) if i not in good]


def _corrupt(paths: Sequence[str]) -> list[int]:
    """Indices of files that TensorFlow cannot decode, or decodes with a libjpeg warning
    about damaged data (garbled scan data decodes "fine" into partly noise).

    One parallel pass over all files; only when it prints warnings are the files searched
    by halves, each half decoded again, to find the ones that warn.
    """
    with libjpeg_warnings() as warned:
        failed = _undecodable(paths)
    if not warned:
        return failed

    def search(indices: list[int]) -> list[int]:
        with libjpeg_warnings() as warned:
            _undecodable([paths[i] for i in indices])
        if not warned or len(indices) == 1:
            return indices if warned else []
        half = len(indices) // 2
        return search(indices[:half]) + search(indices[half:])

    rest = sorted(set(range(len(paths))) - set(failed))
    return sorted(failed + (search(rest) if rest else []))


def check_images(
    folder: Path, names: Sequence[str], verify: str, skip_unreadable: bool
) -> np.ndarray:
    """Boolean mask of usable images; raise for the first bad one unless skipping.

    ``verify="header"`` looks at each file's first and last bytes only (a file cut short,
    or an HTML error page); ``verify="decode"`` decodes every file and also refuses those
    whose decoding makes libjpeg warn of corrupt data (see :func:`libjpeg_warnings`). No
    check can see every damage: JPEG has no checksum, and a garbled stretch that still
    decodes without a warning goes through.
    """
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
        bad = [kept[j] for j in _corrupt([str(folder / names[i]) for i in kept])]
    if bad and not skip_unreadable:
        raise ValueError(
            f"{folder / names[bad[0]]} is not a complete JPEG image, or its compressed data "
            f"is damaged ({len(bad):,} such files). Replace it with the original file, or "
            "pass skip_unreadable=True to leave unreadable images out."
        )
    usable[bad] = False
    if not usable.all():
        warnings.warn(
            f"Skipped {int((~usable).sum()):,} of {len(names):,} images in {folder} "
            f"({len(missing):,} missing, {len(bad):,} unreadable).",
            stacklevel=3,
        )
    return usable


@contextlib.contextmanager
def damaged_images_named() -> Iterator[None]:
    """Turn TensorFlow's image-decoding error, raised while a dataset is read (training,
    evaluation), into a ``ValueError`` that says what it means and what to do.

    The default ``verify="header"`` reads only an image's first and last bytes, so a file
    damaged in between reaches the decoder, whose error names no file.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        text = str(err)
        if "JPEG" not in text and "image file format" not in text:
            raise
        raise ValueError(
            "An image could not be decoded while the data was read: an image file is damaged "
            f"({text.strip().splitlines()[-1][:200]}). The default verify='header' reads only "
            "each file's first and last bytes: load the split once with "
            "load_celeba(..., verify='decode') to find the file, and skip_unreadable=True to "
            "leave it out."
        ) from None
