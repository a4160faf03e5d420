"""What the GPU options do: XLA (``jit_compile``) and mixed precision, on speed and results.

Trains one CIFAR-100 architecture with ``fit`` the report's way (``compile_multitask``) once
per configuration, from the same seed (same initial weights, same batches):

* ``float32``  -- the kit's default: no XLA, float32 everywhere;
* ``xla``      -- ``jit_compile=True``;
* ``mixed``    -- the ``mixed_float16`` policy (float16 compute, float32 weights and logits;
  ``compile`` adds a ``LossScaleOptimizer``);
* ``mixed+xla`` -- both.

Reported per configuration: the steady epoch time (median of epochs 2..N), the first
epoch's extra time (tracing / XLA compilation), the final losses and accuracies on the
training and validation data, and how far its per-epoch training losses and its final
weights are from the ``float32`` run's. Data: the synthetic CIFAR-100 stand-in, no
augmentation (so only the arithmetic differs between runs). The figures say what the
options do to *this* arithmetic; they are not CIFAR-100 results.

    python benchmarks/bench_options.py                         # shared_conv, 3 epochs
    python benchmarks/bench_options.py --architecture reuse_coarse --images 4096 --epochs 5
    python benchmarks/bench_options.py --configs float32 mixed --json out.json

On a CPU, XLA and float16 are not what they are for; run it on a GPU for the real effect
(the JSON records the GPU's name).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=".*shuffle=True.*")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtlkit import data, training  # noqa: E402
from mtlkit.models import architectures  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import EpochTimer, machine, write_json  # noqa: E402

CONFIGS = {
    "float32": dict(jit_compile=False, mixed=False),
    "xla": dict(jit_compile=True, mixed=False),
    "mixed": dict(jit_compile=False, mixed=True),
    "mixed+xla": dict(jit_compile=True, mixed=True),
}


def run(name: str, config: dict, args, train_ds, val_ds) -> dict:
    keras.mixed_precision.set_global_policy("mixed_float16" if config["mixed"] else "float32")
    try:
        training.set_seed(args.seed)
        model = training.compile_multitask(
            architectures.build_cifar100(args.architecture),
            learning_rate=5e-4,
            loss_weights={"fine": 2.0, "coarse": 1.0},
            jit_compile=config["jit_compile"],
        )
        timer = EpochTimer()
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=args.epochs, verbose=0, callbacks=[timer]
        ).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    steady = statistics.median(timer.epochs[1:]) if len(timer.epochs) > 1 else timer.epochs[0]
    return {
        "config": name,
        "steady_epoch_s": steady,
        "images_per_s": args.images / steady,
        "first_epoch_extra_s": timer.epochs[0] - steady,
        "history": history,
        "weights": [np.asarray(w, np.float64) for w in model.get_weights()],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--architecture", default="shared_conv", choices=architectures.NAMES)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--images", type=int, default=1024, help="training images (default 1024)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="default 3 (>= 2: epoch 1 is warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 2 or args.images < args.batch_size:
        p.error("need --epochs >= 2 and --images >= --batch-size")

    info = machine()
    print(
        f"{info['cpu']}, {info['cores']} cores, GPUs: {info['gpus'] or 'none'}; "
        f"TF {info['tensorflow']}, Keras {info['keras']}; {info['date']}"
    )
    sizes = {"train": 4 * args.images, "test": args.images}
    train_ds = data.batched(
        data.load_cifar100("train", "synthetic", limit=args.images, synthetic_sizes=sizes),
        args.batch_size,
        shuffle=True,
        seed=args.seed,
    )
    val_ds = data.batched(
        data.load_cifar100(
            "validation", "synthetic", limit=args.images // 2, synthetic_sizes=sizes
        ),
        256,
    )
    runs = {}
    for name in args.configs:
        runs[name] = run(name, CONFIGS[name], args, train_ds, val_ds)
        r = runs[name]
        print(
            f"  {name:10s} {r['images_per_s']:8.1f} img/s, "
            f"first epoch +{r['first_epoch_extra_s']:.1f} s, "
            f"final loss {r['history']['loss'][-1]:.5f}",
            flush=True,
        )

    base = runs.get("float32")
    results = []
    keys = (
        "loss",
        "fine_accuracy",
        "coarse_accuracy",
        "val_loss",
        "val_fine_accuracy",
        "val_coarse_accuracy",
    )
    for name, r in runs.items():
        row = {k: v for k, v in r.items() if k not in ("history", "weights")}
        row.update({f"final_{k}": r["history"][k][-1] for k in keys})
        row["loss_per_epoch"] = r["history"]["loss"]
        if base is not None:
            row["speed_ratio_to_float32"] = base["steady_epoch_s"] / r["steady_epoch_s"]
            row["max_abs_loss_diff_to_float32"] = max(
                abs(a - b) for a, b in zip(r["history"]["loss"], base["history"]["loss"])
            )
            row["max_abs_weight_diff_to_float32"] = max(
                float(np.abs(a - b).max()) for a, b in zip(r["weights"], base["weights"])
            )
        results.append(row)

    print(
        f"\n{args.architecture}, {args.images} synthetic images, batch {args.batch_size}, "
        f"{args.epochs} epochs (not a CIFAR-100 result)"
    )
    head = (
        f"{'config':10s} {'img/s':>8s} {'x float32':>9s} {'1st epoch +s':>12s} {'loss':>9s} "
        f"{'val loss':>9s} {'val fine acc':>12s} {'|loss diff|':>11s} {'|weight diff|':>13s}"
    )
    print(head)
    print("-" * len(head))
    for row in results:
        speed = row.get("speed_ratio_to_float32", 1)
        loss_diff = row.get("max_abs_loss_diff_to_float32", 0)
        weight_diff = row.get("max_abs_weight_diff_to_float32", 0)
        print(
            f"{row['config']:10s} {row['images_per_s']:8.1f} {speed:9.2f} "
            f"{row['first_epoch_extra_s']:12.1f} {row['final_loss']:9.5f} "
            f"{row['final_val_loss']:9.5f} {row['final_val_fine_accuracy']:12.4f} "
            f"{loss_diff:11.2e} {weight_diff:13.2e}"
        )
    if args.json:
        write_json(args.json, "options", info, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
