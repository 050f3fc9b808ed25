"""The PerturBench chapter: the transfer split, scoring per line, the claims, figures and the notebook."""

import random
from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from conftest import assert_same_outputs
from sklearn.model_selection import train_test_split

from helpers.benchmarks import perturbench as chapter
from helpers.book.runner import NOTEBOOK_DIR
from helpers.data.registry import load_dataset
from helpers.data.splits import TransferSplit, condition_name, parse_condition, transfer_split
from helpers.errors import DataError
from helpers.results import check_results


@pytest.fixture(scope="module")
def mcfaline():
    return load_dataset("mcfaline2023_subset")


def perturbench_split_covariates(obs, seed, max_frac, min_train_covariates=1, max_heldout_covariates=2, train_control_fraction=0.5):
    """PerturBench's PerturbationDataSplitter.split_covariates (+ _assign_split, _split_controls), transcribed as published."""
    obs = obs.copy()
    max_heldout_dict = {}
    for cov_keys, df in obs.groupby(["context"]):
        max_heldout_dict[frozenset(cov_keys)] = min(max_frac * df["perturbation"].nunique(), 200)
    pcd = {}
    for pert_key, df in obs.groupby(["perturbation"]):
        pert_key = pert_key[0]
        if pert_key != "control":
            pcd[pert_key] = [frozenset(x) for x in df.loc[:, ["context"]].drop_duplicates().values]
    pcd = dict(sorted(pcd.items(), key=lambda item: len(item[1]), reverse=True))
    rng = np.random.RandomState(seed)
    seed_list = [rng.randint(100000) for _ in range(len(pcd))]
    num_total_covs = len(max_heldout_dict)
    num_heldout = defaultdict(int)
    train_pc, held_pc = [], []
    for i, (pert, covs) in enumerate(pcd.items()):
        sampled = []
        if len(covs) > min_train_covariates:
            pool = [c for c in covs if num_heldout[c] < max_heldout_dict[c]]
            if len(pool) > 0:
                random.seed(seed_list[i])
                n = random.randint(1, np.max([len(pool) - num_total_covs + max_heldout_covariates, 1]))
                sampled = random.sample(pool, n)
                for c in sampled:
                    num_heldout[c] += 1
                held_pc.extend([(pert, c) for c in sampled])
        train_pc.extend([(pert, c) for c in covs if c not in sampled])
    counts = defaultdict(int)
    for _, c in held_pc:
        counts[c] += 1
    held_pc = [(p, c) for p, c in held_pc if counts[c] > 1]
    val, test = train_test_split(held_pc, stratify=[str(c) for _, c in held_pc], test_size=0.5, random_state=seed)
    random.seed(seed)
    ctrl_ix = list(obs.loc[obs["perturbation"] == "control"].index)
    ctrl_ix = random.sample(ctrl_ix, k=len(ctrl_ix))
    val_frac = (1 - train_control_fraction) / 2
    tr, va, te = np.split(ctrl_ix, [int(train_control_fraction * len(ctrl_ix)), int((val_frac + train_control_fraction) * len(ctrl_ix))])

    def plain(pairs):
        return {(p, next(iter(c))) for p, c in pairs}

    return plain(train_pc), plain(val), plain(test), {**dict.fromkeys(tr, "train"), **dict.fromkeys(va, "val"), **dict.fromkeys(te, "test")}


def _uneven_obs():
    """Perturbations measured in 1, 2 or 3 of four lines, in a shuffled cell order."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(14):
        lines = rng.choice(["K1", "K2", "K3", "K4"], size=1 + i % 3, replace=False)
        rows += [(f"G{i}", k) for k in lines for _ in range(3)]
    rows += [("control", k) for k in ["K1", "K2", "K3", "K4"] for _ in range(9)]
    obs = pd.DataFrame(rows, columns=["perturbation", "context"])
    obs = obs.iloc[rng.permutation(len(obs))]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return obs


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_transfer_split_reproduces_perturbench_code(mcfaline, fraction):
    import anndata as ad

    uneven = ad.AnnData(np.zeros((len(_uneven_obs()), 1), dtype=np.float32), obs=_uneven_obs())
    for adata in (mcfaline, uneven):
        obs = pd.DataFrame({"perturbation": adata.obs["perturbation"].astype(str), "context": adata.obs["context"].astype(str)})
        for seed in (0, 1, 54):
            train, val, test, controls = perturbench_split_covariates(obs, seed, fraction)
            split = transfer_split(adata, seed=seed, max_heldout_fraction_per_covariate=fraction)
            assert set(split.train) == train and set(split.val) == val and set(split.test) == test
            assert split.controls.to_dict() == controls


def test_transfer_split_never_trains_on_a_held_out_pair(mcfaline):
    for seed in range(5):
        split = transfer_split(mcfaline, seed=seed, max_heldout_fraction_per_covariate=0.5)
        train = split.subset(mcfaline, "train")
        pairs = set(zip(train.obs["perturbation"].astype(str), train.obs["context"].astype(str)))
        assert not pairs & set(split.evaluated)
        held_controls = set(split.controls.index[split.controls != "train"])
        assert not held_controls & set(train.obs_names)
        # every held-out perturbation is trained in another line; no line holds out more than its capacity (10 labels x 0.5)
        for p, k in split.evaluated:
            assert any(q == p and c != k for q, c in split.train)
        per_line = pd.Series([k for _, k in split.evaluated]).value_counts()
        assert (per_line <= 5).all() and (per_line >= 2).all()
        assert split.controls.value_counts().to_dict() == {"train": 150, "val": 75, "test": 75}
        chapter.check_split(mcfaline, split)
    # a split that trains on a held-out pair is refused
    with pytest.raises(DataError, match="both train and test"):
        TransferSplit("leaky", 0, split.train + split.test[:1], split.val, split.test, split.controls)
    with pytest.raises(DataError, match=r"needs obs\['cell_line'\]"):
        transfer_split(mcfaline, seed=0, context_key="cell_line")


def test_condition_names():
    assert condition_name("MAPK1", "A172") == "MAPK1@A172"
    assert parse_condition("A+B@K562") == ("A+B", "K562")
    with pytest.raises(DataError, match="not a condition name"):
        parse_condition("MAPK1")
    with pytest.raises(DataError, match="must not contain"):
        condition_name("MAPK1", "a@b")
    with pytest.raises(DataError, match="canonical"):
        parse_condition("B+A@K562")


def test_schema_matches_the_notebook():
    cell = pm.inspect_notebook(str(NOTEBOOK_DIR / "perturbench.ipynb"))
    names = [n for n in cell if n != "output_dir"]
    assert names == chapter.PARAMETERS.names
    for name in names:
        default = eval(cell[name]["default"])
        assert chapter.PARAMETERS[name].check(default) == chapter.PARAMETERS[name].check(chapter.PARAMETERS[name].default), name
    assert set(chapter.MODELS) == set(chapter.PARAMETERS["models"].default)


@pytest.fixture(scope="module")
def baseline_run(mcfaline):
    split = transfer_split(mcfaline, seed=0, max_heldout_fraction_per_covariate=0.5)
    models = chapter.build_chapter_models(list(chapter.BASELINES), seed=0, max_seconds=10)
    genes = list(mcfaline.var_names)
    run = chapter.run_seed(mcfaline, split, models, genes, n_pcs=10)
    return run, chapter.score_run(run, "mcfaline2023_subset", top_k=20)


def test_scores_per_line_by_hand(baseline_run, mcfaline):
    run, results = baseline_run
    results = check_results(results)
    assert list(results.columns) == ["dataset", "seed", "model", "perturbation", "context", "split", "metric", "value"]
    assert set(results["metric"]) == {
        "rmse",
        "rank_rmse",
        "cosine_logfc_vs_control",
        "rank_cosine_logfc_vs_control",
        "top20_recall_de_vs_control",
        "energy_distance_pca10",
        "rank_energy_distance_pca10",
    }
    assert set(results["split"]) == {"val", "test"}
    # the truth and the reference by hand: the held-out cells of the pair and the line's held-out control cells
    cond = run.evaluation.common[0]
    pert, line = parse_condition(cond)
    labels = run.split.cell_labels(mcfaline)
    obs = mcfaline.obs
    cells = mcfaline[((obs["perturbation"] == pert) & (obs["context"] == line)).to_numpy()].X.toarray().mean(axis=0)
    ctrl_mask = ((obs["perturbation"] == "control") & (obs["context"] == line) & labels.isin(["val", "test"])).to_numpy()
    ctrl = mcfaline[ctrl_mask].X.toarray().mean(axis=0)
    train_ctrl = mcfaline[((obs["perturbation"] == "control") & (obs["context"] == line) & (labels == "train")).to_numpy()].X.toarray()
    want = np.sqrt(np.mean((train_ctrl.mean(axis=0) - cells) ** 2))
    row = results[(results["model"] == "no change (line control)") & (results["metric"] == "rmse")]
    row = row[(row["perturbation"] == pert) & (row["context"] == line)]
    assert row["value"].iloc[0] == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(run.controls[line].to_numpy(), ctrl, rtol=1e-5)
    # one prediction per line for every perturbation: every rank is exactly chance
    flat = results[results["model"].isin(["no change (line control)", "line mean"]) & results["metric"].str.startswith("rank_")]
    assert (flat["value"] == 0.5).all()


def test_summary_tables(baseline_run):
    _, results = baseline_run
    twice = pd.concat([results, results.assign(seed=1, value=results["value"] * 1.1)])
    summary = chapter.summary_table(twice)
    assert list(summary.index) == list(chapter.BASELINES)
    per_seed = twice[(twice["model"] == "line mean") & (twice["metric"] == "rmse")].groupby("seed")["value"].mean()
    assert summary.loc["line mean", ("rmse", "mean")] == pytest.approx(per_seed.mean())
    assert summary.loc["line mean", ("rmse", "sd")] == pytest.approx(per_seed.std(ddof=1))
    assert chapter.compact(summary).shape == (3, 7)
    lines = chapter.per_line_table(twice)
    assert lines.columns.nlevels == 2 and set(lines.columns.get_level_values(1)) == {"A172", "T98G", "U87MG"}


def _summary(values):
    """A summary table from {model: {metric: (mean, sd)}}."""
    metrics = sorted({m for v in values.values() for m in v})
    columns = pd.MultiIndex.from_product([metrics, ["mean", "sd"]])
    rows = {model: [x for m in metrics for x in v[m]] for model, v in values.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def _tidy(values, seeds=(0, 1, 2)):
    """Per-perturbation results from {model: {metric: value}}; seed s adds 0.001 s to every value."""
    rows = []
    for model, per in values.items():
        for s in seeds:
            for metric, v in per.items():
                for line in ("A172", "T98G"):
                    rows.append({"dataset": "screen", "seed": s, "model": model, "perturbation": f"P@{line}", "context": line,
                                 "split": "test", "metric": metric, "value": v + 0.001 * s})  # fmt: skip
    return pd.DataFrame(rows)


def test_claims_follow_the_numbers():
    from helpers.benchmarks.claims import claims_box

    base = {
        "line mean": {"rmse": 0.07, "rank_rmse": 0.5},
        "linear additive (cells, covariates)": {"rmse": 0.10, "rank_rmse": 0.2},
        "latent additive (cells, covariates)": {"rmse": 0.08, "rank_rmse": 0.3},
        "decoder-cov": {"rmse": 0.075, "rank_rmse": 0.5},
        "CPA": {"rmse": 0.09, "rank_rmse": 0.25},
        "CPA (no adversary)": {"rmse": 0.085, "rank_rmse": 0.28},
    }
    results = _tidy(base)
    claims = claims_box(results, "perturbench").table.set_index("claim")
    assert claims.loc["PB-2", "status"] == "holds"  # best simple 0.08 < best complex 0.085
    assert "rank_rmse 0.201 vs 0.251 ✓" in claims.loc["PB-2", "detail"]
    assert claims.loc["PB-3", "status"] == "holds"  # 0.085 < 0.09
    assert "rank_rmse 0.281 vs 0.251 ✗" in claims.loc["PB-3", "detail"]  # worse by more than one seed SD
    assert claims.loc["PB-4", "status"] == "holds"
    worse = dict(base, **{"decoder-cov": {"rmse": 0.2, "rank_rmse": 0.3}})
    results = _tidy(worse)
    summary = chapter.summary_table(results)
    claims = claims_box(results, "perturbench").table
    text = chapter.conclusions(summary, claims, "screen", 3)
    assert "Mode collapse (decoder-cov)** (PB-4): the claim *A covariate-only" in text and "does not hold" in text
    assert "CPA without its adversary** (PB-3)" in text and "holds on this run" in text
    assert "Lowest RMSE**: line mean (0.0710)" in text


def test_side_by_side_uses_the_published_table():
    values = {"decoder-cov": {"rmse": (0.07, 0.0), "energy_distance_pca30": (4.0, 0.0)}}
    table = chapter.side_by_side(_summary(values))
    assert table.loc["decoder-cov", ("rmse_average", "Srivatsan20")] == 0.023
    assert table.loc["decoder-cov", ("mmd_pca", "this run")] == 2.0  # E/2, geomloss' energy loss


def test_plots_are_labelled(baseline_run):
    from helpers.plots.perturbench import cells_in_pc_space, error_vs_rank, per_line

    run, results = baseline_run
    summary = chapter.summary_table(pd.concat([results, results.assign(seed=1)]))
    fig = error_vs_rank(summary, families=chapter.FAMILIES)
    ax = fig.axes[0]
    assert "rmse" in ax.get_xlabel() and "chance" in ax.get_ylabel() and ax.get_title()
    assert any("line mean" in t.get_text() for t in ax.get_legend().get_texts())
    cond = chapter.example_condition(run)
    line = parse_condition(cond)[1]
    fig = cells_in_pc_space(
        run.space, run.observed_cells[cond], run.control_cells[line], {m: c[cond] for m, c in run.predicted_cells.items()}, cond
    )
    assert cond in fig._suptitle.get_text() and "PC 1" in fig.axes[0].get_xlabel() or "PC 1" in fig.axes[-1].get_xlabel()
    fig = per_line(results, "rmse")
    assert fig.axes[0].get_legend().get_title().get_text() == "cell line"
    plt.close("all")


def test_effect_similarity_by_hand(mcfaline):
    table = chapter.effect_similarity(mcfaline)
    obs = mcfaline.obs
    X = mcfaline.X.toarray().astype(np.float64)

    def mean(p, k):
        return X[((obs["perturbation"] == p) & (obs["context"] == k)).to_numpy()].mean(axis=0)

    d1 = mean("MAPK1", "A172") - mean("control", "A172")
    d2 = mean("MAPK1", "T98G") - mean("control", "T98G")
    # 9 perturbations x 3 lines x 2 other lines ordered pairs
    assert table["pairs"].iloc[0] == 54 and table["pairs"].iloc[1] == 3 * 9 * 8
    assert -1 < table.iloc[0, 1] < 1 and np.isfinite(np.corrcoef(d1, d2)[0, 1])


@pytest.mark.slow
def test_notebook_runs_with_own_predictions_and_gives_identical_results_twice(tmp_path, mcfaline):
    from helpers.book.runner import run_notebook
    from helpers.models.cell_models import condition_profiles

    split = transfer_split(mcfaline, seed=0, max_heldout_fraction_per_covariate=0.5)
    train, _ = condition_profiles(split.subset(mcfaline, "train"))
    rows = []
    for p, k in split.evaluated:  # "my model": the line's control plus a little
        rows.append({"perturbation": p, "context": k, **(train.loc[condition_name("control", k)] + 0.01).to_dict()})
    pd.DataFrame(rows).to_csv(tmp_path / "mine_0.csv", index=False)
    params = {
        "seeds": [0],
        "models": ["no change (line control)", "line mean", "mean effect in other lines", "decoder-cov"],
        "predictions": str(tmp_path / "mine_{seed}.csv"),
        "predictions_name": "my model",
    }
    paths = []
    for run in ("a", "b"):
        run_notebook("perturbench", params, tmp_path / run)
        paths.append(tmp_path / run / "perturbench.results.csv")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert_same_outputs(tmp_path / "a" / "perturbench.ipynb", tmp_path / "b" / "perturbench.ipynb")
    results = check_results(pd.read_csv(paths[0]))
    assert set(results["model"]) == set(params["models"]) | {"my model"}
    mine = results[(results["model"] == "my model") & (results["metric"] == "rmse")]
    assert len(mine) == len(split.evaluated)
    assert set(zip(mine["perturbation"], mine["context"])) == set(split.evaluated)
