"""Data in the layout GEARS expects: condition names, AnnData, and the GO graph it would build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...data.canonical import target_genes, validate
from ...data.pseudobulk import is_pseudobulk
from ...errors import DataError
from ...knowledge.go_features import GeneGO, go_similarity

if TYPE_CHECKING:
    from anndata import AnnData


def gears_condition(perturbation: str) -> str:
    """GEARS' name of a canonical perturbation: ``ctrl``, ``A+ctrl`` or ``A+B``."""
    genes = target_genes(perturbation)
    if not genes:
        return "ctrl"
    if len(genes) == 1:
        return f"{genes[0]}+ctrl"
    if len(genes) == 2:
        return f"{genes[0]}+{genes[1]}"
    raise DataError(f"GEARS models one or two target genes, not {len(genes)} ({perturbation!r})")


def to_gears_anndata(adata: AnnData, cell_type: str | None = None) -> AnnData:
    """Canonical cells in the layout GEARS' ``PertData.new_data_process`` expects.

    ``obs['condition']`` (:func:`gears_condition`), ``obs['cell_type']`` (the single
    ``obs['context']`` value if present, else ``cell_type`` or ``"cells"``),
    ``var['gene_name']`` = ``var_names`` = gene symbols, ``X`` = the log-normalised
    expression as float32 CSR (GEARS calls ``.toarray()`` on rows). Counts are not passed.
    """
    import anndata as ad

    if is_pseudobulk(adata):
        raise DataError("GEARS trains on single cells; pass the cells, not a pseudobulk.")
    validate(adata)
    if "context" in adata.obs and adata.obs["context"].nunique() > 1:
        raise DataError(
            f"GEARS models one cell type, but the data hold {adata.obs['context'].nunique()} contexts; "
            "fit one model per context (subset obs['context'])."
        )
    if cell_type is None:
        cell_type = str(adata.obs["context"].iloc[0]) if "context" in adata.obs else "cells"
    perts = adata.obs["perturbation"].astype(str)
    names = {p: gears_condition(p) for p in perts.unique()}
    obs = pd.DataFrame(
        {"condition": perts.map(names).to_numpy(), "cell_type": cell_type},
        index=pd.Index([f"cell{i}" for i in range(adata.n_obs)]),
    )
    var = pd.DataFrame({"gene_name": adata.var_names.astype(str).to_numpy()}, index=adata.var_names.astype(str).copy())
    return ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=obs, var=var)


def gears_go_edges(genes: Sequence[str], gene_go: GeneGO | None = None) -> pd.DataFrame:
    """The GO graph GEARS' ``make_GO`` builds for ``genes``, computed without a process pool.

    Edges ``(source, target, importance)`` for every ordered pair (self pairs included)
    whose Jaccard similarity of GO terms is above 0.1, in ``make_GO``'s order (sources,
    then targets, both in the order of ``genes``, which GEARS keeps sorted). GEARS then
    keeps, for each target, the ``num_similar_genes_go_graph + 1`` largest edges.
    """
    genes = list(genes)
    S = sp.coo_matrix(go_similarity(genes, min_similarity=0.1, gene_go=gene_go))
    order = np.lexsort((S.col, S.row))
    names = np.asarray(genes, dtype=object)
    return pd.DataFrame({"source": names[S.row[order]], "target": names[S.col[order]], "importance": S.data[order]})
