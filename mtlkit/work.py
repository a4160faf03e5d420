"""Counting the work a run does, so that a time measured on one CPU can be read for another.

A wall time says little on its own: the same notebook takes 4x longer on one 2-core CPU
than on another. What it *does* -- how many images went through which model, forwards and
backwards, how many step functions were traced, how many checkpoints were written -- is the
same everywhere. This module keeps that count for the process when ``MTLKIT_WORK_LOG`` names
a JSON file (``benchmarks/bench_notebooks.py`` sets it); otherwise every call here returns at
once and nothing is counted.

FLOPs are counted the way ``benchmarks/estimate_durations.py`` always did: the
multiply-accumulates of every ``Conv2D`` and ``Dense`` layer, times 2, per image
(:func:`forward_gflop`); a training image costs 3 forward passes (the forward pass and a
backward pass of twice its cost), an evaluation image 1.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from pathlib import Path

import keras

TRAINING_PASSES = 3
"""A training image costs the forward pass and a backward pass of about twice its cost."""

_totals: dict[str, float] = {}
_gflop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_path() -> Path | None:
    """The JSON file the counts go to (``MTLKIT_WORK_LOG``), or None: counting is off.
    ``{notebook}`` in it becomes the notebook's name (``MTLKIT_NOTEBOOK``, which
    ``run_notebooks.py`` sets for each kernel; ``process-<pid>`` elsewhere), so notebooks run
    side by side keep one file each."""
    value = os.environ.get("MTLKIT_WORK_LOG")
    if not value:
        return None
    notebook = os.environ.get("MTLKIT_NOTEBOOK") or f"process-{os.getpid()}"
    return Path(value.replace("{notebook}", notebook))


def forward_gflop(model: keras.Model) -> float:
    """Multiply-accumulates x 2 of the ``Conv2D`` and ``Dense`` layers, per image, in GFLOP.

    Nested models are counted layer by layer. NaN when a convolution's output size is not
    known from the model's graph (a model that takes images of any size, like the CelebA
    ResNet18 before its ``Resizing`` layer): then tell the count with :func:`set_gflop`.
    """
    total = 0.0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            height, width, channels = layer.output.shape[1:]
            if height is None or width is None:
                return math.nan
            kernel = math.prod(layer.kernel_size) * layer.input.shape[-1]
            total += 2 * height * width * channels * kernel
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total / 1e9


def set_gflop(model: keras.Model, gflop: float) -> None:
    """Tell the count the forward cost of ``model`` per image (when it cannot be read)."""
    if log_path() is not None:
        _gflop[model] = float(gflop)


def _model_gflop(model: keras.Model) -> float:
    if model not in _gflop:
        _gflop[model] = forward_gflop(model)
    return _gflop[model]


def add_images(model: keras.Model, images: int, *, training: bool) -> None:
    """Count ``images`` that went through ``model`` (``training``: forward and backward)."""
    if log_path() is None or not images:
        return
    kind = "train" if training else "eval"
    passes = TRAINING_PASSES if training else 1
    gflop = _model_gflop(model)
    _add(f"{kind}_images", images)
    if math.isnan(gflop):
        _add("uncounted_images", images)
    else:
        _add(f"{kind}_gflop", images * passes * gflop)


def add_traces(count: int) -> None:
    """Count step functions traced (each trace costs seconds for a large model)."""
    if log_path() is not None:
        _add("traces", count)


def add_checkpoint() -> None:
    """Count one checkpoint (or backup) written."""
    if log_path() is not None:
        _add("checkpoints", 1)


def totals() -> dict[str, float]:
    """What this process has counted so far."""
    return dict(_totals)


def _add(key: str, value: float) -> None:
    _totals[key] = _totals.get(key, 0) + value
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_totals, indent=1))
