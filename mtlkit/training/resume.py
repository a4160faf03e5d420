"""What a resumed run must share with the run it continues, and the checkpoint a run keeps
(:func:`mtlkit.training.loop.train`'s ``run_dir``): settings, restore, save.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras

from mtlkit import backend
from mtlkit.training import runs


def settings_of(optimizer, loss_weights: dict, seed, method, scheduler) -> dict:
    """What a resumed run must share with the run it continues (JSON-able)."""
    config = _without_rate(optimizer.get_config())
    return {
        "optimizer": [type(optimizer).__name__, repr(sorted(config.items()))],
        "learning_rate": _learning_rate(optimizer),
        "learning_rate_schedule": _schedule(optimizer),
        "loss_weights": dict(sorted(loss_weights.items())),
        "seed": seed,
        "weighting": None if method is None else [method.name, repr(method.options())],
        "dst_alpha": None if scheduler is None else scheduler.alpha,
        "dst_rescale_losses": None if scheduler is None else scheduler.rescale_losses,
        "dst_redraw_if_all_dropped": None if scheduler is None else scheduler.redraw_if_all_dropped,
        "backend": backend.name(),  # (a run resumes on the backend it was started on)
    }


def _without_rate(config: dict) -> dict:
    """An optimizer's config without its name and learning rate (nested ones too)."""
    drop = ("name", "learning_rate")
    return {k: _without_rate(v) if isinstance(v, dict) else v
            for k, v in config.items() if k not in drop}  # fmt: skip


def _rate_schedule(optimizer):
    """The optimizer's learning-rate schedule, or None for a plain rate."""
    if hasattr(optimizer, "inner_optimizer"):  # (LossScaleOptimizer: the inner one's rate)
        return _rate_schedule(optimizer.inner_optimizer)
    rate = getattr(optimizer, "_learning_rate", None)
    return rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None


def _schedule(optimizer) -> list | None:
    """A learning-rate schedule's class and config (JSON-able), or None for a plain rate."""
    schedule = _rate_schedule(optimizer)
    if schedule is None:
        return None
    config = keras.optimizers.schedules.serialize(schedule)
    return [config["class_name"], repr(sorted(config["config"].items()))]


def _learning_rate(optimizer) -> float | None:
    """A plain learning rate; None for a schedule (compared by :func:`_schedule`)."""
    if _rate_schedule(optimizer) is not None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError):
        return None


_ADDED_LATER = ("learning_rate_schedule", "dst_rescale_losses", "dst_redraw_if_all_dropped")
"""Settings that runs checkpointed before they were stored lack: not compared for those."""


def _changed(stored: dict, settings: dict) -> list[str]:
    """The settings that differ from the stored ones (a new plain learning rate is allowed;
    seed None: not reseeded)."""
    return [
        k
        for k in settings
        if k != "learning_rate"
        and (k in stored or k not in _ADDED_LATER)
        and stored.get(k) != settings[k]
        and not (k == "seed" and settings[k] is None)
    ]


def check_resume(run_dir: Path, record: dict, settings: dict, optimizer) -> None:
    """Refuse to resume a run with settings that change its results; honour a new learning
    rate (the advice when a loss became NaN) with a warning. Runs checkpointed before the
    settings were stored are resumed as they are."""
    stored = record.get("settings")
    if stored is None or stored is settings:
        record["settings"] = settings
        return
    stored = {"backend": "tensorflow", **stored}  # (runs from before JAX was supported)
    changed = _changed(stored, settings)
    if "backend" in changed:
        raise ValueError(
            f"{run_dir} was trained on Keras's {stored['backend']!r} backend, and this is "
            f"{settings['backend']!r}: a run resumes on the backend it started on (their "
            "random streams and last digits differ). Set KERAS_BACKEND="
            f"{stored['backend']} to resume it, or use a fresh run_dir."
        )
    if "learning_rate_schedule" in changed:
        _refuse_schedule(run_dir, stored, settings["learning_rate_schedule"])
    if changed:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {settings[k]!r}" for k in changed)
        raise ValueError(
            f"{run_dir} was trained with other settings ({detail}). Resume it with the same "
            "ones, or use a fresh run_dir (recompute=True in the study runners)."
        )
    old, new = stored.get("learning_rate"), settings["learning_rate"]
    if old != new and new is not None:
        optimizer.learning_rate = new
        warnings.warn(
            f"Resuming {run_dir} after epoch {record['epoch']} with learning rate {new:g} "
            f"(the epochs so far used {old:g}).",
            stacklevel=3,
        )
    record["settings"] = settings


def _refuse_schedule(run_dir: Path, stored: dict, schedule: list | None) -> None:
    """Refuse a learning-rate schedule (or plain rate) other than the stored one, if stored."""
    if "learning_rate_schedule" not in stored or stored["learning_rate_schedule"] == schedule:
        return
    old, new = (_rate_name(x) for x in (stored["learning_rate_schedule"], schedule))
    raise ValueError(
        f"{run_dir} was trained with {old}, and this optimizer has {new}: a schedule's rate "
        "depends on the step, so a resumed run keeps it as it was (learning_rate_schedule). "
        "Resume with the same one, or use a fresh run_dir."
    )


def _rate_name(schedule: list | None) -> str:
    """How a stored learning-rate schedule is named in a message."""
    return "a plain learning rate" if schedule is None else (
        f"the learning-rate schedule {schedule[0]} {schedule[1]}")  # fmt: skip


def restore(run_dir: Path, model, optimizer, scheduler, method, epochs: int) -> dict | None:
    """Load the run directory's last finished epoch, or None for a fresh run."""
    runs.make_run_dir(run_dir)

    def same_way(state: dict) -> None:  # refuse a run trained another way, before loading
        if (state.get("scheduler") is None) != (scheduler is None):
            used = "with" if state.get("scheduler") else "without"
            raise ValueError(f"{run_dir} was trained {used} a DST scheduler; resume it the same "
                             "way, or use a fresh run_dir.")  # fmt: skip
        _refuse_schedule(run_dir, state.get("settings") or {}, _schedule(optimizer))
        stored = state.get("weighting")
        if (stored and stored["name"]) != (method and method.name):
            used = f"the weighting {stored['name']!r}" if stored else "no weighting method"
            raise ValueError(f"{run_dir} was trained with {used}; resume it the same way, or "
                             "use a fresh run_dir.")  # fmt: skip

    record = runs.read_checkpoint(run_dir, model, optimizer, check=same_way)
    if record is None:
        return None
    if record["epoch"] > epochs:
        raise ValueError(
            f"{run_dir} already holds {record['epoch']} epochs, more than epochs={epochs}. "
            "Ask for at least that many, or use a fresh run_dir."
        )
    if scheduler is not None:
        scheduler.set_state(record["scheduler"])
    if method is not None:
        method.set_state(record["weighting"])
    return record


def save(run_dir: Path, model, optimizer, scheduler, method, record: dict) -> None:
    state = {
        **record,
        "scheduler": scheduler.get_state() if scheduler is not None else None,
        "weighting": method.get_state() if method is not None else None,
    }
    runs.write_checkpoint(run_dir, model, optimizer, state)
