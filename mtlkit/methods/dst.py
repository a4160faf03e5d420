"""Dropped Scheduled Task (DST): decide, every epoch, which tasks take part in training.

Malhotra, Vatsa and Singh (TMLR 2023) train a multi-task network on
``sum_j g_j * w_j * L_j``, where the *gate* ``g_j`` of task ``j`` is drawn once per
epoch, ``g_j ~ Bernoulli(p_j)``. The *keep probability* ``p_j`` mixes four metrics, each
in ``[0, 1]`` (higher = train the task more often):

* **depth** ``D_j = d_j / max_k d_k`` -- weighted layers on the longest path to the
  task's output (:func:`mtlkit.models.graph.task_depths` counts them);
* **samples** ``N_j = n_j / max_k n_k`` -- how many training examples carry a label;
* **incompleteness** ``I_j = clip(A_j / mean_k A_k, 0, 1)`` with ``A_j = L_j^(e) / L_j^(0)``
  -- how much of its starting loss a task still has, relative to the other tasks;
* **stagnancy** ``S_j = clip(mean_k r_k / r_j, 0, 1)`` -- ``r_j`` is a running
  (exponential, ``alpha``) rate of relative loss decrease divided by ``I_j``; a rate
  below the average gives ``S_j = 1``. When a loss did not fall, ``r_j`` is left as it was.

``p_j = (1 + sum of the enabled metrics) / (1 + number enabled)``, so with all four
``p_j`` lies in ``[0.2, 1]``. Epoch 1 trains every task; the metrics measured at the end
of epoch ``e`` set the gates of epoch ``e + 1``. ``L_j^(0)`` comes from an epoch-0 pass
over the training data with no parameter update (:meth:`DSTScheduler.observe_initial`).

**When every gate comes out 0.** The original does nothing special: the epoch then
trains no task. This kit *redraws* by default (``redraw_if_all_dropped=True``): the whole
set of gates is drawn again until at least one task is on, so every epoch trains
something. The price is a small bias: task ``j`` is then kept with probability
``p_j / (1 - prod_k (1 - p_k))`` instead of ``p_j`` (with two tasks at ``p = 0.2``:
0.56 instead of 0.2; with the usual ``p`` near 0.6-1 the difference is negligible).
Pass ``redraw_if_all_dropped=False`` for the original behaviour. The number of redraws
is recorded in :attr:`DSTScheduler.history`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mtlkit.data import celeba_labels
from mtlkit.models.tasks import check_names

METRICS = ("depth", "samples", "incompleteness", "stagnancy")
"""The four DST metrics, in the paper's order."""

_GUARD = 1e-12  # stands in for a zero divisor (a loss that reached exactly 0)


def labelled_counts(labels) -> dict[str, int]:
    """DST's ``sample_counts``: per task, how many examples carry a label (label >= 0).

    ``labels``: a DataFrame with a column per task, or ``{task: array}`` (``-1`` = unknown,
    as in :func:`mtlkit.data.load_labels` with ``hide_labels``). Any other negative label,
    a NaN, and CelebA's own -1/1 file form (where -1 means "absent") are refused.
    """
    return {str(t): _labelled(t, v) for t, v in labels.items()}


def _labelled(task, values) -> int:
    """How many of one task's labels are known, or a ValueError naming the task."""
    values = np.asarray(values, dtype=float)
    bad = np.isnan(values) | ((values < 0) & (values != celeba_labels.UNKNOWN))
    if bad.any():
        raise ValueError(
            f"Task {task!r} has labels {sorted(set(values[bad].tolist()), key=str)[:5]}: "
            "labels are classes (0, 1, ...) and only -1 means unknown."
        )
    if celeba_labels.raw_celeba_form(values):
        raise ValueError(f"Task {task!r}: {celeba_labels.RAW_FORM}")
    return int((values >= 0).sum())


# ------------------------------------------------------------------- input checking
def _check_losses(losses: Mapping[str, float], tasks: Sequence[str], what: str) -> dict[str, float]:
    """Losses for exactly ``tasks``, as finite non-negative floats, or a clear error."""
    if not isinstance(losses, Mapping):
        raise TypeError(f"{what} must be a dict {{task: mean loss}}, got {type(losses).__name__}.")
    check_names(losses, tasks, what)
    out = {}
    for t in tasks:
        value = float(losses[t])
        if not math.isfinite(value):
            raise ValueError(
                f"{what}: the loss of task {t!r} is {value}. DST needs finite losses; "
                "lower the learning rate or look for NaNs in the data."
            )
        if value < 0:
            raise ValueError(
                f"{what}: the loss of task {t!r} is negative ({value}); "
                "DST's ratios need losses >= 0."
            )
        out[t] = value
    return out


def _check_per_task(values, tasks: Sequence[str], name: str) -> dict[str, float] | None:
    """``depths`` / ``sample_counts``: a positive number for every task, or None."""
    if values is None:
        return None
    values = dict(values)
    check_names(values, tasks, name)
    bad = {t: v for t, v in values.items() if not (math.isfinite(float(v)) and float(v) >= 0)}
    if bad or max(float(v) for v in values.values()) <= 0:
        raise ValueError(f"{name} must be non-negative numbers, not all 0; got {values}.")
    return {t: float(values[t]) for t in tasks}


def _check_metrics(metrics) -> tuple[str, ...]:
    """Distinct names from :data:`METRICS`, in METRICS's order: ``p_j`` sums the enabled
    metrics, so the order they are given in must not change it (not even its last digit)."""
    given = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in given if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown DST metric(s) {unknown}; choose from {METRICS}.")
    if len(set(given)) != len(given):
        raise ValueError(f"metrics={given} names a metric twice; name each once.")
    return tuple(m for m in METRICS if m in given)


def _check_alpha(alpha) -> float:
    """The stagnancy smoothing: a number in (0, 1], or a clear error."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number in (0, 1], e.g. 0.1; got {alpha!r}.")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}.")
    return float(alpha)


def _relative(values: Mapping[str, float]) -> dict[str, float]:
    """Each value divided by the largest one."""
    top = max(values.values())
    return {t: v / top for t, v in values.items()}


# ------------------------------------------------------------------------ scheduler
class DSTScheduler:
    """Keep probabilities and per-epoch gates of Dropped Scheduled Task (see the module doc).

    Args:
        tasks: task names (the model's output names).
        depths: ``{task: weighted layers to its output}``, e.g. from
            :func:`mtlkit.models.graph.task_depths`; needed by the ``"depth"`` metric.
        sample_counts: ``{task: labelled training examples}``; needed by ``"samples"``.
        metrics: any subset of :data:`METRICS`; with none, every ``p_j`` is 1.
        alpha: smoothing of the stagnancy rate (the paper: 0.1).
        seed: seeds the NumPy generator that draws the gates.
        redraw_if_all_dropped: draw all gates again when every one came out 0
            (module doc); False keeps such an epoch, as the original does.
        rescale_losses: expose ``w_j = mean_k L_k^(0) / L_j^(0)`` as :attr:`loss_scales`
            so that every task starts at the same loss (the reference's optional step).

    Use: ``observe_initial`` once with the epoch-0 mean losses; then per epoch ``sample()``
    for the gates, train, and ``observe_epoch`` with that epoch's mean training losses.
    """

    def __init__(
        self,
        tasks: Iterable[str],
        depths: Mapping[str, float] | None = None,
        sample_counts: Mapping[str, float] | None = None,
        metrics: Iterable[str] = METRICS,
        alpha: float = 0.1,
        seed: int | None = None,
        *,
        redraw_if_all_dropped: bool = True,
        rescale_losses: bool = False,
    ):
        self.tasks = list(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names, at least one; got {self.tasks}.")
        self.metrics = _check_metrics(metrics)
        self.depths = _check_per_task(depths, self.tasks, "depths")
        self.sample_counts = _check_per_task(sample_counts, self.tasks, "sample_counts")
        if "depth" in self.metrics and self.depths is None:
            raise ValueError(
                "The 'depth' metric needs depths={task: layers}: pass "
                "mtlkit.models.graph.task_depths(model), or drop 'depth' from metrics."
            )
        if "samples" in self.metrics and self.sample_counts is None:
            raise ValueError(
                "The 'samples' metric needs sample_counts={task: labelled examples}, "
                "or drop 'samples' from metrics."
            )
        self.alpha = _check_alpha(alpha)
        self.seed = _check_seed(seed)
        self.redraw_if_all_dropped = bool(redraw_if_all_dropped)
        self.rescale_losses = bool(rescale_losses)
        self.rng = np.random.default_rng(seed)
        self.initial: dict[str, float] | None = None
        self._gates: dict[str, int] | None = None  # drawn for the epoch being trained
        self._redraws = 0
        self.history: list[dict] = []

    # -- where it stands: read from the history ---------------------------------------
    @property
    def epoch(self) -> int:
        """Training epochs observed so far."""
        return len(self.history)

    @property
    def previous(self) -> dict[str, float] | None:
        """The last observed epoch's mean losses (None before the first)."""
        return self.history[-1]["loss"] if self.history else None

    @property
    def rates(self) -> dict[str, float] | None:
        """The running improvement rates ``r_j`` after the last epoch (None before)."""
        return self.history[-1]["rate"] if self.history else None

    @property
    def probabilities(self) -> dict[str, float]:
        """Every task's keep probability ``p_j`` for the next epoch (1 before the first)."""
        if not self.history:
            return {t: 1.0 for t in self.tasks}
        return dict(self.history[-1]["next_probability"])

    # -- observing --------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Start the gate generator again from ``seed`` (``train`` does this for ``seed=``)."""
        self.seed = _check_seed(seed)
        self.rng = np.random.default_rng(seed)

    def observe_initial(self, losses: Mapping[str, float]) -> None:
        """Record the mean losses of the epoch-0 measuring pass (no parameter update)."""
        losses = _check_losses(losses, self.tasks, "observe_initial(losses)")
        zero = [t for t, v in losses.items() if v == 0]
        if zero:
            raise ValueError(
                f"The starting loss of {zero} is 0: incompleteness divides by it. "
                "Check the labels and the loss."
            )
        self.initial = losses

    @property
    def loss_scales(self) -> dict[str, float]:
        """``w_j``: 1 each, or ``mean_k L_k^(0) / L_j^(0)`` with ``rescale_losses=True``."""
        if not self.rescale_losses:
            return {t: 1.0 for t in self.tasks}
        if self.initial is None:
            raise RuntimeError("loss_scales needs the starting losses: call observe_initial first.")
        mean = float(np.mean(list(self.initial.values())))
        return {t: mean / v for t, v in self.initial.items()}

    def observe_epoch(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Take one training epoch's mean losses; return every task's ``p_j`` for the next epoch."""
        losses = _check_losses(
            losses, self.tasks, f"observe_epoch(losses) at epoch {self.epoch + 1}"
        )
        needs_start = {"incompleteness", "stagnancy"} & set(self.metrics)
        if needs_start and self.initial is None:
            raise RuntimeError(
                f"The metrics {sorted(needs_start)} need the epoch-0 losses: "
                "call observe_initial first."
            )
        values, rates = self._metric_values(losses)
        enabled = [values[m] for m in self.metrics]
        probabilities = {
            t: (1.0 + sum(v[t] for v in enabled)) / (1.0 + len(enabled)) for t in self.tasks
        }
        self.history.append(
            {
                "epoch": self.epoch + 1,
                "loss": losses,
                **values,
                "rate": rates,
                "gate": self._gates or {t: 1 for t in self.tasks},
                "next_probability": probabilities,
                "redraws": self._redraws,
            }
        )
        self._gates, self._redraws = None, 0
        return dict(probabilities)

    def _metric_values(self, losses: dict[str, float]) -> tuple[dict, dict | None]:
        """Every metric that can be computed (all four, when the inputs exist), and the new
        running rates ``r_j`` (None without starting losses)."""
        out: dict[str, dict[str, float] | None] = {m: None for m in METRICS}
        rates = None
        if self.depths is not None:
            out["depth"] = _relative(self.depths)
        if self.sample_counts is not None:
            out["samples"] = _relative(self.sample_counts)
        if self.initial is not None:
            out["incompleteness"] = incompleteness(losses, self.initial)
            rates = self._next_rates(losses, out["incompleteness"])
            out["stagnancy"] = stagnancy(rates)
        return out, rates

    def _next_rates(self, losses: dict[str, float], incomplete: dict[str, float]) -> dict:
        """The running improvement rates ``r_j`` after this epoch."""
        if self.rates is None:  # epoch 1: the improvement over the measuring pass
            return {
                t: abs(self.initial[t] - losses[t]) / self.initial[t] / max(incomplete[t], _GUARD)
                for t in self.tasks
            }
        rates = dict(self.rates)
        for t in self.tasks:
            before = self.previous[t]
            delta = (before - losses[t]) / max(before, _GUARD) / max(incomplete[t], _GUARD)
            if delta > 0:  # a loss that did not fall leaves its rate as it was
                rates[t] = self.alpha * delta + (1 - self.alpha) * rates[t]
        return rates

    # -- drawing ----------------------------------------------------------------------
    def sample(self) -> dict[str, int]:
        """Draw the gates of the next epoch (all 1 before the first ``observe_epoch``)."""
        if self.epoch == 0:
            gates = {t: 1 for t in self.tasks}
        else:
            p = np.array([self.probabilities[t] for t in self.tasks])
            draw = self.rng.random(len(p)) < p
            redraws = 0
            while self.redraw_if_all_dropped and not draw.any():
                draw, redraws = self.rng.random(len(p)) < p, redraws + 1
            gates = {t: int(g) for t, g in zip(self.tasks, draw)}
            self._redraws = redraws
        self._gates = gates
        return dict(gates)

    # -- looking back -----------------------------------------------------------------
    def history_frame(self) -> pd.DataFrame:
        """:attr:`history` as a long table: one row per (epoch, task).

        Columns: ``loss``, the four metrics (NaN where not computable), ``rate`` (``r_j``),
        ``gate`` (used during that epoch), ``next_probability`` (set at its end, used for
        the next epoch's gate) and ``redraws``.
        """
        rows = []
        for record in self.history:
            for t in self.tasks:
                row = {"epoch": record["epoch"], "task": t, "redraws": record["redraws"]}
                for key in ("loss", *METRICS, "rate", "gate", "next_probability"):
                    row[key] = record[key][t] if record[key] is not None else float("nan")
                rows.append(row)
        columns = ["epoch", "task", "loss", *METRICS, "rate", "gate", "next_probability", "redraws"]
        return pd.DataFrame(rows, columns=columns)

    # -- checkpoints ------------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything needed to continue exactly, random generator included (JSON-able)."""
        return {
            "tasks": self.tasks,
            "metrics": list(self.metrics),
            "alpha": self.alpha,
            "redraw_if_all_dropped": self.redraw_if_all_dropped,
            "rescale_losses": self.rescale_losses,
            "seed": self.seed,
            "initial": self.initial,
            "gates": self._gates,
            "redraws": self._redraws,
            "history": self.history,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: Mapping) -> None:
        """Restore :meth:`get_state`'s output; the tasks and metrics must match (the metrics
        in any order). Its settings (alpha, redraws, rescaling) replace this scheduler's."""
        if list(state["tasks"]) != self.tasks or set(state["metrics"]) != set(self.metrics):
            raise ValueError(
                f"This scheduler state is for tasks {state['tasks']} "
                f"with metrics {state['metrics']}, "
                f"not tasks {self.tasks} with metrics {list(self.metrics)}: "
                "build the same scheduler."
            )
        self.alpha, self.seed, self.initial = state["alpha"], state["seed"], state["initial"]
        # (states written before these were kept leave this scheduler's own)
        self.redraw_if_all_dropped = state.get("redraw_if_all_dropped", self.redraw_if_all_dropped)
        self.rescale_losses = state.get("rescale_losses", self.rescale_losses)
        self._gates, self._redraws = state["gates"], state["redraws"]
        self.history = [dict(r) for r in state["history"]]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]


# -------------------------------------------------------------- the metrics, on their own
def incompleteness(losses: Mapping[str, float], initial: Mapping[str, float]) -> dict[str, float]:
    """``I_j = clip(A_j / mean_k A_k, 0, 1)`` with ``A_j = L_j / L_j^(0)``."""
    left = {t: losses[t] / initial[t] for t in initial}
    mean = float(np.mean(list(left.values())))
    if mean == 0:  # every loss reached 0: nothing is incomplete
        return {t: 0.0 for t in left}
    return {t: min(max(a / mean, 0.0), 1.0) for t, a in left.items()}


def stagnancy(rates: Mapping[str, float]) -> dict[str, float]:
    """``S_j = clip(mean_k r_k / r_j, 0, 1)``; a rate of 0 (no progress at all) gives 1."""
    mean = float(np.mean(list(rates.values())))
    return {t: 1.0 if r <= 0 else min(max(mean / r, 0.0), 1.0) for t, r in rates.items()}


def _check_seed(seed):
    """``seed`` if it is None or a whole number; else a clear error."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed={seed!r}: use a whole number (or None for an unseeded scheduler).")
    return seed
