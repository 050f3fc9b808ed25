"""Every source notebook: stripped, parameterised in a way papermill reads completely, in the book."""

import ast
import json

import papermill as pm
import pytest

from helpers.book.runner import NOTEBOOK_DIR, toc_notebooks

NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


def _cells(name):
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]


def test_there_are_notebooks_and_all_are_in_the_book():
    assert len(NOTEBOOKS) >= 10
    assert sorted(toc_notebooks()) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_are_stripped(name):
    for cell in _cells(name):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: executed outputs in the source notebook"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_is_seen_by_papermill(name):
    # papermill silently skips a parameter line it cannot parse (e.g. a comment containing "="),
    # after which `python -m helpers run -p KEY ...` would refuse KEY as unknown
    code = [c for c in _cells(name) if c["cell_type"] == "code"]
    params = code[0]
    assert "parameters" in params["metadata"].get("tags", []), f"{name}: the first code cell is not tagged 'parameters'"
    source = "".join(params["source"])
    assigned = [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]
    seen = set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb")))
    assert "output_dir" in assigned
    assert set(assigned) == seen, f"{name}: papermill does not see {sorted(set(assigned) - seen)}"
