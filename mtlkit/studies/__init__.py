"""The two studies (CIFAR-100, CelebA): settings per profile, and runners that keep results.
What a notebook runs and how long it should take, so that the notebooks stay short.

The names below are the package's public API; each one lives in the module named beside it:
:mod:`mtlkit.studies.settings` (the settings per profile and their run tags),
:mod:`mtlkit.studies.runners` (datasets, models, the runners and the runs they keep) and
:mod:`mtlkit.studies.durations` (:func:`expected_minutes`); :mod:`mtlkit.studies.devices` (the
devices a study trains on, a sweep worker's share of the runs); :mod:`mtlkit.studies.celeba40`
(the published 40-attribute CelebA benchmark, beside its table; imported on first use, so
that ``python -m mtlkit.studies.celeba40`` runs it as a script without a warning).
"""

import importlib

from mtlkit.studies import devices
from mtlkit.studies.durations import expected_minutes
from mtlkit.studies.runners import (
    Run,
    build_celeba_model,
    build_compiled,
    celeba_datasets,
    cifar100_datasets,
    recalibration,
    run_celeba,
    run_cifar100,
    run_folder,
)
from mtlkit.studies.settings import (
    CELEBA40,
    CELEBA_PROFILES,
    CIFAR_PROFILES,
    CelebaSettings,
    CifarSettings,
    celeba_settings,
    cifar100_settings,
)

__all__ = [
    "celeba40",
    "devices",
    "CELEBA40",
    "CELEBA_PROFILES",
    "CIFAR_PROFILES",
    "CelebaSettings",
    "CifarSettings",
    "build_celeba_model",
    "build_compiled",
    "celeba_datasets",
    "celeba_settings",
    "cifar100_datasets",
    "cifar100_settings",
    "recalibration",
    "expected_minutes",
    "Run",
    "run_celeba",
    "run_cifar100",
    "run_folder",
]


def __getattr__(name: str):
    """``studies.celeba40``: the benchmark's module, imported when first asked for."""
    if name == "celeba40":
        return importlib.import_module("mtlkit.studies.celeba40")
    raise AttributeError(f"module 'mtlkit.studies' has no attribute {name!r}")
