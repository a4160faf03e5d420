"""Train one small model on one device and, data-parallel, on two virtual CPU devices, and
print one JSON line: per arm, the largest difference between the two runs' final weights
and histories, and the messages for bad set-ups. ``python tests/_devices_run.py`` with
``KERAS_BACKEND`` set (and, for JAX, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``).

TensorFlow: two logical CPU devices and ``tf.distribute.MirroredStrategy`` (model and
optimizer made in its scope, as Keras's guide says); JAX: ``keras.distribution.DataParallel``
set before the model is built. The global batch is 16, so each device gets 8 examples; the
task ``kind`` is unknown (-1) in the first 8 examples of every batch, so one device never
has a label for it, and its whole last batch is unknown. BatchNormalization is
``synchronized=True``: its batch statistics are the global batch's on TensorFlow too (on
JAX they are anyway: the step is one program over the global batch).
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

if keras.backend.backend() == "tensorflow":
    CPU = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402
from _on_backend import message_of  # noqa: E402

from mtlkit import training  # noqa: E402
from mtlkit.methods import dst  # noqa: E402

JAX = keras.backend.backend() == "jax"
ARMS = ("ew", "dst", "uw", "dwa", "rlw", "pcgrad", "mgda", "gradnorm", "famo", "imtl_g",
        "cagrad", "nash_mtl", "aligned_mtl")  # fmt: skip
LOSSES = {"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
          "flag": keras.losses.BinaryCrossentropy(from_logits=True)}  # fmt: skip


def model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu", name="shared")(inputs)
    h = keras.layers.BatchNormalization(synchronized=not JAX, name="norm")(h)
    outputs = {"kind": keras.layers.Dense(3, name="kind")(h),
               "flag": keras.layers.Dense(1, name="flag")(h)}  # fmt: skip
    return keras.Model(inputs, outputs)


def data(batch: int = 16, partial: bool = True) -> tf.data.Dataset:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 6)).astype("float32")
    kind = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    if partial:
        kind[(np.arange(64) % 16) < 8] = -1  # replica 0's half of every batch: unknown
        kind[48:64] = -1  # and the whole last batch
    flag = (x[:, 2:3] + 0.3 * x[:, 3:4] > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, {"kind": kind, "flag": flag})).batch(batch)


def two_devices():
    """TensorFlow: a MirroredStrategy over the two logical CPUs; JAX: DataParallel."""
    if JAX:
        return keras.distribution.DataParallel()
    from mtlkit.studies import devices

    return devices.mirrored(2)


def scope(strategy):
    """Where a run's model is built and trained: the strategy's scope (TensorFlow) or the
    distribution set (JAX); one device without ``strategy``."""
    if strategy is None:
        return contextlib.nullcontext() if JAX else tf.device("/cpu:0")
    return strategy.scope()


def run(arm: str, strategy=None, run_dir=None, epochs: int = 4) -> tuple[list, dict]:
    if arm == "fit":
        return run_fit(strategy, run_dir)
    with scope(strategy):
        return train(arm, run_dir, epochs)


def train(arm: str, run_dir, epochs: int) -> tuple[list, dict]:
    net, optimizer = model(), keras.optimizers.Adam(1e-2)
    scheduler = None
    if arm == "dst":
        depths, counts = {"kind": 1, "flag": 4}, {"kind": 0.5, "flag": 1}
        scheduler = dst.DSTScheduler(["kind", "flag"], depths, counts, seed=4, alpha=0.5)
    weights = {"kind": 0.5} if arm == "ew-halved" else None  # (see controls)
    history = training.train(
        net, data(), epochs=epochs, losses=LOSSES, optimizer=optimizer, verbose=0, seed=0,
        weighting=None if arm in ("ew", "dst", "ew-halved") else arm, scheduler=scheduler,
        validation_data=data(), run_dir=run_dir, loss_weights=weights,
    ).history  # fmt: skip
    return [keras.ops.convert_to_numpy(v.value) for v in net.weights], history


def run_fit(strategy, run_dir) -> tuple[list, dict]:
    """Keras's own fit (the kit's fit_resumable), every label known."""
    made = []

    def build():
        made.append(model())
        made[-1].compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSSES)
        return made[-1]

    full = data(partial=False)
    with scope(strategy):
        history = training.fit_resumable(build, full, epochs=4, run_dir=run_dir,
                                         validation_data=full, verbose=0)  # fmt: skip
    return [keras.ops.convert_to_numpy(v.value) for v in made[-1].weights], history


def compare_runs(one, two) -> dict:
    (a, a_history), (b, b_history) = one, two
    return {
        "weights": max(float(np.max(np.abs(u - v))) for u, v in zip(a, b)),
        "history": max(float(np.nanmax(np.abs(np.subtract(a_history[k], b_history[k]))))
                       for k in a_history),
        "keys_equal": sorted(a_history) == sorted(b_history),
    }  # fmt: skip


def compare(arm: str, strategy, runs: Path) -> dict:
    """One device against two; ``moved``: how far the weights moved from the start."""
    one = run(arm, run_dir=runs / f"{arm}-one")
    two = run(arm, strategy, run_dir=runs / f"{arm}-two")
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one[0], run_initial()))
    return {**compare_runs(one, two), "moved": moved}


def controls(strategy, runs: Path) -> dict:
    """What the tolerance must tell apart. ``halved``: a replica without labels for ``kind``
    averaged in as 0 (each replica's own masked mean, averaged), which is EW with ``kind``'s
    loss weighted 0.5 here. ``resumed``: two devices, stopped after 2 epochs, resumed."""
    two = run("ew", strategy)
    halved = run("ew-halved")
    run("ew", strategy, run_dir=runs / "resumed", epochs=2)
    resumed = run("ew", strategy, run_dir=runs / "resumed")
    return {"halved": compare_runs(two, halved), "resumed": compare_runs(two, resumed)}


def run_initial() -> list:
    with scope(None):
        return [keras.ops.convert_to_numpy(v.value) for v in model().weights]


def refusals(strategy) -> dict:
    """The messages for a batch the devices cannot split, and for a model (or optimizer)
    made outside the strategy (TensorFlow) or before the distribution was set (JAX)."""

    def uneven():
        with scope(strategy):
            net, optimizer = model(), keras.optimizers.Adam(1e-2)
            training.train(net, data(15), epochs=1, losses=LOSSES, optimizer=optimizer,
                           verbose=0)  # fmt: skip

    def optimizer_outside():
        with scope(strategy):
            net = model()
        training.train(net, data(), epochs=1, losses=LOSSES, verbose=0,
                       optimizer=keras.optimizers.Adam(1e-2))  # fmt: skip

    def model_outside():
        net = model()
        with scope(strategy):
            optimizer = keras.optimizers.Adam(1e-2)
            training.train(net, data(), epochs=1, losses=LOSSES, optimizer=optimizer, verbose=0)

    cases = {"uneven": uneven, "model_outside": model_outside}
    if not JAX:
        cases["optimizer_outside"] = optimizer_outside
    return {what: message_of(call) for what, call in cases.items()}


def study(runs: Path) -> dict:
    """A CIFAR-100 study run (quick profile, synthetic stand-in) on two devices, its tag and
    label beside one device's, and the messages for device counts that cannot work."""
    from mtlkit import studies

    small = dict(epochs=1, train_limit=200, eval_limit=100, source="synthetic")
    one = studies.cifar100_settings("quick", **small)
    two = studies.cifar100_settings("quick", devices=2, **small)
    run = studies.run_cifar100("independent", 0, two, arm="train", runs_dir=runs)
    return {
        "tags": [one.tag, two.tag],
        "label": two.data_label,
        "trained": run.history["fine_loss"],
        "metadata_devices": json.loads((run.run_dir / "results.json").read_text())["metadata"].get(
            "devices"
        ),
        "too_many": message_of(lambda: studies.cifar100_settings("quick", devices=3)),
        "uneven": message_of(
            lambda: studies.cifar100_settings("quick", devices=2, batch_size=99)
        ),  # fmt: skip
    }


if __name__ == "__main__":
    strategy = two_devices()
    runs = Path(tempfile.mkdtemp())
    results = {"backend": keras.backend.backend(), "arms": {}}
    results["controls"] = controls(strategy, runs)
    for arm in os.environ.get("MTLKIT_DEVICE_ARMS", " ".join((*ARMS, "fit"))).split():
        try:
            results["arms"][arm] = compare(arm, strategy, runs)
        except Exception as err:  # noqa: BLE001  (recorded; the test names the arm)
            results["arms"][arm] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    results["messages"] = refusals(strategy)
    results["study"] = study(runs)
    print(json.dumps(results))
