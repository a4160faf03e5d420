"""TensorFlow's CPU kernels side by side: oneDNN against Eigen, AVX-512 against AVX2.

TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX512_VNNI, AVX512_BF16
or AMX. On an AVX2-only CPU (most laptops, many CI runners, older AMD EPYC servers) it runs
Eigen's kernels instead, unless ``TF_ENABLE_ONEDNN_OPTS=1`` asks for oneDNN -- which
``import mtlkit`` now does. This script trains the kit's quick-profile models for a few steps
under each configuration, each in its own process (the variables must be set before
TensorFlow starts), and reports seconds per step, GFLOP/s (from the kit's FLOP counts,
:func:`mtlkit.work.forward_gflop`) and the speed relative to Eigen:

* ``eigen``: ``TF_ENABLE_ONEDNN_OPTS=0`` -- what an AVX2-only CPU ran before this change;
* ``onednn-avx2``: oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) -- what such a CPU
  runs now (on a CPU with AVX-512 this stands in for one without);
* ``onednn``: oneDNN with everything this CPU has.

The configurations run interleaved, ``--repeats`` times; medians are reported.

    python benchmarks/bench_cpu.py --json benchmarks/results/cpu.json
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

CONFIGS = {
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn-avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
}
MODELS = {  # name: (batch size, what to build)
    "cifar100/independent": 100,
    "cifar100/shared_conv": 100,
    "celeba/resnet18@32": 32,
    "celeba/resnet18@48": 32,
}


def measure(steps: int) -> dict:
    """In this process: seconds per training step and GFLOP/s of each model."""
    import mtlkit  # noqa: F401  (first: quiet start-up; it leaves an explicit variable alone)

    # isort: split
    import keras
    import numpy as np

    from mtlkit import data, work
    from mtlkit.models import architectures

    rng = np.random.default_rng(0)
    results = {}
    for name, batch in MODELS.items():
        if name.startswith("cifar100"):
            model = architectures.build_cifar100(name.split("/")[1])
            x = rng.random((batch, 32, 32, 3), dtype="float32")
            y = {"fine": rng.integers(0, 100, batch), "coarse": rng.integers(0, 20, batch)}
            loss = "sparse_categorical_crossentropy"
            gflop = work.forward_gflop(model)
        else:
            size = int(name.split("@")[1])
            attributes = data.EIGHT
            model = architectures.build_celeba(attributes, weights=None, image_size=size)
            x = rng.integers(0, 256, (batch, size, size, 3)).astype("uint8")
            y = {a: rng.integers(0, 2, batch).astype("float32") for a in attributes}
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            gflop = architectures.celeba_forward_gflop(size, len(attributes))
        model.compile("adam", loss={k: loss for k in y})
        model.train_on_batch(x, y)  # trace and warm up
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        seconds = (time.perf_counter() - start) / steps
        flops = work.TRAINING_PASSES * gflop * batch
        results[name] = {"s_per_step": seconds, "gflop_per_s": flops / seconds}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.steps)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_training import machine  # (same folder)

    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    for repeat in range(args.repeats):
        order = list(CONFIGS)[repeat % len(CONFIGS) :] + list(CONFIGS)[: repeat % len(CONFIGS)]
        for config in order:
            env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA",)}
            env.update(CONFIGS[config])
            command = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[config].append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = {
        config: {
            model: {
                key: statistics.median(r[model][key] for r in results)
                for key in ("s_per_step", "gflop_per_s")
            }
            for model in MODELS
        }
        for config, results in runs.items()
    }
    for config in table:
        for model in MODELS:
            eigen = table["eigen"][model]["s_per_step"]
            table[config][model]["speed_vs_eigen"] = eigen / table[config][model]["s_per_step"]
    info = machine()
    print(f"CPU: {info['cpu']} ({', '.join(info['vector_extensions'])}), {info['cores']} cores")
    print(f"{'model':22s}" + "".join(f"{c:>26s}" for c in CONFIGS))
    for model in MODELS:
        cells = [table[c][model] for c in CONFIGS]
        print(
            f"{model:22s}"
            + "".join(
                f"{c['s_per_step']:8.3f} s {c['gflop_per_s']:5.0f} GF/s {c['speed_vs_eigen']:4.1f}x"
                for c in cells
            )
        )
    if args.json:
        payload = {"benchmark": "cpu", "machine": info, "steps": args.steps,
                   "repeats": args.repeats, "configs": CONFIGS, "results": table}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
