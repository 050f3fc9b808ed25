"""Tests of helpers.metrics against values computed by hand or by an independent route."""

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

import helpers.metrics.ranking as ranking_module
from helpers.errors import DataError
from helpers.metrics import (
    METRICS,
    centroid_accuracy,
    cumulative_l2,
    de_gene_sets,
    deg_weights,
    discrimination_score,
    discrimination_score_l1_vs_control,
    dynamic_range_fraction,
    evaluate,
    genes_by_change,
    l2,
    mae,
    metrics_table,
    mse,
    pearson_delta,
    pearson_delta_de20_vs_control,
    pearson_delta_de20_vs_perturbed_mean,
    pearson_delta_vs_control,
    pearson_delta_vs_perturbed_mean,
    perturbed_mean,
    published_rank_grid,
    r2_delta_vs_control,
    r2_delta_vs_perturbed_mean,
    rank_cosine_delta_vs_control,
    rank_rmse,
    rmse,
    summary,
    systematic_variation,
    weighted_mse,
    weighted_r2_delta_vs_control,
    weighted_r2_delta_vs_perturbed_mean,
)


def frame(values, perts=None, genes=None):
    values = np.asarray(values, dtype=float)
    perts = perts or [f"P{i}" for i in range(values.shape[0])]
    genes = genes or [f"g{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, index=perts, columns=genes)


# --- systematic variation -------------------------------------------------------------


def test_systematic_variation_by_hand():
    # mean change = (2/3, 1/3, 2/3), norm 1: cosines 2/3, (2/3 + 1/3)/sqrt(2), (4/3)/2
    changes = frame([[1, 0, 0], [1, 1, 0], [0, 0, 2]])
    result = systematic_variation(changes)
    expected = [2 / 3, 1 / np.sqrt(2), 2 / 3]
    np.testing.assert_allclose(result.cosines.to_numpy(), expected)
    assert result.score == pytest.approx(np.mean(expected))
    assert result.cosines.name == "systematic_variation_cosine"


def test_systematic_variation_identical_shifts_is_one_and_zero_change_is_nan():
    changes = frame([[1, 2, 3], [2, 4, 6], [0, 0, 0]])
    result = systematic_variation(changes)
    assert np.isnan(result.cosines["P2"])
    assert result.score == pytest.approx(1.0)


def test_systematic_variation_refuses_profiles_with_control_row():
    with pytest.raises(DataError, match="changes"):
        systematic_variation(frame([[1, 0], [0, 1]], perts=["control", "A"]))


# --- perturbed mean --------------------------------------------------------------------


def test_perturbed_mean_weightings():
    profiles = frame([[1, 0, 0], [1, 1, 0], [0, 0, 2]], perts=["A", "B", "C"])
    np.testing.assert_allclose(perturbed_mean(profiles).to_numpy(), [2 / 3, 1 / 3, 2 / 3])
    n = pd.Series({"A": 1, "B": 1, "C": 2})
    # (1*[1,0,0] + 1*[1,1,0] + 2*[0,0,2]) / 4
    np.testing.assert_allclose(perturbed_mean(profiles, "cell", n).to_numpy(), [0.5, 0.25, 1.0])
    assert perturbed_mean(profiles).name == "perturbed_mean"
    with pytest.raises(DataError, match="n_cells"):
        perturbed_mean(profiles, "cell")


# --- shared fixtures -------------------------------------------------------------------


def random_problem(n=100, g=50, seed=0, effect=1.0):
    rng = np.random.default_rng(seed)
    genes = [f"g{j}" for j in range(g)]
    perts = [f"P{i}" for i in range(n)]
    control = pd.Series(rng.gamma(2.0, 1.0, g), index=genes)
    truth = pd.DataFrame(control.to_numpy() + rng.normal(0, effect, (n, g)), index=perts, columns=genes)
    return truth, control, rng


# --- input checks ----------------------------------------------------------------------


def test_gene_mismatch_says_which_genes_are_missing_where():
    truth = frame([[1, 2, 3]], genes=["A", "B", "C"])
    pred = frame([[1, 2, 3]], genes=["A", "B", "D"])
    with pytest.raises(DataError) as err:
        mse(pred, truth)
    text = str(err.value)
    assert "1 genes of truth are missing from pred ('C')" in text
    assert "1 genes of pred are missing from truth ('D')" in text


def test_missing_perturbation_is_named():
    truth = frame([[1, 2], [3, 4]], perts=["KLF1", "CEBPA"])
    pred = frame([[1, 2]], perts=["KLF1"])
    with pytest.raises(DataError, match=r"1 perturbations of truth are missing from pred \('CEBPA'\)"):
        evaluate(pred, truth, control=pd.Series([0.0, 0.0], index=["g0", "g1"]))


def test_nan_in_prediction_names_the_perturbation():
    truth = frame([[1, 2], [3, 4]], perts=["KLF1", "CEBPA"])
    pred = frame([[1, np.nan], [3, 4]], perts=["KLF1", "CEBPA"])
    with pytest.raises(DataError, match=r"pred has NaN or infinite values for 1 perturbations: 'KLF1'"):
        rmse(pred, truth)


def test_reference_must_cover_the_genes_and_control_row_is_refused():
    truth = frame([[1, 2, 3]])
    with pytest.raises(DataError, match="control reference lacks 1 of the 3"):
        pearson_delta_vs_control(truth, truth, pd.Series([0.0, 1.0], index=["g0", "g1"]))
    with pytest.raises(DataError, match="'control' row"):
        mse(frame([[1, 2]], perts=["control"]), frame([[1, 2]], perts=["control"]))


def test_order_of_rows_and_columns_does_not_matter():
    truth, control, rng = random_problem(n=12, g=8, seed=3)
    pred = truth + rng.normal(0, 0.5, truth.shape)
    shuffled = pred.iloc[rng.permutation(12), rng.permutation(8)]
    a = evaluate(pred, truth, control, perturbed_mean=truth.mean())
    b = evaluate(shuffled, truth, control, perturbed_mean=truth.mean())
    pd.testing.assert_frame_equal(a, b)
    assert list(a.index) == list(truth.index)


# --- reference-free errors -------------------------------------------------------------


def test_errors_by_hand():
    truth = frame([[1, 0, 0], [1, 1, 1]])
    pred = frame([[1, 2, 3], [0, 0, 0]])
    # row 0: errors (0, 2, 3) -> squares 0, 4, 9; row 1: errors (-1, -1, -1)
    np.testing.assert_allclose(l2(pred, truth), [np.sqrt(13), np.sqrt(3)])
    np.testing.assert_allclose(mse(pred, truth), [13 / 3, 1])
    np.testing.assert_allclose(rmse(pred, truth), [np.sqrt(13 / 3), 1])
    np.testing.assert_allclose(mae(pred, truth), [5 / 3, 1])
    assert [f(pred, truth).name for f in (l2, mse, rmse, mae)] == ["l2", "mse", "rmse", "mae"]
    assert list(l2(pred, truth).index) == ["P0", "P1"]


# --- PearsonΔ --------------------------------------------------------------------------


def test_pearson_delta_both_references_by_hand():
    genes = ["g0", "g1", "g2"]
    control = pd.Series([1.0, 1.0, 1.0], index=genes)
    pmean = pd.Series([2.0, 1.0, 2.0], index=genes)
    truth = frame([[2, 3, 1], [2, 3, 1]], perts=["A", "B"])
    pred = frame([[2, 2, 1], [1, 1, 1]], perts=["A", "B"])
    # A vs control: Δpred (1,1,0), Δtrue (1,2,0): sxy = 1, sxx = 2/3, syy = 2 -> sqrt(3)/2
    # A vs perturbed mean: Δpred (0,1,-1), Δtrue (0,2,-1): sxy = 3, sxx = 2, syy = 14/3
    vs_ctrl = pearson_delta_vs_control(pred, truth, control)
    vs_pert = pearson_delta_vs_perturbed_mean(pred, truth, pmean)
    assert vs_ctrl["A"] == pytest.approx(np.sqrt(3) / 2)
    assert vs_pert["A"] == pytest.approx(3 / np.sqrt(2 * 14 / 3))
    # B predicts the control profile: no predicted change -> NaN, never 0
    assert np.isnan(vs_ctrl["B"])
    # ... but against the perturbed mean it has a change (-1, 0, -1) vs (0, 2, -1)
    assert vs_pert["B"] == pytest.approx(np.corrcoef([-1, 0, -1], [0, 2, -1])[0, 1])
    assert vs_ctrl.name == "pearson_delta_vs_control"
    assert vs_pert.name == "pearson_delta_vs_perturbed_mean"


def test_pearson_delta_matches_numpy_on_random_data():
    truth, control, rng = random_problem(n=6, g=40, seed=1)
    pred = truth + rng.normal(0, 1.0, truth.shape)
    got = pearson_delta_vs_control(pred, truth, control)
    for p in truth.index:
        expected = np.corrcoef(pred.loc[p] - control, truth.loc[p] - control)[0, 1]
        assert got[p] == pytest.approx(expected, rel=1e-12)


def test_mean_baseline_has_undefined_pearson_delta_vs_its_own_mean():
    truth, control, _ = random_problem(n=5, g=10, seed=2)
    pm = truth.mean()
    pred = pd.DataFrame(np.tile(pm.to_numpy(), (5, 1)), index=truth.index, columns=truth.columns)
    assert pearson_delta_vs_perturbed_mean(pred, truth, pm).isna().all()
    assert pearson_delta_vs_control(pred, truth, control).notna().all()


def test_pearson_delta_de20_by_hand_and_gene_set_checks():
    genes = ["g0", "g1", "g2", "g3", "g4"]
    control = pd.Series(0.0, index=genes)
    pmean = pd.Series([0.0, 1.0, 0.0, 5.0, 5.0], index=genes)
    truth = frame([[1, 2, 0, 9, 9], [1, 2, 3, 9, 9]], perts=["A", "B"], genes=genes)
    pred = frame([[1, 1, 0, -9, 7], [3, 2, 1, 9, 9]], perts=["A", "B"], genes=genes)
    de = {"A": ["g0", "g1", "g2"], "B": ["g2", "g1", "g0"]}
    got = pearson_delta_de20_vs_control(pred, truth, control, de)
    # A on g0..g2: pred (1,1,0), true (1,2,0) -> sqrt(3)/2 (genes g3, g4 ignored)
    assert got["A"] == pytest.approx(np.sqrt(3) / 2)
    # B: pred (3,2,1), true (1,2,3) -> perfectly anti-correlated
    assert got["B"] == pytest.approx(-1.0)
    assert got.name == "pearson_delta_de20_vs_control"
    # vs perturbed mean, A: Δpred (1,0,0), Δtrue (1,1,0) -> (1/3) / (2/3);
    # B: Δpred (3,1,1), Δtrue (1,1,3) -> (-12/9) / (24/9)
    vs_pert = pearson_delta_de20_vs_perturbed_mean(pred, truth, pmean, de)
    np.testing.assert_allclose(vs_pert, [0.5, -0.5])
    assert vs_pert.name == "pearson_delta_de20_vs_perturbed_mean"
    # one shared list works the same
    shared = pearson_delta_de20_vs_control(pred, truth, control, ["g0", "g1", "g2"])
    pd.testing.assert_series_equal(shared, got)
    with pytest.raises(DataError, match="not among the evaluated genes"):
        pearson_delta_de20_vs_control(pred, truth, control, {"A": ["g0", "XX", "g1"], "B": genes})
    with pytest.raises(DataError, match="no gene list for 1"):
        pearson_delta_de20_vs_control(pred, truth, control, {"A": genes})
    with pytest.raises(DataError, match="up to 25 genes"):
        pearson_delta_de20_vs_control(pred, truth, control, {"A": genes * 5, "B": genes})
    named = pearson_delta(pred, truth, control, gene_sets=de, gene_set_name="de3")
    assert named.name == "pearson_delta_de3_vs_control"


# --- R² and DEG weights ----------------------------------------------------------------


def test_deg_weights_by_hand():
    t = frame([[-4, 2, 1, 0], [1, np.nan, -3, 2], [2, 2, -2, 2]])
    w = deg_weights(t)
    np.testing.assert_allclose(w.loc["P0"], [1, 0.25, 1 / 16, 0])
    # |t| = 1, absent, 3, 2: min 1, max 3 -> (0, 0 (absent), 1, 1/4)
    np.testing.assert_allclose(w.loc["P1"], [0, 0, 1, 0.25])
    np.testing.assert_allclose(w.loc["P2"], [0, 0, 0, 0])  # constant |t|


def test_weighted_mse_by_hand():
    truth = frame([[0, 0, 0], [1, 1, 1]])
    pred = frame([[1, 2, 3], [1, 1, 1]])
    w = frame([[1, 0.5, 0], [0, 0, 0]])
    got = weighted_mse(pred, truth, w)
    assert got["P0"] == pytest.approx((1 * 1 + 0.5 * 4) / 1.5)
    assert np.isnan(got["P1"])  # all weights zero


def test_r2_delta_by_hand():
    genes = ["g0", "g1", "g2"]
    control = pd.Series(0.0, index=genes)
    pmean = pd.Series([2.0, 0.0, 1.0], index=genes)
    truth = frame([[1, 2, 3]], perts=["A"], genes=genes)
    pred = frame([[1, 3, 3]], perts=["A"], genes=genes)
    # residual Δtrue − Δpred = (0,-1,0) for any reference
    # vs control: Δtrue (1,2,3), mean 2, SS 2 -> 1 - 1/2
    assert r2_delta_vs_control(pred, truth, control)["A"] == pytest.approx(0.5)
    # vs perturbed mean: Δtrue (-1,2,2), mean 1, SS 6 -> 1 - 1/6
    assert r2_delta_vs_perturbed_mean(pred, truth, pmean)["A"] == pytest.approx(5 / 6)
    w = frame([[1, 1, 0]], perts=["A"], genes=genes)
    # weighted vs control: Δtrue (1,2) weighted mean 1.5, SS 0.5, residual SS 1 -> 1 - 2 = -1
    assert weighted_r2_delta_vs_control(pred, truth, control, w)["A"] == pytest.approx(-1.0)
    # weighted vs perturbed mean: Δtrue (-1,2), mean 0.5, SS 4.5 -> 1 - 1/4.5
    assert weighted_r2_delta_vs_perturbed_mean(pred, truth, pmean, w)["A"] == pytest.approx(7 / 9)


def test_weighted_r2_matches_sklearn():
    truth, control, rng = random_problem(n=8, g=30, seed=4)
    pred = truth + rng.normal(0, 0.8, truth.shape)
    pm = truth.mean() + 0.3
    w = deg_weights(pd.DataFrame(rng.normal(0, 3, truth.shape), index=truth.index, columns=truth.columns))
    for ref, func, wfunc in (
        (control, r2_delta_vs_control, weighted_r2_delta_vs_control),
        (pm, r2_delta_vs_perturbed_mean, weighted_r2_delta_vs_perturbed_mean),
    ):
        unweighted = func(pred, truth, ref)
        weighted = wfunc(pred, truth, ref, w)
        for p in truth.index:
            yt, yp = truth.loc[p] - ref, pred.loc[p] - ref
            assert unweighted[p] == pytest.approx(r2_score(yt, yp), rel=1e-10)
            assert weighted[p] == pytest.approx(r2_score(yt, yp, sample_weight=w.loc[p]), rel=1e-10)


def test_r2_is_nan_when_observed_change_is_flat():
    control = pd.Series(0.0, index=["g0", "g1", "g2"])
    truth = frame([[2, 2, 2]])
    assert np.isnan(r2_delta_vs_control(frame([[1, 2, 3]]), truth, control)["P0"])


# --- centroid accuracy -----------------------------------------------------------------


def test_centroid_accuracy_with_an_exact_tie():
    truth = frame([[0, 0], [2, 0], [-2, 0]], perts=["A", "B", "C"])
    pred = frame([[1, 0], [2, 0], [0, 0]], perts=["A", "B", "C"])
    # A: d(A)=1, d(B)=1 (tie), d(C)=3 -> (1 farther + 1/2) / 2 ; strict: 1/2
    # B: exact -> 1 ; C: d(C)=2, d(A)=0 closer, d(B)=2 tie -> (0 + 1/2) / 2 ; strict 0
    half = centroid_accuracy(pred, truth)
    strict = centroid_accuracy(pred, truth, ties="strict")
    np.testing.assert_allclose(half, [0.75, 1.0, 0.25])
    np.testing.assert_allclose(strict, [0.5, 1.0, 0.0])
    assert half.name == "centroid_accuracy"


def test_centroid_accuracy_matches_a_direct_loop_and_extra_references():
    truth, _, rng = random_problem(n=15, g=10, seed=5)
    pred = truth + rng.normal(0, 1.5, truth.shape)
    extra = pd.DataFrame(rng.normal(2, 1, (5, 10)), index=[f"T{i}" for i in range(5)], columns=truth.columns)
    refs = pd.concat([truth, extra])
    got = centroid_accuracy(pred, truth, extra_truth=extra)
    for p in truth.index:
        d = np.linalg.norm(refs.to_numpy() - pred.loc[p].to_numpy(), axis=1)
        i = truth.index.get_loc(p)
        others = np.delete(d, i)
        assert got[p] == pytest.approx((others > d[i]).sum() / (len(refs) - 1))


# --- PerturBench rank metric -----------------------------------------------------------


def test_rank_metric_is_zero_for_perfect_and_near_half_for_shuffled():
    truth, control, rng = random_problem(n=100, g=50, seed=0)
    assert rank_rmse(truth, truth).eq(0).all()
    assert rank_cosine_delta_vs_control(truth, truth, control).eq(0).all()
    shuffled = truth.iloc[rng.permutation(100)].set_axis(truth.index)
    # Under a random assignment each rank is close to uniform on [0, 1] (sd 0.29), so the
    # mean of 100 has sd ~0.03; 0.1 is more than three standard deviations.
    assert rank_rmse(shuffled, truth).mean() == pytest.approx(0.5, abs=0.1)
    assert rank_cosine_delta_vs_control(shuffled, truth, control).mean() == pytest.approx(0.5, abs=0.1)


def test_rank_metric_by_hand_with_tie_and_n_minus_1_normalisation():
    truth = frame([[0, 0], [4, 0], [0, 4]], perts=["A", "B", "C"])
    pred = frame([[1, 0], [3, 0], [0, 3]], perts=["A", "B", "C"])
    # reference A (0,0): pred A at 1, B at 3, C at 3 -> rank 0
    # reference B (4,0): pred B at 1, A at 3 -> rank 0;  C: pred C at 1 -> 0
    np.testing.assert_allclose(rank_rmse(pred, truth), [0, 0, 0])
    pred2 = frame([[2, 0], [2, 0], [0, 4]], perts=["A", "B", "C"])
    # reference A: pred A at 2, pred B at 2 (tie), pred C at 4 -> (0 + 1/2) / 2
    # reference B (4,0): pred A and B both at 2 -> (0 + 1/2) / 2; reference C: exact -> 0
    got = rank_rmse(pred2, truth)
    np.testing.assert_allclose(got, [0.25, 0.25, 0.0])
    assert got.name == "rank_rmse"


def test_rank_cosine_by_hand():
    control = pd.Series([0.0, 0.0], index=["g0", "g1"])
    truth = frame([[1, 0], [0, 1], [1, 1]], perts=["A", "B", "C"])
    pred = frame([[0, 1], [1, 0], [2, 2]], perts=["A", "B", "C"])
    # reference A (1,0): cos with pred A (0,1)=0, pred B (1,0)=1, pred C=0.71 -> 2 closer -> 2/2
    # reference B: same by symmetry -> 1; reference C: pred C cos 1 -> 0
    got = rank_cosine_delta_vs_control(pred, truth, control)
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0])
    assert got.name == "rank_cosine_delta_vs_control"


def test_rank_metric_matches_a_direct_loop():
    truth, _, rng = random_problem(n=20, g=15, seed=6)
    pred = truth + rng.normal(0, 1.2, truth.shape)
    got = rank_rmse(pred, truth)
    for p in truth.index:
        d = np.sqrt(((pred.to_numpy() - truth.loc[p].to_numpy()) ** 2).mean(axis=1))
        i = truth.index.get_loc(p)
        assert got[p] == pytest.approx((np.delete(d, i) < d[i]).sum() / 19)


# --- discrimination score --------------------------------------------------------------


def test_discrimination_score_excludes_the_target_gene():
    genes = ["A", "B", "g3"]
    control = pd.Series(5.0, index=genes)
    delta_true = frame([[-4, 0, 1], [0, -3, 2]], perts=["A", "B"], genes=genes)
    delta_pred = frame([[0, 0, 1], [0, -3, 2]], perts=["A", "B"], genes=genes)
    truth, pred = delta_true + 5.0, delta_pred + 5.0
    # A without gene A: pred (0,1) vs true A (0,1): 0, vs true B (-3,2): 4 -> rank 0 -> 1 - 0/2
    # A with gene A: vs true A 4, vs true B 4 -> tie -> rank 1/2 -> 0.75;  B is exact -> 1
    got = discrimination_score_l1_vs_control(pred, truth, control)
    np.testing.assert_allclose(got, [1.0, 1.0])
    assert got.name == "discrimination_score_l1_vs_control"
    with_target = discrimination_score(pred, truth, control, exclude_targets=False)
    np.testing.assert_allclose(with_target, [0.75, 1.0])


def test_discrimination_score_excludes_both_targets_of_a_double():
    genes = ["A", "B", "g3", "g4"]
    control = pd.Series(0.0, index=genes)
    truth = frame([[-5, -5, 1, 0], [0, 0, 0, 1], [0, 0, 1, 1]], perts=["A+B", "X", "Y"], genes=genes)
    pred = frame([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 1]], perts=["A+B", "X", "Y"], genes=genes)
    # A+B on (g3, g4): pred (1,0) = true A+B -> rank 0 -> 1.  With the targets: 10 away from its
    # own truth, 1 from X and Y -> rank 2 -> 1 - 2/3
    assert discrimination_score_l1_vs_control(pred, truth, control)["A+B"] == pytest.approx(1.0)
    assert discrimination_score(pred, truth, control, exclude_targets=False)["A+B"] == pytest.approx(1 / 3)


def test_discrimination_chance_by_hand():
    """N knock-downs, only the targets measured: Δ_p = −2 e_p. Under any derangement σ, p's prediction is −2 e_q (q = σ(p)).
    Without column p: own truth at L1 distance 2, Δ_q at 0, every other at 4 -> rank 1 -> PDS = 1 − 1/N, for every p and σ.
    With the targets kept: own truth 4, Δ_q 0, N − 2 others tied at 4 -> rank 1 + (N − 2)/2 -> PDS = 0.5 (not 0.5 + 1/(2N))."""
    from helpers.metrics import discrimination_chance

    n = 4
    genes = [f"G{i}" for i in range(n)]
    control = pd.Series(3.0, index=genes)
    truth = pd.DataFrame(3.0 - 2.0 * np.eye(n), index=genes, columns=genes)
    chance, se = discrimination_chance(truth, control, n_permutations=10, seed=3)
    assert chance == pytest.approx(1 - 1 / n) and se == pytest.approx(0.0)
    assert chance > 0.5 + 1 / (2 * n)  # the random-rank level is wrong here
    kept, _ = discrimination_chance(truth, control, exclude_targets=False, n_permutations=10, seed=3)
    assert kept == pytest.approx(0.5)
    assert discrimination_chance(truth, control, seed=1) == discrimination_chance(truth, control, seed=1)
    # a collapsed prediction (no change for all): without column p the own truth is exact, every other at 2 -> PDS 1
    collapsed = pd.DataFrame(3.0, index=genes, columns=genes)
    assert discrimination_chance(truth, control, collapsed, n_permutations=3)[0] == pytest.approx(1.0)
    # with the targets kept every candidate is at 2: all tied -> 1 − (N − 1)/(2N) = 0.5 + 1/(2N)
    assert discrimination_chance(truth, control, collapsed, exclude_targets=False, n_permutations=3)[0] == pytest.approx(0.5 + 1 / 8)
    assert METRICS["discrimination_score_l1_vs_control"].chance is None  # no fixed level: it depends on the data


def test_discrimination_score_matches_cell_eval_algorithm():
    # cell-eval: for each p, L1 distances of pred Δp to every true Δq without p's target
    # column, argsort ascending, rank = position of q = p (from 0), score = 1 - rank / N
    rng = np.random.default_rng(7)
    genes = [f"G{i}" for i in range(12)]
    perts = ["G0", "G1", "G2", "G3+G4", "NOTAGENE", "G5"]
    control = pd.Series(rng.gamma(2, 1, 12), index=genes)
    truth = pd.DataFrame(control.to_numpy() + rng.normal(0, 1, (6, 12)), index=perts, columns=genes)
    pred = truth + rng.normal(0, 1.0, truth.shape)
    for distance, metric in (("l1", "cityblock"), ("l2", "euclidean"), ("cosine", "cosine")):
        got = discrimination_score(pred, truth, control, distance=distance)
        dT, dP = (truth - control).to_numpy(), (pred - control).to_numpy()
        from scipy.spatial.distance import cdist

        for i, p in enumerate(perts):
            keep = [j for j, g in enumerate(genes) if g not in p.split("+")]
            d = cdist(dP[i : i + 1, keep], dT[:, keep], metric).ravel()
            rank = int(np.flatnonzero(np.argsort(d) == i)[0])
            assert got[p] == pytest.approx(1 - rank / len(perts)), (distance, p)


# --- mode collapse ---------------------------------------------------------------------


def test_mode_collapse_scores_chance_on_ranks_while_its_rmse_looks_good():
    truth, control, rng = random_problem(n=60, g=40, seed=8, effect=0.3)
    collapsed = pd.DataFrame(np.tile(truth.mean().to_numpy(), (60, 1)), index=truth.index, columns=truth.columns)
    informative = truth + rng.normal(0, 0.4, truth.shape)
    assert rmse(collapsed, truth).mean() < rmse(informative, truth).mean()
    assert rank_rmse(collapsed, truth).eq(0.5).all()  # every prediction tied: average rank
    assert centroid_accuracy(collapsed, truth).mean() == pytest.approx(0.5)
    assert discrimination_score_l1_vs_control(collapsed, truth, control).mean() == pytest.approx(0.5 + 1 / 120)
    assert rank_rmse(informative, truth).mean() < 0.05
    assert centroid_accuracy(informative, truth).mean() > 0.95


def test_blocked_computation_equals_one_block(monkeypatch):
    truth, control, rng = random_problem(n=30, g=20, seed=9)
    truth.index = [f"g{i}" for i in range(30)]  # perturbation names that are measured genes
    pred = truth + rng.normal(0, 1.0, truth.shape)
    funcs = [
        lambda: centroid_accuracy(pred, truth),
        lambda: rank_rmse(pred, truth),
        lambda: rank_cosine_delta_vs_control(pred, truth, control),
        lambda: discrimination_score(pred, truth, control, "l1"),
        lambda: discrimination_score(pred, truth, control, "l2"),
        lambda: discrimination_score(pred, truth, control, "cosine"),
    ]
    whole = [f() for f in funcs]
    monkeypatch.setattr(ranking_module, "BLOCK_ENTRIES", 70)  # blocks of 2 perturbations
    for f, expected in zip(funcs, whole):
        pd.testing.assert_series_equal(f(), expected)


# --- cumulative error ------------------------------------------------------------------


def test_cumulative_l2_by_hand():
    truth = frame([[1, 0, 0], [1, 1, 1]])
    pred = frame([[1, 2, 3], [0, 0, 0]])
    # row 0 squared errors (0, 4, 9); order g2, g0, g1 -> cumsum 9, 9, 13
    curve = cumulative_l2(pred, truth, ["g2", "g0", "g1"])
    np.testing.assert_allclose(curve.loc["P0"], [3, 3, np.sqrt(13)])
    np.testing.assert_allclose(curve.loc["P1"], [1, np.sqrt(2), np.sqrt(3)])
    np.testing.assert_allclose(curve[3], l2(pred, truth))
    assert list(curve.columns) == [1, 2, 3] and curve.columns.name == "n_genes"
    per_pert = cumulative_l2(pred, truth, {"P0": ["g1", "g2", "g0"], "P1": ["g0", "g1", "g2"]}, ranks=[1, 3])
    np.testing.assert_allclose(per_pert.loc["P0"], [2, np.sqrt(13)])
    with pytest.raises(DataError, match="not evaluated"):
        cumulative_l2(pred, truth, ["g0", "zz"])


def test_genes_by_change_and_published_grid():
    control = pd.Series([1.0, 1.0, 1.0], index=["g0", "g1", "g2"])
    truth = frame([[1, 3, 0]])
    assert genes_by_change(truth, control) == {"P0": ["g1", "g2", "g0"]}
    grid = published_rank_grid(19264)
    assert list(grid[:3]) == [1, 2, 3] and 100 in grid and 110 in grid and 105 not in grid
    assert list(grid[-2:]) == [19200, 19264] and 1100 in grid and 1150 not in grid
    assert len(published_rank_grid(1000)) == 100 + 90
    assert list(published_rank_grid(50)) == list(range(1, 51))


# --- dynamic range fraction ------------------------------------------------------------


def test_dynamic_range_fraction_by_hand_and_clipping():
    idx = ["A", "B", "C", "D"]
    pos = pd.Series([0.9, -0.9, 0.6, np.nan], index=idx)
    neg = pd.Series([0.5, 0.9, 0.6, 0.2], index=idx)
    drf = dynamic_range_fraction(pos, neg, "pearson_delta_vs_perturbed_mean")
    # A: 0.4 / 0.5 ; B: -1.8 / 0.1 = -18 -> clipped to -1 ; C: 0 ; D: undefined
    np.testing.assert_allclose(drf.values[["A", "B", "C"]], [0.4 / (0.5 + 1e-6), -1.0, 0.0])
    assert np.isnan(drf.values["D"]) and drf.n_undefined == 1
    assert drf.median == pytest.approx(0.0)
    assert drf.values.name == "drf_pearson_delta_vs_perturbed_mean"
    lower = dynamic_range_fraction(pd.Series([0.1, 2.0], index=["A", "B"]), pd.Series([0.5, 0.5], index=["A", "B"]), "mse")
    # A: (0.5 - 0.1) / 0.5 ; B: (0.5 - 2) / 0.5 = -3 -> -1
    np.testing.assert_allclose(lower.values, [0.4 / (0.5 + 1e-6), -1.0])
    with pytest.raises(DataError, match="same perturbations"):
        dynamic_range_fraction(pos, neg.drop("A"), "mse")


# --- evaluate, registry, summary -------------------------------------------------------


def test_evaluate_computes_every_metric_and_skips_with_reason(caplog):
    truth, control, rng = random_problem(n=10, g=25, seed=10)
    pred = truth + rng.normal(0, 0.5, truth.shape)
    pm = truth.mean()
    weights = deg_weights((truth - control) / 0.5)
    de = {p: list(truth.columns[:20]) for p in truth.index}
    full = evaluate(pred, truth, control, perturbed_mean=pm, de_genes=de, deg_weights=weights)
    assert list(full.columns) == list(METRICS)
    assert full.index.name == "perturbation"
    expected = pearson_delta_vs_perturbed_mean(pred, truth, pm).rename_axis("perturbation")
    pd.testing.assert_series_equal(full["pearson_delta_vs_perturbed_mean"], expected)
    pd.testing.assert_series_equal(full["weighted_mse"], weighted_mse(pred, truth, weights).rename_axis("perturbation"))
    with caplog.at_level(logging.INFO, logger="helpers.metrics"):
        partial = evaluate(pred, truth, control)
    assert "pearson_delta_vs_perturbed_mean" not in partial.columns
    assert partial.attrs["skipped"]["pearson_delta_vs_perturbed_mean"] == "needs perturbed_mean, which was not given"
    assert "skipped pearson_delta_vs_perturbed_mean" in caplog.text
    with pytest.raises(DataError, match="pass perturbed_mean="):
        evaluate(pred, truth, control, metrics=["rmse", "pearson_delta_vs_perturbed_mean"])
    with pytest.raises(DataError, match="unknown metrics"):
        evaluate(pred, truth, control, metrics=["accuracy"])
    again = evaluate(pred, truth, control, perturbed_mean=pm, de_genes=de, deg_weights=weights)
    pd.testing.assert_frame_equal(full, again)  # deterministic


def test_summary_counts_undefined_pearson_delta_of_no_change():
    truth, control, _ = random_problem(n=6, g=10, seed=11)
    no_change = pd.DataFrame(np.tile(control.to_numpy(), (6, 1)), index=truth.index, columns=truth.columns)
    result = evaluate(no_change, truth, control, metrics=["rmse", "pearson_delta_vs_control"])
    assert result.attrs["undefined"] == {"pearson_delta_vs_control": 6}
    table = summary(result)
    assert table.loc["pearson_delta_vs_control", "n_undefined"] == 6
    assert table.loc["pearson_delta_vs_control", "n"] == 0
    assert table.loc["rmse", "n_undefined"] == 0 and table.loc["rmse", "n"] == 6
    assert table.loc["rmse", "mean"] == pytest.approx(rmse(no_change, truth).mean())


def test_registry_names_state_their_reference():
    for name, info in METRICS.items():
        assert info.name == name
        if info.reference is not None:
            assert name.endswith(f"_vs_{info.reference}")
        else:
            assert "_vs_" not in name
        assert ("control" in info.needs) == (info.reference == "control")
    table = metrics_table()
    assert set(table.index) == set(METRICS)


# --- DE gene sets ----------------------------------------------------------------------


def test_de_gene_sets_train_and_gears_sources():
    import anndata as ad
    import scipy.sparse as sp

    from helpers.stats.de import top_de_genes

    rng = np.random.default_rng(12)
    genes = [f"g{j}" for j in range(8)]
    groups = ["control"] * 30 + ["A"] * 20 + ["B"] * 20 + ["C"] * 20
    X = rng.poisson(3.0, (90, 8)).astype(float)
    X[30:50, 0] += 10  # A moves g0
    X[50:70, 1] += 10  # B moves g1
    X[70:90, 7] += 10  # C (held out) moves g7
    adata = ad.AnnData(
        X=sp.csr_matrix(np.log1p(X).astype(np.float32)),
        obs=pd.DataFrame({"perturbation": groups}, index=[f"c{i}" for i in range(90)]),
        var=pd.DataFrame(index=genes),
    )
    train = de_gene_sets(adata, ["C"], k=2, source="train", train_perturbations=["A", "B"])
    assert train == {"C": ["g0", "g1"] if train["C"][0] == "g0" else ["g1", "g0"]}
    assert "g7" not in train["C"]  # no held-out data used
    gears = de_gene_sets(adata, ["C"], k=2, source="all")
    assert gears["C"][0] == "g7" and gears == {"C": top_de_genes(adata, k=2)["C"]}
    with pytest.raises(DataError, match="train_perturbations"):
        de_gene_sets(adata, ["C"], source="train")
