"""Loss weighting and gradient surgery: the classic remedies for task interference.

Each method's core is a pure function of ``keras.ops`` in :mod:`mtlkit.methods.cores` (it
runs inside a compiled training step on Keras's TensorFlow and JAX backends, and can be
checked on NumPy arrays on its own); a small method object here drives it,
keeping its state in Keras variables (on JAX the step reads and assigns them under a
``keras.StatelessScope``, :class:`mtlkit.backend.JaxStep`). Loss methods (``kind ==
"loss"``: EW, UW, DWA, RLW, FAMO) give the total loss, inside the tape::

    total = method.combine(task_losses)   # K scalars in method.tasks order; + regularisation
    grads = tape.gradient(total, model.trainable_variables + method.variables)

(UW and FAMO, ``wants_active``, also take ``active``: ``method.combine(task_losses, active)``.)
Gradient methods (``kind == "gradient"``: PCGrad, MGDA-UB, GradNorm, IMTL-G, CAGrad, Nash-MTL,
Aligned-MTL) first see the per-task gradients w.r.t. ``method.needs`` --
``"shared_variables"`` (every trainable variable reached by two or more tasks),
``"last_shared_layer"`` (:func:`last_shared_kernel` of those) or ``"representation"`` (the
shared trunk's output tensor) -- from a persistent tape (on TensorFlow)::

    G = backend.task_gradient_matrix(tape, task_losses, sources)   # (K, D)
    c, shared = method.combine_gradients(task_losses, G, active)   # c: (K,) coefficients
    grads = tape.gradient(task_losses, variables, output_gradients=tf.unstack(c))
    # PCGrad, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL: shared is (D,): the shared variables'
    # gradients become split_gradient(shared, ...)

**Random draws** (PCGrad's task orders, RLW's weights) come from a
``keras.random.SeedGenerator``, whose state variable is saved with the method's state. The
same seed gives the same draws on one backend; TensorFlow and JAX draw different numbers
from it.

"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from mtlkit import backend
from mtlkit.methods import cores
from mtlkit.methods.cores import (
    Tensor,
    _active_mask,
    _all_finite,
    _check_temperature,
    _finite_number,
    _matrix,
    _nan_unless,
    _numbers,
    _read,
    _refuse_non_finite,
)

_SEED_RANGE = 2**31
"""Seeds are taken modulo this (a ``keras.random.SeedGenerator``'s state is an int32 or
uint32 pair on some backends)."""


def _seed_number(seed: int | None) -> int:
    """``seed`` folded into ``[0, _SEED_RANGE)``; ``None``: a number from the operating
    system's entropy (a non-deterministic generator, independent of Python's ``random``)."""
    if seed is None:
        return secrets.randbelow(_SEED_RANGE)
    return int(seed) % _SEED_RANGE


def _generator(seed: int | None) -> keras.random.SeedGenerator:
    """A generator seeded by ``seed`` (``None``: from the operating system's entropy). Its
    state, ``[seed, draws so far]``, is a Keras variable."""
    return keras.random.SeedGenerator(_seed_number(seed))


def _restart(generator: keras.random.SeedGenerator, seed: int | None) -> None:
    """Put ``generator`` where ``_generator(seed)`` starts: state ``[seed, 0]``."""
    dtype = keras.backend.standardize_dtype(generator.state.dtype)
    generator.state.assign(np.array([_seed_number(seed), 0], dtype))


# -------------------------------------------------------------------- the method objects
class Weighting:
    """The interface every method shares; a method fills in combine or combine_gradients."""

    name, kind, needs = "base", "loss", None  # kind: "loss" (combine) or "gradient"
    needs_epoch_losses = False  # True: weighs tasks by their epoch losses (every task needs one)
    wants_active = False  # True (UW, FAMO): combine(task_losses, active) -- the loop passes it

    def __init__(self, tasks: Sequence[str], seed: int | None = None):
        self.tasks = list(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names, at least one; got {self.tasks}.")
        self.num_tasks, self.seed = len(self.tasks), seed
        self.variables: list = []  # trainable: the loop's optimizer updates them too
        self.state_variables: dict = {}  # name -> variable: what get_state saves
        self.logged = None  # the variable holding the weights to log (None: all 1)

    def on_epoch_start(self, epoch: int, loss_history) -> None:
        """Host side, before epoch ``epoch`` (0-based); ``loss_history`` (epoch, K)."""

    def combine(self, task_losses: Sequence) -> Tensor:
        """Loss methods: the total loss (call it inside the tape). A method with
        ``wants_active`` also takes ``active`` (as :meth:`combine_gradients` does)."""
        raise TypeError(f"{self.name!r} is a gradient method: call combine_gradients().")

    def combine_gradients(self, task_losses: Sequence, gradients, active=None) -> tuple:
        """Gradient methods: ``G`` (K, D) -> (coefficients (K,), shared (D,) or None).

        ``active``: (K,) booleans, or the per-task counts of labelled examples in the batch
        (``None``: every task). An inactive task is left out of the combination and gets
        coefficient 0 (module doc: tasks without labels).
        """
        raise TypeError(f"{self.name!r} is a loss method: call combine(task_losses).")

    def check_sources(self, sources: Sequence, model_name: str = "the model") -> None:
        """A gradient method needs something shared to differentiate: refuse an empty list."""
        if self.kind == "gradient" and not list(sources):
            raise ValueError(
                f"{self.name!r} works on gradients w.r.t. {self.needs}, and {model_name} has "
                "none: no trainable variable (or tensor) is reached by two or more tasks' "
                "losses. Use a loss weighting (ew, uw, dwa, rlw, famo), or a model with a "
                "shared trunk."
            )

    def reseed(self, seed: int) -> None:
        """Start the method's random generator again from ``seed``, exactly where a new
        object with that seed starts (no-op without one)."""
        self.seed = seed
        if hasattr(self, "generator"):
            _restart(self.generator, seed)

    def weights_for_logging(self) -> dict[str, float]:
        """The per-task weights in use, ``{task: float}`` (host side, once an epoch)."""
        values = np.ones(self.num_tasks) if self.logged is None else self.logged.numpy()
        return {t: float(v) for t, v in zip(self.tasks, values)}

    def options(self) -> dict:
        """The method's settings (its constructor's plain options, and tuples or lists of
        them, as FAMO's per-task ``min_losses``): a resumed run must have the same."""
        skip = ("seed", "num_tasks", "epoch", "tasks", "variables")
        return {k: v for k, v in sorted(vars(self).items())
                if k not in skip and not k.startswith("_") and _plain(v)}  # fmt: skip

    def get_state(self) -> dict:
        """Everything needed to continue exactly (JSON-able)."""
        values = {k: np.asarray(v.numpy()).tolist() for k, v in self.state_variables.items()}
        return {"name": self.name, "tasks": self.tasks, **values}

    def set_state(self, state: Mapping) -> None:
        """Restore :meth:`get_state`'s output (same method, same tasks)."""
        if state.get("name") != self.name or list(state.get("tasks", [])) != self.tasks:
            raise ValueError(
                f"This state is for {state.get('name')!r} on tasks {state.get('tasks')}, not "
                f"{self.name!r} on {self.tasks}: build the same method to resume."
            )
        for key, variable in self.state_variables.items():
            value = np.asarray(state[key])
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"The saved state of {self.name!r} holds {key!r} with shape {value.shape}; "
                    f"this version of mtlkit keeps shape {tuple(variable.shape)}. The run folder "
                    "was written by an earlier version (its random generator kept another "
                    "state): recompute it -- use a fresh run_dir, or recompute=True."
                )
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))

    def _refuse(self, what: str, values) -> None:
        """Eagerly, raise a ValueError naming the tasks whose ``values`` are not finite."""
        _refuse_non_finite(values, f"{self.name}: the {what}", self.tasks)

    def _stack(self, task_losses):
        losses = task_losses if ops.is_tensor(task_losses) else ops.stack(list(task_losses))
        if losses.shape[0] != self.num_tasks:
            raise ValueError(f"Got {losses.shape[0]} task losses for tasks {self.tasks}.")
        return losses

    def _weighted_sum(self, weights, task_losses):
        """``sum_j weights_j L_j``."""
        losses = self._stack(task_losses)
        weights = ops.cast(ops.convert_to_tensor(weights), losses.dtype)
        return ops.tensordot(weights, losses, 1)


class EqualWeighting(Weighting):
    """EW: ``sum_j L_j``, the baseline every remedy is compared with."""

    name = "ew"

    def combine(self, task_losses):
        return ops.sum(self._stack(task_losses))


class UncertaintyWeighting(Weighting):
    """UW (Kendall et al., CVPR 2018): :func:`cores.uncertainty_total` with one trainable ``s_j``
    per task, starting at 0; logs ``exp(-s_j)``, the weight each loss gets.

    **Which form.** The kit uses ``exp(-s_j) L_j + s_j`` for every task. Kendall et al.
    derive ``exp(-s) L + s/2`` for a classification loss and ``1/2 exp(-s) L + s/2`` for a
    regression one; LibMTL uses ``1/2 (exp(-s) L + s)``. At the optimum over ``s_j`` the
    kit's weight is ``exp(-s_j) = 1 / L_j``, the classification form's ``1 / (2 L_j)``:
    the same *relative* weights between tasks, only a global factor 2, which Adam (whose
    steps do not depend on the scale of the loss) largely removes. LibMTL's form is half of
    the kit's, so it has the very same optimum. The numbers are kept as they were, so that
    earlier runs stay comparable.

    Partial labels: a task not ``active`` in a batch (no labelled example, or a DST gate of
    0) drops out of the sum, both terms: its ``s_j`` gets no gradient and its weight stays
    (``wants_active``: the loop passes ``active``)."""

    name = "uw"
    wants_active = True  # combine(task_losses, active): the loop passes the active tasks

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_vars = keras.Variable(np.zeros(self.num_tasks, "float32"), name="uw_log_vars")
        self.variables, self.state_variables = [self.log_vars], {"log_vars": self.log_vars}

    def combine(self, task_losses, active=None):
        return cores.uncertainty_total(self._stack(task_losses), self.log_vars, active)

    def weights_for_logging(self):
        return {t: float(np.exp(-s)) for t, s in zip(self.tasks, self.log_vars.numpy())}


class DynamicWeightAverage(Weighting):
    """DWA (Liu et al., CVPR 2019): ``sum_j lambda_j L_j``, with :func:`cores.dwa_weights`
    set per epoch."""

    name = "dwa"
    needs_epoch_losses = True

    def __init__(self, tasks, temperature: float = 2.0):
        super().__init__(tasks)
        _check_temperature(temperature)
        self.temperature, self.epoch = float(temperature), None  # the epoch of the weights
        self.logged = keras.Variable(np.ones(self.num_tasks, "float32"), trainable=False)
        self.state_variables = {"weights": self.logged}

    def on_epoch_start(self, epoch, loss_history):
        history = np.asarray(loss_history, dtype=float).reshape(-1, self.num_tasks)
        if history.shape[0] < epoch:
            raise ValueError(
                f"DWA's weights for epoch {epoch + 1} need the mean losses of the {epoch} "
                f"epochs before it; loss_history holds {history.shape[0]}."
            )
        last = history[max(epoch - 2, 0) : epoch]
        missing = [t for t, ok in zip(self.tasks, np.isfinite(last).all(axis=0)) if not ok]
        if epoch >= 2 and missing:
            raise ValueError(
                f"DWA weighs each task by its last two epochs' mean losses, and task(s) "
                f"{missing} had none (no labelled example in epoch {epoch - 1} or {epoch}: "
                "their losses are NaN). Give them labels, or train without them."
            )
        self.logged.assign(cores.dwa_weights(history[:epoch], self.temperature))
        self.epoch = epoch

    def combine(self, task_losses):
        if self.epoch is None:
            raise RuntimeError("DWA has no weights yet: call on_epoch_start() every epoch.")
        return self._weighted_sum(self.logged, task_losses)

    def get_state(self):
        return {**super().get_state(), "epoch": self.epoch}

    def set_state(self, state):
        super().set_state(state)
        self.epoch = state["epoch"]


class RandomLossWeighting(Weighting):
    """RLW (Lin et al., TMLR 2022): new :func:`cores.rlw_weights` every step; logs the last ones.

    The draws come from a ``keras.random.SeedGenerator`` seeded with ``seed`` (``None``: from
    the operating system's entropy); its state is saved with the method's (``"rng"``)."""

    name = "rlw"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"rng": self.generator.state, "last": self.logged}

    def combine(self, task_losses):
        weights = cores.rlw_weights(self.num_tasks, self.generator)
        self.logged.assign(weights)
        return self._weighted_sum(weights, task_losses)


class PCGrad(Weighting):
    """PCGrad (Yu et al., NeurIPS 2020): the shared weights get :func:`cores.pcgrad` of the task
    gradients; everything else its plain gradient of ``sum_j L_j`` (coefficients 1, and 0
    for a task that is not ``active`` in the batch). An inactive task's gradient row is 0
    (no labels, or a DST gate of 0), which the surgery already leaves out: it is not
    masked again, so the step costs no more than before. The task orders come from a
    ``keras.random.SeedGenerator`` seeded with ``seed`` (as :class:`RandomLossWeighting`)."""

    name, kind, needs = "pcgrad", "gradient", "shared_variables"

    def __init__(self, tasks, seed: int | None = None):
        super().__init__(tasks, seed)
        self.generator = _generator(seed)
        self.state_variables = {"rng": self.generator.state}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        return ops.cast(on, losses.dtype), cores.pcgrad(G, self.generator)


class MGDA(Weighting):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): train on ``sum_j alpha_j L_j``, alpha from
    :func:`cores.mgda_weights` of the task gradients w.r.t. the shared representation
    (``upper_bound=False``: the shared weights). ``normalization`` first divides each g_j by
    1 (``"none"``), |g_j| (``"l2"``), L_j (``"loss"``) or L_j |g_j| (``"loss+"``: the
    authors' CelebA run). Tasks that are not ``active`` in a batch get alpha 0 there: the
    min-norm problem is solved over the others. Logs the last batch's alpha."""

    name, kind = "mgda", "gradient"
    NORMALIZATIONS = ("none", "l2", "loss", "loss+")

    def __init__(self, tasks, upper_bound=True, normalization="none", iterations=250):
        super().__init__(tasks)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(f"normalization={normalization!r}: use one of {self.NORMALIZATIONS}.")
        whole = isinstance(iterations, numbers.Integral) and not isinstance(iterations, bool)
        if not whole or iterations < 1:
            raise ValueError(f"iterations must be a positive whole number, got {iterations!r}.")
        self.normalization, self.iterations = normalization, int(iterations)
        self.needs = "representation" if upper_bound else "shared_variables"
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"last": self.logged}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        scale = ops.ones_like(G[:, 0])
        if self.normalization in ("l2", "loss+"):
            scale = scale * ops.norm(G, axis=1)
        if self.normalization in ("loss", "loss+"):
            scale = scale * ops.cast(losses, G.dtype)
        on = _active_mask(active, self.num_tasks)
        alpha = cores.mgda_weights(ops.divide_no_nan(G, scale[:, None]), self.iterations, active=on)
        if self.normalization in ("loss", "loss+"):  # (an infinite loss would scale g_j to 0)
            alpha = _nan_unless(_all_finite(losses), alpha)
        alpha = ops.cast(alpha, "float32")
        self.logged.assign(alpha)
        return ops.cast(alpha, losses.dtype), None


class GradNorm(Weighting):
    """GradNorm (Chen et al., ICML 2018): the network trains on ``sum_j w_j L_j``; then the
    weights (start 1) take a step of their own ``optimizer`` (default Adam 1e-3) along the
    gradient of :func:`cores.gradnorm_loss`, and are renormalised to sum to K.
    ``on="shared_variables"`` measures the norms as LibMTL does.

    * ``L_j(0)`` is task j's loss at the first step where it is active with a positive loss
      (with partial labels, the first batch carrying its labels). Until then the task is
      left out of ``L_grad`` (its ratio would be 0/0).
    * A task that is not ``active`` in a batch gets coefficient 0 there, takes no part in
      ``L_grad``, and its weight stays as it was (an optimizer's momentum does not move it);
      the others are renormalised to sum to K minus its weight.
    * The gradient of ``L_grad`` w.r.t. the weights is :func:`cores.gradnorm_gradient`'s closed
      form (the one autodiff gives), so the step needs no nested tape; ``optimizer`` applies
      it (on JAX inside the step's ``keras.StatelessScope``, as ``stateless_apply`` does).
    * After the optimizer's step the weights are clipped at ``min_weight`` (default 1e-3)
      before renormalising: a large step can push a weight below 0 (one SGD(0.1) step gave
      ``[-0.02, -0.13, 3.15]``), which would make the network climb that task's loss. 1e-3
      is far below any weight GradNorm means to give (they average 1), so the balance is not
      biased, while a task is never switched off and can climb back in a few steps. After
      renormalising a weight may end a little below ``min_weight``, never at or below 0.
    """

    name, kind = "gradnorm", "gradient"

    def __init__(
        self,
        tasks,
        alpha: float = 1.5,
        optimizer=None,
        on: str = "last_shared_layer",
        min_weight: float = 1e-3,
    ):
        super().__init__(tasks)
        if on not in ("last_shared_layer", "shared_variables"):
            raise ValueError(f"on={on!r}: use 'last_shared_layer' (paper) or 'shared_variables'.")
        if not _finite_number(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
        if not (_finite_number(min_weight) and 0 < min_weight < 1):
            raise ValueError(f"min_weight must be a number in (0, 1), got {min_weight!r}.")
        self.alpha, self.needs, self.min_weight = float(alpha), on, float(min_weight)
        self.logged = keras.Variable(np.ones(self.num_tasks, "float32"), name="gradnorm_weights")
        self.initial = _zeros_variable(self.num_tasks)  # 0: not yet
        # an optimizer, or a name ("adam") or config as train() takes; default Adam(1e-3)
        self.optimizer = keras.optimizers.get(optimizer or keras.optimizers.Adam(1e-3))
        self.optimizer.build([self.logged])
        # the optimizer's state, without its learning rate: the user's rate is never loaded
        variables = enumerate(self.optimizer.variables)
        self._moments = {f"optimizer_{i}": v for i, v in variables if v.name != "learning_rate"}
        self.state_variables = {"weights": self.logged, "initial": self.initial, **self._moments}

    def options(self):
        """As :meth:`Weighting.options`, with the optimizer's class and config (its learning
        rate too): a run resumed with another GradNorm optimizer is refused."""
        return {**super().options(), "optimizer": self._optimizer_setting()}

    def _optimizer_setting(self) -> list:
        """``[class name, repr of the sorted config without its name]`` (JSON-able)."""
        config = {k: v for k, v in self.optimizer.get_config().items() if k != "name"}
        return [type(self.optimizer).__name__, repr(sorted(config.items()))]

    def get_state(self):
        return {**super().get_state(), "optimizer": self._optimizer_setting()}

    def set_state(self, state):
        """As :meth:`Weighting.set_state`. A state saved with another optimizer (the loop then
        refuses the resume by :meth:`options`; ``restart`` passes a default GradNorm's) holds
        no moments for this one: they start afresh. The learning rate is never loaded."""
        setting = state.get("optimizer", self._optimizer_setting())
        if setting != self._optimizer_setting() or not set(self._moments) <= set(state):
            twin = type(self.optimizer).from_config(self.optimizer.get_config())
            twin.build([self.logged])
            for variable, value in zip(self.optimizer.variables, twin.variables):
                if variable.name != "learning_rate":
                    variable.assign(value)
            state = {**state, **{k: v.numpy() for k, v in self._moments.items()}}
        super().set_state(state)

    def combine_gradients(self, task_losses, gradients, active=None):
        stacked = self._stack(task_losses)
        dtype, losses = stacked.dtype, ops.cast(stacked, "float32")
        G = _matrix(gradients)
        self._refuse("loss", losses)
        self._refuse("gradient", G)
        norms = ops.cast(ops.norm(G, axis=1), "float32")
        on = _active_mask(active, self.num_tasks)
        in_use = _read(self.logged)  # the network's coefficients: before the update
        started = on & (losses > 0)  # L_j(0): the first step with a positive loss
        before = _read(self.initial)
        initial = ops.where(started & (before <= 0), losses, before)
        self.initial.assign(initial)
        counted = on & (initial > 0)
        gradient = cores.gradnorm_gradient(in_use, norms, losses, initial, self.alpha, counted)
        # (on several devices the optimizer sums the replicas' identical gradients)
        self.optimizer.apply_gradients([(gradient / backend.replicas(), self.logged)])
        self.logged.assign(self._renormalised(_read(self.logged), in_use, counted))
        coefficients = ops.where(on, in_use, ops.zeros_like(in_use))
        return ops.cast(_nan_unless(_all_finite(losses, norms), coefficients), dtype), None

    def _renormalised(self, stepped, before, counted) -> Tensor:
        """The weights after a step: the counted ones clipped at ``min_weight`` and scaled so
        that all sum to K; the others as they were ``before`` the step."""
        zero = ops.zeros_like(before)
        kept = ops.sum(ops.where(counted, zero, before))
        clipped = ops.where(counted, ops.maximum(stepped, self.min_weight), zero)
        scaled = ops.divide_no_nan((self.num_tasks - kept) * clipped, ops.sum(clipped))
        return ops.where(counted, scaled, before)


class FAMO(Weighting):
    """FAMO (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023): a loss method -- no per-task
    gradients, the cost of equal weighting per step. The network trains on
    :func:`cores.famo_total` (the weighted log-losses); the task logits (start 0) learn, with their
    own Adam (``w_lr``, L2 ``gamma``: PyTorch's ``Adam(weight_decay=gamma)``,
    :func:`cores.adam_l2_step`), to favour the tasks whose loss fell the least over a step
    (:func:`cores.famo_logit_gradient`). Logs the effective weights ``z_j / (c D_j)`` (sum 1).

    Differences from the authors' code (github.com/Cranial-XIX/FAMO, ``famo.py`` and
    ``methods/weight_methods.py``), on purpose:

    * **Which losses measure the decrease.** The authors run the network again on the same
      batch after the step (an extra forward pass) and update the logits with
      ``log L(before) - log L(after)`` on that batch. Here the logits are updated at the start
      of the *next* step, from the losses of the previous batch (before its step) and of the
      current batch (before its step): no extra forward pass, but the decrease mixes in the
      difference between the two batches. The logits then weigh the current step, as the
      authors' updated logits weigh their next step. (LibMTL's FAMO, at the version read,
      recomputes on the same batch as the authors do.)
    * **gamma.** The authors' defaults differ by file (1e-2 in ``famo.py`` and their
      argument parser, 1e-5 in ``weight_methods.py``); 1e-3 is what their NYU-v2, CelebA and
      QM9 scripts pass and LibMTL's default.
    * **max_norm.** The authors clip the shared parameters' gradient norm at 1.0. A loss
      method here gives one total loss, not gradients; clip with the optimizer if wanted
      (``keras.optimizers.Adam(global_clipnorm=...)``, which clips every variable).

    Partial labels: a task not ``active`` in a batch has no part in the softmax, the total
    or ``c``, and its logit (and Adam moments) does not move at this step or the next (no
    decrease is measured across a batch without its labels). Needs ``active``, so the loop
    passes it (``wants_active``). Losses must stay above ``min_losses`` (default 0). The
    loop's ``loss`` history is then FAMO's objective (weighted log-losses: it can be below 0),
    while ``<task>_loss`` are the losses themselves.
    """

    name = "famo"
    wants_active = True  # combine(task_losses, active): the loop passes the active tasks

    def __init__(self, tasks, w_lr: float = 0.025, gamma: float = 1e-3, min_losses=0.0):
        super().__init__(tasks)
        for what, value in (("w_lr", w_lr), ("gamma", gamma)):
            if not _finite_number(value) or value < 0 or (what == "w_lr" and value == 0):
                raise ValueError(f"FAMO's {what} must be a finite number above 0 (gamma: or 0), "
                                 f"got {value!r}.")  # fmt: skip
        low = np.broadcast_to(np.asarray(min_losses, dtype=float), (self.num_tasks,))
        if not np.isfinite(low).all():
            raise ValueError(f"min_losses must be finite numbers, one or one per task, got "
                             f"{min_losses!r}.")  # fmt: skip
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        self.min_losses = float(low[0]) if np.ndim(min_losses) == 0 else tuple(low.tolist())
        self._low = low.astype("float32")
        zeros = lambda: _zeros_variable(self.num_tasks)  # noqa: E731
        self.logits, self.m, self.v, self.t = zeros(), zeros(), zeros(), zeros()
        self.previous, self.previous_on = zeros(), zeros()  # last step's losses; 1: measured
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"logits": self.logits, "adam_m": self.m, "adam_v": self.v,
                                "adam_t": self.t, "previous": self.previous,
                                "previous_on": self.previous_on, "last": self.logged}  # fmt: skip

    def combine(self, task_losses, active=None):
        losses = self._stack(task_losses)
        self._refuse("loss", losses)
        current = ops.cast(losses, "float32")
        on = _active_mask(active, self.num_tasks)
        above = ops.logical_not(on) | (current - self._low + 1e-8 > 0)  # (inactive: loss 0)
        known = _numbers(above)  # None while traced: then the result is NaN instead
        if known is not None and not known.all():
            raise ValueError(
                f"FAMO takes the log of L_j - min_losses_j: the losses "
                f"{_numbers(current).tolist()} must be above {self.min_losses}."
            )
        finite = _all_finite(current) & ops.all(above)
        logits, previous = _read(self.logits), _read(self.previous)
        both = on & (_read(self.previous_on) > 0) & finite  # a decrease measured last step
        d = cores.famo_logit_gradient(logits, previous, current, self._low, both)
        logits, m, v, t = cores.adam_l2_step(logits, d, _read(self.m), _read(self.v), _read(self.t),
                                       self.w_lr, self.gamma, moving=both)  # fmt: skip
        for variable, value in ((self.logits, logits), (self.m, m), (self.v, v), (self.t, t)):
            variable.assign(value)
        keep = on & finite
        self.previous.assign(ops.where(keep, current, previous))
        self.previous_on.assign(ops.cast(keep, "float32"))
        total, coefficients = cores.famo_total(
            losses, logits, ops.cast(self._low, losses.dtype), on
        )
        logged = ops.where(finite, ops.cast(coefficients, "float32"), _read(self.logged))
        self.logged.assign(logged)
        return _nan_unless(finite, total)


class _SharedCombination(Weighting):
    """A method whose shared variables take ``sum_j a_j g_j`` (``a`` from :meth:`weights`),
    while every other variable takes its plain gradient of ``sum_j L_j`` (coefficient 1, 0
    for a task not ``active``): the authors' (and LibMTL's) treatment of task heads for
    IMTL-G, CAGrad and Aligned-MTL. Logs the last batch's ``a``."""

    kind, needs = "gradient", "shared_variables"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.logged = _uniform_weights(self.num_tasks)
        self.state_variables = {"last": self.logged}

    def weights(self, G, active) -> Tensor:
        raise NotImplementedError

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        a = self.weights(G, on)
        self.logged.assign(ops.cast(a, "float32"))
        return ops.cast(on, losses.dtype), ops.matmul(a, G)


class IMTLG(_SharedCombination):
    """IMTL-G (Liu et al., ICLR 2021), the gradient half of IMTL: :func:`cores.imtl_g_weights`.

    The authors released no code; the reference is LibMTL's ``LibMTL/weighting/IMTL.py``
    (its gradient part; the loss-scaling half, IMTL-L, is not included). Differences: the
    alphas come from a pseudo-inverse on the Gram matrix (equal to LibMTL's inverse when the
    gradients are independent, finite when they are not), and the shared variables
    (``rep_grad=False``, LibMTL's default) are differentiated."""

    name = "imtl_g"

    def weights(self, G, active):
        return cores.imtl_g_weights(G, active)


class CAGrad(_SharedCombination):
    """CAGrad (Liu et al., NeurIPS 2021): :func:`cores.cagrad_weights` with ``c`` (0.4, the
    authors' NYU-v2 and Cityscapes runs) and ``rescale`` (1: divide by ``1 + c^2``, the
    authors' default in ``nyuv2/utils.py``). Reference: github.com/Cranial-XIX/CAGrad,
    ``cagrad`` and ``overwrite_grad`` in ``nyuv2/utils.py``. Difference: the inner problem is
    solved by a fixed-budget projected gradient descent in ``keras.ops`` instead of scipy's
    SLSQP (:func:`cores.cagrad_weights`); it reaches scipy's objective value or a lower one on the
    tests' matrices. LibMTL's ``CAGrad.py`` leaves out the factor K (its update is 1/K of
    the authors')."""

    name = "cagrad"

    def __init__(self, tasks, c: float = 0.4, rescale: int = 1, iterations: int = 200):
        super().__init__(tasks)
        if not _finite_number(c) or c < 0:
            raise ValueError(f"CAGrad's c must be a finite number >= 0, got {c!r}.")
        if rescale not in (0, 1, 2) or isinstance(rescale, bool):
            raise ValueError(f"rescale must be 0, 1 (divide by 1 + c^2) or 2 (by 1 + c), got "
                             f"{rescale!r}.")  # fmt: skip
        self.c, self.rescale, self.iterations = float(c), int(rescale), _count(iterations)

    def weights(self, G, active):
        return cores.cagrad_weights(G, self.c, self.rescale, self.iterations, active)


class AlignedMTL(_SharedCombination):
    """Aligned-MTL (Senushkin et al., CVPR 2023): :func:`cores.aligned_mtl_weights` on the shared
    variables' gradients (the authors' ``amtl`` balancer; ``scale_mode="min"`` and heads
    left unscaled, ``scale_decoder_grad=False``, are their defaults). Reference:
    github.com/SamsungLabs/MTL, ``code/optim/aligned/solver.py`` (``ProcrustesSolver``) and
    ``balancer.py``; LibMTL's ``Aligned_MTL.py`` is the same. No difference but the
    leaving out of tasks without labels."""

    name = "aligned_mtl"

    def __init__(self, tasks, scale_mode: str = "min"):
        super().__init__(tasks)
        if scale_mode not in cores.ALIGNED_SCALES:
            raise ValueError(f"scale_mode={scale_mode!r}: use one of {cores.ALIGNED_SCALES}.")
        self.scale_mode = scale_mode

    def weights(self, G, active):
        return cores.aligned_mtl_weights(G, self.scale_mode, active)


class NashMTL(Weighting):
    """Nash-MTL (Navon et al., ICML 2022): train on ``sum_j alpha_j L_j`` with alpha from
    :func:`cores.nash_mtl_weights` of the shared variables' gradients, recomputed every
    ``update_weights_every`` steps (the steps between reuse the last alpha); the shared
    variables' combined gradient ``sum_j alpha_j g_j`` is then clipped to norm ``max_norm``
    (default 1.0; 0: no clipping), as the authors' ``clip_grad_norm_(shared_parameters)``
    does -- the heads keep ``alpha_j grad L_j`` unclipped, as theirs do. Logs the last alpha.

    Reference: github.com/AvivNavon/nash-mtl, ``methods/weight_methods.py``, class NashMTL
    (defaults ``update_weights_every=1``, ``optim_niter=20``, ``max_norm=1.0``). Differences:

    * the solver: damped Newton on the fixed point's convex potential, in ``keras.ops``, at
      most ``iterations`` (100) steps with a stopping test on the Newton decrement, started
      afresh each time; the authors run at most 20 convex sub-problems (cvxpy/ECOS), warm
      started from the previous alpha, and stop when ``|M' alpha - 1/alpha| < 1e-3`` for the
      *normalised* ``M' = M / |M|_F`` (which is not the fixed point they solve, ``M alpha = 1 /
      alpha``, unless ``|M|_F = 1``) or when alpha moves less than 1e-6 -- or keep the last
      alpha when ECOS fails. Where their loop reaches the fixed point, the alphas agree;
    * clipping acts on the shared gradient the method returns, before the regularisation
      penalties' gradients are added (the authors clip after ``loss.backward()``, which
      includes any penalty in the loss).

    Tasks not ``active`` get alpha 0 and are left out of the bargaining. Between solves the
    last *solved* alpha (kept in a state variable of its own, ``"solved"``) is reused, masked
    anew for each batch: a task back from a batch without labels gets its solved alpha back.
    """

    name, kind, needs = "nash_mtl", "gradient", "shared_variables"

    def __init__(self, tasks, update_weights_every: int = 1, max_norm: float = 1.0,
                 iterations: int = 100):  # fmt: skip
        super().__init__(tasks)
        self.update_weights_every = _count(update_weights_every, "update_weights_every")
        if not _finite_number(max_norm) or max_norm < 0:
            raise ValueError(f"max_norm must be a finite number >= 0 (0: no clipping), got "
                             f"{max_norm!r}.")  # fmt: skip
        self.max_norm, self.iterations = float(max_norm), _count(iterations)
        self.logged = _uniform_weights(self.num_tasks)
        # "int": int64 on TensorFlow, int32 on JAX (as Keras's optimizers count their steps)
        self.steps = keras.Variable(0, dtype="int", trainable=False)
        self.solved = _uniform_weights(self.num_tasks)  # the last solve's alpha, unmasked
        self.state_variables = {"last": self.logged, "steps": self.steps, "solved": self.solved}

    def combine_gradients(self, task_losses, gradients, active=None):
        losses, G = self._stack(task_losses), _matrix(gradients)
        self._refuse("gradient", G)
        on = _active_mask(active, self.num_tasks)
        steps = _read(self.steps)
        fresh = ops.equal(steps % self.update_weights_every, 0)
        solve = lambda: ops.cast(cores.nash_mtl_weights(G, self.iterations, active=on), "float32")  # noqa: E731
        solved = ops.cond(fresh, solve, lambda: _read(self.solved))
        self.solved.assign(solved)
        alpha = ops.where(on, solved, ops.zeros_like(solved))
        self.steps.assign(steps + 1)
        self.logged.assign(alpha)
        alpha = ops.cast(alpha, G.dtype)
        shared = ops.matmul(alpha, G)
        if self.max_norm > 0:
            shared = _clip_by_norm(shared, self.max_norm)
        return ops.cast(alpha, losses.dtype), shared

    def set_state(self, state):
        """As :meth:`Weighting.set_state`; a state saved before ``"solved"`` was kept reuses
        its last alpha (``"last"``), as that version did."""
        super().set_state({"solved": state.get("last"), **state})


def _clip_by_norm(vector, limit: float) -> Tensor:
    """``vector`` scaled down to norm ``limit`` when it is longer (``tf.clip_by_norm``'s
    formula: ``vector * limit / max(|vector|, limit)``, a zero vector kept as it is)."""
    squared = ops.sum(vector * vector)
    positive = squared > 0
    norm = ops.where(positive, ops.sqrt(ops.where(positive, squared, ops.ones_like(squared))),
                     squared)  # fmt: skip
    return vector * limit / ops.maximum(norm, limit)


def _plain(value) -> bool:
    """A plain option: a bool, number or string, or a non-empty tuple or list of them."""
    plain = (bool, int, float, str)
    if isinstance(value, (tuple, list)):
        return bool(value) and all(isinstance(v, plain) for v in value)
    return isinstance(value, plain)


def _uniform_weights(num_tasks: int) -> keras.Variable:
    """A (K,) float32 variable holding ``1 / K`` (the weights logged before the first step)."""
    return keras.Variable(np.full(num_tasks, 1.0 / num_tasks, "float32"), trainable=False)


def _zeros_variable(num_tasks: int) -> keras.Variable:
    return keras.Variable(np.zeros(num_tasks, "float32"), trainable=False)


def _count(value, what: str = "iterations") -> int:
    """A positive whole number (not a bool), or a clear error."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}.")
    return int(value)


def _named_methods(base: type) -> dict:
    """Every subclass of ``base`` with a name of its own, however deep (the helper base
    ``_SharedCombination`` has none)."""
    found = {}
    for cls in base.__subclasses__():
        if "name" in vars(cls):
            found[cls.name] = cls
        found.update(_named_methods(cls))
    return found


METHODS: dict[str, type[Weighting]] = _named_methods(Weighting)
"""Every method by name: ``ew``, ``uw``, ``dwa``, ``rlw``, ``pcgrad``, ``mgda``, ``gradnorm``,
``famo``, ``imtl_g``, ``cagrad``, ``nash_mtl``, ``aligned_mtl``."""


def get(method: str | Weighting, tasks: Sequence[str], **options) -> Weighting:
    """A method object from its name (``options`` go to its constructor), or ``method``
    itself when it already is one (its tasks must be ``tasks``)."""
    if isinstance(method, Weighting):
        if method.tasks != list(tasks) or options:
            raise ValueError(
                f"The {method.name!r} object was built for tasks {method.tasks} (and takes no "
                f"options here); got tasks {list(tasks)}, options {sorted(options)}."
            )
        return method
    key = method.lower() if isinstance(method, str) else None
    if key not in METHODS:
        raise ValueError(f"Unknown weighting method {method!r}; valid names: {sorted(METHODS)}.")
    return METHODS[key](tasks, **options)
