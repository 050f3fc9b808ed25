import subprocess
import sys

import nbformat
import pytest

from helpers import runner
from helpers.runner import NotebookFailed, parse_value, run_notebook


@pytest.mark.parametrize(
    "text, value",
    [("3", 3), ("[1, 2]", [1, 2]), ("1e-3", 0.001), ("true", True), ("norman_like", "norman_like"), ("{'a': 1}", {"a": 1}), ("'[1]'", "[1]")],
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
    with pytest.raises(NotebookFailed, match="no notebook named 'nope'.*known notebooks: broken, ok"):
        run_notebook("nope", {}, tmp_path)


def test_cli_exit_code_and_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "helpers", "run", "data", "-p", "no_such_parameter", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no_such_parameter" in proc.stderr


def test_cli_datasets_lists_every_kind():
    proc = subprocess.run([sys.executable, "-m", "helpers", "datasets"], capture_output=True, text=True, check=True)
    for name in ("norman2019_subset", "norman_like", "adamson2016", "essential_pseudobulk"):
        assert name in proc.stdout


def test_gathering_notebooks_run_in_a_later_phase(notebooks):
    from helpers.runner import phases

    nb = nbformat.read(notebooks / "ok.ipynb", as_version=4)
    nb.metadata["suite"] = {"runs_after_others": True}
    nbformat.write(nb, notebooks / "gather.ipynb")
    assert phases(["gather", "ok", "broken"]) == [["ok", "broken"], ["gather"]]
    assert phases(["ok"]) == [["ok"]]
