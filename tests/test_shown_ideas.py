"""The ideas the notebooks write out before calling the package compute what the package does.

Each test takes a notebook's cell by its tag, runs its source (with fresh random inputs where
the cell's own are fixed) and compares with ``mtlkit``: notebook 01's ``reuse_coarse`` by
hand, notebook 06's two task gradients and their cosine (one tape on TensorFlow, ``jax.grad``
on JAX), notebook 07's PCGrad
step and MGDA weights on a toy gradient matrix. (Notebook 04's gated step:
tests/test_notebook04_step.py.)
"""

from __future__ import annotations

import types
from pathlib import Path

import keras
import nbformat
import numpy as np
import pytest
from _on_backend import run_json

from mtlkit.analysis import diagnostics
from mtlkit.methods import cores
from mtlkit.models import architectures

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def tagged(number: str, tag: str) -> str:
    """The source of the one code cell of notebook ``number`` tagged ``tag``."""
    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if tag in c.get("metadata", {}).get("tags", [])]  # fmt: skip
    assert len(cells) == 1 and cells[0].cell_type == "code", f"{path.name}: one cell tagged {tag}"
    return cells[0].source


def without_line(source: str, start: str) -> str:
    """``source`` less its line that starts with ``start`` (a fixed input the test replaces)."""
    lines = source.splitlines()
    assert sum(line.startswith(start) for line in lines) == 1, start
    return "\n".join(line for line in lines if not line.startswith(start))


@pytest.mark.parametrize("seed", range(5))
def test_notebook07_pcgrad_and_mgda_by_hand_are_the_kits(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(3, 6))  # the cells' own asserts compare with the kit
    names = {"np": np, "G": G}
    exec(without_line(tagged("07", "shown-pcgrad"), "G = "), names)
    np.testing.assert_allclose(names["step"], names["kit"], atol=1e-6)
    exec(tagged("07", "shown-mgda"), names)
    assert np.isclose(names["alpha"], cores.mgda_weights(G[:2]).numpy()[0], atol=1e-6)


def test_notebook07_toy_matrix_has_a_conflict():
    names = {"np": np}
    exec(tagged("07", "shown-pcgrad"), names)
    assert not np.allclose(names["step"], names["G"].sum(axis=0))  # the surgery did something


def test_notebook01_reuse_coarse_by_hand_is_the_kits():
    names = {"architectures": architectures}
    exec(tagged("01", "shown-reuse-coarse"), names)
    exec(tagged("01", "shown-reuse-coarse-check"), names)  # its asserts compare with the kit
    ours = names["reuse_coarse_by_hand"](num_fine=7, num_coarse=3)
    kit = architectures.build_cifar100("reuse_coarse", num_fine=7, num_coarse=3)
    assert ours.count_params() == kit.count_params()


def tiny_shared_conv(name, settings) -> keras.Model:
    """A small stand-in for ``studies.build_compiled``: a shared block named conv_layers
    (with BatchNorm) and two heads with dropout, compiled with one loss per task."""
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(keras.layers.Flatten()(h))
    trunk = keras.Model(inputs, h, name="conv_layers")
    images = keras.Input((8, 8, 3))
    features = trunk(images)
    heads = {}
    for task, classes in (("fine", 5), ("coarse", 3)):
        z = keras.layers.Dropout(0.25)(keras.layers.Dense(16, activation="relu")(features))
        heads[task] = keras.layers.Dense(classes, name=task)(z)
    model = keras.Model(images, heads)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss={"fine": loss, "coarse": loss})
    return model


def notebook06_cosine(tag: str) -> tuple[float, float]:
    """Notebook 06's cosine by hand (the cell tagged ``tag``, then the cell that calls it)
    and the kit's, on a small model; run on TensorFlow here, on JAX by _shown_jax.py."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = {"fine": rng.integers(0, 5, 16), "coarse": rng.integers(0, 3, 16)}
    names = {"studies": types.SimpleNamespace(build_compiled=tiny_shared_conv),
             "cifar": None, "x": x, "y": y, "keras": keras, "tape_cosine": None,
             "jax_cosine": None}  # fmt: skip
    exec(tagged("06", tag), names)
    exec(tagged("06", "shown-cosine-call"), names)
    kit = diagnostics.gradient_stats(names["model"], x, y).cosine().loc["fine", "coarse"]
    return float(kit), names["by_hand"]


def test_notebook06_cosine_from_one_tape_is_the_kits():
    kit, by_hand = notebook06_cosine("shown-tape-cosine")
    assert abs(kit - by_hand) < 1e-5


def test_notebook06_cosine_by_jax_grad_is_the_kits_on_jax():
    result = run_json(Path(__file__).with_name("_shown_jax.py"))
    assert result["backend"] == "jax"
    assert abs(result["kit"] - result["by_hand"]) < 1e-5
    assert abs(result["by_hand"]) > 1e-3  # a real cosine, not a zero that would match anything


def test_notebook02_compile_written_out_trains_like_the_package():
    """Notebook 02's compile by hand (dict of losses, loss_weights) and the package's
    ``build_compiled``: from the same variables, one step on the same batch gives the same
    losses and the same weights."""
    import keras  # noqa: F401  (the cell's own import)

    from mtlkit import studies

    namespace = {"architectures": architectures, "keras": keras, "print": lambda *a, **k: None}
    exec(tagged("02", "shown-compile"), namespace)
    by_hand = namespace["model"]
    settings = studies.cifar100_settings("quick", trunk_width=1.0)  # the cell's report sizes
    packaged = studies.build_compiled("shared_reuse_fine", settings)
    for mine, theirs in zip(packaged.variables, by_hand.variables):  # weights, dropout seeds
        mine.assign(theirs)
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype="float32")
    y = {"fine": rng.integers(0, 100, 8), "coarse": rng.integers(0, 20, 8)}
    first = by_hand.train_on_batch(x, y, return_dict=True)
    second = packaged.train_on_batch(x, y, return_dict=True)
    assert first["loss"] == pytest.approx(second["loss"], rel=1e-6)
    for a, b in zip(by_hand.get_weights(), packaged.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_notebook07_imtl_g_by_hand_is_the_kits(seed):
    """IMTL-G's linear system, solved by hand in the cell, gives the kit's weights on fresh
    gradients (the cell asserts it), and the step projects equally on every unit gradient."""
    rng = np.random.default_rng(seed)
    G3 = rng.normal(size=(3, 7)) * rng.uniform(0.1, 5.0, size=(3, 1))
    names = {"np": np, "G3": G3, "cores": cores, "print": lambda *a, **k: None}
    exec(without_line(tagged("07", "shown-imtl"), "G3 = "), names)
    units = G3 / np.linalg.norm(G3, axis=1, keepdims=True)
    projections = units @ (names["alpha"] @ G3)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_notebook07_mean_rank_by_hand_is_the_kits(seed):
    """The cell's rank formula 1 + (methods better) + (others tied) / 2 equals
    across_seeds.mean_rank, ties included (values rounded to two decimals make many)."""
    import types

    import pandas as pd

    from mtlkit.analysis import across_seeds

    rng = np.random.default_rng(seed)
    methods, attributes = ["ew", "uw", "mgda", "dst"], [f"a{i}" for i in range(6)]
    accuracy = pd.DataFrame(rng.uniform(0.6, 0.62, (6, 4)).round(2), attributes, methods)
    values = pd.DataFrame({"model": methods * 2, "run": [0] * 4 + [1] * 4,
                           "delta_p": rng.normal(size=8)})  # fmt: skip
    settings = types.SimpleNamespace(data_label="test")
    names = {"np": np, "pd": pd, "across_seeds": across_seeds, "mean_accuracy": accuracy,
             "attributes": attributes, "METHODS": methods, "values": values, "seeds": [0, 1],
             "settings": settings, "print": lambda *a, **k: None}  # fmt: skip
    exec(tagged("07", "shown-mr"), names)
    expected = across_seeds.mean_rank(accuracy.T, higher_is_better=True)
    np.testing.assert_allclose(names["by_hand"], expected.to_numpy())
    wrong = (1 + names["better"]).mean(axis=1)  # ties not shared: must differ somewhere here
    assert not np.allclose(wrong, expected.to_numpy())
