"""The unseen-perturbation pipeline pieces, its plots and the published single-perturbation tables."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_outputs

from helpers.benchmarks.engine import TrainingData, run_models
from helpers.benchmarks.unseen_perturbations import embedding_overlap, other_screen
from helpers.data.pseudobulk import as_pseudobulk  # noqa: E402
from helpers.models.baselines import MeanBaseline
from helpers.models.linear import LinearModel, condition_pca_embedding
from helpers.published.ahlmann_eltze_singles import TABLES, published_for
from helpers.results import check_results
from helpers.stats.bootstrap import ratio_to_reference


def _pseudobulk(table: pd.DataFrame):
    return as_pseudobulk(table, n_cells=10)


@pytest.fixture
def screen():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(15)]
    perts = genes[:10] + ["UNMEASURED"]
    table = pd.DataFrame(rng.gamma(2, 1, size=(12, 15)), index=perts + ["control"], columns=genes)
    return table


def test_the_engine_lists_exclusions_and_the_common_set(screen):
    held_out = ["G8", "G9", "UNMEASURED"]
    train = TrainingData(pseudobulk=_pseudobulk(screen.drop(index=held_out)))
    models = {"mean": MeanBaseline(include_control=True), "linear": LinearModel(n_components=3)}
    run = run_models(models, train, held_out)
    assert list(run.predictions["mean"].index) == held_out
    assert list(run.predictions["linear"].index) == ["G8", "G9"]
    assert run.exclusions.to_dict("records") == [
        {"model": "linear", "perturbation": "UNMEASURED", "reason": "target gene UNMEASURED not measured (no row in the training PCA)"}
    ]
    assert list(run.fits["model"]) == ["mean", "linear"] and (run.fits["status"] == "ok").all()
    assert run.common == ["G8", "G9"]


def test_scores_by_hand(screen):
    held_out = ["G8", "G9", "UNMEASURED"]
    train = TrainingData(pseudobulk=_pseudobulk(screen.drop(index=held_out)))
    run = run_models({"mean": MeanBaseline(include_control=True), "linear": LinearModel(n_components=3)}, train, held_out)
    preds = run.predictions
    genes = ["G0", "G3", "G4", "G7"]
    control = screen.loc["control"]
    rows = run.score(screen, control, genes=genes, metrics=["l2", "pearson_delta_vs_control"])
    assert list(rows.columns) == ["model", "perturbation", "common_set", "metric", "value"]
    l2 = rows[(rows.model == "mean") & (rows.metric == "l2")].set_index("perturbation")
    pred = preds["mean"].loc["UNMEASURED", genes].to_numpy()
    assert l2.loc["UNMEASURED", "value"] == pytest.approx(np.sqrt(((pred - screen.loc["UNMEASURED", genes].to_numpy()) ** 2).sum()))
    assert not l2.loc["UNMEASURED", "common_set"] and l2.loc["G8", "common_set"]
    pd_ = rows[(rows.model == "linear") & (rows.metric == "pearson_delta_vs_control")].set_index("perturbation")
    d_pred = preds["linear"].loc["G9", genes] - control[genes]
    d_obs = screen.loc["G9", genes] - control[genes]
    assert pd_.loc["G9", "value"] == pytest.approx(np.corrcoef(d_pred, d_obs)[0, 1])
    # on the common set only
    common_rows = run.score(screen, control, genes=genes, metrics=["l2"], common_only=True)
    assert set(common_rows["perturbation"]) == {"G8", "G9"}


def test_embedding_overlap_counts(screen):
    reference = screen.rename(index={"G0": "OTHER"}).iloc[:, :12]
    emb = condition_pca_embedding(_pseudobulk(reference), n_components=2)
    counts = embedding_overlap([p for p in screen.index if p != "control"] + ["G1+G2"], screen.columns, emb, reference.columns)
    assert counts["target perturbations"] == 12
    assert counts["with an embedding in the reference"] == 11  # G0 missing, the double covered by G1 and G2
    assert counts["reference perturbations"] == 11
    assert counts["genes measured in both"] == 12


def test_other_screen_follows_the_paper():
    assert other_screen("adamson2016") == "replogle2022_k562_essential"
    assert other_screen("replogle2022_k562_essential") == "replogle2022_rpe1_essential"
    assert other_screen("replogle_rpe1_like") == "replogle_k562_like"
    assert other_screen("norman2019_subset") is None
    assert other_screen("adamson_like", {"adamson_like": "my_screen"}) == "my_screen"


def test_published_tables_follow_the_convention():
    for name, table in TABLES.items():
        for col in ("dataset", "model", "metric", "statistic", "value", "source"):
            assert col in table, (name, col)
        assert table["value"].notna().all()
        assert set(table["dataset"]) <= {"adamson2016", "replogle2022_k562_essential", "replogle2022_rpe1_essential"}
    panel = TABLES["single_perturbation_prediction"].set_index(["dataset", "model", "metric"])["value"]
    assert panel["replogle2022_rpe1_essential", "linear", "l2"] == 5.390
    ratio = TABLES["l2_ratio_to_mean"].set_index(["dataset", "model"])
    assert ratio.loc[("adamson2016", "linear (P from other screen)"), "ci_low"] == 0.76
    assert published_for("adamson2016") == ("adamson2016", True)
    assert published_for("replogle_k562_like") == ("replogle2022_k562_essential", False)
    assert published_for("norman_like") == (None, False)


def test_plots_draw_with_labels(screen):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.plots.unseen_perturbations import metric_by_model, ratio_plot

    rng = np.random.default_rng(0)
    rows = []
    for d in ("a", "b"):
        for model, scale in (("mean", 1.0), ("linear", 0.9), ("no change", 1.3)):
            for p in range(20):
                rows.append((d, 1, model, f"P{p}", "l2", scale * rng.uniform(2, 3)))
                rows.append((d, 1, model, f"P{p}", "pearson_delta_vs_control", np.nan if model == "no change" else rng.uniform(0, 1)))
    frame = pd.DataFrame(rows, columns=["dataset", "seed", "model", "perturbation", "metric", "value"])
    fig = metric_by_model(frame, order=["mean", "linear", "no change"])
    assert fig.axes[0].get_title() == "a" and "L2" in fig.axes[0].get_xlabel()
    ratios = ratio_to_reference(frame, n_resamples=200)
    published = pd.DataFrame({"dataset": ["a"], "model": ["linear"], "value": [0.95]})
    fig2 = ratio_plot(ratios, published=published)
    assert fig2.axes[0].get_xscale() == "log"
    assert "mean" in fig2.axes[0].get_xlabel()
    plt.close("all")


@pytest.mark.slow
def test_notebook_runs_with_own_predictions_and_gives_identical_results_twice(tmp_path):
    from helpers.book.runner import run_notebook
    from helpers.data import gears_simulation_split, load_dataset, profiles

    adata = load_dataset("adamson_like")
    table = profiles(adata)
    split = gears_simulation_split([p for p in table.index if p != "control"], seed=1)
    own = table.loc[list(split.train)].mean() + 0.01  # "my model": the training mean shifted a little
    pd.DataFrame(
        [own.to_numpy()] * len(split.evaluated), index=pd.Index(list(split.evaluated), name="perturbation"), columns=table.columns
    ).to_csv(tmp_path / "mine.csv")
    params = {
        "datasets": ["adamson_like"],
        "seeds": [1],
        "models": ["mean", "linear", "linear (P from other screen)", "MLP (torch)"],
        "predictions": str(tmp_path / "mine.csv"),
        "predictions_name": "my model",
        "n_bootstrap": 500,
    }
    paths = []
    for run in ("a", "b"):
        run_notebook("unseen_perturbations", params, tmp_path / run)
        paths.append(tmp_path / run / "unseen_perturbations.results.csv")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert_same_outputs(tmp_path / "a" / "unseen_perturbations.ipynb", tmp_path / "b" / "unseen_perturbations.ipynb")
    results = check_results(pd.read_csv(paths[0]))
    from helpers.models.precomputed import precomputed_files

    # gears = "precomputed" by default: GEARS joins the models exactly when its file for this split is shipped
    shipped = precomputed_files("unseen_perturbations", "adamson_like", 1)[1].exists()
    expected = {"mean", "linear", "linear (P from other screen)", "MLP (torch)", "my model"} | ({"GEARS"} if shipped else set())
    assert set(results["model"]) == expected
    assert set(results["metric"]) == {"l2", "pearson_delta_vs_control"}
    mine = results[(results["model"] == "my model") & (results["metric"] == "l2")]
    assert len(mine) == len(split.evaluated)
    # the common set is what every model predicted: the other-screen P cannot embed everything on adamson_like
    common = results[results["common_set"]]
    assert 0 < common["perturbation"].nunique() < len(split.evaluated)


@pytest.mark.slow
def test_notebook_on_downloaded_data_shows_published_numbers_side_by_side(tmp_path, monkeypatch):
    """A cached 'adamson2016' (here: a simulated screen written in the GEARS format) takes the same-data branch."""
    import json
    import zipfile

    import scipy.sparse as sp

    from helpers.book.runner import run_notebook
    from helpers.data import load_dataset

    sim = load_dataset("adamson_like")
    labels = sim.obs["perturbation"].astype(str)
    obs = pd.DataFrame({"condition": np.where(labels == "control", "ctrl", labels + "+ctrl"), "cell_type": "K562"}, index=sim.obs_names)
    gears = ad.AnnData(
        X=sp.csr_matrix(sim.X), obs=obs, var=pd.DataFrame({"gene_name": sim.var_names}, index=[f"ENSG{i:06d}" for i in range(sim.n_vars)])
    )
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    gears.write_h5ad(cache / "tmp" / "perturb_processed.h5ad")
    with zipfile.ZipFile(cache / "adamson.zip", "w") as zf:
        zf.write(cache / "tmp" / "perturb_processed.h5ad", "adamson/perturb_processed.h5ad")
    monkeypatch.setenv("PERTURB_DATA_CACHE", str(cache))
    monkeypatch.setenv("PERTURB_DATA_MIRROR", "http://127.0.0.1:9")  # nothing else may be fetched
    # the state after a first download that passed its checks (the fake is below the registry's plausibility floors)
    from helpers.data import download
    from helpers.data.registry import DOWNLOADS

    spec, member = DOWNLOADS["adamson2016"], cache / "tmp" / "perturb_processed.h5ad"
    members = {spec.member: download._hash_file(member)}
    download._update_record(
        spec, download._new_entry(spec, cache / spec.filename, download._hash_file(cache / spec.filename), "test", members)
    )

    params = {"datasets": ["adamson2016"], "seeds": [1], "models": ["mean", "linear", "linear (P from other screen)"], "n_bootstrap": 200}
    run_notebook("unseen_perturbations", params, tmp_path / "run")
    nb = json.loads((tmp_path / "run" / "unseen_perturbations.ipynb").read_text())
    text = "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "the same data as the paper's `adamson2016`" in text
    assert "could not download replogle2022_k562_essential" in text or "cannot be loaded" in text
    results = pd.read_csv(tmp_path / "run" / "unseen_perturbations.results.csv")
    assert set(results["model"]) == {"mean", "linear"}
