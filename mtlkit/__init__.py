"""mtlkit: a Keras 3 teaching kit for multi-task learning.

Importing the kit imports TensorFlow with its start-up log lines (oneDNN notes, "could not
find cuda drivers", "failed call to cuInit" on a machine without a GPU) sent to nowhere, so
that they do not clutter the notebooks students read. Set ``MTLKIT_SHOW_TF_LOGS=1`` to see
them. Import ``mtlkit`` before ``keras`` or ``tensorflow`` for this to take effect.

It also turns on TensorFlow's oneDNN kernels on every x86 CPU (``TF_ENABLE_ONEDNN_OPTS=1``,
unless you set that variable yourself). TensorFlow enables them by default only on CPUs with
AVX512_VNNI, AVX512_BF16 or AMX (recent Xeons, AMD Zen 4); on the AVX2 CPUs of most laptops
and many CI runners it falls back to Eigen kernels, which train the kit's models 1.4x
(CIFAR-100) to 4.4x (ResNet18) slower: ``benchmarks/README.md`` measures it. The setting
must be made before TensorFlow is imported, hence "import mtlkit first".

When Keras runs on JAX (``KERAS_BACKEND=jax``), TensorFlow only feeds the data (``tf.data``):
the kit hides the GPUs from it, so that it does not reserve the accelerator's memory that
JAX trains in. Where JAX can only use the CPU, the kit also turns off XLA's algebraic
simplifier (``--xla_disable_hlo_passes=algsimp`` added to ``XLA_FLAGS``): it rewrites a 3x3
convolution over a 2x2 feature map, which the ResNet18's last stages meet at the quick
profile's 32-40 px images, into a form XLA:CPU runs without a fast kernel, about 60x slower.
An ``XLA_FLAGS`` that already names ``xla_disable_hlo_passes`` is left as it is
(``--xla_disable_hlo_passes=`` keeps every pass).

It also drops TensorFlow's "triggered tf.function retracing" warning: the notebooks build a
fresh model for every run on purpose (runs must not share weights), and each new model
traces its own functions, which that warning mistakes for a bug in the caller's code.
"""

import logging
import os
import sys
import warnings

__version__ = "0.3.0"  # read by pyproject.toml: the one version of the kit


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


def _enable_onednn() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels, which it leaves off on AVX2-only CPUs.

    An explicit ``TF_ENABLE_ONEDNN_OPTS`` (``0`` to compare, say) is left as it is; so is a
    TensorFlow that is already imported, where the variable would have no effect.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    elif "TF_ENABLE_ONEDNN_OPTS" not in os.environ and not _onednn_on():
        warnings.warn(
            "TensorFlow was imported before mtlkit and runs its slower Eigen CPU kernels on "
            "this CPU (up to 7x slower for the kit's ResNet18). Import mtlkit first, or set "
            "TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow starts.",
            stacklevel=3,
        )


def _onednn_on() -> bool:
    """Whether the imported TensorFlow runs its oneDNN kernels (True if it cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return True


def _set_up_jax() -> None:
    """On Keras's JAX backend: TensorFlow kept off the GPUs, and XLA's flag for the CPU."""
    import keras  # (its backend: KERAS_BACKEND, or ~/.keras/keras.json)

    if keras.backend.backend() == "jax":
        _keep_tensorflow_off_the_gpus()
        _fast_small_convolutions_on_jax_cpu()


def _keep_tensorflow_off_the_gpus() -> None:
    """On the JAX backend, TensorFlow feeds data only: it must not take the GPUs' memory."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices are already in use: too late to hide them
        warnings.warn(
            "TensorFlow started its GPUs before mtlkit was imported; with KERAS_BACKEND=jax it "
            "may hold GPU memory JAX needs. Import mtlkit first.",
            stacklevel=3,
        )


ALGSIMP_OFF = "--xla_disable_hlo_passes=algsimp"
"""The XLA flag the kit adds for JAX on a CPU (see the module's docstring)."""


def _jax_on_cpu_only(environ: dict) -> bool:
    """Whether JAX can only run on the CPU: ``JAX_PLATFORMS`` says ``cpu``, or no plugin of
    an accelerator (CUDA, ROCm, Metal: the ``jax_plugins`` packages) and no TPU runtime
    (``libtpu``) is installed. XLA's flags reach every compiler in the process, so the
    CPU-only flag must stay away from a GPU's or TPU's."""
    import importlib.metadata
    import importlib.util
    import pkgutil

    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return {p.strip() for p in platforms.split(",")} == {"cpu"}
    if importlib.metadata.entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu"):
        return False
    namespace = importlib.util.find_spec("jax_plugins")
    locations = namespace.submodule_search_locations if namespace else None
    return not (locations and any(pkgutil.iter_modules(list(locations))))


def _xla_flags_for_cpu(flags: str) -> str:
    """``flags`` with :data:`ALGSIMP_OFF` added, unless they choose the disabled passes
    themselves (``--xla_disable_hlo_passes=...``)."""
    if "xla_disable_hlo_passes" in flags:
        return flags
    return f"{flags} {ALGSIMP_OFF}".strip()


def _fast_small_convolutions_on_jax_cpu() -> None:
    """On JAX with only a CPU, add :data:`ALGSIMP_OFF` to ``XLA_FLAGS`` before JAX compiles
    anything (XLA reads its flags once, when JAX starts its backend)."""
    if not _jax_on_cpu_only(os.environ):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a JAX without this (private) check: the flag is set, and works
        backends_are_initialized = bool  # if JAX has not compiled anything yet
    if backends_are_initialized():
        if _xla_flags_for_cpu(flags) != flags:
            warnings.warn(
                "JAX started before mtlkit was imported, so XLA keeps its algebraic "
                "simplifier, which makes the ResNet18's small-image steps about 10x slower "
                "on the CPU. Import mtlkit first.",
                stacklevel=3,
            )
        return
    os.environ["XLA_FLAGS"] = _xla_flags_for_cpu(flags)


_enable_onednn()
_import_tensorflow_quietly()
_set_up_jax()
# keras-hub imports tqdm's notebook progress bars, which warn when ipywidgets is missing
warnings.filterwarnings("ignore", message="IProgress not found")


class _DropRetracingWarning(logging.Filter):
    """Drops the retracing warning (one new model per run is this kit's design)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_DropRetracingWarning())
