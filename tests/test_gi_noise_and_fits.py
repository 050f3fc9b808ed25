"""The per-gene noise model of the deviations from additivity, and Norman et al.'s interaction fits (reader and estimate)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.gi_fits import COLUMNS, read_norman_gi_fits
from helpers.errors import DataError
from helpers.resources import data_dir
from helpers.stats.interactions import (
    bootstrap_deviation_se,
    call_comparison,
    compare_fits,
    deviation_noise,
    distance_correlation,
    fit_interaction_null,
    interaction_fit,
    interaction_fits,
    standardised_calls,
)


def _screen(groups: dict[str, np.ndarray], sparse: bool = True) -> ad.AnnData:
    """Cells x genes from blocks of cells per perturbation."""
    X = np.vstack(list(groups.values()))
    labels = np.concatenate([[name] * len(block) for name, block in groups.items()])
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])])
    return ad.AnnData(sp.csr_matrix(X) if sparse else X, obs=obs, var=var)


def test_standard_error_by_hand():
    # two genes; the variances and cell numbers are chosen so that se can be written down
    groups = {
        "control": np.array([[0.0, 1.0], [2.0, 1.0]]),  # means 1, 1; variances 2, 0; n 2
        "A": np.array([[1.0, 0.0], [1.0, 2.0], [4.0, 4.0]]),  # means 2, 2; variances 3, 4; n 3
        "B": np.array([[0.0, 0.0], [0.0, 0.0]]),  # means 0, 0; variances 0, 0
        "A+B": np.array([[3.0, 0.0], [5.0, 0.0]]),  # means 4, 0; variances 2, 0
    }
    noise = deviation_noise(_screen(groups), ["A+B"], ["g0", "g1"])
    # d = AB - A - B + c
    assert noise.deviation.loc["A+B"].tolist() == pytest.approx([4 - 2 - 0 + 1, 0 - 2 - 0 + 1])
    se0 = np.sqrt(2 / 2 + 3 / 3 + 0 + 2 / 2)
    se1 = np.sqrt(0 + 4 / 3 + 0 + 0)
    assert noise.se.loc["A+B"].tolist() == pytest.approx([se0, se1])
    # Welch-Satterthwaite for gene 1: one non-zero term, so nu = n_A - 1 = 2
    assert noise.df.loc["A+B", "g1"] == pytest.approx(2.0)
    assert noise.z.loc["A+B"].tolist() == pytest.approx([3 / se0, -1 / se1])


def test_standard_error_agrees_with_a_cell_bootstrap():
    rng = np.random.default_rng(3)
    n, genes = 60, 12
    scale = np.linspace(0.05, 2.0, genes)  # from barely to well expressed
    groups = {k: np.maximum(rng.normal(1.0, scale, size=(n, genes)), 0) for k in ("control", "A", "B", "A+B")}
    adata = _screen(groups)
    names = list(adata.var_names)
    noise = deviation_noise(adata, ["A+B"], names)
    boot = bootstrap_deviation_se(adata, ["A+B"], names, n_boot=3000, seed=0)
    # the bootstrap estimates the plug-in se, sqrt((n-1)/n) times the unbiased one
    expected = noise.se.loc["A+B"].to_numpy() * np.sqrt((n - 1) / n)
    assert boot.loc["A+B"].to_numpy() == pytest.approx(expected, rel=0.06)
    assert bootstrap_deviation_se(adata, ["A+B"], names, n_boot=50, seed=1).equals(
        bootstrap_deviation_se(adata, ["A+B"], names, n_boot=50, seed=1)
    )


def test_per_gene_calls_find_a_real_interaction_and_not_the_noise_of_a_noisy_gene():
    rng = np.random.default_rng(0)
    n, genes = 80, 40
    scale = np.r_[np.full(30, 0.02), np.full(10, 1.0)]  # 30 quiet genes, 10 noisy ones
    groups = {k: rng.normal(2.0, scale, size=(n, genes)) for k in ("control", "A", "B", "A+B")}
    groups["A+B"][:, 0] += 0.2  # a true interaction on a quiet gene: 10 standard errors
    adata = _screen(groups, sparse=False)
    noise = deviation_noise(adata, ["A+B"], list(adata.var_names))
    null = fit_interaction_null(noise.deviation, fallback=True)
    calls = standardised_calls(noise, 0.05, null)
    called = set(calls.loc[calls["called"], "gene"])
    assert "g0" in called
    assert not called & {f"g{j}" for j in range(30, 40)}  # the noisy genes' wobble is not called
    assert ((calls["q"] >= calls["p"]) | calls["q"].isna()).all()
    table = call_comparison(calls, 0.05)
    assert table.loc["called by the per-gene noise model (BH q <= 0.05)", "pairs"] == len(called)
    assert table.loc["pairs with a defined standard error", "pairs"] == genes


def test_a_gene_constant_in_all_four_groups_has_no_z_and_is_never_called():
    groups = {k: np.column_stack([np.zeros(5), np.arange(5.0) + i]) for i, k in enumerate(("control", "A", "B", "A+B"))}
    calls = standardised_calls(deviation_noise(_screen(groups), ["A+B"], ["g0", "g1"]), 0.05)
    row = calls.set_index("gene").loc["g0"]
    assert np.isnan(row["z"]) and not row["called"]
    with pytest.raises(DataError, match="at least two"):
        deviation_noise(
            _screen({"control": np.ones((1, 2)), "A": np.ones((3, 2)), "B": np.ones((3, 2)), "A+B": np.ones((3, 2))}), ["A+B"], ["g0"]
        )


def test_distance_correlation_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    assert distance_correlation(x, 3 * x - 1) == pytest.approx(1.0)
    assert distance_correlation(x, rng.normal(size=200)) < 0.2
    assert distance_correlation(x, np.ones(200)) == 0.0
    # against a direct evaluation of the definition on 4 points
    a, b = np.array([0.0, 1, 3, 6]), np.array([1.0, 0, 2, 2])

    def centred(v):
        d = np.abs(v[:, None] - v[None, :])
        return d - d.mean(0) - d.mean(1)[:, None] + d.mean()

    A, B = centred(a), centred(b)
    expected = np.sqrt((A * B).mean() / np.sqrt((A * A).mean() * (B * B).mean()))
    assert distance_correlation(a, b) == pytest.approx(expected)


def test_interaction_fit_recovers_a_double_that_is_exactly_07a_plus_04b():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=150), rng.normal(size=150)
    fit = interaction_fit(a, b, 0.7 * a + 0.4 * b)
    for key, value in {"coef_first": 0.7, "coef_second": 0.4, "ts_coef_first": 0.7, "ts_coef_second": 0.4}.items():
        assert fit[key] == pytest.approx(value, abs=1e-8)
    assert fit["ts_norm"] == pytest.approx(0.55) and fit["ts_ratio"] == pytest.approx(1.75)
    assert fit["corr_fit"] == pytest.approx(1.0) and fit["ts_linear_dcor"] == pytest.approx(1.0)


def test_interaction_fits_on_cells_in_control_units_and_the_comparison():
    # a small screen: the double's mean change is exactly 0.7 x A's + 0.4 x B's (in units of the control sd)
    rng = np.random.default_rng(4)
    n, genes = 30, 25
    control = rng.normal(3.0, 1.0, size=(n, genes))
    mu, sd = control.mean(0), control.std(0, ddof=1)
    shift_a, shift_b = rng.normal(size=genes), rng.normal(size=genes)

    def cells(shift):  # cells whose mean is exactly mu + sd * shift
        block = rng.normal(0, 1, size=(n, genes))
        return block - block.mean(0) + mu + sd * shift

    groups = {"control": control, "A": cells(shift_a), "B": cells(shift_b), "A+B": cells(0.7 * shift_a + 0.4 * shift_b)}
    adata = _screen(groups, sparse=False)
    ours = interaction_fits(adata, [("B", "A")])  # published orientation: B first
    assert ours.loc["A+B", "ts_coef_first"] == pytest.approx(0.4, abs=1e-6)
    assert ours.loc["A+B", "ts_coef_second"] == pytest.approx(0.7, abs=1e-6)
    assert ours.loc["A+B", "n_genes"] == genes
    published = pd.DataFrame(
        {
            "first": ["A"],
            "second": ["B"],
            "ts_coef_first": [0.7],
            "ts_coef_second": [0.4],
            "ts_norm": [0.55],
            "ts_ratio": [1.75],
            "ts_linear_dcor": [1.0],
            "corr_fit": [1.0],
            "coef_first": [0.7],
            "coef_second": [0.4],
        },
        index=pd.Index(["A+B"], name="perturbation"),
    )
    table, agreement = compare_fits(ours, published)  # ours is flipped into the published orientation
    assert table.loc["A+B", ("ts_coef_first", "this run")] == pytest.approx(0.7, abs=1e-6)
    assert table.loc["A+B", ("ts_ratio", "this run")] == pytest.approx(1.75, abs=1e-5)
    assert agreement.loc["ts_norm", "median |difference|"] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(agreement.loc["ts_norm", "pearson"])  # one double: no correlation


def test_the_published_fits_are_read_and_checked(tmp_path):
    fits = read_norman_gi_fits()
    assert len(fits) == 125 and list(fits.columns) == list(COLUMNS)
    assert fits.loc["AHR+FEV", "first"] == "AHR" and fits.loc["AHR+FEV", "ts_norm"] == pytest.approx((1.32472 + 0.89712) / 2, abs=1e-5)
    assert fits.index.is_unique and all("+" in p for p in fits.index)
    raw = pd.read_csv(data_dir() / "norman2019_gi_fits.csv")
    raw.drop(columns="ts_norm").to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataError, match=r"lacks the columns \['ts_norm'\]"):
        read_norman_gi_fits(tmp_path / "a.csv")
    pd.concat([raw, raw.head(1)]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="AHR\\+FEV.*more than once"):
        read_norman_gi_fits(tmp_path / "b.csv", expected_rows=None)
    with pytest.raises(DataError, match="has 126 doubles, expected 125"):
        read_norman_gi_fits(tmp_path / "b.csv")
    bad = raw.copy()
    bad.loc[0, "ts_norm"] = 9.0
    bad.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="ts_norm is not"):
        read_norman_gi_fits(tmp_path / "c.csv")
    with pytest.raises(DataError, match="no Norman et al. interaction fits"):
        read_norman_gi_fits(tmp_path / "missing.csv")


def test_the_chapter_compares_every_double_the_published_file_and_the_screen_share():
    # a hand-made screen with two of Norman et al.'s doubles (the code path of all 125 on the downloaded data)
    from helpers.benchmarks import double_perturbations as chapter

    rng = np.random.default_rng(5)
    n, genes = 25, 30
    control = rng.normal(3.0, 1.0, size=(n, genes))
    mu, sd = control.mean(0), control.std(0, ddof=1)
    shifts = {g: rng.normal(size=genes) for g in ("AHR", "FEV", "KLF1")}

    def cells(shift):
        block = rng.normal(0, 1, size=(n, genes))
        return block - block.mean(0) + mu + sd * shift

    groups = {"control": control, **{g: cells(s) for g, s in shifts.items()}}
    groups["AHR+FEV"] = cells(0.7 * shifts["AHR"] + 0.4 * shifts["FEV"])
    groups["AHR+KLF1"] = cells(0.2 * shifts["AHR"] + 1.1 * shifts["KLF1"])
    groups["FEV+KLF1"] = cells(shifts["FEV"])  # not in the published file
    adata = _screen(groups, sparse=False)
    screen = chapter.describe_screen(adata, genes, "toy")
    table, agreement, notes = chapter.norman_fit_comparison(adata, screen, simulated=False)
    assert sorted(table.index) == ["AHR+FEV", "AHR+KLF1"]
    assert table.loc["AHR+FEV", ("ts_coef_first", "this run")] == pytest.approx(0.7, abs=1e-6)  # first = AHR, as published
    assert table.loc["AHR+KLF1", ("ts_coef_second", "this run")] == pytest.approx(1.1, abs=1e-6)
    assert table.loc["AHR+FEV", ("ts_coef_first", "Norman et al.")] == pytest.approx(1.32472)
    assert "2 of Norman et al.'s 125 doubles" in notes[0]
    assert agreement.loc["ts_norm", "doubles"] == 2
    assert chapter.norman_fit_comparison(adata, screen, simulated=True)[0] is None


def test_noise_model_recovery_counts_by_hand(monkeypatch):
    from helpers.benchmarks import double_perturbations as chapter
    from helpers.data import simulate

    truth = pd.DataFrame({"perturbation": ["A+B", "A+B", "C+D"], "gene": ["g0", "g1", "g0"], "label": ["synergy"] * 3})
    monkeypatch.setattr(simulate, "interaction_labels", lambda adata: truth)
    calls = pd.DataFrame(
        {
            "perturbation": ["A+B"] * 3,
            "gene": ["g0", "g1", "g2"],
            "called": [True, False, False],
            "called_single_null": [True, True, True],
        }
    )
    table = chapter.noise_model_recovery(None, calls, ["A+B"], ["g0", "g1", "g2"])  # C+D is not among the doubles
    assert table.loc["per-gene noise model", ["calls", "called_and_true", "precision", "recall"]].tolist() == [1, 1, 1.0, 0.5]
    assert table.loc["single empirical null", ["calls", "called_and_true", "precision", "recall"]].tolist() == pytest.approx(
        [3, 2, 2 / 3, 1.0]
    )
