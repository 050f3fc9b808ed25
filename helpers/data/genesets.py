"""Gene sets that the benchmarks evaluate on.

* :func:`top_expressed_genes` — the N genes with the highest control mean (the
  1,000-gene set of Ahlmann-Eltze et al.);
* :func:`highly_variable_genes` — scanpy's highly variable genes.

The top-k differentially expressed genes of each perturbation (GEARS' ``top_non_dropout_de_20``)
are chosen by a DE test and live with it, in :func:`helpers.stats.de.top_de_genes`.

Both are computed from the data you pass in. If that includes held-out perturbations, the
gene set depends on test data; pass the training cells to avoid it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .pseudobulk import control_profile

if TYPE_CHECKING:
    from anndata import AnnData


def top_expressed_genes(adata: AnnData, n: int = 1000) -> list[str]:
    """The ``n`` genes with the highest mean expression in control cells.

    Ties are broken by the order of genes in ``adata`` (R's ``rank(ties="first")``, as in
    the published code). Raises if fewer than ``n`` genes exist.
    """
    ctrl = control_profile(adata)
    if n > ctrl.size:
        raise DataError(f"asked for the top {n} expressed genes but the data have only {ctrl.size} genes; lower n_genes.")
    order = np.argsort(-ctrl.to_numpy(), kind="stable")[:n]
    return ctrl.index[order].tolist()


def highly_variable_genes(adata: AnnData, n: int = 2000) -> list[str]:
    """Top ``n`` highly variable genes (scanpy, Seurat flavour on the log-normalised ``X``)."""
    import scanpy as sc

    if n > adata.n_vars:
        raise DataError(f"asked for {n} highly variable genes but the data have only {adata.n_vars} genes.")
    table = sc.pp.highly_variable_genes(adata, n_top_genes=n, flavor="seurat", inplace=False)
    table.index = adata.var_names
    return table.index[table["highly_variable"].to_numpy()].tolist()
