"""clt_gen: conjugate-learning-theory diagnostics for trained classifiers.

The public API is listed in ``__all__`` and documented in ``docs/api.md``; names load on
first use, so ``import clt_gen`` stays fast and torch is imported only when needed.

Layers (imports flow one way): ``errors``/``_modes``/``_io`` -> ``duality``/``pac_bayes``
-> ``data``/``models``/``sources`` -> ``checkpoints``/``loading`` ->
``features``/``streaming``/``gibbs``/``training``/``trainability`` ->
``bounds``/``report``/``profiles`` -> ``evaluation`` -> ``compare``/``sweep``/``demo`` ->
``cli``. The array-level entropy
estimators live in the separate package :mod:`estimators`.

Examples
--------
>>> import clt_gen
>>> "evaluate" in clt_gen.__all__ and callable(clt_gen.evaluate)
True
"""

from __future__ import annotations

import importlib
from typing import Any

from clt_gen._version import __version__
from clt_gen.errors import CheckpointError, DataError, ValidationError

_LAZY = {
    # evaluation and its results
    "evaluate": "evaluation",
    "EvaluateConfig": "evaluation",
    "Report": "report",
    "LayerRow": "report",
    "EntropyEstimate": "report",
    "CertifiedUpper": "report",
    "InformationLoss": "report",
    "Risks": "report",
    "Floor": "report",
    "load_report": "report",
    "compare_reports": "compare",
    # models, layers, data
    "list_layers": "features",
    "default_layers": "features",
    "extract_features": "streaming",
    "LayerInfo": "features",
    "stream_pass": "streaming",
    "as_source": "sources",
    "model_from_spec": "loading",
    "data_from_spec": "loading",
    "load_weights": "loading",
    "load_dataset": "data",
    "make_splits": "data",
    "DataConfig": "data",
    "build_model": "models",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
    "train": "training",
    "TrainConfig": "training",
    "TrainingDivergedError": "training",
    # losses, bounds, diagnostics
    "REGULARIZERS": "duality",
    "Regularizer": "duality",
    "get_regularizer": "duality",
    "Bound": "bounds",
    "data_floor": "bounds",
    "deterministic_range": "bounds",
    "validation_bound": "bounds",
    "frozen_feature_bound": "bounds",
    "pac_bayes_certificate": "gibbs",
    "PacBayesCertificate": "gibbs",
    "PacBayesConfig": "gibbs",
    "kl_inverse": "pac_bayes",
    "kl_bernoulli": "pac_bayes",
    "pac_bayes_kl_bound": "pac_bayes",
    "monte_carlo_upper": "pac_bayes",
    "gaussian_kl": "pac_bayes",
    "prior_grid": "pac_bayes",
    "certificate_value": "pac_bayes",
    "trainability_summary": "trainability",
    "structure_spectrum": "trainability",
    "gradient_energy": "trainability",
    "loss_sandwich": "trainability",
    "all_measures": "measures",
    "kendall_tau": "population",
    "granulated_kendall": "population",
    "pgdl_score": "population",
    "run_sweep": "sweep",
    "load_manifest": "sweep",
}

__all__ = [
    "__version__",
    "ValidationError",
    "CheckpointError",
    "DataError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"clt_gen.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clt_gen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
