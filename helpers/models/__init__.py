"""Models of the suite, all with ``fit(train) -> self`` and ``predict(perturbations) -> DataFrame``."""

from .base import NotFittedError, PerturbationModel
from .baselines import Additive, MatchingMean, MeanBaseline, NoChange
from .external import PredictionsFile, read_predictions

__all__ = [
    "Additive",
    "MatchingMean",
    "MeanBaseline",
    "NoChange",
    "NotFittedError",
    "PerturbationModel",
    "PredictionsFile",
    "read_predictions",
]
