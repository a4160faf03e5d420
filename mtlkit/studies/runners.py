"""The two studies' runners: one function trains (or reads back) one run under a settings
object (:mod:`mtlkit.studies.settings`) and keeps its results on disk, so that a sweep that
is interrupted picks up where it stopped and a finished run is read back:

* CIFAR-100: :func:`run_cifar100` (and :func:`cifar100_datasets`, :func:`build_compiled`);
* CelebA: :func:`run_celeba` (and :func:`celeba_datasets`, :func:`build_celeba_model`,
  :func:`celeba_optimizer`).

Both runners take the same ``arm`` (``"fit"``, ``"train"`` -- the custom loop --, ``"dst"``
or a weighting method's name), return the same :class:`Run` (history, test table, training
seconds, DST scheduler) and keep it in :func:`run_folder` as ``results.json``.

:func:`mtlkit.studies.durations.expected_minutes` turns a settings object into the duration a
notebook prints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import numbers
import os
import shutil
import time
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from mtlkit import config, data, training, work
from mtlkit.analysis import scoring
from mtlkit.data import celeba
from mtlkit.methods import dst, weighting
from mtlkit.models import architectures, graph, tasks
from mtlkit.models.architectures import build_celeba, build_cifar100
from mtlkit.studies import devices
from mtlkit.studies.settings import CelebaSettings, CifarSettings
from mtlkit.training import runs


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
        "train": data.batched(
            splits["train"], settings.batch_size, shuffle=True, seed=seed, augment=augment
        ),
        "validation": data.batched(splits["validation"], settings.batch_size),
        "test": data.batched(splits["test"], settings.batch_size),
    }


def build_compiled(name: str, settings: CifarSettings) -> keras.Model:
    """One of the six architectures, compiled the report's way.

    Sets Keras's global dtype policy from ``settings.mixed_precision`` first, so a model is
    always built with the precision its run folder (``settings.tag``) was trained with.
    """
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if settings.mixed_precision else "float32"
    )
    return training.compile_multitask(
        build_cifar100(name, trunk_width=settings.trunk_width),
        learning_rate=settings.learning_rate,
        loss_weights=dict(settings.loss_weights),
        jit_compile=settings.jit_compile,
    )


def run_cifar100(
    name: str,
    seed: int,
    settings: CifarSettings,
    *,
    arm: str = "fit",
    scheduler_options: dict | None = None,
    runs_dir: str | os.PathLike | None = None,
    recompute: bool = False,
    verbose: int = 0,
    callbacks: list | None = None,
) -> Run:
    """Train architecture ``name`` with ``seed`` (or read the finished run back): a :class:`Run`.

    ``arm`` as in :func:`run_celeba`: ``"fit"`` (Keras ``fit``, notebook 02), ``"train"``
    (the custom loop), ``"dst"`` (the loop with a DST scheduler: the model's task depths,
    every image labelled for both tasks) or a weighting method's name. The history holds
    train (``fine_loss``, ``fine_accuracy``, ...) and validation (``val_``) values per epoch
    (``fit`` also ``test_``: per epoch, or with ``test_each_epoch=False`` -- the quick
    profile -- after the last epoch only, NaN before); the table, the test split's loss and
    accuracy per task.
    Finished runs are read back instead of retrained (``recompute=True`` forces training);
    unfinished ones resume. ``callbacks`` (Keras callbacks: a gradient probe, ...) run after
    the quick profile's BatchNorm recalibration.
    """
    _check_arm(arm)
    _check_seed(seed)
    _check_fit_labels(settings, arm)
    run_dir = run_folder(settings, seed, arm, name=name, runs_dir=runs_dir,
                         scheduler_options=scheduler_options)  # fmt: skip
    train = lambda: _train_cifar100(name, seed, settings, arm, scheduler_options,  # noqa: E731
                                    run_dir, verbose, callbacks)  # fmt: skip
    return _stored_or_trained(run_dir, recompute, settings.devices, train)


def _train_cifar100(name, seed, settings, arm, scheduler_options, run_dir, verbose,
                    callbacks) -> Run:  # fmt: skip
    """:func:`run_cifar100`'s training and evaluation, on the settings' devices."""
    stored = runs.read_history(run_dir)  # a fit run finished before results.json existed
    start = time.perf_counter()
    training.set_seed(seed)
    datasets = cifar100_datasets(settings, seed)
    metadata = {"architecture": name, "arm": arm, "seed": seed, **dataclasses.asdict(settings)}
    callbacks = [*recalibration(settings, datasets["train"]), *(callbacks or [])]
    scheduler = None
    if arm == "fit":
        history = training.fit_resumable(
            lambda: _reusable(("cifar100", name, arm, settings.tag),
                              lambda: build_compiled(name, settings), lambda m: m.optimizer)[0],
            datasets["train"], epochs=settings.epochs, run_dir=run_dir,
            validation_data=datasets["validation"], extra_eval={"test": datasets["test"]},
            verbose=verbose, metadata=metadata, callbacks=callbacks, backups=settings.checkpoints,
            extra_eval_last=not settings.test_each_epoch,
        )  # fmt: skip
        test = {k.removeprefix("test_"): v[-1] for k, v in history.items() if k.startswith("test_")}
    else:
        model, optimizer, method = _reusable(
            ("cifar100", name, _step_kind(arm), settings.tag),
            lambda: build_compiled(name, settings),
            lambda _: keras.optimizers.Adam(settings.learning_rate), _method_for(arm), seed,
        )  # fmt: skip
        if arm == "dst":
            counts = {"fine": 1, "coarse": 1}  # every image carries both labels: N_j = 1
            scheduler = dst.DSTScheduler(["fine", "coarse"], graph.task_depths(model), counts,
                                         seed=seed, **(scheduler_options or {}))  # fmt: skip
        history = training.train(
            model, datasets["train"], epochs=settings.epochs, optimizer=optimizer,
            losses=tasks.classification_losses(["fine", "coarse"]), weighting=method,
            loss_weights=dict(settings.loss_weights), scheduler=scheduler,
            validation_data=datasets["validation"], seed=seed, verbose=verbose,
            run_dir=run_dir if settings.checkpoints else None, callbacks=callbacks,
            jit_compile=settings.jit_compile, metadata=metadata, checkpoints=settings.checkpoints,
        ).history  # fmt: skip
        test = model.evaluate(datasets["test"], verbose=0, return_dict=True)
    table = pd.DataFrame(
        {
            k: [float(test.get(f"{t}_{k}", "nan")) for t in ("fine", "coarse")]
            for k in ("loss", "accuracy")
        },  # (NaN: a run stored without its test values)
        index=pd.Index(["fine", "coarse"], name="task"),
    )
    summary = pd.Series({"mean task accuracy": table["accuracy"].mean(),
                         "loss": float(test.get("loss", "nan"))})  # fmt: skip
    seconds = float("nan") if stored and stored["finished"] else time.perf_counter() - start
    return _write_run(run_dir, metadata, history, table, summary, seconds, scheduler)


def _stored_or_trained(run_dir: Path, recompute: bool, on_devices: int, train) -> Run:
    """The run in ``run_dir`` read back when it is finished (unless ``recompute``), else
    ``train()`` on the settings' devices. The folder's lock is held throughout: another
    process asking for the same run waits, then reads it back."""
    with runs.run_lock(run_dir):
        if recompute and run_dir.exists():
            shutil.rmtree(run_dir)
        if (run_dir / RESULTS).exists():
            return _read_run(run_dir)
        with devices.scope(on_devices):  # (one device: nothing changes)
            return train()


def run_folder(
    settings: CifarSettings | CelebaSettings,
    seed: int,
    arm: str = "fit",
    *,
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    scheduler_options: dict | None = None,
) -> Path:
    """Where a run lives: ``<runs_dir>/<settings.tag>/[<architecture>/]<arm>/seed<seed>``.

    CIFAR-100 runs add the architecture's ``name``; its ``fit`` runs leave out ``<arm>``
    (their folders were made before the other arms existed, and are read back as they are).
    A DST run whose ``scheduler_options`` differ from the scheduler's defaults lives in
    ``dst-<hash of those options>`` (with the defaults: ``dst``, as before the options).
    """
    base = Path(runs_dir or config.runs_dir()) / settings.tag
    if isinstance(settings, CifarSettings):
        if name is None:
            raise ValueError("A CIFAR-100 run folder needs the architecture's name=.")
        base = base / name
    options = _dst_options(arm, scheduler_options)
    if options:
        digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
        arm = f"{arm}-{digest}"
    return (base if arm == "fit" and name is not None else base / arm) / f"seed{seed}"


def _dst_options(arm: str, options: dict | None) -> dict:
    """``scheduler_options`` checked (a ValueError for unknown names, bad values, or options
    given to another arm than ``"dst"``) and reduced to those that differ from
    :class:`~mtlkit.methods.dst.DSTScheduler`'s defaults, as JSON values."""
    if not options:
        return {}
    if arm != "dst":
        raise ValueError(f"scheduler_options={options!r} with arm={arm!r}: only arm='dst' "
                         "uses a DST scheduler (leave scheduler_options out).")  # fmt: skip
    defaults = {k: p.default for k, p in inspect.signature(dst.DSTScheduler).parameters.items()
                if k in DST_OPTIONS}  # fmt: skip
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"scheduler_options {unknown}: not an option of the DST scheduler; "
                         f"use {sorted(defaults)}.")  # fmt: skip
    try:  # its own checks, before any run folder is used
        dst.DSTScheduler(["a"], {"a": 1}, {"a": 1}, **options)
    except TypeError as err:
        raise ValueError(f"scheduler_options={options!r}: {err}") from err
    normal = _json_options({**defaults, **options})
    default = _json_options(defaults)
    return {k: v for k, v in normal.items() if v != default[k]}


DST_OPTIONS = ("metrics", "alpha", "redraw_if_all_dropped", "rescale_losses")
"""The DST scheduler's options a run's ``scheduler_options`` may set (the runner gives the
tasks, depths, labelled-sample counts and seed)."""


def _json_options(options: dict) -> dict:
    """DST options as the values they mean: metrics a list (a name: a list of one), alpha a
    float, the switches bools."""
    metrics = options["metrics"]
    return {"metrics": [metrics] if isinstance(metrics, str) else list(metrics),
            "alpha": float(options["alpha"]),
            "redraw_if_all_dropped": bool(options["redraw_if_all_dropped"]),
            "rescale_losses": bool(options["rescale_losses"])}  # fmt: skip


def _check_seed(seed) -> None:
    """Refuse a seed that is not a whole number in [0, 2**32) before any run folder is used."""
    whole = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    if not (whole and 0 <= seed < 2**32):
        raise ValueError(f"seed={seed!r}: use a whole number >= 0 (below 2**32), e.g. 0.")


def _check_arm(arm: str) -> None:
    arms = ("fit", "train", "dst", *weighting.METHODS)
    if arm not in arms:
        raise ValueError(f"arm={arm!r}: use one of {arms}.")


def _check_fit_labels(settings: CifarSettings | CelebaSettings, arm: str) -> None:
    """Refuse ``arm="fit"`` with settings that hide labels: Keras ``fit`` would train on the
    hidden labels' -1 as a label value (the custom loop's arms leave them out)."""
    hidden = [a for a, share in getattr(settings, "hide_labels", ()) if share > 0]
    if arm == "fit" and hidden:  # (CIFAR-100 settings hide no labels)
        raise ValueError(
            f"arm='fit' with hide_labels for {hidden}: Keras fit has no notion of an unknown "
            "label and would train on the hidden labels' -1 as a label value. Use arm='train' "
            "(or 'dst', or a weighting arm such as 'uw'): the custom loop leaves -1 labels out."
        )


PLAIN_ARMS = ("train", "ew", "dst")
"""Arms whose training step is the loop's plain one: the sum of the tasks' losses times
their coefficients (loss weights, DST gates, a single task's 1 and 0s). They share a model
and its traced step (:func:`_reusable`); ``"ew"`` is that sum with no method object (it
logs no ``<task>_weight``: every weight is the loss weight)."""


def _method_for(arm: str):
    """``model -> weighting method`` for a weighting arm; None for the others and for EW."""
    if arm not in weighting.METHODS or arm in PLAIN_ARMS:
        return None
    return lambda model: weighting.get(arm, model.output_names)


def _step_kind(arm: str) -> str:
    """What a run's traced step depends on among the arms: ``"plain"`` for
    :data:`PLAIN_ARMS`, else the arm."""
    return "plain" if arm in PLAIN_ARMS else arm


_LAST_MODEL: dict = {}
"""The last run's model, optimizer and weighting method, by what they were built for: the
next run built for the same (the next seed) restarts them instead of building new ones, and
so reuses their traced steps. One entry only: a study's runs come seed after seed."""


def _reusable(key: tuple, build, make_optimizer, make_method=None, seed: int | None = None):
    """``(model, optimizer, method)`` for a run, after ``set_seed``: ``build()``'s model (this
    run's initial weights) with ``make_optimizer(model)`` and ``make_method(model)``, or the
    last run's objects restarted with those values when they were built for the same ``key``
    (:func:`mtlkit.training.restart`)."""
    fresh = build()
    if key in _LAST_MODEL:
        model, optimizer, method = _LAST_MODEL[key]
        training.restart(model, fresh, optimizer, method, seed)
        return model, optimizer, method
    _LAST_MODEL.clear()
    method = make_method(fresh) if make_method is not None else None
    _LAST_MODEL[key] = (fresh, make_optimizer(fresh), method)
    return _LAST_MODEL[key]


def recalibration(settings: CifarSettings | CelebaSettings, train: tf.data.Dataset) -> list:
    """The callbacks that recompute BatchNorm statistics before each evaluation, for ``fit``
    or the custom loop: the quick profile's (none in the others)."""
    if not settings.recalibrate_bn:
        return []
    return [training.RecalibrateBatchNorm(train, settings.recalibrate_bn)]


def _celeba_split(settings: CelebaSettings, split: str, **kwargs) -> tf.data.Dataset:
    """One unbatched split of the settings' data, at the loader's size."""
    limit = settings.train_limit if split == "train" else settings.eval_limit
    hide = dict(settings.hide_labels) if split == "train" else None
    return data.load_celeba(
        split, settings.attributes, settings.source,
        image_size=celeba.loader_size(settings.image_size), data_dir=settings.data_dir,
        limit=limit, hide_labels=hide or None, **kwargs,
    )  # fmt: skip


def celeba_datasets(settings: CelebaSettings, seed: int) -> dict:
    """Batched data for one seed: ``"train"`` (a function ``epoch -> batches``, reshuffled
    every epoch from the seed), ``"validation"`` and ``"test"``.

    Small splits (quick profile, at most 20,000 images) are decoded once per process and
    kept in memory, for every run that reads them; the full training split (15 GB of crops at
    178 px) is not: its file list is reshuffled before decoding.
    """
    batch = settings.batch_size
    if _in_memory(settings.train_limit):
        cached = _decoded(settings, "train")
        train = lambda epoch: data.batched(  # noqa: E731
            cached, batch, shuffle=True, seed=1000 * seed + epoch, cache=False
        )
    else:
        train = lambda epoch: data.batched(  # noqa: E731
            _celeba_split(settings, "train", shuffle_seed=1000 * seed + epoch), batch, cache=False
        )
    small = _in_memory(settings.eval_limit)
    evaluation_sets = {
        s: data.batched(_decoded(settings, s) if small else _celeba_split(settings, s), batch,
                        cache=False)
        for s in ("validation", "test")
    }  # fmt: skip
    return {"train": train, **evaluation_sets}


def _in_memory(limit: int | None) -> bool:
    """Whether a split of ``limit`` images is small enough to keep decoded in memory."""
    return bool(limit) and limit <= 20_000


_DECODED: dict = {}
"""The small splits decoded so far in this process (a few at most): the runs of a notebook
(seeds, arms, single-task baselines) read the same images, and decode them once."""


def _decoded(settings: CelebaSettings, split: str) -> tf.data.Dataset:
    """One small split, decoded once and kept in memory (``Dataset.cache``)."""
    limit = settings.train_limit if split == "train" else settings.eval_limit
    hide = settings.hide_labels if split == "train" else ()
    key = (settings.source, settings.data_dir, settings.attributes, settings.image_size,
           limit, hide, split)  # fmt: skip
    if key not in _DECODED:
        if len(_DECODED) >= 6:
            _DECODED.clear()
        _DECODED[key] = _celeba_split(settings, split).cache()
    return _DECODED[key]


def build_celeba_model(settings: CelebaSettings) -> keras.Model:
    """The shared ResNet18 with one logit per attribute, under the settings' precision."""
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if settings.mixed_precision else "float32"
    )
    model = build_celeba(settings.attributes, weights=settings.weights,
                         image_size=settings.image_size)  # fmt: skip
    if work.log_path() is not None:  # its backbone takes any size: tell the count its cost
        size, count = settings.image_size, len(settings.attributes)
        work.set_gflop(model, architectures.celeba_forward_gflop(size, count))
    return model


@dataclasses.dataclass
class Run:
    """One finished run of either study: its per-epoch history and its test-split evaluation."""

    history: dict
    table: pd.DataFrame  # test split: per attribute with the majority baseline (CelebA,
    # scoring.attribute_table), or per task loss and accuracy (CIFAR-100)
    summary: pd.Series  # mean task accuracy, ...
    run_dir: Path
    seconds: float  # training time of this run, also when read back (NaN: not recorded)
    schedule: pd.DataFrame | None = None  # DST runs: the scheduler's history_frame()
    read_back: bool = False  # True: read from its results.json, not trained in this call
    scheduler: dst.DSTScheduler | None = None  # DST runs: the scheduler, at the run's end


def run_celeba(
    seed: int,
    settings: CelebaSettings,
    *,
    arm: str = "fit",
    scheduler_options: dict | None = None,
    runs_dir: str | os.PathLike | None = None,
    recompute: bool = False,
    verbose: int = 0,
    callbacks: list | None = None,
) -> Run:
    """Train (or read back) one CelebA run and evaluate it on the test split.

    ``arm``: ``"fit"`` (Keras ``fit``, notebook 03), ``"train"`` (the custom loop, no DST),
    ``"dst"`` (the custom loop with a :class:`mtlkit.methods.dst.DSTScheduler`, made with
    ``scheduler_options`` and the task depths and labelled-sample counts of this data), or
    a weighting method of :mod:`mtlkit.methods.weighting` by name (``"uw"``, ``"pcgrad"``, ...).
    Settings that hide labels (``hide_labels``) need one of the custom loop's arms: with
    ``"fit"`` a ValueError says so (Keras ``fit`` would train on their -1 as a label value).
    ``Run.seconds`` is the training time (evaluation excluded).
    The run lives in ``runs_dir/<settings.tag>/<arm>/seed<seed>``; a finished one is read
    back from its ``results.json`` without training, unless ``recompute=True``.
    """
    _check_arm(arm)
    _check_seed(seed)
    _check_fit_labels(settings, arm)
    if settings.single_task and arm not in ("fit", "train"):
        raise ValueError(
            f"A single-task baseline (single_task={settings.single_task!r}) trains one loss, "
            f"which arm={arm!r} cannot combine: use arm='train' or 'fit'."
        )
    run_dir = run_folder(settings, seed, arm, runs_dir=runs_dir,
                         scheduler_options=scheduler_options)  # fmt: skip
    train = lambda: _train_celeba(seed, settings, arm, scheduler_options, run_dir,  # noqa: E731
                                  verbose, callbacks)  # fmt: skip
    return _stored_or_trained(run_dir, recompute, settings.devices, train)


def _train_celeba(seed, settings, arm, scheduler_options, run_dir, verbose, callbacks) -> Run:
    """:func:`run_celeba`'s training and evaluation, on the settings' devices."""
    stored = runs.read_history(run_dir)  # finished before results.json: its time is unknown
    start = time.perf_counter()
    training.set_seed(seed)
    datasets = celeba_datasets(settings, seed)
    metadata = {"arm": arm, "seed": seed, **dataclasses.asdict(settings)}
    callbacks = [*recalibration(settings, datasets["train"](0)), *(callbacks or [])]
    scheduler = None
    if arm == "fit":
        model = build_celeba_model(settings)
        history = _fit_celeba(model, datasets, settings, run_dir, metadata, verbose, callbacks)
    else:
        model, optimizer, method = _reusable(
            ("celeba", _step_kind(arm), _model_settings(settings)),
            lambda: build_celeba_model(settings),
            lambda _: celeba_optimizer(settings), _method_for(arm), seed,
        )  # fmt: skip
        scheduler = _scheduler(model, settings, seed, scheduler_options) if arm == "dst" else None
        history = training.train(
            model, datasets["train"], epochs=settings.epochs,
            losses=tasks.classification_losses(settings.attributes, binary=True),
            optimizer=optimizer, scheduler=scheduler, validation_data=datasets["validation"],
            run_dir=run_dir if settings.checkpoints else None, seed=seed,
            verbose=verbose, jit_compile=settings.jit_compile, callbacks=callbacks,
            metadata=metadata, weighting=method, checkpoints=settings.checkpoints,
            loss_weights=_loss_weights(settings),
        ).history  # fmt: skip
    seconds = float("nan") if stored and stored["finished"] else time.perf_counter() - start
    majority = celeba.majority_classes(_train_labels(settings))
    alone = [settings.single_task] if settings.single_task else None  # its head only
    table, summary = scoring.evaluate_attributes(model, datasets["test"], majority, alone)
    return _write_run(run_dir, metadata, history, table, summary, seconds, scheduler)


def _write_run(run_dir, metadata, history, table, summary, seconds, scheduler) -> Run:
    """Store a finished run as its ``results.json`` (the file that marks it finished)."""
    schedule = scheduler.history_frame() if scheduler is not None else None
    stored_scheduler = None
    if scheduler is not None:  # enough to build it again when the run is read back
        stored_scheduler = {"depths": scheduler.depths, "sample_counts": scheduler.sample_counts,
                            "state": scheduler.get_state(), "options": _json_options(
                                {k: getattr(scheduler, k) for k in DST_OPTIONS})}  # fmt: skip
    runs.make_run_dir(run_dir)
    runs.atomic_write_json(run_dir / RESULTS, {
        "metadata": metadata, "history": history, "table": table.to_dict(orient="index"),
        "index_name": table.index.name, "summary": summary.to_dict(), "seconds": seconds,
        "schedule": None if schedule is None else schedule.to_dict(orient="list"),
        "scheduler": stored_scheduler})  # fmt: skip
    return Run(history, table, summary, run_dir, seconds, schedule, scheduler=scheduler)


RESULTS = "results.json"
"""The file that marks a finished run: history, test table, summary, seconds."""


def _model_settings(settings: CelebaSettings) -> tuple:
    """What the model, optimizer and method objects of a run depend on: runs that differ
    only in their data or loss weights (hidden labels, single-task baselines) reuse them.
    The devices (the distribution the variables were made under) are part of it, and with
    ``learning_rate_decay`` the schedule's steps per epoch and epochs (its boundaries)."""
    fields = ("attributes", "image_size", "weights", "learning_rate", "weight_decay",
              "learning_rate_decay", "mixed_precision", "jit_compile", "devices")  # fmt: skip
    decay = settings.learning_rate_decay
    schedule = (steps_per_epoch(settings), settings.epochs) if decay else None
    return (*(getattr(settings, f) for f in fields), schedule)


def steps_per_epoch(settings: CelebaSettings) -> int:
    """Training steps in one epoch of the settings' data (a smaller last batch counts)."""
    return math.ceil(len(_train_labels(settings)) / settings.batch_size)


def celeba_learning_rate(settings: CelebaSettings):
    """``settings.learning_rate``, or with ``learning_rate_decay=(factor, every)`` a schedule
    that multiplies it by ``factor`` at the start of epochs every, 2 every, ... (counted
    from 1), as Sener & Koltun's training loop does (``(epoch + 1) % 10 == 0``: epochs 10,
    20, ... run at 0.85, 0.85², ... of the rate). It counts optimizer steps, so a resumed
    run continues it where it stopped."""
    if not settings.learning_rate_decay:
        return settings.learning_rate
    factor, every = settings.learning_rate_decay
    starts = range(every, settings.epochs + 1, every)  # 1-based epochs where a decay begins
    steps = steps_per_epoch(settings)
    boundaries = [(start - 1) * steps - 1 for start in starts]  # last step at the old rate
    values = [settings.learning_rate * factor**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return settings.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def celeba_optimizer(settings: CelebaSettings) -> keras.optimizers.Optimizer:
    """Adam at :func:`celeba_learning_rate`, with decoupled weight decay when
    ``settings.weight_decay`` is positive (the tuned equal-weighting baseline of notebook 07)."""
    decay = settings.weight_decay or None
    return keras.optimizers.Adam(celeba_learning_rate(settings), weight_decay=decay)


def _loss_weights(settings: CelebaSettings) -> dict[str, float]:
    """1 for every attribute, or 1 for ``single_task`` and 0 for the others: their heads then
    get no gradient, and the backbone learns from that one attribute alone."""
    alone = settings.single_task
    return {a: float(alone is None or a == alone) for a in settings.attributes}


def _fit_celeba(model, datasets, settings, run_dir, metadata, verbose, callbacks) -> dict:
    """Notebook 03's way: ``compile`` + resumable ``fit``; leaves the final weights in ``model``."""
    training.compile_multitask(model, learning_rate=settings.learning_rate, binary=True,
                               loss_weights=_loss_weights(settings),
                               jit_compile=settings.jit_compile,
                               optimizer=celeba_optimizer(settings))  # fmt: skip
    history = training.fit_resumable(
        lambda: model, datasets["train"](0), epochs=settings.epochs, run_dir=run_dir,
        validation_data=datasets["validation"], verbose=verbose, callbacks=callbacks,
        metadata=metadata, save_weights=True, backups=settings.checkpoints,
    )  # fmt: skip
    model.load_weights(run_dir / training.FINAL_WEIGHTS)
    return history


def _train_labels(settings: CelebaSettings) -> pd.DataFrame:
    """The training labels the run saw (hidden ones as -1); read once per process for the
    same data (on TFDS, reading them walks the whole training split's records)."""
    key = (settings.source, settings.data_dir, settings.attributes, settings.train_limit,
           settings.hide_labels)  # fmt: skip
    return _labels_of(*key).copy()


@functools.lru_cache(maxsize=8)
def _labels_of(source, data_dir, attributes, limit, hidden) -> pd.DataFrame:
    return data.load_labels("train", attributes, source, data_dir=data_dir, limit=limit,
                            hide_labels=dict(hidden) or None)  # fmt: skip


def _scheduler(model, settings: CelebaSettings, seed: int, options: dict | None):
    """A DST scheduler with this model's depths and this data's labelled-example counts."""
    counts = dst.labelled_counts(_train_labels(settings))
    return dst.DSTScheduler(settings.attributes, depths=graph.task_depths(model),
                            sample_counts=counts, seed=seed, **(options or {}))  # fmt: skip


def _read_run(run_dir: Path) -> Run:
    try:
        stored = json.loads((run_dir / RESULTS).read_text())
        missing = sorted({"history", "table", "summary"} - set(stored))
        problem = f"no {missing}" if missing else ""
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        problem = f"unreadable: {err}"
    if problem:
        raise ValueError(f"{run_dir / RESULTS} is damaged ({problem}). Delete it (or the run "
                         "folder) to train this run again, or pass recompute=True.")  # fmt: skip
    table = pd.DataFrame.from_dict(stored["table"], orient="index")
    table.index.name = stored.get("index_name", "attribute")
    schedule = pd.DataFrame(stored["schedule"]) if stored.get("schedule") else None
    summary = pd.Series(stored["summary"])
    seconds = stored.get("seconds")
    seconds = float("nan") if seconds is None else float(seconds)
    scheduler = None
    if stored.get("scheduler"):
        record = stored["scheduler"]
        state = record["state"]
        options = record.get("options") or {"metrics": state["metrics"]}  # (older files)
        scheduler = dst.DSTScheduler(state["tasks"], record["depths"], record["sample_counts"],
                                     **options)  # fmt: skip
        scheduler.set_state(state)
    return Run(stored["history"], table, summary, run_dir, seconds, schedule, read_back=True,
               scheduler=scheduler)  # fmt: skip
