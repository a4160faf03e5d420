"""Checks for the notebooks' exercises: one line per exercise, and they never raise.

Three kinds of exercise close every notebook:

* **implement it** -- :func:`check` calls the student's function and the kit's own on fresh
  random inputs (new ones at every call, so no number can be copied from a previous run)
  and compares the answers;
* **predict, then run** -- :func:`check_prediction` sets a prediction (a number or one of a
  few choices) against what a run gave, and says why the outcome is what it is;
* **read the results** -- :func:`check_value` compares an answer read off a table with the
  value the notebook computed.

Every check prints one line, ``Exercise 4.1: passed``, ``Exercise 4.1: not done yet`` (the
placeholder ``...`` or ``raise NotImplementedError`` is still there) or ``Exercise 4.1:
failed: ...`` with the input, the expected and the received value, and returns the status
(:data:`PASSED`, :data:`NOT_DONE` or :data:`FAILED`). An exception in the student's code is
reported as a failure with its message; it never stops the notebook. An exercise that
cannot run where the notebook runs (real data, a GPU) says so with :func:`skipped`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

PASSED, NOT_DONE, FAILED, SKIPPED = "passed", "not done yet", "failed", "skipped"

_SHOWN = 160  # characters of an input or value shown in a failure line


def _short(value) -> str:
    """A value as it appears in a failure line: rounded, on one line, cut short."""
    if isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, tuple):  # a trial's arguments
        text = "(" + ", ".join(_short(v) for v in value) + ")"
    elif hasattr(value, "to_dict"):  # a pandas table or series
        text = _short(value.to_dict())
    elif isinstance(value, np.ndarray | list) or hasattr(value, "numpy"):
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if array.dtype.kind in "fc":
            array = np.round(array, 4)
        text = np.array2string(array, separator=", ", threshold=12).replace("\n", "")
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _say(name: str, status: str, why: str = "") -> str:
    print(f"{name}: {status}" + (f": {why}" if why else ""))
    return status


def _is_placeholder(value) -> bool:
    return value is Ellipsis or value is None


def difference(expected, received, atol: float = 1e-6, rtol: float = 1e-5) -> str:
    """Why ``received`` is not ``expected`` ('' when it is, within ``atol`` + ``rtol``).

    Dicts must have the same keys; arrays, lists and tensors the same shape; numbers are
    compared with tolerance, anything else with ``==``.
    """
    if isinstance(expected, Mapping):
        if not isinstance(received, Mapping):
            return f"expected a dict with keys {list(expected)}, got a {type(received).__name__}"
        if set(received) != set(expected):
            return f"expected the keys {sorted(expected)}, got {sorted(received)}"
        for key in expected:
            why = difference(expected[key], received[key], atol, rtol)
            if why:
                return f"at key {key!r}: {why}"
        return ""
    if isinstance(expected, str | bool) or expected is None:
        return "" if received == expected else f"expected {expected!r}, got {received!r}"
    want = np.asarray(expected.numpy() if hasattr(expected, "numpy") else expected)
    if want.dtype.kind not in "biuf":
        return "" if received == expected else f"expected {expected!r}, got {received!r}"
    try:
        got = np.asarray(received.numpy() if hasattr(received, "numpy") else received, float)
    except (TypeError, ValueError):
        kind = "a number" if want.ndim == 0 else f"an array of shape {want.shape}"
        return f"expected {kind}, got a {type(received).__name__}"
    if got.shape != want.shape:
        kind = "a single number" if want.ndim == 0 else f"shape {want.shape}"
        return f"expected {kind}, got shape {got.shape}"
    if not np.allclose(got, want.astype(float), atol=atol, rtol=rtol, equal_nan=True):
        return "the values differ"
    return ""


def _guarded(check: Callable) -> Callable:
    """``check``, reporting any exception (an odd prediction or answer) as a failure."""

    def guarded(name: str, *args, **kwargs) -> str:
        try:
            return check(name, *args, **kwargs)
        except Exception as error:
            return _say(name, FAILED, f"could not compare: {type(error).__name__}: {error}")

    guarded.__name__, guarded.__doc__ = check.__name__, check.__doc__
    return guarded


@_guarded
def check(
    name: str,
    student_fn: Callable,
    reference_fn: Callable,
    make_inputs: Callable[[np.random.Generator], tuple],
    trials: int = 3,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int | None = None,
) -> str:
    """An *implement it* exercise: ``student_fn(*inputs)`` against ``reference_fn(*inputs)``.

    ``make_inputs(rng)`` returns the arguments (a tuple) of one trial, drawn from ``rng``
    (fresh entropy unless ``seed`` is given, so every call sees new inputs). Each function
    gets its own copy of the inputs, so neither can change what the other sees.
    """
    if _is_placeholder(student_fn):
        return _say(name, NOT_DONE)
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        inputs = make_inputs(rng)
        try:
            expected = reference_fn(*_copied(inputs))
        except Exception as error:  # the exercise's own set-up: still one line, no crash
            why = f"the reference raised {type(error).__name__}: {error}"
            return _say(name, FAILED, f"input {_short(inputs)}: {why}")
        try:
            received = student_fn(*_copied(inputs))
        except NotImplementedError:
            return _say(name, NOT_DONE)
        except Exception as error:  # the student's code: report, never raise
            why = f"raised {type(error).__name__}: {error}"
            return _say(name, FAILED, f"input {_short(inputs)}: {why}")
        if received is Ellipsis:
            return _say(name, NOT_DONE)
        why = difference(expected, received, atol, rtol)
        if why:
            shown = f"input {_short(inputs)}, expected {_short(expected)}, "
            return _say(name, FAILED, f"{why}; {shown}received {_short(received)}")
    return _say(name, PASSED)


def _copied(inputs: tuple) -> tuple:
    """A copy of each array, table or container of the inputs (a model is passed as it is)."""
    plain = (np.ndarray, list, dict, tuple, set)
    return tuple(copy.deepcopy(x) if isinstance(x, plain) or hasattr(x, "to_numpy") else x
                 for x in inputs)  # fmt: skip


@_guarded
def check_prediction(
    name: str,
    prediction,
    outcome,
    *,
    choices: Sequence | None = None,
    tolerance: float = 0.0,
    why: str = "",
) -> str:
    """A *predict, then run* exercise: the student's ``prediction`` against the run's ``outcome``.

    With ``choices``, the prediction must be one of them and equal the outcome; otherwise
    both are numbers and may differ by ``tolerance``. ``why`` explains the outcome; it is
    printed after a failure (and after a pass, to confirm the reasoning).
    """
    if _is_placeholder(prediction):
        return _say(name, NOT_DONE)
    said = f" ({why})" if why else ""
    if choices is not None:
        if prediction not in choices:
            return _say(name, FAILED, f"expected one of {list(choices)}, got {prediction!r}")
        if prediction != outcome:
            return _say(
                name, FAILED, f"you predicted {prediction!r}, the run gave {outcome!r}{said}"
            )
        return _say(name, PASSED, f"the run gave {outcome!r}{said}" if why else "")
    try:
        guess = float(prediction)
    except (TypeError, ValueError):
        return _say(name, FAILED, f"expected a number, got a {type(prediction).__name__}")
    if not math.isfinite(guess) or abs(guess - float(outcome)) > tolerance:
        miss = f"you predicted {_short(guess)}, the run gave {_short(float(outcome))}"
        return _say(name, FAILED, f"{miss} (allowed difference {tolerance:g}){said}")
    return _say(name, PASSED, f"the run gave {_short(float(outcome))}{said}" if why else "")


@_guarded
def check_value(name: str, answer, expected, atol: float = 5e-4, rtol: float = 0.0) -> str:
    """A *read the results* exercise: an ``answer`` read off a table against the ``expected``
    value the notebook computed (a number, a name, a dict, or a list of names in any order)."""
    if _is_placeholder(answer):
        return _say(name, NOT_DONE)
    if isinstance(expected, list | tuple | set) and all(isinstance(e, str) for e in expected):
        if not isinstance(answer, list | tuple | set):
            return _say(name, FAILED, f"expected a list of names, got a {type(answer).__name__}")
        answer, expected = sorted(answer), sorted(expected)
    why = difference(expected, answer, atol, rtol)
    if why:
        return _say(name, FAILED, f"{why}; expected {_short(expected)}, received {_short(answer)}")
    return _say(name, PASSED)


def skipped(name: str, reason: str) -> str:
    """An exercise that cannot run here (it needs real data or a GPU): say so in one line."""
    return _say(name, SKIPPED, reason)
