"""Training multi-task models: Keras's ``compile``/``fit`` made resumable, and a readable loop.
Each run keeps its checkpoints and history in a run folder, so a killed run picks up again.

* :mod:`mtlkit.training.fit` -- :func:`compile_multitask`, :func:`fit_resumable`,
  :func:`restart`, :func:`recalibrate_batchnorm` and the callbacks of the ``fit`` path;
* :mod:`mtlkit.training.loop` -- :func:`train`, the custom loop (DST gates, weighting methods);
* :mod:`mtlkit.training.runs` -- run folders: seeds, checkpoints, histories.

The loop runs on Keras's TensorFlow and JAX backends (:mod:`mtlkit.backend`).

The names below are the package's public API; each one lives in the module named beside it.
"""

from mtlkit import backend

backend.check_supported()  # before anything is traced on a backend the loop cannot run on

from mtlkit.training.fit import (  # noqa: E402
    FINAL_WEIGHTS,
    CountWork,
    EvaluateEachEpoch,
    RecalibrateBatchNorm,
    StopOnNonFinite,
    compile_multitask,
    fit_resumable,
    read_history_csv,
    recalibrate_batchnorm,
    restart,
    speed_options_label,
)
from mtlkit.training.loop import train  # noqa: E402
from mtlkit.training.runs import set_seed  # noqa: E402

__all__ = [
    "FINAL_WEIGHTS",
    "CountWork",
    "EvaluateEachEpoch",
    "RecalibrateBatchNorm",
    "StopOnNonFinite",
    "compile_multitask",
    "fit_resumable",
    "read_history_csv",
    "recalibrate_batchnorm",
    "restart",
    "set_seed",
    "speed_options_label",
    "train",
]
