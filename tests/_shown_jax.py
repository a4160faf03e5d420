"""Notebook 06's cosine by ``jax.grad`` against the kit, on Keras's JAX backend (run with
KERAS_BACKEND=jax by ``tests/test_shown_ideas.py``): prints one JSON line."""

import json
import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).parent))
import test_shown_ideas as t  # noqa: E402  (its small model and the cell runner)

if __name__ == "__main__":
    kit, by_hand = t.notebook06_cosine("shown-jax-cosine")
    print(json.dumps({"backend": keras.backend.backend(), "kit": kit, "by_hand": by_hand}))
