"""Model builders: one short function per architecture diagram.

CIFAR-100 (the 2019 report): six ways of wiring a fine-label (100 classes) task and a
coarse-label (20 classes) task. Every model is built from three small pieces:

* :func:`conv_trunk` -- the convolutional feature extractor (one per task, or shared);
* :func:`dense_block` -- Dense -> Dropout(0.25) -> BatchNormalization;
* a head made of two halves, ``fc_layers_1`` (1024 -> 512) and ``fc_layers_2``
  (256 -> 128 -> logits), so that the *reuse* models can concatenate the other task's
  logits between the halves.

CelebA (the 2023 report): one ResNet18 backbone from keras-hub shared by one linear head
per face attribute (:func:`build_celeba`).

All models output **logits** in a dict keyed by task name, so losses are given as dicts
with ``from_logits=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

NAMES = (
    "independent",
    "shared_conv",
    "reuse_coarse",
    "reuse_fine",
    "shared_reuse_coarse",
    "shared_reuse_fine",
)
"""The six CIFAR-100 architectures, in the order of the report."""

DESCRIPTIONS = {
    "independent": "two separate networks, nothing shared (the control)",
    "shared_conv": "one convolutional trunk shared by both heads (hard parameter sharing)",
    "reuse_coarse": "separate trunks; the coarse logits are fed into the fine head",
    "reuse_fine": "separate trunks; the fine logits are fed into the coarse head",
    "shared_reuse_coarse": "shared trunk, and the coarse logits feed the fine head",
    "shared_reuse_fine": "shared trunk, and the fine logits feed the coarse head",
}

DROPOUT_RATE = 0.25


# --------------------------------------------------------------------------- pieces
def conv_trunk(x: keras.KerasTensor, prefix: str) -> keras.KerasTensor:
    """Convolutional feature extractor: 32x32x3 -> 8,192 features (297,856 weights)."""
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name=f"{prefix}_conv0")(x)
    for block, filters in enumerate((64, 128), start=1):
        for i in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"{prefix}_conv{block}_{i}"
            )(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool{block}")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn{block}")(x)
    return layers.Flatten(name=f"{prefix}_flatten")(x)


def dense_block(x: keras.KerasTensor, units: int, name: str) -> keras.KerasTensor:
    """Dense(units, ReLU) -> Dropout(0.25) -> BatchNormalization."""
    x = layers.Dense(units, activation="relu", name=f"{name}_dense")(x)
    x = layers.Dropout(DROPOUT_RATE, name=f"{name}_dropout")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def fc_layers_1(x: keras.KerasTensor, task: str) -> keras.KerasTensor:
    """First half of a task head: dense blocks of 1024 and 512 units."""
    x = dense_block(x, 1024, f"{task}_fc1024")
    return dense_block(x, 512, f"{task}_fc512")


def fc_layers_2(x: keras.KerasTensor, task: str, num_classes: int) -> keras.KerasTensor:
    """Second half of a task head: dense blocks of 256 and 128 units, then the logits.

    The logits layer is named after the task, so it is the model output of that name.
    """
    x = dense_block(x, 256, f"{task}_fc256")
    x = dense_block(x, 128, f"{task}_fc128")
    # float32 logits keep the losses stable under a mixed-precision policy.
    return layers.Dense(num_classes, dtype="float32", name=task)(x)


def _head(x: keras.KerasTensor, task: str, num_classes: int, reused=None) -> keras.KerasTensor:
    """A full head; ``reused`` logits of the other task are concatenated halfway."""
    x = fc_layers_1(x, task)
    if reused is not None:
        x = layers.Concatenate(name=f"{task}_concat_reused")([x, reused])
    return fc_layers_2(x, task, num_classes)


# ----------------------------------------------------------------- CIFAR-100 models
def build_cifar100(
    name: str,
    num_fine: int = 100,
    num_coarse: int = 20,
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """Build one of the six CIFAR-100 architectures (see :data:`NAMES`).

    Returns a functional model whose outputs are ``{"fine": logits, "coarse": logits}``.
    """
    if name not in NAMES:
        raise ValueError(
            f"Unknown architecture {name!r}. Choose one of: {', '.join(NAMES)}."
        )
    shared = name.startswith("shared")
    inputs = keras.Input(shape=input_shape, name="image")
    if shared:
        fine_features = coarse_features = conv_trunk(inputs, "shared")
    else:
        fine_features = conv_trunk(inputs, "fine")
        coarse_features = conv_trunk(inputs, "coarse")

    if name.endswith("reuse_coarse"):
        # The coarse task is computed first; its logits inform the fine head.
        coarse = _head(coarse_features, "coarse", num_coarse)
        fine = _head(fine_features, "fine", num_fine, reused=coarse)
    elif name.endswith("reuse_fine"):
        fine = _head(fine_features, "fine", num_fine)
        coarse = _head(coarse_features, "coarse", num_coarse, reused=fine)
    else:
        fine = _head(fine_features, "fine", num_fine)
        coarse = _head(coarse_features, "coarse", num_coarse)
    return keras.Model(inputs, {"fine": fine, "coarse": coarse}, name=name)


def parameter_table(names=NAMES, **kwargs):
    """Parameter counts of the CIFAR-100 architectures, and what sharing saves.

    Returns a pandas DataFrame indexed by architecture: total weights (BatchNorm moving
    statistics included, as ``count_params`` reports), the number of convolutional
    trunks, and the difference from the independent networks.
    """
    import pandas as pd

    rows = []
    for name in names:
        model = build_cifar100(name, **kwargs)
        trunks = 1 if name.startswith("shared") else 2
        rows.append({"architecture": name, "parameters": model.count_params(), "trunks": trunks})
    table = pd.DataFrame(rows).set_index("architecture")
    if "independent" in table.index:
        reference = table.loc["independent", "parameters"]
    else:
        reference = build_cifar100("independent", **kwargs).count_params()
    table["vs independent"] = table["parameters"] - reference
    table["description"] = [DESCRIPTIONS[n] for n in table.index]
    return table


# -------------------------------------------------------------------- CelebA model
RESNET18_PRESET = "resnet_18_imagenet"

# keras-hub's ResNet presets expect ImageNet-normalised RGB input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet18_backbone(weights: str | None = "imagenet"):
    """A keras-hub ResNet18 backbone, pretrained (``"imagenet"``) or random (``None``)."""
    import keras_hub

    if weights is None:
        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[2, 2, 2, 2],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            use_pre_activation=False,
            image_shape=(None, None, 3),
            name="resnet18",
        )
    if weights != "imagenet":
        raise ValueError(
            f"weights={weights!r} is not supported: use 'imagenet' (pretrained, needs the "
            "internet the first time) or None (random initialisation)."
        )
    try:
        return keras_hub.models.ResNetBackbone.from_preset(RESNET18_PRESET)
    except Exception as err:  # network errors come in many types across versions
        raise RuntimeError(
            f"Could not load the pretrained keras-hub preset {RESNET18_PRESET!r} "
            f"({type(err).__name__}: {err}). The weights are downloaded from Kaggle "
            "the first time, so this needs the internet (Colab has it). Either run where "
            "the download works (it is then cached under ~/.cache/kagglehub), or pass "
            "weights=None to train the same ResNet18 from random initialisation -- and "
            "say so next to any result."
        ) from err


def build_celeba(
    attributes: Sequence[str],
    weights: str | None = "imagenet",
    image_size: int | tuple[int, int] = 224,
) -> keras.Model:
    """One ResNet18 shared by one linear head per attribute; outputs are logits.

    The model takes RGB images with values 0..255 (uint8, as :func:`mtlkit.celeba.load_celeba`
    gives them, or float) of any size, and prepares them itself: ``Resizing`` to
    ``image_size`` (bilinear: meant for enlarging the 178x178 crops to 224; to shrink, ask
    the loader for the small size, which antialiases), ``Rescaling`` to [0, 1] and the
    ImageNet normalisation the pretrained backbone expects. Done in the model, this work
    runs on the accelerator, and a saved model takes raw face crops.
    ``model.output_names`` are the attributes.
    """
    from mtlkit.celeba import ATTRIBUTES  # the 40 official names

    attributes = list(attributes)
    if not attributes:
        raise ValueError("attributes is empty: pass at least one CelebA attribute name.")
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"Unknown CelebA attribute(s) {unknown}. Valid names are the 40 column "
            f"headers of list_attr_celeba.txt, e.g. {', '.join(ATTRIBUTES[:4])}, ..."
        )
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"attributes contains duplicates: {attributes}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size

    backbone = resnet18_backbone(weights)
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = layers.Resizing(height, width, name="resize")(inputs)
    x = layers.Rescaling(1 / 255, name="to_unit_range")(x)
    x = layers.Normalization(
        mean=IMAGENET_MEAN,
        variance=[s**2 for s in IMAGENET_STD],
        name="imagenet_normalization",
    )(x)
    features = backbone(x)
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = {a: layers.Dense(1, dtype="float32", name=a)(pooled) for a in attributes}
    return keras.Model(inputs, outputs, name="celeba_resnet18")
