"""The evaluate command: the same metrics from every layout, checks against the truth, calibration, the scoreboard."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import papermill as pm
import pytest

from helpers.benchmarks import evaluate as ev
from helpers.book.runner import NOTEBOOK_DIR
from helpers.data.canonical import make_canonical
from helpers.errors import DataError
from helpers.results import check_results, write_results

sys.path.insert(0, str(Path(__file__).parent))
from test_predictions import as_canonical, as_cell_eval, counts_screen, group_means  # noqa: E402


@pytest.fixture(scope="module")
def truth() -> ad.AnnData:
    return make_canonical(counts_screen(0), "condition", "perturbench")


@pytest.fixture(scope="module")
def predicted() -> ad.AnnData:
    return make_canonical(counts_screen(1, cells=18, control_cells=30), "condition", "perturbench")


def _score(predictions, truth, calibration=False, **kwargs) -> pd.DataFrame:
    inputs = ev.load_inputs(predictions, truth, model_name="mine", **kwargs)
    return ev.run_evaluation(inputs, calibration=calibration, progress=False).results


def _profile_rows(results: pd.DataFrame) -> pd.DataFrame:
    from helpers.metrics import METRICS

    rows = results[results["metric"].isin(list(METRICS))]
    return rows.set_index(["model", "perturbation", "ground_truth", "reference_of_prediction", "metric"])["value"].sort_index()


def test_the_three_layouts_give_the_same_metrics(tmp_path, truth, predicted):
    cell_eval = _score(as_cell_eval(predicted), truth)
    canonical = _score(as_canonical(predicted), truth)
    pd.testing.assert_frame_equal(cell_eval, canonical)  # every metric, the cell-level ones included
    table = group_means(predicted)  # the cells' pseudobulk, control row included
    table.to_csv(tmp_path / "pseudobulk.csv")
    from_table = _score(tmp_path / "pseudobulk.csv", truth)
    a, b = _profile_rows(cell_eval), _profile_rows(from_table)
    assert set(a.index.get_level_values("reference_of_prediction")) == {
        "none",
        "control (real cells)",
        "control (predicted cells)",
        "perturbed mean (real cells)",
    }
    pd.testing.assert_series_equal(a, b, atol=1e-9, rtol=1e-7)
    # the table has no cells: the cell-level metrics are not computed
    assert not from_table["metric"].str.startswith(("de_", "energy")).any()


def test_metrics_name_their_reference_and_the_results_are_tidy(truth, predicted):
    results = check_results(_score(as_cell_eval(predicted), truth, calibration=True))
    assert list(results.columns) == ev.RESULT_COLUMNS
    assert set(results["model"]) == {"mine", *ev.CONTROLS}
    assert set(results["ground_truth"]) == {ev.ALL_CELLS, ev.FIRST_HALF}
    de = results[results["metric"].str.startswith("de_")]
    assert de["metric"].str.endswith("_vs_control").all()
    # cell-eval's convention (predicted DE against the predicted controls) and the suite's, both reported
    mine = de[de["model"] == "mine"]
    assert set(mine["reference_of_prediction"]) == {ev.REAL_CONTROL, ev.PREDICTED_CONTROL}


def test_same_inputs_same_numbers(truth, predicted):
    a = _score(as_cell_eval(predicted), truth, calibration=True)
    b = _score(as_cell_eval(predicted), truth, calibration=True)
    pd.testing.assert_frame_equal(a, b)


def test_predicted_changes_against_the_predicted_control(truth, predicted):
    """With the predicted control as reference, PearsonΔ is computed on x̂_p − x̂_c, by hand here."""
    from helpers.metrics import pearson_delta_vs_control

    results = _score(as_cell_eval(predicted), truth)
    rows = results[(results["metric"] == "pearson_delta_vs_control") & (results["reference_of_prediction"] == ev.PREDICTED_CONTROL)]
    got = rows.set_index("perturbation")["value"]
    pred, obs = group_means(predicted), group_means(truth)
    perts = [p for p in obs.index if p != "control"]
    expected = pearson_delta_vs_control(pred.loc[perts] - pred.loc["control"] + obs.loc["control"], obs.loc[perts], obs.loc["control"])
    pd.testing.assert_series_equal(got.loc[perts], expected, check_names=False, atol=1e-10)


def test_predictions_and_truth_must_match(tmp_path, truth, predicted):
    cells = as_cell_eval(predicted)
    with pytest.raises(DataError, match="do not have the same genes: .*2 genes of the truth are not in the predictions"):
        ev.load_inputs(cells[:, 2:].copy(), truth)
    renamed = cells.copy()
    renamed.obs["target_gene"] = renamed.obs["target_gene"].replace({"G1": "KLF1"})
    with pytest.raises(DataError, match="perturbations the truth does not have: 1 .*'KLF1'.*--style"):
        ev.load_inputs(renamed, truth)
    fewer = cells[cells.obs["target_gene"].to_numpy() != "G4"].copy()
    with pytest.raises(DataError, match="the truth has perturbations the predictions lack.*'G4'.*--evaluate-on predicted"):
        ev.load_inputs(fewer, truth)
    inputs = ev.load_inputs(fewer, truth, evaluate_on="predicted")
    assert "G4" not in inputs.evaluated
    assert inputs.excluded.to_dict("records") == [{"perturbation": "G4", "where": "truth", "reason": "not in the predictions"}]
    result = ev.run_evaluation(inputs, perturbed_mean_from="others", calibration=False, progress=False)
    assert "G4" not in set(result.results["perturbation"])
    assert any("the 1 perturbations of the truth that are not evaluated" in n for n in result.notes)


def test_genes_in_another_order_are_fine(truth, predicted):
    cells = as_cell_eval(predicted)
    shuffled = cells[:, list(reversed(cells.var_names))].copy()
    pd.testing.assert_frame_equal(_score(shuffled, truth), _score(cells, truth))


def test_the_truth_in_the_cell_eval_layout(tmp_path, truth, predicted):
    path = tmp_path / "real.h5ad"
    as_cell_eval(truth).write_h5ad(path)
    a = _score(as_cell_eval(predicted), path).drop(columns="dataset")
    b = _score(as_cell_eval(predicted), truth).drop(columns="dataset")
    pd.testing.assert_frame_equal(a, b)


def test_the_technical_duplicate_is_the_ceiling(truth):
    """Predictions = the technical duplicate's own cells: the model sits at the ceiling (position 1)."""
    from helpers.models.controls import split_halves

    perts = [p for p in truth.obs["perturbation"].cat.categories if p != "control"]
    halves = split_halves(truth, 1, perts)
    inputs = ev.load_inputs(as_cell_eval(halves.second), truth, model_name="duplicate")
    results = ev.run_evaluation(inputs, seed=1, progress=False).results
    table = ev.floor_and_ceiling(results, "duplicate")
    for metric in ("l2", "pearson_delta_vs_control", "energy_distance_pca", "de_overlap_at_n_vs_control"):
        ref = ev.NO_REFERENCE if metric in ("l2", "energy_distance_pca") else ev.REAL_CONTROL
        assert table.loc[(metric, ref), "position"] == pytest.approx(1.0), metric


def test_position_between_floor_and_ceiling_by_hand():
    rows = []
    for model, values in {
        "m": [2.0, 4.0],
        "technical duplicate": [1.0, 1.0],
        "mean (perturbations)": [5.0, 5.0],
        "no change": [7.0, 7.0],
    }.items():
        rows += [
            {
                "model": model,
                "perturbation": p,
                "ground_truth": ev.FIRST_HALF,
                "reference_of_prediction": "none",
                "metric": "l2",
                "value": v,
            }
            for p, v in zip(["A", "B"], values)
        ]
    table = ev.floor_and_ceiling(pd.DataFrame(rows), "m")
    # floor = the better negative control (mean, 5), ceiling 1, model mean 3: (3 - 5) / (1 - 5) = 0.5
    assert table.loc[("l2", "none"), "floor"] == 5.0 and table.loc[("l2", "none"), "position"] == pytest.approx(0.5)


def test_chunked_helpers_equal_the_suites_functions(truth):
    from helpers.metrics.de import differential_expression
    from helpers.stats.de import miller_t_scores, top_de_genes

    perts = [p for p in truth.obs["perturbation"].cat.categories if p != "control"]
    pd.testing.assert_frame_equal(ev.miller_t_chunked(truth, perts, chunk=17), miller_t_scores(truth, perts), check_names=False, atol=1e-9)
    de = differential_expression(truth, perts)
    means = group_means(truth)
    assert ev.top_de_from(de, means.loc["control"].to_numpy(), means.loc[perts], k=5) == top_de_genes(truth, k=5)


def test_a_model_joins_the_scoreboard_under_its_name(tmp_path, truth, predicted):
    from helpers.book.scoreboard import load_run

    inputs = ev.load_inputs(as_cell_eval(predicted), truth, model_name="my model")
    mine = ev.run_evaluation(inputs, calibration=True, progress=False).results
    write_results(mine, tmp_path, ev.results_name("my model"))
    assert (tmp_path / "evaluate-my_model.results.csv").exists()
    example = ev.load_inputs("example", truth)
    write_results(ev.run_evaluation(example, calibration=False, progress=False).results, tmp_path, ev.results_name(example.model, True))
    _, summary = load_run(tmp_path)
    board = summary[summary["notebook"] == "evaluate"]
    assert set(board["model"]) == {"my model"}  # not the example, not the calibration controls
    assert set(board["metric"]) == set(ev.SCOREBOARD_METRICS)
    expected = mine[(mine["model"] == "my model") & (mine["ground_truth"] == ev.ALL_CELLS) & (mine["metric"] == "l2")]["value"].mean()
    assert board.set_index("metric").loc["l2", "mean"] == pytest.approx(expected)
    assert board["dataset"].unique().tolist() == ["in memory"]


def test_the_schema_matches_the_notebook():
    cell = pm.inspect_notebook(str(NOTEBOOK_DIR / "evaluate.ipynb"))
    names = [n for n in cell if n != "output_dir"]
    assert names == ev.PARAMETERS.names
    for name in names:
        assert ev.PARAMETERS[name].check(eval(cell[name]["default"])) == ev.PARAMETERS[name].check(ev.PARAMETERS[name].default), name


def test_the_command_refuses_bad_input_with_the_reason(tmp_path, capsys):
    from helpers.book.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("perturbation,G0,G0\nG1,0.1,0.2\n")
    assert main(["evaluate", "--predictions", str(bad), "--truth", "norman2019_subset", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "duplicated gene columns" in err and "'G0'" in err
    assert not list((tmp_path / "out").glob("*.ipynb"))


@pytest.mark.slow
def test_the_command_writes_the_report_and_the_results(tmp_path):
    """The command on the book's own example; that two runs give the same results and outputs is
    checked on the book's evaluate page, which the main job runs twice (tests/test_book.py)."""
    from helpers.book.cli import main

    paths = []
    for run in ("a",):
        out = tmp_path / run
        assert main(["evaluate", "--predictions", "example", "--truth", "norman2019_subset", "--out", str(out), "--quiet"]) == 0
        assert (out / "evaluate.ipynb").exists()
        paths.append(out / "evaluate.results.csv")
    results = check_results(pd.read_csv(paths[0]))
    assert not results["scoreboard"].any()  # the example never joins the scoreboard
    assert {"energy_distance_pca", "de_overlap_at_n_vs_control", "weighted_r2_delta_vs_perturbed_mean"} <= set(results["metric"])


@pytest.mark.slow
def test_the_command_on_a_users_file_names_the_report_after_the_model(tmp_path):
    from helpers.book.cli import main
    from helpers.data import load_dataset

    truth = load_dataset("norman2019_subset")
    path = tmp_path / "cells.h5ad"
    ev.example_predictions(truth, seed=2).write_h5ad(path)
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--predictions", str(path), "--truth", "norman2019_subset", "--name", "my model", "--out", str(out), "--quiet"])
        == 0
    )
    assert (out / "evaluate-my_model.ipynb").exists()
    results = pd.read_csv(out / "evaluate-my_model.results.csv")
    assert results["scoreboard"].any() and set(results.loc[results["scoreboard"], "model"]) == {"my model"}
