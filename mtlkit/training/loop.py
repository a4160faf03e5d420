"""The custom training loop: Keras's ``fit`` written out to be read, with DST task gates.

Read it top-down: :func:`train` sets things up and runs epochs; :func:`_run_epoch` runs
one; :class:`_Loop` holds the compiled steps. One training step is::

    with tf.GradientTape() as tape:
        predictions = model(x, training=True)
        task_losses = [L_j(y_j, prediction_j) for every task j]   # mean over labelled examples
        total = sum_j coefficient_j * task_losses[j] + regularisation
    gradients = tape.gradient(total, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

with ``coefficient_j = gate_j * w_j * loss_weight_j`` held in a Keras variable: new gates
each epoch are a variable assignment, not a new trace of the step function.

**Backends.** That is the TensorFlow step. On Keras's JAX backend the same losses, meters
and counters (all ``keras.ops`` and Keras variables) run inside a stateless ``jax.jit`` step
that differentiates them with ``jax.value_and_grad``; :mod:`mtlkit.backend` holds the
difference. From the same weights and batches both end at the same weights within float32
rounding (``tests/test_backends.py``).

**Partial labels.** A label below 0 (CelebA's ``-1``) means "unknown": each task's loss
and accuracy average over the examples that carry its label, and a batch in which no
example carries it adds nothing for that task (no NaN, no gradient); a gradient method
(``weighting=``) leaves such a task out of that batch's combination.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtlkit import backend, work
from mtlkit.data.celeba_images import damaged_images_named
from mtlkit.methods import cores
from mtlkit.methods import weighting as weighting_methods
from mtlkit.models import graph, sharing
from mtlkit.models import tasks as task_utils
from mtlkit.training import checks, resume
from mtlkit.training.runs import set_seed


@damaged_images_named()  # a damaged image file in the data: a clear error, not a graph error
def train(
    model: keras.Model,
    train_data,
    *,
    epochs: int,
    losses,
    optimizer: keras.optimizers.Optimizer,
    loss_weights: Mapping[str, float] | None = None,
    scheduler=None,
    validation_data: tf.data.Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 1,
    jit_compile: bool | str = False,
    metadata: Mapping | None = None,
    weighting=None,
    representation_layer: str | None = None,
    checkpoints: bool = True,
) -> keras.callbacks.History:
    """Train a multi-task model with a readable loop, optionally with DST task gates.

    Args:
        model: a functional model whose outputs are a dict keyed by task.
        train_data: batched ``tf.data.Dataset`` of ``(inputs, {task: labels})``; or a
            function ``epoch -> dataset`` (epoch counted from 0), which makes shuffling
            depend on the epoch only -- then a resumed run sees the same order as a
            straight one (``lambda e: ds.shuffle(n, seed=seed + e).batch(b)``). Labels
            below 0 mark examples without a label for that task (module doc).
        epochs: the total number of epochs (also when resuming).
        losses: ``{task: loss}`` or one loss for every task; a Loss object, a loss name
            (``"binary_crossentropy"``) or a function, as ``compile`` accepts.
        optimizer: a Keras optimizer; it is built on the model's trainable variables.
        loss_weights: ``{task: weight}``; the trained loss is ``sum_j weight_j * L_j``. A task
            left out weighs 1; each weight must be a finite number >= 0. A list is refused
            (give a dict keyed by output name: a dict of outputs has no plain order).
        scheduler: a :class:`mtlkit.methods.dst.DSTScheduler`. Then an epoch-0 pass measures the
            starting losses (training mode; BatchNorm's moving statistics and the dropout
            seeds are restored afterwards, and no weight changes), and epoch ``e`` trains on
            ``sum_j gate_j * w_j * weight_j * L_j``. A dropped task's loss is still measured
            and logged; its gradient is exactly 0. **With Adam a dropped task's head still
            moves**: Adam's momentum from earlier epochs keeps updating every weight even when
            its gradient is 0 (plain SGD leaves it where it was).
        validation_data: evaluated (inference mode) at every epoch end, as ``val_*``; its
            labels are checked as the training data's are (a task without any label there
            is logged as NaN, with a warning).
        run_dir: folder for a checkpoint written at every epoch end (weights, optimizer,
            scheduler and its random generator, history; written to a temporary file, then
            renamed). Called again with the same ``run_dir`` it continues after the last
            finished epoch; when all ``epochs`` are done (or EarlyStopping stopped the run)
            it loads the final weights and returns the stored history without training.
            Callbacks' own state (EarlyStopping's patience counter) is not kept.
        checkpoints: ``False`` writes the checkpoint only when the run ends, not after every
            epoch: for runs of a few minutes (the quick profile), where a checkpoint per
            epoch costs more than redoing the run after a kill (a ResNet18 checkpoint with
            Adam's state is 134 MB).
        seed: calls :func:`mtlkit.training.runs.set_seed` and seeds a scheduler made with
            ``seed=None``. Shuffling and augmentation in ``train_data`` are the caller's:
            seed them too. With all of that, two runs on a CPU are identical. A model built
            *before* the call already has its initial weights, drawn under whatever seed was
            set then: call ``set_seed(seed)`` before building it (the study runners do).
        callbacks: Keras callbacks (``EarlyStopping``, ``CSVLogger``, ...); they see ``logs``
            with every value of the history below, and may add values to it at epoch end.
        verbose: 0 silent, 1 a Keras progress bar.
        jit_compile: compile the steps with XLA: ``False`` (default; XLA changes results in
            the last digits), ``True``, or ``"auto"`` (XLA on an accelerator, like ``fit``).
        metadata: JSON-able facts about the run, stored in ``run_dir/history.json``.
        weighting: how the task losses are combined (:mod:`mtlkit.methods.weighting`): ``None``
            (equal weighting with ``loss_weights``, the default and the fastest), a name
            (``"uw"``, ``"dwa"``, ``"rlw"``, ``"pcgrad"``, ``"mgda"``, ``"gradnorm"``, ``"ew"``,
            ``"famo"``, ``"imtl_g"``, ``"cagrad"``, ``"nash_mtl"``, ``"aligned_mtl"``) or a
            method object. It works on the gated, weighted losses, beside DST. Gradient
            methods change the shared variables' gradients only (heads keep their own);
            MGDA-UB differentiates the shared representation (the output of
            ``representation_layer``, by default the last layer every task depends on). A
            task with no labelled example in a batch (or a DST gate of 0) is left out of that
            batch's gradient combination: coefficient 0, the others combined as if it were
            absent. The history gets ``<task>_weight`` per epoch (gradient methods: the last
            batch's); resume restores the method's state.

    Mixed precision: build the model under ``keras.mixed_precision.set_global_policy(
    "mixed_float16")`` (the kit's logits layers stay float32). ``train`` then wraps the
    optimizer in a ``keras.optimizers.LossScaleOptimizer``, as ``compile`` does.

    Returns:
        a ``keras.callbacks.History``; ``.history`` holds per-epoch lists: ``loss`` (the
        trained, gated sum), ``<task>_loss``, ``<task>_accuracy`` (cross-entropy losses),
        ``val_...`` with validation data, and with a scheduler ``<task>_gate`` and
        ``<task>_keep_prob`` (the probability its gate was drawn with).
        ``.step_function`` is the compiled training step.

    Raises:
        FloatingPointError: a task's mean training loss became NaN or infinite (the
            message names the task and the epoch; the last good checkpoint stays).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    names = list(model.output_names)
    losses = task_utils.task_losses(losses, names)
    weights = task_utils.check_loss_weights(loss_weights, names)
    if scheduler is not None:
        task_utils.check_names(scheduler.tasks, names, "The DST scheduler's tasks")
    data_for = train_data if callable(train_data) else (lambda epoch: train_data)
    task_utils.check_batches(data_for(0), names, "train_data")
    task_utils.check_input_shape(model, data_for(0), "train_data")
    if validation_data is not None:
        task_utils.check_batches(validation_data, names, "validation_data")
        task_utils.check_input_shape(model, validation_data, "validation_data")
        checks.check_not_empty(int(validation_data.cardinality()), "validation_data")
    if seed is not None:
        set_seed(seed)
        if scheduler is not None and scheduler.seed is None:
            scheduler.reseed(seed)
    if isinstance(optimizer, str):  # as compile accepts it
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"optimizer={optimizer!r}: pass a Keras optimizer, e.g. "
                        "keras.optimizers.Adam(1e-3), or its name.")  # fmt: skip
    strategy = backend.strategy_of(model)  # several devices: the model's strategy
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        method = None if weighting is None else weighting_methods.get(weighting, names)
    checks.check_devices(strategy, model, optimizer, method, data_for(0))
    if method is not None and method.kind == "gradient" and len(names) < 2:
        raise ValueError(f"{method.name!r} combines the gradients of several tasks; the model "
                         f"has one ({names}). Train it without a weighting method.")  # fmt: skip
    if method is not None and seed is not None and getattr(method, "seed", 0) is None:
        method.reseed(seed)
    checks.check_first_batch(model, data_for(0), losses, names)
    val_spec = validation_data.element_spec if validation_data is not None else None
    specs = (data_for(0).element_spec, val_spec)
    key = _steps_key(optimizer, method, losses, specs, jit_compile, representation_layer)
    loop = _traced_loop(model, key)
    if loop is None:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            optimizer = _prepare_optimizer(model, optimizer, method)
            loop = _Loop(model, losses, optimizer, weights, specs, jit_compile,
                         method=method, data=data_for(0), layer=representation_layer)  # fmt: skip
        _TRACED[model] = (key, loop)
    loop.set_loss_weights(weights)  # a variable's value: new weights need no new trace
    optimizer, traces = loop.optimizer, loop.tracing_count()

    settings = resume.settings_of(optimizer, weights, seed, method, scheduler)
    record = {"epoch": 0, "history": {}, "stopped": False, "metadata": dict(metadata or {}),
              "settings": settings}  # fmt: skip
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        record = resume.restore(run_dir, model, optimizer, scheduler, method, epochs) or record
        resume.check_resume(run_dir, record, settings, optimizer)
    if record["epoch"] >= epochs or record["stopped"]:
        return _history(model, record["history"], loop.train_step)

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=_steps(data_for(record["epoch"])),
    )  # fmt: skip
    model.stop_training = False
    callback_list.on_train_begin()
    _run_epochs(loop, data_for, record, epochs, scheduler, method, validation_data,
                callback_list, names, run_dir, checkpoints)  # fmt: skip
    callback_list.on_train_end()
    work.add_traces(loop.tracing_count() - traces)
    return _history(model, record["history"], loop.train_step)


def _run_epochs(loop, data_for, record, epochs, scheduler, method, validation_data,
                callback_list, names, run_dir, checkpoints) -> None:  # fmt: skip
    """DST's measuring pass, then the epochs from ``record["epoch"]`` on, checkpointed."""
    model, optimizer = loop.model, loop.optimizer
    if scheduler is not None and scheduler.initial is None:
        scheduler.observe_initial(_measuring_pass(loop, data_for(0)))
    for epoch in range(record["epoch"], epochs):
        if method is not None:
            method.on_epoch_start(epoch, cores.epoch_losses(record["history"], names))
        start = record.setdefault("start_losses", {})  # the first step's: before any update
        logs = _run_epoch(loop, data_for(epoch), epoch, scheduler, validation_data, callback_list,
                          start)  # fmt: skip
        if method is not None:
            logs.update({f"{t}_weight": w for t, w in method.weights_for_logging().items()})
        for callback in callback_list.callbacks:  # (CallbackList would pass them a copy)
            callback.on_epoch_end(epoch, logs)  # what they add to logs joins the history
        for key, value in logs.items():
            record["history"].setdefault(key, []).append(float(value))
        checks.check_progress(record["history"], names, epoch, start)
        record.update(epoch=epoch + 1, stopped=bool(model.stop_training))
        record["finished"] = record["epoch"] >= epochs or record["stopped"]
        checks.check_weights(model, epoch + 1)  # before a checkpoint replaces the last good one
        if run_dir is not None and (checkpoints or record["finished"]):
            resume.save(run_dir, model, optimizer, scheduler, method, record)
        if model.stop_training:
            break


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (what its steps were made with, the :class:`_Loop` holding them).

Tracing a ResNet18's steps costs seconds, often more than a short run's training. Called
again with the *same* model, optimizer and weighting-method objects and the same losses,
data specs and options, :func:`train` reuses the steps it traced before (loss weights may
differ: they are a variable's value, as DST's gates are); the
caller puts the objects' values back to a fresh run's (:func:`mtlkit.training.restart`),
and the run is then the same, bit for bit, as one with new objects."""


def _steps_key(optimizer, method, losses, specs, jit_compile, layer) -> tuple:
    """What a model's traced steps depend on besides the model itself."""
    configs = tuple((t, type(f).__name__, repr(_config(f))) for t, f in losses.items())
    return id(optimizer), id(method), configs, repr(specs), jit_compile, layer


def _config(loss) -> dict | None:
    return loss.get_config() if hasattr(loss, "get_config") else None


def _traced_loop(model: keras.Model, key: tuple) -> _Loop | None:
    """The loop whose steps were traced for ``model`` with ``key``, or None (always under
    mixed precision, whose loss-scale optimizer :func:`train` makes anew each call)."""
    if model.dtype_policy.name == "mixed_float16":
        return None
    found = _TRACED.get(model)
    return found[1] if found is not None and found[0] == key else None


def _prepare_optimizer(model: keras.Model, optimizer, method) -> keras.optimizers.Optimizer:
    """Wrap the optimizer for loss scaling under mixed precision, and build it on the model's
    variables and the weighting method's own (UW's log-variances)."""
    mixed = model.dtype_policy.name == "mixed_float16"
    if mixed and method is not None and method.kind == "gradient":
        raise ValueError(
            f"The gradient method {method.name!r} does not support mixed precision here: "
            "train it in float32 (keras.mixed_precision.set_global_policy('float32'))."
        )
    if mixed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    extra = list(method.variables) if method is not None else []
    if not optimizer.built:
        optimizer.build(model.trainable_variables + extra)
    elif extra:
        raise ValueError(
            f"{method.name!r} trains variables of its own, so the optimizer must not be built "
            "yet: pass a fresh optimizer and train() builds it."
        )
    return optimizer


def _run_epoch(
    loop: _Loop, data, epoch: int, scheduler, validation_data, callback_list, start: dict
) -> dict:
    """Train one epoch (0-based ``epoch``) and return its logs; fill ``start`` with the
    first step's task losses (measured before its update) when it is empty."""
    logs: dict[str, float] = {}
    gates = scales = {t: 1.0 for t in loop.tasks}
    if scheduler is not None:
        probabilities = dict(scheduler.probabilities)
        gates, scales = scheduler.sample(), scheduler.loss_scales
        logs.update({f"{t}_keep_prob": probabilities[t] for t in loop.tasks})
        logs.update({f"{t}_gate": float(gates[t]) for t in loop.tasks})
    loop.set_coefficients(gates, scales)
    loop.reset_epoch()
    callback_list.on_epoch_begin(epoch)
    steps = images = 0
    for steps, (x, y) in enumerate(loop.distribute(data), start=1):
        callback_list.on_train_batch_begin(steps - 1)
        step_logs = _guarded(loop, loop.train_step, x, y)
        callback_list.on_train_batch_end(steps - 1, step_logs)
        if not start:  # one host read per run
            start.update({t: float(step_logs[f"{t}_loss"]) for t in loop.tasks})
        images += checks.static_batch_size(x)
    checks.check_not_empty(steps, "train_data")
    work.add_images(loop.model, images, training=True)
    loop.check_finite(epoch + 1)
    values = loop.train_meters.read()
    if loop.weighting is not None and loop.weighting.needs_epoch_losses:
        who = loop.weighting.name.upper()
        checks.refuse_unlabelled(values, loop.tasks, f"epoch {epoch + 1}", who)
    if scheduler is not None:
        checks.refuse_unlabelled(values, loop.tasks, f"epoch {epoch + 1}")
        scheduler.observe_epoch({t: values[f"{t}_loss"] for t in loop.tasks})
    logs = {**values, **logs}
    if validation_data is not None:
        callback_list.on_test_begin()  # (as in fit: RecalibrateBatchNorm acts here)
        loop.val_meters.reset()
        images = 0
        for x, y in loop.distribute(validation_data):
            _guarded(loop, loop.eval_step, x, y, "validation_data")
            images += checks.static_batch_size(x)
        checks.check_not_empty(images, "validation_data")
        work.add_images(loop.model, images, training=False)
        logs.update(loop.val_meters.read())
        callback_list.on_test_end(logs)
    return logs


def _measuring_pass(loop: _Loop, data: tf.data.Dataset) -> dict[str, float]:
    """DST's epoch 0: every task's mean training loss before any update.

    The losses are measured in training mode (as every epoch's are), which moves BatchNorm's
    moving statistics and draws dropout masks; both are put back afterwards, so the run
    then starts from exactly the state a run without DST starts from: its first epoch (all
    gates 1) is the same, bit for bit, and the two differ only by DST.
    """
    state = [v.numpy() for v in loop.model.non_trainable_variables]
    loop.reset_epoch()
    images = 0
    for x, y in loop.distribute(data):
        _guarded(loop, loop.measure_step, x, y)
        images += checks.static_batch_size(x)
    for variable, value in zip(loop.model.non_trainable_variables, state):
        variable.assign(value)
    work.add_images(loop.model, images, training=False)  # a forward pass per image
    loop.check_finite(0)
    values = loop.train_meters.read()
    checks.refuse_unlabelled(values, loop.tasks, "the measuring pass (epoch 0)")
    return {t: values[f"{t}_loss"] for t in loop.tasks}


# ------------------------------------------------------------------- the compiled steps
class _Loop:
    """The compiled training, evaluation and measuring steps of :func:`train`."""

    def __init__(self, model, losses, optimizer, loss_weights, specs: tuple,
                 jit_compile: bool | str = False, *, method=None, data=None,
                 layer: str | None = None):  # fmt: skip
        """``specs``: the training and validation data's element specs; ``method``: the
        weighting method (None: equal weighting); for a gradient method, ``data`` gives the
        batch on which the shared variables are found and ``layer`` names the shared
        representation (None: the last layer every task depends on)."""
        train_spec, val_spec = specs
        self.model, self.optimizer, self.losses = model, optimizer, losses
        self.weighting = method
        # what a gradient method differentiates: the shared variables, or the output of a
        # model that also returns the shared representation
        self.sources, self.with_representation = self._method_sources(method, data, layer)
        self.layer = layer
        self.tasks = list(model.output_names)
        self.binary = [task_utils.loss_kind(losses[t]) == "binary_crossentropy" for t in self.tasks]
        self.loss_weights = [float(loss_weights.get(t, 1.0)) for t in self.tasks]
        # gate_j * w_j * loss_weight_j, changed once per epoch without retracing
        self.coefficients = _variable(self.loss_weights, "float32")
        # the loss weights alone (validation's total), changed per run without retracing
        self.weights = _variable(self.loss_weights, "float32")
        self.train_meters = task_utils.TaskMeters(self.tasks, losses)
        self.val_meters = task_utils.TaskMeters(self.tasks, losses, prefix="val_")
        # the step (1-based, within the epoch) at which each task's loss was first not finite
        self.steps = _variable(0, "int32")
        self.first_non_finite = _variable([0] * len(self.tasks), "int32")
        self.jax = backend.name() == "jax"
        self.strategy = backend.strategy_of(model)  # TensorFlow on several devices
        _check_jit(jit_compile)  # on both backends, though JAX always compiles
        if self.jax:
            self._compile_jax()
            return
        # one trace per step function: the datasets' specs (batch dimension None) fix the
        # input signature, so a smaller last batch does not trigger a second trace. The steps
        # use no Python control flow on tensors, so AutoGraph is off: a ResNet18 step then
        # traces about 1 s faster (notebooks 05-07 trace one per method)
        jit = _use_xla(model, jit_compile)

        def compile_(f, spec, results=lambda: ()):
            if self.strategy is not None:  # each replica runs f on its share of the batch
                f = self._on_replicas(f, results)
                spec = None  # (the distributed batches' specs: traced on the first one)
            return tf.function(f, input_signature=spec, jit_compile=jit, autograph=False)

        self.train_step = compile_(self._train_step, train_spec, self.train_meters.results)
        self.measure_step = compile_(self._measure_step, train_spec)
        self.eval_step = compile_(self._eval_step, val_spec)

    def _on_replicas(self, step, results):
        """``step`` run by every replica of the strategy on its share of a distributed batch;
        then ``results()`` read across the replicas (the meters' sums over them)."""

        def on_replicas(x, y):
            self.strategy.run(step, args=(x, y))
            return results()

        return on_replicas

    def distribute(self, data):
        """``data`` as the steps take it: split across the replicas under a strategy."""
        if self.strategy is None:
            return data
        return self.strategy.experimental_distribute_dataset(data)

    def _compile_jax(self) -> None:
        """The three steps as :class:`mtlkit.backend.JaxStep` functions (``jax.jit``
        compiles each once per batch shape; ``jit_compile`` has no other choice on JAX)."""
        meters = [v for m in (self.train_meters, self.val_meters) for v in m.variables]
        extra = list(self.weighting.variables) if self.weighting is not None else []
        method_state = list(self.weighting.state_variables.values()) if self.weighting else []
        loop_state = [self.coefficients, self.weights, self.steps, self.first_non_finite]
        state = [*self.model.variables, *loop_state, *meters, *method_state]
        trainable = self.model.trainable_variables + extra
        if self.weighting is not None and self.weighting.kind == "gradient":
            self.train_step = self._jax_gradient_step(trainable, state)
        else:
            self.train_step = backend.JaxStep(self._loss_terms, trainable, state, self.optimizer)
        self.measure_step = backend.JaxStep(self._no_total(self._measure_step), [], state)
        self.eval_step = backend.JaxStep(self._no_total(self._eval_step), [], state)

    def _jax_gradient_step(self, trainable, state) -> backend.JaxGradientStep:
        """A gradient method's step on JAX: :meth:`_weighted_losses`, then the method's
        combination of the task gradients (:meth:`_combined`)."""
        where = {id(v): i for i, v in enumerate(trainable)}
        if self.weighting.needs != "representation":
            sources = [where[id(v)] for v in self.sources]
            return backend.JaxGradientStep(self._weighted_losses, self._combined, trainable,
                                           state, self.optimizer, sources=sources)  # fmt: skip
        trunk, heads = graph.split_at_representation(self.model, self.layer)
        return backend.JaxGradientStep(
            lambda x, y, z: self._weighted_losses(x, y, heads(z, training=True)),
            self._combined, trainable, state, self.optimizer,
            trunk=lambda x: trunk(x, training=True),
        )  # fmt: skip

    def _weighted_losses(self, x, y, y_pred=None):
        """The K gated, weighted task losses and the regularisation penalty, as one vector
        (what a gradient method differentiates on JAX), and what :meth:`_combined` needs."""
        y_pred = self.model(x, training=True) if y_pred is None else y_pred
        task_losses, counts = self.task_losses(y, y_pred)
        weighted = [c * loss for c, loss in zip(keras.ops.unstack(self.coefficients.value),
                                                 task_losses)]  # fmt: skip
        penalty = _add_n(self.model.losses) if self.model.losses else keras.ops.zeros(())
        vector = keras.ops.stack([*weighted, keras.ops.cast(penalty, "float32")])
        return vector, (y_pred, task_losses, counts, x, y)

    def _combined(self, vector, G, aux):
        """The method's coefficients (and shared gradient) from G; the batch recorded."""
        y_pred, task_losses, counts, x, y = aux
        weighted = [vector[j] for j in range(len(self.tasks))]
        coefficients, shared = self.weighting.combine_gradients(weighted, G, self._active(counts))
        total = _add_n([c * w for c, w in zip(keras.ops.unstack(coefficients), weighted)])
        self._record(total, y_pred, task_losses, counts, x, y)
        return coefficients, shared, self.train_meters.results()

    @staticmethod
    def _no_total(step):
        return lambda x, y: (None, step(x, y))

    def _train_step(self, x, y):
        if self.weighting is not None and self.weighting.kind == "gradient":
            y_pred, task_losses, counts, total = self._gradient_step(x, y)
            self._record(total, y_pred, task_losses, counts, x, y)
            return self.train_meters.results()
        extra = list(self.weighting.variables) if self.weighting is not None else []
        variables = self.model.trainable_variables + extra
        compute = lambda: self._loss_terms(x, y)  # noqa: E731
        return backend.tensorflow_step(compute, variables, self.optimizer)[1]

    def _loss_terms(self, x, y):
        """The step of ``fit``, without its update: the (gated, weighted) total loss, which
        :mod:`mtlkit.backend` differentiates, and the running values to log."""
        y_pred, task_losses, counts = self._forward(x, y, training=True)
        coefficients = keras.ops.unstack(self.coefficients.value)
        if self.weighting is None:
            total = self._total(task_losses, coefficients)
        else:  # UW, DWA, RLW, FAMO combine the gated, weighted losses
            weighted = [c * loss for c, loss in zip(coefficients, task_losses)]
            if self.weighting.wants_active:  # FAMO leaves out tasks without labels
                combined = self.weighting.combine(weighted, self._active(counts))
            else:
                combined = self.weighting.combine(weighted)
            total = self._total([combined], [1.0])
        self._record(total, y_pred, task_losses, counts, x, y)
        return total, self.train_meters.results()

    def _record(self, total, y_pred, task_losses, counts, x, y) -> None:
        """Watch the losses for NaN and add the batch to the running means."""
        self._watch(task_losses)
        self.train_meters.update(total, task_losses, counts, y, y_pred, _batch_size(x))

    # -- gradient methods (PCGrad, MGDA-UB, GradNorm, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL) -
    def _method_sources(self, method, data, layer: str | None) -> tuple[list, object]:
        """A gradient method's shared variables (found on the first batch of ``data``,
        :mod:`mtlkit.models.sharing`) or its representation model; nothing for the others."""
        if method is None or method.kind != "gradient":
            return [], None
        if method.needs == "representation":
            return [], graph.shared_representation(self.model, layer)
        x, y = next(iter(data))
        sources = sharing.shared_variables(self.model, x, y, self.losses)
        method.check_sources(sources, repr(self.model.name))
        if method.needs == "last_shared_layer":
            sources = cores.last_shared_kernel(sources)
        return sources, None

    def _gradient_step(self, x, y):
        """One step of a gradient method.

        Each task's weighted loss ``c_j L_j`` (DST gate x loss weight) is differentiated on
        its own w.r.t. what the method needs; the method turns the (K, D) matrix into
        per-task coefficients (and, for PCGrad, the shared variables' new gradient); every
        variable then gets the gradient of ``sum_j coefficient_j c_j L_j``. Tasks that are
        not active in the batch (:meth:`_active`) are left out of the combination.
        """
        method, variables = self.weighting, self.model.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            if method.needs == "representation":
                z, y_pred = self.with_representation(x, training=True)
            else:
                y_pred = self.model(x, training=True)
            task_losses, counts = self.task_losses(y, y_pred)
            weighted = [c * loss for c, loss in zip(tf.unstack(self.coefficients), task_losses)]
            penalty = tf.add_n(self.model.losses) if self.model.losses else None
        sources = [z] if method.needs == "representation" else self.sources
        G = backend.task_gradient_matrix(tape, weighted, sources)
        replicas = backend.replicas()
        if replicas > 1:  # the tape differentiates the global losses: each replica holds
            # `replicas` x its share of G; G becomes the global batch's on every replica
            if method.needs == "representation":  # a column per example: side by side
                G = backend.global_concat(G, axis=1) / replicas
            else:
                G = backend.global_sum(G) / replicas
        coefficients, shared = method.combine_gradients(weighted, G, self._active(counts))
        given = {}  # PCGrad: the shared variables take the surgery's sum, no second backward
        if shared is not None:
            parts = cores.split_gradient(shared, self.sources)
            given = dict(zip(map(id, self.sources), parts))
        rest = [v for v in variables if id(v) not in given]
        combined = tape.gradient(weighted, rest, output_gradients=tf.unstack(coefficients))
        given.update(zip(map(id, rest), combined))
        gradients = [given[id(v)] for v in variables]
        if penalty is not None:
            extra = tape.gradient(penalty, variables)
            gradients = [g if e is None else (e if g is None else g + e)
                         for g, e in zip(gradients, extra)]  # fmt: skip
        del tape
        if replicas > 1:  # the optimizer sums the replicas' gradients
            gradients = [None if g is None else g / replicas for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        total = tf.add_n([c * w for c, w in zip(tf.unstack(coefficients), weighted)])
        return y_pred, task_losses, counts, total

    def _active(self, counts) -> tf.Tensor:
        """(K,) booleans: the tasks with a loss in this batch -- a labelled example, and a
        coefficient (DST gate x loss weight) that is not 0. The others have a zero gradient
        row, which a method must not mistake for a task that is already satisfied."""
        ops = keras.ops
        return ops.logical_and(ops.stack(counts) > 0, ops.not_equal(self.coefficients.value, 0.0))

    # -- losses ---------------------------------------------------------------------------
    def task_losses(self, y, y_pred):
        """Each task's mean loss over its labelled examples, and how many there were -- in
        the global batch: on several devices the replicas' sums and counts are added up first
        (a replica whose share has no label for a task adds nothing to its mean)."""
        pairs = [
            task_utils.masked_sum(self.losses[t], y[t], y_pred[t], binary=b)
            for t, b in zip(self.tasks, self.binary)
        ]
        sums, counts = [p[0] for p in pairs], [p[1] for p in pairs]
        if backend.replicas() > 1:  # one all-reduce for every task's sum and count
            both = keras.ops.unstack(backend.global_sum(keras.ops.stack(sums + counts)))
            sums, counts = both[: len(sums)], both[len(sums) :]
        return [keras.ops.divide_no_nan(s, c) for s, c in zip(sums, counts)], counts

    def _eval_step(self, x, y):
        y_pred, task_losses, counts = self._forward(x, y, training=False)
        total = self._total(task_losses, keras.ops.unstack(self.weights.value))
        self.val_meters.update(total, task_losses, counts, y, y_pred, _batch_size(x))
        return ()

    def _measure_step(self, x, y):
        """DST's epoch 0: the training-mode losses, and no update of any trainable weight."""
        y_pred, task_losses, counts = self._forward(x, y, training=True)
        self._record(_add_n(task_losses), y_pred, task_losses, counts, x, y)
        return ()

    def _forward(self, x, y, training: bool):
        """Predictions, each task's mean loss over its labelled examples, and their counts."""
        y_pred = self.model(x, training=training)
        return (y_pred, *self.task_losses(y, y_pred))

    def _total(self, task_losses, weights):
        """The weighted sum of the task losses, plus the model's regularisation penalties."""
        total = _add_n([w * loss for w, loss in zip(weights, task_losses)])
        if self.model.losses:  # regularisation penalties, as fit adds them
            total = total + _add_n(self.model.losses)
        return total

    def tracing_count(self) -> int:
        """How many times the step functions were traced (each one once, if used)."""
        steps = (self.train_step, self.measure_step, self.eval_step)
        return sum(step.experimental_get_tracing_count() for step in steps)

    # -- per-epoch bookkeeping ----------------------------------------------------------
    def set_loss_weights(self, loss_weights: Mapping[str, float]) -> None:
        """This run's loss weights (1 for a task not named), used from the next epoch on."""
        self.loss_weights = [float(loss_weights.get(t, 1.0)) for t in self.tasks]
        self.weights.assign(self.loss_weights)

    def set_coefficients(self, gates: Mapping[str, float], scales: Mapping[str, float]) -> None:
        values = [gates[t] * scales[t] * w for t, w in zip(self.tasks, self.loss_weights)]
        self.coefficients.assign(values)

    def reset_epoch(self) -> None:
        self.train_meters.reset()
        self.steps.assign(0)
        self.first_non_finite.assign(np.zeros(len(self.tasks), "int32"))

    def _watch(self, task_losses) -> None:
        """Remember the first step at which each task's loss was NaN or infinite."""
        ops = keras.ops
        self.steps.assign_add(1)
        bad = ops.logical_not(ops.isfinite(ops.stack(task_losses)))
        first = self.first_non_finite.value
        at_step = ops.where(ops.logical_and(bad, ops.equal(first, 0)), self.steps.value, first)
        self.first_non_finite.assign(at_step)

    def check_finite(self, epoch: int) -> None:
        """Raise if a loss was not finite in this epoch, naming the task that went first."""
        first = self.first_non_finite.numpy()
        if not first.any():
            return
        order = sorted((int(s), t) for s, t in zip(first, self.tasks) if s > 0)
        (step, task), later = order[0], order[1:]
        where = "the measuring pass (epoch 0)" if epoch == 0 else f"epoch {epoch}"
        also = "; then " + ", ".join(f"{t!r} at step {s}" for s, t in later) if later else ""
        raise FloatingPointError(
            f"The training loss of task {task!r} became NaN or infinite at step {step} of "
            f"{where}{also}. Lower the learning rate or check that task's labels and inputs "
            "for NaNs; the last good checkpoint in run_dir was kept."
        )


# ------------------------------------------------------------------------------ helpers
def _check_jit(jit_compile) -> None:
    """Refuse a ``jit_compile`` other than ``True``, ``False`` or ``"auto"``."""
    if jit_compile != "auto" and not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile={jit_compile!r}: use True, False or 'auto'.")


def _use_xla(model: keras.Model, jit_compile: bool | str) -> bool:
    """``jit_compile`` as ``fit`` reads it: ``"auto"`` means XLA on an accelerator."""
    if jit_compile != "auto":
        return jit_compile
    accelerators = [d for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    if not accelerators or tf.config.experimental.is_op_determinism_enabled():
        return False
    return all(getattr(layer, "supports_jit", True) for layer in model._flatten_layers())


def _guarded(loop: _Loop, step, x, y, what: str = "train_data"):
    """Run one of the loop's steps on a batch of ``what``; turn the label check's graph error
    into a clear ValueError. (On JAX, whose compiled steps cannot raise, the labels are
    checked on the host first.)"""
    if loop.jax:
        for message in (*checks.LABEL_ERRORS, task_utils.BAD_BINARY_LABELS):
            checks.raise_label_error(loop, y, message, what)
        return step(x, y)
    try:
        return step(x, y)
    except tf.errors.InvalidArgumentError as err:
        for message in (*checks.LABEL_ERRORS, task_utils.BAD_BINARY_LABELS):
            if message in str(err):
                on_host = {t: checks.on_host(v) for t, v in y.items()}
                checks.raise_label_error(loop, on_host, message, what)
        raise


def _variable(value, dtype: str) -> keras.Variable:
    """One of the loop's own non-trainable variables (a Keras variable on every backend)."""
    return keras.Variable(np.asarray(value, dtype), trainable=False, dtype=dtype)


def _add_n(values):
    """The sum of a list of tensors, left to right (``tf.add_n`` in ``keras.ops``)."""
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def _batch_size(x):
    first = keras.tree.flatten(x)[0]
    return keras.ops.cast(keras.ops.shape(first)[0], "float32")


def _steps(data: tf.data.Dataset) -> int | None:
    n = int(data.cardinality())
    return n if n >= 0 else None


def _history(model, history: dict, step_function) -> keras.callbacks.History:
    """A ``keras.callbacks.History`` holding ``history`` (as ``fit`` returns one)."""
    result = keras.callbacks.History()
    result.set_model(model)
    result.history = {k: list(v) for k, v in history.items()}
    result.epoch = list(range(len(next(iter(history.values()), []))))
    result.step_function = step_function
    return result
