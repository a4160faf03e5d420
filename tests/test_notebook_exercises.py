"""Every notebook's exercises: the instructor's solutions pass their checks, at least one
wrong answer per implement-it exercise fails, and the student edition's placeholders say
"not done yet". The test runs a notebook's own exercise cells (the definitions and the
implement-it checks) with the names they take from the notebook's earlier cells, without
running the rest of the notebook; each exercise section closes its notebook, with time and
GPU stated in every heading.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import types
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import make_student_edition
from mtlkit import exercises
from mtlkit.analysis import across_seeds, comparison, diagnostics, scoring
from mtlkit.methods import dst, weighting
from mtlkit.models import architectures, graph

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISED = ["01", "02", "03", "04", "05", "06", "07"]
"""The notebooks that close with an ``## Exercises`` section."""


def exercise_cells(number: str) -> list[str]:
    """The sources of the code cells of a notebook's Exercises section."""
    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    return ["".join(c["source"]) for c in cells[start:] if c["cell_type"] == "code"]


def implement_it_cells(number: str) -> list[str]:
    """The cells that define a student function, the random inputs of a check, or run an
    implement-it check."""
    marks = ("def my_", "def random_", "exercises.check(")
    return [s for s in exercise_cells(number) if any(mark in s for mark in marks)]


def namespace() -> dict:
    """The names the exercise cells take from the notebook's earlier cells."""
    return {"np": np, "pd": pd, "tf": tf, "keras": keras, "dst": dst, "weighting": weighting,
            "comparison": comparison, "scoring": scoring, "across_seeds": across_seeds,
            "diagnostics": diagnostics, "architectures": architectures, "graph": graph,
            "exercises": exercises}  # fmt: skip


def execute(sources: list[str], names: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in sources:
            exec(compile(source, "<exercise cell>", "exec"), names)
    return out.getvalue()


def implement_it_names(number: str) -> list[str]:
    source = "\n".join(exercise_cells(number))
    found = re.findall(r'exercises\.check\(\s*"(Exercise [\d.]+)"', source)
    assert found, f"notebook {number} has no implement-it exercise"
    return found


@pytest.mark.parametrize("number", EXERCISED)
def test_every_solution_passes(number):
    out = execute(implement_it_cells(number), namespace())
    for name in implement_it_names(number):
        assert f"{name}: passed" in out, out


@pytest.mark.parametrize("number", EXERCISED)
def test_the_student_edition_says_not_done_yet(number):
    sources = [make_student_edition.strip_solutions(s) for s in implement_it_cells(number)]
    out = execute(sources, namespace())
    for name in implement_it_names(number):
        assert f"{name}: not done yet" in out, out
    assert "passed" not in out and "failed" not in out


def _wrong_pcgrad(G, orders):  # projects on every other task, conflicting or not
    total = np.zeros(G.shape[1])
    for i, order in enumerate(orders):
        g = G[i].copy()
        for j in order:
            g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        total += g
    return total


def _dot_not_cosine(model, x, y):  # forgets to divide by the two norms
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        losses = {t: tf.reduce_mean(tf.square(out[t] - y[t])) for t in ("a", "b")}
    shared = model.get_layer("trunk").trainable_variables
    flat = [tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(losses[t], shared)], 0)
            for t in ("a", "b")]  # fmt: skip
    return float(tf.reduce_sum(flat[0] * flat[1]))


WRONG = {
    ("02", "my_verdict"): lambda a, b: "within noise",
    ("02", "my_verdict", "bool"): lambda a, b: np.mean(a) > np.mean(b),
    ("05", "my_drop_rates"): lambda losses, initial: {
        t: 1 - i for t, i in dst.incompleteness(losses, initial).items()
    },
    ("06", "my_tape_cosine"): _dot_not_cosine,
    ("06", "my_gms"): lambda g1, g2: (
        min(np.linalg.norm(g1), np.linalg.norm(g2)) / max(np.linalg.norm(g1), np.linalg.norm(g2))
    ),
    ("01", "my_reuse_fine"): lambda f, c: architectures.build_cifar100("reuse_coarse", f, c),
    ("01", "my_reuse_fine", "independent"): lambda f, c: architectures.build_cifar100(
        "independent", f, c
    ),
    ("04", "my_incompleteness"): lambda losses, initial: {
        t: losses[t] / initial[t] for t in initial
    },
    ("04", "my_stagnancy"): lambda rates: {  # forgets the clip at 1
        t: np.mean(list(rates.values())) / r if r > 0 else 1.0 for t, r in rates.items()
    },
    ("04", "my_keep_probabilities"): lambda depths, counts, losses, initial: {
        t: (1 + depths[t] / max(depths.values()) + counts[t] / max(counts.values())) / 3
        for t in depths
    },
    ("07", "my_pcgrad_two"): lambda g1, g2: g1 + g2,
    ("07", "my_pcgrad"): _wrong_pcgrad,
    ("07", "my_mgda_two"): lambda g1, g2: float((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))),
    # IMTL-G on the raw gradients instead of the unit ones: equal projections g . g_j
    ("07", "my_imtl_two"): lambda g1, g2: float(-(g2 @ (g1 - g2)) / ((g1 - g2) @ (g1 - g2))),
    ("07", "my_delta_p"): lambda multi, singles: float(
        100 * (multi["accuracy"].iloc[:-1].to_numpy() - singles["accuracy"]).mean()
    ),
    ("03", "my_scores"): lambda tn, fp, fn, tp: {
        "accuracy": (tp + tn) / (tn + fp + fn + tp),
        "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2,
        "f1": tp / (tp + 0.5 * fp),  # forgets the false negatives
    },
    ("03", "my_scores", "list"): lambda tn, fp, fn, tp: [0.5, 0.5, 0.5],
}


@pytest.mark.parametrize("key", [k for k in WRONG if k[0] in EXERCISED], ids="-".join)
def test_a_wrong_answer_fails(key):
    number, function = key[:2]
    cells = implement_it_cells(number)
    names = namespace()
    execute(cells, names)
    names[function] = WRONG[key]
    names["exercises"] = types.SimpleNamespace(check=functools.partial(exercises.check, seed=0))
    checks = [s for s in cells if "exercises.check(" in s and re.search(rf"\b{function}\b", s)]
    assert len(checks) == 1, f"one check cell calls {function}"
    out = execute(checks, names)
    assert re.search(r"Exercise [\d.]+: failed: ", out), out


def test_every_implement_it_function_has_a_wrong_answer():
    defined = {(n, f) for n in EXERCISED for f in re.findall(r"def (my_\w+)", "\n".join(
        implement_it_cells(n)))}  # fmt: skip
    assert defined == {k[:2] for k in WRONG if k[0] in EXERCISED}


@pytest.mark.parametrize("number", EXERCISED)
def test_the_exercises_close_the_notebook_with_time_and_gpu(number):
    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    text = ["".join(c["source"]) for c in cells]
    start = next(i for i, s in enumerate(text) if s.startswith("## Exercises"))
    assert not any(s.startswith("## ") for s in text[start + 1 :])
    headings = re.findall(r"^### (Exercise (\d+)\.\d+ .*)$", "\n".join(text[start:]), re.M)
    assert len(headings) >= 4
    for heading, n in headings:
        assert int(n) == int(number), heading
        assert re.search(r"\d+ min", heading) and "GPU" in heading, heading
