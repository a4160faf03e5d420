"""What each study runs, per profile: frozen settings objects, and the run tags they hash.

A settings object says everything a run depends on (data, sizes, epochs, optimizer, seeds,
devices); its ``tag``, hashed from every field that changes results, names the run folder,
so that a run made under other settings is never read back by mistake:

* CIFAR-100: :class:`CifarSettings`, made by :func:`cifar100_settings` from
  :data:`CIFAR_PROFILES`;
* CelebA: :class:`CelebaSettings`, made by :func:`celeba_settings` from
  :data:`CELEBA_PROFILES` (per kind of study: one run, a comparison, the remedies, and the
  published 40-attribute benchmark :data:`CELEBA40`).

Every setting is checked where it is made, with an error naming the fix; the runners
(:mod:`mtlkit.studies.runners`) train under them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os

import keras

from mtlkit import config, data, training
from mtlkit.data import celeba
from mtlkit.models import architectures
from mtlkit.studies import devices


@dataclasses.dataclass(frozen=True)
class CifarSettings:
    """Everything one CIFAR-100 run depends on (the report's protocol by default)."""

    profile: str = "full"
    source: str = "tfds"
    data_dir: str | None = None
    epochs: int = 100
    batch_size: int = 100
    learning_rate: float = 5e-4
    loss_weights: tuple = (("fine", 2.0), ("coarse", 1.0))
    augment: bool = True
    train_limit: int | None = None
    eval_limit: int | None = None
    synthetic_sizes: tuple | None = None  # (train, test) pool sizes of the stand-in
    jit_compile: bool | str = False  # XLA: True, False or "auto" (XLA on a GPU)
    mixed_precision: bool = False  # the mixed_float16 policy (float16 compute, float32 weights)
    seeds: tuple = (0, 1, 2)  # the runs a notebook makes (not part of a run's tag)
    recalibrate_bn: int = 0  # > 0: BatchNorm statistics recomputed on that many training
    # images before each evaluation (the quick profile's few steps cannot settle them)
    checkpoints: bool = True  # False: no per-epoch backup (quick runs; not part of the tag)
    test_each_epoch: bool = True  # False: the test split after the last epoch only (quick;
    # NaN in the history before it; not part of the tag: it changes no result)
    trunk_width: float = 1.0  # the convolutional trunks' filters, times the report's (quick:
    # 0.35, about an eighth of the convolutions' computation; the heads keep the report's sizes)
    devices: int = 1  # data-parallel over that many devices; batch_size is the global batch
    # (mtlkit.studies.devices; the full profile takes every visible device)

    @property
    def data_name(self) -> str:
        """Which data: CIFAR-100 from TensorFlow Datasets or a local copy, or the stand-in."""
        if self.source == "synthetic":
            return "synthetic CIFAR-100 stand-in (not CIFAR-100)"
        if self.source == "folder":
            return f"CIFAR-100 (local copy {self.data_dir})"
        return "CIFAR-100 (TensorFlow Datasets)"

    @property
    def data_label(self) -> str:
        """A label for tables and figures: which data and profile produced them."""
        what = self.data_name
        size = f", {self.train_limit} training images" if self.train_limit else ""
        options = training.speed_options_label(self.mixed_precision, self.jit_compile)
        bn = ", BatchNorm statistics recomputed before evaluation" if self.recalibrate_bn else ""
        narrow = self.trunk_width != 1
        width = f", trunks at {self.trunk_width:g}x the report's width" if narrow else ""
        on = devices.describe(self.devices)
        return f"{what}, {self.profile} profile{size}, {self.epochs} epochs{width}{bn}{options}{on}"

    @property
    def tag(self) -> str:
        """A folder name that changes whenever a setting that changes results does."""
        return _tag("cifar100", self)


UNTAGGED = ("seeds", "checkpoints", "test_each_epoch")
"""Settings that do not change a run's results, so not part of its folder's name."""


OPTIONAL = {
    "celeba": {
        "single_task": None,
        "recalibrate_bn": 0,
        "weight_decay": 0.0,
        "devices": 1,
        "learning_rate_decay": (),
    },
    "cifar100": {"trunk_width": 1.0, "devices": 1},
}
"""Settings hashed only when they differ from these values, so that the run folders made
before they existed keep their names."""


RETIRED = {"cifar100": {"builders": 2}}
"""Fields removed from a study's settings, hashed with their last value so that the run
folders made before keep their names (``builders=2``: models made of nested blocks)."""


def _tag(study: str, settings) -> str:
    """``<study>-<profile>-<source>-<hash of every field that changes results>``; the Keras
    backend is one of them (initial weights and random streams differ between backends)."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k not in UNTAGGED}
    optional = OPTIONAL[study]
    fields = {k: v for k, v in fields.items() if k not in optional or v != optional[k]}
    fields.update(RETIRED.get(study, {}))
    if keras.backend.backend() != "tensorflow":  # (TensorFlow's tags are as they always were)
        fields["backend"] = keras.backend.backend()
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode())
    return f"{study}-{settings.profile}-{settings.source}-{digest.hexdigest()[:8]}"


CIFAR_PROFILES = {
    "quick": dict(epochs=2, train_limit=300, eval_limit=200, synthetic_sizes=(1000, 100),
                  seeds=(0, 1), recalibrate_bn=50, checkpoints=False, test_each_epoch=False,
                  trunk_width=0.35),
    "standard": dict(epochs=4, seeds=(0, 1, 2)),
    "full": dict(epochs=100, seeds=(0, 1, 2), devices="all"),
}  # fmt: skip
"""What each profile changes in the report's protocol (:class:`CifarSettings`' defaults)."""


def cifar100_settings(profile: str, source: str | None = None, **overrides) -> CifarSettings:
    """The settings of a profile (see :data:`CIFAR_PROFILES` and :mod:`mtlkit.config`).

    ``source=None`` picks the profile's data: a local copy when ``MTLKIT_CIFAR100_DIR`` names
    one, else TensorFlow Datasets (standard, full) or the synthetic stand-in (quick). Any
    field of :class:`CifarSettings` can be overridden; ``None`` values are ignored.
    """
    config.check_profile(profile)
    local = os.environ.get("MTLKIT_CIFAR100_DIR")
    if source is None:
        source = "folder" if local else ("synthetic" if profile == "quick" else "tfds")
    base = dict(profile=profile, source=source, data_dir=overrides.pop("data_dir", local))
    base.update(CIFAR_PROFILES[profile])
    base.update({k: v for k, v in overrides.items() if v is not None})
    _check_epochs(base["epochs"])
    _check_counts(base)
    batch = base.get("batch_size", CifarSettings.batch_size)
    base["devices"] = devices.resolve(base.get("devices", 1), batch)
    settings = CifarSettings(**base)
    architectures.check_width(settings.trunk_width)
    _check_optimizer(settings.learning_rate, 0.0)  # (no weight decay in the CIFAR-100 runs)
    return settings


def _check_optimizer(learning_rate, weight_decay) -> None:
    """Refuse a learning rate that is not a positive number, or a weight decay below 0."""
    for name, value, positive in (("learning_rate", learning_rate, True),
                                  ("weight_decay", weight_decay, False)):  # fmt: skip
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and (value > 0 or (value == 0 and not positive))):
            least = "> 0" if positive else ">= 0"
            raise ValueError(f"{name}={value!r}: use a finite number {least}.")


def _check_epochs(epochs) -> None:
    if not _whole(epochs, 1):
        raise ValueError(f"epochs={epochs!r}: use a positive whole number.")


def _whole(value, least: int) -> bool:
    """Whether ``value`` is an ``int`` (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_counts(base: dict) -> None:
    """Refuse sizes and counts that would fail (or silently misbehave) later, in a run:
    ``batch_size``, ``image_size`` and the limits must be positive whole numbers (a limit may
    be None: everything), ``recalibrate_bn`` a whole number >= 0 (0: off), ``seeds`` a
    non-empty tuple or list of whole numbers."""
    for name, least in (("batch_size", 1), ("image_size", 1), ("train_limit", 1),
                        ("eval_limit", 1), ("recalibrate_bn", 0)):  # fmt: skip
        value = base.get(name)
        if value is not None and not _whole(value, least):
            kind = "a positive whole number" if least else "a whole number >= 0 (0: off)"
            empty = " or None (all of the split)" if name.endswith("_limit") else ""
            raise ValueError(f"{name}={value!r}: use {kind}{empty}.")
    seeds = base.get("seeds", ())
    listed = isinstance(seeds, (tuple, list, range)) and len(seeds) > 0
    if not (listed and all(isinstance(s, numbers.Integral) and s >= 0 for s in seeds)):
        raise ValueError(f"seeds={seeds!r}: use a non-empty tuple of whole numbers >= 0, "
                         "e.g. (0,) or (0, 1, 2).")  # fmt: skip
    base["seeds"] = tuple(int(s) for s in seeds)


@dataclasses.dataclass(frozen=True)
class CelebaSettings:
    """Everything one CelebA run depends on (the 2023 report's protocol by default)."""

    profile: str = "full"
    source: str = "tfds"
    data_dir: str | None = None
    attributes: tuple = data.EIGHT
    image_size: int = 224  # the size the model sees (the loader shrinks, the model enlarges)
    weights: str | None = "imagenet"  # or None: random initialisation
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # Adam's decoupled weight decay (0: none, the report's Adam)
    learning_rate_decay: tuple = ()  # (factor, every): the rate times factor from the
    # every-th epoch on, again every `every` epochs (Sener & Koltun's (0.85, 10); (): constant)
    train_limit: int | None = None
    eval_limit: int | None = None
    hide_labels: tuple = ()  # (("Wearing_Necklace", 0.9),): hide that share of its labels
    jit_compile: bool | str = False
    mixed_precision: bool = False
    seeds: tuple = (0, 1, 2)  # the runs a notebook makes (not part of a run's tag)
    checkpoints: bool = True  # False (quick; not in the tag): no checkpoint, only results.json
    # at the end (the custom loop's arms; fit's keeps its final weights): a killed run restarts
    single_task: str | None = None  # an attribute: train its loss alone (a single-task baseline)
    recalibrate_bn: int = 0  # > 0: BatchNorm statistics recomputed on a training batch (at
    # most that many images) before each evaluation, as in the CIFAR-100 quick profile
    devices: int = 1  # data-parallel over that many devices; batch_size is the global batch

    @property
    def data_label(self) -> str:
        """A label for tables and figures: which data, profile and model produced them."""
        what = celeba.describe_source(self.source, self.data_dir)
        if self.source == "synthetic":
            what += " (not CelebA)"
        size = f", {self.train_limit:,} training images" if self.train_limit else ""
        init = "ImageNet-pretrained" if self.weights else "random-init"
        hidden = "".join(f", {a} labels {share:.0%} hidden" for a, share in self.hide_labels)
        options = training.speed_options_label(self.mixed_precision, self.jit_compile)
        alone = f", trained on {self.single_task} alone" if self.single_task else ""
        if self.learning_rate != CelebaSettings.learning_rate or self.weight_decay:
            alone += f", Adam {self.learning_rate:g}" + (
                f" with weight decay {self.weight_decay:g}" if self.weight_decay else ""
            )
        if self.learning_rate_decay:
            factor, every = self.learning_rate_decay
            alone += f", learning rate x{factor:g} every {every} epochs"
        alone += (
            ", BatchNorm statistics recomputed before evaluation" if self.recalibrate_bn else ""
        )
        options += devices.describe(self.devices)
        return (f"{what}, {self.profile} profile{size}, {init} ResNet18 at {self.image_size} px, "
                f"{self.epochs} epochs{hidden}{alone}{options}")  # fmt: skip

    @property
    def tag(self) -> str:
        """A folder name that changes whenever a setting that changes results does."""
        return _tag("celeba", self)


# Quick runs that train the model several ways, over seeds (notebooks 05 and 07): the same
# settings in both, so a whole quick run trains equal weights and DST once and notebook 07
# reads them back from notebook 05 (same settings, same run folders).
_QUICK_MANY_RUNS = dict(weights=None, image_size=32, epochs=2, train_limit=256, eval_limit=128,
                        seeds=(0, 1), checkpoints=False, recalibrate_bn=32)  # fmt: skip


CELEBA40 = dict(attributes=celeba.ATTRIBUTES, image_size=64, weights=None, batch_size=256,
                 learning_rate=5e-4, learning_rate_decay=(0.85, 10))  # fmt: skip
"""The CelebA benchmark of the multi-task papers as Sener & Koltun's code runs it
(github.com/isl-org/MultiObjectiveOptimization: ``sample.json``, ``train_multi_task.py``):
all 40 attributes, 64x64 images, a ResNet-18 from random weights, Adam 5e-4 with batch 256,
the rate times 0.85 every 10 epochs, 100 epochs. What differs here: keras-hub's ResNet18
keeps ImageNet's stem (7x7 convolution with stride 2 and a max pool; theirs is a 3x3 one with
stride 1, so their last block sees 8x8 and ours 2x2 at 64 px, about a sixteenth of their
multiply-adds); each head reads the globally pooled 512 features (theirs a 2x2-pooled 2,048)
and gives one logit with a sigmoid loss (theirs two with a softmax: the same model family;
their equal weights are 1/40 each, ours 1, a global factor that Adam undoes); the loader
crops the 178x178 face square before shrinking (theirs shrinks the whole 178x218 picture);
and the quick and standard profiles train fewer images and epochs."""


CELEBA_PROFILES = {
    # notebook 03: one run of the report's protocol
    "attributes": {
        "quick": dict(weights=None, image_size=40, epochs=2, train_limit=800, eval_limit=400,
                      seeds=(0,), checkpoints=False, recalibrate_bn=32),
        "standard": dict(epochs=2, seeds=(0,)),
        "full": dict(epochs=5, seeds=(0,), devices="all"),
    },
    # notebook 05: the same model with and without DST, over seeds
    "comparison": {
        "quick": _QUICK_MANY_RUNS,
        "standard": dict(epochs=3, train_limit=40_000, seeds=(0, 1)),
        "full": dict(epochs=5, seeds=(0, 1, 2), devices="all"),
    },
    # notebook 07: eight methods and eight single-task baselines, over seeds
    "remedies": {
        "quick": _QUICK_MANY_RUNS,
        "standard": dict(epochs=2, train_limit=3_000, eval_limit=2_000, seeds=(0, 1)),
        "full": dict(epochs=5, seeds=(0, 1, 2), devices="all"),
    },
    # the published benchmark (Sener & Koltun 2018; notebook 07 sets its table beside the kit)
    "celeba40": {
        "quick": dict(CELEBA40, epochs=2, batch_size=32, train_limit=512, eval_limit=256,
                      seeds=(0,), checkpoints=False, recalibrate_bn=32),
        "standard": dict(CELEBA40, epochs=10, train_limit=40_000, seeds=(0, 1)),
        "full": dict(CELEBA40, epochs=100, seeds=(0, 1, 2), devices="all"),
    },
}  # fmt: skip
"""What each profile changes in the 2023 report's protocol (:class:`CelebaSettings`), per
kind of study: one run, a comparison of a few ways to train, or many methods."""


def celeba_settings(
    profile: str, source: str | None = None, *, study: str = "attributes", **overrides
) -> CelebaSettings:
    """The settings of a profile for a kind of ``study`` (see :data:`CELEBA_PROFILES`).

    ``source=None`` picks the data: a local copy when ``MTLKIT_CELEBA_DIR`` names one, else
    TensorFlow Datasets (standard, full) or the synthetic stand-in (quick). Any field can be
    overridden (``None`` values are ignored); ``hide_labels`` may be given as a dict.
    """
    config.check_profile(profile)
    local = os.environ.get("MTLKIT_CELEBA_DIR")
    if source is None:
        source = "folder" if local else ("synthetic" if profile == "quick" else "tfds")
    folder = overrides.pop("data_dir", local) if source == "folder" else None
    base = dict(profile=profile, source=source, data_dir=folder)
    if study not in CELEBA_PROFILES:
        raise ValueError(f"study={study!r}: use one of {sorted(CELEBA_PROFILES)}.")
    base.update(CELEBA_PROFILES[study][profile])
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["attributes"] = tuple(celeba.check_attributes(base.get("attributes", data.EIGHT)))
    hidden = dict(base.get("hide_labels", ()))
    base["hide_labels"] = tuple(sorted(celeba.check_hidden(hidden, base["attributes"]).items()))
    _check_epochs(base.get("epochs"))
    _check_counts(base)
    alone = base.get("single_task")
    if alone is not None and alone not in base["attributes"]:
        raise ValueError(f"single_task={alone!r} is not one of the attributes "
                         f"{list(base['attributes'])}: name one of them.")  # fmt: skip
    batch = base.get("batch_size", CelebaSettings.batch_size)
    base["devices"] = devices.resolve(base.get("devices", 1), batch)
    settings = CelebaSettings(**base)
    _check_optimizer(settings.learning_rate, settings.weight_decay)  # the defaults included
    _check_decay(settings.learning_rate_decay)
    return settings


def _check_decay(decay) -> None:
    """Refuse a ``learning_rate_decay`` that is not ``()`` or ``(factor, every)`` with
    0 < factor <= 1 and ``every`` a positive whole number of epochs."""
    if decay == ():
        return
    ok = isinstance(decay, tuple) and len(decay) == 2
    if ok:
        factor, every = decay
        ok = isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor <= 1
        ok = ok and isinstance(every, int) and not isinstance(every, bool) and every >= 1
    if not ok:
        raise ValueError(f"learning_rate_decay={decay!r}: use () for a constant rate, or "
                         "(factor, every) with 0 < factor <= 1 and every >= 1 epochs, "
                         "e.g. (0.85, 10).")  # fmt: skip
