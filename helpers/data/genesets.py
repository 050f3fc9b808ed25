"""Gene sets that the benchmarks evaluate on.

* :func:`top_expressed_genes` — the N genes with the highest control mean (the
  1,000-gene set of Ahlmann-Eltze et al.);
* :func:`highly_variable_genes` — scanpy's highly variable genes;
* :func:`top_de_genes` — the top-k differentially expressed genes of each perturbation
  against control, GEARS style (Welch t-test ranked by |t|, "dropout" genes removed).

All of them are computed from the data you pass in. If that includes held-out
perturbations (as GEARS' ``top_non_dropout_de_20`` does), the evaluation uses test data
to choose genes; pass the training cells to avoid it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .canonical import CONTROL, DataError
from .pseudobulk import control_profile


def top_expressed_genes(adata, n: int = 1000) -> list[str]:
    """The ``n`` genes with the highest mean expression in control cells.

    Ties are broken by the order of genes in ``adata`` (R's ``rank(ties="first")``, as in
    the published code). Raises if fewer than ``n`` genes exist.
    """
    ctrl = control_profile(adata)
    if n > ctrl.size:
        raise DataError(f"asked for the top {n} expressed genes but the data have only {ctrl.size} genes; lower n_genes.")
    order = np.argsort(-ctrl.to_numpy(), kind="stable")[:n]
    return ctrl.index[order].tolist()


def highly_variable_genes(adata, n: int = 2000) -> list[str]:
    """Top ``n`` highly variable genes (scanpy, Seurat flavour on the log-normalised ``X``)."""
    import scanpy as sc

    if n > adata.n_vars:
        raise DataError(f"asked for {n} highly variable genes but the data have only {adata.n_vars} genes.")
    table = sc.pp.highly_variable_genes(adata, n_top_genes=n, flavor="seurat", inplace=False)
    table.index = adata.var_names
    return table.index[table["highly_variable"].to_numpy()].tolist()


def de_scores(adata) -> pd.DataFrame:
    """Welch t statistic of every gene, each perturbation against control.

    ``t_pg = (x̄_pg − x̄_cg) / sqrt(s²_pg/n_p + s²_cg/n_c)`` with unbiased variances, as in
    ``scanpy.tl.rank_genes_groups(method='t-test', reference='control')``
    (:func:`helpers.stats.de.welch_t_test`). Genes with zero variance in both groups get
    ``t = 0`` (also when their means differ, as PerturBench sets infinite scores to 0).
    """
    return _finite_scores(_welch_against_control(adata).t)


def _welch_against_control(adata):
    from ..stats.de import welch_t_test  # here, not at the top: helpers.stats.de imports helpers.data

    return welch_t_test(adata, reference="control")


def _finite_scores(t: pd.DataFrame) -> pd.DataFrame:
    t = t.rename_axis(None)
    return t.where(np.isfinite(t), 0.0)


def top_de_genes(adata, k: int = 20, drop_dropouts: bool = True) -> dict[str, list[str]]:
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
