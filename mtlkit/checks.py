"""Argument checks shared by the loaders: one wording for "pass a positive whole number"."""

from __future__ import annotations

import numpy as np


def positive_int(value: object, name: str, meaning: str, *, allow_none: bool = False) -> int | None:
    """``value`` as an int if it is a positive whole number (or None where allowed).

    Anything else -- zero, a negative number, a float such as 2.5 (or 10.0), a string, a
    bool -- is a ``ValueError`` that names the argument, what was given and what to pass.
    ``meaning`` says what the number counts, e.g. "images to keep".
    """
    if value is None and allow_none:
        return None
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if whole and value > 0:
        return int(value)
    also = ", or None for all of them" if allow_none else ""
    raise ValueError(
        f"{name}={value!r}: pass a positive whole number ({meaning}){also}. Zero, negative "
        "numbers (which do not count from the end here), fractions and strings are refused."
    )
