"""The double-perturbation benchmark loop: exclusions, common set, metrics, cumulative error, detection."""

import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_same_outputs

from helpers.benchmarks.double_perturbations import (
    MODELS,
    chosen_models,
    cumulative_error,
    detection_scores,
    exclusion_reasons,
    exclusion_table,
    mean_se,
    models_for_seed,
    per_perturbation_metrics,
    run_seed,
)
from helpers.data import profiles, top_expressed_genes
from helpers.metrics import l2
from helpers.models.baselines import Additive, MeanBaseline, NoChange
from helpers.models.linear import LinearModel
from helpers.stats.interactions import InteractionNull

TARGETS = [f"T{i}" for i in range(7)]


@pytest.fixture(scope="module")
def screen():
    """Additive-ish screen with 21 doubles; single T6 is not measured, targets are not among the genes."""
    rng = np.random.default_rng(1)
    n_genes = 25
    control = rng.uniform(0.5, 3.0, n_genes)
    effects = {g: rng.normal(0, 0.5, n_genes) for g in TARGETS}
    means = {"control": control}
    means.update({g: control + effects[g] for g in TARGETS[:-1]})
    for a, b in itertools.combinations(TARGETS, 2):
        means[f"{a}+{b}"] = control + effects[a] + effects[b] + rng.normal(0, 0.3, n_genes) * (rng.random(n_genes) < 0.2)
    labels, rows = [], []
    for p, mu in means.items():
        n = 30 if p == "control" else 6
        rows.append(np.clip(mu + rng.normal(0, 0.1, (n, n_genes)), 0, None))
        labels += [p] * n
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    obs["n_targets"] = [0 if p == "control" else len(p.split("+")) for p in labels]
    adata = ad.AnnData(
        X=sp.csr_matrix(np.vstack(rows).astype(np.float32)), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    )
    return adata, top_expressed_genes(adata, n_genes)


@pytest.fixture(scope="module")
def result(screen):
    adata, genes = screen
    models = {"no change": NoChange(), "additive": Additive(), "mean": MeanBaseline(include_control=True), "linear": LinearModel()}
    return run_seed(adata, genes, 1, models)


def test_exclusions_and_common_set(result):
    evaluated = result.evaluated
    assert len(evaluated) == 21 - 21 // 2  # half of the doubles go to training
    with_t6 = [p for p in evaluated if "T6" in p]
    assert with_t6, "the fixture should evaluate some doubles with the unmeasured single T6"
    ev = result.evaluation
    assert ev.excluded("additive") == {p: "single perturbation T6 not in training data" for p in with_t6}
    assert ev.excluded("no change") == {}
    # the linear model cannot embed targets that are not measured genes: it predicts nothing and is dropped
    assert "linear" in ev.failures and "linear" not in result.predictions
    assert result.common == [p for p in evaluated if p not in with_t6]
    table = exclusion_table([result]).set_index("model")
    assert table.loc["additive", "excluded"] == len(with_t6) and table.loc["additive", "evaluated"] == len(evaluated)
    assert not table.loc["linear", "in common set"] and table.loc["additive", "in common set"]
    reasons = exclusion_reasons([result, result])
    additive = reasons[reasons["model"] == "additive"]
    assert sorted(additive["perturbation"]) == sorted(with_t6) and set(additive["seeds"]) == {"1, 1"}
    assert set(reasons["model"]) == {"additive", "linear"}
    assert set(ev.fits["model"]) == {"no change", "additive", "mean", "linear"}


def test_metrics_by_hand(screen, result):
    adata, genes = screen
    obs = profiles(adata)
    control = obs.loc["control"]
    table = per_perturbation_metrics([result], obs, control, "toy")
    assert list(table.columns) == ["dataset", "seed", "model", "perturbation", "split", "common_set", "metric", "value"]
    p = result.common[0]
    row = table[(table["model"] == "no change") & (table["perturbation"] == p) & (table["metric"] == "l2")]["value"].item()
    assert row == pytest.approx(np.sqrt(((obs.loc[p, genes] - control[genes]) ** 2).sum()))
    assert np.isnan(table[(table["model"] == "no change") & (table["metric"] == "pearson_delta_vs_control")]["value"]).all()
    # PearsonΔ of the additive prediction, by hand: cor(ΔA + ΔB, ΔAB) over the gene set
    a, b = p.split("+")
    add_change = obs.loc[a, genes] + obs.loc[b, genes] - 2 * control[genes]
    r = np.corrcoef(add_change, obs.loc[p, genes] - control[genes])[0, 1]
    got = table[(table["model"] == "additive") & (table["perturbation"] == p) & (table["metric"] == "pearson_delta_vs_control")]
    assert got["value"].item() == pytest.approx(r)
    splits = table.drop_duplicates("perturbation").set_index("perturbation")["split"]
    assert set(splits[list(result.split.test)]) == {"test"} and set(splits[list(result.split.val)]) == {"val"}
    # doubles outside the common set are still scored for the models that predict them, flagged
    outside = table[~table["common_set"]]
    assert set(outside["model"]) == {"no change", "mean"}
    # with true profiles given, the distance to them is added
    with_truth = per_perturbation_metrics([result], obs, control, "toy", true_profiles=obs)
    vs_truth = with_truth[with_truth["metric"] == "l2_vs_true_profile"].set_index(["model", "perturbation"])["value"]
    vs_obs = with_truth[with_truth["metric"] == "l2"].set_index(["model", "perturbation"])["value"]
    pd.testing.assert_series_equal(vs_truth, vs_obs)


def test_cumulative_error_ends_at_the_mean_l2(screen, result):
    adata, genes = screen
    obs = profiles(adata)
    curves = cumulative_error([result], obs, obs.loc["control"])
    assert set(curves["ordering"]) == {"by control expression", "by observed change"}
    for model, pred in result.predictions.items():
        expected = l2(pred.loc[result.common], obs.loc[result.common, genes]).mean()
        for ordering in ("by control expression", "by observed change"):
            sub = curves[(curves["model"] == model) & (curves["ordering"] == ordering)]
            assert sub["n_genes"].max() == len(genes)
            assert sub.loc[sub["n_genes"].idxmax(), "cumulative_l2"] == pytest.approx(expected)
            assert sub["cumulative_l2"].is_monotonic_increasing


def test_detection_scores(screen, result):
    adata, genes = screen
    obs = profiles(adata)
    control = obs.loc["control"]
    null = InteractionNull(-0.15, 0.15, 0.05, 0, 0)
    curves, scores = detection_scores([result], obs[genes], control[genes], null)
    assert set(scores["model"]) == {"no change", "mean"}  # additive is the reference, linear was dropped
    # positives = observed non-additive pairs of the common doubles, by hand
    add = np.array(
        [
            obs.loc[a, genes].to_numpy() + obs.loc[b, genes].to_numpy() - control[genes].to_numpy()
            for a, b in (p.split("+") for p in result.common)
        ]
    )
    dev = obs.loc[result.common, genes].to_numpy() - add
    assert scores["positives"].iloc[0] == int(((dev > 0.15) | (dev < -0.15)).sum())
    assert scores["negatives"].iloc[0] == dev.size - scores["positives"].iloc[0]
    assert len(curves) == 2 * 101
    assert scores[["auprc", "auroc"]].notna().all().all()


def test_models_come_from_the_registry_and_mean_se():
    models = models_for_seed(MODELS, seed=3, evaluated=["A+B"], max_seconds=5, gears_epochs=4)
    assert list(models) == list(MODELS)
    for name, model in models.items():
        if "torch" in name:
            assert model.seed == 3 and model.max_seconds == 5
        if name == "GEARS":  # constructing the wrapper needs no GEARS environment
            assert model.epochs == 4 and model.seed == 3 and model.perturbable_genes == ["A", "B"]
    assert models["mean"].include_control  # the paper's mean counts the control profile as one more condition
    with pytest.raises(Exception, match="unknown model 'SAMS-VAE'"):
        models_for_seed(["SAMS-VAE"], seed=1, evaluated=[])
    with pytest.raises(Exception, match="cannot run in this chapter"):
        chosen_models(["no change", "random forest + GO"], run_slow_models=True)
    assert chosen_models(["GEARS", "no change", "decoder only (torch)"], run_slow_models=False) == (
        ["no change"],
        ["GEARS", "decoder only (torch)"],
    )
    frame = pd.DataFrame({"model": ["a", "a", "a", "b"], "x": [1.0, 2.0, 3.0, 5.0]})
    out = mean_se(frame, ["x"])
    assert out.loc["a", ("x", "mean")] == 2.0
    assert out.loc["a", ("x", "se")] == pytest.approx(1.0 / np.sqrt(3))
    assert np.isnan(out.loc["b", ("x", "se")])


def test_bring_your_own_predictions(screen, tmp_path):
    from helpers.errors import DataError
    from helpers.models.external import PredictionsFile

    adata, genes = screen
    obs = profiles(adata)
    doubles = [p for p in obs.index if "+" in p]
    # a perfect "model": the observed profiles, with doubles written in scPerturb style A_B
    table = obs.loc[doubles, genes].copy()
    table.index = [p.replace("+", "_") for p in doubles]
    good = tmp_path / "oracle.csv"
    table.rename_axis("perturbation").to_csv(good)
    res = run_seed(adata, genes, 1, {"additive": Additive(), "oracle": PredictionsFile(good, name="oracle", style="scperturb")})
    assert set(res.common) <= set(res.predictions["oracle"].index)
    metrics = per_perturbation_metrics([res], obs, obs.loc["control"], "toy")
    assert metrics[(metrics["model"] == "oracle") & (metrics["metric"] == "l2")]["value"].max() < 1e-9
    # missing genes: a clear error, not a silent exclusion
    bad = tmp_path / "few_genes.csv"
    table.iloc[:, :5].rename_axis("perturbation").to_csv(bad)
    with pytest.raises(DataError, match="lack"):
        run_seed(adata, genes, 1, {"mine": PredictionsFile(bad, name="mine", style="scperturb")})


@pytest.mark.slow
def test_notebook_runs_on_the_real_subset_with_predictions_file(tmp_path):
    """The chapter on the embedded real cells (seed 1), with a bring-your-own file, and twice the same numbers."""
    from helpers.book.runner import run_notebook
    from helpers.data import load_dataset

    adata = load_dataset("norman2019_subset")
    obs = profiles(adata)
    table = obs.loc[[p for p in obs.index if "+" in p]]  # an "oracle": the observed doubles
    path = tmp_path / "oracle.csv"
    table.rename_axis("perturbation").to_csv(path)
    params = {
        "dataset": "norman2019_subset",
        "seeds": [1],
        "predictions": str(path),
        "models": ["no change", "additive", "linear", "decoder only (torch)"],
    }
    csvs = []
    for run in ("a", "b"):
        run_notebook("double_perturbations", params, out_dir=tmp_path / run)
        csvs.append((tmp_path / run / "double_perturbations-norman2019_subset.results.csv").read_bytes())
    assert csvs[0] == csvs[1]
    assert_same_outputs(tmp_path / "a" / "double_perturbations.ipynb", tmp_path / "b" / "double_perturbations.ipynb")
    results = pd.read_csv(tmp_path / "a" / "double_perturbations-norman2019_subset.results.csv")
    assert {"no change", "additive", "decoder only (torch)", "oracle"} <= set(results["model"])
    assert "linear" not in set(results["model"])  # its targets are not measured: reported and dropped
    oracle = results[(results["model"] == "oracle") & (results["metric"] == "l2")]["value"]
    assert len(oracle) and oracle.max() < 1e-6
