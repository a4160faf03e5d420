"""How long a notebook's runs take: the duration each notebook prints before it trains.

No GPU was available where the kit is developed, so the standard and full profiles'
durations are estimates, made from counted FLOPs and measured input pipelines
(``benchmarks/estimate_durations.py``); the quick profile's are measured
(``benchmarks/README.md``).
"""

from __future__ import annotations

FORWARD_GFLOP = {"cifar100_two_trunks": 0.572, "cifar100_shared_trunk": 0.304,
                 "resnet18_224": 3.627}  # fmt: skip
"""Forward cost per image, counted by ``benchmarks/estimate_durations.py`` (Conv2D and
Dense multiply-accumulates x 2; ResNet18's cost scales with the square of the image side)."""

T4_TFLOPS = 4.0
"""Sustained float32 speed assumed for a Colab T4: half of its 8.1 TFLOP/s peak."""

PIPELINE_IMAGES_PER_S = {"cifar100": 2300, "celeba": 7000}
"""Input images per second on 2 CPU cores (a free Colab VM has 2 vCPUs), measured here:
CIFAR-100 with the report's augmentation (``benchmarks/estimate_durations.py``), CelebA
JPEG decoding (``benchmarks/bench_celeba_pipeline.py``)."""

SPLIT_SIZES = {"cifar100": (40_000, 20_000), "celeba": (162_770, 39_829)}
"""(training, validation + test) images per epoch of the real datasets."""


def expected_minutes(settings, runs: int = 1) -> str:
    """The expected duration of ``runs`` runs under ``settings``, with how it was estimated.

    Quick profile: measured wall times are in ``benchmarks/README.md``. Standard and full:
    no GPU was available where the kit is developed, so this is an estimate (see
    ``benchmarks/estimate_durations.py``): an epoch takes the longer of its compute (3x the
    forward cost per training image, 1x per evaluation image, at :data:`T4_TFLOPS`; twice
    that speed with mixed precision) and its input pipeline (:data:`PIPELINE_IMAGES_PER_S`).
    """
    if settings.profile == "quick":
        return (f"{runs} quick run(s): a few minutes on a 2-core CPU (measured times per "
                "notebook: benchmarks/README.md)")  # fmt: skip
    cifar = type(settings).__name__ == "CifarSettings"
    study = "cifar100" if cifar else "celeba"
    train, evaluate = SPLIT_SIZES[study]
    train = min(train, settings.train_limit or train)
    evaluate = min(evaluate, 2 * settings.eval_limit) if settings.eval_limit else evaluate
    if cifar:
        gflop = (FORWARD_GFLOP["cifar100_two_trunks"] + FORWARD_GFLOP["cifar100_shared_trunk"]) / 2
    else:
        gflop = FORWARD_GFLOP["resnet18_224"] * (settings.image_size / 224) ** 2
    speed = T4_TFLOPS * 1e3 * (2 if settings.mixed_precision else 1)  # GFLOP/s
    compute = (3 * train + evaluate) * gflop / speed
    pipeline = (train + evaluate) / PIPELINE_IMAGES_PER_S[study]
    minutes = runs * settings.epochs * max(compute, pipeline) / 60 + runs * 0.5  # + set-up
    return (f"about {minutes:.0f} min on a Colab T4 GPU for {runs} run(s) of {settings.epochs} "
            "epochs (an estimate from counted FLOPs at 4 TFLOP/s and a measured 2-core input "
            "pipeline; no GPU was available to measure it), plus the first download")  # fmt: skip
