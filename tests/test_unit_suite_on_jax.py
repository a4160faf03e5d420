"""The unit tests of the data, models, evaluation, plots and studies, run again on JAX.

These files are written for any Keras backend (``keras.ops``, NumPy, ``tf.data`` for the
input pipelines, which the kit uses on every backend). The training loop's files (every
weighting method in the loop among them) run on JAX in ``test_training_suite_on_jax.py``; the
weighting cores' own files run on JAX on request (its ``ALSO_ON_JAX``, which says why). What
stays TensorFlow-only, and why, is listed there too.
"""

from _jax_suite import run_on_jax
from _on_backend import NO_FUSION_EMITTERS

ON_ANY_BACKEND = (
    "test_architectures.py", "test_celeba_data.py", "test_celeba_model.py",
    "test_cifar100_data.py", "test_delta_p.py", "test_dst.py", "test_durations.py",
    "test_scoring.py", "test_across_seeds.py", "test_exercises.py", "test_layers.py",
    "test_mean_rank.py", "test_diagrams.py", "test_study_plots.py", "test_work.py",
    "test_tfds_mock.py", "test_settings_bad_input.py", "test_xla_cpu.py",
)  # fmt: skip
"""Unit-test files of the data, models, evaluation and studies, checked on JAX in CI."""


def test_the_data_model_and_study_unit_tests_pass_on_jax(tmp_path):
    ran = run_on_jax(
        ON_ANY_BACKEND,
        tmp_path,
        deselect="not trains_on_one_batch_with_fit",
        flags=(NO_FUSION_EMITTERS,),
    )  # (its large models run slower at -O0)
    assert ran["collected"] > 340, ran  # every file's tests, not an empty selection
