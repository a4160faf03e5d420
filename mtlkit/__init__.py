"""mtlkit: a Keras 3 teaching kit for multi-task learning.

Importing the kit imports TensorFlow with its start-up log lines (oneDNN notes, "could not
find cuda drivers", "failed call to cuInit" on a machine without a GPU) sent to nowhere, so
that they do not clutter the notebooks students read. Set ``MTLKIT_SHOW_TF_LOGS=1`` to see
them. Import ``mtlkit`` before ``keras`` or ``tensorflow`` for this to take effect.

It also drops TensorFlow's "triggered tf.function retracing" warning: the notebooks build a
fresh model for every run on purpose (runs must not share weights), and each new model
traces its own functions, which that warning mistakes for a bug in the caller's code.
"""

import logging
import os
import sys
import warnings

__version__ = "0.2.0"


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and look for devices with the process's stderr sent to /dev/null.

    TensorFlow's C++ start-up messages bypass Python's logging, so only redirecting file
    descriptor 2 hides them. Python errors still surface: the import raises as usual.
    """
    if "tensorflow" in sys.modules or os.environ.get("MTLKIT_SHOW_TF_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real stderr (some embedded interpreters)
        return
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the cuInit message comes here, not at import
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
# keras-hub imports tqdm's notebook progress bars, which warn when ipywidgets is missing
warnings.filterwarnings("ignore", message="IProgress not found")


class _DropRetracingWarning(logging.Filter):
    """Drops the retracing warning (one new model per run is this kit's design)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_DropRetracingWarning())
