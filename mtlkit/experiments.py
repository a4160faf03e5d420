"""The CIFAR-100 study's protocol in one place, so the notebooks stay short.

:func:`cifar100_settings` says what a profile runs (data, sizes, epochs, seeds) and
:func:`run_cifar100` trains one architecture with one seed under those settings, keeping
its results on disk: a sweep that is interrupted picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import keras

from mtlkit import config, data, training
from mtlkit.architectures import build_cifar100


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

    @property
    def data_label(self) -> str:
        """A label for tables and figures: which data and profile produced them."""
        if self.source == "synthetic":
            what = "synthetic CIFAR-100 stand-in (not CIFAR-100)"
        elif self.source == "folder":
            what = f"CIFAR-100 (local copy {self.data_dir})"
        else:
            what = "CIFAR-100 (TensorFlow Datasets)"
        size = f", {self.train_limit} training images" if self.train_limit else ""
        options = training.speed_options_label(self.mixed_precision, self.jit_compile)
        return f"{what}, {self.profile} profile{size}, {self.epochs} epochs{options}"

    @property
    def tag(self) -> str:
        """A folder name that changes whenever the settings do."""
        digest = hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        return f"cifar100-{self.profile}-{self.source}-{digest.hexdigest()[:8]}"


def cifar100_settings(profile: str, source: str | None = None, **overrides) -> CifarSettings:
    """The settings of a profile: ``"full"`` (the report) or ``"quick"`` (minutes on a CPU).

    ``source=None`` picks the profile's data: TensorFlow Datasets for the full run, a local
    copy when ``MTLKIT_CIFAR100_DIR`` names one, otherwise the synthetic stand-in for the
    quick run. Any field of :class:`CifarSettings` can be overridden.
    """
    config.check_profile(profile)
    local = os.environ.get("MTLKIT_CIFAR100_DIR")
    if source is None:
        source = "folder" if local else ("tfds" if profile == "full" else "synthetic")
    base = dict(profile=profile, source=source, data_dir=overrides.pop("data_dir", local))
    if profile == "quick":
        base.update(epochs=2, train_limit=400, eval_limit=200, synthetic_sizes=(2000, 500))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return CifarSettings(**base)


def cifar100_datasets(settings: CifarSettings, seed: int) -> dict:
    """Batched train (shuffled, augmented), validation and test datasets for one seed."""
    kwargs = dict(data_dir=settings.data_dir, split_seed=0)
    if settings.synthetic_sizes:
        train_size, test_size = settings.synthetic_sizes
        kwargs["synthetic_sizes"] = {"train": train_size, "test": test_size}
    splits = {
        split: data.load_cifar100(
            split,
            settings.source,
            limit=settings.train_limit if split == "train" else settings.eval_limit,
            **kwargs,
        )
        for split in ("train", "validation", "test")
    }
    augment = data.augmentation(seed) if settings.augment else None
    return {
        "train": data.batched(splits["train"], settings.batch_size, shuffle=True, seed=seed, augment=augment),
        "validation": data.batched(splits["validation"], settings.batch_size),
        "test": data.batched(splits["test"], settings.batch_size),
    }


def build_compiled(name: str, settings: CifarSettings) -> keras.Model:
    """One of the six architectures, compiled the report's way.

    Sets Keras's global dtype policy from ``settings.mixed_precision`` first, so a model is
    always built with the precision its run folder (``settings.tag``) was trained with.
    """
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    return training.compile_multitask(
        build_cifar100(name),
        learning_rate=settings.learning_rate,
        loss_weights=dict(settings.loss_weights),
        jit_compile=settings.jit_compile,
    )


def run_cifar100(
    name: str,
    seed: int,
    settings: CifarSettings,
    *,
    runs_dir: str | os.PathLike | None = None,
    recompute: bool = False,
    verbose: int = 0,
) -> dict[str, list[float]]:
    """Train architecture ``name`` with ``seed``; return its per-epoch history.

    The history holds train (``fine_loss``, ``fine_accuracy``, ...), validation (``val_``)
    and test (``test_``) values for every epoch. Finished runs are read back from disk
    instead of retrained (``recompute=True`` forces training); unfinished ones resume.
    """
    run_dir = Path(runs_dir or config.runs_dir()) / settings.tag / name / f"seed{seed}"
    training.set_seed(seed)
    datasets = cifar100_datasets(settings, seed)
    return training.fit_resumable(
        lambda: build_compiled(name, settings),
        datasets["train"],
        epochs=settings.epochs,
        run_dir=run_dir,
        validation_data=datasets["validation"],
        extra_eval={"test": datasets["test"]},
        recompute=recompute,
        verbose=verbose,
        metadata={"architecture": name, "seed": seed, **dataclasses.asdict(settings)},
    )
