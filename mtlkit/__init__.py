"""mtlkit: a Keras 3 teaching kit for multi-task learning."""

__version__ = "0.1.0"
