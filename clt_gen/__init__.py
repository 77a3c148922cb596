"""clt_gen: conjugate-learning-theory diagnostics for trained classifiers.

Layers (imports flow one way): ``duality`` -> ``data``/``models`` -> ``checkpoints`` ->
``features``/``trainability`` -> ``bounds`` -> ``evaluate`` -> ``report``/``cli``.
The array-level entropy estimators live in the separate package :mod:`estimators`.
"""

from clt_gen._version import __version__
from clt_gen.duality import REGULARIZERS, Regularizer, get_regularizer
from clt_gen.errors import CheckpointError, DataError, ValidationError

__all__ = [
    "__version__",
    "REGULARIZERS",
    "Regularizer",
    "get_regularizer",
    "ValidationError",
    "CheckpointError",
    "DataError",
]
