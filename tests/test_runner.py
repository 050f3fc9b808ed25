import subprocess
import sys

import nbformat
import pytest

from helpers.book import runner
from helpers.book.runner import NotebookFailed, parse_value, run_notebook


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("[1, 2]", [1, 2]),
        ("1e-3", 0.001),
        ("true", True),
        ("norman_like", "norman_like"),
        ("{'a': 1}", {"a": 1}),
        ("'[1]'", "[1]"),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()

    def make(name, body):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("x = 1\noutput_dir = '.'")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")

    make("ok", "open('out.txt', 'w').write(str(x * 2))")
    make("broken", "y = 1\nraise ValueError(f'x was {x}')")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", folder)
    return folder


def test_run_writes_notebook_and_results_in_out_dir(notebooks, tmp_path):
    out = tmp_path / "out"
    result = run_notebook("ok", {"x": 21}, out)
    assert result.path == out / "ok.ipynb"
    assert (out / "out.txt").read_text() == "42"  # kernel ran in the output folder
    executed = nbformat.read(result.path, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_failure_names_the_cell(notebooks, tmp_path):
    with pytest.raises(NotebookFailed) as err:
        run_notebook("broken", {"x": 5}, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert "failed in cell" in message and "ValueError: x was 5" in message and "'y = 1'" in message


def test_unknown_parameter_and_notebook(notebooks, tmp_path):
    with pytest.raises(NotebookFailed, match=r"no parameter\(s\) \['z'\]; its parameters are: x, output_dir"):
        run_notebook("ok", {"z": 1}, tmp_path)
    with pytest.raises(NotebookFailed, match="no notebook named 'nope'.*Known notebooks: broken, ok"):
        run_notebook("nope", {}, tmp_path)
    with pytest.raises(NotebookFailed, match="no notebook named 'brokn'.*Did you mean 'broken'"):
        run_notebook("brokn", {}, tmp_path)
    assert run_notebook("ok.ipynb", {"x": 1}, tmp_path / "o").path == tmp_path / "o" / "ok.ipynb"  # the file name works too


def test_cli_exit_code_and_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "helpers", "run", "data", "-p", "no_such_parameter", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no_such_parameter" in proc.stderr


@pytest.mark.parametrize(
    "name, key, value, message",
    [
        ("double_perturbations", "n_genes", -5, "double_perturbations: parameter n_genes = -5 is not allowed (below 1)"),
        ("double_perturbations", "n_genes", 0, "parameter n_genes = 0 is not allowed (below 1)"),
        ("double_perturbations", "n_genes", "many", "parameter n_genes = 'many' is not allowed; expected an integer (>= 1)"),
        ("double_perturbations", "gi_fdr", 5, "parameter gi_fdr = 5 is not allowed (above 0.5)"),
        ("double_perturbations", "seeds", [1, "x"], "parameter seeds = [1, 'x'] is not allowed ('x' is not an integer)"),
        ("double_perturbations", "seeds", [1, 1], "([1] listed twice)"),
        ("double_perturbations", "models", ["mean", "magic"], "'magic' is not one of the choices"),
        ("double_perturbations", "predictions", "no_such.csv", "parameter predictions = 'no_such.csv' is not allowed (no such file:"),
        ("unseen_perturbations", "n_bootstrap", 10, "below 100"),
        ("progress_bars", "n_folds", 1, "parameter n_folds = 1 is not allowed (below 2)"),
        ("systema", "de_source", "test", "expected one of 'all', 'train'"),
        ("data", "n_heatmap_genes", 0, "data: parameter n_heatmap_genes = 0 is not allowed (below 1)"),
        ("methods_bounds", "preset", "nope_like", "parameter preset = 'nope_like' is not allowed; expected one of 'norman_like'"),
        ("simulation", "realism_presets", "norman_like,nope", "('nope' is not one of the choices)"),
        ("scoreboard", "results_dir", "no/such/folder", "parameter results_dir = 'no/such/folder' is not allowed (no such file:"),
    ],
)
def test_values_are_checked_against_the_schema_before_any_work(tmp_path, monkeypatch, name, key, value, message):
    import papermill as pm

    from helpers.errors import ParameterError

    def never(*args, **kwargs):
        raise AssertionError("papermill started")

    monkeypatch.setattr(pm, "execute_notebook", never)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError) as err:
        run_notebook(name, {key: value}, tmp_path / "out")
    assert message in str(err.value)
    assert f"python -m helpers run {name} --parameters" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing was done


def test_the_parameter_table_is_the_schema():
    from helpers.benchmarks import double_perturbations

    table = runner.parameter_table("double_perturbations")
    assert list(table.columns) == ["parameter", "default", "allowed", "meaning"]
    assert table["parameter"].tolist() == double_perturbations.PARAMETERS.names
    assert table.set_index("parameter").loc["gi_fdr", "allowed"] == "a number (>= 1e-06 and <= 0.5)"
    assert runner.parameter_table("performance").empty


def test_the_rerun_page_names_only_real_parameters():
    # every `-p NAME VALUE` in the rerun page is a parameter of some notebook
    import re

    text = "".join("".join(c["source"]) for c in nbformat.read(runner.NOTEBOOK_DIR / "rerun.ipynb", as_version=4).cells)
    named = set(re.findall(r"-p (\w+) ", text)) - {"KEY"}  # KEY: the placeholder of the synopsis
    every = {p for name in runner.toc_notebooks() for p in runner.notebook_schema(name).names}
    assert named and named <= every, named - every


@pytest.mark.parametrize(
    "out, message",
    [("file", "is a file, not a folder"), ("file/sub", "cannot be created"), ("/proc/no/such", "cannot be created")],
)
def test_an_output_folder_that_cannot_be_used_is_named(notebooks, tmp_path, out, message):
    from helpers.errors import DataError

    (tmp_path / "file").write_text("x")
    target = tmp_path / out if not out.startswith("/") else out
    with pytest.raises(DataError, match=message):
        run_notebook("ok", {"x": 1}, target)


def test_cli_gives_one_line_for_user_mistakes(tmp_path, monkeypatch, capsys):
    from helpers.book.cli import main

    cases = [
        (["run", "data", "-p", "n_heatmap_genes", "0"], "parameter n_heatmap_genes = 0 is not allowed"),
        (["run", "data", "-p", "n_heatmap_genes", "3", "-p", "n_heatmap_genes", "4"], "given twice"),
        (["run", "dat"], "no notebook named 'dat'"),
        (["run", "data", "--out", "/proc/x/y"], "cannot be created"),
        (["download", "no_such"], "'no_such' is not a downloadable dataset"),
    ]
    monkeypatch.chdir(tmp_path)
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and message in err, (argv, err)


def test_cli_parameters_lists_the_schema(capsys):
    from helpers.book.cli import main

    assert main(["run", "data", "--parameters"]) == 0
    assert "n_heatmap_genes = 30\n    allowed: an integer (>= 1 and <= 500)" in capsys.readouterr().out


def test_cli_output_into_a_closed_pipe_is_not_an_error():
    # `python -m helpers datasets | head -1`: the reader leaves early
    proc = subprocess.run(
        f"{sys.executable} -m helpers datasets | head -1", shell=True, capture_output=True, text=True, executable="/bin/bash"
    )
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1


def test_cli_datasets_lists_every_kind():
    proc = subprocess.run([sys.executable, "-m", "helpers", "datasets"], capture_output=True, text=True, check=True)
    for name in ("norman2019_subset", "norman_like", "adamson2016", "essential_pseudobulk"):
        assert name in proc.stdout


def test_gathering_notebooks_run_in_a_later_phase(notebooks):
    from helpers.book.runner import phases

    nb = nbformat.read(notebooks / "ok.ipynb", as_version=4)
    nb.metadata["suite"] = {"runs_after_others": True}
    nbformat.write(nb, notebooks / "gather.ipynb")
    assert phases(["gather", "ok", "broken"]) == [["ok", "broken"], ["gather"]]
    assert phases(["ok"]) == [["ok"]]
    nb.metadata["suite"] = {"runs_after_others": True, "runs_last": True}  # reports on the gathering ones too
    nbformat.write(nb, notebooks / "report.ipynb")
    assert phases(["report", "gather", "ok"]) == [["ok"], ["gather"], ["report"]]


def test_the_checked_values_reach_the_notebook(notebooks, tmp_path, monkeypatch):
    # a single value of a list parameter arrives as a list (the notebooks may use the variable as it is)
    from helpers.params import Param, Schema

    monkeypatch.setattr(runner, "notebook_schema", lambda name: Schema((Param("x", "ints", [1], "numbers"),)))
    run_notebook("ok", {"x": 21}, tmp_path / "out")
    assert (tmp_path / "out" / "out.txt").read_text() == "[21, 21]"


def test_a_page_name_sets_the_executed_notebook_file(notebooks, tmp_path):
    # how the book's chapter variants are written: the same notebook into a page of its own
    result = run_notebook("ok", {"x": 2}, tmp_path / "out", page="ok_variant")
    assert result.path == tmp_path / "out" / "ok_variant.ipynb" and result.path.exists()
    assert not (tmp_path / "out" / "ok.ipynb").exists()
    assert (tmp_path / "out" / "out.txt").read_text() == "4"
