"""Cost per training step of every weighting method, against equal weighting: counted and measured.

All twelve methods of ``mtlkit.methods.weighting.METHODS`` train the same model, the CelebA
model of notebook 07 (``architectures.build_celeba``: a randomly initialised ResNet18 shared by
eight one-logit attribute heads), on the synthetic CelebA stand-in at a small image size, with
``mtlkit.training.train(..., weighting=method)``. For each method the script reports:

* **measured**: seconds per step (wall clock, and process CPU time, all threads) and the ratio
  to ``ew`` (a method's time per step over EW's: 2.0 means a step costs two EW steps);
* **counted**: the backward passes one step runs, and the cost they imply relative to EW, with
  a backward pass costing twice a forward pass (``B = 2F``) and the heads free:

  - loss methods (EW, UW, DWA, RLW, FAMO): one forward pass, one backward pass through the whole
    network: ``3F``, ratio 1;
  - methods on the shared variables (PCGrad, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL): one
    backward pass per task through the trunk to the shared weights (K in all), then one that
    only goes through the heads (the shared weights take the method's combination):
    ``F + K B``, ratio ``(2K + 1) / 3``;
  - MGDA-UB: the K task gradients stop at the trunk's output (the pooled features), so they
    run through the heads only; then one full backward pass: ratio ~1;
  - GradNorm: per task a backward pass down to the last shared kernel (its cost is that conv
    layer's weight gradient, ``F_last``, counted from the layer's shape), then one full
    backward pass: ``(3F + K F_last) / 3F``.

  Which of these a method runs is read from the method object itself (``kind``, ``needs``, and
  whether ``combine_gradients`` returns the shared variables' gradient), not from a list.
  The count leaves out each method's own small problem (a K x K Gram matrix, a linear system,
  a simplex or Newton solve) and the passes over the (K, D) gradient matrix the gradient
  methods read and write (D = 11.2 M shared parameters here: 358 MB for K = 8).

**How it is measured.** Each method gets its own copy of the model (the same initial weights),
its own Adam and its own method object, so the training step it traces in a warm-up call
(one step, not timed) is reused by every timed call (``train`` reuses a model's traced steps
when it is called again with the same optimizer and method objects). The timed calls are
interleaved: one call per method, then the next repeat in a rotated order, so that a change in
the machine's load falls on every method alike. Each timed call trains one epoch of
``--steps`` batches; the median over ``--repeats`` of each method's time per step, and of its
ratio to EW within the same repeat, are reported. On a machine shared with other work the
ratios, measured side by side, are what to read; process CPU time is less sensitive to other
processes than wall time.

    python benchmarks/bench_methods.py                      # about 3 minutes on 2 shared cores
    python benchmarks/bench_methods.py --json benchmarks/results/methods.json
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

from mtlkit import training  # noqa: E402
from mtlkit.methods import cores, weighting  # noqa: E402
from mtlkit.models import architectures, sharing, tasks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import EpochTimer, machine, write_json  # noqa: E402
from bench_weighting import ATTRIBUTES, conv_gflops, make_data  # noqa: E402

METHODS = tuple(weighting.METHODS)


def returns_shared_gradient(name: str, k: int) -> bool:
    """Whether ``name``'s ``combine_gradients`` gives the shared variables their gradient itself
    (so the loop's last backward pass stops at the heads): asked of a throwaway method object
    on a small random (K, 3) gradient matrix."""
    method = weighting.get(name, [f"t{i}" for i in range(k)])
    G = tf.random.stateless_normal([k, 3], seed=[0, 1])
    _, shared = method.combine_gradients(list(tf.unstack(tf.fill([k], 0.5))), G)
    return shared is not None


def counted_work(name: str, k: int, last_share: float) -> dict:
    """The backward passes of one step of method ``name`` with K tasks, and the cost relative
    to EW that they imply (module doc; ``last_share``: F_last / F)."""
    method = weighting.get(name, [f"t{i}" for i in range(k)])
    if method.kind == "loss":
        return {"needs": "-", "full_backward": 1, "trunk_backward": 0, "short_backward": 0,
                "short_backward_reaches": "-", "counted_ratio": 1.0}  # fmt: skip
    if method.needs == "representation":  # MGDA-UB
        return {"needs": method.needs, "full_backward": 1, "trunk_backward": 0,
                "short_backward": k, "short_backward_reaches": "trunk output (heads only)",
                "counted_ratio": 1.0}  # fmt: skip
    if method.needs == "last_shared_layer":  # GradNorm
        return {"needs": method.needs, "full_backward": 1, "trunk_backward": 0,
                "short_backward": k, "short_backward_reaches": "last shared kernel",
                "counted_ratio": (3 + k * last_share) / 3}  # fmt: skip
    if returns_shared_gradient(name, k):  # K passes to the shared weights + one through heads
        return {"needs": method.needs, "full_backward": 0, "trunk_backward": k,
                "short_backward": 1, "short_backward_reaches": "heads only",
                "counted_ratio": (2 * k + 1) / 3}  # fmt: skip
    return {"needs": method.needs, "full_backward": 1, "trunk_backward": k, "short_backward": 0,
            "short_backward_reaches": "-", "counted_ratio": (2 * k + 3) / 3}  # fmt: skip


def passes_text(c: dict) -> str:
    """The counted backward passes in words, for the table."""
    parts = []
    if c["full_backward"]:
        parts.append(f"{c['full_backward']} full")
    if c["trunk_backward"]:
        parts.append(f"{c['trunk_backward']} to shared weights")
    if c["short_backward"]:
        parts.append(f"{c['short_backward']} to {c['short_backward_reaches']}")
    return " + ".join(parts)


def one_call(model, ds, optimizer, method, losses) -> EpochTimer:
    """One epoch of ``ds`` with this method's own model, optimizer and method object."""
    timer = EpochTimer()
    training.train(model, ds, epochs=1, verbose=0, seed=0, callbacks=[timer], losses=losses,
                   optimizer=optimizer, weighting=method)  # fmt: skip
    return timer


def bench(args) -> dict:
    k = len(ATTRIBUTES)
    ds, n = make_data(args.steps, args.batch_size, args.image_size)
    losses = tasks.classification_losses(ATTRIBUTES, binary=True)
    training.set_seed(0)
    reference = architectures.build_celeba(ATTRIBUTES, weights=None, image_size=args.image_size)
    initial = reference.get_weights()
    names = list(reference.output_names)  # the loop's task order (keras sorts them)
    x, y = next(iter(ds))
    shared = sharing.shared_variables(reference, x, y, losses)
    last = cores.last_shared_kernel(shared)[0].path.split("/")[0]
    flops = conv_gflops(args.image_size)
    last_share = flops[last] / flops["total"]

    runs, warmup = {}, {}
    start = time.perf_counter()
    for name in args.methods:  # own model, optimizer, method object; trace once (one step)
        model = reference if name == args.methods[0] else architectures.build_celeba(
            ATTRIBUTES, weights=None, image_size=args.image_size)  # fmt: skip
        model.set_weights(initial)
        optimizer, method = keras.optimizers.Adam(1e-3), weighting.get(name, names)
        runs[name] = (model, optimizer, method)
        t0 = time.perf_counter()
        one_call(model, ds.take(1), optimizer, method, losses)
        warmup[name] = time.perf_counter() - t0
        print(f"  warm-up {name:12s} {warmup[name]:5.1f} s (trace + 1 step)", flush=True)
    print(f"  models built and traced in {time.perf_counter() - start:.0f} s", flush=True)

    wall = {m: [] for m in args.methods}
    cpu = {m: [] for m in args.methods}
    ratio_wall = {m: [] for m in args.methods}
    ratio_cpu = {m: [] for m in args.methods}
    for r in range(args.repeats):
        shift = r % len(args.methods)
        order = args.methods[shift:] + args.methods[:shift]
        for name in order:
            model, optimizer, method = runs[name]
            timer = one_call(model, ds, optimizer, method, losses)
            wall[name].append(timer.epochs[0] / args.steps)
            cpu[name].append(timer.cpu[0] / args.steps)
            print(f"  repeat {r + 1}/{args.repeats} {name:12s} {wall[name][-1]:6.3f} s/step "
                  f"wall, {cpu[name][-1]:6.3f} CPU-s/step", flush=True)  # fmt: skip
        for name in args.methods:
            ratio_wall[name].append(wall[name][-1] / wall["ew"][-1])
            ratio_cpu[name].append(cpu[name][-1] / cpu["ew"][-1])

    rows = []
    for name in args.methods:
        c = counted_work(name, k, last_share)
        rows.append({
            "method": name, "kind": weighting.METHODS[name].kind, **c,
            "backward_passes": c["full_backward"] + c["trunk_backward"] + c["short_backward"],
            "passes": passes_text(c),
            "wall_s_per_step_median": statistics.median(wall[name]),
            "wall_s_per_step_all": wall[name],
            "cpu_s_per_step_median": statistics.median(cpu[name]),
            "cpu_s_per_step_all": cpu[name],
            "wall_ratio_to_ew_median": statistics.median(ratio_wall[name]),
            "wall_ratio_to_ew_all": ratio_wall[name],
            "cpu_ratio_to_ew_median": statistics.median(ratio_cpu[name]),
            "cpu_ratio_to_ew_all": ratio_cpu[name],
            "warmup_call_s": warmup[name],
        })  # fmt: skip
    size = lambda vs: int(sum(np.prod(v.shape) for v in vs))  # noqa: E731
    facts = {"tasks": k, "image_size": args.image_size, "batch_size": args.batch_size,
             "trainable_parameters": size(reference.trainable_variables),
             "shared_parameters": size(shared), "forward_gflop_per_image": flops["total"],
             "last_shared_conv": last, "last_shared_conv_share_of_forward": last_share}  # fmt: skip
    return {"model": facts, "rows": rows}


def print_table(result: dict) -> None:
    f = result["model"]
    print(f"\nCelebA ResNet18, {f['tasks']} tasks, {f['image_size']} px, batch {f['batch_size']}: "
          f"{f['shared_parameters']:,} shared of {f['trainable_parameters']:,} parameters; last "
          f"shared conv {f['last_shared_conv']} = {f['last_shared_conv_share_of_forward']:.3f} "
          "of the forward FLOPs. Ratios: time per step / EW's (medians over repeats).")  # fmt: skip
    head = (f"{'method':12s} {'backward passes per step':42s} {'wall s':>7s} {'CPU s':>7s} "
            f"{'x ew CPU':>8s} {'x ew wall':>9s} {'counted':>7s}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        print(f"{r['method']:12s} {r['passes']:42s} {r['wall_s_per_step_median']:7.3f} "
              f"{r['cpu_s_per_step_median']:7.3f} {r['cpu_ratio_to_ew_median']:8.2f} "
              f"{r['wall_ratio_to_ew_median']:9.2f} {r['counted_ratio']:7.2f}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--image-size", type=int, default=32, help="px the model sees (default 32)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--steps", type=int, default=3, help="timed steps per call (default 3)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats (default 2)")
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    args = p.parse_args(argv)
    if "ew" not in args.methods:
        p.error("--methods must include ew: every ratio is to equal weighting")
    if args.steps < 1 or args.repeats < 1:
        p.error("need --steps >= 1 and --repeats >= 1")
    args.methods = list(dict.fromkeys(args.methods))
    info = machine()
    print(f"{info['cpu']} ({', '.join(info['vector_extensions']) or 'no flags read'}), "
          f"{info['cores']} cores, GPUs: {info['gpus'] or 'none'}; TF {info['tensorflow']}, "
          f"Keras {info['keras']}; {info['date']}", flush=True)  # fmt: skip
    start = time.perf_counter()
    result = bench(args)
    print_table(result)
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s in all")
    if args.json:
        write_json(args.json, "methods", info, args, result["rows"], model=result["model"],
                   seconds=round(seconds, 1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
