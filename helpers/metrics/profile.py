"""Per-perturbation metrics that compare each prediction with its own observed profile.

Every function takes ``pred`` and ``truth`` (perturbations x genes DataFrames of mean
log-normalised expression), checks and aligns them with :func:`helpers.metrics.align`,
computes on numpy arrays vectorised over perturbations x genes, and returns a Series
indexed by perturbation whose ``name`` is the metric's column name. Names state the
reference profile a change is taken against: ``..._vs_control`` or
``..._vs_perturbed_mean``.

Notation: :math:`\\hat{x}_p` predicted and :math:`x_p` observed profile of perturbation
:math:`p`, :math:`r` the reference profile, :math:`\\hat{\\Delta}_p = \\hat{x}_p - r`,
:math:`\\Delta_p = x_p - r`, genes :math:`g = 1..G`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ._inputs import Aligned, _as_frame, _examples, align, gene_set_mask, gene_table

logger = logging.getLogger(__name__)

#: Relative size below which a change counts as "no change" (float rounding, not signal):
#: a row whose centred values are all within ``ZERO_SPREAD * scale`` of zero, where
#: ``scale`` is the largest absolute expression value involved, has zero variance.
ZERO_SPREAD = 1e-9

#: The references a change can be taken against, as written in metric names.
REFERENCES = ("control", "perturbed_mean")


def _reference_name(reference_name: str) -> str:
    if reference_name not in REFERENCES:
        raise ValueError(f"reference_name must be one of {REFERENCES}, not {reference_name!r}")
    return reference_name


# ---------------------------------------------------------------------------------------
# reference-free errors
# ---------------------------------------------------------------------------------------


def _squared_errors(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[Aligned, np.ndarray]:
    a = align(pred, truth)
    return a, (a.P - a.T) ** 2


def l2(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Euclidean prediction error, the main metric of Ahlmann-Eltze et al.

    .. math:: L2_p = \\sqrt{\\sum_g (\\hat{x}_{pg} - x_{pg})^2}

    Reference-free (the control cancels). Lower is better, perfect 0. Depends on the
    number of genes (compare only on one gene set).

    Source: Ahlmann-Eltze, Huber & Anders, Nature Methods 2025 ("prediction error", computed
    on the 1,000 genes most expressed in control).
    """
    a, se = _squared_errors(pred, truth)
    return a.series(np.sqrt(se.sum(axis=1)), "l2")


def mse(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Mean squared error over genes: :math:`\\frac{1}{G} \\sum_g (\\hat{x}_{pg} - x_{pg})^2`.

    Reference-free. Lower is better, perfect 0. Source: GEARS / Systema ``mse_all``,
    cell-eval ``mse``, Miller et al. ``mse``.
    """
    a, se = _squared_errors(pred, truth)
    return a.series(se.mean(axis=1), "mse")


def rmse(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Root mean squared error over genes: :math:`\\sqrt{\\frac{1}{G} \\sum_g (\\hat{x}_{pg} - x_{pg})^2}`.

    Reference-free. Lower is better, perfect 0. Source: Systema ``rmse_*``,
    PerturBench ``rmse_average``.
    """
    a, se = _squared_errors(pred, truth)
    return a.series(np.sqrt(se.mean(axis=1)), "rmse")


def mae(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Mean absolute error over genes: :math:`\\frac{1}{G} \\sum_g |\\hat{x}_{pg} - x_{pg}|`.

    Reference-free. Lower is better, perfect 0. Source: cell-eval ``mae`` on
    pseudobulk means (part of the Virtual Cell Challenge score).
    """
    a = align(pred, truth)
    return a.series(np.abs(a.P - a.T).mean(axis=1), "mae")


# ---------------------------------------------------------------------------------------
# DEG weights (Miller et al.)
# ---------------------------------------------------------------------------------------


def deg_weights(t_scores: pd.DataFrame) -> pd.DataFrame:
    """Per-gene weights from differential-expression t statistics (Miller et al.).

    For each perturbation, with :math:`a_g = |t_g|`:

    .. math:: w_g = \\left(\\frac{a_g - \\min_{g'} a_{g'}}{\\max_{g'} a_{g'} - \\min_{g'} a_{g'}}\\right)^2

    so the most strongly changed gene weighs 1, the least 0, and weak changes are damped
    by the square. Genes without a statistic (NaN) weigh 0 ("0 for absent genes"). A
    perturbation whose statistics are all equal gets all-zero weights, which makes the
    weighted metrics of that perturbation NaN.

    Source: Miller et al. 2025 (bioRxiv 10.1101/2025.10.20.683304),
    ``cellsimbench/core/data_manager.py``; their t statistics come from
    ``scanpy.tl.rank_genes_groups(method='t-test_overestim_var', reference='rest')`` on the
    ground-truth cells. :func:`helpers.stats.de.de_scores` (Welch t vs
    control) is the suite's default source of t statistics.

    Parameters
    ----------
    t_scores
        Perturbations x genes DataFrame of t statistics.

    Returns
    -------
    DataFrame
        Weights in [0, 1], same shape and labels.
    """
    frame = _as_frame(t_scores, "t_scores")
    try:
        t = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"t_scores holds non-numeric values ({err}).") from None
    if np.isinf(t).any():
        rows = frame.index[np.isinf(t).any(axis=1)]
        raise DataError(
            f"t_scores has infinite values for perturbations {_examples(rows)}; set them to a large finite "
            "value or 0 (PerturBench sets ±inf to 0) before computing weights."
        )
    a = np.abs(t)
    present = ~np.isnan(a)
    lo = np.nanmin(np.where(present, a, np.inf), axis=1, keepdims=True)
    hi = np.nanmax(np.where(present, a, -np.inf), axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        w = ((a - lo) / span) ** 2
    w[~present] = 0.0
    flat = ~np.isfinite(span[:, 0]) | (span[:, 0] <= 0)
    w[flat] = 0.0
    if flat.any():
        logger.info("deg_weights: %d perturbations have constant t statistics; their weights are all 0.", flat.sum())
    return pd.DataFrame(w, index=frame.index.copy(), columns=frame.columns.copy())


def _weights(weights: pd.DataFrame, a: Aligned) -> np.ndarray:
    W = gene_table(weights, a, "weights")
    if (W < 0).any():
        raise DataError("weights must be non-negative (use deg_weights(t_scores) to make them from t statistics).")
    return W


def weighted_mse(pred: pd.DataFrame, truth: pd.DataFrame, weights: pd.DataFrame) -> pd.Series:
    """DEG-weighted mean squared error (Miller et al. ``wmse``).

    .. math:: wMSE_p = \\frac{\\sum_g w_{pg} (\\hat{x}_{pg} - x_{pg})^2}{\\sum_g w_{pg}}

    with :math:`w` from :func:`deg_weights`. Reference-free. Lower is better, perfect 0.
    NaN when all weights of a perturbation are 0.

    Source: Miller et al. 2025, ``cellsimbench/core/metrics_engine.py``.
    """
    a = align(pred, truth)
    W = _weights(weights, a)
    total = W.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (W * (a.P - a.T) ** 2).sum(axis=1) / total
    out[total <= 0] = np.nan
    return a.series(out, "weighted_mse")


# ---------------------------------------------------------------------------------------
# PearsonΔ
# ---------------------------------------------------------------------------------------


def _masked_pearson(X: np.ndarray, Y: np.ndarray, M: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of X and Y over the genes where M is True.

    NaN where either row has zero spread (all centred values within ZERO_SPREAD * scale
    of 0) or fewer than 3 genes are used.
    """
    if M is None:
        n = np.full(X.shape[0], X.shape[1], dtype=np.float64)
        Xc = X - X.mean(axis=1, keepdims=True)
        Yc = Y - Y.mean(axis=1, keepdims=True)
    else:
        Mf = M.astype(np.float64)
        n = Mf.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            Xc = (X - ((X * Mf).sum(axis=1) / n)[:, None]) * Mf
            Yc = (Y - ((Y * Mf).sum(axis=1) / n)[:, None]) * Mf
    sxy = (Xc * Yc).sum(axis=1)
    sxx = (Xc * Xc).sum(axis=1)
    syy = (Yc * Yc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    flat_x = np.abs(Xc).max(axis=1) <= ZERO_SPREAD * scale
    flat_y = np.abs(Yc).max(axis=1) <= ZERO_SPREAD * scale
    r[flat_x | flat_y | (n < 3)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _scale(a: Aligned, ref: np.ndarray) -> np.ndarray:
    """Largest absolute expression value per perturbation (for the zero-spread test)."""
    return np.maximum(np.maximum(np.abs(a.P).max(axis=1), np.abs(a.T).max(axis=1)), np.abs(ref).max()) + np.finfo(float).tiny


def pearson_delta(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    reference: pd.Series,
    reference_name: str = "control",
    gene_sets: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    gene_set_name: str = "de20",
) -> pd.Series:
    """Pearson correlation of predicted and observed change from a reference (PearsonΔ).

    .. math:: \\rho_p = \\operatorname{cor}_g(\\hat{x}_{pg} - r_g,\\; x_{pg} - r_g)

    over all genes, or over the genes of ``gene_sets[p]`` (e.g. the top-20 DE genes).
    Higher is better, perfect 1.

    Conventions:

    * NaN (never 0) when the predicted change has zero variance over the genes used, e.g.
      the no-change model against control, or the perturbation-weighted mean baseline
      against the perturbed mean; also NaN when the observed change has zero variance or
      fewer than 3 genes are used. :func:`evaluate` and :func:`summary` count these.
    * With ``reference_name="control"`` the mean baseline already scores high whenever the
      screen has strong systematic variation (Systema); ``"perturbed_mean"`` removes it.

    Sources: GEARS ``pearson_delta`` and Systema ``corr_all``/``corr_20de`` (control) and
    ``corr_all_allpert``/``corr_20de_allpert`` (perturbed mean); Ahlmann-Eltze
    et al. "Pearson delta" (A.4); Miller et al. ``pearson_deltactrl``/``pearson_deltapert`` (E.2);
    cell-eval ``pearson_delta`` (F).

    Parameters
    ----------
    reference
        Reference profile (Series indexed by gene): the control mean, or
        :func:`perturbed_mean` of the training perturbations.
    reference_name
        ``"control"`` or ``"perturbed_mean"``; goes into the metric name.
    gene_sets
        Optional genes to correlate over: dict perturbation -> genes, or one list for all.
    gene_set_name
        Label of the gene set in the metric name (default ``"de20"``).

    Returns
    -------
    Series
        Named ``pearson_delta_vs_{reference_name}`` or
        ``pearson_delta_{gene_set_name}_vs_{reference_name}``.
    """
    name = _reference_name(reference_name)
    a = align(pred, truth, {name: reference})
    ref = a.refs[name]
    M = None if gene_sets is None else gene_set_mask(gene_sets, a)
    r = _masked_pearson(a.P - ref, a.T - ref, M, _scale(a, ref))
    label = f"pearson_delta_vs_{name}" if gene_sets is None else f"pearson_delta_{gene_set_name}_vs_{name}"
    return a.series(r, label)


def _check_de20(de_genes: Mapping[str, Sequence[str]] | Sequence[str]) -> None:
    sizes = [len(v) for v in de_genes.values()] if isinstance(de_genes, Mapping) else [len(de_genes)]
    if max(sizes, default=0) > 20:
        raise DataError(
            f"the top-20 DE metrics got gene sets of up to {max(sizes)} genes; pass the top 20 "
            "(helpers.metrics.de_gene_sets(..., k=20)), or call pearson_delta(..., gene_sets=, gene_set_name=) "
            "with a name for another set."
        )


def pearson_delta_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """PearsonΔ against the control profile over all genes; see :func:`pearson_delta`."""
    return pearson_delta(pred, truth, control, "control")


def pearson_delta_vs_perturbed_mean(pred: pd.DataFrame, truth: pd.DataFrame, perturbed_mean: pd.Series) -> pd.Series:
    """PearsonΔ against the perturbed mean over all genes; see :func:`pearson_delta`."""
    return pearson_delta(pred, truth, perturbed_mean, "perturbed_mean")


def pearson_delta_de20_vs_control(
    pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series, de_genes: Mapping[str, Sequence[str]] | Sequence[str]
) -> pd.Series:
    """PearsonΔ against control over each perturbation's top-20 DE genes; see :func:`pearson_delta`.

    ``de_genes``: dict perturbation -> at most 20 genes, or one list (see
    :func:`helpers.metrics.de_gene_sets` for where they come from and the GEARS leak).
    """
    _check_de20(de_genes)
    return pearson_delta(pred, truth, control, "control", gene_sets=de_genes)


def pearson_delta_de20_vs_perturbed_mean(
    pred: pd.DataFrame, truth: pd.DataFrame, perturbed_mean: pd.Series, de_genes: Mapping[str, Sequence[str]] | Sequence[str]
) -> pd.Series:
    """PearsonΔ against the perturbed mean over the top-20 DE genes; see :func:`pearson_delta`."""
    _check_de20(de_genes)
    return pearson_delta(pred, truth, perturbed_mean, "perturbed_mean", gene_sets=de_genes)


# ---------------------------------------------------------------------------------------
# R² of the change
# ---------------------------------------------------------------------------------------


def _r2_rows(a: Aligned, ref: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    """Row-wise sklearn ``r2_score(Δtrue, Δpred, sample_weight=w)``, NaN when undefined."""
    yt = a.T - ref
    resid = a.T - a.P  # = Δtrue − Δpred: the reference cancels in the numerator
    if W is None:
        W = np.ones_like(yt)
    total = W.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_t = (W * yt).sum(axis=1) / total
        num = (W * resid**2).sum(axis=1)
        den = (W * (yt - mean_t[:, None]) ** 2).sum(axis=1)
        r2 = 1.0 - num / den
    scale = np.maximum(np.abs(a.T).max(axis=1), np.abs(ref).max()) + np.finfo(float).tiny
    flat = np.sqrt(den / np.where(total > 0, total, 1)) <= ZERO_SPREAD * scale
    r2[(total <= 0) | flat] = np.nan
    return r2


def r2_delta(
    pred: pd.DataFrame, truth: pd.DataFrame, reference: pd.Series, reference_name: str = "control", weights: pd.DataFrame | None = None
) -> pd.Series:
    """Coefficient of determination of the change from a reference, optionally DEG-weighted.

    .. math::

        R^2_p = 1 - \\frac{\\sum_g w_{pg} (\\Delta_{pg} - \\hat{\\Delta}_{pg})^2}
                          {\\sum_g w_{pg} (\\Delta_{pg} - \\bar{\\Delta}^w_p)^2},
        \\qquad \\bar{\\Delta}^w_p = \\frac{\\sum_g w_{pg} \\Delta_{pg}}{\\sum_g w_{pg}}

    which is ``sklearn.metrics.r2_score(Δtrue, Δpred, sample_weight=w)`` per perturbation
    (:math:`w = 1` unweighted). The numerator does not depend on the reference; the
    denominator does, which is why the reference matters. Higher is better, perfect 1,
    unbounded below. NaN when the observed change is constant over genes (sklearn would
    return 1 or 0 there, or nan/-inf with ``force_finite=False``) or all weights are 0.

    Sources: Miller et al. 2025 ``r2_deltactrl``, ``weighted_r2_deltactrl``, ``r2_deltapert``
    and ``weighted_r2_deltapert``; the weighted R² against the perturbed mean is their
    recommended well-calibrated metric.

    Returns
    -------
    Series
        Named ``r2_delta_vs_{reference_name}`` or ``weighted_r2_delta_vs_{reference_name}``.
    """
    name = _reference_name(reference_name)
    a = align(pred, truth, {name: reference})
    W = None if weights is None else _weights(weights, a)
    label = f"r2_delta_vs_{name}" if weights is None else f"weighted_r2_delta_vs_{name}"
    return a.series(_r2_rows(a, a.refs[name], W), label)


def r2_delta_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """Unweighted R² of the change from control; see :func:`r2_delta`."""
    return r2_delta(pred, truth, control, "control")


def r2_delta_vs_perturbed_mean(pred: pd.DataFrame, truth: pd.DataFrame, perturbed_mean: pd.Series) -> pd.Series:
    """Unweighted R² of the change from the perturbed mean; see :func:`r2_delta`."""
    return r2_delta(pred, truth, perturbed_mean, "perturbed_mean")


def weighted_r2_delta_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series, weights: pd.DataFrame) -> pd.Series:
    """DEG-weighted R² of the change from control; see :func:`r2_delta` and :func:`deg_weights`."""
    return r2_delta(pred, truth, control, "control", weights=weights)


def weighted_r2_delta_vs_perturbed_mean(
    pred: pd.DataFrame, truth: pd.DataFrame, perturbed_mean: pd.Series, weights: pd.DataFrame
) -> pd.Series:
    """DEG-weighted R² of the change from the perturbed mean (Miller et al.'s recommended metric)."""
    return r2_delta(pred, truth, perturbed_mean, "perturbed_mean", weights=weights)


# ---------------------------------------------------------------------------------------
# error as a function of the number of genes (Ahlmann-Eltze et al. Fig. 1B)
# ---------------------------------------------------------------------------------------


def published_rank_grid(n_genes: int) -> np.ndarray:
    """Gene counts at which Ahlmann-Eltze et al. report the cumulative error.

    1, 2, ..., 100, then every 10 up to 1,000, then every 100 up to ``n_genes``, and
    ``n_genes`` itself as the last point (so 19,264 genes end with 19,200 and 19,264).
    """
    if n_genes < 1:
        raise ValueError("n_genes must be at least 1")
    grid = np.concatenate([np.arange(1, 101), np.arange(110, 1001, 10), np.arange(1100, n_genes + 1, 100)])
    grid = grid[grid <= n_genes]
    if grid[-1] != n_genes:
        grid = np.append(grid, n_genes)
    return grid


def genes_by_change(truth: pd.DataFrame, control: pd.Series) -> dict[str, list[str]]:
    """Each perturbation's genes sorted by observed :math:`|x_{pg} - c_g|`, largest first ("sorted by DE").

    Ties keep the column order (stable sort). Use as ``gene_order`` of :func:`cumulative_l2`.
    """
    frame = _as_frame(truth, "truth")
    a = align(frame, frame, {"control": control})
    order = np.argsort(-np.abs(a.T - a.refs["control"]), axis=1, kind="stable")
    genes = a.genes.to_numpy()
    return {p: genes[order[i]].tolist() for i, p in enumerate(a.perturbations)}


def cumulative_l2(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    gene_order: Sequence[str] | Mapping[str, Sequence[str]],
    ranks: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Prediction error as genes are added one by one (Ahlmann-Eltze et al. Fig. 1B).

    .. math:: E_p(k) = \\sqrt{\\sum_{i=1}^{k} (\\hat{x}_{p g_i} - x_{p g_i})^2}

    with genes :math:`g_1, g_2, \\dots` in the given order (e.g. by control expression, or
    by observed change with :func:`genes_by_change`). :math:`E_p(G)` equals :func:`l2`.

    Parameters
    ----------
    gene_order
        One ordered list of genes for every perturbation, or a dict perturbation -> ordered
        list. Every list must be a permutation of the same number of evaluated genes (a
        subset is allowed, e.g. the top-1,000 expressed genes).
    ranks
        Gene counts :math:`k` to report (1-based); default all. :func:`published_rank_grid`
        gives the published grid.

    Returns
    -------
    DataFrame
        Perturbations x ``ranks``, columns named ``n_genes``. Average over perturbations
        (``.mean()``) for the published curve.
    """
    a = align(pred, truth)
    col = pd.Series(np.arange(len(a.genes)), index=a.genes)

    def positions(genes: Iterable[str], who: str) -> np.ndarray:
        genes = list(genes)
        unknown = [g for g in genes if g not in col.index]
        if unknown:
            raise DataError(f"gene_order{who} names {len(unknown)} genes that are not evaluated ({_examples(unknown)}).")
        if len(set(genes)) != len(genes):
            raise DataError(f"gene_order{who} lists some genes twice; give each gene once.")
        return col.reindex(genes).to_numpy(dtype=np.int64)

    if isinstance(gene_order, Mapping):
        missing = [p for p in a.perturbations if p not in gene_order]
        if missing:
            raise DataError(f"gene_order has no entry for {len(missing)} perturbations ({_examples(missing)}).")
        idx = [positions(gene_order[p], f"[{p!r}]") for p in a.perturbations]
        if len({len(i) for i in idx}) != 1:
            raise DataError("the per-perturbation gene orders have different lengths; give every perturbation the same number of genes.")
        idx = np.vstack(idx)
    else:
        idx = np.broadcast_to(positions(gene_order, ""), (len(a.perturbations), len(gene_order)))
    se = np.take_along_axis((a.P - a.T) ** 2, idx, axis=1)
    n = idx.shape[1]
    ranks = np.arange(1, n + 1) if ranks is None else np.asarray(ranks, dtype=np.int64)
    if ranks.size == 0 or ranks.min() < 1 or ranks.max() > n:
        raise DataError(f"ranks must lie in 1..{n} (the number of ordered genes).")
    curve = np.sqrt(np.cumsum(se, axis=1)[:, ranks - 1])
    return pd.DataFrame(curve, index=a.perturbations.copy(), columns=pd.Index(ranks, name="n_genes"))
