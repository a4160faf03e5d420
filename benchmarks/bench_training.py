"""Training throughput of the CIFAR-100 architectures: Keras ``fit`` vs ``mtlkit.training.train``.

For every architecture, three ways of training the *same* model on the *same* data are
measured side by side in one process:

* ``fit``       -- ``mtlkit.training.compile_multitask`` + ``model.fit`` (the kit's Keras way);
* ``train``     -- ``mtlkit.training.train`` without a scheduler;
* ``train+DST`` -- ``mtlkit.training.train`` with a ``mtlkit.methods.dst.DSTScheduler`` (all four
  metrics), which adds an epoch-0 *measuring pass* (timed separately).

Every call trains ``1 + --timed-epochs`` epochs of ``--steps`` batches: the first epoch
(tracing/compiling the step function, filling the dataset cache) is the warm-up and is
excluded; its excess over a steady epoch is reported as "compile". Steady-state throughput
is images / wall time of the timed epochs, measured with a Keras callback
(``on_epoch_begin`` .. ``on_epoch_end``) that both loops call.

The CPU this runs on may be shared with other work, so the three ways are *interleaved*
(fit, train, train+DST, then the next repeat in a rotated order), repeated ``--repeats``
times, and every figure is a median over repeats. The ratios to ``fit`` are computed per
repeat from runs taken seconds apart, then their median is reported.

Data: synthetic CIFAR-100 (``mtlkit.data.load_cifar100(..., "synthetic")``) through
``mtlkit.data.batched`` (cached, shuffled, prefetched), no augmentation: the benchmark is
about the training step, not the input pipeline.

    python benchmarks/bench_training.py                      # 2 architectures, a few minutes
    python benchmarks/bench_training.py --all --json out.json
    python benchmarks/bench_training.py --architectures shared_conv --steps 30 --repeats 5

On a GPU the same command measures the GPU. Both loops run without XLA by default (the
kit's default, ``jit_compile=False``); ``--jit-compile true`` (or ``auto``) compiles both with
XLA, and ``--mixed-precision`` sets the ``mixed_float16`` policy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # fit's note on a tf.data input

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlkit import data, training  # noqa: E402
from mtlkit.methods import dst  # noqa: E402
from mtlkit.models import architectures, graph, tasks  # noqa: E402
from mtlkit.training import loop as training_loop  # noqa: E402

MODES = ("fit", "train", "train+DST")
DEFAULT_ARCHITECTURES = ("shared_conv", "reuse_coarse")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, from on_epoch_begin to on_epoch_end, plus train begin."""

    def __init__(self):
        super().__init__()
        self.train_begin = None
        self.first_epoch_begin = None
        self.epochs: list[float] = []
        self.cpu: list[float] = []  # process CPU seconds (all threads) per epoch
        self._start = self._cpu_start = None

    def on_train_begin(self, logs=None):
        self.train_begin = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()
        if self.first_epoch_begin is None:
            self.first_epoch_begin = self._start

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._start)
        self.cpu.append(time.process_time() - self._cpu_start)


class MeasuringPassTimer:
    """Time DST's measuring pass, split into its first call (trace) and the steady steps.

    Wraps ``mtlkit.training.loop._measuring_pass`` (a private helper) for the duration of one
    ``train`` call; if it does not exist, only the total (train begin -> epoch 0 begin) is
    known.
    """

    def __init__(self):
        self.calls: list[float] = []
        self.total = None
        self._original = getattr(training_loop, "_measuring_pass", None)

    def __enter__(self):
        if self._original is None:
            return self
        original, calls = self._original, self.calls

        def timed_pass(loop, dataset):
            step = loop.measure_step

            def timed_step(*args):
                t0 = time.perf_counter()
                out = step(*args)
                calls.append(time.perf_counter() - t0)
                return out

            loop.measure_step = timed_step
            t0 = time.perf_counter()
            try:
                return original(loop, dataset)
            finally:
                loop.measure_step = step
                self.total = time.perf_counter() - t0

        training_loop._measuring_pass = timed_pass
        return self

    def __exit__(self, *exc):
        if self._original is not None:
            training_loop._measuring_pass = self._original


def build(name: str) -> keras.Model:
    """A CIFAR-100 architecture, or ``"tiny"``: one Dense layer per task on the flattened
    image, so that the step's compute is negligible and the loop's own per-step overhead
    (Python, callbacks, argument handling, host syncs) is what gets measured."""
    if name != "tiny":
        return architectures.build_cifar100(name)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Flatten()(inputs)
    outputs = {
        "fine": keras.layers.Dense(100, name="fine")(x),
        "coarse": keras.layers.Dense(20, name="coarse")(x),
    }
    return keras.Model(inputs, outputs, name="tiny")


def make_data(steps: int, batch_size: int, seed: int) -> tuple[tf.data.Dataset, int]:
    n = steps * batch_size
    total = math.ceil(n / 0.8) + 10  # "train" is 80 % of the synthetic training set
    ds = data.load_cifar100(
        "train", "synthetic", limit=n, synthetic_sizes={"train": total, "test": 10}
    )
    return data.batched(ds, batch_size, shuffle=True, seed=seed), n


def run_fit(model, ds, epochs):
    timer = EpochTimer()
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[timer])
    return timer, None


JIT_COMPILE: bool | str = False  # set from --jit-compile


def run_train(model, ds, epochs, optimizer, scheduler=None):
    timer = EpochTimer()
    losses = tasks.classification_losses(model.output_names)
    with MeasuringPassTimer() as mp:
        training.train(
            model,
            ds,
            epochs=epochs,
            losses=losses,
            optimizer=optimizer,
            loss_weights={"fine": 2.0, "coarse": 1.0},
            scheduler=scheduler,
            callbacks=[timer],
            verbose=0,
            jit_compile=JIT_COMPILE,
        )
    if mp.total is None and timer.train_begin is not None and scheduler is not None:
        mp.total = timer.first_epoch_begin - timer.train_begin
    return timer, mp if scheduler is not None else None


def bench_architecture(name: str, args, ds, n_images: int) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = build(name)
    training.compile_multitask(
        model, learning_rate=5e-4, loss_weights={"fine": 2, "coarse": 1}, jit_compile=JIT_COMPILE
    )
    optimizers = {m: keras.optimizers.Adam(5e-4) for m in MODES[1:]}
    depths = graph.task_depths(model)
    initial = model.get_weights()  # every call starts from the same weights
    epochs = 1 + args.timed_epochs
    per_mode = {
        m: {"steady_ips": [], "warmup_s": [], "steady_epoch_s": [], "cpu_ms_per_image": []}
        for m in MODES
    }
    measuring = {"total_s": [], "first_call_s": [], "steady_step_s": []}
    ratios = {m: [] for m in MODES[1:]}
    cpu_ratios = {m: [] for m in MODES[1:]}
    for r in range(args.repeats):
        order = MODES[r % 3 :] + MODES[: r % 3]  # rotate so no mode always runs first
        this = {}
        for mode in order:
            model.set_weights(initial)
            if mode == "fit":
                timer, _ = run_fit(model, ds, epochs)
            else:
                scheduler = None
                if mode == "train+DST":
                    scheduler = dst.DSTScheduler(
                        ["fine", "coarse"],
                        depths=depths,
                        sample_counts={"fine": n_images, "coarse": n_images},
                        seed=args.seed + r,
                    )
                timer, mp = run_train(model, ds, epochs, optimizers[mode], scheduler)
                if mp is not None:
                    measuring["total_s"].append(mp.total)
                    if mp.calls:
                        measuring["first_call_s"].append(mp.calls[0])
                        if len(mp.calls) > 1:
                            measuring["steady_step_s"].append(statistics.median(mp.calls[1:]))
            steady = timer.epochs[1:]
            epoch_s = statistics.median(steady)
            ips = n_images * len(steady) / sum(steady)
            per_mode[mode]["steady_ips"].append(ips)
            per_mode[mode]["steady_epoch_s"].append(epoch_s)
            per_mode[mode]["warmup_s"].append(timer.epochs[0])
            cpu_ms = 1000 * sum(timer.cpu[1:]) / (n_images * len(steady))
            per_mode[mode]["cpu_ms_per_image"].append(cpu_ms)
            this[mode] = ips
            this[mode + " cpu"] = cpu_ms
            print(
                f"  {name:20s} repeat {r + 1}/{args.repeats} {mode:10s} {ips:8.1f} img/s "
                f"{cpu_ms:6.1f} CPU-ms/img (warm-up epoch {timer.epochs[0]:.1f} s)",
                flush=True,
            )
        for mode in MODES[1:]:
            ratios[mode].append(this[mode] / this["fit"])
            # throughput ratio from CPU time: fit's CPU per image over this mode's
            cpu_ratios[mode].append(this["fit cpu"] / this[mode + " cpu"])
    result = {"architecture": name, "jit_compile_fit": bool(model.jit_compile), "modes": {}}
    for mode in MODES:
        m = per_mode[mode]
        steady_epoch = statistics.median(m["steady_epoch_s"])
        result["modes"][mode] = {
            "images_per_s_median": statistics.median(m["steady_ips"]),
            "images_per_s_all": m["steady_ips"],
            "step_ms_median": 1000 * steady_epoch / args.steps,
            "cpu_ms_per_image_median": statistics.median(m["cpu_ms_per_image"]),
            "cpu_ms_per_image_all": m["cpu_ms_per_image"],
            # first call's warm-up epoch minus a steady epoch: tracing/compiling (+ cache fill)
            "compile_s_first_call": m["warmup_s"][0] - steady_epoch,
            "warmup_epoch_s_all": m["warmup_s"],
        }
    for mode in MODES[1:]:
        result["modes"][mode]["ratio_to_fit_median"] = statistics.median(ratios[mode])
        result["modes"][mode]["ratio_to_fit_all"] = ratios[mode]
        result["modes"][mode]["cpu_ratio_to_fit_median"] = statistics.median(cpu_ratios[mode])
        result["modes"][mode]["cpu_ratio_to_fit_all"] = cpu_ratios[mode]
    fit_step = result["modes"]["fit"]["step_ms_median"] / 1000
    result["measuring_pass"] = {
        "total_s_median": statistics.median(measuring["total_s"]) if measuring["total_s"] else None,
        "first_call_s_median": (
            statistics.median(measuring["first_call_s"]) if measuring["first_call_s"] else None
        ),
        "steady_step_ms_median": (
            1000 * statistics.median(measuring["steady_step_s"])
            if measuring["steady_step_s"]
            else None
        ),
        "steps": args.steps,
    }
    if measuring["steady_step_s"]:
        result["measuring_pass"]["steady_step_over_fit_step"] = (
            statistics.median(measuring["steady_step_s"]) / fit_step
        )
    return result


VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
)
"""The CPU flags that decide TensorFlow's kernels (oneDNN is on by default only with the last
four), in the order /proc/cpuinfo would list them."""


def vector_extensions() -> list[str]:
    """Which of :data:`VECTOR_FLAGS` this CPU has (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in VECTOR_FLAGS if flag in flags]


def onednn_state() -> str:
    """Whether this process's TensorFlow runs its oneDNN kernels, and with which settings."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        on = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        on = None
    settings = {
        k: os.environ[k] for k in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    }
    return f"{'on' if on else 'off' if on is False else 'unknown'} {settings}"


def machine() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    gpus = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": model,
        "vector_extensions": vector_extensions(),
        "onednn": onednn_state(),
        "cores": os.cpu_count(),
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def write_json(
    path: str, benchmark: str, info: dict, args: argparse.Namespace, results, **settings
) -> None:
    """Write a benchmark's results with the machine, the command line and the settings."""
    payload = {
        "benchmark": benchmark,
        "machine": info,
        "command": " ".join(sys.argv),
        "settings": {**{k: v for k, v in vars(args).items() if k != "json"}, **settings},
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
    print(f"\nwrote {path}")


def print_table(results: list[dict]) -> None:
    print(
        "\nSteady-state training throughput (median over repeats; ratios per repeat, then median)"
    )
    head = (
        f"{'architecture':20s} {'fit img/s':>9s} {'train img/s':>11s} {'DST img/s':>9s} "
        f"{'train/fit':>9s} {'DST/fit':>8s} {'compile fit/train/DST (s)':>26s} "
        f"{'measuring pass (s)':>18s}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        m = r["modes"]
        fit, plain, gated = m["fit"], m["train"], m["train+DST"]
        comp = "/".join(f"{m[k]['compile_s_first_call']:.1f}" for k in MODES)
        mp = r["measuring_pass"]["total_s_median"]
        print(
            f"{r['architecture']:20s} {fit['images_per_s_median']:9.1f} "
            f"{plain['images_per_s_median']:11.1f} {gated['images_per_s_median']:9.1f} "
            f"{plain['ratio_to_fit_median']:9.3f} {gated['ratio_to_fit_median']:8.3f} "
            f"{comp:>26s} {mp if mp is not None else float('nan'):18.2f}"
        )
    print("\nCPU time per image (process CPU seconds, all threads: less sensitive to other load)")
    head = (
        f"{'architecture':20s} {'fit ms':>7s} {'train ms':>8s} {'DST ms':>7s} "
        f"{'train/fit':>9s} {'DST/fit':>8s}   (ratios as throughput: fit CPU / mode CPU)"
    )
    print(head)
    for r in results:
        fit, plain, gated = r["modes"]["fit"], r["modes"]["train"], r["modes"]["train+DST"]
        print(
            f"{r['architecture']:20s} {fit['cpu_ms_per_image_median']:7.2f} "
            f"{plain['cpu_ms_per_image_median']:8.2f} {gated['cpu_ms_per_image_median']:7.2f} "
            f"{plain['cpu_ratio_to_fit_median']:9.3f} {gated['cpu_ratio_to_fit_median']:8.3f}"
        )
    print(
        "\nDST measuring pass (epoch 0, once per run): first call includes its trace; "
        "steady step vs a fit step"
    )
    for r in results:
        mp = r["measuring_pass"]
        print(
            f"  {r['architecture']:20s} total {mp['total_s_median']:.2f} s, first call "
            f"{(mp['first_call_s_median'] or float('nan')):.2f} s, steady step "
            f"{(mp['steady_step_ms_median'] or float('nan')):.1f} ms "
            f"({mp.get('steady_step_over_fit_step', float('nan')):.2f} x a fit training step)"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--architectures",
        nargs="+",
        default=list(DEFAULT_ARCHITECTURES),
        choices=(*architectures.NAMES, "tiny"),
        metavar="NAME",
        help=f"architectures to measure (default: {' '.join(DEFAULT_ARCHITECTURES)}; "
        f"'tiny': see --overhead; choices: {', '.join(architectures.NAMES)})",
    )
    p.add_argument("--all", action="store_true", help="all six architectures")
    p.add_argument(
        "--overhead",
        action="store_true",
        help="also measure 'tiny' (one Dense per task): the loops' per-step overhead",
    )
    p.add_argument("--steps", type=int, default=8, help="batches per epoch (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument(
        "--timed-epochs",
        type=int,
        default=2,
        help="steady epochs timed per call, after one warm-up epoch (default 2)",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="set the mixed_float16 policy (meant for a GPU)",
    )
    p.add_argument(
        "--jit-compile",
        choices=("false", "true", "auto"),
        default="false",
        help="XLA for both loops (default false, the kit's default)",
    )
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    args = p.parse_args(argv)
    global JIT_COMPILE
    JIT_COMPILE = {"false": False, "true": True, "auto": "auto"}[args.jit_compile]
    if args.steps < 2 or args.timed_epochs < 1 or args.repeats < 1 or args.batch_size < 1:
        p.error("need --steps >= 2, --timed-epochs >= 1, --repeats >= 1, --batch-size >= 1")
    names = list(architectures.NAMES) if args.all else list(args.architectures)
    if args.overhead:
        names.append("tiny")
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    info = machine()
    print(
        f"{info['cpu']}, {info['cores']} cores, GPUs: {info['gpus'] or 'none'}; "
        f"TF {info['tensorflow']}, Keras {info['keras']}; {info['date']}"
    )
    print(
        f"{len(names)} architectures, batch {args.batch_size}, {args.steps} steps/epoch, "
        f"1 warm-up + {args.timed_epochs} timed epochs per call, {args.repeats} repeats",
        flush=True,
    )
    ds, n_images = make_data(args.steps, args.batch_size, args.seed)
    results = []
    for name in names:
        results.append(bench_architecture(name, args, ds, n_images))
        keras.backend.clear_session()
    print_table(results)
    if args.json:
        write_json(args.json, "training", info, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
