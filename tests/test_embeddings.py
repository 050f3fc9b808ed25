"""Gene embeddings: the bring-your-own reader, coverage reports and the embeddings the analysis builds."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.errors import DataError
from helpers.knowledge.embeddings import (
    check_no_test_labels,
    context_embedding,
    control_pca_embedding,
    coverage,
    idealized_embedding,
    label_pca_embedding,
    random_embedding,
    read_embeddings,
    single_gene_perturbations,
    validate_embedding,
)


@pytest.fixture
def table():
    return pd.DataFrame(
        [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [2.0, 0.0, -0.5], [0.0, 0.0, 1.0]],
        index=pd.Index(["KLF1", "TP53", "MYC", "GATA1"]),
        columns=["d1", "d2", "d3"],
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet", ".h5ad"])
def test_read_embeddings_round_trip(tmp_path, table, suffix):
    path = tmp_path / f"my_model{suffix}"
    if suffix.startswith(".csv"):
        table.rename_axis("symbol").to_csv(path)
    elif suffix == ".tsv":
        table.rename_axis("symbol").to_csv(path, sep="\t")
    elif suffix == ".parquet":
        table.to_parquet(path)
    else:
        ad.AnnData(X=table.to_numpy(), obs=pd.DataFrame(index=table.index), var=pd.DataFrame(index=table.columns)).write_h5ad(path)
    emb = read_embeddings(path)
    assert emb.attrs["name"] == "my_model"
    assert list(emb.index) == list(table.index)
    np.testing.assert_allclose(emb.to_numpy(), table.to_numpy())
    assert emb.index.name == "gene"


def test_read_embeddings_sparse_h5ad_and_gene_column(tmp_path, table):
    obs = pd.DataFrame({"symbol": table.index.to_numpy()}, index=[f"ENSG{i:011d}" for i in range(len(table))])
    path = tmp_path / "sparse.h5ad"
    ad.AnnData(X=sp.csr_matrix(table.to_numpy()), obs=obs, var=pd.DataFrame(index=table.columns)).write_h5ad(path)
    emb = read_embeddings(path, gene_column="symbol", name="sparse model")
    assert list(emb.index) == list(table.index) and emb.attrs["name"] == "sparse model"
    np.testing.assert_allclose(emb.to_numpy(), table.to_numpy())
    with pytest.raises(DataError, match="no obs column 'gene'"):
        read_embeddings(path, gene_column="gene")


def test_text_columns_besides_the_genes_are_dropped_and_listed(tmp_path, table):
    frame = table.rename_axis("symbol").reset_index()
    frame.insert(1, "ensembl", [f"ENSG{i}" for i in range(len(frame))])
    path = tmp_path / "emb.csv"
    frame.to_csv(path, index=False)
    emb = read_embeddings(path)
    assert emb.attrs["dropped_columns"] == ["ensembl"]
    assert list(emb.columns) == ["d1", "d2", "d3"]


def test_read_errors_are_clear(tmp_path, table):
    with pytest.raises(DataError, match="does not exist"):
        read_embeddings(tmp_path / "missing.csv")
    bad = tmp_path / "emb.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="unknown file type"):
        read_embeddings(bad)
    text_only = tmp_path / "text.csv"
    pd.DataFrame({"gene": ["A", "B"], "note": ["x", "y"]}).to_csv(text_only, index=False)
    with pytest.raises(DataError, match="no numeric columns"):
        read_embeddings(text_only)
    dup = tmp_path / "dup.csv"
    pd.DataFrame({"gene": ["A", "B", "A"], "d1": [1.0, 2.0, 3.0]}).to_csv(dup, index=False)
    with pytest.raises(DataError, match="more than once.*A"):
        read_embeddings(dup)
    nan = tmp_path / "nan.csv"
    pd.DataFrame({"gene": ["A", "B"], "d1": [1.0, np.nan]}).to_csv(nan, index=False)
    with pytest.raises(DataError, match="NaN or infinite values for 1 genes \\(B\\)"):
        read_embeddings(nan)
    numbers_only = tmp_path / "numbers.parquet"
    pd.DataFrame({"d1": [1.0, 2.0]}).to_parquet(numbers_only)
    with pytest.raises(DataError, match="no column of gene symbols"):
        read_embeddings(numbers_only)


def test_coverage_counts_and_lists_missing_genes(table):
    cov = coverage(table, ["KLF1", "MYC", "CEBPE", "SPI1"], name="model")
    assert (cov.n_perturbations, cov.n_covered, cov.n_missing) == (4, 2, 2)
    assert cov.missing == ["CEBPE", "SPI1"]
    assert "2 of 4 perturbed genes" in str(cov) and "CEBPE, SPI1" in str(cov)
    assert cov.as_row()["without"] == 2


def test_coverage_without_overlap_explains_the_likely_cause(table):
    ensembl = table.set_axis([f"ENSG{i:011d}" for i in range(4)])
    with pytest.raises(DataError, match="Ensembl IDs"):
        coverage(ensembl, ["KLF1", "MYC"])
    lower = table.set_axis([g.lower() for g in table.index])
    with pytest.raises(DataError, match="upper-cased"):
        coverage(lower, ["KLF1", "MYC"])
    assert coverage(lower, ["KLF1"], require_overlap=False).n_missing == 1


def test_validate_embedding_refuses_unnamed_rows(table):
    with pytest.raises(DataError, match="without a gene symbol"):
        validate_embedding(table.set_axis(["A", "", "B", "C"]))
    with pytest.raises(DataError, match="DataFrame"):
        validate_embedding(table.to_numpy())


def test_random_embedding_is_seeded_uniform_and_order_free():
    a = random_embedding(["B", "A", "C"], n_dimensions=5, seed=3)
    b = random_embedding(["C", "A", "B"], n_dimensions=5, seed=3)
    pd.testing.assert_frame_equal(a.loc[["A", "B", "C"]], b.loc[["A", "B", "C"]])
    assert ((a.to_numpy() >= 0) & (a.to_numpy() < 1)).all()
    assert not np.allclose(random_embedding(["A", "B", "C"], 5, seed=4).to_numpy(), a.to_numpy())


def test_label_pca_embedding_uses_training_labels_only_and_matches_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(12, 30)), index=[f"P{i}" for i in range(12)], columns=[f"G{j}" for j in range(30)])
    emb = label_pca_embedding(train, n_components=4)
    assert emb.attrs["fitted_on"] == tuple(sorted(train.index))
    assert emb.shape == (30, 4) and list(emb.index) == list(train.columns)
    ref = PCA(4, svd_solver="full").fit_transform(train.to_numpy().T)
    np.testing.assert_allclose(np.abs(emb.to_numpy()), np.abs(ref), atol=1e-10)  # equal up to the sign of each component


def test_control_pca_embedding_describes_genes_by_control_cells():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 1))
    X = np.hstack([z + 0.1 * rng.normal(size=(200, 3)), rng.normal(size=(200, 3))])  # genes 0-2 co-vary
    cells = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), var=pd.DataFrame(index=[f"G{j}" for j in range(6)]))
    emb = control_pca_embedding(cells, n_components=5)
    assert emb.shape == (6, 5) and emb.attrs["fitted_on"] == ()
    # genes are described by their standardised profiles over cells, so distances are those of
    # the profiles: sqrt(2 n (1 - r)) for correlation r
    E = emb.to_numpy()
    d = np.sqrt(((E[:, None, :] - E[None, :, :]) ** 2).sum(axis=2))
    Z = (X - X.mean(0)) / X.std(0)
    np.testing.assert_allclose(d, np.sqrt(((Z.T[:, None, :] - Z.T[None, :, :]) ** 2).sum(axis=2)), rtol=1e-5, atol=1e-4)
    assert d[0, 1] < 0.3 * d[3, 4]  # the co-varying genes sit together


def test_context_embedding_concatenates_the_other_contexts_only():
    a = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=["X", "Y"], columns=["g1", "g2"])
    b = pd.DataFrame([[5.0, 6.0], [7.0, 8.0], [9.0, 9.0]], index=["X", "Y", "Z"], columns=["g1", "g2"])
    c = pd.DataFrame([[0.0, 0.0]], index=["Y"], columns=["g1", "g2"])
    emb = context_embedding({"A": a, "B": b, "C": c}, "C")
    assert list(emb.columns) == ["A:g1", "A:g2", "B:g1", "B:g2"]
    assert list(emb.index) == ["X", "Y"]  # Z lacks context A: no embedding
    np.testing.assert_array_equal(emb.loc["Y"].to_numpy(), [3.0, 4.0, 7.0, 8.0])
    with pytest.raises(DataError, match="at least two contexts"):
        context_embedding({"A": a}, "A")


def test_idealized_embedding_is_labelled_a_cheater():
    rng = np.random.default_rng(2)
    changes = pd.DataFrame(rng.normal(size=(10, 8)), index=[f"P{i}" for i in range(10)])
    emb = idealized_embedding(changes, n_components=3)
    assert emb.attrs["uses_test_labels"] is True
    assert emb.attrs["fitted_on"] == tuple(sorted(changes.index))
    with pytest.raises(AssertionError, match="fitted on 2 test perturbation"):
        check_no_test_labels(emb.attrs["fitted_on"], ["P1", "P2", "Q"], "the idealized embedding")
    check_no_test_labels(["P1"], ["P2"], "fine")


def test_single_gene_perturbations():
    assert single_gene_perturbations(["control", "A", "A+B", "C"]) == ["A", "C"]


@pytest.mark.parametrize("shape", [(30, 8), (8, 30)])
def test_exact_pca_matches_sklearn_up_to_sign(shape):
    from sklearn.decomposition import PCA

    from helpers.knowledge.embeddings import ExactPCA

    X = np.random.default_rng(7).normal(size=shape) @ np.diag(np.linspace(3, 0.5, shape[1]))
    k = 5
    mine = ExactPCA(k).fit(X)
    ref = PCA(k, svd_solver="full").fit(X)
    signs = np.sign((mine.components_ * ref.components_).sum(axis=1))
    np.testing.assert_allclose(mine.components_ * signs[:, None], ref.components_, atol=1e-8)
    np.testing.assert_allclose(mine.transform(X) * signs, ref.transform(X), atol=1e-8)
    np.testing.assert_allclose(mine.explained_variance_, ref.explained_variance_, rtol=1e-8)
    # more components than the centred rank: the extra ones score 0
    full = ExactPCA(10).fit_transform(X[:4])
    assert full.shape == (4, 4) and np.allclose(full[:, 3], 0.0)
