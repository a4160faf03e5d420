"""Estimate how long the standard and full profiles take on a free Colab GPU (a T4).

No GPU was lent to the machine this kit is developed on, so the notebooks' expected
durations are *estimates*, made this way and printed with the method:

1. **Compute.** Count the multiply-accumulates of every Conv2D and Dense layer of each
   model for one image (from the layers' output shapes and kernel sizes); a training step
   costs about 3x the forward pass (forward, and a backward pass of twice its cost).
2. **GPU speed.** Assume a T4 sustains 4 TFLOP/s in float32 on these convolutions: half its
   8.1 TFLOP/s peak, typical for cuDNN on small images.
3. **Input pipeline.** Measure, on this 2-core CPU (a free Colab VM has 2 vCPUs too), how
   many images per second the CIFAR-100 augmentation and the CelebA JPEG decoding deliver;
   an epoch takes the longer of compute and pipeline time.

    python benchmarks/estimate_durations.py --json benchmarks/results/durations.json

The numbers it prints are the constants in ``mtlkit.studies.durations`` (``FORWARD_GFLOP``,
``PIPELINE_IMAGES_PER_S``); rerun it after changing a model or a loader.
"""

from __future__ import annotations

import argparse
import json
import time

import mtlkit  # noqa: F401  (first, before TensorFlow: quiet TensorFlow start-up)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from mtlkit import data
from mtlkit.models import architectures


def forward_gflop(model: keras.Model) -> float:
    """Multiply-accumulates x 2 of the Conv2D and Dense layers, per image, in GFLOP."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k = np.prod(layer.kernel_size) * layer.input.shape[-1]
            total += 2 * h * w * c_out * k
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total / 1e9


def resnet_gflop(size: int) -> float:
    """The ResNet18 backbone's forward cost at ``size`` px (the eight heads are negligible):
    the kit's configuration, built with a fixed input size so that shapes are known."""
    backbone = architectures.resnet18_backbone(None, image_shape=(size, size, 3))
    return forward_gflop(backbone)


def cifar_pipeline_rate(n: int = 4000) -> float:
    """Augmented CIFAR-100 training images per second through ``data.batched``."""
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype("float32") / 255
    labels = {"fine": np.zeros(n, "int64"), "coarse": np.zeros(n, "int64")}
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    batches = data.batched(ds, 100, shuffle=True, seed=0, augment=data.augmentation(0))
    for _ in batches.take(2):
        pass
    start = time.perf_counter()
    for _ in batches:
        pass
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    cifar = {
        name: forward_gflop(architectures.build_cifar100(name)) for name in architectures.NAMES
    }
    gflop = {f"cifar100/{k}": round(v, 4) for k, v in cifar.items()}
    gflop.update({f"celeba/resnet18@{s}": round(resnet_gflop(s), 4) for s in (224, 112)})
    results = {
        "forward_gflop": gflop,
        "pipeline_images_per_s": {"cifar100_augmented": round(cifar_pipeline_rate())},
    }
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
