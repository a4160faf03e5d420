"""The devices a study trains on: one, or several data-parallel, with Keras's own APIs.

A study's ``batch_size`` is the **global** batch. On N devices each one trains on
``batch_size / N`` examples of every batch, and the step combines them into the global
batch's losses and gradients (:mod:`mtlkit.training.loop`), so a run takes the same steps on
the same batches as on one device and ends at the same weights within float32 rounding.
The learning rate therefore stays the profile's: no scaling rule is needed, because the
global batch does not change. (To fill more devices with a *larger* global batch, scale
the learning rate with it -- the linear rule of Goyal et al., 2017 -- and expect other
results: that is another protocol, and the batch size is part of the run's tag.)

TensorFlow: a ``tf.distribute.MirroredStrategy`` over the GPUs (or over logical CPU devices
where no GPU is visible), entered around building and training; JAX: a
``keras.distribution.DataParallel`` over the devices, set before the model is built.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import keras

_MADE: dict[int, object] = {}
"""One strategy (or distribution) per device count: a model built under one is trained
under the same one when a study reuses it."""


def available() -> int:
    """How many devices a study can train on: the GPUs (TensorFlow) or the accelerator's
    devices (JAX); on a machine without either, the CPU devices TensorFlow or JAX was told
    to make (1 unless set up, see the README's "More than one device")."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.device_count()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return len(gpus) or len(tf.config.list_logical_devices("CPU"))


def resolve(devices: int | str, batch_size: int) -> int:
    """``devices`` as a number, checked against the machine and against the global
    ``batch_size``, which the devices must split evenly. ``"all"``: every device
    (:func:`available`), or the most of them that split ``batch_size`` evenly, with a warning
    saying how many are left idle (a profile's ``"all"`` must not fail on 3 or 6 GPUs)."""
    if devices == "all":
        return _most_that_split(available(), batch_size)
    count = devices
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"devices={devices!r}: use a positive whole number or 'all'.")
    if count > available():
        raise ValueError(f"devices={count}: this machine shows {available()} device(s) to "
                         f"Keras's {keras.backend.backend()} backend. Ask for at most that "
                         "many, or 'all'.")  # fmt: skip
    if batch_size % count:
        raise ValueError(
            f"batch_size={batch_size} does not split evenly across {count} devices: use a "
            f"batch size that is a multiple of {count}, or devices= a divisor of {batch_size}."
        )
    return count


def _most_that_split(found: int, batch_size: int) -> int:
    """The largest device count <= ``found`` that divides ``batch_size`` (warns if < found)."""
    count = next(n for n in range(found, 0, -1) if batch_size % n == 0)
    if count < found:
        warnings.warn(
            f"devices='all': batch_size={batch_size} does not split evenly across the {found} "
            f"devices this machine shows, so {count} of them train and {found - count} stay "
            f"idle. Use a batch size that is a multiple of {found} to train on all of them.",
            stacklevel=3,
        )
    return count


@contextlib.contextmanager
def scope(devices: int) -> Iterator[None]:
    """Build and train inside this block to run data-parallel on ``devices`` devices (one:
    nothing changes)."""
    if devices == 1:
        yield
        return
    if keras.backend.backend() == "jax":
        import jax

        if devices not in _MADE:
            _MADE[devices] = keras.distribution.DataParallel(devices=jax.devices()[:devices])
        with _MADE[devices].scope():
            yield
        return
    if devices not in _MADE:
        _MADE[devices] = mirrored(devices)
    with _MADE[devices].scope():
        yield


def mirrored(devices: int):
    """A ``tf.distribute.MirroredStrategy`` over the first ``devices`` GPUs, or over logical
    CPU devices where there is no GPU. CPU devices add up their parts on one device
    (``ReductionToOneDevice``): TensorFlow's collective ops can pair up the all-reduces of
    two replicas in different orders there (BatchNorm's moving statistics and the losses'
    sums), which stops the step with a shape mismatch."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    names = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))[:devices]]
    if gpus:
        return tf.distribute.MirroredStrategy(names)
    on_one = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(names, cross_device_ops=on_one)


def share(runs: Iterable, worker: str | None) -> list:
    """The runs one worker of a sweep trains (``python run_notebooks.py --devices 0 1 ...``):
    for ``worker="i/N"`` the runs ``i, i + N, i + 2N, ...`` of ``runs``; all of them for
    ``None``. The shares are fixed before anything starts, so two workers never train the
    same run folder, and together they train every run once."""
    runs = list(runs)
    if worker is None:
        return runs
    parts = str(worker).split("/")
    numbers = [int(p) for p in parts if p.strip().isdecimal()]
    if len(parts) != 2 or len(numbers) != 2 or not 0 <= numbers[0] < numbers[1]:
        raise ValueError(f"SHARE={worker!r}: use 'i/N' with 0 <= i < N (worker i of N), or None "
                         "for every run.")  # fmt: skip
    i, n = numbers
    return runs[i::n]


def describe(devices: int) -> str:
    """``", data-parallel on 2 devices"`` for labels ("" on one device)."""
    return f", data-parallel on {devices} devices" if devices > 1 else ""
