"""Task interference, measured: do the tasks pull the weights they share the same way?

On shared weights two task gradients can conflict (a negative cosine) or differ wildly in
size (a gradient magnitude similarity, GMS, near 0). :func:`task_gradients` gives each
task's gradient on one batch; :func:`gradient_stats` the cosines, norms, GMS and a
per-layer view (:func:`gradient_similarity`: the cosines); :class:`GradientProbe` measures
during ``fit`` or :func:`mtlkit.training.train`; :func:`convergence` gives ``L_j(e)/L_j(0)``.

Every measurement is a training-mode forward pass (dropout on, BatchNorm on batch
statistics) through ``model.stateless_call``; the moving statistics and dropout random
states it returns are thrown away, so measuring changes nothing in the model.

**Partial labels.** A label below 0 (CelebA's ``-1``) means "unknown": each task's loss is
its mean over the examples that carry its label, as in :func:`mtlkit.training.train`. A
task with *no* labelled example in the measured batch has no mean loss there (0/0): its
loss, its gradient and every statistic involving it (cosines, norm, GMS, conflict share) are
NaN, and a warning names it -- never a number that looks like a measurement. Measure on a
batch that carries its labels, or leave it out of ``losses``. A batch without any labelled
example for the measured tasks is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd

from mtlkit import backend
from mtlkit.models import sharing
from mtlkit.models import tasks as task_utils
from mtlkit.training import runs

DEFAULT_EVERY = 100
"""Training steps between two probes of :class:`GradientProbe` (plus one at each epoch end)."""


# --------------------------------------------------------------------------- inputs
def _select(model: keras.Model, variables) -> list[int]:
    """Indices into ``model.trainable_variables`` of ``variables``: Keras variables, or
    strings -- a layer of the model (nested sub-models too), a variable path or path prefix."""
    trainable, chosen = model.trainable_variables, []
    for item in variables:
        named = isinstance(item, str)
        layer = next((la for la in model.layers if named and la.name == item), None)
        wanted = layer.trainable_variables if layer else [item]
        found = [v for v in trainable if any(v is w for w in wanted)]
        found = found or [v for v in trainable if named and (v.path + "/").startswith(item + "/")]
        if not found:
            raise ValueError(
                f"{getattr(item, 'path', item)!r} is no trainable variable or layer of model "
                f"{model.name!r}. Pass variables, layer names or paths like {trainable[0].path!r}."
            )
        chosen += [i for i, v in enumerate(trainable) if any(v is f for f in found)]
    return list(dict.fromkeys(chosen))


def _measure(model, x, y, losses, variables) -> SimpleNamespace:
    """Every task's gradient on every trainable variable; keep ``variables`` (or the shared).
    A task without a labelled example gets NaN for its loss and gradient, and a warning."""
    _check_label_forms(model, x, y, losses)
    t = sharing.task_reach(model, x, y, losses)
    raw, paths, trainable = t.raw, t.paths, model.trainable_variables
    missing = [task for task, ok in t.labelled.items() if not ok]
    if len(missing) == len(raw):
        raise ValueError(
            f"No labelled example for any of the tasks {missing} in this batch (every label "
            "is below 0, unknown): there is nothing to measure. Use a batch with labels."
        )
    reached = np.sum(list(t.reach.values()), axis=0)  # how many tasks reach each variable
    if variables is None:
        indices = [i for i, n in enumerate(reached) if n >= 2]
        if not indices:
            raise ValueError(
                f"No trainable variable of model {model.name!r} gets a gradient from two or "
                f"more of the tasks {list(raw)}: they share nothing, so there is no "
                "interference to measure. Pass variables=[...] to compare the tasks' "
                "gradients on variables of your choice."
            )
    else:
        indices = _select(model, variables)
        unreached = [paths[i] for i in indices if reached[i] == 0]
        if unreached:
            raise ValueError(
                f"No task's loss reaches {unreached}: every gradient there is zero. Choose "
                "variables between the input and the tasks' outputs (or leave variables=None "
                "for the ones the tasks share)."
            )
    grads = {
        task: [_gradient_or_nan(g[i], trainable[i], t.labelled[task]) for i in indices]
        for task, g in raw.items()
    }
    if missing:
        warnings.warn(
            f"Task(s) {missing} have no labelled example in this batch (every label is below "
            "0, unknown): their loss, gradient and every statistic involving them are NaN. "
            "Measure on a batch that carries their labels, or leave them out of losses.",
            stacklevel=3,
        )
    means = {task: float(v) if t.labelled[task] else np.nan for task, v in t.values.items()}
    chosen = [paths[i] for i in indices]
    return SimpleNamespace(
        tasks=list(raw), fns=t.fns, indices=indices, paths=chosen, losses=means, gradients=grads
    )


def _check_label_forms(model: keras.Model, x, y, losses) -> None:
    """Training's first-batch checks on the measured batch, each a ``ValueError`` naming the
    task and the fix: :func:`mtlkit.models.tasks.check_label_forms` (CelebA's own -1/1
    labels given to a binary task -- their -1 means absent, not unknown --, one-hot labels
    for a sparse loss, a two-logit head with a binary loss, unbatched labels) and class
    labels as large as the head's width (a raw TensorFlow error otherwise)."""
    outputs = getattr(model, "output", None) if model.built else None
    if not isinstance(outputs, Mapping):
        return  # not built, or not a dict of outputs: task_reach says so
    fns = sharing.loss_functions(model, losses, dict.fromkeys(outputs), y)
    shapes = {t: tuple(outputs[t].shape) for t in fns}
    binary = {t: task_utils.loss_kind(f) == "binary_crossentropy" for t, f in fns.items()}
    task_utils.check_label_forms(x, y, shapes, binary)
    sparse = [
        t for t, f in fns.items() if task_utils.loss_kind(f) == "sparse_categorical_crossentropy"
    ]
    widths = {t: shapes[t][-1] for t in sparse}
    big = {t: w for t, w in widths.items() if (np.asarray(y[t], dtype=float) >= w).any()}
    if big:
        raise ValueError(
            f"Task(s) {list(big)}: {task_utils.LABEL_TOO_BIG} ({big}). Check the labels' range "
            "against the head's width, or the head's width against the number of classes."
        )


def _gradient_or_nan(gradient, variable, labelled: bool):
    """A task's gradient on a variable: zeros where it does not reach, NaN without labels."""
    if not labelled:
        return keras.ops.full(variable.shape, np.nan, dtype=variable.dtype)
    return gradient if gradient is not None else keras.ops.zeros_like(variable.value)


def task_gradients(model: keras.Model, x, y, losses=None, variables=None) -> dict[str, dict]:
    """Each task's gradient of its mean loss on one batch: ``{task: {variable path: grad}}``.

    ``model``: built, with a dict of outputs keyed by task; ``x, y``: one batch (``y`` a dict
    ``{task: labels}``, a label below 0 meaning unknown); ``losses``: ``{task: loss}`` for the
    tasks to measure (two or more) or one loss for every output -- a ``keras.losses`` name,
    object or function, averaged over the examples carrying the task's label, no loss
    weights; ``None``: the compiled model's. A task with no labelled example in the batch
    gets a NaN gradient and a warning (module doc). ``variables``: Keras
    variables, layer names (nested sub-models too) or variable paths; by default every
    trainable variable with a non-zero gradient from at least two tasks (the trunk of
    ``shared_conv``; the coarse trunk and head of ``reuse_coarse``, which the fine loss
    reaches through the reused logits). A task that does not reach a variable gets zeros.
    """
    m = _measure(model, x, y, losses, variables)
    return {t: dict(zip(m.paths, g)) for t, g in m.gradients.items()}


# ------------------------------------------------------------------------ statistics
def cosine_matrix(gram: np.ndarray) -> np.ndarray:
    """Cosines ``g_i . g_j / (|g_i| |g_j|)`` from the gradients' Gram matrix (NaN: zero norm)."""
    gram = np.asarray(gram, dtype=float)
    norms = np.sqrt(np.clip(np.diag(gram), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(gram / np.outer(norms, norms), -1.0, 1.0)


def magnitude_matrix(gram: np.ndarray) -> np.ndarray:
    """Gradient magnitude similarity ``2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)`` (1: equal norms)."""
    squares = np.clip(np.diag(np.asarray(gram, dtype=float)), 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * np.sqrt(np.outer(squares, squares)) / (squares[:, None] + squares[None, :])


def _pairs(tasks: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(i, j, "a|b")`` for every pair of tasks."""
    pairs = itertools.combinations(range(len(tasks)), 2)
    return [(i, j, f"{tasks[i]}|{tasks[j]}") for i, j in pairs]


@dataclasses.dataclass
class GradientStats:
    """One measurement: the tasks' mean losses, and ``layer_grams[l, i, j] = g_i . g_j`` over
    the variables of layer ``l`` (a variable path without its last part); summed: the whole."""

    tasks: list[str]
    layers: list[str]
    losses: np.ndarray
    layer_grams: np.ndarray

    @property
    def gram(self) -> np.ndarray:
        return self.layer_grams.sum(axis=0)

    def _table(self, matrix: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(matrix, index=pd.Index(self.tasks, name="task"), columns=self.tasks)

    def cosine(self) -> pd.DataFrame:
        """Task x task cosine similarities of the gradients (negative: conflict)."""
        return self._table(cosine_matrix(self.gram))

    def norms(self) -> pd.Series:
        """Each task's gradient norm ``|g_j|``."""
        return pd.Series(np.sqrt(np.clip(np.diag(self.gram), 0, None)), self.tasks, name="norm")

    def magnitude_similarity(self) -> pd.DataFrame:
        """Task x task gradient magnitude similarity (near 0: one task's gradient dominates)."""
        return self._table(magnitude_matrix(self.gram))

    def per_layer(self) -> pd.DataFrame:
        """Per layer: every pair's cosine (``cos a|b``) and every task's norm (``norm a``)."""
        cos = np.array([cosine_matrix(g) for g in self.layer_grams])
        columns = {f"cos {name}": cos[:, i, j] for i, j, name in _pairs(self.tasks)}
        for i, t in enumerate(self.tasks):
            columns[f"norm {t}"] = np.sqrt(np.clip(self.layer_grams[:, i, i], 0, None))
        return pd.DataFrame(columns, index=pd.Index(self.layers, name="layer"))


def _by_layer(paths: Sequence[str], variable_grams) -> tuple[list[str], np.ndarray]:
    """Layers (a variable's path without its last part) and the (L, K, K) Gram matrices."""
    names = [p.rsplit("/", 1)[0] for p in paths]
    layers = list(dict.fromkeys(names))
    grams = np.zeros((len(layers), *np.shape(variable_grams)[1:]))
    np.add.at(grams, [layers.index(n) for n in names], np.asarray(variable_grams, dtype=float))
    return layers, grams


def _variable_grams(gradients: Mapping[str, Sequence]) -> np.ndarray:
    """(V, K, K) dot products of the tasks' gradients, variable by variable, in float64."""
    grams = []
    for per_variable in zip(*gradients.values()):
        rows = np.stack([np.ravel(np.asarray(g, dtype=np.float64)) for g in per_variable])
        grams.append(rows @ rows.T)
    return np.array(grams)


def gradient_stats(model: keras.Model, x, y, losses=None, variables=None) -> GradientStats:
    """All statistics of the task gradients on one batch (arguments: :func:`task_gradients`)."""
    m = _measure(model, x, y, losses, variables)
    layers, grams = _by_layer(m.paths, _variable_grams(m.gradients))
    return GradientStats(m.tasks, layers, np.array([m.losses[t] for t in m.tasks]), grams)


def gradient_similarity(model: keras.Model, x, y, losses=None, variables=None) -> pd.DataFrame:
    """Task x task cosine similarity of the task gradients on ``variables`` (one batch)."""
    return gradient_stats(model, x, y, losses, variables).cosine()


def convergence(history: Mapping, tasks: Sequence[str], initial: Mapping | None = None):
    """``L_j(e) / L_j(0)`` per epoch for every task (DST's A_j), from ``<task>_loss``.
    ``initial``: the losses before training (:attr:`GradientProbe.initial_losses`, a DST
    scheduler's ``initial``); row 0 is then 1. Without it, the ratios are to epoch 1.

    A task whose first loss is NaN (no labelled example in that epoch or probe batch) is
    divided by its first finite loss instead, with a warning naming the task and that row
    (dividing by NaN would make its whole column NaN)."""
    missing = [t for t in tasks if f"{t}_loss" not in history]
    if missing:
        raise ValueError(f"history has no <task>_loss for {missing}; keys: {sorted(history)}.")
    frame = pd.DataFrame({t: history[f"{t}_loss"] for t in tasks}, dtype=float)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
    if initial is not None:
        start = pd.DataFrame([{t: float(initial[t]) for t in tasks}], index=pd.Index([0]))
        frame = pd.concat([start, frame]).rename_axis("epoch")
    return frame / _first_finite(frame)


def _first_finite(frame: pd.DataFrame) -> pd.Series:
    """Each column's first finite value (NaN if none), warning for a column whose first row
    is not finite."""
    finite = frame.where(np.isfinite(frame))
    first = finite.bfill().iloc[0]
    moved = {t: finite[t].first_valid_index() for t in frame if not np.isfinite(frame[t].iloc[0])}
    if moved:
        where = ", ".join(
            f"{t!r} to epoch {e}" if e is not None else f"{t!r} stays NaN (no finite loss)"
            for t, e in moved.items()
        )
        warnings.warn(
            f"convergence: the first loss of {list(moved)} is NaN or infinite (no labelled "
            f"example there?), so their ratios are to their first finite loss instead: {where}.",
            stacklevel=2,
        )
    return first


# --------------------------------------------------------------------- the callback
def _compiled_probe(model: keras.Model, loss_fns: Mapping, indices: Sequence[int]):
    """A compiled ``(trainable, non-trainable values, x, y) -> (task losses (K,),
    per-variable Gram matrices (V, K, K))`` (:func:`mtlkit.backend.compile_function`); a
    task without a labelled example gets NaN for its loss and its rows of the Grams."""
    ops = keras.ops

    def probe(trainable, fixed, x, y):
        def losses_of(values):
            outputs = sharing.forward(model, values, fixed, x)
            values = sharing.masked_losses(loss_fns, y, outputs)[0]
            return [values[t] for t in loss_fns]

        # only the chosen variables are differentiated: no gradient for the other weights
        values, rows = backend.task_gradients(losses_of, trainable, watched=indices)
        grams = []
        for per_variable in zip(*rows):
            flat = ops.stack([ops.reshape(ops.cast(g, "float32"), (-1,)) for g in per_variable])
            grams.append(ops.matmul(flat, ops.transpose(flat)))
        counts = [ops.sum(task_utils.label_mask(y[t])) for t in loss_fns]
        labelled = ops.stack([c > 0 for c in counts])
        both = ops.logical_and(labelled[:, None], labelled[None, :])
        nan = ops.convert_to_tensor(np.nan, "float32")
        return ops.where(labelled, values, nan), ops.where(both[None], ops.stack(grams), nan)

    return backend.compile_function(probe)


class GradientProbe(keras.callbacks.Callback):
    """Measure the task gradients on a fixed probe batch while ``fit`` or ``train`` runs.

    ``x, y, losses, variables`` as in :func:`task_gradients`; a task with no labelled
    example in the probe batch is measured as NaN (warned once, when training begins), so its
    cosines, norm and conflict share read NaN, not "no conflict". Probes are taken before
    training (step 0), every ``every`` steps within an epoch (``None``: never) and at each
    epoch end, each costing one forward and K backward passes on the probe batch; each keeps
    the losses and per-layer Gram matrices (``records``): see :meth:`frame`,
    :meth:`layer_frame`, :meth:`stats`. ``epoch_logs=True`` adds to the epoch's logs (so to
    ``fit``'s history) ``grad_cos_<a>_<b>`` (mean cosine), ``grad_conflict_<a>_<b>`` (share
    of probes below 0) and ``grad_norm_<task>``. With ``path`` (a JSON file in the run
    folder) the series is written at every epoch end and read back when training resumes
    (probes of epochs the resumed run repeats are dropped) or by :meth:`read`.
    """

    def __init__(
        self, x, y, losses=None, *, variables=None, every=DEFAULT_EVERY, path=None, epoch_logs=True
    ):
        super().__init__()
        if every is not None and (type(every) is not int or every < 1):
            raise ValueError(f"every must be a positive number of steps or None, got {every!r}.")
        self.x, self.y, self.losses, self.variables = x, y, losses, variables
        self.every, self.epoch_logs = every, epoch_logs
        self.path = Path(path) if path is not None else None
        self.tasks, self.paths, self.layers = [], [], []
        self.records: list[dict] = []
        self.epoch_steps: list[int] = []  # steps of each finished epoch

    # ---- training hooks
    def on_train_begin(self, logs=None):
        m = _measure(self.model, self.x, self.y, self.losses, self.variables)
        self.tasks, self.paths = m.tasks, m.paths
        self._x = keras.tree.map_structure(keras.ops.convert_to_tensor, self.x)
        self._y = {t: keras.ops.convert_to_tensor(self.y[t]) for t in self.tasks}
        self._fn = _compiled_probe(self.model, m.fns, m.indices)
        self.layers, grams = _by_layer(self.paths, _variable_grams(m.gradients))
        self._initial = self._record(0, 0, [m.losses[t] for t in self.tasks], grams, 0.0)
        self._load()
        self._start, self._pending = None, []

    def on_epoch_begin(self, epoch, logs=None):
        if self._start is None:  # the first epoch of this run: forget what it will redo
            self._start = epoch
            self.records = [r for r in self.records if r["position"] <= epoch]
            del self.epoch_steps[epoch:]
            if epoch == 0 and not self.records:
                self.records.append(self._initial)
        self._epoch, self._batch, self._pending = epoch, 0, []

    def on_train_batch_begin(self, batch, logs=None):
        # Before step `batch` = after `batch` steps. Probing here rather than after a step
        # leaves Keras's asynchronous on_train_batch_end to the other callbacks.
        self._batch = batch
        if self.every and batch and batch % self.every == 0:
            self._pending.append(self._probe(batch))

    def on_epoch_end(self, epoch, logs=None):
        steps = self._batch + 1
        self._pending.append(self._probe(steps))
        for r in self._pending:
            r["position"] = epoch + r["batch"] / steps
        self.records += self._pending
        self.epoch_steps.append(steps)
        if logs is not None and self.epoch_logs:
            logs.update(self._summary(self._pending))
        self._save()

    # ---- measuring and storing
    def _probe(self, batch: int) -> dict:
        model = self.model
        trainable = sharing.variable_values(model.trainable_variables)
        fixed = sharing.variable_values(model.non_trainable_variables)
        losses, grams = self._fn(trainable, fixed, self._x, self._y)
        grams = _by_layer(self.paths, np.asarray(grams))[1]
        return self._record(self._epoch, batch, np.asarray(losses).tolist(), grams)

    def _record(self, epoch, batch, losses, grams, position=None) -> dict:
        step = sum(self.epoch_steps[:epoch]) + batch
        return dict(
            epoch=epoch, batch=batch, step=step, position=position, losses=losses, grams=grams
        )

    def _summary(self, records: list[dict]) -> dict[str, float]:
        grams = np.array([r["grams"].sum(0) for r in records])
        cos = np.array([cosine_matrix(g) for g in grams])
        logs = {}
        for i, j, name in _pairs(self.tasks):
            key, pair = name.replace("|", "_"), cos[:, i, j]
            logs[f"grad_cos_{key}"] = float(pair.mean())
            conflict = np.where(np.isnan(pair), np.nan, pair < 0)  # NaN: not measured
            logs[f"grad_conflict_{key}"] = float(conflict.mean())
        norms = np.sqrt(np.clip(np.diagonal(grams, axis1=1, axis2=2), 0, None)).mean(0)
        return {**logs, **{f"grad_norm_{t}": float(n) for t, n in zip(self.tasks, norms)}}

    def _save(self) -> None:
        if self.path is None:
            return
        records = [{**r, "grams": r["grams"].tolist()} for r in self.records]
        payload = dict(tasks=self.tasks, variables=self.paths, epoch_steps=self.epoch_steps)
        payload["records"] = records
        self.path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_json(self.path, payload)  # a reader never sees half a file

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        stored = json.loads(self.path.read_text())
        if stored["tasks"] != self.tasks or stored["variables"] != self.paths:
            raise ValueError(
                f"{self.path} holds probes of other tasks or variables ({stored['tasks']}, "
                f"{len(stored['variables'])} variables). Use a fresh path for this run."
            )
        self.epoch_steps = stored["epoch_steps"]
        self.records = [{**r, "grams": np.array(r["grams"])} for r in stored["records"]]

    # ---- reading the series
    @classmethod
    def read(cls, path: str | os.PathLike) -> GradientProbe:
        """The series a run stored at ``path`` (e.g. a finished run that is not retrained)."""
        stored = json.loads(Path(path).read_text())
        probe = cls(None, None, path=path)
        probe.tasks, probe.paths = stored["tasks"], stored["variables"]
        probe.layers = _by_layer(probe.paths, np.zeros((len(probe.paths), 1, 1)))[0]
        probe._load()
        return probe

    def stats(self, i: int = -1) -> GradientStats:
        """The measurement of probe ``i`` (0: before training, -1: the last)."""
        if not self.records:
            raise ValueError("No probe yet: train with this callback first.")
        r = self.records[i]
        return GradientStats(self.tasks, self.layers, np.array(r["losses"]), r["grams"])

    def _index(self) -> pd.Index:
        return pd.Index([r["position"] for r in self.records], name="epochs trained")

    def frame(self) -> pd.DataFrame:
        """One row per probe (index: epochs trained): the step; per task the loss and the
        gradient norm; per pair the cosine (``cos a|b``) and the GMS (``gms a|b``)."""
        rows = []
        for n, r in enumerate(self.records):
            s = self.stats(n)
            cos, gms = cosine_matrix(s.gram), magnitude_matrix(s.gram)
            row = {"step": r["step"], **{f"loss {t}": v for t, v in zip(self.tasks, r["losses"])}}
            row.update({f"norm {t}": v for t, v in s.norms().items()})
            row.update({f"cos {name}": cos[i, j] for i, j, name in _pairs(self.tasks)})
            row.update({f"gms {name}": gms[i, j] for i, j, name in _pairs(self.tasks)})
            rows.append(row)
        return pd.DataFrame(rows, index=self._index())

    def layer_frame(self, a: str | None = None, b: str | None = None) -> pd.DataFrame:
        """Cosine of tasks ``a`` and ``b`` (default: the first two) per layer (columns) and
        probe (rows). ``(probe.layer_frame() < 0).mean()``: each layer's conflict rate (NaN
        cosines, from a task without labels in the probe batch, would count as no conflict:
        check ``.isna()`` first)."""
        a, b = a or self.tasks[0], b or self.tasks[1]
        if a not in self.tasks or b not in self.tasks:
            raise ValueError(f"Pick two of the probed tasks {self.tasks}, not {a!r} and {b!r}.")
        i, j = self.tasks.index(a), self.tasks.index(b)
        values = [[cosine_matrix(g)[i, j] for g in r["grams"]] for r in self.records]
        return pd.DataFrame(values, self._index(), pd.Index(self.layers, name="layer"))

    @property
    def initial_losses(self) -> dict[str, float] | None:
        """Each task's loss on the probe batch before training (``None``: not recorded)."""
        first = next((r for r in self.records if r["step"] == 0), None)
        return dict(zip(self.tasks, first["losses"])) if first else None
