"""A synthetic stand-in for CelebA that behaves like the real attributes, for offline runs.

It is only ever used when asked for (``load_celeba(..., source="synthetic")``); its numbers
are not CelebA results. What it keeps from the real data is what notebooks 03 and 04 teach:

* **Real imbalance.** Each attribute is positive on exactly ``round(rate * n)`` images at
  its CelebA train-split rate (:data:`~mtlkit.data.celeba_labels.TRAIN_POSITIVE_RATES`): 42 %
  Male, 5 % Wearing_Hat, 78 % Young.
* **Attributes that are easy or hard to see.** Every attribute has a visual cue (a
  coloured patch in a cell of its own on a blurred "face"), but the cue is not on every
  positive image, and some negative images carry it too (:data:`CUE_RATES`). On the
  balanced attributes the cue is reliable, so a network clearly beats the majority guess;
  on Wearing_Necklace it is so unreliable that the best possible classifier is barely
  better than always answering "no" -- as on the real images, where a small network
  trained for minutes only learns the easy attributes. Balanced accuracy and F1 expose the
  difference that plain accuracy hides (:func:`cue_ceiling` gives the best scores that the
  cue allows).

Attributes are independent of each other here; on the real data they are not (Male and
Wearing_Lipstick rarely go together).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from mtlkit.data.celeba_labels import (
    ATTRIBUTES,
    EIGHT,
    SPLITS,
    TRAIN_POSITIVE_RATES,
    check_attributes,
    check_split,
)

SYNTHETIC_SIZES = {"train": 3_000, "validation": 650, "test": 650}
"""Default number of synthetic images per split."""

# fmt: off
CUE_RATES = {
    # attribute: (share of positive images showing the cue, share of negative images showing it)
    "Male": (0.92, 0.06),              # easy and balanced
    "Wearing_Lipstick": (0.88, 0.10),
    "Smiling": (0.80, 0.20),
    "Young": (0.95, 0.45),             # the cue is "looks young"; most old faces lack it
    "Eyeglasses": (0.70, 0.01),        # rare, but clear when it is there
    "Wearing_Hat": (0.55, 0.01),
    "Wearing_Earrings": (0.35, 0.06),  # often hidden by hair
    "Wearing_Necklace": (0.20, 0.02),  # mostly out of the picture
}
"""``(p, q)`` per attribute: the cue shows on exactly ``round(p * positives)`` positive and
``round(q * negatives)`` negative images of a split. The other 32 attributes use
:data:`DEFAULT_CUE_RATES`."""
# fmt: on

DEFAULT_CUE_RATES = (0.75, 0.05)


def cue_rates(attribute: str) -> tuple[float, float]:
    """``(p, q)`` of an attribute: shares of positive and negative images showing its cue."""
    return CUE_RATES.get(attribute, DEFAULT_CUE_RATES)


def cue_ceiling(attribute: str, rate: float | None = None) -> dict[str, float]:
    """The best scores any classifier can reach on an attribute of the synthetic set.

    Seeing the cue perfectly, the best rule predicts "present" when the cue is there if
    that makes more positives than negatives (``rate * p > (1 - rate) * q``), and the
    majority class everywhere else. Returns its ``accuracy`` and ``balanced_accuracy``
    beside the ``majority_baseline``, for a positive ``rate`` (default: CelebA's).
    """
    rate = TRAIN_POSITIVE_RATES[attribute] if rate is None else rate
    p, q = cue_rates(attribute)
    majority = max(rate, 1 - rate)
    positive_with_cue = rate * p > (1 - rate) * q
    positive_without_cue = rate * (1 - p) > (1 - rate) * (1 - q)
    tpr = p * positive_with_cue + (1 - p) * positive_without_cue
    fpr = q * positive_with_cue + (1 - q) * positive_without_cue
    return {
        "majority_baseline": majority,
        "accuracy": rate * tpr + (1 - rate) * (1 - fpr),
        "balanced_accuracy": (tpr + 1 - fpr) / 2,
    }


def synthetic_labels(
    split: str, attributes: Sequence[str] = EIGHT, n: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """0/1 labels for the synthetic set: each attribute independently, with exactly
    ``round(rate * n)`` positives at its real CelebA train-split rate, in shuffled order.

    An attribute's column depends only on ``seed``, the split, ``n`` and its name, not on
    which other attributes are asked for."""
    attributes = check_attributes(attributes)
    n = SYNTHETIC_SIZES[check_split(split)] if n is None else n
    columns = {}
    for a in attributes:
        rng = np.random.default_rng([seed, SPLITS.index(split), ATTRIBUTES.index(a)])
        column = np.zeros(n, np.int8)
        column[: round(TRAIN_POSITIVE_RATES[a] * n)] = 1
        columns[a] = rng.permutation(column)
    index = pd.Index([f"synthetic_{split}_{i:06d}.png" for i in range(n)], name="image")
    return pd.DataFrame(columns, index=index)


def cue_shown(labels: pd.DataFrame, split: str, seed: int = 0) -> pd.DataFrame:
    """Which images show each attribute's cue (bool, same shape as the 0/1 ``labels``).

    Exactly ``round(p * positives)`` positive and ``round(q * negatives)`` negative images
    per attribute (:func:`cue_rates`), chosen at random from ``seed``, the split and the
    attribute's name.
    """
    shown = {}
    for a in labels.columns:
        rng = np.random.default_rng([seed, SPLITS.index(split), ATTRIBUTES.index(a), 7])
        column = np.zeros(len(labels), bool)
        for value, share in zip((1, 0), cue_rates(a)):
            members = np.flatnonzero(labels[a].to_numpy() == value)
            column[rng.permutation(members)[: round(share * len(members))]] = True
        shown[a] = column
    return pd.DataFrame(shown, index=labels.index)


def _cue_layers(attributes: Sequence[str], image_size: int) -> np.ndarray:
    """One coloured square per attribute, at the attribute's own cell of a grid.

    Returns float32 [A, H, W, 3]; a shown cue adds its layer to the image. Colours are
    fixed per name (its index among the 40), so a cue looks the same whatever subset of
    attributes is requested.
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


def _face(image_size: int) -> np.ndarray:
    """A blurred, skin-coloured oval on a darker background: float32 [H, W, 3]."""
    yy, xx = np.mgrid[:image_size, :image_size] / image_size - 0.5
    face = np.exp(-((yy / 0.42) ** 2 + (xx / 0.32) ** 2) * 3)[..., None].astype(np.float32)
    return face * np.array([0.45, 0.3, 0.2], np.float32) + 0.25


def renderer(shown: pd.DataFrame, split: str, image_size: int, seed: int = 0):
    """The function ``(index, labels) -> (uint8 image, labels)`` that draws image ``index``.

    Its shown cues (:func:`cue_shown`), each at a random strength, jittered together by a
    few pixels, on the face with Gaussian pixel noise; the same index always gives the
    same image.
    """
    attributes = list(shown.columns)
    cues = tf.constant(_cue_layers(attributes, image_size))
    face = tf.constant(_face(image_size))
    on = tf.constant(shown.to_numpy(np.float32))
    jitter = max(1, image_size // 32)
    split_id = SPLITS.index(split)

    def render(index, y):
        keys = tf.stack([tf.constant(seed, tf.int64), split_id * 10**7 + index])
        k1, k2, k3 = tf.unstack(tf.random.experimental.stateless_split(keys, 3))
        strength = tf.random.stateless_uniform([len(attributes)], k1, 0.4, 0.9) * on[index]
        shift = tf.random.stateless_uniform([2], k2, -jitter, jitter + 1, tf.int32)
        marks = tf.roll(tf.tensordot(strength, cues, axes=1), shift, axis=[0, 1])
        noise = tf.random.stateless_normal([image_size, image_size, 3], k3, stddev=0.15)
        image = tf.clip_by_value(face + marks + noise, 0.0, 1.0)
        return tf.saturate_cast(tf.round(image * 255.0), tf.uint8), y  # like the real loaders

    return render
