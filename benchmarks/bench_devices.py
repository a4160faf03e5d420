"""Data-parallel training of the kit's loop on one and on two devices, side by side.

Each measurement runs in its own process, because the devices are made before TensorFlow
or JAX starts: on TensorFlow two logical CPU devices and ``mtlkit.studies.devices.mirrored``
(a ``tf.distribute.MirroredStrategy``), on JAX ``--xla_force_host_platform_device_count=2``
and ``keras.distribution.DataParallel``. It trains the CIFAR-100 ``independent`` model (random
weights, random 32 px images) with ``mtlkit.training.train`` for two epochs of ``--steps``
global batches; the second epoch is timed. On a machine without GPUs the two "devices"
share the same CPU cores, so this checks the path and its overhead, not a speed-up: run it
on a machine with two GPUs (or a TPU, with JAX) to measure scaling there.

    python benchmarks/bench_devices.py --json benchmarks/results/devices.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench_backends import add_common_arguments, cpu_model, run_worker

CASES = [("tensorflow", 1), ("tensorflow", 2), ("jax", 1), ("jax", 2)]


def worker(devices: int, steps: int, batch_size: int) -> dict:
    """Train for two epochs on ``devices`` devices in this process; the timed epoch's img/s."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() == "tensorflow" and devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
    import numpy as np

    from mtlkit import training
    from mtlkit.models import architectures, tasks
    from mtlkit.studies import devices as on_devices

    training.set_seed(0)
    rng = np.random.default_rng(0)
    n = steps * batch_size
    images = rng.random((n, 32, 32, 3), dtype=np.float32)
    labels = {"fine": rng.integers(0, 100, n), "coarse": rng.integers(0, 20, n)}
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).cache()
    times: list[float] = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    with on_devices.scope(devices):
        model = architectures.build_cifar100("independent")
        optimizer = keras.optimizers.Adam(1e-3)
        training.train(model, dataset, epochs=2, optimizer=optimizer, verbose=0,
                       losses=tasks.classification_losses(["fine", "coarse"]),
                       callbacks=[EpochTimes()])  # fmt: skip
    return {"backend": keras.backend.backend(), "devices": devices,
            "images_per_s": n / times[1], "first_epoch_s": times[0]}  # fmt: skip


def measure(backend: str, devices: int, steps: int, batch_size: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return run_worker(__file__, ["--worker", str(devices)], steps, batch_size, env,
                      f"{backend} on {devices} device(s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    add_common_arguments(parser)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size)))
        return
    rows = []
    for repeat in range(args.repeats):
        for backend, devices in CASES if repeat % 2 == 0 else CASES[::-1]:
            row = {**measure(backend, devices, args.steps, args.batch_size), "repeat": repeat}
            rows.append(row)
            print(f"repeat {repeat} {backend:10s} {devices} device(s) "
                  f"{row['images_per_s']:8.1f} img/s", flush=True)  # fmt: skip
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores (the devices share them); global batch "
          f"{args.batch_size}; median over {args.repeats} repeats")  # fmt: skip
    print("| backend | 1 device img/s | 2 devices img/s | ratio 2/1 |")
    print("|---|---|---|---|")
    summary = {}
    for backend in ("tensorflow", "jax"):
        med = {d: statistics.median(r["images_per_s"] for r in rows
                                    if r["backend"] == backend and r["devices"] == d)
               for d in (1, 2)}  # fmt: skip
        summary[backend] = {"images_per_s": med, "ratio": med[2] / med[1]}
        print(f"| {backend} | {med[1]:.1f} | {med[2]:.1f} | {med[2] / med[1]:.2f} |")
    if args.json:
        result = {"cpu": cpu_model(), "cores": os.cpu_count(), "batch_size": args.batch_size,
                  "steps": args.steps, "rows": rows, "summary": summary,
                  "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
