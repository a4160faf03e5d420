"""mtlkit.exercises: each check prints one line and returns passed / not done yet / failed,
never raises, names the expected type or shape, and draws new inputs at every call.
(The notebooks' own exercises: tests/test_notebook_exercises.py.)"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from mtlkit import exercises


def run(fn, *args, **kwargs) -> tuple[str, str]:
    """``fn``'s return value and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = fn(*args, **kwargs)
    return status, out.getvalue()


def pairs(rng):
    return rng.normal(size=3), rng.normal(size=3)


# ------------------------------------------------------------------------ the checks
def test_a_right_answer_passes_in_one_line():
    status, out = run(exercises.check, "Exercise 9.1", lambda a, b: a + b, np.add, pairs)
    assert status == exercises.PASSED and out == "Exercise 9.1: passed\n"


@pytest.mark.parametrize("student", [..., None, "raise"])
def test_a_placeholder_is_not_done_yet(student):
    def unwritten(a, b):
        raise NotImplementedError

    def ellipsis(a, b):
        return ...

    fn = {"raise": unwritten}.get(student, student)
    for f in (fn, ellipsis):
        status, out = run(exercises.check, "Exercise 9.2", f, np.add, pairs)
        assert status == exercises.NOT_DONE and out == "Exercise 9.2: not done yet\n"


def test_a_wrong_answer_fails_with_input_expected_and_received():
    status, out = run(exercises.check, "Exercise 9.3", np.subtract, np.add, pairs)
    assert status == exercises.FAILED
    assert out.count("\n") == 1 and out.startswith("Exercise 9.3: failed: the values differ")
    assert "input (" in out and "expected [" in out and "received [" in out


def test_an_exception_is_reported_not_raised():
    def broken(a, b):
        return a @ np.ones((7, 7))

    status, out = run(exercises.check, "Exercise 9.4", broken, np.add, pairs)
    assert status == exercises.FAILED and "raised ValueError" in out


@pytest.mark.parametrize(
    "received, expected, says",
    [
        ([1.0, 2.0], 3.0, "expected a single number, got shape (2,)"),
        ("three", 3.0, "expected a number, got a str"),
        (np.ones(2), np.ones(3), "expected shape (3,), got shape (2,)"),
        ([1.0], {"a": 1.0}, "expected a dict with keys ['a'], got a list"),
        ({"b": 1.0}, {"a": 1.0}, "expected the keys ['a'], got ['b']"),
        ({"a": 2.0}, {"a": 1.0}, "at key 'a': the values differ"),
    ],
)
def test_a_wrong_type_or_shape_names_what_was_expected(received, expected, says):
    status, out = run(
        exercises.check, "Exercise 9.5", lambda: received, lambda: expected, lambda r: ()
    )
    assert status == exercises.FAILED and says in out


def test_every_call_draws_new_inputs():
    seen = []
    exercises.check("x", lambda a: a, lambda a: a, lambda rng: (seen.append(rng.random()) or 1,))
    exercises.check("x", lambda a: a, lambda a: a, lambda rng: (seen.append(rng.random()) or 1,))
    assert len(set(seen)) == 6


def test_predictions_numbers_and_choices():
    assert run(exercises.check_prediction, "E", ..., 0.5)[0] == exercises.NOT_DONE
    assert run(exercises.check_prediction, "E", 0.51, 0.5, tolerance=0.02)[0] == exercises.PASSED
    status, out = run(exercises.check_prediction, "E", 0.7, 0.5, tolerance=0.02, why="because")
    assert status == exercises.FAILED and "you predicted 0.7, the run gave 0.5" in out
    assert "because" in out
    status, out = run(exercises.check_prediction, "E", "up", "down", choices=("up", "down"))
    assert status == exercises.FAILED and "'up'" in out and "'down'" in out
    status, out = run(exercises.check_prediction, "E", "sideways", "up", choices=("up", "down"))
    assert status == exercises.FAILED and "expected one of ['up', 'down']" in out
    assert run(exercises.check_prediction, "E", "x", 1.0)[1].endswith(
        "expected a number, got a str\n"
    )


def test_read_the_results_values():
    assert run(exercises.check_value, "E", ["b", "a"], ["a", "b"])[0] == exercises.PASSED
    assert run(exercises.check_value, "E", ["a"], ["a", "b"])[0] == exercises.FAILED
    assert run(exercises.check_value, "E", "a", ["a"])[0] == exercises.FAILED
    assert run(exercises.check_value, "E", 0.1234, 0.1236)[0] == exercises.PASSED
    assert run(exercises.check_value, "E", "ew", "uw")[0] == exercises.FAILED
    assert run(exercises.check_value, "E", ..., 3)[0] == exercises.NOT_DONE


def test_a_skipped_exercise_says_why():
    status, out = run(exercises.skipped, "Exercise 9.6", "it needs a GPU")
    assert status == exercises.SKIPPED and out == "Exercise 9.6: skipped: it needs a GPU\n"
