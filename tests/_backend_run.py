"""Train one small model several ways on the backend named by ``KERAS_BACKEND``, from the
weights in a ``.weights.h5`` file, and write the final weights and histories to a ``.npz``
file: ``python tests/_backend_run.py INITIAL.weights.h5 OUT.npz RUNS_DIR``.

Besides the arms compared across backends, it records what :mod:`tests.test_backends`
checks within one: a run stopped after 2 epochs and resumed (``ew-resumed``), the
messages for a gradient method on JAX and for resuming a run started on the other
backend (the TensorFlow process leaves one in ``RUNS_DIR/started``).

:mod:`tests.test_backends` runs it once per backend and compares the results. The first
process writes INITIAL when it does not exist (a ``.weights.h5`` file is backend-neutral).
The model has no dropout (the backends draw different random masks); one task has a label
of -1 (unknown) in part of every batch, and one batch where it has none at all.
"""

import os
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from _on_backend import message_of

from mtlkit import training
from mtlkit.analysis import diagnostics
from mtlkit.data import EIGHT
from mtlkit.methods import dst
from mtlkit.models import architectures, sharing

ARMS = (
    "ew",
    "dst",
    "uw",
    "dwa",
    "rlw",
    "pcgrad",
    "mgda",
    "gradnorm",
    "famo",
    "imtl_g",
    "cagrad",
    "nash_mtl",
    "aligned_mtl",
)


INITIAL_SEED = 3
"""The draw of the initial weights. Fixed: a draw that leaves a ReLU unit near 0 can turn the
backends' float32 rounding (1e-7) into 1e-3 after four epochs (unseeded, FAMO's weights once
differed by 4.6e-3 across backends); with this draw every arm stays within 3e-7 but CAGrad
(1.6e-5: JAX solves its K x K problem in float32) and mixed precision (2.4e-4)."""


def model() -> keras.Model:
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu", name="shared")(inputs)
    h = keras.layers.BatchNormalization(name="norm")(h)
    outputs = {
        "kind": keras.layers.Dense(3, name="kind")(h),
        "flag": keras.layers.Dense(1, name="flag")(h),
    }
    return keras.Model(inputs, outputs)


def data() -> tf.data.Dataset:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 6)).astype("float32")
    kind = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    kind[::3] = -1  # unknown in a third of the examples
    kind[48:64] = -1  # and in the whole last batch
    flag = (x[:, 2:3] + 0.3 * x[:, 3:4] > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, {"kind": kind, "flag": flag})).batch(16)


def train(arm: str, net: keras.Model, initial: Path) -> dict:
    net.load_weights(initial)
    scheduler = None
    if arm == "dst":
        depths, counts = {"kind": 1, "flag": 4}, {"kind": 0.5, "flag": 1}
        scheduler = dst.DSTScheduler(["kind", "flag"], depths, counts, seed=4, alpha=0.5)
    history = fit(net, arm, scheduler, epochs=4)
    out = {f"{arm}/weight{i}": v.numpy() for i, v in enumerate(net.weights)}
    out.update({f"{arm}/history/{k}": np.asarray(v) for k, v in history.items()})
    return out


def fit(net, arm: str, scheduler=None, epochs: int = 4, run_dir=None) -> dict:
    return training.train(
        net, data(), epochs=epochs, optimizer=keras.optimizers.Adam(1e-2), verbose=0, seed=0,
        losses={"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "flag": keras.losses.BinaryCrossentropy(from_logits=True)},
        weighting=None if arm in ("ew", "dst") else arm, scheduler=scheduler,
        validation_data=data(), run_dir=run_dir,
    ).history  # fmt: skip


def resumed(net, initial: Path, runs: Path) -> dict:
    """EW stopped after 2 epochs, then resumed to 4 from its run folder."""
    net.load_weights(initial)
    run_dir = runs / f"resumed-{keras.backend.backend()}"
    fit(net, "ew", epochs=2, run_dir=run_dir)
    net = model()  # a new process would build a new model
    history = fit(net, "ew", epochs=4, run_dir=run_dir)
    out = {f"ew-resumed/weight{i}": v.numpy() for i, v in enumerate(net.weights)}
    out.update({f"ew-resumed/history/{k}": np.asarray(v) for k, v in history.items()})
    return out


def mixed_precision(initial: Path) -> dict:
    """EW with float16 compute (``mixed_float16``: float32 weights, a LossScaleOptimizer)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = model()
        net.load_weights(initial)
        history = fit(net, "ew")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = {f"mixed/weight{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(net.weights)}
    out.update({f"mixed/history/{k}": np.asarray(v) for k, v in history.items()})
    return out


def refused(net, runs: Path) -> dict:
    """The messages a JAX user gets for a run folder started on TensorFlow, and for a
    ``jit_compile`` that is not True, False or "auto" (JAX always compiles, but a typo
    there must not pass silently)."""
    call = lambda: fit(net, "ew", epochs=2, run_dir=runs / "started")  # noqa: E731
    losses = {"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "flag": keras.losses.BinaryCrossentropy(from_logits=True)}  # fmt: skip
    typo = lambda: training.train(net, data(), epochs=1, losses=losses, jit_compile="yes",  # noqa: E731
                                  optimizer=keras.optimizers.Adam(1e-2))  # fmt: skip
    return {"message/other_backend": np.asarray(message_of(call)),
            "message/jit_compile": np.asarray(message_of(typo))}  # fmt: skip


def measured(net, initial: Path) -> dict:
    """The interference diagnostics at the initial weights: shared variables, cosines."""
    net.load_weights(initial)
    x, y = next(iter(data()))
    losses = {"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "flag": keras.losses.BinaryCrossentropy(from_logits=True)}  # fmt: skip
    stats = diagnostics.gradient_stats(net, x, y, losses)
    grads = diagnostics.task_gradients(net, x, y, losses)
    return {
        "diagnostics/shared": np.asarray(sharing.shared_paths(net, x, y, losses)),
        "diagnostics/gram": stats.gram,
        "diagnostics/kind_kernel": np.asarray(grads["kind"]["shared/kernel"]),
    }


def preset_weights(folder: Path) -> dict:
    """The ResNet18 of notebook 03 loaded from the local preset folder the TensorFlow process
    wrote (as ``weights="imagenet"`` loads Kaggle's): its backbone weights' sums, by path."""
    os.environ["MTLKIT_RESNET18_PRESET"] = str(folder)
    net = architectures.build_celeba(EIGHT, weights="imagenet", image_size=32)
    backbone = [w for w in net.weights if w.path.split("/")[0] not in EIGHT]
    assert len(backbone) > 50, [w.path for w in net.weights][:5]
    return {f"preset/{w.path}": np.abs(keras.ops.convert_to_numpy(w)).sum() for w in backbone}


def main(initial: Path, out: Path, runs: Path) -> None:
    keras.utils.set_random_seed(INITIAL_SEED)  # the same initial weights in every test run
    net = model()
    if not initial.exists():
        net.save_weights(initial)
    results = {"backend": np.asarray(keras.backend.backend())}
    for arm in ARMS:
        results.update(train(arm, net, initial))
    results.update(resumed(net, initial, runs))
    results.update(mixed_precision(initial))
    results.update(measured(net, initial))
    if keras.backend.backend() == "tensorflow":
        fit(net, "ew", epochs=1, run_dir=runs / "started")
        architectures.resnet18_backbone(None).save_to_preset(str(runs / "preset"))
    else:
        results.update(refused(net, runs))
    results.update(preset_weights(runs / "preset"))
    np.savez(out, **results)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
