"""Gene Ontology annotations, GO similarity and embeddings, and the GO random forest."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.canonical import make_canonical
from helpers.data.pseudobulk import profiles
from helpers.errors import DataError
from helpers.knowledge import GENE_GO_PATH, genes_without_go, go_embedding, go_membership, go_similarity, load_gene_go
from helpers.models.knowledge import GORandomForest

ROOT = Path(__file__).resolve().parents[1]
NORMAN = next(
    (p for p in (ROOT / "data" / "norman2019_subset.h5ad", Path("/work/shared/data/norman2019_subset.h5ad")) if p.exists()),
    ROOT / "data" / "norman2019_subset.h5ad",
)

# A toy annotation: 5 genes, hand-checkable overlaps. "Z" has no terms, "U" only a term of its own.
TOY = {
    "A": {"t1", "t2", "t3"},
    "B": {"t2", "t3", "t4"},
    "C": {"t1", "t5", "t6", "t7"},
    "D": {"t4", "t5", "t6", "t7"},
    "E": {"t1", "t2", "t6", "t7"},
    "U": {"t9"},
    "Z": set(),
}


# -- shipped annotations ----------------------------------------------------------------


def test_shipped_file_has_provenance_and_all_genes():
    with gzip.open(GENE_GO_PATH, "rt") as handle:
        header = [next(handle) for _ in range(4)]
    assert "org.Hs.eg.db" in header[1]
    assert "2022-Sep12" in header[2] and "2022-07-01" in header[2]
    go = load_gene_go()
    assert len(go) == 20728
    assert sum(len(t) for t in go.values()) == 300448


@pytest.mark.parametrize(
    "gene, terms",
    [
        ("KLF1", ["GO:0003700", "GO:0005634"]),  # DNA-binding transcription factor activity; nucleus
        ("HBB", ["GO:0005344", "GO:0019825"]),  # oxygen carrier activity; oxygen binding
        ("MAP2K6", ["GO:0004708", "GO:0000165"]),  # MAP kinase kinase activity; MAPK cascade
    ],
)
def test_known_genes_map_to_known_terms(gene, terms):
    go = load_gene_go()
    assert set(terms) <= go[gene]
    assert all(t.startswith("GO:") and len(t) == 10 for t in go[gene])


def test_missing_file_says_how_to_rebuild(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_gene_go.py"):
        load_gene_go(tmp_path / "nope.tsv.gz")


# -- membership and similarity --------------------------------------------------------------


def test_membership_matches_hand_matrix():
    M, terms = go_membership(["B", "Z", "A"], TOY)
    assert list(terms) == ["t1", "t2", "t3", "t4"]
    np.testing.assert_array_equal(M.toarray(), [[0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    M2, terms2 = go_membership(["A", "B", "C"], TOY, min_genes_per_term=2)
    assert list(terms2) == ["t1", "t2", "t3"]


def test_similarity_is_jaccard_by_hand():
    genes = ["A", "B", "C", "Z", "E"]
    S = go_similarity(genes, gene_go=TOY)
    assert sp.issparse(S) and S.shape == (5, 5)
    D = S.toarray()
    # A∩B = {t2,t3}, A∪B = {t1..t4}; A∩C = {t1}, A∪C = 6 terms; C∩E = {t1,t6,t7}, C∪E = 5 terms
    assert D[0, 1] == pytest.approx(2 / 4)
    assert D[0, 2] == pytest.approx(1 / 6)
    assert D[2, 4] == pytest.approx(3 / 5)
    assert D[1, 2] == 0 and (1, 2) not in set(zip(*S.nonzero()))  # nothing shared: not stored
    np.testing.assert_allclose(np.diag(D), [1, 1, 1, 0, 1])
    assert S[3].nnz == 0 and S[:, 3].nnz == 0  # no GO terms: empty row and column
    np.testing.assert_allclose(D, D.T)
    # strictly greater than the threshold, as GEARS' `score > 0.1`
    T = go_similarity(genes, min_similarity=0.5, gene_go=TOY).toarray()
    assert T[0, 1] == 0 and T[2, 4] == pytest.approx(0.6)


def test_similarity_on_real_genes_matches_python_sets():
    go = load_gene_go()
    genes = ["KLF1", "GATA1", "TAL1", "MAP2K3", "MAP2K6", "MAPK1", "HBB", "HBA1", "TP53", "MDM2", "IER5L", "CEBPE"]
    S = go_similarity(genes, block_size=5).toarray()  # several blocks
    for i, a in enumerate(genes):
        for j, b in enumerate(genes):
            ta, tb = go.get(a, frozenset()), go.get(b, frozenset())
            expected = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
            assert S[i, j] == pytest.approx(expected), (a, b)
    assert genes_without_go(genes) == ["IER5L"]


def test_duplicate_or_string_gene_lists_are_refused():
    with pytest.raises(ValueError, match="duplicates"):
        go_similarity(["KLF1", "KLF1"])
    with pytest.raises(TypeError):
        go_embedding("KLF1")


# -- embeddings ---------------------------------------------------------------------------------


def _hand_tfidf(genes, gene_go):
    """TF-IDF rows of the shared terms, computed with plain Python loops."""
    counts = {}
    for g in genes:
        for t in gene_go[g]:
            counts[t] = counts.get(t, 0) + 1
    terms = sorted(t for t, c in counts.items() if c >= 2)
    n = len(genes)
    W = np.zeros((n, len(terms)))
    for i, g in enumerate(genes):
        for k, t in enumerate(terms):
            if t in gene_go[g]:
                W[i, k] = np.log((1 + n) / (1 + counts[t])) + 1
        if W[i].any():
            W[i] /= np.linalg.norm(W[i])
    return W


def test_lsa_embedding_reproduces_tfidf_geometry():
    # Universe A..E and U (Z has no terms). Shared terms t1..t7 (t9 is U's own): 7 columns,
    # rank <= 5, so 5 components keep everything and E Eᵀ must equal W Wᵀ.
    universe = ["A", "B", "C", "D", "E", "U"]
    W = _hand_tfidf(universe, TOY)
    emb = go_embedding(["A", "B", "C", "D", "E", "U", "Z"], n_components=5, gene_go=TOY)
    assert list(emb.columns) == ["GO1", "GO2", "GO3", "GO4", "GO5"]
    E = emb.loc[["A", "B", "C", "D", "E"]].to_numpy()
    np.testing.assert_allclose(E @ E.T, W[:5] @ W[:5].T, atol=1e-10)
    assert emb.loc[["U", "Z"]].isna().all().all()
    assert emb.attrs["not_embedded"] == {"U": "none of its GO terms annotates another gene", "Z": "no GO terms"}


def test_shipped_lsa_embedding_is_deterministic_and_meaningful():
    genes = ["MAP2K3", "MAP2K6", "KLF1", "HBB", "HBA1", "IER5L"]
    a = go_embedding(genes, n_components=16)
    from helpers.knowledge import go_features

    go_features._lsa_shipped.cache_clear()
    b = go_embedding(genes, n_components=16)
    pd.testing.assert_frame_equal(a, b)
    assert a.shape == (6, 16) and a.loc["IER5L"].isna().all()
    assert a.attrs["not_embedded"] == {"IER5L": "no GO terms"}
    # a gene's coordinates do not depend on the other genes asked for
    pd.testing.assert_series_equal(go_embedding(["KLF1"], n_components=16).loc["KLF1"], a.loc["KLF1"])
    x = a.dropna().to_numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = pd.DataFrame(x @ x.T, index=a.dropna().index, columns=a.dropna().index)
    # the two MAP kinase kinases and the two globins are each other's nearest neighbours
    assert cos.loc["MAP2K3"].drop("MAP2K3").idxmax() == "MAP2K6"
    assert cos.loc["HBB"].drop("HBB").idxmax() == "HBA1"


def test_adjacency_embedding_recovers_the_augmented_adjacency_matrix():
    genes = ["A", "B", "C", "D", "E"]
    emb = go_embedding(genes + ["Z"], n_components=5, method="adjacency", gene_go=TOY, min_similarity=0.0)
    # hand-built igraph-style matrix: Jaccard off the diagonal, strength / (n - 1) on it
    sets = [TOY[g] for g in genes]
    A = np.array([[len(a & b) / len(a | b) for b in sets] for a in sets])
    np.fill_diagonal(A, 0)
    A[np.diag_indices(5)] = A.sum(axis=1) / 4
    X = emb.loc[genes].to_numpy()
    values = np.linalg.eigvalsh(A)
    values = values[np.argsort(-np.abs(values))]  # columns come by decreasing |λ|
    # X = U |Λ|^½: column norms² are |λ|, and X diag(sign λ) Xᵀ = U Λ Uᵀ = A
    np.testing.assert_allclose(np.sum(X**2, axis=0), np.abs(values), atol=1e-10)
    np.testing.assert_allclose(X @ np.diag(np.sign(values)) @ X.T, A, atol=1e-10)
    assert emb.loc["Z"].isna().all()
    with pytest.raises(ValueError, match="method"):
        go_embedding(genes, method="umap", gene_go=TOY)


# -- the GO random forest ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def norman():
    if not NORMAN.exists():
        pytest.skip(f"{NORMAN} not available")
    return make_canonical(ad.read_h5ad(NORMAN), "condition", "perturbench")


def _subset(adata, perts):
    return adata[adata.obs["perturbation"].astype(str).isin(list(perts) + ["control"]).to_numpy()].copy()


TRAIN = ["KLF1", "MAP2K6", "TGFBR2", "MAPK1", "SGK1", "HK2", "FOXO4", "NIT1", "IER5L", "KLF1+MAP2K6"]
TEST = ["MAP2K3", "MIDN", "PLK4", "SLC38A2"]


def test_forest_interpolates_training_singles_exactly(norman):
    # No bootstrap, all features, one sample per leaf, every PC: the forest reproduces its
    # training targets, so predicting a training single returns its pseudobulk profile.
    model = GORandomForest(n_pcs=50, n_estimators=5, bootstrap=False, max_features=1.0, seed=3).fit(_subset(norman, TRAIN))
    used = ["FOXO4", "HK2", "KLF1", "MAP2K6", "MAPK1", "NIT1", "SGK1", "TGFBR2"]
    assert sorted(model.train_perturbations_) == used
    truth = profiles(_subset(norman, used)).loc[used]
    pred = model.predict(used)
    np.testing.assert_allclose(pred.to_numpy(), truth.to_numpy(), atol=1e-10)
    assert list(pred.columns) == list(norman.var_names)
    assert set(model.excluded_) == {"IER5L", "KLF1+MAP2K6"}
    assert "no GO terms" in model.excluded_["IER5L"] and "single" in model.excluded_["KLF1+MAP2K6"]


def test_forest_matches_an_independent_pipeline(norman):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestRegressor

    model = GORandomForest(go_components=8, n_pcs=4, n_estimators=50, seed=7).fit(_subset(norman, TRAIN))
    pred = model.predict(TEST)
    # the same steps written out: changes, PCA, forest on the GO embedding, back-transform
    tab = profiles(_subset(norman, TRAIN))
    used = sorted(model.train_perturbations_)
    delta = tab.loc[used] - tab.loc["control"]
    emb = go_embedding(used + TEST, n_components=8)
    pca = PCA(n_components=4, svd_solver="full")
    z = pca.fit_transform(delta.to_numpy())
    rf = RandomForestRegressor(n_estimators=50, max_features=1.0, random_state=7).fit(emb.loc[used].to_numpy(), z)
    expected = tab.loc["control"].to_numpy() + pca.inverse_transform(rf.predict(emb.loc[TEST].to_numpy()))
    np.testing.assert_allclose(pred.to_numpy(), expected, atol=1e-12)


def test_forest_is_seeded_and_refuses_what_it_cannot_predict(norman):
    train = _subset(norman, TRAIN)
    a = GORandomForest(n_estimators=30, seed=1).fit(train).predict(TEST)
    b = GORandomForest(n_estimators=30, seed=1).fit(train).predict(TEST)
    c = GORandomForest(n_estimators=30, seed=2).fit(train).predict(TEST)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    model = GORandomForest(n_estimators=10).fit(train)
    bad = model.unpredictable(["IER5L", "MAP2K3", "CEBPE+RUNX1T1", "control"])
    assert list(bad) == ["IER5L", "CEBPE+RUNX1T1"]
    assert "double" in bad["CEBPE+RUNX1T1"]
    with pytest.raises(DataError, match="IER5L"):
        model.predict(["IER5L"])
    np.testing.assert_allclose(model.predict(["control"]).loc["control"], model.control_)


def test_forest_needs_control_and_enough_singles(norman):
    with pytest.raises(DataError, match="at least 2"):
        GORandomForest().fit(_subset(norman, ["KLF1", "IER5L", "KLF1+MAP2K6"]))
    no_ctrl = norman[norman.obs["perturbation"].astype(str).isin(["KLF1", "MAP2K6"]).to_numpy()].copy()
    with pytest.raises(DataError, match="control"):
        GORandomForest().fit(no_ctrl)
