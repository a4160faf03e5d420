"""How long a notebook's runs take: the duration each notebook prints before it trains.

No GPU was available where the kit is developed, so the standard and full profiles'
durations are estimates, made from counted FLOPs and measured input pipelines
(``benchmarks/estimate_durations.py``); the quick profile's too, from counted FLOPs at the
rate measured on a 2-core CPU with AVX2 kernels (``benchmarks/README.md``).
"""

from __future__ import annotations

from mtlkit import work
from mtlkit.models.architectures import build_cifar100

FORWARD_GFLOP = {"cifar100_two_trunks": 0.572, "cifar100_shared_trunk": 0.304,
                 "resnet18_224": 3.627}  # fmt: skip
"""Forward cost per image, counted by ``benchmarks/estimate_durations.py`` (Conv2D and
Dense multiply-accumulates x 2; ResNet18's cost scales with the square of the image side)."""

CIFAR_NARROW_GFLOP = {0.35: (0.081, 0.048), 0.5: (0.155, 0.087)}
"""(two trunks, shared trunk) forward GFLOP per image at a ``trunk_width`` other than 1,
counted by :func:`mtlkit.work.forward_gflop` (the quick profile's 0.35, and 0.5); other widths
are counted on the built models."""

T4_TFLOPS = 4.0
"""Sustained float32 speed assumed for a Colab T4: half of its 8.1 TFLOP/s peak."""

PIPELINE_IMAGES_PER_S = {"cifar100": 2300, "celeba": 7000}
"""Input images per second on 2 CPU cores (a free Colab VM has 2 vCPUs), measured here:
CIFAR-100 with the report's augmentation (``benchmarks/estimate_durations.py``), CelebA
JPEG decoding (``benchmarks/bench_celeba_pipeline.py``)."""

SPLIT_SIZES = {"cifar100": (40_000, 20_000), "celeba": (162_770, 39_829)}
"""(training, validation + test) images per epoch of the real datasets."""


CPU_GFLOPS = {"cifar100": 75.0, "celeba": 33.0}
"""GFLOP/s the quick notebooks reached on 2 cores with AVX2 kernels (an AMD EPYC limited to
AVX2; ``benchmarks/README.md`` section 3): the rate behind the quick profile's estimate."""

TRACE_SECONDS = 5.0
"""Tracing a run's step functions (and their first call), per run that traces them."""


def _cifar_gflop(width: float) -> float:
    """Mean forward GFLOP per image of the six CIFAR-100 architectures (half have two trunks)."""
    if width == 1:
        two, shared = FORWARD_GFLOP["cifar100_two_trunks"], FORWARD_GFLOP["cifar100_shared_trunk"]
    elif width in CIFAR_NARROW_GFLOP:
        two, shared = CIFAR_NARROW_GFLOP[width]
    else:
        two, shared = (work.forward_gflop(build_cifar100(name, trunk_width=width))
                       for name in ("independent", "shared_conv"))  # fmt: skip
    return (two + shared) / 2


def _forward_gflop(settings) -> tuple[str, float]:
    if type(settings).__name__ == "CifarSettings":
        return "cifar100", _cifar_gflop(settings.trunk_width)
    return "celeba", FORWARD_GFLOP["resnet18_224"] * (settings.image_size / 224) ** 2


def _quick_estimate(settings, runs: int) -> str:
    """The quick profile's duration on a 2-core CPU, from the FLOPs it will count."""
    study, gflop = _forward_gflop(settings)
    evaluated = 2 * (settings.eval_limit or 0)  # validation and test
    work = runs * settings.epochs * (3 * (settings.train_limit or 0) + evaluated) * gflop
    minutes = (work / CPU_GFLOPS[study] + runs * TRACE_SECONDS) / 60
    rate = CPU_GFLOPS[study]
    return (f"about {max(minutes, 0.1):.1f} min on a 2-core CPU for {runs} quick run(s) "
            f"({work:,.0f} GFLOP at the {rate:g} GFLOP/s measured with AVX2 kernels, plus "
            f"about {TRACE_SECONDS:g} s of tracing per run; see benchmarks/README.md)")  # fmt: skip


def expected_minutes(settings, runs: int = 1) -> str:
    """The expected duration of ``runs`` runs under ``settings``, with how it was estimated.

    Quick profile: counted FLOPs at :data:`CPU_GFLOPS`, plus tracing. Standard and full:
    no GPU was available where the kit is developed, so this is an estimate (see
    ``benchmarks/estimate_durations.py``): an epoch takes the longer of its compute (3x the
    forward cost per training image, 1x per evaluation image, at :data:`T4_TFLOPS`; twice
    that speed with mixed precision) and its input pipeline (:data:`PIPELINE_IMAGES_PER_S`).
    """
    if settings.profile == "quick":
        return _quick_estimate(settings, runs)
    cifar = type(settings).__name__ == "CifarSettings"
    study = "cifar100" if cifar else "celeba"
    train, evaluate = SPLIT_SIZES[study]
    train = min(train, settings.train_limit or train)
    evaluate = min(evaluate, 2 * settings.eval_limit) if settings.eval_limit else evaluate
    gflop = _forward_gflop(settings)[1]
    speed = T4_TFLOPS * 1e3 * (2 if settings.mixed_precision else 1)  # GFLOP/s
    compute = (3 * train + evaluate) * gflop / speed
    pipeline = (train + evaluate) / PIPELINE_IMAGES_PER_S[study]
    minutes = runs * settings.epochs * max(compute, pipeline) / 60 + runs * 0.5  # + set-up
    return (f"about {minutes:.0f} min on a Colab T4 GPU for {runs} run(s) of {settings.epochs} "
            "epochs (an estimate from counted FLOPs at 4 TFLOP/s and a measured 2-core input "
            "pipeline; no GPU was available to measure it), plus the first download")  # fmt: skip
