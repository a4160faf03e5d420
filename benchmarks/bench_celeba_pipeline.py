"""The CelebA input pipeline against the bare JPEG decode of the same files (the ceiling).

Measured on the official folder layout (default ``../shared/data/celeba_mini``, the
``train`` split, 3,031 real 178x218 JPEGs):

* ``ceiling`` -- ``tf.io.read_file`` + ``tf.io.decode_jpeg`` in a ``tf.data`` map with
  ``AUTOTUNE``, batched: what this machine can decode;
* ``load_celeba@S`` -- ``mtlkit.data.celeba.load_celeba(split, source="folder", image_size=S)``,
  batched the same way: decode only the centre square, shrink it when ``S`` < 178
  (area filter, after libjpeg's 1/2-scale decode when ``S`` <= 59), uint8 out.
  ``@native`` is ``image_size=None`` (the 178x178 crop): the full profile's loader, whose
  model enlarges to 224 on the accelerator. ``@224`` enlarges on the CPU instead (allowed,
  not what the notebooks do);
* ``load_celeba@native+model_prep@224`` -- the same, plus the model's own preprocessing
  layers (``Resizing(224)``, ``Rescaling``, ImageNet ``Normalization``, taken from
  ``build_celeba``) run in the input pipeline on the CPU: what a run without an
  accelerator pays for the whole decode-crop-resize-normalise chain;
* ``previous@S`` -- the kit's earlier loader, kept here for the before/after comparison:
  decode the whole JPEG, convert to float32, crop, antialiased resize, [0, 1] float32.

"First epoch" is ``--passes`` uncached passes, each decoding every image (several passes,
so that one measurement lasts long enough to time). "Cached epochs" are
later epochs of ``mtlkit.data.batched(ds, batch_size)`` (which caches the decoded images
in memory), the rate training sees from epoch 2 on. ``load_celeba``'s own set-up (reading
the annotation files, checking every JPEG's header) is timed separately. The last column
compares images with the previous loader's at the same network input size (0..255 scale).

The CPU may be shared, so the pipelines are interleaved within each repeat (rotated order)
and the figures are medians over ``--repeats``; each ratio to the ceiling is computed
within a repeat, then the median is taken.

    python benchmarks/bench_celeba_pipeline.py
    python benchmarks/bench_celeba_pipeline.py --image-sizes 56 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from mtlkit import data  # noqa: E402
from mtlkit.data import celeba  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import machine, write_json  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "celeba_mini"


def split_paths(data_dir: Path, split: str, limit: int | None) -> list[str]:
    labels = celeba.read_annotations(data_dir)
    names = labels[labels["split"] == split].index[:limit]
    return [str(data_dir / celeba.IMAGE_FOLDER / n) for n in names]


def ceiling(paths: list[str]) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(paths)
    return ds.map(
        lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def previous(paths: list[str], image_size: int) -> tf.data.Dataset:
    """The kit's earlier per-image function: whole decode, float32, crop, antialiased resize."""

    def load(path):
        image = tf.image.convert_image_dtype(
            tf.io.decode_jpeg(tf.io.read_file(path), channels=3), tf.float32
        )
        shape = tf.shape(image)
        side = tf.minimum(shape[0], shape[1])
        top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
        image = image[top : top + side, left : left + side]
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.clip_by_value(image, 0.0, 1.0)

    return tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)


def model_preprocessing(image_size: int):
    """The first layers of build_celeba's model (resize, rescale, normalise), as one model."""
    import keras

    from mtlkit.models.architectures import build_celeba

    model = build_celeba(["Male"], weights=None, image_size=image_size)
    return keras.Model(model.input, model.get_layer("imagenet_normalization").output)


CPU_MS: dict[str, list[float]] = {}


def drain(ds: tf.data.Dataset, name: str | None = None) -> tuple[float, int]:
    """Iterate ``ds`` once; return (wall seconds, images). With ``name``, also record the
    process CPU time (all tf.data threads) per image under that name."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in ds:
        first = batch[0] if isinstance(batch, tuple) else batch
        n += int(first.shape[0])
    wall = time.perf_counter() - t0
    if name is not None:
        CPU_MS.setdefault(name, []).append(1000 * (time.process_time() - c0) / n)
    return wall, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DIR,
        help="CelebA folder in the official layout (default ../shared/data/celeba_mini)",
    )
    p.add_argument("--split", default="train", choices=("train", "validation", "test"))
    p.add_argument("--limit", type=int, default=None, help="use only the first LIMIT images")
    p.add_argument(
        "--image-sizes",
        type=int,
        nargs="+",
        default=[224, 56],
        help="load_celeba image sizes besides the native crop (default: 224 56)",
    )
    p.add_argument(
        "--model-size",
        type=int,
        default=224,
        help="the model input size for the in-model preprocessing row (default 224)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--passes",
        type=int,
        default=3,
        help="uncached passes over the split per first-epoch measurement (default 3)",
    )
    p.add_argument(
        "--cached-epochs",
        type=int,
        default=2,
        help="epochs timed after the cache is filled (default 2)",
    )
    p.add_argument("--no-previous", action="store_true", help="skip the previous loader's rows")
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    args = p.parse_args(argv)
    data_dir = args.data_dir.resolve()
    if not (data_dir / celeba.IMAGE_FOLDER).is_dir():
        p.error(f"{data_dir} has no {celeba.IMAGE_FOLDER}/: pass --data-dir")

    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; TF {info['tensorflow']}; {info['date']}")
    paths = split_paths(data_dir, args.split, args.limit)
    print(
        f"{data_dir}: split {args.split!r}, {len(paths)} images, batch {args.batch_size}, "
        f"{args.repeats} repeats",
        flush=True,
    )

    sizes = [None] + [s for s in args.image_sizes if s is not None]
    setup_s = {s: [] for s in sizes}
    label = {s: "native" if s is None else str(s) for s in sizes}

    def pipeline(size):
        t0 = time.perf_counter()
        ds = celeba.load_celeba(
            args.split, source="folder", data_dir=data_dir, image_size=size, limit=args.limit
        )
        setup_s[size].append(time.perf_counter() - t0)
        return ds.map(lambda x, y: x)

    prep = model_preprocessing(args.model_size)
    prep_name = f"load_celeba@native+model_prep@{args.model_size}"
    builders = {"ceiling": lambda: ceiling(paths)}
    for s in sizes:
        builders[f"load_celeba@{label[s]}"] = lambda s=s: pipeline(s)
    builders[prep_name] = lambda: (
        pipeline(None)
        .batch(args.batch_size)
        .map(lambda x: prep(x, training=False), num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    if not args.no_previous:
        for s in args.image_sizes:
            builders[f"previous@{s}"] = lambda s=s: previous(paths, s)
    names = list(builders)
    first = {k: [] for k in names}
    ratio = {k: [] for k in names}
    cached = {k: [] for k in names if k.startswith("load_celeba") and "+" not in k}

    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        this = {}
        for name in order:
            ds = builders[name]()
            # "first epoch": --passes uncached passes, each decoding every image
            t, n = drain(
                ds.batch(args.batch_size).prefetch(tf.data.AUTOTUNE).repeat(args.passes), name
            )
            if name in cached:  # the training path: batched() caches; its first epoch fills it
                ds = data.batched(ds, args.batch_size)
                drain(ds)
                rates = []
                for _ in range(args.cached_epochs):
                    tc, nc = drain(ds)
                    rates.append(nc / tc)
                cached[name].append(statistics.median(rates))
            this[name] = n / t
            first[name].append(n / t)
            print(
                f"  repeat {r + 1}/{args.repeats} {name:28s} first epoch {n / t:8.0f} img/s "
                f"{CPU_MS[name][-1]:6.2f} CPU-ms/img",
                flush=True,
            )
        for name in names:
            ratio[name].append(this[name] / this["ceiling"])

    # the new images against the previous loader's, at the same network input (first 32)
    difference = {}

    def first32(ds):
        return tf.cast(ds.take(32).batch(32).get_single_element(), tf.float32)

    for s in args.image_sizes:
        if f"previous@{s}" not in builders:
            continue
        old = first32(previous(paths, s)) * 255.0
        if s < celeba.FACE_SIDE:  # the loader shrinks; the notebooks ask it for this size
            difference[f"load_celeba@{s}"] = float(
                tf.reduce_max(tf.abs(first32(pipeline(s)) - old))
            )
        else:  # the notebooks load the native crop and let the model enlarge it (bilinear)
            enlarged = tf.image.resize(first32(pipeline(None)), (s, s), method="bilinear")
            difference["load_celeba@native"] = float(tf.reduce_max(tf.abs(enlarged - old)))
            difference[f"load_celeba@{s}"] = float(
                tf.reduce_max(tf.abs(first32(pipeline(s)) - old))
            )

    results = {}
    for name in names:
        results[name] = {
            "first_epoch_images_per_s_median": statistics.median(first[name]),
            "first_epoch_images_per_s_all": first[name],
            "ratio_to_ceiling_median": statistics.median(ratio[name]),
            "ratio_to_ceiling_all": ratio[name],
            "first_epoch_cpu_ms_per_image_median": statistics.median(CPU_MS[name]),
            "first_epoch_cpu_ms_per_image_all": CPU_MS[name],
            # ceiling CPU per image over this pipeline's: the ratio if the CPU were not shared
            "cpu_ratio_to_ceiling_median": statistics.median(
                c / p for c, p in zip(CPU_MS["ceiling"], CPU_MS[name])
            ),
        }
        if name in difference:
            results[name]["max_abs_difference_to_previous"] = difference[name]
        if name in cached:
            size = dict(zip(label.values(), label.keys()))[name.split("@")[1]]
            results[name]["cached_epoch_images_per_s_median"] = statistics.median(cached[name])
            results[name]["setup_s_median"] = statistics.median(setup_s[size])

    print("\nCelebA pipeline, first epoch (every image decoded), median over repeats")
    head = (
        f"{'pipeline':28s} {'img/s':>8s} {'of ceiling':>10s} {'CPU-ms/img':>10s} "
        f"{'CPU of ceiling':>14s} {'cached img/s':>13s} {'set-up (s)':>10s} {'max |diff|':>10s}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        c = r.get("cached_epoch_images_per_s_median")
        s = r.get("setup_s_median")
        cached_text = f"{c:13.0f}" if c is not None else " " * 13
        setup_text = f"{s:10.2f}" if s is not None else " " * 10
        print(
            f"{name:28s} {r['first_epoch_images_per_s_median']:8.0f} "
            f"{100 * r['ratio_to_ceiling_median']:9.1f}% "
            f"{r['first_epoch_cpu_ms_per_image_median']:10.2f} "
            f"{100 * r['cpu_ratio_to_ceiling_median']:13.1f}% {cached_text} {setup_text} "
            + (
                f"{r['max_abs_difference_to_previous']:10.2f}"
                if "max_abs_difference_to_previous" in r
                else ""
            )
        )
    print(
        "('of ceiling': wall-clock rate over the ceiling's, same repeat; 'CPU of ceiling': "
        "the ceiling's CPU time per image over this one's; 'max |diff|': largest pixel "
        "difference from the previous loader's images at the same network input size, "
        "first 32 images, 0..255 scale)"
    )
    if args.json:
        write_json(
            args.json,
            "celeba_pipeline",
            info,
            args,
            results,
            data_dir=str(data_dir),
            images=len(paths),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
