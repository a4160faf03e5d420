"""Notebook 04's JAX step against ``training.train`` on JAX (run with KERAS_BACKEND=jax by
``tests/test_notebook04_step.py``): prints one JSON line of measurements.

The cells tagged ``gated-step-jax`` (the pure step and the function that keeps the values
in the variables) run with the names the notebook says they expect; a copy of the model
trains from the same start with the loop, the same gates and batches.
"""

import json
import sys
from pathlib import Path

import jax
import keras
import nbformat
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).parent))
import test_notebook04_step as t  # noqa: E402  (its model, data and fixed gates)

from mtlkit import training  # noqa: E402
from mtlkit.models import tasks  # noqa: E402


def jax_cells() -> str:
    cells = nbformat.read(t.NOTEBOOK, as_version=4).cells
    return "\n\n".join(c.source for c in cells if "gated-step-jax" in c.metadata.get("tags", []))


def main() -> None:
    keras.utils.set_random_seed(0)
    ours, theirs = t.build(), t.build()
    theirs.set_weights(ours.get_weights())
    start, b_start = t.trainable(ours), ours.get_layer("b").kernel.numpy().copy()
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(ours.trainable_variables)
    names = list(ours.output_names)
    coefficients = keras.Variable([t.GATES[n] * t.LOSS_WEIGHTS[n] for n in names],
                                  trainable=False)  # fmt: skip
    namespace = {"tf": tf, "jax": jax, "keras": keras, "np": np, "tasks": tasks,
                 "model": ours, "optimizer": optimizer, "losses": t.losses(),
                 "loss_weights": dict(t.LOSS_WEIGHTS), "names": names,
                 "coefficients": coefficients, "gated_step": None}  # fmt: skip
    exec(compile(jax_cells(), "<04_dst.ipynb gated-step-jax>", "exec"), namespace)
    for x, y in t.batches():
        returned = namespace["step"](x, y)
    scheduler = t.FixedGates(t.TASKS, metrics=())
    training.train(theirs, t.batches(), epochs=1, losses=t.losses(),
                   optimizer=keras.optimizers.Adam(0.05), loss_weights=t.LOSS_WEIGHTS,
                   scheduler=scheduler, verbose=0)  # fmt: skip
    print(json.dumps({
        "backend": keras.backend.backend(),
        "step": namespace["step"].__name__,
        "trained": t.max_diff(t.trainable(ours), start),
        "to_loop": t.max_diff(t.trainable(ours), t.trainable(theirs)),
        "head_kept": bool(np.array_equal(ours.get_layer("b").kernel.numpy(), b_start)),
        "returned": sorted(returned),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
