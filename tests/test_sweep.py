"""Sweeps on dask.distributed: a small grid on a LocalCluster, resuming, a failing run among others."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from helpers.book.sweep import expand_grid, gather, is_done, run_sweep
from helpers.errors import ParameterError


@pytest.fixture
def notebooks(tmp_path):
    """A notebook that writes a tidy results table of x * y (and fails for x == 3)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\ny = 1\noutput_dir = '.'")
    params.metadata["tags"] = ["parameters"]
    body = (
        "import pandas as pd\n"
        "if x == 3:\n"
        "    raise ValueError(f'x = {x} is not allowed')\n"
        "pd.DataFrame({'dataset': ['d'], 'seed': [1], 'model': ['m'], 'perturbation': ['A'], 'metric': ['product'], "
        "'value': [x * y]}).to_csv('toy.results.csv', index=False)"
    )
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "toy.ipynb")
    return folder


def test_grid_and_folder_names():
    runs = expand_grid({"x": [1, 2], "y": ["a", "b", "c"]})
    assert [r.params for r in runs][:4] == [{"x": 1, "y": "a"}, {"x": 1, "y": "b"}, {"x": 1, "y": "c"}, {"x": 2, "y": "a"}]
    assert len({r.folder for r in runs}) == 6 and runs[0].folder.startswith("x=1-y=a_")
    with pytest.raises(ParameterError, match="at least one value"):
        expand_grid({"x": []})


def test_gather_puts_the_parameters_in_columns(tmp_path):
    (tmp_path / "r1").mkdir()
    pd.DataFrame({"seed": [1], "metric": ["m"], "value": [0.5]}).to_csv(tmp_path / "r1" / "a.results.csv", index=False)
    records = [
        {"status": "ok", "folder": "r1", "params": {"seed": 7, "models": ["mean", "linear"]}, "results": ["a.results.csv"]},
        {"status": "failed", "folder": "r2", "params": {"seed": 8, "models": ["mean"]}, "results": []},
    ]
    table = gather(tmp_path, records, ["seed", "models"])
    assert table.to_dict("records") == [
        {"run": "r1", "models": '["mean", "linear"]', "param_seed": 7, "seed": 1, "metric": "m", "value": 0.5}
    ]


@pytest.mark.slow
def test_sweep_on_a_local_cluster_resumes_and_reports_a_failure(notebooks, tmp_path):
    out = tmp_path / "sweep"
    # an interrupted sweep: only part of the grid has run
    first = run_sweep("toy", {"x": [1, 2], "y": [10]}, out, workers=2, progress=False, notebook_dir=notebooks)
    assert not first.failures and first.skipped == 0
    done = {r["folder"]: (out / r["folder"] / "toy.ipynb").stat().st_mtime_ns for r in first.records}
    # a run killed half-way leaves a folder without its record: it runs again
    partial = expand_grid({"x": [4], "y": [10]})[0].folder
    (out / partial).mkdir()
    (out / partial / "toy.ipynb").write_text("{}")
    assert not is_done(out / partial)

    result = run_sweep("toy", {"x": [1, 2, 3, 4], "y": [10]}, out, workers=2, progress=False, notebook_dir=notebooks)
    assert result.skipped == 2  # the runs whose results exist were not run again
    assert {r["folder"]: (out / r["folder"] / "toy.ipynb").stat().st_mtime_ns for r in result.records if r["folder"] in done} == done
    (failure,) = result.failures
    assert failure["params"] == {"x": 3, "y": 10}
    assert "failed in cell" in failure["error"] and "ValueError: x = 3 is not allowed" in failure["error"]
    assert "x=3" in result.summary() and "3 of 4 runs ok" in result.summary()
    table = pd.read_csv(result.path)
    assert sorted(zip(table["x"], table["y"], table["value"])) == [(1, 10, 10), (2, 10, 20), (4, 10, 40)]
    assert set(table.columns) >= {"run", "x", "y", "dataset", "seed", "model", "perturbation", "metric", "value"}
    record = json.loads((out / failure["folder"] / "run.json").read_text())
    assert record["status"] == "failed" and record["params"] == {"x": 3, "y": 10}


@pytest.mark.slow
def test_a_scheduler_address_takes_the_same_path(notebooks, tmp_path):
    """--scheduler ADDRESS: the runs go to an existing cluster (here one started by the test)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = run_sweep(
            "toy", {"x": [1, 3], "y": [2]}, tmp_path / "s", scheduler=cluster.scheduler_address, progress=False, notebook_dir=notebooks
        )
    assert "1 of 2 runs ok" in result.summary() and "x=3" in result.summary()
    assert pd.read_csv(tmp_path / "s" / "toy.sweep.csv")["value"].tolist() == [2]


def test_cli_builds_the_grid_and_reports_failures(monkeypatch, tmp_path, capsys):
    from helpers.book import cli, sweep

    seen = {}

    def fake(name, grid, out, **kwargs):
        seen.update(name=name, grid=grid, out=out, **kwargs)
        failure = {"params": {"seeds": 2}, "error": "notebook 'x' failed in cell 3"}
        return sweep.SweepResult([{"status": "ok"}, {"status": "failed", **failure}], pd.DataFrame(), tmp_path / "t.csv", 0, [failure])

    monkeypatch.setattr(sweep, "run_sweep", fake)
    code = cli.main(
        [
            "sweep",
            "systema",
            "-p",
            "seeds",
            "1",
            "2",
            "-p",
            "datasets",
            "[norman_like]",
            "--out",
            str(tmp_path),
            "--workers",
            "3",
            "--quiet",
        ]
    )
    assert code == 1
    assert seen["grid"] == {"seeds": [1, 2], "datasets": [["norman_like"]]} and seen["workers"] == 3 and seen["scheduler"] is None
    assert "FAILED seeds=2: notebook 'x' failed in cell 3" in capsys.readouterr().out
    assert cli.main(["sweep", "systema", "--out", str(tmp_path)]) == 1
    assert "at least one parameter" in capsys.readouterr().err
    assert cli.main(["sweep", "systema", "-p", "seeds", "1", "-p", "seeds", "2", "--out", str(tmp_path)]) == 1
    assert "given twice" in capsys.readouterr().err
