import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from helpers.data import top_expressed_genes
from helpers.errors import DataError
from helpers.stats.de import de_scores, top_de_genes


def test_top_expressed_genes_breaks_ties_by_gene_order(tiny_screen):
    # control means: g0 = 1, g1 = 2, g2 = 0
    assert top_expressed_genes(tiny_screen, 2) == ["g1", "g0"]
    with pytest.raises(DataError, match="only 3 genes"):
        top_expressed_genes(tiny_screen, 5)
    screen = tiny_screen.copy()
    screen.X = sp.csr_matrix(np.ones(screen.shape, dtype=np.float32))
    assert top_expressed_genes(screen, 3) == ["g0", "g1", "g2"]


def _random_screen(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.0, 1.0, size=(60, 8)) * (rng.random((60, 8)) > 0.3)
    X[20:40, 3] += 2.0  # A moves gene 3
    X[40:60, 5] = 0.0  # B: gene 5 drops out completely
    X[40:60, 6] += 3.0
    perts = ["control"] * 20 + ["A"] * 20 + ["B"] * 20
    obs = pd.DataFrame({"perturbation": perts}, index=[f"c{i}" for i in range(60)])
    obs["n_targets"] = [0] * 20 + [1] * 40
    return ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(8)]))


def test_de_scores_match_scipy_welch():
    screen = _random_screen()
    scores = de_scores(screen)
    X = screen.X.toarray()
    for pert, rows in (("A", slice(20, 40)), ("B", slice(40, 60))):
        t, _ = stats.ttest_ind(X[rows], X[:20], equal_var=False)
        t = np.nan_to_num(t)
        np.testing.assert_allclose(scores.loc[pert].to_numpy(), t, rtol=1e-5, atol=1e-5)


def test_top_de_genes_drops_dropouts():
    screen = _random_screen()
    top = top_de_genes(screen, k=3)
    assert top["A"][0] == "g3"
    assert top["B"][0] == "g6"
    assert "g5" not in top["B"]  # zero in B, non-zero in control: a dropout
    assert "g5" in top_de_genes(screen, k=8, drop_dropouts=False)["B"]


def test_highly_variable_genes_finds_the_variable_ones():
    from helpers.data import highly_variable_genes

    rng = np.random.default_rng(1)
    means = np.repeat(np.geomspace(0.5, 20, 20), 10)  # 200 genes, 10 per expression level
    X = rng.poisson(means, size=(400, means.size)).astype(np.float32)
    # two genes with an ordinary mean but bimodal: far more variable than their neighbours
    for g in (95, 125):
        X[:, g] = rng.choice([0.0, 2 * means[g]], size=400)
    obs = pd.DataFrame({"perturbation": ["control"] * 400}, index=[f"c{i}" for i in range(400)])
    screen = ad.AnnData(X=sp.csr_matrix(np.log1p(X)), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(means.size)]))
    hvg = highly_variable_genes(screen, n=10)
    assert len(hvg) == 10 and {"g95", "g125"} <= set(hvg)
    with pytest.raises(DataError, match="only 200 genes"):
        highly_variable_genes(screen, n=500)
