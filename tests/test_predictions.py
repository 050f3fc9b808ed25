"""Reading predictions in every layout, the checks that refuse bad input, and the chapters' predictions path."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.canonical import log_normalise, make_canonical
from helpers.errors import DataError
from helpers.models.predictions import LAYOUT_CANONICAL, LAYOUT_CELL_EVAL, LAYOUT_TABLE, header_genes, read_predictions_file

GENES = [f"G{i}" for i in range(30)]
PERTS = ["G1", "G2", "G3", "G4", "G1+G2"]


def counts_screen(seed: int = 0, cells: int = 24, control_cells: int = 40, scale: float = 1.0) -> ad.AnnData:
    """Raw counts of a small screen: each perturbation multiplies a few genes' rates."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 2.0, len(GENES))
    labels, rows = [], []
    for p in ["control", *PERTS]:
        n = control_cells if p == "control" else cells
        rate = base.copy()
        if p != "control":
            hit = np.random.default_rng(abs(hash(p)) % 2**32).choice(len(GENES), 6, replace=False)
            rate[hit] *= np.array([3.0, 0.2, 2.5, 0.3, 4.0, 0.25])
        rows.append(rng.poisson(rate * scale, size=(n, len(GENES))))
        labels += [p] * n
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(np.vstack(rows).astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))


@pytest.fixture
def truth() -> ad.AnnData:
    return make_canonical(counts_screen(0), "condition", "perturbench")


@pytest.fixture
def predicted() -> ad.AnnData:
    """Predicted cells (log-normalised), canonical labels in obs['perturbation']."""
    return make_canonical(counts_screen(1, cells=18, control_cells=30), "condition", "perturbench")


def as_cell_eval(cells: ad.AnnData, column: str = "target_gene", control: str = "non-targeting") -> ad.AnnData:
    labels = cells.obs["perturbation"].astype(str).replace({"control": control})
    return ad.AnnData(X=cells.X.copy(), obs=pd.DataFrame({column: labels.to_numpy()}, index=cells.obs_names), var=cells.var.copy())


def as_canonical(cells: ad.AnnData) -> ad.AnnData:
    return ad.AnnData(X=cells.X.copy(), obs=cells.obs[["perturbation"]].copy(), var=cells.var.copy())


def group_means(cells: ad.AnnData) -> pd.DataFrame:
    """Per-perturbation means by an independent route (pandas groupby of the dense matrix)."""
    frame = pd.DataFrame(cells.X.toarray().astype(np.float64), columns=cells.var_names)
    return frame.groupby(cells.obs["perturbation"].astype(str).to_numpy()).mean()


def test_layouts_are_detected_and_explained(tmp_path, predicted):
    found = read_predictions_file(as_cell_eval(predicted))
    assert found.layout == LAYOUT_CELL_EVAL and found.perturbation_column == "target_gene" and found.control_label == "non-targeting"
    assert "'target_gene' (detected)" in found.why and "'non-targeting' (detected)" in found.why
    found = read_predictions_file(as_canonical(predicted))
    assert found.layout == LAYOUT_CANONICAL
    table = group_means(predicted)
    table.to_csv(tmp_path / "pred.csv")
    found = read_predictions_file(tmp_path / "pred.csv")
    assert found.layout == LAYOUT_TABLE and found.control is not None and "control" not in found.profiles.index
    # an .h5ad of perturbations (one row per label) is a table too
    pb = ad.AnnData(X=table.to_numpy(), obs=pd.DataFrame(index=table.index), var=pd.DataFrame(index=table.columns))
    assert read_predictions_file(pb).layout == LAYOUT_TABLE


def test_cells_aggregate_to_their_pseudobulk(predicted):
    found = read_predictions_file(as_cell_eval(predicted, column="gene", control="NT"))
    expected = group_means(predicted)
    pd.testing.assert_frame_equal(found.profiles, expected.drop(index="control").loc[found.profiles.index], check_names=False, atol=1e-9)
    np.testing.assert_allclose(found.control.to_numpy(), expected.loc["control"].to_numpy(), atol=1e-9)


def test_raw_counts_are_normalised_like_the_truth():
    raw = counts_screen(2)
    raw.obs["perturbation"] = raw.obs["condition"]
    found = read_predictions_file(raw)
    assert found.values == "counts" and "normalised like the truth" in found.values_note
    expected = pd.DataFrame(log_normalise(raw.X).toarray().astype(np.float64), columns=GENES)
    expected = expected.groupby(raw.obs["condition"].to_numpy()).mean()
    np.testing.assert_allclose(found.profiles.to_numpy(), expected.loc[found.profiles.index].to_numpy(), atol=1e-6)
    with pytest.raises(DataError, match="raw counts, not log-normalised"):
        read_predictions_file(raw, values="expression")


def _table(tmp_path, frame: pd.DataFrame, name: str = "pred.csv"):
    path = tmp_path / name
    frame.to_csv(path)
    return path


def test_duplicated_gene_columns_are_refused_although_pandas_renames_them(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("perturbation,G0,G1,G0\nG1,0.5,0.2,0.1\n")
    assert header_genes(path) == ["G0", "G1", "G0"]
    assert list(pd.read_csv(path, index_col=0).columns) == ["G0", "G1", "G0.1"]  # why the header is read by hand
    with pytest.raises(DataError, match="duplicated gene columns.*'G0'"):
        read_predictions_file(path)
    cells = ad.AnnData(X=np.ones((2, 2)), obs=pd.DataFrame({"perturbation": ["G1", "control"]}, index=["a", "b"]))
    cells.var_names = ["G0", "G0"]
    with pytest.raises(DataError, match="duplicated gene columns"):
        read_predictions_file(cells)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([[np.nan, 0.2], [0.1, 0.3]], "NaN or infinite"),
        ([[0.5, -0.01, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1, 0.5]], "1 negative predicted values"),
        ([[-0.5, -0.2], [-0.1, 0.3]], "look like changes from control given as expression.*values='change'"),
        ([[12.0, 0.2], [0.1, 0.3]], "above log1p"),
        ([[30.0, 2.0], [1.0, 0.0]], "mean raw counts, or normalised counts"),
    ],
)
def test_bad_values_in_a_table_are_refused(tmp_path, values, message):
    frame = pd.DataFrame(values, index=["G1", "G2"], columns=GENES[: len(values[0])])
    with pytest.raises(DataError, match=message):
        read_predictions_file(_table(tmp_path, frame))


def test_changes_are_read_when_asked_for(tmp_path):
    frame = pd.DataFrame([[-0.5, -0.2], [-0.1, 0.3]], index=["G1", "G2"], columns=["G0", "G1"])
    found = read_predictions_file(_table(tmp_path, frame), values="change")
    assert found.values == "change"
    np.testing.assert_array_equal(found.profiles.to_numpy(), frame.to_numpy())


def test_bad_cells_are_refused(predicted):
    cells = as_cell_eval(predicted)
    cells.obs.loc[cells.obs_names[:3], "target_gene"] = np.nan
    with pytest.raises(DataError, match="3 of .* cells have no perturbation label"):
        read_predictions_file(cells)
    cells = as_cell_eval(predicted)
    labels = cells.obs["target_gene"].to_numpy().copy()
    labels[:2] = "control"  # a second control label beside non-targeting
    cells.obs["target_gene"] = labels
    with pytest.raises(DataError, match="several labels look like controls"):
        read_predictions_file(cells)
    with pytest.raises(DataError, match="no cell has the control label 'ctrl'"):
        read_predictions_file(as_cell_eval(predicted), control="ctrl")
    with pytest.raises(DataError, match="values='change' is for tables"):
        read_predictions_file(as_cell_eval(predicted), values="change")
    negative = as_cell_eval(predicted)
    X = negative.X.copy()
    X.data = 0.5 - X.data  # mostly negative: changes passed as cells
    negative.X = X
    with pytest.raises(DataError, match="look like changes"):
        read_predictions_file(negative)
    with pytest.raises(DataError, match="no column 'guide'"):
        read_predictions_file(as_cell_eval(predicted), perturbation_column="guide")


def test_duplicated_rows_of_a_table_are_refused(tmp_path):
    frame = pd.DataFrame([[0.5, 0.2], [0.4, 0.3]], index=["G1+ctrl", "G1"], columns=["G0", "G1"])
    with pytest.raises(DataError, match="several rows for 'G1'"):
        read_predictions_file(_table(tmp_path, frame))


# ----------------------------------------------------------------------------- the chapters' path


def test_the_chapters_refuse_a_duplicated_gene_column(tmp_path, truth):
    from helpers.models.external import PredictionsFile

    path = tmp_path / "dup.csv"
    genes = list(truth.var_names)
    header = ",".join(["perturbation", *genes, genes[0]])
    path.write_text(header + "\n" + ",".join(["G1"] + ["0.5"] * (len(genes) + 1)) + "\n")
    with pytest.raises(DataError, match="duplicated gene columns"):
        PredictionsFile(path).fit(truth)


def test_the_chapters_accept_predicted_cells(tmp_path, truth, predicted):
    from helpers.models.external import PredictionsFile

    path = tmp_path / "cells.h5ad"
    as_cell_eval(predicted).write_h5ad(path)
    model = PredictionsFile(path, name="mine").fit(truth)
    expected = group_means(predicted).drop(index="control")
    np.testing.assert_allclose(model.predict(["G1", "G1+G2"]).to_numpy(), expected.loc[["G1", "G1+G2"]].to_numpy(), atol=1e-9)


def test_predictions_matching_nothing_stop_the_engine_with_the_reason(tmp_path, truth):
    from helpers.benchmarks.engine import TrainingData, run_models
    from helpers.models.baselines import MeanBaseline
    from helpers.models.external import PredictionsFile

    frame = group_means(truth).drop(index="control")
    frame.index = [f"sg{p}" for p in frame.index]  # guide names instead of the dataset's perturbation names
    path = _table(tmp_path, frame, "guides.csv")
    train = TrainingData(truth[truth.obs["perturbation"].isin(["control", "G1", "G2"]).to_numpy()].copy())
    with pytest.raises(
        DataError, match=r"cover none of the 2 perturbations.*not in guides.csv \(which predicts 5 other perturbations: 'sgG1'"
    ):
        run_models({"mean": MeanBaseline(), "mine": PredictionsFile(path, name="mine")}, train, ["G3", "G4"])


def test_the_unseen_chapter_reports_why_it_cannot_use_a_predictions_file(tmp_path, truth):
    """The chapter stops with the reason (not a generic 'cannot predict any') when the file matches none of its perturbations."""
    from helpers.benchmarks import unseen_perturbations as chapter
    from helpers.data import gears_simulation_split
    from helpers.data.pseudobulk import pseudobulk

    singles = truth[truth.obs["n_targets"].to_numpy() <= 1].copy()
    pb = pseudobulk(singles)
    screen = chapter.Screen(singles, pb, pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy()), [])
    screens = chapter.Screens()
    screens._loaded["toy"] = screen
    split = gears_simulation_split(["G1", "G2", "G3", "G4"], seed=1)
    frame = pd.DataFrame(0.5, index=["KLF1", "CEBPA"], columns=list(truth.var_names))
    path = _table(tmp_path, frame, "other_screen.csv")
    with pytest.raises(DataError, match=r"other_screen: the predictions cover none.*which predicts 2 other perturbations: 'KLF1', 'CEBPA'"):
        chapter.run_benchmark(
            screens, ["toy"], [1], {("toy", 1): split}, ["mean"], n_genes=10, progress=False, reference={}, go={}, predictions=str(path)
        )
