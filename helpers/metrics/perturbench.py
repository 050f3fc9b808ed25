"""PerturBench's metrics (Wu et al., arXiv 2408.10609): log fold changes, DE recall, distances between cells.

Pseudobulk metrics (in :data:`helpers.metrics.METRICS`, computed by :func:`helpers.metrics.evaluate`):

* :func:`cosine_logfc_vs_control` — cosine similarity of predicted and observed log2 fold
  changes with PerturBench's pseudocount,
  :math:`\\mathrm{lfc}(x) = \\log_2(x + 0.1) - \\log_2(\\bar{x}_{ctrl} + 0.1)`, computed on mean
  log-normalised expression (no ``expm1``), both against the same observed control profile;
  PerturBench's ``cosine_logfc``;
* :func:`rank_cosine_logfc_vs_control` — its rank version (``cosine_rank_logfc``).

RMSE on the average and its rank are the suite's ``rmse`` and ``rank_rmse``
(PerturBench's ``rmse_average`` and ``rmse_rank_average``).

Cell-level metrics (they need cells, so they are functions, not registry entries):

* :func:`de_t_scores` — t statistics of cells against control cells with scanpy's
  ``t-test_overestim_var`` (:func:`helpers.stats.de.welch_t_test`), infinite values set to 0;
* :func:`top_k_recall` — :math:`|\\mathrm{top}_k(|t_{obs}|) \\cap \\mathrm{top}_k(|t_{pred}|)| / k`
  (PerturBench's ``top_k_recall`` on the ``scores`` aggregation, k = 50);
* :func:`energy_distance_matrix` — the energy distance
  (:func:`helpers.metrics.distribution.energy_distance`) between every predicted and every
  observed cloud of cells, in a PCA space of the observed cells; its diagonal is the metric and
  :func:`rank_of_matches` its rank version. PerturBench's ``mmd_pca`` (``geomloss`` energy) is
  half of it;
* :func:`cell_metrics` — all of them for one cell line's conditions.

Every rank here is PerturBench's: for each observed condition :math:`p`, the position of its own
prediction among all predictions sorted by closeness to :math:`p`, divided by :math:`N - 1`
(0 perfect, about 0.5 random or mode-collapsed; ties count half, see :mod:`.ranking`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import DataError
from ._inputs import align
from .distribution import PCASpace, _mean_pairwise, _points
from .ranking import TIE_RTOL, _closer_and_tied, _need_two

if TYPE_CHECKING:
    import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: PerturBench's pseudocount of the log fold change.
PSEUDOCOUNT = 0.1


def log_fold_change(profiles: np.ndarray, control: np.ndarray, pseudocount: float = PSEUDOCOUNT) -> np.ndarray:
    """:math:`\\log_2(\\max(x, 0) + c) - \\log_2(\\bar{x}_{ctrl} + c)` of mean log-normalised profiles (rows) against ``control``.

    Expression cannot be negative, but a model without an output non-linearity (PerturBench's
    decoder-only) can predict slightly negative means; they are clipped at 0 (and counted in the
    log, level INFO) instead of making the logarithm undefined. A negative control is refused.
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if (control < 0).any():
        raise DataError("the control profile has negative values; log fold changes need log-normalised expression.")
    negative = int((profiles < 0).sum())
    if negative:
        logger.info("log_fold_change: %d negative predicted values clipped at 0.", negative)
    return np.log2(np.clip(profiles, 0.0, None) + pseudocount) - np.log2(control + pseudocount)[None, :]


def _cosine_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (A * B).sum(axis=1) / (na * nb)
    out[(na == 0) | (nb == 0)] = np.nan
    return out


def cosine_logfc_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """Cosine similarity of predicted and observed log2 fold changes against the control (PerturBench ``cosine_logfc``).

    .. math:: \\cos\\big(\\mathrm{lfc}(\\hat{x}_p), \\mathrm{lfc}(x_p)\\big), \\qquad
              \\mathrm{lfc}(x) = \\log_2(x + 0.1) - \\log_2(\\bar{x}_{ctrl} + 0.1)

    on mean log-normalised expression. 1 = same direction; undefined (NaN) when either fold
    change is zero (e.g. a prediction equal to the control). Higher is better.
    """
    a = align(pred, truth, {"control": control})
    c = a.refs["control"]
    return a.series(_cosine_rows(log_fold_change(a.P, c), log_fold_change(a.T, c)), "cosine_logfc_vs_control")


def rank_cosine_logfc_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """PerturBench's ``cosine_rank_logfc``: rank of the matching prediction by cosine of log2 fold changes, /(N−1).

    For each observed condition :math:`p`, the predictions :math:`\\hat{x}_q` are sorted by
    :math:`\\cos(\\mathrm{lfc}(\\hat{x}_q), \\mathrm{lfc}(x_p))` (highest first) and the rank is
    the number ranked above :math:`\\hat{x}_p` (ties count half) over :math:`N - 1`. A
    prediction with a zero fold change has similarity 0 with everything; an observed zero fold
    change gives NaN. 0 is perfect, 0.5 is chance (mode collapse gives exactly 0.5).
    """
    a = align(pred, truth, {"control": control})
    n = len(a.perturbations)
    out = np.full(n, np.nan)
    if not _need_two(n, "rank_cosine_logfc_vs_control"):
        return a.series(out, "rank_cosine_logfc_vs_control")
    c = a.refs["control"]
    LP, LT = log_fold_change(a.P, c), log_fold_change(a.T, c)
    norm_p, norm_t = np.linalg.norm(LP, axis=1), np.linalg.norm(LT, axis=1)
    inv_p = np.divide(1.0, norm_p, out=np.zeros_like(norm_p), where=norm_p > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (LT @ LP.T) * inv_p[None, :] / norm_t[:, None]  # observed p (rows) x predicted q (columns)
    closer, tied = _closer_and_tied(sim, np.arange(n), np.full(n, TIE_RTOL), lower_is_closer=False)
    out = (closer + 0.5 * tied) / (n - 1)
    out[norm_t == 0] = np.nan
    return a.series(out, "rank_cosine_logfc_vs_control")


# ----------------------------------------------------------------------------------------
# cell-level metrics
# ----------------------------------------------------------------------------------------


def de_t_scores(cells: np.ndarray | sp.spmatrix, control_cells: np.ndarray | sp.spmatrix) -> np.ndarray:
    """t statistic of every gene, ``cells`` against ``control_cells``, with scanpy's ``t-test_overestim_var``.

    .. math:: t_g = \\frac{\\bar{x}_g - \\bar{c}_g}{\\sqrt{s^2_{x,g}/n + s^2_{c,g}/n}}

    (:func:`helpers.stats.de.welch_t_test` with ``overestimate_variance=True``: the control's
    standard error as if it had as many cells as the group, :math:`n`). A gene constant in both
    groups at different values (:math:`\\pm\\infty`) gets 0, as in PerturBench's ``scores``.
    """
    import anndata as ad

    from ..stats.de import welch_t_test

    x, c = _points(cells, "the cells"), _points(control_cells, "the control cells")
    if x.shape[1] != c.shape[1]:
        raise DataError(f"the cells have {x.shape[1]} genes, the control cells {c.shape[1]}.")
    obs = pd.DataFrame({"perturbation": ["group"] * x.shape[0] + ["control"] * c.shape[0]})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(np.vstack([x, c]), obs=obs)
    t = welch_t_test(adata, reference="control", overestimate_variance=True).t.to_numpy()[0]
    return np.where(np.isfinite(t), t, 0.0)


def top_k_recall(observed_scores: np.ndarray, predicted_scores: np.ndarray, k: int = 50) -> float:
    """Share of the ``k`` genes with the largest observed :math:`|t|` that are among the ``k`` largest predicted :math:`|t|`.

    PerturBench's ``top_k_recall(x=ref, y=pred, k)``. Ties at the cut are broken by gene order
    (a stable sort), so the result is deterministic. 1 is perfect; a random gene ranking gives
    about ``k / G``.
    """
    o, p = np.abs(np.asarray(observed_scores, dtype=np.float64)), np.abs(np.asarray(predicted_scores, dtype=np.float64))
    if o.shape != p.shape or o.ndim != 1:
        raise DataError(f"the two score vectors must be 1-d and of the same length, got {o.shape} and {p.shape}.")
    k = int(k)
    if not 1 <= k <= o.size:
        raise DataError(f"k must be between 1 and the number of genes ({o.size}), got {k}.")
    top_o = np.argsort(-o, kind="stable")[:k]
    top_p = np.argsort(-p, kind="stable")[:k]
    return len(set(top_o.tolist()) & set(top_p.tolist())) / k


def energy_distance_matrix(predicted: Sequence[np.ndarray], observed: Sequence[np.ndarray]) -> np.ndarray:
    """Energy distances ``M[q, p] = E(predicted_q, observed_p)`` between every pair of clouds (cells x dimensions).

    :math:`E(X, Y) = 2\\overline{\\lVert x - y\\rVert} - \\overline{\\lVert x - x'\\rVert} -
    \\overline{\\lVert y - y'\\rVert}` (V-statistic, :func:`helpers.metrics.distribution.energy_distance`);
    the within-cloud terms are computed once per cloud.
    """
    P = [_points(x, "a predicted cloud") for x in predicted]
    Q = [_points(y, "an observed cloud") for y in observed]
    dims = {x.shape[1] for x in P + Q}
    if len(dims) > 1:
        raise DataError(f"the clouds have different dimensions: {sorted(dims)}.")
    self_p = [_mean_pairwise(x, x) for x in P]
    self_o = [_mean_pairwise(y, y) for y in Q]
    M = np.empty((len(P), len(Q)))
    for i, x in enumerate(P):
        for j, y in enumerate(Q):
            M[i, j] = max(2.0 * _mean_pairwise(x, y) - self_p[i] - self_o[j], 0.0)
    return M


def rank_of_matches(matrix: np.ndarray, lower_is_closer: bool = True) -> np.ndarray:
    """PerturBench's rank from a square table ``M[q, p]`` = metric(prediction q, observation p).

    For each observation :math:`p` (column): the number of other predictions closer to it than
    its own prediction :math:`q = p`, ties counting half, over :math:`N - 1`. 0 perfect, 0.5
    for identical predictions.
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise DataError(f"the rank needs a square predictions x observations table, got shape {M.shape}.")
    n = M.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    score = M.T  # anchors (observations) x candidates (predictions)
    scale = np.abs(score).max(axis=1)
    closer, tied = _closer_and_tied(score, np.arange(n), TIE_RTOL * np.maximum(scale, 1e-300), lower_is_closer=lower_is_closer)
    return (closer + 0.5 * tied) / (n - 1)


#: Names of the cell-level metrics of :func:`cell_metrics` (``{k}`` and ``{n_pcs}`` filled in).
CELL_METRICS = ("top{k}_recall_de_vs_control", "energy_distance_pca{n_pcs}", "rank_energy_distance_pca{n_pcs}")


def cell_metrics(
    predicted: Mapping[str, np.ndarray],
    observed: Mapping[str, np.ndarray | sp.spmatrix],
    control_cells: np.ndarray | sp.spmatrix,
    space: PCASpace,
    k: int = 50,
) -> pd.DataFrame:
    """Top-k DE recall, energy distance in a PCA space and its rank, for the conditions of one cell line.

    Parameters
    ----------
    predicted, observed
        Condition -> cells x genes (same conditions; the ranks compare them with each other, so
        pass the conditions of one line together).
    control_cells
        The line's observed control cells: the reference of both t-tests.
    space
        The PCA space of the observed cells (:class:`helpers.metrics.distribution.PCASpace`),
        e.g. fitted on every evaluated cell.
    k
        Genes of the top-k recall.

    Returns
    -------
    DataFrame
        Index = conditions (in the order of ``observed``), columns
        ``top{k}_recall_de_vs_control``, ``energy_distance_pca{n}``, ``rank_energy_distance_pca{n}``
        with ``n`` = the space's dimension.
    """
    names = list(observed)
    if sorted(names) != sorted(predicted):
        missing = sorted(set(names) ^ set(predicted))
        raise DataError(f"predicted and observed cells must cover the same conditions; differ in {missing[:5]}.")
    n_pcs = space.components.shape[0]
    ctrl = _points(control_cells, "the control cells")
    recall, pred_pcs, obs_pcs = [], [], []
    for name in names:
        obs = _points(observed[name], f"observed cells of {name}")
        pred = _points(predicted[name], f"predicted cells of {name}")
        recall.append(top_k_recall(de_t_scores(obs, ctrl), de_t_scores(pred, ctrl), k))
        pred_pcs.append(space.transform(pred))
        obs_pcs.append(space.transform(obs))
    M = energy_distance_matrix(pred_pcs, obs_pcs)
    out = pd.DataFrame(
        {
            f"top{k}_recall_de_vs_control": recall,
            f"energy_distance_pca{n_pcs}": np.diag(M),
            f"rank_energy_distance_pca{n_pcs}": rank_of_matches(M),
        },
        index=pd.Index(names, name="perturbation"),
    )
    return out


__all__ = [
    "CELL_METRICS",
    "PSEUDOCOUNT",
    "cell_metrics",
    "cosine_logfc_vs_control",
    "de_t_scores",
    "energy_distance_matrix",
    "log_fold_change",
    "rank_cosine_logfc_vs_control",
    "rank_of_matches",
    "top_k_recall",
]
