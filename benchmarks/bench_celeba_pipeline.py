"""The CelebA input pipeline against the bare JPEG decode of the same files (the ceiling).

Measured on the official folder layout (default ``../shared/data/celeba_mini``, the
``train`` split, 3,031 real 178x218 JPEGs):

* ``ceiling``   -- ``tf.io.read_file`` + ``tf.io.decode_jpeg`` in a ``tf.data`` map with
  ``AUTOTUNE``, batched: what this machine can decode;
* ``load_celeba@S`` -- ``mtlkit.celeba.load_celeba(split, source="folder", image_size=S)``
  (decode, centre crop, antialiased resize, [0, 1] float32), batched the same way;
* variants of the per-image function, written here (not in the kit) to show where the
  time goes and what a fix would give: ``decode_crop`` decodes only the centre square
  (``tf.io.decode_and_crop_jpeg``) and resizes with antialiasing; ``decode_crop_bilinear``
  also drops the antialiasing (plain bilinear); ``decode_only_float`` decodes and converts
  to float32 without crop or resize; ``decode_crop_uint8`` only decodes the centre square
  (uint8, no resize: the resize and [0, 1] scaling would move into the model, onto the
  accelerator); ``decode_ratioR_crop`` lets libjpeg decode at 1/R scale (DCT domain, an
  averaging downscale) before a small antialiased resize; ``..._area`` replaces the
  antialiased resize by ``method="area"`` (a box-filter average; only when shrinking).

"First epoch" is ``--passes`` uncached passes, each decoding every image (several passes,
so that one measurement lasts long enough to time). "Cached epochs" are
later epochs of ``mtlkit.data.batched(ds, batch_size)`` (which caches the decoded images
in memory), the rate training sees from epoch 2 on. ``load_celeba``'s own set-up (reading
the annotation files, checking every JPEG's header) is timed separately.

The CPU may be shared, so the pipelines are interleaved within each repeat (rotated order)
and the figures are medians over ``--repeats``; each ratio to the ceiling is computed
within a repeat, then the median is taken.

    python benchmarks/bench_celeba_pipeline.py
    python benchmarks/bench_celeba_pipeline.py --image-sizes 224 --repeats 5 --json out.json
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

from mtlkit import celeba, data  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import machine, write_json  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "celeba_mini"


def split_paths(data_dir: Path, split: str, limit: int | None) -> list[str]:
    labels = celeba.read_annotations(data_dir)
    names = labels[labels["split"] == split].index[:limit]
    return [str(data_dir / celeba.IMAGE_FOLDER / n) for n in names]


def ceiling(paths: list[str]) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(paths)
    return ds.map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3),
                  num_parallel_calls=tf.data.AUTOTUNE)


def centre_window(shape):
    side = tf.minimum(shape[0], shape[1])
    return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])


SOURCE_SIDE = 178  # CelebA's aligned images are 178 x 218: the centre square is 178


def dct_ratio(image_size: int) -> int:
    """The largest libjpeg scale 1/r (r in 1, 2, 4, 8) that keeps the square >= image_size."""
    return max((r for r in (1, 2, 4, 8) if SOURCE_SIDE // r >= image_size), default=1)


def variant(paths: list[str], image_size: int, kind: str) -> tf.data.Dataset:
    """Alternative per-image functions (see the module doc)."""

    def load(path):
        raw = tf.io.read_file(path)
        if kind == "decode_only_float":
            return tf.image.convert_image_dtype(tf.io.decode_jpeg(raw, channels=3), tf.float32)
        if kind == "decode_crop_uint8":  # no resize: the model would resize on the accelerator
            window = centre_window(tf.io.extract_jpeg_shape(raw))
            return tf.io.decode_and_crop_jpeg(raw, window, channels=3)
        if kind.startswith("decode_ratio_crop"):  # libjpeg's DCT-domain downscale first
            ratio = dct_ratio(image_size)
            image = tf.io.decode_jpeg(raw, channels=3, ratio=ratio)
            shape = tf.shape(image)
            side = tf.minimum(shape[0], shape[1])
            top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
            image = image[top:top + side, left:left + side]
        else:
            window = centre_window(tf.io.extract_jpeg_shape(raw))
            image = tf.io.decode_and_crop_jpeg(raw, window, channels=3)
        if kind.endswith("_area"):  # box-filter average: antialiased when shrinking
            image = tf.image.resize(image, (image_size, image_size), method="area")
        else:  # float32 output
            image = tf.image.resize(image, (image_size, image_size), antialias=not kind.endswith("bilinear"))
        return tf.clip_by_value(image / 255.0, 0.0, 1.0)

    return tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)


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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DIR,
                   help="CelebA folder in the official layout (default ../shared/data/celeba_mini)")
    p.add_argument("--split", default="train", choices=("train", "validation", "test"))
    p.add_argument("--limit", type=int, default=None, help="use only the first LIMIT images")
    p.add_argument("--image-sizes", type=int, nargs="+", default=[224, 56],
                   help="load_celeba image sizes (default: 224 56, the notebook's full and quick)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--passes", type=int, default=3,
                   help="uncached passes over the split per first-epoch measurement (default 3)")
    p.add_argument("--cached-epochs", type=int, default=2,
                   help="epochs timed after the cache is filled (default 2)")
    p.add_argument("--no-variants", action="store_true", help="skip the alternative functions")
    p.add_argument("--json", metavar="OUT", help="write all measurements to this JSON file")
    args = p.parse_args(argv)
    data_dir = args.data_dir.resolve()
    if not (data_dir / celeba.IMAGE_FOLDER).is_dir():
        p.error(f"{data_dir} has no {celeba.IMAGE_FOLDER}/: pass --data-dir")

    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; TF {info['tensorflow']}; {info['date']}")
    paths = split_paths(data_dir, args.split, args.limit)
    print(f"{data_dir}: split {args.split!r}, {len(paths)} images, batch {args.batch_size}, "
          f"{args.repeats} repeats", flush=True)

    setup_s = {s: [] for s in args.image_sizes}

    def pipeline(size):
        t0 = time.perf_counter()
        ds = celeba.load_celeba(args.split, source="folder", data_dir=data_dir,
                                image_size=size, limit=args.limit)
        setup_s[size].append(time.perf_counter() - t0)
        return ds

    builders = {"ceiling": lambda: ceiling(paths)}
    for s in args.image_sizes:
        builders[f"load_celeba@{s}"] = lambda s=s: pipeline(s)
    if not args.no_variants:
        builders["decode_only_float"] = lambda: variant(paths, 0, "decode_only_float")
        builders["decode_crop_uint8"] = lambda: variant(paths, 0, "decode_crop_uint8")
        for s in args.image_sizes:
            builders[f"decode_crop@{s}"] = lambda s=s: variant(paths, s, "decode_crop")
            builders[f"decode_crop_bilinear@{s}"] = lambda s=s: variant(paths, s, "decode_crop_bilinear")
            if s < SOURCE_SIDE:  # shrinking: an area (box) filter is antialiased and cheap
                builders[f"decode_crop_area@{s}"] = lambda s=s: variant(paths, s, "decode_crop_area")
            if dct_ratio(s) > 1:
                r = dct_ratio(s)
                builders[f"decode_ratio{r}_crop@{s}"] = lambda s=s: variant(paths, s, "decode_ratio_crop")
                builders[f"decode_ratio{r}_crop_area@{s}"] = lambda s=s: variant(paths, s, "decode_ratio_crop_area")
    names = list(builders)
    first = {k: [] for k in names}
    ratio = {k: [] for k in names}
    cached = {k: [] for k in names if k.startswith("load_celeba")}

    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        this = {}
        for name in order:
            ds = builders[name]()
            # "first epoch": --passes uncached passes, each decoding every image
            t, n = drain(ds.batch(args.batch_size).prefetch(tf.data.AUTOTUNE).repeat(args.passes), name)
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
            print(f"  repeat {r + 1}/{args.repeats} {name:28s} first epoch {n / t:8.0f} img/s "
                  f"{CPU_MS[name][-1]:6.2f} CPU-ms/img", flush=True)
        for name in names:
            ratio[name].append(this[name] / this["ceiling"])

    # how far each alternative's images are from load_celeba's (first 32 images)
    difference = {}
    for name in names:
        if "@" in name and not name.startswith("load_celeba"):
            size = int(name.split("@")[1])
            ours = builders[name]().take(32).batch(32).get_single_element()
            kit = celeba.load_celeba(args.split, source="folder", data_dir=data_dir, image_size=size,
                                     limit=32).map(lambda x, y: x).batch(32).get_single_element()
            difference[name] = float(tf.reduce_max(tf.abs(ours - kit)))

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
                c / p for c, p in zip(CPU_MS["ceiling"], CPU_MS[name])),
        }
        if name in difference:
            results[name]["max_abs_difference_to_load_celeba"] = difference[name]
        if name in cached:
            size = int(name.split("@")[1])
            results[name]["cached_epoch_images_per_s_median"] = statistics.median(cached[name])
            results[name]["setup_s_median"] = statistics.median(setup_s[size])

    print("\nCelebA pipeline, first epoch (every image decoded), median over repeats")
    head = (f"{'pipeline':28s} {'img/s':>8s} {'of ceiling':>10s} {'CPU-ms/img':>10s} "
            f"{'CPU of ceiling':>14s} {'cached img/s':>13s} {'set-up (s)':>10s} {'max |diff|':>10s}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        c = r.get("cached_epoch_images_per_s_median")
        s = r.get("setup_s_median")
        cached_text = f"{c:13.0f}" if c is not None else " " * 13
        setup_text = f"{s:10.2f}" if s is not None else " " * 10
        print(f"{name:28s} {r['first_epoch_images_per_s_median']:8.0f} "
              f"{100 * r['ratio_to_ceiling_median']:9.1f}% "
              f"{r['first_epoch_cpu_ms_per_image_median']:10.2f} "
              f"{100 * r['cpu_ratio_to_ceiling_median']:13.1f}% {cached_text} {setup_text} "
              + (f"{r['max_abs_difference_to_load_celeba']:10.4f}"
                 if "max_abs_difference_to_load_celeba" in r else ""))
    print("('of ceiling': wall-clock rate over the ceiling's, same repeat; 'CPU of ceiling': "
          "the ceiling's CPU time per image over this one's; 'max |diff|': largest pixel "
          "difference from load_celeba's images at that size, first 32 images, [0, 1] scale)")
    if args.json:
        write_json(args.json, "celeba_pipeline", info, args, results,
                   data_dir=str(data_dir), images=len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
