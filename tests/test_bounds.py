"""Progress-bar arithmetic, per-context targets and the two-stage bootstrap against analytic variances."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_same_outputs

from helpers.benchmarks.engine import TrainingData, run_folds
from helpers.benchmarks.progress_bars import (
    EXPERIMENTAL_ERROR,
    NO_CHANGE,
    TRAIN_MEAN,
    TRUE_ERROR,
    context_changes,
    evaluate_context,
    fold_errors,
    progress_table,
)
from helpers.data import kfold_split
from helpers.errors import DataError
from helpers.knowledge.embeddings import label_pca_embedding
from helpers.metrics.calibration import fraction_gap_closed
from helpers.models.embedding_regressor import EmbeddingSource, fixed_source
from helpers.models.registry import build_models
from helpers.stats.bootstrap import _bootstrap_means, bootstrap_error

# ---------------------------------------------------------------------------- the fraction


def test_fraction_gap_closed_by_hand():
    # published K562 numbers: train mean 4.959, experimental error 4.570, best unimodal 4.659
    assert fraction_gap_closed(4.659, 4.959, 4.570) == pytest.approx(0.300 / 0.389)
    assert fraction_gap_closed(4.959, 4.959, 4.570) == 0.0
    assert fraction_gap_closed(4.570, 4.959, 4.570) == 1.0
    assert fraction_gap_closed(5.087, 4.959, 4.570) == pytest.approx(-0.128 / 0.389)  # worse than the WAP
    assert fraction_gap_closed(4.4, 5.0, 4.6) == pytest.approx(1.5)  # better than the BAP
    np.testing.assert_allclose(fraction_gap_closed([3.0, 2.0], [4.0, 4.0], [2.0, 3.0]), [0.5, 2.0])
    assert np.isnan(fraction_gap_closed(4.0, 4.0, 4.5))  # BAP above WAP: no gap to measure
    assert np.isnan(fraction_gap_closed(4.0, 4.0, 4.0))


def _errors(values: dict, context="K") -> pd.DataFrame:
    return pd.DataFrame({"context": context, "model": list(values), "l2": list(values.values()), "fold_l2": [[v] for v in values.values()]})


def test_progress_table_picks_best_null_and_tighter_cheater():
    values = {
        TRAIN_MEAN: 5.0,
        NO_CHANGE: 5.4,
        "random (kNN)": 5.1,
        "PCA of control cells (kNN)": 4.9,
        "idealized PCA, cheater (kNN)": 4.0,
        EXPERIMENTAL_ERROR: 4.5,
        "GO (kNN)": 4.7,
        TRUE_ERROR: 4.2,
    }
    kinds = {
        TRAIN_MEAN: "null method",
        NO_CHANGE: "null method",
        "random (kNN)": "null method",
        "PCA of control cells (kNN)": "null method",
        "idealized PCA, cheater (kNN)": "cheater",
        EXPERIMENTAL_ERROR: "cheater",
        "GO (kNN)": "embedding",
        TRUE_ERROR: "reference",
    }
    table = progress_table(_errors(values), kinds).set_index("model")
    assert set(table["wap_model"]) == {"PCA of control cells (kNN)"} and set(table["bap_model"]) == {EXPERIMENTAL_ERROR}
    go = table.loc["GO (kNN)"]
    assert go["fraction_gap_closed"] == pytest.approx((4.9 - 4.7) / (4.9 - 4.5))
    assert go["fraction_gap_closed_published"] == pytest.approx((5.0 - 4.7) / (5.0 - 4.5))
    assert go["fraction_true_gap_closed"] == pytest.approx((4.9 - 4.7) / (4.9 - 4.2))
    assert table.loc["PCA of control cells (kNN)", "fraction_gap_closed"] == 0.0
    assert table.loc[EXPERIMENTAL_ERROR, "fraction_gap_closed"] == 1.0
    assert table.loc["idealized PCA, cheater (kNN)", "fraction_gap_closed"] == pytest.approx(2.25)
    with pytest.raises(ValueError, match="no kind given"):
        progress_table(_errors(values), {k: v for k, v in kinds.items() if k != "GO (kNN)"})
    with pytest.raises(DataError, match="one cheater"):
        progress_table(_errors({TRAIN_MEAN: 5.0}), {TRAIN_MEAN: "null method"})


def test_fold_errors_mean_per_fold_then_median():
    per = pd.DataFrame(
        {
            "context": "K",
            "model": "m",
            "fold": [0, 0, 1, 1, 2],
            "perturbation": list("abcde"),
            "l2": [1.0, 3.0, 4.0, 6.0, 10.0],
        }
    )
    out = fold_errors(per).iloc[0]
    assert out["fold_l2"] == [2.0, 5.0, 10.0]
    assert out["l2"] == 5.0


def test_null_methods_by_hand():
    # the registry's training mean and no change, fitted on each fold's training changes by the engine
    changes = pd.DataFrame([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]], index=list("ABCD"), columns=["g1", "g2"])
    folds = kfold_split(list("ABCD"), n_folds=2, seed=0)
    per, _, _ = evaluate_context(changes, folds, sources=[])
    preds = run_folds(
        folds, lambda k, split: build_models([TRAIN_MEAN, NO_CHANGE]), lambda k, split: TrainingData(changes=changes.loc[list(split.train)])
    ).predictions
    for split in folds:
        expected = changes.loc[list(split.train)].mean().to_numpy()
        for p in split.test:
            np.testing.assert_allclose(preds[TRAIN_MEAN].loc[p].to_numpy(), expected)
    assert (preds[NO_CHANGE].to_numpy() == 0).all()
    assert sorted(preds[TRAIN_MEAN].index) == list("ABCD")
    # the chapter's L2 of the mean: the distance of each change to its fold's training mean
    l2_mean = per[per["model"] == TRAIN_MEAN].set_index("perturbation")["l2"]
    for p in "ABCD":
        assert l2_mean[p] == pytest.approx(float(np.linalg.norm(preds[TRAIN_MEAN].loc[p] - changes.loc[p])))


# ---------------------------------------------------------------------------- targets


def _screen(values_by_cell, perts, contexts, batches, genes=("g0", "g1")):
    obs = pd.DataFrame(
        {"perturbation": pd.Categorical(perts), "context": contexts, "batch": batches}, index=[f"c{i}" for i in range(len(perts))]
    )
    obs["n_targets"] = [0 if p == "control" else 1 for p in perts]
    return ad.AnnData(X=sp.csr_matrix(np.asarray(values_by_cell, dtype=np.float32)), obs=obs, var=pd.DataFrame(index=list(genes)))


def test_context_changes_weight_batches_equally_and_use_each_contexts_controls():
    X = [
        [1, 0],
        [1, 0],
        [3, 0],  # control of K: batch b1 (1, 1) -> 1, batch b2 (3) -> 3; equal weight -> 2
        [4, 1],
        [6, 1],
        [6, 1],
        [6, 1],  # A in K: b1 (4) -> 4, b2 (6, 6, 6) -> 6; equal weight -> 5 (cells pooled: 5.5)
        [10, 10],
        [10, 10],  # control of R
        [12, 9],
        [12, 9],  # A in R
        [0, 0],
        [0, 0],  # A+B in R (a double: dropped)
    ]
    perts = ["control"] * 3 + ["A"] * 4 + ["control"] * 2 + ["A"] * 2 + ["A+B"] * 2
    contexts = ["K"] * 7 + ["R"] * 6
    batches = ["b1", "b1", "b2", "b1", "b2", "b2", "b2", "b1", "b2", "b1", "b2", "b1", "b2"]
    out = context_changes(_screen(X, perts, contexts, batches))
    assert sorted(out) == ["K", "R"]
    np.testing.assert_allclose(out["K"].loc["A"].to_numpy(), [5.0 - 2.0, 1.0 - 0.0])
    np.testing.assert_allclose(out["R"].loc["A"].to_numpy(), [2.0, -1.0])
    assert list(out["R"].index) == ["A"] and out["R"].attrs["dropped_doubles"] == ["A+B"]
    pooled = context_changes(_screen(X, perts, contexts, batches), batch_key=None)
    np.testing.assert_allclose(pooled["K"].loc["A"].to_numpy(), [5.5 - 5.0 / 3.0, 1.0])


def test_context_changes_of_precomputed_changes():
    obs = pd.DataFrame({"perturbation": ["A", "B", "A"], "context": ["K", "K", "R"], "fold": [0, 1, 0]}, index=["r0", "r1", "r2"])
    changes = ad.AnnData(X=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), obs=obs, var=pd.DataFrame(index=["g0", "g1"]))
    changes.uns["kind"] = "changes"
    out = context_changes(changes)
    np.testing.assert_array_equal(out["K"].loc["B"].to_numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(out["R"].loc["A"].to_numpy(), [5.0, 6.0])


def test_context_without_controls_is_refused():
    screen = _screen([[1, 0], [2, 0], [3, 0]], ["control", "A", "A"], ["K", "K", "R"], ["b", "b", "b"])
    with pytest.raises(DataError, match="context 'R' has no control cells"):
        context_changes(screen)


# ---------------------------------------------------------------------------- the bootstrap


def test_inner_bootstrap_of_one_batch_has_the_plugin_variance_over_n():
    rng = np.random.default_rng(0)
    n = 40
    X = rng.gamma(2.0, 1.5, size=(n, 3))
    boot = _bootstrap_means(sp.csr_matrix(X), np.zeros(n, dtype=np.int64), np.random.default_rng(1), n_batch=1, n_cell=20000)
    expected_var = X.var(axis=0) / n  # plug-in variance (divisor n) over n cells
    np.testing.assert_allclose(boot.var(axis=0), expected_var, rtol=0.05)
    assert np.all(np.abs(boot.mean(axis=0) - X.mean(axis=0)) < 4 * np.sqrt(expected_var / 20000))


def test_two_stage_bootstrap_variance_matches_the_formula():
    # Var = (1/B) [ (1/B) Σ_b (m_b − m̄)² + (1/B) Σ_b s_b² / n_b ], with plug-in variances
    rng = np.random.default_rng(2)
    sizes, centres = [5, 10, 20], [0.0, 2.0, 5.0]
    X = np.concatenate([c + rng.normal(size=(s, 2)) * (1 + i) for i, (s, c) in enumerate(zip(sizes, centres))])
    codes = np.repeat(np.arange(3), sizes)
    B = 3
    m = np.array([X[codes == b].mean(axis=0) for b in range(B)])
    within = np.array([X[codes == b].var(axis=0) / sizes[b] for b in range(B)])
    expected = (((m - m.mean(axis=0)) ** 2).mean(axis=0) + within.mean(axis=0)) / B
    boot = _bootstrap_means(X, codes, np.random.default_rng(3), n_batch=20000, n_cell=1)
    np.testing.assert_allclose(boot.var(axis=0), expected, rtol=0.05)
    assert np.all(np.abs(boot.mean(axis=0) - m.mean(axis=0)) < 4 * np.sqrt(expected / 20000))  # centred on the equal-weight point


def _two_group_screen(seed=0, n_p=30, n_c=50, genes=4):
    rng = np.random.default_rng(seed)
    Xp = rng.normal(1.0, 1.0, size=(n_p, genes))
    Xc = rng.normal(0.0, 2.0, size=(n_c, genes))
    Xq = rng.normal(0.5, 1.0, size=(n_p, genes))
    X = np.vstack([Xc, Xp, Xq])
    perts = ["control"] * n_c + ["P"] * n_p + ["Q"] * n_p
    batches = ["b1"] * (n_c // 2) + ["b2"] * (n_c - n_c // 2) + ["b1", "b2"] * (n_p // 2) * 2
    return _screen(X, perts, ["K"] * len(perts), batches, genes=[f"g{j}" for j in range(genes)])


def test_bootstrap_distance_squared_has_the_analytic_mean():
    screen = _two_group_screen()
    X = screen.X.toarray()
    labels = screen.obs["perturbation"].astype(str).to_numpy()
    batches = screen.obs["batch"].astype(str).to_numpy()

    def var_of_boot_mean(rows):
        codes = batches[rows]
        B = len(set(codes))
        m = np.array([X[rows][codes == b].mean(axis=0) for b in sorted(set(codes))])
        within = np.array([X[rows][codes == b].var(axis=0) / (codes == b).sum() for b in sorted(set(codes))])
        return (((m - m.mean(axis=0)) ** 2).mean(axis=0) + within.mean(axis=0)) / B

    expected = (var_of_boot_mean(labels == "P") + var_of_boot_mean(labels == "control")).sum()
    d = bootstrap_error(screen, ["P"], n_batch_resamples=4000, n_cell_resamples=5, seed=11)
    assert d.shape == (1, 20000)
    assert float((d.loc["P"] ** 2).mean()) == pytest.approx(expected, rel=0.05)


def test_bootstrap_quantile_of_one_gene_is_the_normal_quantile():
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(0, 1, size=(400, 1)), rng.normal(0, 1, size=(100, 1))])
    screen = _screen(X, ["control"] * 400 + ["P"] * 100, ["K"] * 500, ["b"] * 500, genes=["g0"])
    d = bootstrap_error(screen, n_batch_resamples=1, n_cell_resamples=20000, seed=1)
    sd = np.sqrt(X[:400].var() / 400 + X[400:].var() / 100)
    assert float(d.loc["P"].quantile(0.9)) == pytest.approx(1.6449 * sd, rel=0.05)  # |N(0, sd²)| has q0.9 = 1.645 sd


def test_bootstrap_defaults_determinism_and_independence_from_other_perturbations():
    screen = _two_group_screen(seed=1)
    both = bootstrap_error(screen)
    assert both.shape == (2, 100)  # 10 batch resamples x 10 cell resamples, as published
    again = bootstrap_error(screen)
    pd.testing.assert_frame_equal(both, again)
    alone = bootstrap_error(screen, ["Q"])
    pd.testing.assert_frame_equal(alone.loc[["Q"]], both.loc[["Q"]])
    dense = screen.copy()
    dense.X = screen.X.toarray()
    np.testing.assert_allclose(bootstrap_error(dense).to_numpy(), both.to_numpy(), rtol=1e-10)
    assert not np.allclose(bootstrap_error(screen, seed=1).to_numpy(), both.to_numpy())


def test_bootstrap_errors():
    screen = _two_group_screen()
    with pytest.raises(DataError, match="no cells for 1 perturbations"):
        bootstrap_error(screen, ["Z"])
    with pytest.raises(DataError, match="control cells"):
        bootstrap_error(screen[screen.obs["perturbation"] != "control"].copy())


# ---------------------------------------------------------------------------- one context, end to end


def test_evaluate_context_end_to_end_without_leaks():
    rng = np.random.default_rng(6)
    perts = [f"G{i:02d}" for i in range(40)]
    genes = perts[:20] + [f"X{j}" for j in range(10)]
    programs = rng.integers(0, 4, size=40)
    centres = rng.normal(size=(4, 30)) * 2
    truth = pd.DataFrame(centres[programs], index=pd.Index(perts, name="perturbation"), columns=genes)
    observed = truth + rng.normal(scale=0.3, size=truth.shape)
    folds = kfold_split(perts, n_folds=5, seed=42)
    onehot = pd.DataFrame(np.eye(4)[programs] + 0.01 * rng.normal(size=(40, 4)), index=perts)
    sources = [
        fixed_source("program", onehot),
        EmbeddingSource("PCA of training labels", "null method", lambda train, everything: label_pca_embedding(train, 5), per_fold=True),
    ]
    q90 = pd.Series(0.3 * np.sqrt(30) * 1.1, index=perts)
    per, log, skipped = evaluate_context(observed, folds, sources, heads=("knn",), bootstrap_q90=q90, truth=truth, k_grid=(3, 5))
    assert skipped == {}
    assert set(per["model"]) == {TRAIN_MEAN, NO_CHANGE, "program (kNN)", "PCA of training labels (kNN)", EXPERIMENTAL_ERROR, TRUE_ERROR}
    assert (per.groupby("model").size() == 40).all()
    assert set(log["fold"]) == set(range(5))
    errors = fold_errors(per.assign(context="K"))
    kinds = dict(zip(per["model"], per["kind"]))
    table = progress_table(errors, kinds).set_index("model")
    # the informative embedding closes a large part of the gap, more than the null PCA
    assert table.loc["program (kNN)", "fraction_true_gap_closed"] > 0.5
    assert table.loc["program (kNN)", "fraction_gap_closed"] > table.loc["PCA of training labels (kNN)", "fraction_gap_closed"]
    with pytest.raises(DataError, match="no bootstrap error for 1"):
        evaluate_context(observed, folds, sources[:1], bootstrap_q90=q90.drop("G00"))
    # an embedding covering too few perturbations is left out with its reason, not replaced by the mean
    sparse = fixed_source("sparse", onehot.iloc[:6])
    per, _, skipped = evaluate_context(observed, folds, [sparse], k_grid=(3,))
    assert "sparse (kNN)" not in set(per["model"]) and "only" in skipped["sparse (kNN)"]


# ---------------------------------------------------------------------------- the notebook


def _fake_essential_pseudobulk(path):
    """A file in the format of Cole et al.'s essential_pseudobulk_deltas_all_perts.h5ad, from a small simulation."""
    from helpers.data import load_dataset

    sim = load_dataset("essential_like", scale=0.4)
    rows, blocks = [], []
    for ctx, frame in context_changes(sim).items():
        folds = {p: k for k, split in enumerate(kfold_split(list(frame.index), 5, seed=3)) for p in split.test}
        rows += [{"gene": p, "cell_line": ctx.removesuffix("_like"), "test_split": folds[p]} for p in frame.index]
        blocks.append(frame.to_numpy())
    obs = pd.DataFrame(rows, index=[f"row{i}" for i in range(len(rows))])
    ad.AnnData(X=np.vstack(blocks).astype(np.float32), obs=obs, var=pd.DataFrame(index=frame.columns)).write_h5ad(path)
    return list(frame.columns)


def _record_as_verified(spec):
    """Record the cached fake as a download that passed its checks (the state after a real first download)."""
    from helpers.data import download

    path = download.cache_dir() / spec.filename
    download._update_record(spec, download._new_entry(spec, path, download._hash_file(path), "test fixture"))


@pytest.mark.slow
def test_notebook_on_the_published_file_with_own_embeddings_twice(tmp_path, monkeypatch):
    from helpers.book.runner import run_notebook
    from helpers.data.registry import DOWNLOADS

    monkeypatch.setenv("PERTURB_DATA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    genes = _fake_essential_pseudobulk(tmp_path / "cache" / DOWNLOADS["essential_pseudobulk"].filename)
    _record_as_verified(DOWNLOADS["essential_pseudobulk"])  # a small fake: below the registry's plausibility floors
    own = pd.DataFrame(np.random.default_rng(0).normal(size=(len(genes) - 40, 8)), index=pd.Index(genes[40:], name="symbol"))
    own.to_csv(tmp_path / "fm.csv")
    params = {
        "dataset": "essential_pseudobulk",
        "models": ["random", "other contexts"],
        "embeddings_file": str(tmp_path / "fm.csv"),
        "embeddings_name": "my foundation model",
    }
    first = run_notebook("progress_bars", params, tmp_path / "run1")
    run_notebook("progress_bars", params, tmp_path / "run2")
    a = (tmp_path / "run1" / "progress_bars-essential_pseudobulk.results.csv").read_bytes()
    assert a == (tmp_path / "run2" / "progress_bars-essential_pseudobulk.results.csv").read_bytes()
    assert_same_outputs(first.path, tmp_path / "run2" / "progress_bars.ipynb")
    results = pd.read_csv(tmp_path / "run1" / "progress_bars-essential_pseudobulk.results.csv", keep_default_na=False)
    assert set(results["context"]) == {"K562", "HepG2", "Jurkat", "RPE1"}
    assert "my foundation model (kNN)" in set(results["model"])
    assert EXPERIMENTAL_ERROR not in set(results["model"])  # no cells, no bootstrap
    assert "fraction_gap_closed" in set(results["metric"])
    text = first.path.read_text()
    assert "Same data as the paper" in text and "No bootstrap" in text
    assert "Traceback" not in text
