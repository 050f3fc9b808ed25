"""Tests of helpers.benchmarks.systema (the Systema chapter's analysis steps) and the published Systema/PerturBench tables."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_same_outputs
from scipy import stats

from helpers.benchmarks import systema as sysm
from helpers.data import changes, gears_simulation_split
from helpers.errors import DataError
from helpers.metrics import METRICS, rmse, systematic_variation, training_references
from helpers.metrics.calibration import (
    calibration_results,
    drf_table,
    negative_control_of,
    noisy_duplicate,
    rmse_matched_duplicate,
    verdict,
)
from helpers.models.baselines import Additive, MatchingMean, MeanBaseline
from helpers.models.controls import MEAN, calibration_controls


def toy_screen(strength: float, n_perts: int = 24, n_genes: int = 40, seed: int = 0, cells=(6, 14), doubles: int = 0):
    """Gaussian screen: each perturbation shifts ``strength`` along one shared direction plus its own sparse effect."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 3.0, n_genes)
    shared = rng.normal(0, 1, n_genes)
    shared /= np.sqrt(np.mean(shared**2))
    names = [f"G{i:02d}" for i in range(n_perts)]
    effects = {}
    for p in names:
        own = np.zeros(n_genes)
        hit = rng.choice(n_genes, 6, replace=False)
        own[hit] = rng.normal(0, 1.0, 6)
        effects[p] = strength * shared + own
    for k in range(doubles):
        a, b = names[2 * k], names[2 * k + 1]
        effects[f"{a}+{b}"] = effects[a] + effects[b]
    blocks, labels = [rng.normal(base, 0.3, (60, n_genes))], ["control"] * 60
    for p, eff in effects.items():
        n = int(rng.integers(cells[0], cells[1] + 1))
        blocks.append(rng.normal(base + eff, 0.3, (n, n_genes)))
        labels += [p] * n
    X = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    obs["n_targets"] = [0 if p == "control" else p.count("+") + 1 for p in labels]
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


# --- references and scores -------------------------------------------------------------------


def test_training_references_by_hand(tiny_screen):
    split = gears_simulation_split(["A", "B", "C", "A+B"], seed=1)
    refs = training_references(split.subset(tiny_screen, "train"))
    X = tiny_screen.X.toarray()
    labels = tiny_screen.obs["perturbation"].astype(str).to_numpy()
    train = list(split.train)
    np.testing.assert_allclose(refs.control, X[labels == "control"].mean(0))
    np.testing.assert_allclose(refs.perturbed_mean, np.mean([X[labels == p].mean(0) for p in train], axis=0))
    mask = np.isin(labels, train)
    np.testing.assert_allclose(refs.cell_weighted_mean, X[mask].mean(0), rtol=1e-6)
    assert list(refs.train_profiles.index) == sorted(train)


def test_dataset_scores_match_systematic_variation_and_rise_with_strength():
    screens = {"weak": toy_screen(0.0), "strong": toy_screen(2.0)}
    scores, cosines = sysm.dataset_scores(screens)
    for name, adata in screens.items():
        expected = systematic_variation(changes(adata))
        assert scores.set_index("dataset").loc[name, "systematic_variation"] == pytest.approx(expected.score)
        got = cosines[cosines["dataset"] == name].set_index("perturbation")["cosine"]
        np.testing.assert_allclose(got.reindex(expected.cosines.index), expected.cosines)
    s = scores.set_index("dataset")["systematic_variation"]
    assert s["strong"] > s["weak"] + 0.3
    assert (scores["n_perturbations"] == 24).all()


def test_shift_decomposition_by_hand():
    delta = pd.DataFrame([[2.0, 0.0], [0.0, 2.0]], index=["A", "B"], columns=["x", "y"])
    # average shift (1, 1): unit u = (1, 1)/sqrt2; A: along sqrt2, orthogonal sqrt2, cosine 1/sqrt2
    out = sysm.shift_decomposition(delta)
    np.testing.assert_allclose(out["along"], [np.sqrt(2)] * 2)
    np.testing.assert_allclose(out["orthogonal"], [np.sqrt(2)] * 2)
    np.testing.assert_allclose(out["cosine"], [1 / np.sqrt(2)] * 2)
    with pytest.raises(DataError, match="zero"):
        sysm.shift_decomposition(pd.DataFrame([[1.0, 0.0], [-1.0, 0.0]]))


# --- screens and models -------------------------------------------------------------------------


def test_prepare_screen_restricts_genes_and_context():
    adata = toy_screen(1.0)
    out, notes = sysm.prepare_screen(adata, n_genes=10)
    assert out.n_vars == 10 and "10 genes" in notes[0]
    control = adata[adata.obs["perturbation"] == "control"].X.toarray().mean(0)
    assert set(out.var_names) == set(adata.var_names[np.argsort(-control)[:10]])
    two = ad.concat([adata, adata], label="context", keys=["K562", "RPE1"], index_unique="-")
    one, notes = sysm.prepare_screen(two)
    assert set(one.obs["context"]) == {"K562"} and "K562" in notes[0]
    with pytest.raises(DataError, match="HeLa"):
        sysm.prepare_screen(two, context="HeLa")


def test_make_models_names_and_errors(tmp_path):
    models = sysm.make_models(["mean (cells)", "mean (perturbations)", "mean", "matching mean"])
    assert isinstance(models["mean (cells)"], MeanBaseline) and models["mean (cells)"].weighting == "cell"
    assert models["mean (perturbations)"].weighting == "perturbation" and not models["mean (perturbations)"].include_control
    assert models["mean"].include_control  # the same "mean" as in the chapters of Ahlmann-Eltze et al.
    assert isinstance(models["matching mean"], MatchingMean)
    with pytest.raises(DataError, match="cannot run in this chapter"):
        sysm.make_models(["GEARS"])
    path = tmp_path / "my_model.csv"
    pd.DataFrame([[1.0]], index=["A"], columns=["g0"]).to_csv(path)
    assert "my_model" in sysm.make_models([], predictions=path)
    assert "mine" in sysm.make_models([], predictions=path, predictions_name="mine")


# --- evaluation -------------------------------------------------------------------------------


def test_perturbation_weighted_mean_is_undefined_against_the_perturbed_mean():
    adata = toy_screen(1.5, n_perts=30)
    split = gears_simulation_split(adata, seed=1)
    models = {"mean (cells)": MeanBaseline("cell"), "mean": MeanBaseline("perturbation")}
    result = sysm.evaluate_models(adata, split, models, list(split.test))
    pert = result.per_perturbation["mean"]["pearson_delta_vs_perturbed_mean"]
    cell = result.per_perturbation["mean (cells)"]["pearson_delta_vs_perturbed_mean"]
    assert pert.isna().all()  # its predicted change from the perturbed mean is exactly zero
    assert cell.notna().all() and (cell.abs() < 1).all()
    # against control both score high on a screen with strong systematic variation
    assert result.per_perturbation["mean (cells)"]["pearson_delta_vs_control"].mean() > 0.5
    rows = result.tidy(seed=1)
    assert set(rows["model"]) == {"mean (cells)", "mean"} and set(rows["seed"]) == {1}
    assert set(rows["perturbation"]) == set(split.test)


def test_evaluate_models_uses_a_common_set_and_reports_exclusions():
    adata = toy_screen(1.0, n_perts=20, doubles=8)
    split = gears_simulation_split(adata, seed=5)  # 2 test doubles with both singles in training, 3 without
    doubles = [p for p in split.test if "+" in p]
    result = sysm.evaluate_models(
        adata, split, {"matching mean": MatchingMean(), "additive": Additive()}, doubles, metrics=["rmse", "pearson_delta_vs_control"]
    )
    bad = result.engine.excluded("additive")
    assert bad and all("not in training data" in why for why in bad.values())
    assert set(result.common) == set(doubles) - set(bad)
    assert "additive cannot predict" in result.exclusion_report()
    with pytest.raises(DataError, match="not held out"):
        sysm.evaluate_models(adata, split, {"mean": MeanBaseline()}, list(split.train)[:3])


def test_seen_genes_by_hand():
    seen = sysm.seen_genes(["A+B", "A+C", "C+D", "B"], ["A", "B", "A+C", "X+Y"])
    assert seen.to_dict() == {"A+B": 2, "A+C": 1, "C+D": 0, "B": 1}


# --- sweep --------------------------------------------------------------------------------------


def test_sweep_shows_systema_pattern_and_correlation():
    screens, per = sysm.sweep(
        [0.0, 0.5, 1.0, 2.0],
        lambda s: toy_screen(s, n_perts=40),
        seeds=[1],
        models=lambda: {"mean (cells)": MeanBaseline("cell")},
        progress=False,
    )
    summary = sysm.sweep_summary(screens, per)
    assert screens["systematic_variation"].is_monotonic_increasing
    ctrl = summary[summary["metric"] == "pearson_delta_vs_control"].sort_values("systematic_strength")["value"]
    pert = summary[summary["metric"] == "pearson_delta_vs_perturbed_mean"]["value"]
    assert ctrl.is_monotonic_increasing and ctrl.iloc[-1] > 0.8
    assert pert.abs().max() < 0.3
    corr = sysm.sweep_correlation(summary, "mean (cells)")
    x, y = screens["systematic_variation"], ctrl.to_numpy()
    assert corr["r"] == pytest.approx(np.corrcoef(x, y)[0, 1]) and corr["n_screens"] == 4
    assert corr["r"] > 0.9
    assert set(per.columns) >= {"systematic_strength", "seed", "model", "perturbation", "metric", "value"}


def test_sweep_summary_and_correlation_by_hand():
    per = pd.DataFrame(
        {
            "systematic_strength": [0, 0, 0, 1, 1, 1, 2, 2],
            "seed": [1, 1, 2, 1, 1, 2, 1, 1],
            "model": ["m"] * 8,
            "metric": ["x"] * 8,
            "perturbation": list("ABAABAAB"),
            "value": [0.1, 0.3, 0.5, 0.4, np.nan, 0.6, 0.9, 0.7],
        }
    )
    screens = pd.DataFrame({"systematic_strength": [0, 1, 2], "systematic_variation": [0.2, 0.5, 0.9], "n_perturbations": 2})
    out = sysm.sweep_summary(screens, per).set_index("systematic_strength")
    # strength 0: seed 1 mean 0.2, seed 2 mean 0.5 -> 0.35; strength 1: seed 1 0.4 (NaN skipped), seed 2 0.6 -> 0.5
    np.testing.assert_allclose(out["value"], [0.35, 0.5, 0.8])
    assert out.loc[1, "n_undefined"] == 1
    corr = sysm.sweep_correlation(out.reset_index(), "m", "x")
    r, p = stats.pearsonr([0.2, 0.5, 0.9], [0.35, 0.5, 0.8])
    assert corr["r"] == pytest.approx(r) and corr["p_value"] == pytest.approx(p)
    assert np.isnan(sysm.sweep_correlation(out.reset_index().iloc[:2], "m", "x")["r"])


# --- mode collapse --------------------------------------------------------------------------------


def test_noisy_duplicate_matches_the_target_rmse_and_is_seeded():
    rng = np.random.default_rng(0)
    truth = pd.DataFrame(rng.normal(size=(8, 30)))
    dup = truth + rng.normal(0, 0.1, size=truth.shape)
    noisy, sigma = noisy_duplicate(dup, truth, target_rmse=0.5, seed=3)
    assert rmse(noisy, truth).mean() == pytest.approx(0.5, rel=1e-9)
    assert 0.3 < sigma < 0.6
    again, _ = noisy_duplicate(dup, truth, target_rmse=0.5, seed=3)
    pd.testing.assert_frame_equal(noisy, again)
    same, zero = noisy_duplicate(dup, truth, target_rmse=0.01, seed=3)
    assert zero == 0.0
    pd.testing.assert_frame_equal(same, dup)


def test_rmse_matched_duplicate_shrinks_a_duplicate_noisier_than_the_collapsed_prediction():
    rng = np.random.default_rng(1)
    truth = pd.DataFrame(rng.normal(0, 0.3, size=(20, 50)))
    collapsed = pd.DataFrame(np.zeros((20, 50)))
    dup = truth + rng.normal(0, 0.6, size=truth.shape)  # informative but noisier than predicting 0
    assert rmse(dup, truth).mean() > rmse(collapsed, truth).mean()
    matched = rmse_matched_duplicate(dup, collapsed, truth, seed=0)
    assert matched.method == "shrinkage" and 0 < matched.parameter < 1
    np.testing.assert_allclose(matched.prediction, matched.parameter * dup)  # collapsed is 0
    assert rmse(matched.prediction, truth).mean() == pytest.approx(matched.target, rel=1e-9)
    # a "duplicate" whose difference from the collapsed prediction is orthogonal to the error
    # only adds error: RMSE grows with λ, so it cannot be matched except at λ = 0
    noise = rng.normal(0, 0.6, size=truth.shape)
    E = truth.to_numpy()
    junk = pd.DataFrame(noise - ((noise * E).sum(1) / (E * E).sum(1))[:, None] * E)
    unmatched = rmse_matched_duplicate(junk, collapsed, truth, seed=0)
    assert unmatched.method == "none" and np.isnan(unmatched.parameter)
    closer = rmse_matched_duplicate(truth + 0.01, collapsed, truth, seed=0)
    assert closer.method == "noise" and closer.parameter > 0


def test_mode_collapse_same_rmse_opposite_ranks():
    adata = toy_screen(1.0, n_perts=40, cells=(30, 40))
    split = gears_simulation_split(adata, seed=1)
    controls = calibration_controls(adata, list(split.test), list(split.train), seed=1)
    rows, matched = sysm.mode_collapse_results(controls, seed=1)
    means = rows.groupby(["model", "metric"])["value"].mean()
    assert matched.method in ("noise", "shrinkage")
    assert means[MEAN, "rmse"] == pytest.approx(means[sysm.MATCHED_DUPLICATE, "rmse"])
    assert means[MEAN, "rank_rmse"] == pytest.approx(0.5)
    assert means[MEAN, "centroid_accuracy"] == pytest.approx(0.5)
    assert means[sysm.MATCHED_DUPLICATE, "rank_rmse"] < 0.2
    assert means[sysm.MATCHED_DUPLICATE, "centroid_accuracy"] > 0.8


# --- calibration ------------------------------------------------------------------------------------


def test_negative_control_of():
    assert negative_control_of("pearson_delta_vs_perturbed_mean") == "no change"
    assert negative_control_of("pearson_delta_de20_vs_perturbed_mean") == "no change"
    assert negative_control_of("weighted_r2_delta_vs_perturbed_mean") == MEAN == "mean (perturbations)"
    assert negative_control_of("mse") == MEAN


def test_drf_table_by_hand():
    rows = []
    values = {  # metric -> model -> per perturbation (A, B)
        "mse": {"technical duplicate": [1.0, 2.0], "interpolated duplicate": [2.0, 2.0], MEAN: [4.0, 4.0], "no change": [9, 9]},
        "pearson_delta_vs_perturbed_mean": {
            "technical duplicate": [0.9, 0.5],
            "interpolated duplicate": [0.5, 0.5],
            MEAN: [np.nan, np.nan],
            "no change": [0.0, 0.5],
        },
    }
    for metric, by_model in values.items():
        for model, vals in by_model.items():
            rows += [{"model": model, "perturbation": p, "metric": metric, "value": v} for p, v in zip("AB", vals)]
    table = drf_table(pd.DataFrame(rows))
    eps = 1e-6
    # mse (lower better, perfect 0): A (4-1)/(4+eps), B (4-2)/(4+eps): median = mean of the two
    assert table.loc["mse", "drf_technical duplicate"] == pytest.approx(np.median([3 / (4 + eps), 2 / (4 + eps)]))
    assert table.loc["mse", "drf_interpolated duplicate"] == pytest.approx(2 / (4 + eps))
    assert table.loc["mse", "negative_control"] == MEAN and table.loc["mse", "calibration"] == "well"
    # PearsonΔ vs perturbed mean uses "no change": A 0.9/(1+eps), B 0/(0.5+eps)
    got = table.loc["pearson_delta_vs_perturbed_mean"]
    assert got["negative_control"] == "no change"
    assert got["drf_technical duplicate"] == pytest.approx(np.median([0.9 / (1 + eps), 0.0]))
    assert got["calibration"] == "partly"  # median 0.45
    assert list(table.index) == [m for m in METRICS if m in values]


def test_calibration_results_shape_and_verdicts():
    adata = toy_screen(2.0, n_perts=40, cells=(30, 40))
    split = gears_simulation_split(adata, seed=1)
    controls = calibration_controls(adata, list(split.test), list(split.train), seed=2)
    rows = calibration_results(controls)
    assert set(rows["model"]) == {"technical duplicate", "interpolated duplicate", MEAN, "no change"}
    assert set(rows["metric"]) == set(METRICS)
    table = drf_table(rows)
    # rank metrics separate a duplicate from a constant prediction
    assert table.loc["rank_rmse", "drf_technical duplicate"] > 0.5
    assert verdict(0.7) == "well" and verdict(0.3) == "partly" and verdict(-0.1) == "poorly"
    assert verdict(float("nan")) == "undefined"


# --- published tables -------------------------------------------------------------------------------


def test_published_tables_follow_the_convention():
    from helpers.published import COLUMNS, published
    from helpers.published import perturbench as pb
    from helpers.published import systema as sy

    table = published("systema")
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    mean_norman = table[
        (table["table"] == "pearson_delta_vs_control") & (table["dataset"] == "norman2019") & (table["model"] == "mean (cells)")
    ].set_index("metric")["value"]
    assert mean_norman.to_dict() == {"pearson_delta_vs_control": 0.49, "pearson_delta_de20_vs_control": 0.52}
    assert len(sy.TABLES["pearson_delta_vs_perturbed_mean"]) == 5 * 10 * 2
    suite_metrics = {
        "pearson_delta_vs_control",
        "pearson_delta_de20_vs_control",
        "pearson_delta_vs_perturbed_mean",
        "pearson_delta_de20_vs_perturbed_mean",
        "rmse",
        "centroid_accuracy",
    }
    assert suite_metrics <= set(METRICS)
    assert sy.TABLES["correlation"]["value"].iloc[0] == 0.970
    ref = sy.systematic_variation_reference().set_index("simulated_counterpart")
    assert ref.loc["adamson_like", "published"] == 0.76 and ref.loc["replogle_k562_like", "published"] == 0.32
    sciplex = pb.TABLES["sciplex3_transfer"]
    collapsed = sciplex[(sciplex["model"] == pb.MODE_COLLAPSED_MODEL) & (sciplex["metric"] == "rank_rmse")]["value"]
    assert collapsed.tolist() == [0.47]
    assert set(published("perturbench")["table"]) == set(pb.TABLES)


# --- the notebook ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_systema_notebook_runs_and_gives_identical_results_twice(tmp_path):
    from helpers.book.runner import run_notebook
    from helpers.results import check_results

    params = {
        "dataset": "norman2019_subset",
        "seeds": [1],
        "score_datasets": ["adamson_like"],
        "sweep_strengths": [0.0, 0.3, 0.6],
        "sweep_scale": 0.2,
    }
    paths = []
    for run in ("a", "b"):
        run_notebook("systema", params, tmp_path / run)
        paths.append(tmp_path / run / "systema-norman2019_subset.results.csv")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert_same_outputs(tmp_path / "a" / "systema.ipynb", tmp_path / "b" / "systema.ipynb")
    table = check_results(pd.read_csv(paths[0]))
    assert set(table["analysis"]) == {"systematic_variation", "baselines", "doubles", "sweep", "mode_collapse", "calibration"}
    assert set(table.loc[table["analysis"] == "baselines", "metric"]) == set(METRICS)
    sweep = table[table["analysis"] == "sweep"]
    assert sorted(sweep["systematic_strength"].unique()) == [0.0, 0.3, 0.6]


def test_systema_notebook_parameters_are_all_visible_to_papermill():
    from helpers.book.runner import notebook_parameters

    params = notebook_parameters("systema")
    expected = {
        "dataset",
        "score_datasets",
        "seeds",
        "n_genes",
        "models",
        "predictions",
        "predictions_name",
        "de_source",
        "deg_weights_source",
        "context",
        "simulation_seed",
        "run_sweep",
        "sweep_preset",
        "sweep_strengths",
        "sweep_scale",
        "run_calibration",
        "output_dir",
    }
    assert set(params) == expected
    assert params["dataset"] == '"norman_like"' and params["output_dir"] == '"."'


def test_systema_plots_draw_labelled_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.plots import systema as plots

    screens = {"weak": toy_screen(0.2), "strong": toy_screen(2.0)}
    scores, cosines = sysm.dataset_scores(screens)
    ax = plots.cosine_distributions(cosines, scores, published=pd.Series({"strong": 0.7}))
    assert ax.get_ylabel() and ax.get_title()
    ax = plots.shift_decomposition(sysm.shift_decomposition(changes(screens["strong"])), "strong")
    assert "average shift" in ax.get_xlabel()
    summary = pd.DataFrame(
        {
            "model": ["m", "m", "n", "n"],
            "metric": ["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"] * 2,
            "mean": [0.5, 0.1, np.nan, 0.2],
            "se": [0.01, 0.02, np.nan, 0.01],
        }
    )
    ax = plots.reference_comparison(summary)
    assert any("undefined" in t.get_text() for t in ax.texts)  # NaN is written, not drawn as 0
    sweep_table = pd.DataFrame(
        {
            "systematic_strength": [0, 0, 1, 1],
            "systematic_variation": [0.2, 0.2, 0.8, 0.8],
            "model": "m",
            "metric": ["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"] * 2,
            "value": [0.2, 0.0, 0.8, 0.05],
        }
    )
    ax = plots.sweep(sweep_table, "m", {"r": 0.99, "n_screens": 2})
    assert "r = 0.99" in ax.get_title() and len(ax.lines) >= 2
    table = pd.DataFrame(
        {
            "model": ["a", "b"] * 3,
            "metric": ["rmse"] * 2 + ["rank_rmse"] * 2 + ["centroid_accuracy"] * 2,
            "mean": [0.1, 0.1, 0.5, 0.0, 0.5, 1.0],
        }
    )
    assert len(plots.mode_collapse(table, chance={"rank_rmse": 0.5}).axes) == 3
    drf = pd.DataFrame({"drf_technical duplicate": [0.9, -0.2], "drf_interpolated duplicate": [0.8, 0.1]}, index=["rank_rmse", "mse"])
    ax = plots.calibration(drf)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mse", "rank_rmse"]
    doubles = pd.DataFrame(
        {
            "seen_genes": [0, 1, 2] * 4,
            "model": ["x"] * 6 + ["y"] * 6,
            "metric": (["pearson_delta_vs_control"] * 3 + ["pearson_delta_vs_perturbed_mean"] * 3) * 2,
            "value": np.linspace(-0.2, 0.9, 12),
        }
    )
    assert len(plots.doubles_figure(doubles).axes) == 2
    plt.close("all")
