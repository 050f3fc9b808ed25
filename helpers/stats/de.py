"""Differential expression of every gene, each perturbation against a reference, vectorised.

One Welch t-test serves the whole suite: the GEARS-style top DE genes
(:func:`helpers.data.top_de_genes`), the DEG weights of Miller et al. and the interpolated
duplicate of the calibration controls (:mod:`helpers.models.controls`). Group moments come
from sparse indicator-matrix products, so the cell matrix is never densified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..data.canonical import CONTROL, DataError


def group_moments(adata, groups: pd.Categorical) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def welch_t_test(adata, reference: str = "control", overestimate_variance: bool = False) -> WelchTest:
    """Welch two-sample t-test of every gene, each perturbation's cells against a reference group.

    .. math::

        t = \\frac{\\bar x_p - \\bar x_r}{\\sqrt{s_p^2/n_p + s_r^2/m}}, \\qquad
        \\nu = \\frac{(s_p^2/n_p + s_r^2/m)^2}{\\frac{(s_p^2/n_p)^2}{n_p - 1} + \\frac{(s_r^2/m)^2}{m - 1}},
        \\qquad p = 2\\, P(T_\\nu > |t|)

    with unbiased variances :math:`s^2`, as ``scipy.stats.ttest_ind(equal_var=False)``.

    * ``reference="control"`` (default): :math:`r` = the control cells, :math:`m = n_r`
      (the test of the interpolated duplicate, and of :func:`helpers.data.de_scores`).
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
