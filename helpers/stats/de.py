"""Differential expression of every gene, each perturbation against a reference, vectorised.

One Welch t-test serves the whole suite: the GEARS-style top DE genes
(:func:`top_de_genes`), the DEG weights of Miller et al. and the interpolated
duplicate of the calibration controls (:mod:`helpers.models.controls`). Group moments come
from sparse indicator-matrix products, so the cell matrix is never densified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..data.canonical import CONTROL
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData


def group_moments(adata: AnnData, groups: pd.Categorical) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group mean, unbiased variance (float64) and size, without densifying X."""
    X = adata.X
    codes = groups.codes.astype(np.int64)
    n = np.bincount(codes, minlength=len(groups.categories)).astype(np.float64)
    ind = sp.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n.size, codes.size))
    if sp.issparse(X):
        X = X.astype(np.float64)
        sums = np.asarray((ind @ X).toarray())
        sumsq = np.asarray((ind @ X.multiply(X)).toarray())
    else:
        X = np.asarray(X, dtype=np.float64)
        sums, sumsq = ind @ X, ind @ (X * X)
    mean = sums / n[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (sumsq - n[:, None] * mean**2) / (n[:, None] - 1)
    return mean, np.clip(var, 0.0, None), n


@dataclass
class WelchTest:
    """Result of :func:`welch_t_test`: perturbations x genes tables of ``t``, ``df`` and ``p``,
    and the mean of every group (control included) that the test compared."""

    t: pd.DataFrame
    df: pd.DataFrame
    p: pd.DataFrame
    means: pd.DataFrame


def welch_t_test(adata: AnnData, reference: str = "control", overestimate_variance: bool = False) -> WelchTest:
    """Welch two-sample t-test of every gene, each perturbation's cells against a reference group.

    .. math::

        t = \\frac{\\bar x_p - \\bar x_r}{\\sqrt{s_p^2/n_p + s_r^2/m}}, \\qquad
        \\nu = \\frac{(s_p^2/n_p + s_r^2/m)^2}{\\frac{(s_p^2/n_p)^2}{n_p - 1} + \\frac{(s_r^2/m)^2}{m - 1}},
        \\qquad p = 2\\, P(T_\\nu > |t|)

    with unbiased variances :math:`s^2`, as ``scipy.stats.ttest_ind(equal_var=False)``.

    * ``reference="control"`` (default): :math:`r` = the control cells, :math:`m = n_r`
      (the test of the interpolated duplicate, and of :func:`helpers.stats.de.de_scores`).
    * ``reference="rest"``: :math:`r` = every other cell of ``adata`` (control and all other
      perturbations), scanpy's ``reference="rest"``.
    * ``overestimate_variance=True``: :math:`m = n_p` instead of :math:`n_r`, scanpy's
      ``t-test_overestim_var`` (the reference's standard error is computed as if it had as
      few cells as the group). With ``reference="rest"`` this is the test Miller et al.
      compute their ground-truth DEG weights from.

    A gene that is constant in both groups with the same value has :math:`t = 0`,
    :math:`p = 1`; constant with different values, :math:`t = \\pm\\infty`, :math:`p = 0`.
    A perturbation with a single cell has no variance estimate: :math:`t = 0`, :math:`p = 1`.

    Parameters
    ----------
    adata
        Canonical screen of cells with control cells (e.g. the first halves of
        :func:`split_halves`).
    reference
        ``"control"`` or ``"rest"``.
    overestimate_variance
        Use scanpy's ``t-test_overestim_var`` standard error.

    Returns
    -------
    WelchTest
        Tables indexed by perturbation (control excluded), columns = genes.
    """
    if reference not in ("control", "rest"):
        raise ValueError(f"reference must be 'control' or 'rest', not {reference!r}")
    groups = pd.Categorical(adata.obs["perturbation"].astype(str).to_numpy())
    if CONTROL not in groups.categories:
        raise DataError("the DE test needs control cells.")
    if len(groups.categories) < 2:
        raise DataError("the screen holds control cells only; there is nothing to test.")
    mean, var, n = group_moments(adata, groups)
    c = list(groups.categories).index(CONTROL)
    keep = np.arange(len(n)) != c
    mean_p, var_p, n_p = mean[keep], var[keep], n[keep][:, None]
    if reference == "control":
        if n[c] < 2:
            raise DataError("the DE test needs at least 2 control cells to estimate their variance.")
        mean_r, var_r, n_r = mean[c][None, :], var[c][None, :], np.full_like(n_p, n[c])
    else:
        # the rest of each group from the totals: sums and sums of squares are additive
        sums = mean * n[:, None]
        sumsq = var * (n[:, None] - 1) + n[:, None] * mean**2
        n_r = n.sum() - n_p
        if (n_r < 2).any():
            raise DataError("the DE test against the rest needs at least 2 other cells for every perturbation.")
        mean_r = (sums.sum(axis=0) - sums[keep]) / n_r
        var_r = np.clip((sumsq.sum(axis=0) - sumsq[keep] - n_r * mean_r**2) / (n_r - 1), 0.0, None)
    m = n_p if overestimate_variance else n_r
    a = var_p / n_p
    b = var_r / m
    se2 = a + b
    diff = mean_p - mean_r
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / np.sqrt(se2)
        dof = se2**2 / (a**2 / (n_p - 1) + b**2 / (m - 1))
    zero = se2 <= 0
    t[zero & (diff == 0)] = 0.0
    t[zero & (diff != 0)] = np.sign(diff[zero & (diff != 0)]) * np.inf
    dof[zero] = np.nan
    p = 2.0 * stats.t.sf(np.abs(t), np.where(np.isfinite(dof), dof, 1.0))
    p[zero & (diff == 0)] = 1.0
    p[zero & (diff != 0)] = 0.0
    single = n_p[:, 0] < 2
    if single.any():
        t[single], p[single], dof[single] = 0.0, 1.0, np.nan
    index = pd.Index(groups.categories[keep].astype(str), name="perturbation")
    genes = adata.var_names.copy()
    return WelchTest(
        t=pd.DataFrame(t, index=index, columns=genes),
        df=pd.DataFrame(dof, index=index, columns=genes),
        p=pd.DataFrame(np.clip(p, 0.0, 1.0), index=index, columns=genes),
        means=pd.DataFrame(mean, index=pd.Index(groups.categories.astype(str), name="perturbation"), columns=genes),
    )


def benjamini_hochberg(p: pd.DataFrame) -> pd.DataFrame:
    """Benjamini–Hochberg adjusted p-values, each row (perturbation) over its genes.

    With the :math:`m` p-values of a row sorted, :math:`p_{(1)} \\le \\dots \\le p_{(m)}`:

    .. math:: p^{adj}_{(i)} = \\min_{j \\ge i} \\min\\!\\left(1, \\frac{m}{j}\\, p_{(j)}\\right)

    NaN p-values are treated as 1 (Miller et al.: genes without a test get p = 1).
    """
    values = p.to_numpy(dtype=np.float64, copy=True)
    values[~np.isfinite(values)] = 1.0
    if ((values < 0) | (values > 1)).any():
        raise DataError("p-values must lie in [0, 1].")
    m = values.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    adjusted = np.empty_like(values)
    np.put_along_axis(adjusted, order, np.minimum(ranked, 1.0), axis=1)
    return pd.DataFrame(adjusted, index=p.index.copy(), columns=p.columns.copy())


def de_scores(adata: AnnData) -> pd.DataFrame:
    """Welch t statistic of every gene, each perturbation against control.

    ``t_pg = (x̄_pg − x̄_cg) / sqrt(s²_pg/n_p + s²_cg/n_c)`` with unbiased variances, as in
    ``scanpy.tl.rank_genes_groups(method='t-test', reference='control')``
    (:func:`helpers.stats.de.welch_t_test`). Genes with zero variance in both groups get
    ``t = 0`` (also when their means differ, as PerturBench sets infinite scores to 0).
    """
    return _finite_scores(_welch_against_control(adata).t)


def _welch_against_control(adata: AnnData) -> WelchTest:
    return welch_t_test(adata, reference="control")


def _finite_scores(t: pd.DataFrame) -> pd.DataFrame:
    t = t.rename_axis(None)
    return t.where(np.isfinite(t), 0.0)


def top_de_genes(adata: AnnData, k: int = 20, drop_dropouts: bool = True) -> dict[str, list[str]]:
    """Top ``k`` DE genes of each perturbation, GEARS' ``top_non_dropout_de_20``.

    Genes are ranked by ``|t|`` (:func:`de_scores`). With ``drop_dropouts``, genes whose
    mean is 0 in the perturbation but not in control ("dropouts") are skipped, as in
    ``gears.data_utils.get_dropout_non_zero_genes``.

    Returns
    -------
    dict
        perturbation -> list of ``k`` gene names (fewer only if too few genes qualify).
    """
    test = _welch_against_control(adata)  # one pass over the cells gives the scores and the means
    scores = _finite_scores(test.t)
    mean = test.means
    ctrl_zero = mean.loc[CONTROL].to_numpy() == 0
    genes = adata.var_names.to_numpy()
    out = {}
    for pert in scores.index:
        order = np.argsort(-np.abs(scores.loc[pert].to_numpy()), kind="stable")
        if drop_dropouts:
            pert_zero = mean.loc[pert].to_numpy() == 0
            dropout = pert_zero & ~ctrl_zero
            order = order[~dropout[order]]
        out[pert] = genes[order[:k]].tolist()
    return out


def miller_t_scores(adata: AnnData, perturbations: Sequence[str] | None = None) -> pd.DataFrame:
    """t statistics behind Miller et al.'s DEG weights: ``t-test_overestim_var`` against the rest.

    :func:`welch_t_test` with ``reference="rest"`` and ``overestimate_variance=True`` on
    ``adata`` (the ground-truth cells of every condition), restricted to ``perturbations``.
    Infinite values (a gene constant in both groups with different values) are set to 0,
    as PerturBench and :func:`de_scores` do, so that
    :func:`helpers.metrics.deg_weights` accepts them.
    """
    t = welch_t_test(adata, reference="rest", overestimate_variance=True).t
    if perturbations is not None:
        t = t.loc[list(perturbations)]
    return t.where(np.isfinite(t), 0.0)
