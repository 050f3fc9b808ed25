"""The embedding regressor against scikit-learn's pipeline and grid search, and the leakage checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.benchmarks.progress_bars import cross_validate_source
from helpers.data import kfold_split
from helpers.errors import DataError
from helpers.knowledge.embeddings import idealized_embedding, label_pca_embedding, random_embedding
from helpers.models.embedding_regressor import (
    EmbeddingRegressor,
    EmbeddingSource,
    _LassoHead,
    fixed_source,
    model_label,
)


def _data(n_perts=60, n_genes=15, n_dims=12, seed=0, noise=0.3, genes_are_targets=False):
    """Changes that depend on a gene embedding through a linear map plus noise.

    With ``genes_are_targets`` every perturbed gene is also a measured gene (as in a screen).
    """
    rng = np.random.default_rng(seed)
    perts = [f"G{i:03d}" for i in range(n_perts)]
    if genes_are_targets:
        n_genes = n_perts
    emb = pd.DataFrame(rng.normal(size=(n_perts, n_dims)), index=perts, columns=[f"e{j}" for j in range(n_dims)])
    W = rng.normal(size=(n_dims, n_genes))
    Y = emb.to_numpy() @ W + noise * rng.normal(size=(n_perts, n_genes))
    genes = perts if genes_are_targets else [f"g{j}" for j in range(n_genes)]
    changes = pd.DataFrame(Y, index=pd.Index(perts, name="perturbation"), columns=genes)
    return changes, emb


def _neg_mean_l2(estimator, X, y):
    return -float(np.sqrt(((estimator.predict(X) - y) ** 2).sum(axis=1)).mean())


def _sklearn_search(head, grid, X, Y, n_components):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Lasso
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    est = KNeighborsRegressor(algorithm="brute") if head == "knn" else Lasso(max_iter=100_000, tol=1e-12)
    pipe = Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components, random_state=42)), ("head", est)])
    key = "head__n_neighbors" if head == "knn" else "head__alpha"
    search = GridSearchCV(pipe, {key: list(grid)}, cv=KFold(5, shuffle=True, random_state=42), scoring=_neg_mean_l2)
    return search.fit(X, Y), key


@pytest.mark.parametrize("head,grid", [("knn", (3, 5, 8, 13)), ("lasso", (1e-3, 1e-2, 1e-1, 1.0))])
def test_matches_gridsearchcv_of_the_sklearn_pipeline(head, grid):
    changes, emb = _data()
    kwargs = {"k_grid": grid} if head == "knn" else {"alpha_grid": grid}
    model = EmbeddingRegressor(emb, head=head, n_components=6, seed=42, **kwargs).fit(changes)
    X = emb.loc[sorted(changes.index)].to_numpy()
    Y = changes.loc[sorted(changes.index)].to_numpy()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # scikit-learn's kNN threads crawl on a shared machine
        search, key = _sklearn_search(head, grid, X, Y, 6)
        reference = search.predict(emb.loc[changes.index[:10]].to_numpy())
    assert model.best_param_ == search.best_params_[key]
    np.testing.assert_allclose(model.cv_results_["mean L2"].to_numpy(), -search.cv_results_["mean_test_score"], rtol=1e-6)
    pred = model.predict(list(changes.index[:10]))
    np.testing.assert_allclose(pred.to_numpy(), reference, rtol=1e-6, atol=1e-8)


def test_lasso_closed_form_equals_coordinate_descent():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(3)
    Z = PCA(5).fit_transform(rng.normal(size=(40, 9)))
    Y = Z[:, :2] @ rng.normal(size=(2, 7)) + 0.5 * rng.normal(size=(40, 7)) + 3.0
    head = _LassoHead().fit(Z, Y)
    assert head.orthogonal
    for alpha in (1e-3, 0.1, 0.5, 5.0):
        ref = Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(Z, Y)
        np.testing.assert_allclose(head.coefficients(alpha), ref.coef_.T, atol=1e-9)
        np.testing.assert_allclose(head.predict(Z[:4], [alpha])[0], ref.predict(Z[:4]), atol=1e-9)
    skew = _LassoHead(tol=1e-14).fit(Z + 0.3 * Z[:, [0]], Y)  # correlated design: coordinate descent on the Gram matrix
    assert not skew.orthogonal
    for alpha in (1.0, 0.1, 1e-3):  # in this order the later fits start warm from the earlier ones
        ref = Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(Z + 0.3 * Z[:, [0]], Y)
        np.testing.assert_allclose(skew.coefficients(alpha), ref.coef_.T, atol=1e-8)
        np.testing.assert_allclose(skew.predict(Z[:3] + 0.3 * Z[:3, [0]], [alpha])[0], ref.predict(Z[:3] + 0.3 * Z[:3, [0]]), atol=1e-8)
    # at scikit-learn's default tolerance both stop close to the optimum
    loose = _LassoHead().fit(Z + 0.3 * Z[:, [0]], Y)
    ref = Lasso(alpha=0.01).fit(Z + 0.3 * Z[:, [0]], Y)
    np.testing.assert_allclose(loose.coefficients(0.01), ref.coef_.T, atol=1e-3)


def test_knn_k_is_capped_at_the_inner_training_size():
    changes, emb = _data(n_perts=15)
    model = EmbeddingRegressor(emb, k_grid=(5, 20, 40), n_components=4).fit(changes)
    assert model.grid_ == [5, 12]  # 15 perturbations, inner training folds of 12


def test_missing_embedding_falls_back_to_the_training_mean_and_is_reported():
    changes, emb = _data()
    partial = emb.drop(index=["G000", "G001", "G050"])
    model = EmbeddingRegressor(partial, k_grid=(5,), n_components=5).fit(changes.drop(index=["G050"]))
    assert model.train_without_embedding_ == ["G000", "G001"]
    assert model.without_embedding(["G050", "G051"]) == ["G050"]
    pred = model.predict(["G050", "G051"])
    train_mean = changes.drop(index=["G050"]).mean()
    np.testing.assert_allclose(pred.loc["G050"].to_numpy(), train_mean.to_numpy())
    assert not np.allclose(pred.loc["G051"].to_numpy(), train_mean.to_numpy())


def test_doubles_are_unpredictable_and_errors_are_clear():
    changes, emb = _data()
    model = EmbeddingRegressor(emb, k_grid=(5,), n_components=5).fit(changes)
    assert "double" in model.unpredictable(["G001+G002"])["G001+G002"]
    with pytest.raises(DataError, match="cannot predict 1"):
        model.predict(["G001+G002"])
    with pytest.raises(DataError, match="only 3 training perturbations have an embedding"):
        EmbeddingRegressor(emb.iloc[:3], k_grid=(2,)).fit(changes)
    with pytest.raises(ValueError, match="head must be"):
        EmbeddingRegressor(emb, head="forest").fit(changes)


def test_fit_on_cells_uses_pseudobulk_profiles():
    import anndata as ad
    import scipy.sparse as sp

    changes, emb = _data(n_perts=20, n_genes=4)
    rng = np.random.default_rng(5)
    rows, labels = [], []
    control = np.full(4, 2.0)
    for p in ["control"] + list(changes.index):
        centre = control if p == "control" else control + changes.loc[p].to_numpy()
        rows.append(centre + rng.normal(scale=0.1, size=(6, 4)))
        labels += [p] * 6
    X = np.vstack(rows)
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    cells = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs, var=pd.DataFrame(index=changes.columns))
    model = EmbeddingRegressor(emb, k_grid=(3,), n_components=4).fit(cells)
    assert model.train_doubles_ == []
    pred = model.predict(["G000"])
    assert pred.shape == (1, 4)
    assert abs(float(pred.to_numpy().mean()) - 2.0) < 2.0  # profiles around the control level, not changes


def test_same_seed_same_predictions():
    changes, emb = _data()
    a = EmbeddingRegressor(emb, head="knn", k_grid=(3, 5), n_components=6, seed=7).fit(changes).predict(list(changes.index))
    b = EmbeddingRegressor(emb, head="knn", k_grid=(3, 5), n_components=6, seed=7).fit(changes).predict(list(changes.index))
    pd.testing.assert_frame_equal(a, b)


def test_cross_validation_never_fits_on_a_test_perturbation():
    changes, emb = _data(n_perts=50, genes_are_targets=True)
    folds = kfold_split(list(changes.index), n_folds=5, seed=42)
    sources = [
        fixed_source("fixed", emb),
        EmbeddingSource("PCA of training labels", "null method", lambda train, everything: label_pca_embedding(train, 5), per_fold=True),
        EmbeddingSource(
            "idealized PCA, cheater",
            "cheater",
            lambda train, everything: idealized_embedding(everything, 5),
            preprocess=False,
            per_fold=True,
        ),
    ]
    seen_tests = set()
    for source in sources:
        pred, log, _ = cross_validate_source(changes, folds, source, head="knn", k_grid=(3, 5), n_components=5)
        assert sorted(pred.index) == sorted(changes.index)  # every perturbation predicted exactly once
        assert list(log["fold"]) == [0, 1, 2, 3, 4]
        seen_tests |= set(pred.index)
    # now check the records themselves, fold by fold, independently of cross_validate_source's own checks
    for split in folds:
        train = changes.loc[list(split.train)]
        for source in sources:
            built = source.get(train, changes)
            model = EmbeddingRegressor(built, k_grid=(3, 5), n_components=5, preprocess=source.preprocess).fit(train)
            stages = dict(model.fit_log_)
            assert set(stages) == {f"inner fold {i}" for i in range(5)} | {"final fit"}
            for names in stages.values():
                assert not set(names) & set(split.test)
            assert set(stages["final fit"]) == set(split.train)
            inner = set().union(*(set(v) for s, v in stages.items() if s.startswith("inner")))
            assert inner == set(split.train)
            if source.kind == "cheater":
                assert set(built.attrs["fitted_on"]) >= set(split.test)  # by design, and labelled so
            else:
                assert not set(built.attrs.get("fitted_on", ())) & set(split.test)


def test_cross_validation_catches_an_embedding_built_from_test_labels():
    changes, emb = _data(n_perts=40, genes_are_targets=True)
    folds = kfold_split(list(changes.index), n_folds=4, seed=1)
    # a careless embedding that looks at every label although it is not declared a cheater
    leaky = EmbeddingSource("leaky PCA", "null method", lambda train, everything: label_pca_embedding(changes, 5), per_fold=True)
    with pytest.raises(AssertionError, match="leaky PCA embedding \\(fold 0\\) was fitted on"):
        cross_validate_source(changes, folds, leaky, k_grid=(3,), n_components=5)


def test_model_label():
    assert model_label("GO", "knn") == "GO (kNN)"
    assert model_label("random", "lasso") == "random (Lasso)"


def test_random_embedding_predicts_no_better_than_the_mean():
    changes, _ = _data(n_perts=80, noise=0.1)
    folds = kfold_split(list(changes.index), n_folds=5, seed=42)
    rand = fixed_source("random", random_embedding(changes.index, 20, seed=1), kind="null method")
    pred, _, _ = cross_validate_source(changes, folds, rand, k_grid=(10, 20), n_components=10)
    informative, _, _ = cross_validate_source(
        changes, folds, fixed_source("true", _data(n_perts=80, noise=0.1)[1]), head="lasso", n_components=10
    )
    err = lambda p: float(np.sqrt(((p - changes.loc[p.index]) ** 2).sum(axis=1)).mean())  # noqa: E731
    mean_err = float(np.sqrt(((changes - changes.mean()) ** 2).sum(axis=1)).mean())
    assert err(pred) > 0.9 * mean_err
    assert err(informative) < 0.5 * mean_err
