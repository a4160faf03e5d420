"""Training throughput of every method of ``mtlkit.methods.weighting``, against equal weighting.

One model, one dataset, one process: the CelebA model of notebook 07 (a randomly initialised
ResNet18 shared by eight attribute heads, ``architectures.build_celeba``) at a small image
size, trained by ``mtlkit.training.train(..., weighting=method)`` for every method:

* ``none`` -- ``weighting=None``, the loop's default path (``loss_weights``, no method object);
* ``ew``, ``uw``, ``dwa``, ``rlw`` -- the loss weightings;
* ``pcgrad``, ``mgda`` (MGDA-UB), ``gradnorm`` -- the gradient methods.

At 40 px the ResNet18 backbone holds 11.2 M of the model's 11.2 M trainable parameters and
all but 8 x 512 multiply-accumulates of its forward pass: the shared part dominates, which
is the case where the gradient methods' extra backward passes cost the most.

Every call trains ``1 + --timed-epochs`` epochs of ``--steps`` batches from the same initial
weights (restored before each call) with a fresh Adam; the first epoch (tracing) is excluded.
Methods are interleaved (one call each, then the next repeat in a rotated order) and
repeated ``--repeats`` times. Throughput relative to ``ew`` is computed per repeat from
**process CPU time per image** (``time.process_time``, all threads: the work done, robust to
other jobs on a shared machine), and from wall time; medians over repeats are reported.

The theoretical ratio counts passes, with a backward pass costing twice a forward pass
(``B = 2F``), heads free, and equal weighting costing ``F + B = 3F`` per step:

* loss weightings: the same passes, ratio 1;
* PCGrad: one backward pass per task through the trunk to the shared weights; the last
  backward pass only reaches the heads (the shared weights take the surgery's sum):
  ``F + K B``, so ``3 / (2K + 1)``; plus the surgery (not counted: the K x K Gram matrix,
  one pass over the (K, D) gradients, and the final combination, another);
* MGDA-UB: the per-task gradients stop at the representation (through the heads only), then
  one backward pass: ratio ~1 (plus the Frank-Wolfe solve on a K x K matrix);
* GradNorm: per task, a backward pass to the last shared kernel, whose cost is that conv
  layer's weight gradient (``F_last``, counted from the layer's shape): ``3F / (3F + K F_last)``.

    python benchmarks/bench_weighting.py                          # about 5 minutes here
    python benchmarks/bench_weighting.py --json benchmarks/results/weighting.json
    python benchmarks/bench_weighting.py --plot benchmarks/results/weighting.json   # the figure
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mtlkit  # noqa: F401  (first, before TensorFlow: quiet TensorFlow start-up)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlkit import data, training  # noqa: E402
from mtlkit.data import celeba  # noqa: E402
from mtlkit.methods import cores, weighting  # noqa: E402
from mtlkit.models import architectures, sharing, tasks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import EpochTimer, machine, write_json  # noqa: E402
from estimate_durations import forward_gflop  # noqa: E402

METHODS = ("none", "ew", "uw", "dwa", "rlw", "pcgrad", "mgda", "gradnorm")
ATTRIBUTES = data.EIGHT


def conv_gflops(size: int) -> dict[str, float]:
    """Forward GFLOP per image of each Conv2D of the kit's ResNet18 at ``size`` px (built with
    a fixed input so shapes are known), and ``"total"``; the heads are negligible."""
    backbone = architectures.resnet18_backbone(None, image_shape=(size, size, 3))
    flops = {}
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            macs = h * w * c_out * np.prod(layer.kernel_size) * layer.input.shape[-1]
            flops[layer.name] = 2 * macs / 1e9
    flops["total"] = forward_gflop(backbone)
    return flops


def theoretical(method: str, k: int, last_share: float) -> float:
    """Throughput relative to equal weighting from counted passes (module doc)."""
    if method == "pcgrad":
        return 3 / (2 * k + 1)
    if method == "gradnorm":
        return 3 / (3 + k * last_share)
    return 1.0


def make_data(steps: int, batch_size: int, size: int):
    """Synthetic CelebA stand-in crops at the loader's size for ``size`` px, cached."""
    n = steps * batch_size
    ds = data.load_celeba("train", ATTRIBUTES, "synthetic", image_size=celeba.loader_size(size),
                          limit=n)  # fmt: skip
    return data.batched(ds, batch_size, shuffle=True, seed=0), n


def one_call(model, ds, method: str, epochs: int) -> EpochTimer:
    timer = EpochTimer()
    training.train(model, ds, epochs=epochs, verbose=0, seed=0, callbacks=[timer],
                   losses=tasks.classification_losses(ATTRIBUTES, binary=True),
                   optimizer=keras.optimizers.Adam(1e-3),
                   weighting=None if method == "none" else method)  # fmt: skip
    return timer


def surgery_cost(k: int, d: int, repeats: int = 5) -> dict:
    """CPU ms of one call, median of ``repeats``, of PCGrad's surgery alone
    (``cores.pcgrad`` on a random (K, D) matrix, compiled) and of the Gram matrix
    ``G G^T``, one pass over G: the least a surgery done on the Gram matrix would read."""
    G = tf.random.normal([k, d], seed=0)
    generator = tf.random.Generator.from_seed(0)
    calls = {"pcgrad_surgery": tf.function(lambda: cores.pcgrad(G, generator)),
             "gram_matrix": tf.function(lambda: tf.matmul(G, G, transpose_b=True))}  # fmt: skip
    result = {}
    for name, call in calls.items():
        call()  # trace
        times = []
        for _ in range(repeats):
            start = time.process_time()
            call().numpy()
            times.append(1000 * (time.process_time() - start))
        result[f"{name}_cpu_ms"] = statistics.median(times)
    return result


def bench(args) -> dict:
    ds, n = make_data(args.steps, args.batch_size, args.image_size)
    training.set_seed(0)
    model = architectures.build_celeba(ATTRIBUTES, weights=None, image_size=args.image_size)
    initial = model.get_weights()
    x, y = next(iter(ds))
    losses = tasks.classification_losses(ATTRIBUTES, binary=True)
    variables = sharing.shared_variables(model, x, y, losses)
    last = cores.last_shared_kernel(variables)[0].path.split("/")[0]
    flops = conv_gflops(args.image_size)
    last_share = flops[last] / flops["total"]
    k = len(ATTRIBUTES)
    per = {m: {"cpu_ms_per_image": [], "images_per_s": [], "warmup_s": []} for m in args.methods}
    ratios = {m: {"cpu": [], "wall": []} for m in args.methods}
    for r in range(args.repeats):
        shift = r % len(args.methods)
        order = args.methods[shift:] + args.methods[:shift]
        this = {}
        for method in order:
            model.set_weights(initial)
            timer = one_call(model, ds, method, 1 + args.timed_epochs)
            cpu_ms = 1000 * sum(timer.cpu[1:]) / (n * args.timed_epochs)
            ips = n * args.timed_epochs / sum(timer.epochs[1:])
            per[method]["cpu_ms_per_image"].append(cpu_ms)
            per[method]["images_per_s"].append(ips)
            per[method]["warmup_s"].append(timer.epochs[0])
            this[method] = (cpu_ms, ips)
            warm = timer.epochs[0]
            print(f"  repeat {r + 1}/{args.repeats} {method:9s} {cpu_ms:8.2f} CPU-ms/img "
                  f"{ips:7.1f} img/s (warm-up epoch {warm:.1f} s)", flush=True)  # fmt: skip
        for method in args.methods:
            ratios[method]["cpu"].append(this["ew"][0] / this[method][0])
            ratios[method]["wall"].append(this[method][1] / this["ew"][1])
    rows = []
    for method in args.methods:
        m = per[method]
        rows.append({
            "method": method,
            "kind": "default loop" if method == "none" else weighting.METHODS[method].kind,
            "cpu_ms_per_image_median": statistics.median(m["cpu_ms_per_image"]),
            "cpu_ms_per_image_all": m["cpu_ms_per_image"],
            "images_per_s_median": statistics.median(m["images_per_s"]),
            "images_per_s_all": m["images_per_s"],
            "warmup_epoch_s_first": m["warmup_s"][0],
            "cpu_ratio_to_ew_median": statistics.median(ratios[method]["cpu"]),
            "cpu_ratio_to_ew_all": ratios[method]["cpu"],
            "wall_ratio_to_ew_median": statistics.median(ratios[method]["wall"]),
            "wall_ratio_to_ew_all": ratios[method]["wall"],
            "theoretical_ratio": theoretical(method, k, last_share),
        })  # fmt: skip
    size = lambda vs: int(sum(np.prod(v.shape) for v in vs))  # noqa: E731
    model_facts = {"tasks": k, "image_size": args.image_size,
                   "trainable_parameters": size(model.trainable_variables),
                   "shared_parameters": size(variables),
                   "forward_gflop_per_image": flops["total"], "last_shared_conv": last,
                   "last_shared_conv_share_of_forward": last_share,
                   **surgery_cost(k, size(variables))}  # fmt: skip
    return {"model": model_facts, "rows": rows}


def print_table(result: dict) -> None:
    facts = result["model"]
    print(f"\nCelebA ResNet18, {facts['tasks']} tasks, {facts['image_size']} px: "
          f"{facts['shared_parameters']:,} shared of {facts['trainable_parameters']:,} "
          f"parameters; last shared conv {facts['last_shared_conv']} = "
          f"{facts['last_shared_conv_share_of_forward']:.3f} of the forward FLOPs; PCGrad's "
          f"surgery alone {facts['pcgrad_surgery_cpu_ms']:.0f} CPU-ms per step (the Gram "
          f"matrix G G^T: {facts['gram_matrix_cpu_ms']:.0f})")  # fmt: skip
    head = (
        f"{'method':9s} {'kind':12s} {'CPU ms/img':>10s} {'img/s':>7s} {'x ew (CPU)':>10s} "
        f"{'x ew (wall)':>11s} {'theory':>7s}"
    )
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        print(f"{r['method']:9s} {r['kind']:12s} {r['cpu_ms_per_image_median']:10.2f} "
              f"{r['images_per_s_median']:7.1f} {r['cpu_ratio_to_ew_median']:10.3f} "
              f"{r['wall_ratio_to_ew_median']:11.3f} {r['theoretical_ratio']:7.3f}")  # fmt: skip


def draw(path: str, out: str) -> None:
    """The figure: each method's measured throughput relative to ``ew`` (CPU time per image,
    bars with the repeats as dots) beside the theoretical ratio, with the 95 % goal marked."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payload = json.loads(Path(path).read_text())
    rows, facts, m = payload["results"], payload["settings"]["model"], payload["machine"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8.5, 4))
    ax.bar(x - 0.2, [r["cpu_ratio_to_ew_median"] for r in rows], 0.4, label="measured (CPU time)")
    for i, r in enumerate(rows):
        ax.plot([i - 0.2] * len(r["cpu_ratio_to_ew_all"]), r["cpu_ratio_to_ew_all"], ".", c="0.2")
        ax.annotate(f"{r['cpu_ratio_to_ew_median']:.2f}", (i - 0.2, r["cpu_ratio_to_ew_median"]),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.bar(x + 0.2, [r["theoretical_ratio"] for r in rows], 0.4, label="theory (counted passes)")
    ax.axhline(0.95, color="red", ls="--", lw=1, label="goal for loss weightings: 0.95")
    ax.set_xticks(x, [r["method"] for r in rows])
    ax.set(ylabel="throughput relative to ew", ylim=(0, 1.4))
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.set_title(f"Weighting methods, CelebA ResNet18 at {facts['image_size']} px, "
                 f"{facts['tasks']} tasks (synthetic stand-in data)\n{m['cpu']}, {m['cores']} "
                 f"cores, TF {m['tensorflow']}, {m['date']}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--image-size", type=int, default=40, help="px the model sees (default 40)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32 (the notebooks')")
    p.add_argument("--steps", type=int, default=8, help="batches per epoch (default 8)")
    p.add_argument("--timed-epochs", type=int, default=1, help="after 1 warm-up epoch (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    p.add_argument("--plot", metavar="JSON", help="only draw the figure from a results file")
    p.add_argument("--figure", default=str(Path(__file__).parent / "figures" / "weighting.png"))
    args = p.parse_args(argv)
    if args.plot:
        draw(args.plot, args.figure)
        return 0
    if "ew" not in args.methods:
        p.error("--methods must include ew: every ratio is to equal weighting")
    if args.steps < 2 or args.timed_epochs < 1 or args.repeats < 1:
        p.error("need --steps >= 2, --timed-epochs >= 1, --repeats >= 1")
    info = machine()
    print(
        f"{info['cpu']}, {info['cores']} cores, GPUs: {info['gpus'] or 'none'}; "
        f"TF {info['tensorflow']}, Keras {info['keras']}; {info['date']}",
        flush=True,
    )
    start = time.perf_counter()
    result = bench(args)
    print_table(result)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.json:
        write_json(args.json, "weighting", info, args, result["rows"], model=result["model"])
        draw(args.json, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
