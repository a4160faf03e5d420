"""What measuring task interference costs: training with and without ``GradientProbe``.

The CIFAR-100 ``shared_conv`` model, compiled the report's way, is trained with Keras
``fit`` for one epoch of ``--steps`` batches per call, alternately

* ``off`` -- no callback;
* ``on``  -- ``mtlkit.analysis.diagnostics.GradientProbe`` at its default frequency
  (``every=DEFAULT_EVERY`` steps, plus the epoch end and the probe before training), on a
  probe batch as large as a training batch;

interleaved (off, on, on, off, off, on, ...), ``--repeats`` times. One model serves every
call (its train function is traced once, in a warm-up call); every ``on`` call builds a new
probe, so its one-off set-up (an eager measurement of every variable, and tracing the probe
function) is paid each time and reported apart. The measure is process CPU time per image
(``time.process_time``: the cores are shared with other work, wall time is not reliable).

From the same calls: the CPU time of one probe and of one training step. Their ratio gives
the overhead of any frequency; the ``projection`` is the report's CIFAR-100 epoch (400
steps of 100 images: probes at steps 100, 200, 300 and the end). ``--celeba`` adds the
probe/step ratio of the CelebA model (ResNet18, eight attributes, K = 8 backward passes).

    python benchmarks/bench_diagnostics.py                              # ~6 CPU minutes
    python benchmarks/bench_diagnostics.py --steps 100 --repeats 2 --no-celeba
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=".*shuffle=True.*")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlkit import data, training  # noqa: E402
from mtlkit.analysis import diagnostics  # noqa: E402
from mtlkit.models import architectures  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_training import machine  # noqa: E402


class TimedProbe(diagnostics.GradientProbe):
    """A GradientProbe that keeps the CPU time of its set-up and of each probe."""

    def on_train_begin(self, logs=None):
        start = time.process_time()
        super().on_train_begin(logs)
        self.setup_cpu = time.process_time() - start
        self.probe_cpu: list[float] = []

    def _probe(self, batch):
        start = time.process_time()
        record = super()._probe(batch)
        self.probe_cpu.append(time.process_time() - start)
        return record


def cifar_data(steps: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    n = steps * batch
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = {"fine": rng.integers(0, 100, n), "coarse": rng.integers(0, 20, n)}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    for _ in ds:  # fill the cache before any timing
        pass
    return ds, (x[:batch], {k: v[:batch] for k, v in y.items()})


def timed_fit(model, ds, callbacks) -> float:
    start = time.process_time()
    model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
    return time.process_time() - start


def bench_cifar(args) -> dict:
    ds, (px, py) = cifar_data(args.steps, args.batch_size, args.seed)
    training.set_seed(args.seed)
    model = training.compile_multitask(
        architectures.build_cifar100("shared_conv"),
        learning_rate=5e-4,
        loss_weights={"fine": 2, "coarse": 1},
    )
    model.fit(ds.take(2), epochs=1, verbose=0)  # warm-up: trace the train function
    images = args.steps * args.batch_size
    runs = []
    for repeat in range(args.repeats):
        order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
        row = {"repeat": repeat}
        for mode in order:
            probe = TimedProbe(px, py, every=args.every) if mode == "on" else None
            cpu = timed_fit(model, ds, [probe] if probe else [])
            row[f"{mode}_cpu_per_image"] = cpu / images
            if probe:
                row.update(
                    setup_cpu=probe.setup_cpu, probe_cpu=probe.probe_cpu, probes=len(probe.records)
                )
        row["ratio"] = row["on_cpu_per_image"] / row["off_cpu_per_image"]
        steady = row["on_cpu_per_image"] - row["setup_cpu"] / images
        row["ratio_without_setup"] = steady / row["off_cpu_per_image"]
        print(
            f"repeat {repeat}: off {row['off_cpu_per_image'] * 1e3:.2f} ms/image, on "
            f"{row['on_cpu_per_image'] * 1e3:.2f} ms/image, ratio {row['ratio']:.3f} "
            f"({row['ratio_without_setup']:.3f} without the set-up of "
            f"{row['setup_cpu']:.1f} s); probes {row['probe_cpu']}",
            flush=True,
        )
        runs.append(row)
    step = statistics.median(r["off_cpu_per_image"] for r in runs) * args.batch_size
    # a run's first probe also traces the probe function: the steady cost is the later ones
    probe = statistics.median(p for r in runs for p in r["probe_cpu"][1:] or r["probe_cpu"])
    per_epoch = 400 // args.every + (400 % args.every != 0)  # within-epoch probes + the end
    scale = 100 / args.batch_size  # the report's batches hold 100 images: both costs scale
    return {
        "model": "CIFAR-100 shared_conv (report protocol), K = 2",
        "runs": runs,
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        "median_ratio_without_setup": statistics.median(r["ratio_without_setup"] for r in runs),
        "step_cpu": step,
        "probe_cpu": probe,
        "first_probe_cpu": statistics.median(r["probe_cpu"][0] for r in runs),
        "probe_in_steps": probe / step,
        "projection": {
            "epoch": "400 steps of 100 images (the report's CIFAR-100 epoch)",
            "probes_per_epoch": per_epoch,
            "overhead": per_epoch * probe * scale / (400 * step * scale),
        },
    }


def bench_celeba(args) -> dict:
    """Probe cost against a training step for the eight-attribute ResNet18 (random init)."""
    training.set_seed(args.seed)
    model = architectures.build_celeba(data.EIGHT, weights=None, image_size=args.celeba_size)
    training.compile_multitask(model, learning_rate=1e-3, binary=True)
    rng = np.random.default_rng(args.seed)
    n = args.batch_size
    x = rng.integers(0, 256, (n, args.celeba_size, args.celeba_size, 3), dtype=np.uint8)
    y = {a: rng.integers(0, 2, (n, 1)).astype("float32") for a in data.EIGHT}
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(args.celeba_steps).cache()
    model.fit(ds.take(1), epochs=1, verbose=0)
    probe = TimedProbe(x, y, every=None)
    probe.set_model(model)
    probe.on_train_begin()
    probe.on_epoch_begin(0)
    probe._probe(0)  # trace the probe function
    steps, probes = [], []
    for _ in range(args.repeats):  # interleaved: an epoch of steps, then one probe
        steps.append(timed_fit(model, ds, []) / args.celeba_steps)
        probe._probe(0)
        probes.append(probe.probe_cpu[-1])
    ratio = statistics.median(probes) / statistics.median(steps)
    print(f"CelebA ResNet18, 8 attributes, {args.celeba_size} px: probe = {ratio:.2f} steps")
    return {
        "model": f"CelebA ResNet18 at {args.celeba_size} px, eight attributes, K = 8",
        "step_cpu": steps,
        "probe_cpu": probes,
        "probe_in_steps": ratio,
        "overhead_every_100": ratio / 100,
    }


def figure(payload: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cifar = payload["results"]["cifar"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    runs = cifar["runs"]
    for i, mode in enumerate(("off", "on")):
        values = [r[f"{mode}_cpu_per_image"] * 1e3 for r in runs]
        left.bar(np.arange(len(runs)) + 0.4 * i, values, 0.4, label=f"probe {mode}")
    left.set(
        xlabel="repeat (interleaved)",
        ylabel="CPU ms per image",
        title=f"CIFAR-100 shared_conv, {payload['settings']['steps']}-step fit calls",
    )
    left.set_xticks(np.arange(len(runs)) + 0.2, [str(r["repeat"]) for r in runs])
    left.legend(fontsize=8)
    labels = ["CIFAR run\n(measured)", "CIFAR epoch\n(projected)"]
    values = [100 * (cifar["median_ratio"] - 1), 100 * cifar["projection"]["overhead"]]
    if "celeba" in payload["results"]:
        labels.append("CelebA, every 100\n(projected)")
        values.append(100 * payload["results"]["celeba"]["overhead_every_100"])
    right.bar(labels, values, color=["C1", "C2", "C3"][: len(values)])
    right.axhline(5, color="k", ls="--", lw=1, label="goal: under 5 %")
    for i, v in enumerate(values):
        right.text(i, v, f"{v:.1f} %", ha="center", va="bottom", fontsize=8)
    right.set(
        ylabel="extra CPU time (%)", title=f"GradientProbe(every={payload['settings']['every']})"
    )
    right.legend(fontsize=8)
    m = payload["machine"]
    fig.suptitle(
        f"Cost of measuring interference -- synthetic images, {m['cpu']}, {m['cores']} "
        f"cores, TF {m['tensorflow']}, {m['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per fit call")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every", type=int, default=diagnostics.DEFAULT_EVERY)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--celeba", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--celeba-size", type=int, default=64)
    parser.add_argument("--celeba-steps", type=int, default=4)
    parser.add_argument("--json", default=str(HERE / "results" / "diagnostics.json"))
    parser.add_argument("--figure", default=str(HERE / "figures" / "diagnostics_overhead.png"))
    args = parser.parse_args()
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; TF {info['tensorflow']}; {info['date']}")
    results = {"cifar": bench_cifar(args)}
    if args.celeba:
        results["celeba"] = bench_celeba(args)
    payload = {
        "benchmark": "diagnostics",
        "machine": info,
        "command": " ".join(sys.argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "figure")},
        "results": results,
    }
    Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    figure(payload, Path(args.figure))
    c = results["cifar"]
    print(
        f"CIFAR: ratio {c['median_ratio']:.3f} "
        f"(without set-up {c['median_ratio_without_setup']:.3f}); "
        f"probe = {c['probe_in_steps']:.2f} steps; projected epoch overhead "
        f"{100 * c['projection']['overhead']:.2f} %\nwrote {args.json} and {args.figure}"
    )


if __name__ == "__main__":
    main()
