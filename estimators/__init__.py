"""estimators: generalized conditional entropy estimators on arrays.

NumPy arrays in, :class:`Estimate` results out. The package knows nothing about networks,
checkpoints or bounds; torch is used only as a fast (and GPU) path for neighbour search.

Examples
--------
>>> import numpy as np
>>> from estimators import conditional_entropy
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 2000)
>>> z = rng.normal(size=(2000, 2)) + 3.0 * y[:, None]   # well separated classes
>>> est = conditional_entropy(z, y, random_state=0)   # method="auto"
>>> est.value < 0.1 and est.ci[0] <= est.value <= est.ci[1]
True
>>> ub = conditional_entropy_upper_bound(z, y, delta=0.05, random_state=0)
>>> ub.value >= ub.heldout_mean   # a certificate: holds w.p. >= 0.95 for any distribution
True
"""

from estimators.certified import UpperBound, conditional_entropy_upper_bound, dpi_profile
from estimators.concentration import upper_confidence_bound
from estimators.core import (
    DEFAULT_METHOD,
    Estimate,
    conditional_entropy,
    entropy,
    information_loss,
    mutual_information,
    paired_difference,
)
from estimators.entropies import OMEGAS, generalized_entropy, max_entropy, scoring_rule
from estimators.errors import ValidationError
from estimators.heads import DEFAULT_HEADS, HEADS
from estimators.methods import ASSUMPTIONS, METHODS
from estimators.neighbors import knn_search

__all__ = [
    "ASSUMPTIONS",
    "DEFAULT_HEADS",
    "DEFAULT_METHOD",
    "HEADS",
    "UpperBound",
    "conditional_entropy_upper_bound",
    "dpi_profile",
    "upper_confidence_bound",
    "Estimate",
    "METHODS",
    "OMEGAS",
    "ValidationError",
    "conditional_entropy",
    "entropy",
    "generalized_entropy",
    "information_loss",
    "knn_search",
    "max_entropy",
    "mutual_information",
    "paired_difference",
    "scoring_rule",
]
