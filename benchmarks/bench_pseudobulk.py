"""Pseudobulk at the scale of a genome-wide screen: 300,000 cells x 8,000 genes, sparse."""

import numpy as np
import pandas as pd
import scipy.sparse as sp
from harness import Step

N_CELLS, N_GENES, N_PERTS, DENSITY = 300_000, 8_000, 2_000, 0.08


def _screen():
    import anndata as ad

    rng = np.random.default_rng(0)
    nnz_per_row = int(N_GENES * DENSITY)
    indptr = np.arange(N_CELLS + 1, dtype=np.int64) * nnz_per_row
    indices = np.sort(rng.integers(0, N_GENES, size=(N_CELLS, nnz_per_row), dtype=np.int32), axis=1).ravel()
    data = rng.gamma(2.0, 0.7, size=indices.size).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(N_CELLS, N_GENES))
    X.sum_duplicates()
    labels = np.array(["control"] + [f"G{i}" for i in range(1, N_PERTS)])
    perts = labels[rng.integers(0, N_PERTS, size=N_CELLS)]
    obs = pd.DataFrame({"perturbation": pd.Categorical(perts), "batch": pd.Categorical(rng.integers(0, 16, N_CELLS).astype(str))})
    obs.index = obs.index.astype(str)
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)]))


def _pseudobulk(adata, batch_key=None):
    from helpers.data import pseudobulk

    pb = pseudobulk(adata, batch_key=batch_key)
    assert pb.shape == (N_PERTS, N_GENES)


def _k562_full():
    from helpers.data import load_dataset

    return load_dataset("replogle_k562_like_full")


def _pseudobulk_screen(adata):
    from helpers.data import pseudobulk

    pb = pseudobulk(adata, batch_key="batch")
    assert pb.n_obs == adata.obs["perturbation"].nunique()


STEPS = [
    Step(f"pseudobulk, {N_CELLS:,} cells x {N_GENES:,} genes", _pseudobulk, _screen, "no densified cell matrix"),
    Step("pseudobulk, 16 batches weighted equally", lambda a: _pseudobulk(a, "batch"), _screen, "no densified cell matrix"),
    Step(
        "pseudobulk of replogle_k562_like_full (~160k cells x 5,000 genes), batches weighted equally",
        _pseudobulk_screen,
        _k562_full,
        "no densified cell matrix",
    ),
]
