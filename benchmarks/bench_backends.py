"""Training throughput of the kit's loop on Keras's TensorFlow and JAX backends, side by side.

Each measurement runs in its own process (Keras chooses its backend once, at import) with
``KERAS_BACKEND`` set: it builds one of the kit's models with random weights, and trains it
with ``mtlkit.training.train`` (equal weights) for two epochs of ``--steps`` batches of
random images and labels. The first epoch includes tracing and compiling the step
(``tf.function`` on TensorFlow, ``jax.jit`` on JAX); the second is timed. Models:

* ``cifar_independent`` -- the CIFAR-100 ``independent`` model at the report's width (32 px);
* ``resnet18_40`` / ``resnet18_224`` -- notebook 03's ResNet18 with eight attribute heads, fed
  40 x 40 images (the quick profile's size) or 224 x 224 ones (the report's).

The processes are interleaved (model by model, the backends in alternating order, for
``--repeats`` rounds) and the median per backend and model is reported with the ratio
JAX / TensorFlow of images per second, measured in the same round.

    python benchmarks/bench_backends.py --json benchmarks/results/backends.json
    python benchmarks/bench_backends.py --models resnet18_40 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("tensorflow", "jax")
MODELS = {"cifar_independent": 32, "resnet18_40": 40, "resnet18_224": 224}
"""Each model and the image size it is fed."""


def worker(model_name: str, steps: int, batch_size: int) -> dict:
    """Train ``model_name`` for two epochs in this process; the timed epoch's images/s."""
    import mtlkit  # noqa: F401  (first: quiet TensorFlow start-up)

    # isort: split
    import keras
    import numpy as np
    import tensorflow as tf

    from mtlkit import data, training
    from mtlkit.models import architectures, tasks

    size = MODELS[model_name]
    training.set_seed(0)
    rng = np.random.default_rng(0)
    n = steps * batch_size
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    if model_name == "cifar_independent":
        model = architectures.build_cifar100("independent")
        labels = {"fine": rng.integers(0, 100, n), "coarse": rng.integers(0, 20, n)}
        losses = tasks.classification_losses(["fine", "coarse"])
        images = images.astype("float32") / 255.0
    else:
        model = architectures.build_celeba(data.EIGHT, weights=None, image_size=size)
        labels = {a: rng.integers(0, 2, (n, 1)).astype("float32") for a in data.EIGHT}
        losses = tasks.classification_losses(list(data.EIGHT), binary=True)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).cache()

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    start = time.perf_counter()
    training.train(model, dataset, epochs=2, losses=losses, verbose=0,
                   optimizer=keras.optimizers.Adam(1e-3), callbacks=[EpochTimes()])  # fmt: skip
    return {
        "backend": keras.backend.backend(),
        "model": model_name,
        "images_per_s": n / times[1],
        "first_epoch_s": times[0],
        "total_s": time.perf_counter() - start,
    }


def measure(backend: str, model_name: str, steps: int, batch_size: int) -> dict:
    """One worker process on ``backend``; its JSON result."""
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": os.environ.get(
        "JAX_PLATFORMS", "")}  # fmt: skip
    return run_worker(__file__, ["--worker", model_name], steps, batch_size, env,
                      f"{backend} {model_name}")  # fmt: skip


def run_worker(script: str, worker: list, steps: int, batch_size: int, env: dict,
               what: str) -> dict:  # fmt: skip
    """``python script *worker --steps .. --batch-size ..`` in a process with ``env``; the
    JSON line it prints last (``what`` names the case in an error)."""
    args = [sys.executable, script, *worker, "--steps", str(steps),
            "--batch-size", str(batch_size)]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return "unknown"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--repeats``, ``--json``: the options bench_devices.py shares."""
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--steps", type=int, default=None,
                        help="batches per epoch (default 20; 4 for resnet18_224)")  # fmt: skip
    add_common_arguments(parser)
    parser.add_argument("--worker", choices=list(MODELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size)))
        return
    rows = []
    for repeat in range(args.repeats):
        for model_name in args.models:
            steps = args.steps or (4 if model_name == "resnet18_224" else 20)
            order = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                row = {**measure(backend, model_name, steps, args.batch_size), "repeat": repeat}
                rows.append(row)
                speed, first = row["images_per_s"], row["first_epoch_s"]
                print(f"repeat {repeat} {model_name:18s} {backend:10s} {speed:8.1f} img/s  "
                      f"first epoch {first:6.1f} s", flush=True)  # fmt: skip
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; batch {args.batch_size}; median "
          "over repeats; ratio = JAX / TensorFlow images per second (same repeat)")  # fmt: skip
    print("| model | TensorFlow img/s | JAX img/s | ratio | first epoch TF s | first epoch JAX s |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for model_name in args.models:
        by = {b: [r for r in rows if r["model"] == model_name and r["backend"] == b]
              for b in BACKENDS}  # fmt: skip
        ratios = [
            j["images_per_s"] / t["images_per_s"] for t, j in zip(by["tensorflow"], by["jax"])
        ]
        med = {b: statistics.median(r["images_per_s"] for r in by[b]) for b in BACKENDS}
        first = {b: statistics.median(r["first_epoch_s"] for r in by[b]) for b in BACKENDS}
        summary[model_name] = {"images_per_s": med, "ratio": statistics.median(ratios),
                               "first_epoch_s": first}  # fmt: skip
        print(
            f"| {model_name} | {med['tensorflow']:.1f} | {med['jax']:.1f} | "
            f"{statistics.median(ratios):.2f} | {first['tensorflow']:.1f} | {first['jax']:.1f} |"
        )
    if args.json:
        env = {k: v for k, v in os.environ.items() if k.startswith(("TF_ENABLE", "ONEDNN", "XLA"))}
        result = {"cpu": cpu_model(), "cores": os.cpu_count(), "batch_size": args.batch_size,
                  "env": env, "rows": rows, "summary": summary}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
