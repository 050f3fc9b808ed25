"""Models of the suite, all with ``fit(train) -> self`` and ``predict(perturbations) -> DataFrame``.

The baselines are imported at once; models that need torch (or another environment, GEARS)
are imported on first use, so ``import helpers.models`` stays fast.
"""

from __future__ import annotations

from importlib import import_module

from .base import ModelTags, NotFittedError, PerturbationModel
from .baselines import Additive, MatchingMean, MeanBaseline, NoChange
from .external import PredictionsFile, read_predictions
from .linear import LinearModel, condition_pca_embedding

_LAZY = {
    "MLPModel": "mlp",
    "LinearAdditive": "perturbench",
    "LatentAdditive": "perturbench",
    "DecoderOnly": "perturbench",
    "GORandomForest": "knowledge",
    "EmbeddingRegressor": "embedding_regressor",
    "GEARSModel": "gears",
    "calibration_controls": "controls",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Additive",
    "MatchingMean",
    "MeanBaseline",
    "NoChange",
    "ModelTags",
    "NotFittedError",
    "PerturbationModel",
    "PredictionsFile",
    "read_predictions",
    "LinearModel",
    "condition_pca_embedding",
    *_LAZY,
]
