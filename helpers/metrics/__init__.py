"""Metrics for perturbation response prediction; every name states its reference.

Inputs are pandas DataFrames ``pred`` and ``truth`` of perturbations x genes holding mean
log-normalised expression (pseudobulk profiles, as returned by ``model.predict()`` and
:func:`helpers.data.profiles`), and reference profiles as Series indexed by gene:
``control`` (the control mean) and ``perturbed_mean`` (the mean of the *training*
perturbations' profiles, :func:`perturbed_mean`). Every function checks and aligns its
inputs with :func:`align` (same perturbations and genes, any order; no NaN) and returns
a Series indexed by perturbation named after the metric, e.g.
``pearson_delta_vs_perturbed_mean``.

Typical use in a notebook::

    from helpers.metrics import evaluate, perturbed_mean, summary
    from helpers.results import tidy

    per_pert = evaluate(pred, truth, control, perturbed_mean=perturbed_mean(train_profiles))
    rows = tidy(per_pert, dataset="norman2019_subset", seed=1, model="additive")

Modules: :mod:`.profile` (errors, PearsonΔ, R², DEG weights, cumulative error),
:mod:`.ranking` (centroid accuracy, PerturBench rank, cell-eval PDS), :mod:`.reference`
(perturbed mean, systematic variation), :mod:`.calibration` (dynamic range fraction),
:mod:`.genes` (top-20 DE gene sets), :mod:`.registry` (``METRICS``, ``evaluate``).
"""

from ..errors import DataError
from ._inputs import align
from .calibration import DynamicRange, dynamic_range_fraction
from .genes import DE_SOURCES, de_gene_sets
from .profile import (
    cumulative_l2,
    deg_weights,
    genes_by_change,
    l2,
    mae,
    mse,
    pearson_delta,
    pearson_delta_de20_vs_control,
    pearson_delta_de20_vs_perturbed_mean,
    pearson_delta_vs_control,
    pearson_delta_vs_perturbed_mean,
    published_rank_grid,
    r2_delta,
    r2_delta_vs_control,
    r2_delta_vs_perturbed_mean,
    rmse,
    weighted_mse,
    weighted_r2_delta_vs_control,
    weighted_r2_delta_vs_perturbed_mean,
)
from .ranking import (
    centroid_accuracy,
    discrimination_chance,
    discrimination_score,
    discrimination_score_l1_vs_control,
    rank_cosine_delta_vs_control,
    rank_metric,
    rank_rmse,
)
from .reference import References, SystematicVariation, perturbed_mean, systematic_variation, training_references
from .registry import METRICS, MetricInfo, evaluate, metrics_table, summary

__all__ = [
    "DE_SOURCES",
    "METRICS",
    "DataError",
    "DynamicRange",
    "MetricInfo",
    "References",
    "SystematicVariation",
    "align",
    "centroid_accuracy",
    "cumulative_l2",
    "de_gene_sets",
    "deg_weights",
    "discrimination_chance",
    "discrimination_score",
    "discrimination_score_l1_vs_control",
    "dynamic_range_fraction",
    "evaluate",
    "genes_by_change",
    "l2",
    "mae",
    "metrics_table",
    "mse",
    "pearson_delta",
    "pearson_delta_de20_vs_control",
    "pearson_delta_de20_vs_perturbed_mean",
    "pearson_delta_vs_control",
    "pearson_delta_vs_perturbed_mean",
    "perturbed_mean",
    "training_references",
    "published_rank_grid",
    "r2_delta",
    "r2_delta_vs_control",
    "r2_delta_vs_perturbed_mean",
    "rank_cosine_delta_vs_control",
    "rank_metric",
    "rank_rmse",
    "rmse",
    "summary",
    "systematic_variation",
    "weighted_mse",
    "weighted_r2_delta_vs_control",
    "weighted_r2_delta_vs_perturbed_mean",
]
