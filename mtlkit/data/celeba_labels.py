"""CelebA labels: the official annotation files, label statistics and hidden labels.

Everything here works from the two annotation files (or any ``{attribute: 0/1}`` table)
and never touches an image:

* :func:`read_attributes`, :func:`read_partition`, :func:`read_annotations` parse the
  official ``list_attr_celeba.txt`` and ``list_eval_partition.txt``;
* :func:`label_stats` and :func:`majority_classes` give positive rates, per-task label
  counts and majority-class baselines;
* :func:`with_hidden_labels` marks a seeded share of an attribute's labels as unknown (-1), for
  partial-label experiments ("what if Wearing_Necklace were labelled on 10 % of images?").

Labels are 0 (absent) or 1 (present); -1 means "unknown" and appears only where asked for
with :func:`with_hidden_labels`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd

UNKNOWN = -1
"""The label of an example whose attribute is not known (see :func:`with_hidden_labels`)."""

ATTRIBUTES = (  # noqa: SIM905 (one readable block of names)
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

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"

OFFICIAL_SPLIT_SIZES = {"train": 162_770, "validation": 19_867, "test": 19_962}

# fmt: off
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
# fmt: on


# ------------------------------------------------------------------ annotation files
def _read_lines(path: Path) -> list[str]:
    """The file's lines without line ends (CRLF or LF), trailing blank lines dropped."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. A CelebA folder needs {ATTR_FILE}, {PARTITION_FILE} "
            f"and {IMAGE_FOLDER}/ side by side: point data_dir (or MTLKIT_CELEBA_DIR) at "
            "that folder, or ask explicitly for the synthetic stand-in (source='synthetic')."
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
            pd.io.common.StringIO(body),
            sep=r"\s+",
            header=None,
            index_col=0,
            dtype={0: str},
            engine="c",
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


def _header_differences(names: Sequence[str]) -> list[str]:
    """How a header's attribute names differ from :data:`ATTRIBUTES` (empty: they match)."""
    if list(names) == ATTRIBUTES:
        return []
    problems = []
    for name in dict.fromkeys(n for n in names if n not in ATTRIBUTES):
        close = difflib.get_close_matches(name, ATTRIBUTES, n=1)
        problems.append(
            f"unknown name {name!r}" + (f" (a typo for {close[0]!r}?)" if close else "")
        )
    missing = [a for a in ATTRIBUTES if a not in names]
    if missing:
        problems.append(f"missing {missing}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        problems.append(f"repeated {repeated}")
    if not problems:  # the official names, in another order
        moved = [
            f"column {i + 1} is {n!r} where the official file has {a!r}"
            for i, (n, a) in enumerate(zip(names, ATTRIBUTES))
            if n != a
        ]
        problems.append("the official names in another order: " + "; ".join(moved[:4]))
        if len(moved) > 4:
            problems[-1] += f" (and {len(moved) - 4} more columns)"
    return problems


def check_header(path: Path, names: Sequence[str]) -> None:
    """``ValueError`` unless ``names`` (line 2 of ``list_attr_celeba.txt``) are the 40
    official attribute names in the official order (:data:`ATTRIBUTES`).

    A header with two names swapped, or a typo, would serve one attribute's labels under
    another's name; the message says what differs.
    """
    problems = _header_differences(names)
    if problems:
        raise ValueError(
            f"{path}: line 2 should name the 40 official CelebA attributes in the official "
            f"order, but it has {'; '.join(problems)}. Its columns cannot be trusted to hold "
            f"the labels their names say: re-download {ATTR_FILE} (MD5 of the official file: "
            "75e246fa4810816ffd6ee81facbd244c)."
        )


def read_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """Parse ``list_attr_celeba.txt`` into a DataFrame of 0/1 labels (int8).

    Rows are indexed by image file name, columns are the 40 attributes in file order.
    Copes with CRLF or LF line ends and one or two spaces between columns. Raises
    ``ValueError`` naming the file, the line and the fix for a header that is not the
    official 40 names in the official order (see :func:`check_header`), a truncated file
    (fewer rows than the count on the first line), a malformed row or a value other than
    1 / -1.
    """
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(
            f"{path}: line 1 should be the image count and line 2 the attribute names. "
            f"Is this really {ATTR_FILE}? Re-download it."
        )
    declared, names = int(lines[0].strip()), lines[1].split()
    check_header(path, names)
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
            f"{ATTR_FILE} (mtlkit.data.celeba.ATTRIBUTES), e.g. {', '.join(EIGHT[:3])}."
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
    whose label for the task is known: all of them in CelebA, fewer where labels were hidden
    with :func:`with_hidden_labels`; DST's ground-truth-sample metric counts them per task),
    ``positives``, ``positive_rate`` (among the labelled images), ``majority_class`` (0 or 1)
    and ``majority_accuracy`` (the accuracy of always predicting the majority class of that
    split, on its labelled images).
    """
    if isinstance(annotations, Mapping):
        annotations = pd.concat([v.assign(split=k) for k, v in annotations.items()])
    elif not isinstance(annotations, pd.DataFrame):
        annotations = read_annotations(annotations)
    attributes = check_attributes(attributes)
    present = [s for s in SPLITS if (annotations["split"] == s).any()]
    known = annotations[attributes].where(annotations[attributes] != UNKNOWN)
    grouped = known.groupby(annotations["split"])
    long = pd.DataFrame(
        {
            "examples": grouped.size().reindex(present).repeat(len(attributes)).to_numpy(),
            "labelled": grouped.count().reindex(present).stack().to_numpy(),
            "positives": grouped.sum().reindex(present).stack().to_numpy().astype(np.int64),
        },
        index=pd.MultiIndex.from_product([present, attributes], names=["split", "attribute"]),
    )
    long["positive_rate"] = long["positives"] / long["labelled"]
    long["majority_class"] = (long["positive_rate"] > 0.5).astype(int)
    long["majority_accuracy"] = np.maximum(long["positive_rate"], 1 - long["positive_rate"])
    return long


RAW_FORM = (
    "its binary labels are -1 and 1 and never 0 -- CelebA's file form, where -1 means "
    "'absent', not 'unknown'. Convert them with (labels + 1) // 2 (the kit's loaders do), "
    "keeping -1 only for unknown labels."
)
"""What :func:`raw_celeba_form` labels are and how to convert them (training's wording)."""


def raw_celeba_form(values) -> bool:
    """Whether binary labels look like CelebA's file form (-1 absent, 1 present): some 1s, no
    0 and at least a quarter -1s. Training (:func:`mtlkit.models.tasks.check_label_forms`),
    scoring and the diagnostics all ask this one rule: a column of 1s with fewer -1s stays
    "all present, some unknown"."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        return False
    one, zero = (values == 1).any(), (values == 0).any()
    return bool(one and not zero and (values == UNKNOWN).mean() >= 0.25)


def majority_classes(labels: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, int]:
    """The majority class (0 or 1) of each attribute in ``labels`` (e.g. the train labels),
    counted over the known labels (hidden ones, -1, are left out). CelebA's own -1/1 labels
    (:func:`raw_celeba_form`) are refused: their -1 means "absent", not "unknown"."""
    classes = {}
    for attribute, values in dict(labels).items():
        if raw_celeba_form(values):
            raise ValueError(f"Attribute {attribute!r}: {RAW_FORM}")
        known = np.asarray(values)[np.asarray(values) != UNKNOWN]
        if known.size == 0:
            raise ValueError(
                f"Every {attribute} label is hidden (-1): no majority class. Hide a share "
                "below 1 of its labels, or leave the attribute out."
            )
        classes[attribute] = int(np.mean(known) > 0.5)
    return classes


# ------------------------------------------------------------------ hidden labels
def check_hidden(shares: Mapping[str, float] | None, attributes: Sequence[str]) -> dict[str, float]:
    """``{attribute: share}`` of labels to hide, checked; ``{}`` for None.

    Each key must be one of ``attributes`` (the loaded ones) and each share a number in
    [0, 1]: 0.9 hides 90 % of that attribute's labels, keeping 10 %.
    """
    if shares is None:
        return {}
    if not isinstance(shares, Mapping):
        raise TypeError(
            f"hide_labels={shares!r}: pass a dict {{attribute: share}}, e.g. "
            '{"Wearing_Necklace": 0.9} hides 90 % of the Wearing_Necklace labels.'
        )
    if not shares:
        return {}
    check_attributes(list(shares))
    outside = [a for a in shares if a not in attributes]
    if outside:
        raise ValueError(
            f"hide_labels names {outside}, which are not among the loaded attributes "
            f"{list(attributes)}: add them to attributes or drop them from hide_labels."
        )
    return {a: _check_share(a, s) for a, s in shares.items()}


def _check_share(attribute: str, share: object) -> float:
    """``share`` as a float in [0, 1], or a ``ValueError`` naming the attribute."""
    if isinstance(share, bool) or not isinstance(share, Real) or not 0 <= share <= 1:
        raise ValueError(
            f"hide_labels[{attribute!r}] = {share!r}: the share of labels to hide must be "
            "a number from 0 (hide none) to 1 (hide all)."
        )
    return float(share)


def hidden_mask(n: int, attribute: str, share: float, seed: int, split: str) -> np.ndarray:
    """Boolean mask over ``n`` examples, True for exactly ``round(share * n)`` of them.

    Seeded by ``(seed, attribute, split)``: the same arguments always hide the same
    examples, whatever other attributes are loaded or hidden.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"hide_seed={seed!r}: pass a non-negative integer.")
    check_attributes([attribute])
    share = _check_share(attribute, share)
    rng = np.random.default_rng([int(seed), ATTRIBUTES.index(attribute), SPLITS.index(split)])
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[: round(share * n)]] = True
    return mask


def with_hidden_labels(
    labels: pd.DataFrame, shares: Mapping[str, float], seed: int, split: str
) -> pd.DataFrame:
    """A copy of a split's 0/1 ``labels`` with a seeded share of some attributes' labels
    set to :data:`UNKNOWN` (-1); see :func:`hidden_mask`. Other columns are untouched."""
    shares = check_hidden(shares, list(labels.columns))
    labels = labels.copy()
    for attribute, share in shares.items():
        mask = hidden_mask(len(labels), attribute, share, seed, split)
        labels.loc[mask, attribute] = UNKNOWN
    return labels
