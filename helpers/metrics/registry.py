"""The registry of metrics and :func:`evaluate`, which computes them all in one call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError
from . import perturbench, profile, ranking
from ._inputs import align

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and how to read it.

    ``reference`` is the profile changes are taken against (``"control"``,
    ``"perturbed_mean"``) or ``None`` for reference-free metrics; ``needs`` lists the
    inputs of :func:`evaluate` beyond ``pred`` and ``truth``; ``chance`` is the expected
    value of an uninformative (e.g. mode-collapsed) prediction where one exists.
    """

    name: str
    description: str
    reference: str | None
    higher_is_better: bool
    perfect: float
    needs: tuple[str, ...]
    source: str
    function: Callable
    chance: float | None = None


def _m(
    name: str,
    description: str,
    reference: str | None,
    higher: bool,
    perfect: float,
    needs: Iterable[str],
    source: str,
    function: Callable[..., pd.Series],
    chance: float | None = None,
) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, description, reference, higher, perfect, tuple(needs), source, function, chance)


#: Every metric of the suite by column name, in the default order of :func:`evaluate`.
METRICS: dict[str, MetricInfo] = dict(
    [
        _m(
            "l2",
            "Euclidean distance between predicted and observed profile, sqrt of the summed squared error over genes",
            None,
            False,
            0.0,
            (),
            "Ahlmann-Eltze et al. 2025 (main metric)",
            profile.l2,
        ),
        _m("mse", "mean squared error over genes", None, False, 0.0, (), "GEARS; Systema mse_all; cell-eval", profile.mse),
        _m("rmse", "root mean squared error over genes", None, False, 0.0, (), "Systema; PerturBench rmse_average", profile.rmse),
        _m("mae", "mean absolute error over genes", None, False, 0.0, (), "cell-eval mae (Virtual Cell Challenge)", profile.mae),
        _m(
            "pearson_delta_vs_control",
            "Pearson correlation of predicted and observed change from the control mean, all genes",
            "control",
            True,
            1.0,
            ("control",),
            "GEARS pearson_delta; Systema corr_all; Ahlmann-Eltze et al.",
            profile.pearson_delta_vs_control,
        ),
        _m(
            "pearson_delta_vs_perturbed_mean",
            "Pearson correlation of predicted and observed change from the mean of the training perturbations, all genes",
            "perturbed_mean",
            True,
            1.0,
            ("perturbed_mean",),
            "Systema corr_all_allpert; Miller et al. pearson_deltapert",
            profile.pearson_delta_vs_perturbed_mean,
        ),
        _m(
            "pearson_delta_de20_vs_control",
            "PearsonΔ from the control mean over the top-20 DE genes",
            "control",
            True,
            1.0,
            ("control", "de_genes"),
            "GEARS pearson_delta_de; Systema corr_20de",
            profile.pearson_delta_de20_vs_control,
        ),
        _m(
            "pearson_delta_de20_vs_perturbed_mean",
            "PearsonΔ from the perturbed mean over the top-20 DE genes",
            "perturbed_mean",
            True,
            1.0,
            ("perturbed_mean", "de_genes"),
            "Systema corr_20de_allpert",
            profile.pearson_delta_de20_vs_perturbed_mean,
        ),
        _m(
            "r2_delta_vs_control",
            "R² (sklearn r2_score) of the observed change from control explained by the predicted one",
            "control",
            True,
            1.0,
            ("control",),
            "Miller et al. r2_deltactrl",
            profile.r2_delta_vs_control,
        ),
        _m(
            "r2_delta_vs_perturbed_mean",
            "R² of the observed change from the perturbed mean explained by the predicted one",
            "perturbed_mean",
            True,
            1.0,
            ("perturbed_mean",),
            "Miller et al. r2_deltapert",
            profile.r2_delta_vs_perturbed_mean,
        ),
        _m(
            "weighted_mse",
            "mean squared error with genes weighted by their squared, min-max scaled |t| (DEG weights)",
            None,
            False,
            0.0,
            ("deg_weights",),
            "Miller et al. wmse",
            profile.weighted_mse,
        ),
        _m(
            "weighted_r2_delta_vs_control",
            "DEG-weighted R² of the change from control",
            "control",
            True,
            1.0,
            ("control", "deg_weights"),
            "Miller et al. weighted_r2_deltactrl",
            profile.weighted_r2_delta_vs_control,
        ),
        _m(
            "weighted_r2_delta_vs_perturbed_mean",
            "DEG-weighted R² of the change from the perturbed mean (recommended by Miller et al.)",
            "perturbed_mean",
            True,
            1.0,
            ("perturbed_mean", "deg_weights"),
            "Miller et al. weighted_r2_deltapert",
            profile.weighted_r2_delta_vs_perturbed_mean,
        ),
        _m(
            "centroid_accuracy",
            "fraction of other observed profiles farther from the prediction than its own (ties count 1/2)",
            None,
            True,
            1.0,
            (),
            "Systema centroid accuracy; Miller et al. nir",
            ranking.centroid_accuracy,
            0.5,
        ),
        _m(
            "rank_rmse",
            "rank of the matching prediction among all predictions by RMSE to the observed profile, /(N−1)",
            None,
            False,
            0.0,
            (),
            "PerturBench rmse_rank_average",
            ranking.rank_rmse,
            0.5,
        ),
        _m(
            "rank_cosine_delta_vs_control",
            "rank of the matching prediction among all predictions by cosine similarity of changes from control, /(N−1)",
            "control",
            False,
            0.0,
            ("control",),
            "PerturBench cosine_rank_logfc (on Δ)",
            ranking.rank_cosine_delta_vs_control,
            0.5,
        ),
        _m(
            "discrimination_score_l1_vs_control",
            "1 − rank/N of the observed change closest (L1, target genes excluded) to the predicted change",
            "control",
            True,
            1.0,
            ("control",),
            "cell-eval discrimination_score_l1 (PDS)",
            ranking.discrimination_score_l1_vs_control,
            # no fixed chance level: above 0.5 when the target genes are measured (they are excluded);
            # compute it on the data with helpers.metrics.ranking.discrimination_chance
            None,
        ),
    ]
)

# PerturBench's log-fold-change metrics (Wu et al.), appended after the suite's own
METRICS.update(
    [
        _m(
            "cosine_logfc_vs_control",
            "cosine similarity of predicted and observed log2(x + 0.1) − log2(control + 0.1) fold changes",
            "control",
            True,
            1.0,
            ("control",),
            "PerturBench cosine_logfc",
            perturbench.cosine_logfc_vs_control,
        ),
        _m(
            "rank_cosine_logfc_vs_control",
            "rank of the matching prediction among all predictions by cosine similarity of log2 fold changes, /(N−1)",
            "control",
            False,
            0.0,
            ("control",),
            "PerturBench cosine_rank_logfc",
            perturbench.rank_cosine_logfc_vs_control,
            0.5,
        ),
    ]
)


def _cell_metrics() -> dict[str, MetricInfo]:
    from functools import partial

    from . import de

    def overlap(k: int | None) -> Callable[..., pd.Series]:
        return partial(de.de_overlap, k=k)

    entries = [
        _m(
            "energy_distance_pca",
            "energy distance between predicted and observed cells in the first principal components of the observed cells",
            None,
            False,
            0.0,
            ("cells",),
            "PerturBench (energy distance in PC space); cell-eval edistance",
            de.energy_distances,
        ),
        _m(
            "de_overlap_at_n_vs_control",
            "share of the N real DE genes (FDR < 0.05, ranked by |log2 FC|) among the top N predicted DE genes; N = real count",
            "control",
            True,
            1.0,
            ("de",),
            "cell-eval overlap_at_N (Virtual Cell Challenge)",
            overlap(None),
        ),
    ]
    for k in (50, 100, 200):
        entries.append(
            _m(
                f"de_overlap_at_{k}_vs_control",
                f"as de_overlap_at_n with N = min({k}, number of real DE genes)",
                "control",
                True,
                1.0,
                ("de",),
                f"cell-eval overlap_at_{k}",
                overlap(k),
            )
        )
    entries += [
        _m(
            "de_precision_at_n_vs_control",
            "share of the N predicted DE genes among the top N real DE genes; N = predicted count",
            "control",
            True,
            1.0,
            ("de",),
            "cell-eval precision_at_N",
            partial(de.de_precision, k=None),
        ),
        _m(
            "de_direction_match_vs_control",
            "share of the real DE genes whose predicted log2 fold change has the same sign",
            "control",
            True,
            1.0,
            ("de",),
            "cell-eval de_direction_match",
            de.de_direction_match,
        ),
        _m(
            "de_spearman_lfc_vs_control",
            "Spearman correlation of real and predicted log2 fold changes over the real DE genes",
            "control",
            True,
            1.0,
            ("de",),
            "cell-eval de_spearman_lfc_sig",
            de.de_spearman_lfc,
        ),
        _m(
            "de_recall_vs_control",
            "share of the real DE genes that are DE in the prediction",
            "control",
            True,
            1.0,
            ("de",),
            "cell-eval de_sig_genes_recall",
            de.de_recall,
        ),
    ]
    return dict(entries)


#: Cell-level metrics (:mod:`helpers.metrics.de`): they need predicted cells, not profiles, and are computed
#: by ``python -m helpers evaluate``. ``needs``: ``("cells",)`` (predicted and observed cells and a PC space)
#: or ``("de",)`` (a real and a predicted :class:`helpers.metrics.de.DEResult`; the predicted DE's reference,
#: predicted or real control cells, is a label of the results).
CELL_METRICS: dict[str, MetricInfo] = _cell_metrics()


def metrics_table() -> pd.DataFrame:
    """The registry as a table (for the book's metrics chapter)."""
    rows = [
        {
            "metric": m.name,
            "description": m.description,
            "reference": m.reference or "none",
            "higher_is_better": m.higher_is_better,
            "perfect": m.perfect,
            "chance": m.chance,
            "needs": ", ".join(m.needs) or "-",
            "source": m.source,
        }
        for m in METRICS.values()
    ]
    return pd.DataFrame(rows).set_index("metric")


def evaluate(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    control: pd.Series | None,
    perturbed_mean: pd.Series | None = None,
    de_genes: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    deg_weights: pd.DataFrame | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Compute every requested metric for every perturbation.

    Default metrics: all of :data:`METRICS`, in its order — ``l2, mse, rmse, mae,
    pearson_delta_vs_control, pearson_delta_vs_perturbed_mean,
    pearson_delta_de20_vs_control, pearson_delta_de20_vs_perturbed_mean,
    r2_delta_vs_control, r2_delta_vs_perturbed_mean, weighted_mse,
    weighted_r2_delta_vs_control, weighted_r2_delta_vs_perturbed_mean, centroid_accuracy,
    rank_rmse, rank_cosine_delta_vs_control, discrimination_score_l1_vs_control,
    cosine_logfc_vs_control, rank_cosine_logfc_vs_control``. With the default list, a metric whose input is missing (e.g. no ``perturbed_mean``) is skipped:
    the reason is logged (logger ``helpers.metrics.registry``, level INFO) and kept in
    ``result.attrs["skipped"]``. A metric asked for by name in ``metrics`` whose input is
    missing raises :class:`DataError`.

    Undefined values (e.g. PearsonΔ of a prediction without change) are NaN, never 0;
    their counts per metric are logged and kept in ``result.attrs["undefined"]``, and
    :func:`summary` reports them.

    Parameters
    ----------
    pred, truth
        Perturbations x genes DataFrames (mean log-normalised expression); same
        perturbations and genes, any order.
    control
        Control mean profile (Series indexed by gene).
    perturbed_mean
        Mean of the training perturbations' profiles (:func:`perturbed_mean`).
    de_genes
        Top-20 DE genes: dict perturbation -> genes or one shared list
        (:func:`de_gene_sets`).
    deg_weights
        Perturbations x genes DEG weights (:func:`deg_weights` of t statistics).
    metrics
        Metric names (keys of :data:`METRICS`); default all.

    Returns
    -------
    DataFrame
        Index ``perturbation`` (the order of ``truth``), one column per metric; ready for
        ``helpers.results.tidy(result, dataset=..., seed=..., model=...)``.
    """
    explicit = metrics is not None
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise DataError(f"unknown metrics {unknown}; known: {list(METRICS)}")
    inputs = {"control": control, "perturbed_mean": perturbed_mean, "de_genes": de_genes, "deg_weights": deg_weights}
    # Check and align once; each metric then gets tables in the same order (cheap re-check).
    a = align(pred, truth, {k: v for k, v in inputs.items() if k in ("control", "perturbed_mean")})
    pred_al = pd.DataFrame(a.P, index=a.perturbations, columns=a.genes)
    truth_al = pd.DataFrame(a.T, index=a.perturbations, columns=a.genes)
    columns, skipped = {}, {}
    for name in names:
        info = METRICS[name]
        missing = [k for k in info.needs if inputs[k] is None]
        if missing:
            reason = f"needs {' and '.join(missing)}, which was not given"
            if explicit:
                raise DataError(f"metric {name!r} {reason}; pass {', '.join(f'{k}=...' for k in missing)} to evaluate().")
            skipped[name] = reason
            logger.info("evaluate: skipped %s (%s).", name, reason)
            continue
        columns[name] = info.function(pred_al, truth_al, *[inputs[k] for k in info.needs])
    if not columns:
        raise DataError(f"no metric could be computed: {skipped}")
    result = pd.DataFrame(columns)
    result.index = result.index.rename("perturbation")
    undefined = {m: int(n) for m, n in result.isna().sum().items() if n}
    for m, n in undefined.items():
        logger.info("evaluate: %s is undefined (NaN) for %d of %d perturbations.", m, n, len(result))
    result.attrs["skipped"] = skipped
    result.attrs["undefined"] = undefined
    return result


def summary(result: pd.DataFrame) -> pd.DataFrame:
    """Per-metric summary of an :func:`evaluate` table, counting undefined values.

    Columns: ``mean`` and ``median`` over the defined values, ``n`` (defined),
    ``n_undefined`` (NaN, e.g. PearsonΔ of a no-change prediction), and from the registry
    ``reference``, ``higher_is_better``, ``perfect``, ``chance``.
    """
    values = result.astype(np.float64)
    out = pd.DataFrame(
        {
            "mean": values.mean(),
            "median": values.median(),
            "n": values.notna().sum(),
            "n_undefined": values.isna().sum(),
        }
    )
    out["reference"] = [METRICS[m].reference or "none" if m in METRICS else None for m in out.index]
    out["higher_is_better"] = [METRICS[m].higher_is_better if m in METRICS else None for m in out.index]
    out["perfect"] = [METRICS[m].perfect if m in METRICS else np.nan for m in out.index]
    out["chance"] = [METRICS[m].chance if m in METRICS else None for m in out.index]
    out.index.name = "metric"
    return out
