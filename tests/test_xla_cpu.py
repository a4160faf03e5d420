"""``import mtlkit`` turns off XLA's algebraic simplifier where JAX runs on the CPU only.

The simplifier swaps the operands of a 3x3 convolution over a 2x2 feature map (the ResNet18's
last stages at the quick profile's 32-40 px images), and XLA:CPU has no fast kernel for the
swapped form: 260 ms instead of 4 ms for one such convolution, a ResNet18 step at 40 px 13x
slower (``benchmarks/README.md``, section 9). The swap shows in the compiled program as
``rhs_reversal``. This file runs on both backends (on JAX in ``test_unit_suite_on_jax.py``).
"""

import os
import subprocess
import sys

import keras
import pytest

import mtlkit


def test_the_flag_is_added_to_other_flags_and_an_explicit_choice_is_kept():
    assert mtlkit._xla_flags_for_cpu("") == mtlkit.ALGSIMP_OFF
    devices = "--xla_force_host_platform_device_count=2"
    assert mtlkit._xla_flags_for_cpu(devices) == f"{devices} {mtlkit.ALGSIMP_OFF}"
    for chosen in ("--xla_disable_hlo_passes=", "--xla_disable_hlo_passes=fusion"):
        assert mtlkit._xla_flags_for_cpu(chosen) == chosen


def test_only_a_jax_without_accelerators_gets_it(monkeypatch):
    assert mtlkit._jax_on_cpu_only({"JAX_PLATFORMS": "cpu"})
    assert not mtlkit._jax_on_cpu_only({"JAX_PLATFORMS": "cuda"})
    assert not mtlkit._jax_on_cpu_only({"JAX_PLATFORMS": "tpu,cpu"})
    import importlib.metadata
    import importlib.util

    real = importlib.util.find_spec
    tpu_runtime = lambda name: object() if name == "libtpu" else real(name)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", tpu_runtime)
    assert not mtlkit._jax_on_cpu_only({})  # a TPU runtime installed
    monkeypatch.undo()
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: ["jax_cuda12_plugin"])
    assert not mtlkit._jax_on_cpu_only({})  # a GPU plugin installed


def _small_convolution_is_swapped(**compiler_options) -> bool:
    import jax
    import jax.numpy as jnp

    x, w = jnp.zeros((4, 2, 2, 64)), jnp.zeros((3, 3, 64, 64))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))  # fmt: skip
    compiled = conv.lower(x, w).compile(compiler_options=compiler_options or None)
    return "rhs_reversal" in compiled.as_text()


def test_the_flag_is_set_on_jax_on_the_cpu_and_only_there(monkeypatch):
    if keras.backend.backend() != "jax":  # TensorFlow's XLA keeps its passes
        monkeypatch.setenv("XLA_FLAGS", "")
        mtlkit._set_up_jax()
        assert os.environ["XLA_FLAGS"] == ""
        return
    flags = os.environ.get("XLA_FLAGS", "")
    assert mtlkit.ALGSIMP_OFF in flags, flags  # set at import, before JAX started
    assert not _small_convolution_is_swapped()
    # the check sees the swap when the simplifier runs (the flag overridden for one program)
    assert _small_convolution_is_swapped(xla_disable_hlo_passes="")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="one process on JAX is enough")
def test_jax_started_before_mtlkit_warns():
    code = (
        "import jax.numpy as jnp; jnp.zeros(1)\n"
        "import warnings; warnings.simplefilter('error')\n"
        "import mtlkit\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "Import mtlkit first" in out.stderr, out.stderr[-2000:]
