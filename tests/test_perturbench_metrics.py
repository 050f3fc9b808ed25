"""PerturBench's metrics: log-fold-change cosine and its rank, top-k DE recall, energy distances and their rank."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.errors import DataError
from helpers.metrics import METRICS, evaluate
from helpers.metrics.distribution import PCASpace, energy_distance
from helpers.metrics.perturbench import (
    cell_metrics,
    cosine_logfc_vs_control,
    de_t_scores,
    energy_distance_matrix,
    log_fold_change,
    rank_cosine_logfc_vs_control,
    rank_of_matches,
    top_k_recall,
)


def _tables(seed=0, n=6, g=15):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(g)]
    control = pd.Series(rng.uniform(0, 2, g), index=genes)
    truth = pd.DataFrame(control.to_numpy() + rng.normal(0, 0.5, (n, g)), index=[f"p{i}@L" for i in range(n)], columns=genes).clip(0)
    pred = truth + rng.normal(0, 0.4, truth.shape)
    return pred.clip(0), truth, control


def test_cosine_of_log_fold_changes_by_hand():
    pred, truth, control = _tables()
    got = cosine_logfc_vs_control(pred, truth, control)
    for p in truth.index:
        a = np.log2(pred.loc[p] + 0.1) - np.log2(control + 0.1)
        b = np.log2(truth.loc[p] + 0.1) - np.log2(control + 0.1)
        assert got[p] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), rel=1e-12)
    # a prediction equal to the control has no fold change: undefined, not 0
    same = pred.copy()
    same.iloc[0] = control.to_numpy()
    assert np.isnan(cosine_logfc_vs_control(same, truth, control).iloc[0])
    # negative predicted means (a decoder without softplus) count as 0 expression
    neg = pred.copy()
    neg.iloc[0, 0] = -0.5
    clipped = pred.copy()
    clipped.iloc[0, 0] = 0.0
    assert cosine_logfc_vs_control(neg, truth, control).iloc[0] == cosine_logfc_vs_control(clipped, truth, control).iloc[0]
    with pytest.raises(DataError, match="negative"):
        log_fold_change(truth.to_numpy(), -control.to_numpy())


def test_rank_of_cosine_logfc_against_a_brute_force_loop():
    pred, truth, control = _tables(seed=1, n=8)
    got = rank_cosine_logfc_vs_control(pred, truth, control)
    lp = np.log2(pred + 0.1) - np.log2(control + 0.1)
    lt = np.log2(truth + 0.1) - np.log2(control + 0.1)
    n = len(truth)
    for p in truth.index:
        sims = {q: float(lp.loc[q] @ lt.loc[p] / np.linalg.norm(lp.loc[q]) / np.linalg.norm(lt.loc[p])) for q in truth.index}
        better = sum(sims[q] > sims[p] for q in truth.index if q != p)
        assert got[p] == pytest.approx(better / (n - 1))
    # mode collapse: the same prediction for all gives exactly 0.5; the truth itself gives 0
    collapsed = pd.DataFrame([pred.iloc[0].to_numpy()] * n, index=pred.index, columns=pred.columns)
    assert (rank_cosine_logfc_vs_control(collapsed, truth, control) == 0.5).all()
    assert (rank_cosine_logfc_vs_control(truth, truth, control) == 0).all()


def test_the_new_metrics_are_in_the_registry():
    pred, truth, control = _tables()
    for name in ("cosine_logfc_vs_control", "rank_cosine_logfc_vs_control"):
        info = METRICS[name]
        assert info.reference == "control" and "PerturBench" in info.source
    assert METRICS["rank_cosine_logfc_vs_control"].chance == 0.5
    table = evaluate(pred, truth, control, metrics=["cosine_logfc_vs_control", "rank_cosine_logfc_vs_control"])
    pd.testing.assert_series_equal(table["cosine_logfc_vs_control"], cosine_logfc_vs_control(pred, truth, control), check_names=False)


def test_top_k_recall_by_hand():
    obs = np.array([5.0, -4.0, 3.0, 0.1, 0.2, -0.3])
    pred = np.array([0.0, 9.0, 1.0, 8.0, 0.0, 0.0])
    # top-3 observed by |t|: genes 0, 1, 2; top-3 predicted: 1, 3, 2 -> overlap {1, 2}
    assert top_k_recall(obs, pred, k=3) == pytest.approx(2 / 3)
    assert top_k_recall(obs, obs, k=3) == 1.0
    with pytest.raises(DataError, match="k must be"):
        top_k_recall(obs, pred, k=7)


def test_t_scores_overestimate_the_control_variance_as_scanpy():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 1.0, (12, 4))
    c = rng.normal(0.0, 2.0, (40, 4))
    t = de_t_scores(x, c)
    n = x.shape[0]
    want = (x.mean(0) - c.mean(0)) / np.sqrt(x.var(0, ddof=1) / n + c.var(0, ddof=1) / n)
    np.testing.assert_allclose(t, want, rtol=1e-10)
    # the usual Welch t (scipy) uses the control's own size and is larger in magnitude here
    assert (np.abs(stats.ttest_ind(x, c, equal_var=False).statistic) > np.abs(t)).all()


def test_energy_distance_matrix_and_its_rank():
    rng = np.random.default_rng(3)
    observed = [rng.normal(m, 1.0, (30, 3)) for m in (0.0, 2.0, 4.0, 6.0)]
    predicted = [o + rng.normal(0, 0.1, o.shape) for o in observed]
    M = energy_distance_matrix(predicted, observed)
    for i in range(4):
        for j in range(4):
            assert M[i, j] == pytest.approx(energy_distance(predicted[i], observed[j]), rel=1e-10)
    assert (rank_of_matches(M) == 0).all()
    # brute force on a random table: for each observation (column), other predictions closer than its own, /(N-1)
    R = rng.random((6, 6))
    want = [sum(R[q, p] < R[p, p] for q in range(6) if q != p) / 5 for p in range(6)]
    np.testing.assert_allclose(rank_of_matches(R), want)
    np.testing.assert_allclose(rank_of_matches(-R, lower_is_closer=False), want)
    # identical predictions (a decoder's single profile) tie everywhere: exactly 0.5
    same = [np.zeros((5, 3))] * 4
    assert (rank_of_matches(energy_distance_matrix(same, observed)) == 0.5).all()


def test_cell_metrics_of_one_line():
    rng = np.random.default_rng(4)
    control = rng.normal(0, 1, (40, 8))
    shifts = {f"p{i}@L": np.eye(8)[i] * 3 for i in range(3)}
    observed = {k: control[:30] + v + rng.normal(0, 0.2, (30, 8)) for k, v in shifts.items()}
    predicted = {k: control[10:] + v for k, v in shifts.items()}
    space = PCASpace.fit(np.vstack([control] + list(observed.values())), n_components=5)
    table = cell_metrics(predicted, observed, control, space, k=1)
    assert list(table.columns) == ["top1_recall_de_vs_control", "energy_distance_pca5", "rank_energy_distance_pca5"]
    assert (table["top1_recall_de_vs_control"] == 1).all() and (table["rank_energy_distance_pca5"] == 0).all()
    with pytest.raises(DataError, match="same conditions"):
        cell_metrics({"p0@L": predicted["p0@L"]}, observed, control, space)
