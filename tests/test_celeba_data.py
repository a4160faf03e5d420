"""CelebA annotation parsing, label statistics, hidden labels, image decoding and the three
sources of images (folder and synthetic here; tfds in test_tfds_mock.py)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtlkit.data import celeba, celeba_images, celeba_labels, celeba_synthetic
from mtlkit.data.celeba_labels import EIGHT, UNKNOWN


def _shared_data() -> Path:
    env = os.environ.get("MTLKIT_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


SHARED = _shared_data()
FULL = SHARED / "celeba"
MINI = SHARED / "celeba_mini"
needs_full = pytest.mark.skipif(
    not (FULL / celeba_labels.ATTR_FILE).is_file(),
    reason=f"the complete CelebA annotation files are not at {FULL} (set MTLKIT_SHARED_DATA)",
)
needs_mini = pytest.mark.skipif(
    not (MINI / celeba_labels.IMAGE_FOLDER).is_dir(),
    reason=f"the celeba_mini folder is not at {MINI} (set MTLKIT_SHARED_DATA)",
)

# Positive rates on the official test split, from ../shared/data/README.md.
README_TEST_RATES = {
    "Male": 0.3865,
    "Smiling": 0.5003,
    "Young": 0.7571,
    "Eyeglasses": 0.0646,
    "Wearing_Hat": 0.0420,
    "Wearing_Necklace": 0.1379,
    "Wearing_Earrings": 0.2066,
    "Wearing_Lipstick": 0.5219,
}


# ------------------------------------------------------------ small files in tmp_path
def write_folder(
    root: Path,
    rows: dict[str, list[int]],
    splits: dict[str, int],
    newline: str = "\r\n",
    sep: str = " ",
    images: bool = True,
    count: int | None = None,
) -> Path:
    """A tiny CelebA folder in the official layout (40 columns, real attribute names)."""
    names = " ".join(celeba_labels.ATTRIBUTES) + " "
    lines = [str(len(rows) if count is None else count), names]
    for image, values in rows.items():
        lines.append(image + sep + sep.join(f"{v:2d}" if sep == " " else str(v) for v in values))
    (root / celeba_labels.ATTR_FILE).write_text(newline.join(lines) + newline)
    (root / celeba_labels.PARTITION_FILE).write_text(
        newline.join(f"{k} {v}" for k, v in splits.items()) + newline
    )
    if images:
        folder = root / celeba_labels.IMAGE_FOLDER
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(rows):
            pixels = np.full((218, 178, 3), 40 * i, np.uint8)
            (folder / image).write_bytes(tf.io.encode_jpeg(pixels).numpy())
    return root


def row(seed: int) -> list[int]:
    return list(np.random.default_rng(seed).choice([-1, 1], size=40))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 5)}
    return write_folder(
        tmp_path, rows, {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 1, "000004.jpg": 2}
    )


# --------------------------------------------------------------------- parser
@needs_full
def test_parser_on_the_complete_official_files():
    start = time.perf_counter()
    table = celeba_labels.read_annotations(FULL)
    elapsed = time.perf_counter() - start
    assert table.shape == (202_599, 41)
    assert list(table.columns[:-1]) == celeba_labels.ATTRIBUTES
    assert table.index[0] == "000001.jpg" and table.index[-1] == "202599.jpg"
    assert table["split"].value_counts().to_dict() == celeba_labels.OFFICIAL_SPLIT_SIZES
    assert set(np.unique(table[celeba_labels.ATTRIBUTES].to_numpy())) == {0, 1}
    assert elapsed < 5, f"parsing took {elapsed:.1f} s"

    stats = celeba_labels.label_stats(table, EIGHT).loc["test"]
    assert stats["positive_rate"].round(4).to_dict() == README_TEST_RATES
    assert (stats["labelled"] == 19_962).all()
    assert round(stats["majority_accuracy"].mean(), 4) == 0.7427
    all40 = celeba_labels.label_stats(table, celeba_labels.ATTRIBUTES).loc["test"]
    assert round(all40["majority_accuracy"].mean(), 4) == 0.8004
    train = celeba_labels.label_stats(table, celeba_labels.ATTRIBUTES).loc["train", "positive_rate"]
    assert train.round(4).to_dict() == celeba_labels.TRAIN_POSITIVE_RATES  # embedded constants


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
@pytest.mark.parametrize("sep", [" ", "  "])
def test_parser_line_ends_and_spacing(tmp_path, newline, sep):
    rows = {"000001.jpg": row(1), "000002.jpg": row(2), "000003.jpg": row(3)}
    write_folder(
        tmp_path,
        rows,
        {"000001.jpg": 0, "000002.jpg": 1, "000003.jpg": 2},
        newline=newline,
        sep=sep,
        images=False,
    )
    table = celeba_labels.read_annotations(tmp_path)
    assert list(table.index) == list(rows)
    for image, values in rows.items():
        assert table.loc[image, celeba_labels.ATTRIBUTES].tolist() == [int(v == 1) for v in values]
    assert table["split"].tolist() == ["train", "validation", "test"]


def test_label_stats_hand_computed(tmp_path):
    male = celeba_labels.ATTRIBUTES.index("Male")
    rows = {f"{i:06d}.jpg": [-1] * 40 for i in range(1, 6)}
    for image in ("000001.jpg", "000002.jpg", "000005.jpg"):
        rows[image][male] = 1
    write_folder(tmp_path, rows, {k: 0 if i < 4 else 2 for i, k in enumerate(rows)}, images=False)
    stats = celeba_labels.label_stats(tmp_path, ["Male", "Smiling"])
    assert stats.loc[("train", "Male"), "positive_rate"] == 0.5
    assert stats.loc[("train", "Male"), "labelled"] == 4
    assert stats.loc[("test", "Male"), "majority_class"] == 1
    assert stats.loc[("train", "Smiling"), "majority_accuracy"] == 1.0
    assert list(stats.index.get_level_values("split").unique()) == ["train", "test"]
    labels = celeba_labels.read_annotations(tmp_path)
    by_split = {s: labels[labels["split"] == s].drop(columns="split") for s in ("train", "test")}
    pd.testing.assert_frame_equal(celeba_labels.label_stats(by_split, ["Male", "Smiling"]), stats)


# ------------------------------------------------------------------ bad input
def test_truncated_attribute_file(tmp_path):
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 4)}
    write_folder(tmp_path, rows, {k: 0 for k in rows}, count=5, images=False)
    with pytest.raises(
        ValueError, match=r"list_attr_celeba.txt.*announces 5 images.*3 rows.*truncated"
    ):
        celeba_labels.read_attributes(tmp_path / celeba_labels.ATTR_FILE)


def test_malformed_row_names_file_and_line(tmp_path):
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 4)}
    rows["000002.jpg"] = rows["000002.jpg"][:-1]  # one field short
    write_folder(tmp_path, rows, {k: 0 for k in rows}, images=False)
    with pytest.raises(
        ValueError, match=r"list_attr_celeba.txt: line 4 has 40 fields, expected 41.*Repair"
    ):
        celeba_labels.read_attributes(tmp_path / celeba_labels.ATTR_FILE)


def test_value_other_than_plus_minus_one(tmp_path):
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 4)}
    rows["000003.jpg"][7] = 0
    write_folder(tmp_path, rows, {k: 0 for k in rows}, images=False)
    with pytest.raises(ValueError, match=r"line 5 \(000003.jpg\) has the value '0'"):
        celeba_labels.read_attributes(tmp_path / celeba_labels.ATTR_FILE)


def _with_header(root: Path, names: list[str]) -> Path:
    """A valid three-row attribute file whose line 2 is ``names``."""
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 4)}
    write_folder(root, rows, {k: 0 for k in rows}, images=False)
    path = root / celeba_labels.ATTR_FILE
    lines = path.read_text().splitlines()
    lines[1] = " ".join(names) + " "
    path.write_text("\r\n".join(lines))
    return path


def _swapped(a: str, b: str) -> list[str]:
    names = list(celeba_labels.ATTRIBUTES)
    i, j = names.index(a), names.index(b)
    names[i], names[j] = names[j], names[i]
    return names


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (
            _swapped("Male", "Smiling"),
            r"another order: column 21 is 'Smiling' where the official file has 'Male'; "
            r"column 32 is 'Male' where the official file has 'Smiling'",
        ),
        (
            [n if n != "Male" else "Mael" for n in celeba_labels.ATTRIBUTES],
            r"unknown name 'Mael' \(a typo for 'Male'\?\); missing \['Male'\]",
        ),
        (
            list(reversed(celeba_labels.ATTRIBUTES)),
            r"another order: column 1 is 'Young'.*\(and 36 more columns\)",
        ),
    ],
    ids=["swapped", "typo", "reversed"],
)
def test_header_must_be_the_official_names_in_order(tmp_path, names, match):
    """Swapped names used to serve one attribute's labels under the other's name."""
    path = _with_header(tmp_path, names)
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt: line 2 should name") as err:
        celeba_labels.read_attributes(path)
    assert re.search(match, str(err.value)), str(err.value)
    assert "re-download" in str(err.value)
    with pytest.raises(ValueError, match="official order"):
        celeba.load_labels("train", source="folder", data_dir=tmp_path)


def test_header_with_a_missing_or_repeated_name(tmp_path):
    names = [n for n in celeba_labels.ATTRIBUTES if n != "Bald"]
    with pytest.raises(ValueError, match=r"missing \['Bald'\]"):
        celeba_labels.read_attributes(_with_header(tmp_path, names))
    names = [n if n != "Bald" else "Bangs" for n in celeba_labels.ATTRIBUTES]
    with pytest.raises(ValueError, match=r"missing \['Bald'\]; repeated \['Bangs'\]"):
        celeba_labels.read_attributes(_with_header(tmp_path, names))


def test_partition_disagreeing_with_attributes(tmp_path):
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 4)}
    write_folder(tmp_path, rows, {"000001.jpg": 0, "000002.jpg": 0, "000009.jpg": 2}, images=False)
    with pytest.raises(
        ValueError, match=r"disagree: 000003.jpg is in list_attr_celeba.txt but not"
    ):
        celeba_labels.read_annotations(tmp_path)


def test_bad_partition_code(tmp_path):
    rows = {f"{i:06d}.jpg": row(i) for i in range(1, 3)}
    write_folder(tmp_path, rows, {"000001.jpg": 0, "000002.jpg": 3}, images=False)
    with pytest.raises(ValueError, match=r"list_eval_partition.txt: line 2 .*'3'"):
        celeba_labels.read_annotations(tmp_path)


def test_unknown_attribute_and_split(tiny, monkeypatch):
    monkeypatch.delenv("MTLKIT_CELEBA_DIR", raising=False)  # conftest may set it
    with pytest.raises(ValueError, match="Unknown CelebA attribute.*Wearing_Glasses"):
        celeba.load_celeba("train", ["Male", "Wearing_Glasses"], source="folder", data_dir=tiny)
    with pytest.raises(ValueError, match="Unknown split 'valid'"):
        celeba.load_celeba("valid", source="folder", data_dir=tiny)
    with pytest.raises(ValueError, match="Unknown source"):
        celeba.load_celeba("train", source="kaggle")
    with pytest.raises(ValueError, match="needs data_dir"):
        celeba.load_celeba("train", source="folder", data_dir=None)


@pytest.mark.parametrize("limit", [-5, 0, 2.5, "10", True, 3.0])
@pytest.mark.parametrize("source", ["folder", "synthetic", "tfds"])
def test_limit_must_be_a_positive_int_or_none(tiny, source, limit, monkeypatch):
    """-5 used to keep all but the last five images; 0, 2.5 and "10" failed deep inside."""
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise ConnectionError("the limit should have been refused before TFDS is asked")

    monkeypatch.setattr(tfds, "load", no_download)
    data_dir = tiny if source == "folder" else None
    for load in (celeba.load_celeba, celeba.load_labels):
        with pytest.raises(ValueError, match=r"limit=.*positive whole number.*or None"):
            load("train", source=source, data_dir=data_dir, limit=limit)


def test_limit_accepts_numpy_ints(tiny):
    labels = celeba.load_labels("train", source="folder", data_dir=tiny, limit=np.int64(1))
    assert list(labels.index) == ["000001.jpg"]


def test_missing_image_error_and_skip(tiny):
    (tiny / celeba_labels.IMAGE_FOLDER / "000002.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"000002.jpg is listed .* missing.*skip_unreadable=True"
    ):
        celeba.load_celeba("train", source="folder", data_dir=tiny, image_size=32)
    with pytest.warns(UserWarning, match=r"Skipped 1 of 2 images .*1 missing"):
        ds = celeba.load_celeba(
            "train", source="folder", data_dir=tiny, image_size=32, skip_unreadable=True
        )
    assert ds.skipped == 1 and len(list(ds)) == 1


@pytest.mark.parametrize("verify", ["header", "decode"])
def test_undecodable_image_error_and_skip(tiny, verify):
    (tiny / celeba_labels.IMAGE_FOLDER / "000001.jpg").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(ValueError, match=r"000001.jpg is not a complete JPEG.*skip_unreadable"):
        celeba.load_celeba("train", source="folder", data_dir=tiny, verify=verify)
    with pytest.warns(UserWarning, match=r"Skipped 1 of 2 images .*1 unreadable"):
        ds = celeba.load_celeba(
            "train",
            source="folder",
            data_dir=tiny,
            image_size=32,
            skip_unreadable=True,
            verify=verify,
        )
    ((image, labels),) = list(ds)
    assert ds.skipped == 1 and image.shape == (32, 32, 3)


def test_truncated_jpeg_is_caught(tiny):
    path = tiny / celeba_labels.IMAGE_FOLDER / "000004.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="000004.jpg is not a complete JPEG"):
        celeba.load_celeba("test", source="folder", data_dir=tiny)


def _textured_jpeg() -> bytes:
    """A 178x218 JPEG with detail everywhere (a uniform image leaves little to garble)."""
    x, y = np.linspace(0, 1, 178)[None, :, None], np.linspace(0, 1, 218)[:, None, None]
    noise = np.random.default_rng(0).random((218, 178, 3))
    pixels = 255 * (0.5 + 0.25 * np.sin(20 * x + 3 * y * np.arange(1, 4)) + 0.15 * noise)
    return tf.io.encode_jpeg(pixels.clip(0, 255).astype(np.uint8), quality=90).numpy()


def _garbled(jpeg: bytes) -> bytes:
    """The same file with 100 bytes cut out of the middle of its compressed (scan) data:
    start and end markers intact, so it passes verify="header"."""
    start, end = jpeg.index(b"\xff\xda"), len(jpeg) - 2
    middle = (start + end) // 2
    return jpeg[:middle] + jpeg[middle + 100 :]


def test_garbled_scan_data_is_caught_by_verify_decode(tiny):
    """It used to pass verify="decode": TensorFlow decodes it without an error, into an
    image whose lower part is noise, and only prints libjpeg's warning."""
    clean = _textured_jpeg()
    garbled = _garbled(clean)
    picture = tf.io.decode_jpeg(garbled, channels=3).numpy().astype(int)  # no error...
    original = tf.io.decode_jpeg(clean, channels=3).numpy().astype(int)
    assert np.abs(picture - original)[109:].mean() > 20  # ...but the lower half is noise
    images = tiny / celeba_labels.IMAGE_FOLDER
    (images / "000001.jpg").write_bytes(clean)
    (images / "000002.jpg").write_bytes(garbled)
    with pytest.raises(ValueError, match=r"000002.jpg is not a complete JPEG image, or its "):
        celeba.load_celeba("train", source="folder", data_dir=tiny, verify="decode")
    with pytest.warns(UserWarning, match=r"Skipped 1 of 2 images .*1 unreadable"):
        ds = celeba.load_celeba(
            "train", source="folder", data_dir=tiny, verify="decode", skip_unreadable=True
        )
    assert ds.skipped == 1 and len(list(ds)) == 1
    header = celeba.load_celeba("train", source="folder", data_dir=tiny, verify="header")
    assert header.skipped == 0  # the fast check cannot see it (documented)


def test_libjpeg_warnings_are_collected_and_other_output_kept(capfd):
    with celeba_images.libjpeg_warnings() as found:
        tf.io.decode_jpeg(_garbled(_textured_jpeg())).numpy()
        os.write(2, b"an unrelated line\n")
    assert found and found[0].startswith("Corrupt JPEG data")
    err = capfd.readouterr().err
    assert "an unrelated line" in err and "Corrupt JPEG data" not in err
    with celeba_images.libjpeg_warnings() as found:
        tf.io.decode_jpeg(_textured_jpeg()).numpy()
    assert found == []


def test_missing_image_folder(tiny):
    shutil.rmtree(tiny / celeba_labels.IMAGE_FOLDER)
    with pytest.raises(FileNotFoundError, match="img_align_celeba.*unzip"):
        celeba.load_celeba("train", source="folder", data_dir=tiny)


def test_tfds_failure_is_a_clear_error_not_a_fallback(monkeypatch):
    import tensorflow_datasets as tfds

    def fail(*args, **kwargs):
        raise ConnectionError("Google Drive quota exceeded")

    monkeypatch.setattr(tfds, "load", fail)
    for load in (celeba.load_celeba, celeba.load_labels):
        with pytest.raises(RuntimeError) as err:
            load("train", source="tfds")
        message = str(err.value)
        assert "source='tfds'" in message and "could not provide celeb_a" in message
        assert "quota exceeded" in message  # the cause
        for way_out in ("source='folder'", "data_dir=", "MTLKIT_CELEBA_DIR", "source='synthetic'"):
            assert way_out in message


def test_folder_from_the_environment(tiny, monkeypatch):
    monkeypatch.setenv("MTLKIT_CELEBA_DIR", str(tiny))
    labels = celeba.load_labels("train", ["Male"], source="folder")
    assert list(labels.index) == ["000001.jpg", "000002.jpg"]
    assert len(list(celeba.load_celeba("test", source="folder", image_size=8))) == 1
    assert (
        celeba.describe_source("folder", None, 2) == f"CelebA folder {tiny.name} (2 train images)"
    )
    monkeypatch.delenv("MTLKIT_CELEBA_DIR")
    with pytest.raises(ValueError, match=r"needs data_dir \(or MTLKIT_CELEBA_DIR\)"):
        celeba.load_labels("train", source="folder")


# ------------------------------------------------------------ images from a folder
def test_crop_keeps_the_central_square():
    image = np.zeros((218, 178, 3), np.uint8)
    image[:20] = 255  # the strip above the crop
    image[20:198] = 100
    out = celeba_images.crop_and_resize(tf.constant(image), 89).numpy()
    assert out.shape == (89, 89, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 100)
    assert celeba_images.crop_and_resize(tf.constant(image), None).shape == (178, 178, 3)


def test_resize_square_shrinks_with_antialiasing_and_enlarges_bilinear():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: plain subsampling would alias them away
    small = celeba_images.resize_square(tf.constant(stripes), 16).numpy()
    assert small.dtype == np.uint8 and np.all(np.abs(small.astype(int) - 128) <= 1)

    ramp = np.repeat(np.linspace(0, 255, 8).astype(np.uint8)[None, :, None], 8, 0).repeat(3, 2)
    big = celeba_images.resize_square(tf.constant(ramp), 20).numpy().astype(float)
    expected = tf.image.resize(ramp, (20, 20), method="bilinear").numpy()
    np.testing.assert_allclose(big, np.round(expected), atol=0)


def test_dct_ratio_keeps_the_square_on_whole_pixels():
    assert [celeba_images.dct_ratio(s) for s in (224, 178, 60, 59, 56, 20, 8)] == [
        1,
        1,
        1,
        2,
        2,
        2,
        2,
    ]
    assert celeba_images.dct_ratio(20, shape=(256, 256)) == 8  # 256 / 8 = 32 >= 1.5 * 20
    assert celeba_images.dct_ratio(20, shape=(260, 256)) == 2  # top offset 2: only 1/2 is exact
    # the loader shrinks; enlarging (and the native size) is left to the model
    assert [celeba_images.loader_size(s) for s in (56, 177, 178, 224)] == [56, 177, None, None]


def _reference(path, image_size):
    """The plain way: decode the whole JPEG, crop the centre square, resize in float."""
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    square = tf.cast(celeba_images.crop_and_resize(image, None), tf.float32)
    method = "area" if image_size < square.shape[0] else "bilinear"
    return tf.image.resize(square, (image_size, image_size), method=method).numpy()


@needs_mini
@pytest.mark.parametrize("image_size", [None, 224, 178, 120, 60, 56, 20])
def test_decode_face_matches_decoding_everything(image_size):
    """decode_and_crop_jpeg (with libjpeg's 1/2 scaling when small) ~ the full decode.

    Measured on 30 celeba_mini images: at full scale the largest difference is uint8
    rounding (0.5); through the 1/2-scale decode (sizes up to 59) the mean difference is
    at most 2.4 of 255 per image and the largest 29 (a different, also averaging, filter).
    """
    paths = sorted((MINI / celeba_labels.IMAGE_FOLDER).glob("*.jpg"))[:6]
    for path in paths:
        fast = celeba_images.decode_face(tf.io.read_file(str(path)), image_size).numpy()
        assert fast.dtype == np.uint8
        if image_size is None:
            full = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy()
            np.testing.assert_array_equal(fast, full[20:198])
            continue
        slow = _reference(str(path), image_size)
        assert fast.shape == slow.shape == (image_size, image_size, 3)
        diff = np.abs(fast - slow)
        if image_size * 3 > 178:  # decoded at full scale: the same up to uint8 rounding
            assert diff.max() <= 0.5 + 1e-3
        else:  # libjpeg's DCT-domain downscale first: a slightly different average
            assert diff.mean() < 3.0 and diff.max() < 40


@needs_mini
def test_folder_loader_on_celeba_mini():
    sizes = {
        s: int(celeba.load_celeba(s, source="folder", data_dir=MINI, image_size=48).cardinality())
        for s in celeba_labels.SPLITS
    }
    assert sizes == {"train": 3031, "validation": 649, "test": 650}

    attrs = ["Male", "Smiling", "Bald"]
    ds = celeba.load_celeba("test", attrs, source="folder", data_dir=MINI, image_size=48)
    assert ds.skipped == 0
    truth = celeba_labels.read_annotations(MINI)
    truth = truth[truth["split"] == "test"]
    lines = (MINI / celeba_labels.ATTR_FILE).read_text().splitlines()  # checked without the parser
    columns = [lines[1].split().index(a) + 1 for a in attrs]
    raw = {
        f[0]: {a: int(f[c] == "1") for a, c in zip(attrs, columns)}
        for f in map(str.split, lines[2:])
        if f[0] in set(truth.index[:5])
    }
    assert len(raw) == 5
    for (image, labels), name in zip(ds.take(5), truth.index[:5]):
        assert image.shape == (48, 48, 3) and image.dtype == tf.uint8
        assert float(tf.math.reduce_std(tf.cast(image, tf.float32))) > 10  # a real photo
        assert {a: int(v) for a, v in labels.items()} == raw[name]
        assert labels["Male"].dtype == tf.int32

    labels = celeba.load_labels("test", attrs, source="folder", data_dir=MINI)
    assert labels.shape == (650, 3) and list(labels.index[:5]) == list(truth.index[:5])


@needs_mini
def test_limit_and_shuffle_seed_on_celeba_mini():
    ds = celeba.load_celeba(
        "train", source="folder", data_dir=MINI, image_size=16, limit=20, shuffle_seed=3
    )
    first = [int(y["Male"]) for _, y in ds]
    again = [int(y["Male"]) for _, y in ds]
    assert len(first) == 20 and sorted(first) == sorted(again)
    expected = celeba.load_labels("train", source="folder", data_dir=MINI, limit=20)["Male"]
    assert sorted(first) == sorted(expected.tolist())


@needs_mini
def test_native_size_and_bad_image_size():
    ds = celeba.load_celeba("validation", source="folder", data_dir=MINI, limit=4)
    assert ds.element_spec[0].dtype == tf.uint8
    assert {tuple(image.shape) for image, _ in ds} == {(178, 178, 3)}
    for bad in (0, -5, 56.0, "224"):
        with pytest.raises(ValueError, match="image_size=.*positive number of pixels"):
            celeba.load_celeba("validation", source="folder", data_dir=MINI, image_size=bad)


# --------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_with_real_rates():
    a = celeba.load_celeba("train", source="synthetic", image_size=32, limit=200, seed=5)
    b = celeba.load_celeba("train", source="synthetic", image_size=32, limit=200, seed=5)
    c = celeba.load_celeba("train", source="synthetic", image_size=32, limit=200, seed=6)
    (xa, ya), (xb, yb), (xc, _) = (next(iter(d.batch(200))) for d in (a, b, c))
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    assert not np.array_equal(xa.numpy(), xc.numpy())
    assert xa.dtype == tf.uint8 and xa.shape == (200, 32, 32, 3)
    assert int(tf.reduce_max(xa)) > 200 and int(tf.reduce_min(xa)) < 50  # uses the range
    for attribute in EIGHT:
        assert np.array_equal(ya[attribute].numpy(), yb[attribute].numpy())

    labels = celeba_synthetic.synthetic_labels("train", celeba_labels.ATTRIBUTES, n=3000)
    rates = labels.mean()
    for attribute, rate in celeba_labels.TRAIN_POSITIVE_RATES.items():
        assert abs(rates[attribute] - rate) <= 1 / 3000
    assert celeba.load_labels("test", source="synthetic", limit=10).equals(
        celeba_synthetic.synthetic_labels("test", n=10)
    )


def test_synthetic_cues_follow_their_rates_and_ceilings():
    """Each cue is on exactly round(p * positives) positive and round(q * negatives) negative
    images, and the rule 'present when the cue shows' scores cue_ceiling's numbers."""
    labels = celeba_synthetic.synthetic_labels("train", celeba_labels.ATTRIBUTES, n=3000)
    shown = celeba_synthetic.cue_shown(labels, "train")
    again = celeba_synthetic.cue_shown(labels, "train")
    assert shown.equals(again) and not shown.equals(celeba_synthetic.cue_shown(labels, "train", 1))
    for attribute in celeba_labels.ATTRIBUTES:
        y, cue = labels[attribute].to_numpy() == 1, shown[attribute].to_numpy()
        p, q = celeba_synthetic.cue_rates(attribute)
        assert cue[y].sum() == round(p * y.sum()) and cue[~y].sum() == round(q * (~y).sum())
        ceiling = celeba_synthetic.cue_ceiling(attribute, rate=y.mean())
        best = max(np.mean(cue == y), np.mean(y == (y.mean() > 0.5)))  # cue rule or constant
        assert abs(best - ceiling["accuracy"]) < 2 / 3000


def test_synthetic_tells_the_rare_attribute_story():
    """Balanced attributes carry a reliable cue, the rarest ones almost none: even a perfect
    reader of the cue barely beats 'never' on Wearing_Hat and Wearing_Necklace, which
    balanced accuracy shows."""
    ceiling = {a: celeba_synthetic.cue_ceiling(a) for a in EIGHT}
    gain = {a: c["accuracy"] - c["majority_baseline"] for a, c in ceiling.items()}
    for easy in ("Male", "Smiling", "Wearing_Lipstick"):
        assert gain[easy] > 0.25 and ceiling[easy]["balanced_accuracy"] >= 0.75
    for rare in ("Wearing_Hat", "Wearing_Necklace"):
        assert gain[rare] < 0.03
        assert ceiling[rare]["balanced_accuracy"] < ceiling["Male"]["balanced_accuracy"] - 0.1
    assert ceiling["Wearing_Necklace"]["balanced_accuracy"] < 0.65


def test_synthetic_cues_are_in_the_pixels():
    """A logistic regression on the pixels gets most of the way to the cue's ceiling on the
    balanced attributes (so the cues are really drawn), and no further than it on the rare
    ones."""

    def arrays(split, n):
        ds = celeba.load_celeba(split, source="synthetic", image_size=24, limit=n, seed=1)
        x, y = next(iter(ds.batch(n)))
        return x.numpy().reshape(n, -1).astype(np.float32), {a: v.numpy() for a, v in y.items()}

    x_train, y_train = arrays("train", 1500)
    x_test, y_test = arrays("test", 500)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    for attribute in ("Male", "Smiling", "Wearing_Lipstick", "Wearing_Necklace"):
        y = y_train[attribute].astype(np.float32)
        w, b = np.zeros(x_train.shape[1], np.float32), 0.0
        for _ in range(150):  # plain full-batch gradient descent on the logistic loss
            p = 1 / (1 + np.exp(-(x_train @ w + b)))
            w -= 0.05 * (x_train.T @ (p - y) / len(y) + 1e-3 * w)
            b -= 0.5 * float(np.mean(p - y))
        accuracy = np.mean(((x_test @ w + b) > 0) == y_test[attribute])
        rate = y_test[attribute].mean()
        ceiling = celeba_synthetic.cue_ceiling(attribute, rate=rate)
        majority = ceiling["majority_baseline"]
        assert accuracy <= ceiling["accuracy"] + 0.03, (attribute, accuracy, ceiling)
        if attribute != "Wearing_Necklace":
            assert accuracy > majority + 0.6 * (ceiling["accuracy"] - majority), (
                attribute, accuracy, ceiling,
            )  # fmt: skip


def test_describe_source():
    assert (
        celeba.describe_source("folder", "/x/celeba_mini", 3031)
        == "CelebA folder celeba_mini (3,031 train images)"
    )
    assert "synthetic" in celeba.describe_source("synthetic")


def test_names_others_rely_on_stay_importable_from_celeba():
    from mtlkit.data.celeba import (  # noqa: F401
        ATTRIBUTES,
        EIGHT,
        check_attributes,
        label_stats,
        load_celeba,
        load_labels,
        loader_size,
        majority_classes,
    )  # fmt: skip

    assert loader_size is celeba_images.loader_size and label_stats is celeba_labels.label_stats


# -------------------------------------------------------------------- hidden labels
HIDE = {"Wearing_Necklace": 0.9}


def test_hidden_labels_exact_count_seeded_and_others_untouched():
    n = 210
    full = celeba.load_labels("train", source="synthetic", limit=n)
    hidden = celeba.load_labels("train", source="synthetic", limit=n, hide_labels=HIDE)
    again = celeba.load_labels("train", source="synthetic", limit=n, hide_labels=HIDE)
    other = celeba.load_labels("train", source="synthetic", limit=n, hide_labels=HIDE, hide_seed=1)
    mask = hidden["Wearing_Necklace"] == UNKNOWN
    assert mask.sum() == round(0.9 * n)  # exactly that share of this split's labels
    assert hidden.equals(again)  # same seed, same mask
    assert not mask.equals(other["Wearing_Necklace"] == UNKNOWN)  # another seed, another mask
    assert (hidden.loc[~mask, "Wearing_Necklace"] == full.loc[~mask, "Wearing_Necklace"]).all()
    rest = [a for a in EIGHT if a != "Wearing_Necklace"]
    assert hidden[rest].equals(full[rest])  # other attributes untouched
    # labels and mask depend on the attribute, not on which others are loaded
    alone = celeba.load_labels("train", ["Wearing_Necklace"], source="synthetic", limit=n,
                               hide_labels=HIDE)  # fmt: skip
    assert alone["Wearing_Necklace"].equals(hidden["Wearing_Necklace"])
    pair = celeba.load_labels("train", ["Male", "Wearing_Necklace"], source="synthetic", limit=n)
    assert pair["Wearing_Necklace"].equals(full["Wearing_Necklace"])  # labels too


def test_hidden_labels_reach_the_image_stream_and_leave_images_alone():
    kwargs = dict(source="synthetic", image_size=16, limit=40)
    plain = list(celeba.load_celeba("validation", **kwargs))
    hidden = list(celeba.load_celeba("validation", hide_labels={"Male": 0.5}, **kwargs))
    expected = celeba.load_labels("validation", source="synthetic", limit=40,
                                  hide_labels={"Male": 0.5})  # fmt: skip
    assert [int(y["Male"]) for _, y in hidden] == expected["Male"].tolist()
    assert sum(int(y["Male"]) == UNKNOWN for _, y in hidden) == 20
    for (x0, y0), (x1, y1) in zip(plain, hidden):
        np.testing.assert_array_equal(x0.numpy(), x1.numpy())
        assert int(y0["Smiling"]) == int(y1["Smiling"])


def test_hidden_labels_in_a_folder_and_in_the_statistics(tiny):
    labels = celeba.load_labels("train", source="folder", data_dir=tiny,
                                hide_labels={"Male": 0.5, "Young": 1.0})  # fmt: skip
    assert (labels["Male"] == UNKNOWN).sum() == 1 and (labels["Young"] == UNKNOWN).all()
    ds = celeba.load_celeba("train", source="folder", data_dir=tiny, image_size=8,
                            hide_labels={"Male": 0.5, "Young": 1.0})  # fmt: skip
    assert [int(y["Male"]) for _, y in ds] == labels["Male"].tolist()
    stats = celeba_labels.label_stats({"train": labels}, ["Male", "Young", "Smiling"])
    assert stats.loc[("train", "Male"), "labelled"] == 1
    assert stats.loc[("train", "Young"), "labelled"] == 0
    assert (
        stats.loc[("train", "Smiling"), "labelled"]
        == stats.loc[("train", "Smiling"), "examples"]
        == 2
    )
    known = labels.loc[labels["Male"] != UNKNOWN, "Male"]
    assert stats.loc[("train", "Male"), "positives"] == known.sum()
    assert celeba_labels.majority_classes(labels[["Male"]]) == {"Male": int(known.mean() > 0.5)}
    with pytest.raises(ValueError, match="Every Young label is hidden"):
        celeba_labels.majority_classes(labels)


def test_majority_classes_ignore_hidden_labels():
    labels = pd.DataFrame({"Male": [1, 1, 0, UNKNOWN, UNKNOWN, UNKNOWN]})
    assert celeba_labels.majority_classes(labels) == {"Male": 1}  # 2 of 3 known are positive


@pytest.mark.parametrize(
    ("hide", "error", "match"),
    [
        ({"Wearing_Necklaces": 0.5}, ValueError, "Unknown CelebA attribute"),
        ({"Bald": 0.5}, ValueError, "not among the loaded attributes"),
        ({"Wearing_Necklace": 1.5}, ValueError, "from 0 .* to 1"),
        ({"Male": 2}, ValueError, r"hide_labels\['Male'\] = 2: .*from 0 .* to 1"),
        ({"Wearing_Necklace": -0.1}, ValueError, "from 0 .* to 1"),
        ({"Wearing_Necklace": float("nan")}, ValueError, "from 0 .* to 1"),
        ({"Wearing_Necklace": "10%"}, ValueError, "from 0 .* to 1"),
        (0.9, TypeError, "pass a dict"),
    ],
)
def test_hidden_labels_bad_input(hide, error, match):
    with pytest.raises(error, match=match):
        celeba.load_labels("train", source="synthetic", limit=10, hide_labels=hide)
    with pytest.raises(error, match=match):
        celeba.load_celeba("train", source="synthetic", limit=10, hide_labels=hide)


@pytest.mark.parametrize("share", [2, -0.5, float("nan"), "all"])
def test_hidden_mask_refuses_a_share_outside_0_1(share):
    """hidden_mask(..., share=2) used to hide every label without a word."""
    with pytest.raises(ValueError, match=r"hide_labels\['Male'\] = .*from 0 .* to 1"):
        celeba_labels.hidden_mask(10, "Male", share, 0, "train")


def test_hidden_labels_bad_seed():
    with pytest.raises(ValueError, match="hide_seed=-1"):
        celeba.load_labels("train", source="synthetic", limit=10, hide_labels=HIDE, hide_seed=-1)


def test_missing_folder_says_how_to_go_on(tmp_path):
    for load in (celeba.load_celeba, celeba.load_labels):
        with pytest.raises(FileNotFoundError) as err:
            load("train", source="folder", data_dir=tmp_path / "nowhere")
        for part in ("list_attr_celeba.txt", "MTLKIT_CELEBA_DIR", "source='synthetic'"):
            assert part in str(err.value)


def test_a_damaged_image_met_in_training_is_named_with_the_fix(tiny):
    """Under the default verify="header" a file whose middle is damaged reaches the decoder;
    training and evaluation then stop with a ValueError that says what to do."""
    from mtlkit.analysis import scoring
    from mtlkit.training import fit_resumable, train

    images = tiny / celeba_labels.IMAGE_FOLDER
    (images / "000002.jpg").write_bytes(b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9")
    data = celeba.load_celeba("train", ["Male"], "folder", data_dir=tiny, image_size=8).batch(2)
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, {"Male": keras.layers.Dense(1, name="Male")(keras.layers.Flatten()(x))})
    fix = r"damaged.*verify='decode'.*skip_unreadable=True"
    with pytest.raises(ValueError, match=fix):
        train(model, data, epochs=1, losses="binary_crossentropy", optimizer="adam", verbose=0)
    with pytest.raises(ValueError, match=fix):
        scoring.predict_with_labels(model, data)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match=fix):
        fit_resumable(lambda: model, data, epochs=1, run_dir=tiny / "run", verbose=0)
