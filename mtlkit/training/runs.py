"""What makes a run repeatable and resumable: one seed, safe files, checkpoints, history.

Both ways of training in the kit (:func:`mtlkit.training.fit_resumable` and
:func:`mtlkit.training.train`) keep a *run directory*:

* ``history.json`` -- one format for both: ``{"format": 2, "epochs_done", "finished",
  "metadata", "history"}``, where ``history`` maps each logged value to its per-epoch list;
* ``checkpoint.npz`` (:func:`train` only) -- weights, optimizer variables and the loop's
  state (scheduler, weighting method, random generators) after the last finished epoch.

Every file is written to a temporary name and then renamed, so a run killed at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state  # what keras.utils.set_random_seed sets
from keras.src.random import seed_generator
from keras.src.utils import rng_utils

from mtlkit import work

CHECKPOINT = "checkpoint.npz"
"""The file in a run directory that holds the last finished epoch of ``train``."""

HISTORY = "history.json"
"""The file in a run directory that holds the per-epoch history (both loops)."""

HISTORY_FORMAT = 2


TF_GLOBAL_SEED = 0
"""TensorFlow's own global seed: :func:`set_seed` sets it once and then leaves it alone."""


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and Keras (its initialisers, dropout, random layers).

    Pass the same ``seed`` to the data pipeline (shuffling, augmentation) and the DST
    scheduler: with all of them seeded, two runs on the CPU give identical histories.

    What ``keras.utils.set_random_seed`` does, except for TensorFlow's global seed, which is
    set once (to :data:`TF_GLOBAL_SEED`) and not again: setting it clears TensorFlow's cache
    of compiled kernels, so the next call of every traced step takes seconds again (1.7 s
    for the CelebA ResNet18's, measured) -- in every run of a study. The kit's random
    operations all carry their own seeds, made from ``seed``; give your own TensorFlow
    random operations a ``seed=`` too (or call ``tf.random.set_seed`` yourself).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__}).")
    random.seed(seed)
    np.random.seed(seed)
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)  # remade
    if tf.compat.v1.get_seed(None)[0] != TF_GLOBAL_SEED:
        tf.random.set_seed(TF_GLOBAL_SEED)


# ------------------------------------------------------------------------ safe files
def make_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` (and its parents), or say clearly why it cannot be a run folder."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (run_dir, *run_dir.parents) if p.is_file()), run_dir)
        raise ValueError(
            f"run_dir {run_dir} cannot be a folder: {blocking} is a file. Choose another "
            "run_dir (or MTLKIT_RUNS_DIR)."
        ) from None
    except PermissionError:
        raise PermissionError(
            f"run_dir {run_dir} cannot be created or written here (permission denied). Choose a "
            "folder you can write to (run_dir=..., or MTLKIT_RUNS_DIR)."
        ) from None
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(
            f"run_dir {run_dir} is not writable. Choose a folder you can write to (run_dir=..., "
            "or MTLKIT_RUNS_DIR)."
        )
    return run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock while a run in it is trained: a second process (another
    notebook sharing the run, a parallel test) waits, then finds the run finished and reads
    it back instead of writing the same files at the same time. The lock is a file beside
    the folder (``.<name>.lock``, kept), taken with ``fcntl.flock``; where ``fcntl`` does not
    exist (Windows) there is no lock, so do not train one run folder from two processes there."""
    try:
        import fcntl
    except ImportError:  # (Windows)
        yield
        return
    run_dir = Path(run_dir)
    make_run_dir(run_dir.parent)
    with open(run_dir.parent / f".{run_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, write: Callable, *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file, then rename it to ``path``.

    A reader never sees a half-written ``path``: it is the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"Could not write {path} ({err}). If the disk is full, free some space (or "
            "point MTLKIT_RUNS_DIR at a larger disk) and run again: finished epochs are kept."
        ) from err


def atomic_write_json(path: Path, payload) -> None:
    """Write JSON to ``path`` so that a reader never sees a half-written file."""
    atomic_write(path, lambda f: json.dump(payload, f, indent=1))


# -------------------------------------------------------------------- history.json
def write_history(
    run_dir: Path,
    history: Mapping[str, list],
    *,
    finished: bool,
    metadata: Mapping | None = None,
) -> None:
    """Write ``history.json`` in the one format both loops use."""
    epochs_done = len(next(iter(history.values()), []))
    payload = {
        "format": HISTORY_FORMAT,
        "epochs_done": epochs_done,
        "finished": bool(finished),
        "metadata": dict(metadata or {}),
        "history": {k: [float(v) for v in values] for k, values in history.items()},
    }
    atomic_write_json(Path(run_dir) / HISTORY, payload)


def read_history(run_dir: Path) -> dict | None:
    """``history.json`` of a run directory, or None when absent.

    A file in another format (written by an older kit) is refused with a clear error: its
    run is best recomputed in a fresh run directory.
    """
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is damaged ({err}): a write was cut short. Delete {Path(run_dir)} (or "
            "pass recompute=True) to train that run again."
        ) from err
    if not isinstance(stored, dict) or stored.get("format") != HISTORY_FORMAT:
        stored = stored if isinstance(stored, dict) else {}
        raise ValueError(
            f"{path} is not in the history format {HISTORY_FORMAT} of this kit (format "
            f"{stored.get('format')!r}): an older kit wrote it. Delete {Path(run_dir)} to "
            "recompute that run, or use another run_dir."
        )
    return stored


# ----------------------------------------------------------------- checkpoints
def model_signature(model: keras.Model) -> list[list]:
    """Every variable's short name and shape, in order: what a checkpoint must match.

    Short names (``kernel``, ``gamma``), not full paths: automatic layer names such as
    ``dense_3`` depend on what else was built in the same Python process.
    """
    return [[v.path.split("/")[-1], list(v.shape)] for v in model.variables]


def write_checkpoint(run_dir: Path, model, optimizer, state: dict) -> None:
    """Save the model's and the optimizer's variables and the JSON-able ``state``.

    ``state["history"]`` also goes to ``history.json`` (``finished`` from ``state``).
    """
    arrays = {f"model_{i}": v.numpy() for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    state = {
        **state,
        "signature": model_signature(model),
        "optimizer_variables": len(optimizer.variables),
    }
    arrays["state"] = json.dumps(state)
    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: np.savez(f, **arrays), binary=True)
    work.add_checkpoint()
    write_history(
        run_dir,
        state["history"],
        finished=state.get("finished", False),
        metadata=state.get("metadata"),
    )


def read_checkpoint(run_dir: Path, model, optimizer, check=None) -> dict | None:
    """Load the last finished epoch into ``model`` and ``optimizer``; return its
    state (None when the run directory holds no checkpoint yet). ``check(state)`` may refuse
    the state (raise) before anything is loaded."""
    run_dir = Path(run_dir)
    (run_dir / (CHECKPOINT + ".tmp")).unlink(missing_ok=True)  # an interrupted write
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        state = json.loads(str(arrays.pop("state")))
    except Exception as err:
        raise ValueError(
            f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}). Delete it to "
            "start this run again from epoch 1, or use another run_dir."
        ) from err
    if check is not None:
        check(state)
    absent = [k for k in ("signature", "optimizer_variables", "history", "epoch") if k not in state]
    if absent:
        raise ValueError(
            f"The checkpoint {path} lacks {absent}: it was not written by this kit's train(). "
            "Delete it to start this run again from epoch 1, or use another run_dir."
        )
    _check_signature(run_dir, model_signature(model), state["signature"])
    if state["optimizer_variables"] != len(optimizer.variables):
        raise ValueError(
            f"{path} was written with another kind of optimizer; use the same one, or a "
            "fresh run_dir."
        )
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{prefix}_{i}"])
    return state


def _check_signature(run_dir: Path, expected: list, found: list) -> None:
    """Refuse a checkpoint of another model, saying where the two first differ."""
    if expected == found:
        return
    pairs = zip(expected, found)
    diff = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(expected), len(found)))
    theirs = found[diff] if diff < len(found) else "none"
    ours = expected[diff] if diff < len(expected) else "none"
    raise ValueError(
        f"{run_dir} holds a checkpoint of a different model: {len(found)} variables against "
        f"this model's {len(expected)}, first difference at variable {diff} ({theirs} vs "
        f"{ours}). Use a fresh run_dir for this model (or recompute the run)."
    )
