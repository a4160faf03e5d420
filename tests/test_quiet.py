"""Importing the kit keeps TensorFlow's start-up lines and the retracing warning out of the
notebooks (and can show them again)."""

import logging
import os
import subprocess
import sys

import keras
import numpy as np

import mtlkit

START = "import mtlkit, tensorflow as tf; tf.config.list_physical_devices()"


def _import_stderr(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    clean.update(env)
    done = subprocess.run([sys.executable, "-c", START], capture_output=True,
                          text=True, env=clean, check=True)  # fmt: skip
    return done.stderr


def test_import_prints_no_tensorflow_start_up_lines():
    assert _import_stderr() == ""


def test_the_start_up_lines_can_be_shown_again():
    # on a machine without a GPU TensorFlow says so at start-up; on any machine it says more
    # than nothing once its C++ log level is at its default
    assert _import_stderr(MTLKIT_SHOW_TF_LOGS="1", TF_CPP_MIN_LOG_LEVEL="0") != ""


def _predict_with_fresh_models(count: int = 7) -> None:
    x = np.zeros((4, 3), "float32")
    for _ in range(count):  # one new model per "run", as the notebooks do
        inputs = keras.Input((3,))
        keras.Model(inputs, keras.layers.Dense(2)(inputs)).predict(x, verbose=0)


def test_retracing_warning_of_fresh_models_is_dropped(caplog):
    tf_logger = logging.getLogger("tensorflow")
    ours = [f for f in tf_logger.filters if isinstance(f, mtlkit._DropRetracingWarning)]
    assert len(ours) == 1
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        tf_logger.removeFilter(ours[0])  # first without the filter: the warning exists
        try:
            _predict_with_fresh_models()
        finally:
            tf_logger.addFilter(ours[0])
        assert any("retracing" in r.getMessage() for r in caplog.records)
        caplog.clear()
        _predict_with_fresh_models()
    assert not any("retracing" in r.getMessage() for r in caplog.records)
