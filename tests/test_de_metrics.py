"""cell-eval-style DE metrics and the energy distance in PC space, against independent computations."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from helpers.metrics.de import (
    DEResult,
    de_direction_match,
    de_overlap,
    de_precision,
    de_recall,
    de_spearman_lfc,
    differential_expression,
    energy_distances,
    fit_pca,
    log2_fold_change,
    project,
)
from helpers.metrics.distribution import PCASpace


def _de(lfc: dict[str, list[float]], padj: dict[str, list[float]], genes: list[str], reference: str = "control (real cells)") -> DEResult:
    index = pd.Index(list(lfc), name="perturbation")
    L = pd.DataFrame([lfc[p] for p in index], index=index, columns=genes)
    P = pd.DataFrame([padj[p] for p in index], index=index, columns=genes)
    return DEResult(L, L.copy(), P, P, reference, pd.Series(10, index=index))


GENES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def pair():
    # real: significant a (|2|), c (|-3|), e (|1|) -> ranked c, a, e
    real = _de(
        {"P": [2.0, 0.5, -3.0, 0.1, 1.0, 0.2], "Q": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
        {"P": [0.01, 0.5, 0.001, 0.9, 0.04, 0.3], "Q": [0.9] * 6},
        GENES,
    )
    # pred: significant a (1), b (-4), c (-2), f (0.5) -> ranked b, c, a, f
    pred = _de(
        {"P": [1.0, -4.0, -2.0, 0.0, -0.5, 0.5], "Q": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]},
        {"P": [0.02, 0.001, 0.01, 0.9, 0.2, 0.03], "Q": [0.01, 0.9, 0.9, 0.9, 0.9, 0.9]},
        GENES,
    )
    return real, pred


def test_overlap_and_precision_by_hand(pair):
    real, pred = pair
    # overlap at N: N = 3 real genes {c, a, e} vs the top 3 predicted {b, c, a}: 2 / 3
    assert de_overlap(real, pred)["P"] == pytest.approx(2 / 3)
    # at k = 2: {c, a} vs {b, c}: 1 / 2; k larger than the real count is capped at 3
    assert de_overlap(real, pred, k=2)["P"] == pytest.approx(1 / 2)
    assert de_overlap(real, pred, k=50)["P"] == pytest.approx(2 / 3)
    # precision at N: N = 4 predicted genes; top 4 real = {c, a, e} (only 3) vs {b, c, a, f}: 2 / 4
    assert de_precision(real, pred)["P"] == pytest.approx(2 / 4)
    # Q has no real significant gene: undefined (cell-eval writes 0)
    assert np.isnan(de_overlap(real, pred)["Q"]) and de_precision(real, pred)["Q"] == 0.0


def test_direction_spearman_recall_by_hand(pair):
    real, pred = pair
    # real significant a (+), c (-), e (+); predicted a (+), c (-), e (-): 2 of 3 agree
    assert de_direction_match(real, pred)["P"] == pytest.approx(2 / 3)
    assert de_spearman_lfc(real, pred)["P"] == pytest.approx(stats.spearmanr([2.0, -3.0, 1.0], [1.0, -2.0, -0.5]).statistic)
    # a and c are significant in the prediction, e is not
    assert de_recall(real, pred)["P"] == pytest.approx(2 / 3)
    assert np.isnan(de_recall(real, pred)["Q"]) and np.isnan(de_direction_match(real, pred)["Q"])


def test_overlap_agrees_with_a_brute_force_loop():
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(200)]
    perts = [f"p{i}" for i in range(8)]
    real = _de({p: rng.normal(0, 1, 200).tolist() for p in perts}, {p: rng.uniform(0, 0.2, 200).tolist() for p in perts}, genes)
    pred = _de({p: rng.normal(0, 1, 200).tolist() for p in perts}, {p: rng.uniform(0, 0.2, 200).tolist() for p in perts}, genes)

    def top(de, p, k=None):
        sig = [(abs(de.lfc.loc[p, g]), i, g) for i, g in enumerate(genes) if de.padj.loc[p, g] < 0.05]
        ranked = [g for _, _, g in sorted(sig, key=lambda x: (-x[0], x[1]))]
        return ranked

    for k in (None, 10):
        got = de_overlap(real, pred, k=k)
        for p in perts:
            r, q = top(real, p), top(pred, p)
            kk = len(r) if k is None else min(k, len(r))
            assert got[p] == pytest.approx(len(set(r[:kk]) & set(q[:kk])) / kk)


def test_log2_fold_change_of_geometric_means():
    m = np.log1p(np.array([3.0, 0.0, 1.0, 0.0]))
    r = np.log1p(np.array([1.0, 0.0, 0.0, 2.0]))
    out = log2_fold_change(m, r)
    assert out[0] == pytest.approx(np.log2(3.0)) and out[1] == 0.0 and out[2] == np.inf and out[3] == -np.inf


def _cells(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = ["control"] * 30 + ["A"] * 20 + ["B"] * 25 + ["C"] * 15
    X = np.log1p(rng.poisson(2.0, size=(len(labels), 12)).astype(float))
    X[30:50, :3] += 1.0
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))


def test_de_test_is_scipys_welch_test_and_does_not_depend_on_the_chunks():
    cells = _cells()
    one = differential_expression(cells, chunk=1)
    all_ = differential_expression(cells, chunk=8)
    pd.testing.assert_frame_equal(one.p, all_.p)
    X = cells.X.toarray()
    labels = cells.obs["perturbation"].astype(str).to_numpy()
    ref = stats.ttest_ind(X[labels == "A"], X[labels == "control"], equal_var=False)
    np.testing.assert_allclose(all_.t.loc["A"].to_numpy(), ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(all_.p.loc["A"].to_numpy(), ref.pvalue, rtol=1e-8)
    assert all_.significant().loc["A"] >= 3  # the three shifted genes


def _brute_energy(a: np.ndarray, b: np.ndarray) -> float:
    def mean_dist(x, y):
        return np.mean([np.linalg.norm(x[i] - y[j]) for i in range(len(x)) for j in range(len(y))])

    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def test_energy_distance_in_pc_space_against_a_brute_force_computation():
    truth, pred = _cells(0), _cells(1)
    space = fit_pca(truth, n_components=4)
    X = truth.X.toarray()
    centred = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # the same subspace as the exact SVD (randomised solver, 4 of 12 dimensions)
    np.testing.assert_allclose(np.abs(space.components @ vt[:4].T), np.eye(4), atol=1e-6)
    got = energy_distances(pred, truth, space, ["A", "B"])
    for p in ("A", "B"):
        a = (pred.X.toarray()[pred.obs["perturbation"] == p] - space.mean) @ space.components.T
        b = (X[truth.obs["perturbation"] == p] - space.mean) @ space.components.T
        assert got[p] == pytest.approx(_brute_energy(a, b), rel=1e-9)
    # one dimension: the square root of E is scipy's energy distance
    one = PCASpace(np.zeros(12), np.eye(12)[:1])
    a = pred.X.toarray()[pred.obs["perturbation"] == "A", 0]
    b = X[truth.obs["perturbation"] == "A", 0]
    assert np.sqrt(energy_distances(pred, truth, one, ["A"])["A"]) == pytest.approx(stats.energy_distance(a, b), rel=1e-9)


def test_sparse_projection_equals_the_dense_one():
    cells = _cells(2)
    space = fit_pca(cells, n_components=3)
    np.testing.assert_allclose(project(space, cells.X), space.transform(cells.X.toarray()), atol=1e-10)


def test_randomised_pca_finds_the_leading_components_of_sparse_cells():
    rng = np.random.default_rng(5)
    scores = rng.normal(0, 1, (400, 3)) * np.array([5.0, 3.0, 2.0])
    loadings = np.linalg.qr(rng.normal(0, 1, (80, 3)))[0].T
    X = np.clip(scores @ loadings + 4.0 + rng.normal(0, 0.1, (400, 80)), 0, None)
    X[rng.random(X.shape) < 0.05] = 0.0  # sparse, as cells are (a spectral gap after 3 components remains)
    space = fit_pca(sp.csr_matrix(X), n_components=3, seed=1)  # 80 genes > 3 + 20: the randomised solver
    exact = PCASpace.fit(X, n_components=3)
    np.testing.assert_allclose(space.mean, exact.mean, atol=1e-12)
    # the same leading subspace: cosines of the principal angles all near 1, same signs
    cosines = np.linalg.svd(space.components @ exact.components.T, compute_uv=False)
    assert cosines.min() > 0.9999
    assert np.all(np.sign(np.diag(space.components @ exact.components.T)) == 1)
