"""Precomputed GEARS predictions: made through the chapters' own code, served only to the run they were made for.

Most tests need no GEARS: a stand-in (:class:`FakeGEARS`, a closed-form predictor with
GEARS' attributes) replaces the registry's "GEARS" while files are made, through the same
code path as ``scripts/make_gears_predictions.py``, on the real Norman subset. The stand-in is
installed for this whole module, so CI's check that trains GEARS for real lives in
``test_gears_check.py``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers.benchmarks import double_perturbations as doubles
from helpers.benchmarks import gears_predictions as gp
from helpers.benchmarks import unseen_perturbations as unseen
from helpers.data import load_dataset
from helpers.data.canonical import target_genes
from helpers.data.pseudobulk import profiles, pseudobulk
from helpers.data.splits import double_perturbation_split
from helpers.errors import ParameterError
from helpers.models import precomputed as P
from helpers.models import registry
from helpers.models.gears import GEARSModel

REAL = "norman2019_subset"
NO_GO = "TBX3"  # the stand-in pretends this gene has no GO terms, as GEARS does for some genes


class FakeGEARS(GEARSModel):
    """Stands in for GEARS: ŷ_p = x̄_ctrl + (1 + seed/10)(x̄_train − x̄_ctrl), rounded to float32; GEARS' fitted attributes."""

    def fit(self, train):
        table = profiles(train)
        self.genes_ = pd.Index([str(g) for g in train.var_names])
        self.control_ = table.loc["control"]
        self.mean_ = table.drop(index="control").mean()
        self.graph_genes_ = pd.Index(sorted({g for p in table.index for g in target_genes(p)} | set(self.perturbable_genes or ())))
        self.train_perturbations_ = pd.Index([p for p in table.index if p != "control"])
        self.val_perturbations_ = self.train_perturbations_
        self.excluded_ = {}
        self.perturbable_genes_without_go_ = []
        self.history_ = pd.DataFrame({"train_mse": [0.5], "val_mse": [0.5], "seconds": [0.0]}, index=pd.Index([1], name="epoch"))
        self.resources_ = {"prepare_seconds": 0.0, "train_seconds": 0.0, "fit_peak_memory_mb": 0.0}
        return self

    def unpredictable(self, perturbations):
        return {p: f"target gene {NO_GO} has no GO terms, so GEARS cannot perturb it" for p in perturbations if NO_GO in target_genes(p)}

    def _predict(self, perturbations):
        row = (self.control_ + (1 + self.seed / 10) * (self.mean_ - self.control_)).to_numpy(np.float32).astype(np.float64)
        return pd.DataFrame([row] * len(perturbations), index=pd.Index(perturbations), columns=self.genes_.copy())


def _fake_factory(seed: int = 0, gears_epochs: int = 2, perturbations=()):
    genes = sorted({g for p in perturbations or () for g in target_genes(p)}) or None
    return FakeGEARS(epochs=gears_epochs, seed=seed, n_threads=1, perturbable_genes=genes)


FAKE_INFO = {"package": "cell-gears 0.1.2 (stand-in)", "versions": {}, "requirements": []}


@pytest.fixture(scope="module")
def fake_gears():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.MODELS, "GEARS", registry.ModelSpec("GEARS", _fake_factory, "stand-in"))
        mp.setattr(gp, "gears_info", lambda: FAKE_INFO)
        yield


@pytest.fixture(scope="module")
def real():
    return load_dataset(REAL)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, fake_gears):
    """Files made by the script's code for the real subset (double chapter, seed 1; unseen chapter, seed 1)."""
    folder = tmp_path_factory.mktemp("gears")
    gp.make(gp.Target(doubles.NAME, REAL, (1,)), directory=folder, progress=False)
    gp.make(gp.Target(unseen.NAME, REAL, (1,)), directory=folder, progress=False)
    return folder


@pytest.fixture
def served(shipped, tmp_path, monkeypatch):
    """The chapters read the files of ``shipped`` (a copy, so that a test may tamper with it)."""
    folder = tmp_path / "gears"
    shutil.copytree(shipped, folder)
    monkeypatch.setattr(P, "precomputed_dir", lambda: folder)
    return folder


def _doubles_run(adata, n_genes=1000, seeds=(1,), gears="precomputed", **options):
    screen = doubles.describe_screen(adata, n_genes, REAL)
    names, _ = doubles.chosen_models(["no change", "additive", "mean"], True, gears=gears)
    return doubles.run_benchmark(adata, screen.genes, list(seeds), names, dataset=REAL, progress=False, gears=gears, **options)


def _refusal(result) -> str:
    assert "GEARS" in result.evaluation.failures, "GEARS was not refused"
    assert {"no change", "additive", "mean"} <= set(result.predictions), "the other models must still run"
    return result.evaluation.failures["GEARS"]


# ---------------------------------------------------------------------------------------
# the fingerprint
# ---------------------------------------------------------------------------------------


def test_fingerprint_is_route_independent_and_sees_a_changed_condition(real):
    split = double_perturbation_split(real, 1)
    genes = list(real.var_names[::-1][:300])  # another order, a subset
    whole = P.pseudobulk_fingerprint(pseudobulk(real), genes)
    train = P.pseudobulk_fingerprint(pseudobulk(split.subset(real, "train")[:, genes].copy()))
    assert set(train) == set(split.train) | {"control"}
    assert P.fingerprint_differences(whole, train) == []
    # by hand: cells, mean and sketch of one condition
    table = profiles(real)[genes]
    w = np.array([2.0 * __import__("zlib").crc32(g.encode()) / 2**32 - 1.0 for g in genes])
    cells, mean, sketch = whole["KLF1"]
    assert cells == int((real.obs["perturbation"] == "KLF1").sum())
    assert mean == pytest.approx(table.loc["KLF1"].mean(), rel=1e-12)
    assert sketch == pytest.approx(float(table.loc["KLF1"].to_numpy() @ w) / np.sqrt(300), rel=1e-12)
    # one condition's cells change a little: that condition, and only it, is reported
    changed = real.copy()
    rows = np.flatnonzero(changed.obs["perturbation"].to_numpy() == "KLF1")
    X = changed.X.tolil()
    X[rows[0], changed.var_names.get_loc(genes[0])] += 0.05
    changed.X = X.tocsr()
    diff = P.fingerprint_differences(whole, P.pseudobulk_fingerprint(pseudobulk(changed), genes))
    assert len(diff) == 1 and diff[0].startswith("KLF1:")
    # a cell fewer
    fewer = real[np.setdiff1d(np.arange(real.n_obs), rows[:1])].copy()
    diff = P.fingerprint_differences(whole, P.pseudobulk_fingerprint(pseudobulk(fewer), genes))
    assert diff == [f"KLF1: {cells - 1} cells, recorded {cells}"]


# ---------------------------------------------------------------------------------------
# made, served, refused
# ---------------------------------------------------------------------------------------


def test_made_files_carry_their_provenance(shipped, real):
    pred_path, record_path = P.precomputed_files(doubles.NAME, REAL, 1, shipped)
    record = P.read_provenance(record_path)
    split = double_perturbation_split(real, 1)
    evaluated = [p for p in split.evaluated if len(target_genes(p)) == 2]
    assert record["made_by"] == "scripts/make_gears_predictions.py" and record["model"] == "GEARS"
    assert (record["chapter"], record["dataset"], record["seed"]) == (doubles.NAME, REAL, 1)
    assert record["split"]["train"] == list(split.train) and record["split"]["test"] == list(split.test)
    assert record["hyperparameters"]["epochs"] == 2 and record["hyperparameters"]["n_threads"] == 1
    assert record["hyperparameters"]["perturbable_genes"] == sorted({g for p in evaluated for g in target_genes(p)})
    assert record["genes"] == doubles.describe_screen(real, 1000, REAL).genes  # the chapter's gene set (all 500 genes here)
    assert record["genes_sha256"] == P.genes_sha256(record["genes"])
    assert set(record["dataset_fingerprint"]) == set(real.obs["perturbation"].astype(str))
    assert record["excluded"] == {p: f"target gene {NO_GO} has no GO terms, so GEARS cannot perturb it" for p in evaluated if NO_GO in p}
    assert record["predicted"] == [p for p in evaluated if NO_GO not in p]
    assert record["predictions_sha256"] == P.file_sha256(pred_path)
    assert record["suite"]["commit"] and set(record["suite"]["code_sha256"]) <= set(gp.CODE_FILES)
    assert {"fit", "predict", "total"} <= set(record["wall_seconds"]) and record["machine"]["cores"] >= 1
    line = P.provenance_line(record)
    assert line.startswith(f"precomputed by scripts/make_gears_predictions.py, {record['made_on'][:10]} (")


def test_chapter_serves_the_file_unchanged_under_the_name_gears(served, real, fake_gears):
    (live,) = _doubles_run(real, gears="live")
    (pre,) = _doubles_run(real, gears="precomputed")
    assert "GEARS" not in pre.evaluation.failures
    assert isinstance(pre.evaluation.models["GEARS"], P.PrecomputedPredictions)
    # the file holds the live predictions clipped at 0 (the stand-in, like GEARS, predicts a few negative values)
    raw = live.predictions["GEARS"]
    negative = raw.to_numpy() < 0
    assert negative.any(), "the stand-in should predict some negative values here"
    pd.testing.assert_frame_equal(pre.predictions["GEARS"], raw.where(~negative, 0.0))
    clipped = pre.evaluation.models["GEARS"].provenance_["clipped"]
    assert clipped == {"values": int(negative.sum()), "perturbations": int(negative.any(axis=1).sum()), "minimum": float(raw.min().min())}
    assert pre.evaluation.excluded("GEARS") == live.evaluation.excluded("GEARS") != {}
    assert pre.common == live.common
    source = doubles.gears_provenance([pre])
    assert list(source["source"]) == ["precomputed"] and source["detail"][0].startswith("precomputed by scripts/make_gears_predictions.py")
    n, rows = int(negative.sum()), int(negative.any(axis=1).sum())
    assert source["clipped at 0"][0] == f"{n} negative values (in {rows} perturbations; minimum {raw.min().min():.3g}) clipped at 0"
    note = P.precomputed_note(source)
    assert note.startswith("GEARS: precomputed by scripts/make_gears_predictions.py, 20")
    metrics = doubles.per_perturbation_metrics([pre], profiles(real), profiles(real).loc["control"], REAL)
    table = gp.label_sources(doubles.summary_table(metrics[metrics["common_set"]], ["no change", "additive", "mean", "GEARS"]), source)
    assert table.loc["GEARS", "predictions"].startswith("precomputed by scripts/make_gears_predictions.py, 20")
    assert table.loc["additive", "predictions"] == "this run"
    assert doubles.gears_provenance(_doubles_run(real, gears="live"))["source"].tolist() == ["trained in this run"]


def test_other_genes_are_refused_and_the_chapter_goes_on(served, real):
    (result,) = _doubles_run(real, n_genes=100)
    why = _refusal(result)
    assert "made for GEARS trained on 500 genes, this run trains it on 100" in why and "gene set differs" in why
    assert 'gears = "live"' in why
    source = doubles.gears_provenance([result])
    assert list(source["source"]) == ["refused"] and "gene set differs" in source["detail"][0]
    assert P.precomputed_note(source) == "GEARS: left out (refused; see the provenance table)"
    assert "GEARS" in doubles.common_set_lines([result])[0]
    metrics = doubles.per_perturbation_metrics([result], profiles(real), profiles(real).loc["control"], REAL)
    assert set(metrics["model"]) == {"no change", "additive", "mean"} and len(result.common) > 0
    reasons = doubles.exclusion_reasons([result])
    gears_rows = reasons[reasons["model"] == "GEARS"]
    assert len(gears_rows) == len(result.evaluated) and gears_rows["reason"].str.contains("gene set differs").all()


def test_other_split_or_seed_is_refused(served, real):
    _, record_path = P.precomputed_files(doubles.NAME, REAL, 1, served)
    record = json.loads(record_path.read_text())
    moved = record["split"]["train"][0]
    record["split"]["train"] = record["split"]["train"][1:] + ["KLF1+NOTAGENE"]
    record_path.write_text(json.dumps(record))
    why = _refusal(_doubles_run(real)[0])
    assert "the split differs" in why and f"1 not in that split, e.g. {moved}" in why and "missing, e.g. KLF1+NOTAGENE" in why
    # seed 2 has no file: refused with what is shipped
    why = _refusal(_doubles_run(real, seeds=(2,))[0])
    assert "PrecomputedMissing: no precomputed GEARS predictions for norman2019_subset, seed 2 (" in why
    assert "shipped for this chapter: norman2019_subset (seed 1)" in why
    assert "make them with `python scripts/make_gears_predictions.py --dataset norman2019_subset --seeds 2`" in why
    assert why.endswith('or set gears = "live" to train GEARS in this run.')


def test_another_seeds_file_under_this_seeds_name_is_refused(served, real):
    for one, five in zip(P.precomputed_files(doubles.NAME, REAL, 1, served), P.precomputed_files(doubles.NAME, REAL, 5, served)):
        shutil.copy(one, five)
    why = _refusal(_doubles_run(real, seeds=(5,))[0])
    assert "made for double_perturbations, norman2019_subset, seed 1 (a file in the wrong place)" in why
    # with the record's seed edited too, the split itself gives it away
    _, rec5 = P.precomputed_files(doubles.NAME, REAL, 5, served)
    record = json.loads(rec5.read_text())
    record["seed"] = 5
    rec5.write_text(json.dumps(record))
    assert "the split differs" in _refusal(_doubles_run(real, seeds=(5,))[0])


def test_a_changed_screen_is_refused_and_listed_as_stale(served, real):
    changed = real.copy()
    changed.X = changed.X * 1.001  # every profile moves by 0.1 %: "the same screen" by name, not by content
    why = _refusal(_doubles_run(changed)[0])
    assert "the training data differ from those GEARS was trained on" in why and "--dataset norman2019_subset" in why
    assert set(gp.status(served, datasets=[REAL])["state"]) == {"current"}  # the shipped screen itself is unchanged
    listed = gp.status(served, datasets=[REAL], include_missing=True)
    made = {(doubles.NAME, 1), (unseen.NAME, 1)}
    missing = listed[[(c, s) not in made for c, s in zip(listed["chapter"], listed["seed"])]]
    assert sorted(missing["seed"]) == [2, 3, 4, 5] and set(missing["chapter"]) == {doubles.NAME}
    assert missing["state"].iloc[0] == f"not made: python scripts/make_gears_predictions.py --dataset {REAL} --seeds 2"
    _, record_path = P.precomputed_files(doubles.NAME, REAL, 1, served)
    record = json.loads(record_path.read_text())
    record["dataset_fingerprint"]["KLF1"][1] += 1e-3  # as if made on another version of the screen
    record_path.write_text(json.dumps(record))
    state = gp.status(served, datasets=[REAL]).set_index("chapter").loc[doubles.NAME, "state"]
    assert state.startswith("stale: the screen changed (1 conditions differ, e.g. KLF1:")
    assert "KLF1: profile mean" in _refusal(_doubles_run(real)[0])


def test_a_record_of_another_format_is_refused(served, real):
    _, record_path = P.precomputed_files(doubles.NAME, REAL, 1, served)
    record = json.loads(record_path.read_text())
    del record["clipped"]  # as written before format 2
    record["format"] = 1
    record_path.write_text(json.dumps(record))
    why = _refusal(_doubles_run(real)[0])
    assert "PrecomputedMismatch" in why and "lacks ['clipped']; regenerate it with `python scripts/make_gears_predictions.py`" in why


def test_tampered_file_or_other_epochs_are_refused(served, real):
    assert "made with 2 training epochs, this run asks for 3" in _refusal(_doubles_run(real, gears_epochs=3)[0])
    pred_path, _ = P.precomputed_files(doubles.NAME, REAL, 1, served)
    import anndata as ad

    table = ad.read_h5ad(pred_path)
    table.X[0, 0] += 1.0
    table.write_h5ad(pred_path)
    assert "is not the file its record describes (SHA-256 differs)" in _refusal(_doubles_run(real)[0])


def test_unseen_chapter_serves_and_refuses(served, fake_gears):
    screens = unseen.Screens()
    names, _ = unseen.chosen_models(["no change", "mean"], True, gears="precomputed")
    splits, _ = unseen.make_splits(screens, [REAL], [1, 2])
    options = dict(reference={}, go={}, gears="precomputed")
    run = unseen.run_benchmark(screens, [REAL], [1, 2], splits, names, n_genes=200, progress=False, **options)
    ok, refused = run.evaluations[REAL, 1], run.evaluations[REAL, 2]
    assert "GEARS" in ok.predictions and "no precomputed GEARS predictions for norman2019_subset, seed 2" in refused.failures["GEARS"]
    # the unseen chapter trains GEARS on every measured gene, so another n_genes does not matter
    assert list(ok.predictions["GEARS"].columns) == list(screens(REAL).cells.var_names)
    live = unseen.run_benchmark(screens, [REAL], [1], splits, names, n_genes=200, progress=False, reference={}, go={}, gears="live")
    pd.testing.assert_frame_equal(ok.predictions["GEARS"], live.evaluations[REAL, 1].predictions["GEARS"].clip(lower=0.0))
    table = unseen.gears_provenance(run)
    assert table[["dataset", "seed", "source"]].values.tolist() == [[REAL, 1, "precomputed"], [REAL, 2, "not made"]]
    assert run.failures[["seed", "model"]].values.tolist() == [[2, "GEARS"]]
    assert set(run.results[run.results["seed"] == 1]["model"]) == {"no change", "mean", "GEARS"}
    summary = gp.label_sources(unseen.summary_table(run.results[run.results["common_set"]]), table)
    assert summary.xs("GEARS", level="model")["predictions"].iloc[0].startswith("precomputed by scripts/make_gears_predictions.py")


def test_gears_parameter_of_the_chapters():
    assert P.with_gears(["mean"], "precomputed") == ["mean", "GEARS"]
    assert P.with_gears(["mean"], "live") == P.with_gears(["mean", "GEARS"], "live") == ["mean", "GEARS"]
    assert P.with_gears(["mean"], "off") == ["mean"] and P.with_gears(["mean", "GEARS"], None) == ["mean", "GEARS"]
    with pytest.raises(ParameterError, match='Set gears = "live" to train it'):
        P.with_gears(["mean", "GEARS"], "precomputed")
    with pytest.raises(ParameterError, match="choose one of"):
        P.with_gears(["mean"], "yes")
    # precomputed GEARS trains nothing, so run_slow_models=False keeps it; live GEARS is switched off
    assert doubles.chosen_models(["no change", "decoder only (torch)"], False, gears="precomputed") == (
        ["no change", "GEARS"],
        ["decoder only (torch)"],
    )
    assert doubles.chosen_models(["no change"], False, gears="live") == (["no change"], ["GEARS"])
    assert unseen.chosen_models(["mean", "MLP (torch)"], False, gears="precomputed") == (["mean", "GEARS"], ["MLP (torch)"])
    for chapter in (doubles, unseen):
        assert chapter.PARAMETERS["gears"].default == "precomputed" and chapter.PARAMETERS["gears"].choices == P.GEARS_MODES
    models = doubles.models_for_seed(["mean", "GEARS"], 4, ["A+B"], gears="precomputed", dataset="x")
    assert isinstance(models["GEARS"], P.PrecomputedPredictions) and (models["GEARS"].seed, models["GEARS"].dataset) == (4, "x")
    assert isinstance(doubles.models_for_seed(["GEARS"], 4, ["A+B"], gears="live")["GEARS"], GEARSModel)


def test_negative_values_are_clipped_when_written_and_recorded(tmp_path):
    from helpers.errors import DataError
    from helpers.models.external import read_predictions

    values = np.array([[0.5, -0.25, -0.001, 1.0], [1.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32).astype(np.float64)
    pred = pd.DataFrame(values, index=["A", "B", "C"], columns=["g1", "g2", "g3", "g4"])
    record = {k: None for k in P.RECORD_KEYS if k not in ("clipped", "predictions_file", "predictions_sha256")}
    pred_path, record_path = P.write_precomputed(pred, record, doubles.NAME, "x", 1, tmp_path)
    written = read_predictions(pred_path)  # the reader, which refuses negative expression, accepts the file
    assert written.loc["A"].tolist() == [0.5, 0.0, 0.0, 1.0] and written.loc[["B", "C"]].equals(pred.loc[["B", "C"]])
    clipped = json.loads(record_path.read_text())["clipped"]
    assert clipped == {"values": 2, "perturbations": 1, "minimum": -0.25}
    assert P.clipped_note({"clipped": clipped}) == "2 negative values (in 1 perturbation; minimum -0.25) clipped at 0"
    assert P.clipped_note({"clipped": {"values": 0, "perturbations": 0, "minimum": 0.0}}) == "no negative values, none clipped"
    # the reader's check is not loosened: the unclipped values are still refused
    with pytest.raises(DataError, match="2 negative predicted values"):
        read_predictions(pred)


def test_write_refuses_values_that_are_not_float32(tmp_path):
    pred = pd.DataFrame([[0.1, 0.2]], index=["A"], columns=["g1", "g2"])  # 0.1 is not a float32 value
    with pytest.raises(Exception, match="not float32"):
        P.write_precomputed(pred, {}, doubles.NAME, "x", 1, tmp_path)


# ---------------------------------------------------------------------------------------
# the shipped files
# ---------------------------------------------------------------------------------------

SHIPPED = P.shipped_records()


def test_every_shipped_file_is_complete_and_what_the_book_needs():
    import anndata as ad

    if not SHIPPED:
        pytest.skip("no precomputed GEARS predictions are shipped (data/gears)")
    targets = {(t.chapter, t.dataset): set(t.seeds) for t in gp.default_targets()}
    total = 0
    for path in SHIPPED:
        record = P.read_provenance(path)
        pred_path = path.with_suffix(".h5ad")
        assert record["predictions_sha256"] == P.file_sha256(pred_path), path
        assert int(record["seed"]) in targets[record["chapter"], record["dataset"]], path
        table = ad.read_h5ad(pred_path)
        assert list(table.obs_names) == record["predicted"] and list(table.var_names) == record["genes"], path
        assert table.X.dtype == np.float32 and np.isfinite(table.X).all(), path
        clipped = record["clipped"]  # written clipped at 0, with what was clipped
        assert (table.X >= 0).all() and clipped["minimum"] <= 0 and (clipped["values"] > 0) == (clipped["minimum"] < 0), path
        assert clipped["values"] <= (table.X == 0).sum() and clipped["perturbations"] <= min(clipped["values"], table.n_obs), path
        assert record["hyperparameters"]["epochs"] == gp.epochs_of(record["chapter"]) and record["hyperparameters"]["n_threads"] == 1
        assert record["suite"]["commit"] and record["gears"]["package"] == "cell-gears 0.1.2"
        assert record["numerics"]["torch_cpu_capability"] == "AVX2" and record["numerics"]["MKL_CBWR"] == "AVX2", path
        total += pred_path.stat().st_size + path.stat().st_size
    assert total < 10e6, f"the shipped GEARS predictions take {total / 1e6:.1f} MB"


def test_shipped_files_of_the_real_subset_match_it():
    if not any(P.read_provenance(p)["dataset"] == REAL for p in SHIPPED):
        pytest.skip("no precomputed GEARS predictions of the real Norman subset are shipped")
    table = gp.status(datasets=[REAL])
    assert (table["state"] == "current").all(), table[table["state"] != "current"].to_string()


@pytest.mark.slow
def test_shipped_files_of_simulated_screens_match_them():
    """Fails once the simulator changes a shipped screen: regenerate with `python scripts/make_gears_predictions.py`."""
    names = sorted({P.read_provenance(p)["dataset"] for p in SHIPPED} - {REAL})
    if not names:
        pytest.skip("no precomputed GEARS predictions of simulated screens are shipped")
    table = gp.status(datasets=names)
    stale = table[table["state"] != "current"]
    assert stale.empty, "regenerate with `python scripts/make_gears_predictions.py --dataset NAME`:\n" + stale.to_string()


@pytest.mark.slow
def test_notebook_leaves_gears_out_with_the_reason_when_the_gene_set_differs(tmp_path):
    """The chapter with another n_genes: the shipped file is refused, the reason is on the page, the rest runs."""
    from helpers.book.runner import run_notebook

    if not any(P.read_provenance(p)["dataset"] == REAL for p in SHIPPED):
        pytest.skip("no precomputed GEARS predictions of the real Norman subset are shipped")
    params = {"dataset": REAL, "seeds": [1], "n_genes": 100, "models": ["no change", "additive", "mean"]}
    run_notebook(doubles.NAME, params, out_dir=tmp_path)
    results = pd.read_csv(tmp_path / f"{doubles.NAME}-{REAL}.results.csv")
    assert set(results["model"]) == {"no change", "additive", "mean"}
    page = (tmp_path / f"{doubles.NAME}.ipynb").read_text()
    assert "the gene set differs (was n_genes changed?)" in page and "GEARS: left out (refused" in page


@pytest.mark.slow
def test_parallel_jobs_report_every_failed_split(tmp_path):
    """--jobs: each split in a process of its own; failures are collected, named by split, and raised together."""
    from helpers.errors import DataError

    selection = [(gp.Target(doubles.NAME, "no_such_screen", (1, 2)), [1, 2])]
    with pytest.raises(DataError, match=r"2 split\(s\) failed: .*no_such_screen, seed \d: DataError") as err:
        gp.make_all(selection, tmp_path, jobs=2)
    assert "seed 1" in str(err.value) and "seed 2" in str(err.value)
    assert not any(tmp_path.iterdir())
