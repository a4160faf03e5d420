"""Model builders: one short function per architecture diagram.

CIFAR-100 (the 2019 report): six ways of wiring a fine-label (100 classes) task and a
coarse-label (20 classes) task. Each model is drawn in the report as five blocks,
``input_image -> conv_layers -> fc_layers_1 -> concat -> fc_layers_2 -> label``, and is
built here from the same blocks, each a named functional sub-model (a ``keras.Model``
used as a layer):

* :func:`conv_layers` -- the convolutional trunk (``conv_layers`` when both tasks share
  it, ``fine_conv_layers`` and ``coarse_conv_layers`` when each task has its own);
* :func:`fc_layers_1` (1024 -> 512) and :func:`fc_layers_2` (256 -> 128), the two halves
  of a task head (``fine_fc_layers_1``, ...), with the logits layer, named after the
  task, after the second half. In the *reuse* models a ``<task>_concat_reused`` layer
  joins the other task's logits to the first half's output, and the second half reads
  that concatenation.

Inside the blocks are two tensor-level pieces, :func:`conv_trunk` and :func:`dense_block`
(Dense -> Dropout(0.25) -> BatchNormalization). ``keras.utils.plot_model(model)`` draws the
blocks; ``expand_nested=True`` opens them; ``model.get_layer("conv_layers").summary()``
lists one block's layers.

CelebA (the 2023 report): one ResNet18 backbone from keras-hub shared by one linear head
per face attribute (:func:`build_celeba`).

All models output **logits** in a dict keyed by task name, so losses are given as dicts
with ``from_logits=True``.
"""

from __future__ import annotations

import functools
import numbers
import os
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


# ------------------------------------------------------------ tensor-level pieces
def conv_trunk(x: keras.KerasTensor, prefix: str, width: float = 1.0) -> keras.KerasTensor:
    """Convolutional feature extractor: 32x32x3 -> 8,192 features (297,856 weights).

    ``width`` scales every layer's filters (64, 64, 64, 128, 128 in the report): 0.5 gives
    half of each, 4,096 features and about a quarter of the multiply-adds.
    """

    def filters(n: int) -> int:
        return max(1, round(n * width))

    x = layers.Conv2D(filters(64), 3, padding="same", activation="relu", name=f"{prefix}_conv0")(x)
    for block, n in enumerate((64, 128), start=1):
        for i in (1, 2):
            x = layers.Conv2D(
                filters(n), 3, padding="same", activation="relu", name=f"{prefix}_conv{block}_{i}"
            )(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool{block}")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn{block}")(x)
    return layers.Flatten(name=f"{prefix}_flatten")(x)


def dense_block(x: keras.KerasTensor, units: int, name: str) -> keras.KerasTensor:
    """Dense(units, ReLU) -> Dropout(0.25) -> BatchNormalization."""
    x = layers.Dense(units, activation="relu", name=f"{name}_dense")(x)
    x = layers.Dropout(DROPOUT_RATE, name=f"{name}_dropout")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


# ----------------------------------------------------------------- named blocks
def conv_layers(
    input_shape: tuple[int, ...] = (32, 32, 3), prefix: str = "shared", width: float = 1.0
) -> keras.Model:
    """The convolutional trunk as one block: ``conv_layers`` for ``prefix="shared"``, else
    ``<prefix>_conv_layers``. Its layers keep the prefix (``shared_conv0``, ``fine_bn1``...).
    ``width`` scales its filters (:func:`conv_trunk`).
    """
    name = "conv_layers" if prefix == "shared" else f"{prefix}_conv_layers"
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    return keras.Model(inputs, conv_trunk(inputs, prefix, width), name=name)


def fc_layers_1(features: int, task: str) -> keras.Model:
    """First half of a task head, block ``<task>_fc_layers_1``: dense blocks of 1024, 512.

    ``features`` is the width of its input (8,192 from :func:`conv_layers`).
    """
    inputs = keras.Input(shape=(features,), name=f"{task}_fc_layers_1_input")
    x = dense_block(inputs, 1024, f"{task}_fc1024")
    return keras.Model(inputs, dense_block(x, 512, f"{task}_fc512"), name=f"{task}_fc_layers_1")


def fc_layers_2(features: int, task: str) -> keras.Model:
    """Second half of a task head, block ``<task>_fc_layers_2``: dense blocks of 256, 128.

    ``features`` is the width of its input: 512, or 512 plus the other task's logits in a
    reuse model. The logits layer comes after this block (see :func:`build_cifar100`).
    """
    inputs = keras.Input(shape=(features,), name=f"{task}_fc_layers_2_input")
    x = dense_block(inputs, 256, f"{task}_fc256")
    return keras.Model(inputs, dense_block(x, 128, f"{task}_fc128"), name=f"{task}_fc_layers_2")


def _head(features, task: str, num_classes: int, reused=None) -> keras.KerasTensor:
    """``fc_layers_1 -> [concat reused logits] -> fc_layers_2 -> logits`` of one task.

    The logits layer is named after the task, so it is the model output of that name; it
    is float32 so that the losses stay stable under a mixed-precision policy.
    """
    x = fc_layers_1(features.shape[-1], task)(features)
    if reused is not None:
        x = layers.Concatenate(name=f"{task}_concat_reused")([x, reused])
    x = fc_layers_2(x.shape[-1], task)(x)
    return layers.Dense(num_classes, dtype="float32", name=task)(x)


# ----------------------------------------------------------------- CIFAR-100 models
def build_cifar100(
    name: str,
    num_fine: int = 100,
    num_coarse: int = 20,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    trunk_width: float = 1.0,
) -> keras.Model:
    """Build one of the six CIFAR-100 architectures (see :data:`NAMES`).

    Returns a functional model made of the report's blocks (see the module docstring)
    whose outputs are ``{"fine": logits, "coarse": logits}``. ``trunk_width`` scales the
    convolutional trunks' filters (1: the report's; the quick profile's 0.5 costs about a
    quarter of the computation); the heads keep the report's sizes.
    """
    if name not in NAMES:
        raise ValueError(f"Unknown architecture {name!r}. Choose one of: {', '.join(NAMES)}.")
    check_width(trunk_width)
    inputs = keras.Input(shape=input_shape, name="input_image")
    if name.startswith("shared"):
        fine_features = coarse_features = conv_layers(input_shape, "shared", trunk_width)(inputs)
    else:
        fine_features = conv_layers(input_shape, "fine", trunk_width)(inputs)
        coarse_features = conv_layers(input_shape, "coarse", trunk_width)(inputs)

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


def check_width(width) -> None:
    """Refuse a trunk width that is not a number in (0, 4]."""
    number = isinstance(width, numbers.Real) and not isinstance(width, bool)
    if not number or not 0 < width <= 4:
        raise ValueError(
            f"trunk_width={width!r}: use a number in (0, 4] (1 is the report's trunk, 0.5 half "
            "its filters)."
        )


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
"""The keras-hub preset loaded for ``weights="imagenet"`` unless ``MTLKIT_RESNET18_PRESET``
names another (a preset name, or a folder written by ``backbone.save_to_preset``)."""

# keras-hub's ResNet presets expect ImageNet-normalised RGB input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet18_preset() -> str:
    """The ResNet18 preset to load: ``MTLKIT_RESNET18_PRESET`` if set, else the default."""
    return os.path.expanduser(os.environ.get("MTLKIT_RESNET18_PRESET") or RESNET18_PRESET)


def resnet18_backbone(weights: str | None = "imagenet", image_shape=(None, None, 3)):
    """A keras-hub ResNet18 backbone, pretrained (``"imagenet"``) or random (``None``).

    ``image_shape`` (random weights only) fixes the input size, e.g. to count FLOPs.

    The pretrained one comes from :func:`resnet18_preset`: Kaggle's ``resnet_18_imagenet``
    by default, or a local preset folder named by ``MTLKIT_RESNET18_PRESET``.
    """
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
            image_shape=image_shape,
            name="resnet18",
        )
    if weights != "imagenet":
        raise ValueError(
            f"weights={weights!r} is not supported: use 'imagenet' (pretrained, from the "
            "preset named by MTLKIT_RESNET18_PRESET) or None (random initialisation)."
        )
    preset = resnet18_preset()
    try:
        return keras_hub.models.ResNetBackbone.from_preset(preset)
    except Exception as err:  # network errors come in many types across versions
        source = "MTLKIT_RESNET18_PRESET" if os.environ.get("MTLKIT_RESNET18_PRESET") else "default"
        raise RuntimeError(
            f"Could not load the pretrained ResNet18 preset {preset!r} ({source}; "
            f"{type(err).__name__}: {err}). A preset name such as {RESNET18_PRESET!r} is "
            "downloaded from Kaggle the first time, which needs the internet (Colab has it). "
            "Either (1) run where Kaggle is reachable (the download is then cached under "
            "~/.cache/kagglehub); or (2) where it is reachable, load the backbone and call "
            "backbone.save_to_preset(FOLDER), copy FOLDER here and set "
            "MTLKIT_RESNET18_PRESET=FOLDER; or (3) pass weights=None to train the same "
            "ResNet18 from random initialisation -- and say so beside any result."
        ) from err


def build_celeba(
    attributes: Sequence[str],
    weights: str | None = "imagenet",
    image_size: int | tuple[int, int] = 224,
) -> keras.Model:
    """One ResNet18 shared by one linear head per attribute; outputs are logits.

    The model takes RGB images with values 0..255 (uint8, as :func:`mtlkit.data.celeba.load_celeba`
    gives them, or float) of any size, and prepares them itself: ``Resizing`` to
    ``image_size`` (bilinear: meant for enlarging the 178x178 crops to 224; to shrink, ask
    the loader for the small size, which antialiases), ``Rescaling`` to [0, 1] and the
    ImageNet normalisation the pretrained backbone expects. Done in the model, this work
    runs on the accelerator, and a saved model takes raw face crops.
    ``weights="imagenet"`` loads the backbone from :func:`resnet18_preset`.
    ``model.output_names`` are the attributes.
    """
    from mtlkit.data.celeba import check_attributes

    attributes = check_attributes(attributes)
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


@functools.lru_cache(maxsize=None)
def celeba_forward_gflop(image_size: int, num_attributes: int) -> float:
    """The CelebA model's forward cost per image at ``image_size`` px, in GFLOP.

    The model takes images of any size, so its backbone's layers have no fixed output size
    to count from: this counts a random-weight backbone built for ``image_size`` instead
    (the pretrained one has the same layers), plus the attribute heads.
    """
    from mtlkit.work import forward_gflop

    backbone = resnet18_backbone(None, image_shape=(image_size, image_size, 3))
    return forward_gflop(backbone) + 2 * 512 * num_attributes / 1e9
