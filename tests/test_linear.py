"""The linear model against independent solutions of the same problems."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from helpers.data.pseudobulk import as_pseudobulk  # noqa: E402
from helpers.errors import DataError
from helpers.models.linear import LinearModel, condition_pca_embedding


def _pseudobulk(table: pd.DataFrame):
    return as_pseudobulk(table, n_cells=10)


def _random_screen(n_genes=12, n_perts=8, seed=0):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    perts = genes[:n_perts]
    values = rng.gamma(2.0, 1.0, size=(n_perts + 1, n_genes))
    return pd.DataFrame(values, index=perts + ["control"], columns=genes)


def _kronecker_ridge(G, P, Y, lam):
    """Solve min ‖vec(Y) − (Pᵀ⊗G) vec W‖² + λ‖GW‖² + λ‖WP‖² + λ²‖W‖² as one least-squares problem.

    Written out directly (no factorisation of the normal equations): the penalty is a
    quadratic form vec(W)ᵀ Λ vec(W), appended to the design as rows Λ^{1/2}.
    """
    K, Kp = G.shape[1], P.shape[0]
    Z = np.kron(P.T, G)
    Lam = lam * np.kron(np.eye(Kp), G.T @ G) + lam * np.kron(P @ P.T, np.eye(K)) + lam**2 * np.eye(K * Kp)
    root = np.linalg.cholesky(Lam + 1e-300 * np.eye(K * Kp)).T
    design = np.vstack([Z, root])
    target = np.concatenate([Y.ravel(order="F"), np.zeros(K * Kp)])
    w, *_ = np.linalg.lstsq(design, target, rcond=None)
    return w.reshape((K, Kp), order="F")


@pytest.mark.parametrize("include_control", [True, False])
@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_double_ridge_matches_kronecker_least_squares(include_control, lam):
    rng = np.random.default_rng(1)
    table = _random_screen()
    perts = [p for p in table.index if p != "control"]
    G = pd.DataFrame(rng.standard_normal((12, 3)), index=table.columns)
    Pemb = pd.DataFrame(rng.standard_normal((12, 4)), index=table.columns)  # K' = 4 differs from K = 3
    train = table.drop(index=["G6", "G7"])
    model = LinearModel(ridge=lam, gene_embedding=G, perturbation_embedding=Pemb, include_control=include_control)
    model.fit(_pseudobulk(train))

    cols = [p for p in perts if p not in ("G6", "G7")] + (["control"] if include_control else [])
    Y = (train.loc[cols] - train.loc["control"]).to_numpy().T
    b = Y.mean(axis=1)
    P = np.column_stack([np.zeros(4) if c == "control" else Pemb.loc[c].to_numpy() for c in cols])
    W = _kronecker_ridge(G.to_numpy(), P, Y - b[:, None], lam)
    np.testing.assert_allclose(model.W_.to_numpy(), W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.b_.to_numpy(), b, rtol=1e-12)

    pred = model.predict(["G6", "G7"])
    expected = (G.to_numpy() @ W @ Pemb.loc[["G6", "G7"]].to_numpy().T).T + b + train.loc["control"].to_numpy()
    np.testing.assert_allclose(pred.to_numpy(), expected, rtol=1e-8, atol=1e-10)


def test_closed_form_is_a_stationary_point_of_the_objective():
    """The gradient of the penalised objective vanishes at the fitted W."""
    rng = np.random.default_rng(5)
    table = _random_screen(n_genes=15, n_perts=10)
    G = pd.DataFrame(rng.standard_normal((15, 4)), index=table.columns)
    Pemb = pd.DataFrame(rng.standard_normal((15, 3)), index=table.columns)
    lam = 0.7
    model = LinearModel(ridge=lam, gene_embedding=G, perturbation_embedding=Pemb).fit(_pseudobulk(table))
    Gm, P, W = G.to_numpy(), model.P_.to_numpy(), model.W_.to_numpy()
    Y = (table.loc[model.training_conditions_] - table.loc["control"]).to_numpy().T
    R = Y - model.b_.to_numpy()[:, None] - Gm @ W @ P
    grad = -Gm.T @ R @ P.T + lam * Gm.T @ Gm @ W + lam * W @ P @ P.T + lam**2 * W
    assert np.abs(grad).max() < 1e-9


def test_training_pca_is_the_gene_pca_and_p_is_the_target_gene_row():
    table = _random_screen(n_genes=30, n_perts=12, seed=3)
    model = LinearModel(n_components=4).fit(_pseudobulk(table))
    # independent PCA: genes are observations, training conditions (incl. control) variables
    X = table.loc[[p for p in table.index if p != "control"] + ["control"]].to_numpy().T
    ref = PCA(n_components=4, svd_solver="full").fit_transform(X)
    G = model.G_.to_numpy()
    signs = np.sign((G * ref).sum(axis=0))
    np.testing.assert_allclose(G, ref * signs, rtol=1e-7, atol=1e-9)
    # the embedding of "perturb gene g" is row g of the gene PCA; control gets zeros
    for p in ["G0", "G5"]:
        np.testing.assert_allclose(model.P_[p].to_numpy(), model.G_.loc[p].to_numpy())
    np.testing.assert_array_equal(model.P_["control"].to_numpy(), np.zeros(4))


def test_predictions_do_not_depend_on_embedding_signs_or_rotations():
    rng = np.random.default_rng(2)
    table = _random_screen(n_genes=20, n_perts=10)
    train = table.drop(index=["G8", "G9"])
    G = pd.DataFrame(rng.standard_normal((20, 3)), index=table.columns)
    Pemb = pd.DataFrame(rng.standard_normal((20, 3)), index=table.columns)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    a = LinearModel(gene_embedding=G, perturbation_embedding=Pemb).fit(_pseudobulk(train)).predict(["G8", "G9"])
    b = LinearModel(gene_embedding=-G, perturbation_embedding=Pemb @ Q).fit(_pseudobulk(train)).predict(["G8", "G9"])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9)


def test_recovers_a_bilinear_truth():
    """Data made exactly as G W P + b: unseen perturbations are predicted almost exactly."""
    rng = np.random.default_rng(4)
    n_genes, k = 40, 3
    genes = [f"G{i}" for i in range(n_genes)]
    G = rng.standard_normal((n_genes, k))
    Pemb = pd.DataFrame(rng.standard_normal((n_genes, k)), index=genes)
    Pemb.iloc[:30] -= Pemb.iloc[:30].mean()  # centred over the training perturbations, so b = b0 exactly
    W = rng.standard_normal((k, k))
    ctrl = rng.uniform(1, 3, n_genes)
    b0 = rng.normal(0, 0.5, n_genes)
    change = (G @ W @ Pemb.to_numpy().T).T + b0  # perturbation of every gene: perts x genes
    table = pd.DataFrame(ctrl + change, index=genes, columns=genes)
    table.loc["control"] = ctrl
    train = table.drop(index=genes[30:])
    model = LinearModel(ridge=1e-6, gene_embedding=pd.DataFrame(G, index=genes), perturbation_embedding=Pemb, include_control=False)
    pred = model.fit(_pseudobulk(train)).predict(genes[30:])
    # b absorbs the mean training change, the rest is fitted exactly up to the tiny ridge
    np.testing.assert_allclose(pred.to_numpy(), table.loc[genes[30:]].to_numpy(), atol=1e-3)


def test_include_control_changes_b_as_published():
    table = _random_screen()
    perts = [p for p in table.index if p != "control"]
    delta = table.loc[perts] - table.loc["control"]
    with_ctrl = LinearModel(n_components=3).fit(_pseudobulk(table))
    without = LinearModel(n_components=3, include_control=False).fit(_pseudobulk(table))
    np.testing.assert_allclose(with_ctrl.b_.to_numpy(), delta.sum().to_numpy() / (len(perts) + 1))
    np.testing.assert_allclose(without.b_.to_numpy(), delta.mean().to_numpy())
    assert "control" in with_ctrl.training_conditions_ and "control" not in without.training_conditions_


def test_unmeasured_target_genes_are_unpredictable_and_excluded():
    table = _random_screen(n_genes=12, n_perts=8)
    table = table.rename(index={"G7": "NOTMEASURED"})
    model = LinearModel(n_components=3).fit(_pseudobulk(table))
    assert model.excluded_ == {"NOTMEASURED": "target gene NOTMEASURED not measured (no row in the training PCA)"}
    assert "NOTMEASURED" not in model.training_conditions_
    assert set(model.unpredictable(["G1", "OTHER", "G1+OTHER"])) == {"OTHER", "G1+OTHER"}
    with pytest.raises(DataError, match="OTHER"):
        model.predict(["G1", "OTHER"])


def test_table_embedding_with_nan_rows_counts_as_missing():
    table = _random_screen()
    emb = pd.DataFrame(np.arange(24.0).reshape(12, 2) / 7, index=table.columns)
    emb.loc["G3"] = np.nan
    model = LinearModel(perturbation_embedding=emb).fit(_pseudobulk(table))
    assert model.excluded_ == {"G3": "target gene G3 not in the perturbation embedding"}
    assert model.unpredictable(["G3", "G4"]) == {"G3": "target gene G3 not in the perturbation embedding"}


def test_double_embedding_is_the_sum_of_its_genes():
    table = _random_screen()
    model = LinearModel(n_components=3).fit(_pseudobulk(table.drop(index=["G6", "G7"])))
    emb = model.perturbation_embedding_of(["G6", "G7", "G6+G7"])
    np.testing.assert_allclose(emb["G6+G7"], emb["G6"] + emb["G7"])
    pred = model.predict(["G6", "G7", "G6+G7"])
    offset = (model.b_ + model.control_).to_numpy()
    # linear in P: the double's change beyond b is the sum of the singles' changes beyond b
    np.testing.assert_allclose(pred.loc["G6+G7"] - offset, (pred.loc["G6"] - offset) + (pred.loc["G7"] - offset))


def test_random_embeddings_are_seeded_and_set_independent():
    table = _random_screen()
    train = _pseudobulk(table.drop(index=["G7"]))
    a = LinearModel(gene_embedding="random", perturbation_embedding="random", seed=3).fit(train)
    b = LinearModel(gene_embedding="random", perturbation_embedding="random", seed=3).fit(train)
    c = LinearModel(gene_embedding="random", perturbation_embedding="random", seed=4).fit(train)
    perts = ["G7", "UNMEASURED"]  # a random P embeds any gene
    assert a.unpredictable(perts) == {}
    pd.testing.assert_frame_equal(a.predict(perts), b.predict(perts))
    assert not np.allclose(a.predict(perts).to_numpy(), c.predict(perts).to_numpy())
    # a gene's random vector does not depend on which other genes are asked for
    np.testing.assert_array_equal(a.perturbation_embedding_of(["G7"])["G7"], a.perturbation_embedding_of(["G1", "G7"])["G7"])


def test_fit_is_deterministic_on_cells():
    rng = np.random.default_rng(0)
    table = _random_screen(n_genes=25, n_perts=10)
    labels = np.repeat(table.index.to_numpy(), 5)
    X = np.repeat(table.to_numpy(), 5, axis=0) + rng.normal(0, 0.1, size=(len(labels), 25))
    cells = ad.AnnData(
        X=X.astype(np.float32),
        obs=pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=table.columns),
    )
    p1 = LinearModel(n_components=5).fit(cells).predict(["G1", "G2"])
    p2 = LinearModel(n_components=5).fit(cells).predict(["G1", "G2"])
    pd.testing.assert_frame_equal(p1, p2)
    assert list(p1.columns) == list(table.columns)


def test_components_are_capped_by_the_training_data():
    table = _random_screen(n_genes=12, n_perts=3)
    model = LinearModel(n_components=10).fit(_pseudobulk(table))
    assert model.n_components_ == 4  # 3 perturbations + control
    assert model.G_.shape == (12, 4)


def test_bad_input_is_refused():
    table = _random_screen()
    with pytest.raises(DataError, match="control"):
        LinearModel().fit(_pseudobulk(table.drop(index="control")))
    with pytest.raises(ValueError, match="gene_embedding"):
        LinearModel(gene_embedding="scgpt").fit(_pseudobulk(table))
    with pytest.raises(DataError, match="no training perturbation"):
        LinearModel(perturbation_embedding=pd.DataFrame({"a": [1.0]}, index=["XYZ"])).fit(_pseudobulk(table))
    bad = table.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        LinearModel().fit(_pseudobulk(bad))


def test_condition_pca_embedding_matches_a_pca_of_conditions():
    table = _random_screen(n_genes=20, n_perts=9, seed=7)
    emb = condition_pca_embedding(_pseudobulk(table), n_components=3)
    ref = PCA(n_components=3, svd_solver="full").fit_transform(table.to_numpy())
    signs = np.sign((emb.to_numpy() * ref).sum(axis=0))
    np.testing.assert_allclose(emb.to_numpy(), ref * signs, rtol=1e-7, atol=1e-9)
    assert list(emb.index) == list(table.index)
    assert "control" not in condition_pca_embedding(_pseudobulk(table), 3, include_control=False).index
