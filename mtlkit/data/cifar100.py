"""CIFAR-100 with both label sets: loading, the report's split, augmentation, synthetic data.

Every image of CIFAR-100 carries two labels: a *fine* class (100 of them) and the *coarse*
superclass it belongs to (20, five fine classes each). The loaders here return both labels
in one pass, as ``(image, {"fine": int, "coarse": int})`` pairs, images float32 in [0, 1].

Three sources, always chosen explicitly:

* ``"tfds"`` -- TensorFlow Datasets' ``cifar100`` (downloads ~160 MB the first time);
* ``"folder"`` -- the official Python version you downloaded yourself: a directory holding
  ``cifar-100-python/{train,test,meta}``;
* ``"synthetic"`` -- a stand-in with the same shapes and the real two-level hierarchy, made
  in seconds from a seed, for offline use. It is never used unless asked for.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtlkit import config
from mtlkit.checks import positive_int

SOURCES = ("tfds", "folder", "synthetic")
SPLITS = ("train", "validation", "test")
OFFICIAL_SIZES = {"train": 50_000, "test": 10_000}
VALIDATION_FRACTION = 0.2  # the report: 80/20 split of the 50,000 training images

# The official hierarchy (names as in the dataset's ``meta`` file).
COARSE_TO_FINE = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
COARSE_NAMES = tuple(sorted(COARSE_TO_FINE))
FINE_NAMES = tuple(sorted(f for fines in COARSE_TO_FINE.values() for f in fines))
FINE_TO_COARSE = np.array(
    [COARSE_NAMES.index(c) for f in FINE_NAMES for c, fs in COARSE_TO_FINE.items() if f in fs]
)
"""``FINE_TO_COARSE[fine_label]`` is the coarse label of that fine class."""

FOLDER_HELP = (
    "Download the CIFAR-100 *python version* (cifar-100-python.tar.gz) from the dataset's "
    "page (https://www.cs.toronto.edu/~kriz/cifar.html), extract it, and pass the folder "
    "that contains 'cifar-100-python/' as data_dir (or set MTLKIT_CIFAR100_DIR)."
)


OFFLINE_HELP = (
    "With no copy at hand, ask for the embedded stand-in explicitly with source='synthetic' "
    "(its numbers are not CIFAR-100 results)."
)


def class_names() -> dict[str, tuple[str, ...]]:
    """The class names of both tasks: ``{"fine": 100 names, "coarse": 20 names}``."""
    return {"fine": FINE_NAMES, "coarse": COARSE_NAMES}


# ------------------------------------------------------------ the official splits
def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-100 file missing: {path}. {FOLDER_HELP}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path} is not a readable CIFAR-100 pickle ({type(err).__name__}: {err}); the "
            f"file is probably truncated or corrupt. {FOLDER_HELP}"
        ) from err


def _field(batch: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"{path} has no {key!r} entry: it is not a CIFAR-100 file. {FOLDER_HELP}")


def _check_meta(path: Path, meta: dict) -> None:
    """``ValueError`` when the meta file names the classes otherwise than the kit does.

    The labels are indices into these names; in another order, every label would mean
    another class than :data:`FINE_NAMES` and :data:`COARSE_NAMES` say.
    """
    for key, expected in (("fine_label_names", FINE_NAMES), ("coarse_label_names", COARSE_NAMES)):
        names = next((meta[k] for k in (key.encode(), key) if k in meta), None)
        if names is None:
            continue
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        if names != expected:
            first = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b), None)
            where = (
                f"label {first} is {names[first]!r} where CIFAR-100 has {expected[first]!r}"
                if first is not None
                else f"{len(names)} names instead of {len(expected)}"
            )
            raise ValueError(f"{path}: {key!r} is not the official list ({where}). {FOLDER_HELP}")


def check_hierarchy(fine: np.ndarray, coarse: np.ndarray, source: str | os.PathLike) -> None:
    """``ValueError`` unless every (fine, coarse) pair follows the official hierarchy.

    Each of the 100 fine classes belongs to exactly one of the 20 superclasses
    (:data:`FINE_TO_COARSE`); a pair that contradicts it (a "maple_tree" labelled
    "vehicles_1") is a corrupt or mixed-up file. The message gives the first bad example's
    index and the number of such examples.
    """
    wrong = np.flatnonzero(FINE_TO_COARSE[fine] != coarse)
    if wrong.size:
        i = int(wrong[0])
        f, c, right = int(fine[i]), int(coarse[i]), int(FINE_TO_COARSE[fine[i]])
        raise ValueError(
            f"{source}: example {i} has fine label {f} ({FINE_NAMES[f]}) and coarse label {c} "
            f"({COARSE_NAMES[c]}), but {FINE_NAMES[f]} belongs to {COARSE_NAMES[right]} "
            f"(coarse label {right}) in CIFAR-100's hierarchy; {wrong.size:,} of "
            f"{len(fine):,} examples contradict it. The file is corrupt or its labels were "
            f"changed. {FOLDER_HELP}"
        )


def read_cifar100_folder(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, ...]:
    """Read the official pickle of ``split`` ("train" or "test").

    Refuses (``ValueError``) a file whose labels break the official fine -> coarse
    hierarchy (:func:`check_hierarchy`) or a ``meta`` file with other class names.
    Returns ``(images uint8 (N, 32, 32, 3), fine int32 (N,), coarse int32 (N,))``.
    """
    root = Path(data_dir).expanduser()
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(
            f"source='folder': CIFAR-100 folder not found: {root}. {FOLDER_HELP} {OFFLINE_HELP}"
        )
    _check_meta(folder / "meta", _read_pickle(folder / "meta"))  # needed: a complete copy
    path = folder / split
    batch = _read_pickle(path)
    data = np.asarray(_field(batch, "data", path))
    fine = np.asarray(_field(batch, "fine_labels", path), dtype=np.int32)
    coarse = np.asarray(_field(batch, "coarse_labels", path), dtype=np.int32)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}; CIFAR-100 stores "
            f"uint8 rows of 3,072 values (N, 3072). {FOLDER_HELP}"
        )
    if not len(data) == len(fine) == len(coarse):
        raise ValueError(
            f"{path}: {len(data)} images but {len(fine)} fine and {len(coarse)} coarse labels. "
            f"{FOLDER_HELP}"
        )
    if fine.size and (
        fine.min() < 0 or fine.max() >= 100 or coarse.min() < 0 or coarse.max() >= 20
    ):
        raise ValueError(f"{path}: labels outside 0-99 (fine) or 0-19 (coarse). {FOLDER_HELP}")
    check_hierarchy(fine, coarse, path)
    # Rows are channel-major (1,024 red, then green, then blue values).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, fine, coarse


def read_cifar100_tfds(
    split: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, ...]:
    """Load an official split through TensorFlow Datasets (downloads on first use).

    Returns ``(images uint8 (N, 32, 32, 3), fine int32 (N,), coarse int32 (N,))``: TFDS'
    ``label`` is the fine class, ``coarse_label`` the superclass. The split is read in
    batches of 10,000 and concatenated (one pass over the records, decoded in parallel).
    """
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir) if data_dir else config.data_dir() / "tensorflow_datasets"
    try:
        ds = tfds.load("cifar100", split=split, data_dir=str(data_dir), download=download)
        ds = ds.map(lambda e: (e["image"], e["label"], e["coarse_label"]))
        parts = list(tfds.as_numpy(ds.batch(10_000)))
    except Exception as err:  # tfds raises many types for network trouble
        raise RuntimeError(
            f"source='tfds': could not load CIFAR-100 through TensorFlow Datasets into "
            f"{data_dir} ({type(err).__name__}: {err}). If this machine is offline, either "
            f"use a copy you downloaded: source='folder' -- {FOLDER_HELP} {OFFLINE_HELP}"
        ) from err
    if not parts:
        raise RuntimeError(f"source='tfds': the CIFAR-100 {split!r} split in {data_dir} is empty.")
    images, fine, coarse = (np.concatenate(column) for column in zip(*parts))
    return images.astype(np.uint8), fine.astype(np.int32), coarse.astype(np.int32)


# --------------------------------------------------------------- synthetic data
def synthetic_cifar100(num_examples: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Images with CIFAR-100's shapes and real two-level hierarchy, learnable from pixels.

    Each coarse group has a colour of its own, 20 colours far apart; each of its five fine
    classes has a *shade* of it (the group colour plus a fixed random offset). An image is a
    patchwork of 8-pixel squares, about half in the group colour and half in the class's
    shade, under a random colour cast and pixel noise. Colour survives the report's
    augmentation (rotations, shifts, zoom, shear), so a network picks both tasks up within a
    few training steps; the coarse task (20 distant colours) is easier than the fine one
    (100 classes, five close shades per group) -- as on the real data. The colours and shades
    are fixed; ``seed`` draws the images.
    """
    world = np.random.default_rng(20191218)  # the same colours for every split
    levels = np.array([0.15, 0.5, 0.85], np.float32)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    # The 20 points of the 3x3x3 grid with at most one middle level: far from grey and apart.
    group_colours = world.permutation(grid[(grid == 0.5).sum(1) < 2])
    shades = group_colours[FINE_TO_COARSE] + 0.15 * world.standard_normal((100, 3), np.float32)
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, num_examples).astype(np.int32)
    coarse = FINE_TO_COARSE[fine].astype(np.int32)
    in_shade = _upsample(rng.random((num_examples, 4, 4, 1)) < 0.5, 8)
    images = np.where(in_shade, shades[fine, None, None], group_colours[coarse, None, None])
    images += 0.04 * rng.standard_normal((num_examples, 1, 1, 3), np.float32)  # colour cast
    images += 0.06 * rng.standard_normal(images.shape, np.float32)  # pixel noise
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return images, fine, coarse


def _upsample(patterns: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling of (N, h, w, C) arrays by ``factor`` (each value becomes
    a ``factor`` x ``factor`` square)."""
    return patterns.repeat(factor, axis=1).repeat(factor, axis=2)


# ------------------------------------------------------------------- the loader
def _official(
    split: str, source: str, data_dir, seed: int, synthetic_sizes
) -> tuple[np.ndarray, ...]:
    if source == "tfds":
        return read_cifar100_tfds(split, data_dir)
    if source == "folder":
        folder = data_dir or config.env_path("MTLKIT_CIFAR100_DIR")
        if folder is None:
            raise ValueError(f"source='folder' needs data_dir. {FOLDER_HELP} {OFFLINE_HELP}")
        return read_cifar100_folder(folder, split)
    return synthetic_cifar100(synthetic_sizes[split], seed=seed + (0 if split == "train" else 1))


def load_cifar100_arrays(
    split: str,
    source: str = "tfds",
    *,
    data_dir: str | os.PathLike | None = None,
    split_seed: int = 0,
    limit: int | None = None,
    synthetic_sizes: dict[str, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """NumPy arrays ``(images uint8, fine, coarse)`` of one split of the report's protocol.

    ``"train"`` and ``"validation"`` are a seeded 80/20 random split of the 50,000 official
    training images (``split_seed``); ``"test"`` is the official 10,000-image test set.
    ``limit`` keeps the first ``limit`` examples (for quick runs): a positive int, or None
    for all; anything else (0, -5, 2.5, "10") is a ``ValueError``.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}: use one of {SOURCES}.")
    limit = positive_int(limit, "limit", "the first examples to keep", allow_none=True)
    sizes = {**OFFICIAL_SIZES, **(synthetic_sizes or {})}
    official = "test" if split == "test" else "train"
    images, fine, coarse = _official(official, source, data_dir, split_seed, sizes)
    if split != "test":
        order = np.random.default_rng(split_seed).permutation(len(images))
        n_val = int(round(VALIDATION_FRACTION * len(images)))
        keep = order[n_val:] if split == "train" else order[:n_val]
        images, fine, coarse = images[keep], fine[keep], coarse[keep]
    if limit is not None:
        images, fine, coarse = images[:limit], fine[:limit], coarse[:limit]
    if len(images) == 0:
        raise ValueError(f"The {split!r} split of source {source!r} is empty.")
    return images, fine, coarse


def load_cifar100(split: str, source: str = "tfds", **kwargs) -> tf.data.Dataset:
    """An unbatched ``tf.data.Dataset`` of ``(image, {"fine": label, "coarse": label})``.

    Images are float32 in [0, 1] with shape (32, 32, 3); labels are int32. Keyword
    arguments are those of :func:`load_cifar100_arrays`.
    """
    images, fine, coarse = load_cifar100_arrays(split, source, **kwargs)
    ds = tf.data.Dataset.from_tensor_slices((images, {"fine": fine, "coarse": coarse}))
    return ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)


def _to_float(image, labels):
    return tf.cast(image, tf.float32) / 255.0, labels


# ------------------------------------------------------------- augmentation
def augmentation(seed: int | None = None) -> keras.Sequential:
    """The report's training-time augmentation, as Keras 3 preprocessing layers.

    Rotation up to 60 degrees, shifts and zoom up to 30 %, shear 0.3, reflected borders.
    (The report used Keras 2's ``ImageDataGenerator``, whose ``shear_range`` is an angle;
    Keras 3's ``RandomShear`` takes a shear factor -- 0.3 here, a stronger shear.)
    """
    return keras.Sequential(
        [
            keras.layers.RandomRotation(60 / 360, fill_mode="reflect", seed=seed),
            keras.layers.RandomTranslation(0.3, 0.3, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom(0.3, 0.3, fill_mode="reflect", seed=seed),
            keras.layers.RandomShear(x_factor=0.3, y_factor=0.0, fill_mode="reflect", seed=seed),
        ],
        name="augmentation",
    )
