"""Metrics for perturbation response prediction (every name states its reference).

Inputs are pandas DataFrames ``pred`` and ``truth`` of perturbations x genes holding mean
log-normalised expression (pseudobulk profiles), and reference profiles as Series indexed
by gene: ``control`` (the control mean) and ``perturbed_mean`` (the mean of the training
perturbations' profiles, see :func:`perturbed_mean`).
"""

from ..data.canonical import DataError
from ._inputs import align
from .reference import SystematicVariation, perturbed_mean, systematic_variation

__all__ = [
    "DataError",
    "SystematicVariation",
    "align",
    "perturbed_mean",
    "systematic_variation",
]
