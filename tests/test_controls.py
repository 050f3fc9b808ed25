"""Tests of helpers.models.controls (Miller et al.'s calibration controls) against hand and scipy values."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from helpers.errors import DataError
from helpers.models.controls import (
    INTERPOLATED_DUPLICATE,
    MEAN,
    NO_CHANGE,
    TECHNICAL_DUPLICATE,
    benjamini_hochberg,
    calibration_controls,
    interpolated_duplicate,
    miller_t_scores,
    split_halves,
    welch_t_test,
)


def screen(groups: dict[str, np.ndarray], sparse: bool = True):
    """Canonical screen from {perturbation: cells x genes values}; cell names say group and row."""
    labels, blocks, names = [], [], []
    for p, values in groups.items():
        values = np.asarray(values, dtype=np.float32)
        labels += [p] * values.shape[0]
        names += [f"{p}_{i}" for i in range(values.shape[0])]
        blocks.append(values)
    X = np.vstack(blocks)
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=names)
    obs["n_targets"] = [0 if p == "control" else p.count("+") + 1 for p in labels]
    genes = [f"g{j}" for j in range(X.shape[1])]
    return ad.AnnData(X=sp.csr_matrix(X) if sparse else X, obs=obs, var=pd.DataFrame(index=genes))


def random_screen(seed=0, n_genes=6, sizes=None):
    rng = np.random.default_rng(seed)
    sizes = sizes or {"control": 30, "A": 9, "B": 10, "C": 12, "D": 8}
    return screen({p: rng.gamma(2.0, 0.5, size=(n, n_genes)) for p, n in sizes.items()})


# --- halves ------------------------------------------------------------------------------


def test_split_halves_partitions_each_perturbation_and_keeps_all_controls():
    adata = random_screen()
    halves = split_halves(adata, seed=3)
    first_names, second_names = set(halves.first.obs_names), set(halves.second.obs_names)
    controls = {n for n in adata.obs_names if n.startswith("control_")}
    assert controls <= first_names and controls <= second_names
    for p, n in {"A": 9, "B": 10, "C": 12, "D": 8}.items():
        cells = {c for c in adata.obs_names if c.startswith(f"{p}_")}
        f, s = cells & first_names, cells & second_names
        assert not (f & s) and (f | s) == cells
        assert (len(f), len(s)) == ((n + 1) // 2, n // 2)  # first half gets the odd cell
        assert tuple(halves.n_cells.loc[p]) == (len(f), len(s))
    assert halves.excluded == {}


def test_split_halves_is_seeded_and_independent_of_the_other_perturbations():
    adata = random_screen(sizes={"control": 10, "A": 40, "B": 40})
    a = split_halves(adata, seed=1)
    b = split_halves(adata, seed=1)
    c = split_halves(adata, seed=2)
    only_a = split_halves(adata, seed=1, perturbations=["A"])
    assert list(a.first.obs_names) == list(b.first.obs_names)
    assert list(a.first.obs_names) != list(c.first.obs_names)
    first_a = [n for n in a.first.obs_names if n.startswith("A_")]
    assert first_a == [n for n in only_a.first.obs_names if n.startswith("A_")]
    assert "B" not in set(only_a.first.obs["perturbation"].astype(str))


def test_split_halves_reports_perturbations_that_cannot_be_halved():
    adata = random_screen(sizes={"control": 5, "A": 4, "B": 1})
    halves = split_halves(adata, seed=0)
    assert "B" in halves.excluded and "1 cell" in halves.excluded["B"]
    assert "B" not in set(halves.first.obs["perturbation"].astype(str))
    with pytest.raises(DataError, match="no cells"):
        split_halves(adata, seed=0, perturbations=["Z"])
    with pytest.raises(DataError, match="control"):
        split_halves(adata[adata.obs["perturbation"] != "control"].copy(), seed=0)


# --- Welch t-test and BH -----------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_welch_t_test_matches_scipy(sparse):
    rng = np.random.default_rng(5)
    groups = {"control": rng.normal(1.0, 1.0, (25, 5)), "A": rng.normal(1.5, 2.0, (7, 5)), "B": rng.normal(0.8, 0.5, (11, 5))}
    result = welch_t_test(screen(groups, sparse=sparse))
    for p in ("A", "B"):
        x, c = (groups[k].astype(np.float32).astype(np.float64) for k in (p, "control"))
        ref = stats.ttest_ind(x, c, equal_var=False, axis=0)
        np.testing.assert_allclose(result.t.loc[p].to_numpy(), ref.statistic, rtol=1e-6)
        np.testing.assert_allclose(result.p.loc[p].to_numpy(), ref.pvalue, rtol=1e-6)
    assert list(result.t.index) == ["A", "B"]


def test_welch_t_test_constant_genes():
    control = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    a = np.array([[1.0, 2.0], [1.0, 2.0]])  # gene 0 equal and constant, gene 1 constant but shifted
    result = welch_t_test(screen({"control": control, "A": a}))
    assert result.t.loc["A", "g0"] == 0.0 and result.p.loc["A", "g0"] == 1.0
    assert result.t.loc["A", "g1"] == np.inf and result.p.loc["A", "g1"] == 0.0


def test_benjamini_hochberg_by_hand_and_against_scipy():
    p = pd.DataFrame([[0.01, 0.04, 0.03, 0.5]], index=["A"], columns=list("abcd"))
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4/1, x4/2, x4/3, x4/4 = 0.04, 0.06, 0.0533, 0.5 -> step-up min
    expected = [0.04, 0.16 / 3, 0.16 / 3, 0.5]
    np.testing.assert_allclose(benjamini_hochberg(p).to_numpy()[0], expected)
    rng = np.random.default_rng(0)
    many = pd.DataFrame(rng.random((4, 50)) ** 3)
    np.testing.assert_allclose(benjamini_hochberg(many).to_numpy(), stats.false_discovery_control(many.to_numpy(), axis=1))
    with_nan = pd.DataFrame([[np.nan, 0.01]])
    np.testing.assert_allclose(benjamini_hochberg(with_nan).to_numpy(), [[1.0, 0.02]])


def test_interpolated_duplicate_by_hand():
    dup = pd.DataFrame([[2.0, 4.0, 6.0]], index=["A"], columns=["x", "y", "z"])
    mean = pd.Series({"x": 0.0, "y": 1.0, "z": 2.0})
    p_adj = pd.DataFrame([[0.0, 0.5]], index=["A"], columns=["x", "y"])  # z missing -> p = 1
    out = interpolated_duplicate(dup, mean, p_adj)
    # x: alpha 1 -> 2; y: 0.5*4 + 0.5*1 = 2.5; z: alpha 0 -> mean 2
    np.testing.assert_allclose(out.to_numpy(), [[2.0, 2.5, 2.0]])


# --- the four controls ---------------------------------------------------------------------


def test_calibration_controls_values_by_hand():
    adata = random_screen(seed=2, sizes={"control": 20, "A": 9, "B": 10, "C": 12, "D": 8})
    controls = calibration_controls(adata, ["C", "D"], ["A", "B"], seed=4)
    X = adata.X.toarray().astype(np.float64)
    names = pd.Index(adata.obs_names)
    halves = split_halves(adata, seed=4, perturbations=["C", "D"])
    for p in ("C", "D"):
        first = [n for n in halves.first.obs_names if n.startswith(f"{p}_")]
        second = [n for n in halves.second.obs_names if n.startswith(f"{p}_")]
        np.testing.assert_allclose(controls.truth.loc[p], X[names.get_indexer(first)].mean(0), rtol=1e-6)
        np.testing.assert_allclose(controls.predictions[TECHNICAL_DUPLICATE].loc[p], X[names.get_indexer(second)].mean(0), rtol=1e-6)
    rows = lambda p: X[(adata.obs["perturbation"] == p).to_numpy()]  # noqa: E731
    mean = (rows("A").mean(0) + rows("B").mean(0)) / 2  # perturbation-weighted, not cell-weighted
    np.testing.assert_allclose(controls.predictions[MEAN].to_numpy(), np.tile(mean, (2, 1)), rtol=1e-6)
    np.testing.assert_allclose(controls.perturbed_mean.to_numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(controls.predictions[NO_CHANGE].to_numpy(), np.tile(rows("control").mean(0), (2, 1)), rtol=1e-6)
    alpha = 1 - controls.p_adj.to_numpy()
    expected = alpha * controls.predictions[TECHNICAL_DUPLICATE].to_numpy() + (1 - alpha) * mean
    np.testing.assert_allclose(controls.predictions[INTERPOLATED_DUPLICATE].to_numpy(), expected, rtol=1e-9)
    assert set(controls.predictions) == {TECHNICAL_DUPLICATE, INTERPOLATED_DUPLICATE, MEAN, NO_CHANGE}


def test_interpolated_duplicate_keeps_changed_genes_and_drops_noise():
    rng = np.random.default_rng(0)
    control = rng.normal(1.0, 0.3, (200, 4))
    shifted = rng.normal(1.0, 0.3, (200, 4))
    shifted[:, 0] += 3.0  # one strongly changed gene
    train = rng.normal(1.0, 0.3, (50, 4))
    controls = calibration_controls(screen({"control": control, "A": shifted, "T": train}), ["A"], ["T"], seed=0)
    p_adj = controls.p_adj.loc["A"]
    assert p_adj["g0"] < 1e-50
    interp = controls.predictions[INTERPOLATED_DUPLICATE].loc["A"]
    dup = controls.predictions[TECHNICAL_DUPLICATE].loc["A"]
    assert interp["g0"] == pytest.approx(dup["g0"])
    # unchanged genes are pulled towards the mean by 1 - alpha = p_adj
    for g in ("g1", "g2", "g3"):
        assert interp[g] == pytest.approx(p_adj[g] * controls.perturbed_mean[g] + (1 - p_adj[g]) * dup[g])


def test_calibration_controls_is_deterministic_and_checks_inputs():
    adata = random_screen(seed=1)
    a = calibration_controls(adata, ["C", "D"], ["A", "B"], seed=7)
    b = calibration_controls(adata, ["C", "D"], ["A", "B"], seed=7)
    for name in a.predictions:
        pd.testing.assert_frame_equal(a.predictions[name], b.predictions[name])
    pd.testing.assert_frame_equal(a.truth, b.truth)
    c = calibration_controls(adata, ["C", "D"], ["A", "B"], seed=8)
    assert not np.allclose(a.truth.to_numpy(), c.truth.to_numpy())
    with pytest.raises(DataError, match="also training"):
        calibration_controls(adata, ["C", "D"], ["C", "B"], seed=7)
    with pytest.raises(DataError, match="training perturbations"):
        calibration_controls(adata, ["C"], [], seed=7)


def test_welch_t_test_against_the_rest_and_scanpy_overestimated_variance():
    rng = np.random.default_rng(3)
    groups = {"control": rng.normal(1.0, 1.0, (20, 4)), "A": rng.normal(1.5, 2.0, (6, 4)), "B": rng.normal(0.8, 0.5, (9, 4))}
    adata = screen(groups)
    as64 = {k: v.astype(np.float32).astype(np.float64) for k, v in groups.items()}
    rest_of = {"A": np.vstack([as64["control"], as64["B"]]), "B": np.vstack([as64["control"], as64["A"]])}
    plain = welch_t_test(adata, reference="rest")
    over = welch_t_test(adata, reference="rest", overestimate_variance=True)
    for p in ("A", "B"):
        ref = stats.ttest_ind(as64[p], rest_of[p], equal_var=False, axis=0)
        np.testing.assert_allclose(plain.t.loc[p], ref.statistic, rtol=1e-6)
        np.testing.assert_allclose(plain.p.loc[p], ref.pvalue, rtol=1e-6)
        # scanpy t-test_overestim_var: the rest's standard error uses the group's size
        x, r = as64[p], rest_of[p]
        ref = stats.ttest_ind_from_stats(x.mean(0), x.std(0, ddof=1), len(x), r.mean(0), r.std(0, ddof=1), len(x), equal_var=False)
        np.testing.assert_allclose(over.t.loc[p], ref.statistic, rtol=1e-6)
        np.testing.assert_allclose(over.p.loc[p], ref.pvalue, rtol=1e-6)
    assert np.all(np.abs(over.t.to_numpy()) <= np.abs(plain.t.to_numpy()) + 1e-12)  # overestimated variance: smaller |t|
    with pytest.raises(ValueError, match="reference"):
        welch_t_test(adata, reference="others")


def test_miller_t_scores_of_the_controls_leave_out_the_second_halves():
    adata = random_screen(seed=4, sizes={"control": 20, "A": 9, "B": 10, "C": 12, "D": 8})
    controls = calibration_controls(adata, ["C", "D"], ["A", "B"], seed=2)
    keep = np.ones(adata.n_obs, dtype=bool)
    keep[controls.halves.second_rows] = False
    assert keep.sum() == adata.n_obs - controls.halves.n_cells["second_half"].sum()
    expected = welch_t_test(adata[keep], reference="rest", overestimate_variance=True).t.loc[["C", "D"]]
    pd.testing.assert_frame_equal(controls.miller_t_scores, expected)
    assert miller_t_scores(adata[keep], ["C"]).shape == (1, adata.n_vars)
