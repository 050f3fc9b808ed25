"""Declared parameters: every bad value is refused with its name, its value and what is allowed."""

from __future__ import annotations

import importlib

import papermill as pm
import pytest

from helpers.book.runner import NOTEBOOK_DIR
from helpers.errors import ParameterError
from helpers.params import Param, Schema

SCHEMA = Schema(
    (
        Param("seeds", "ints", [1], "split seeds", minimum=0),
        Param("n_genes", "int", 1000, "genes", minimum=1),
        Param("fdr", "float", 0.05, "local fdr", minimum=1e-6, maximum=0.5),
        Param("models", "strs", ["a"], "models", choices=("a", "b")),
        Param("flag", "bool", True, "a switch"),
        Param("path", "path", None, "a file", none=True),
        Param("name", "str", "x", "a name"),
        Param("files", "str|mapping", "auto", "a text or {dataset: file}"),
        Param("strengths", "floats", [0.1], "strengths", minimum=0, maximum=1),
        Param("presets", "strs", "a,b", "names separated by commas", choices=("a", "b"), sep=","),
    )
)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("seeds", [], "parameter seeds = [] is not allowed (empty); expected a list of integers (>= 0)."),
        ("seeds", ["x"], "parameter seeds = ['x'] is not allowed ('x' is not an integer); expected a list of integers (>= 0)."),
        ("seeds", [1, "2x", 3], "parameter seeds = [1, '2x', 3] is not allowed ('2x' is not an integer)"),
        ("seeds", [-1], "parameter seeds = [-1] is not allowed (-1 is below 0)"),
        ("seeds", 1.5, "parameter seeds = 1.5 is not allowed (1.5 is not an integer)"),
        ("seeds", [1, 1], "([1] listed twice)"),
        ("n_genes", -5, "parameter n_genes = -5 is not allowed (below 1); expected an integer (>= 1)."),
        ("n_genes", 0, "below 1"),
        ("n_genes", "many", "parameter n_genes = 'many' is not allowed; expected an integer"),
        ("n_genes", 2.5, "expected an integer"),
        ("n_genes", True, "expected an integer"),
        ("fdr", 5, "parameter fdr = 5 is not allowed (above 0.5)"),
        ("fdr", float("nan"), "not a finite number"),
        ("models", ["c"], "expected a list of 'a', 'b'"),
        ("flag", "yes", "expected true or false"),
        ("n_genes", None, "expected an integer (>= 1)."),
        ("path", "no/such/file.csv", "parameter path = 'no/such/file.csv' is not allowed (no such file: "),
        ("path", "", "(empty); expected an existing path, or None."),
        ("name", "  ", "parameter name = '  ' is not allowed (empty); expected a text."),
        ("files", {"a": 3}, "parameter files = {'a': 3} is not allowed (3 is not a text); expected a text, or a mapping {name: text}"),
        ("files", ["a"], "expected a text, or a mapping {name: text}"),
        ("strengths", [0.1, "x"], "('x' is not a number); expected a list of numbers (>= 0 and <= 1)."),
        ("strengths", [0.1, 2], "(2 is above 1)"),
        (
            "presets",
            "a,c",
            "parameter presets = 'a,c' is not allowed ('c' is not one of the choices); expected a list of 'a', 'b' "
            "(or one text, separated by ',').",
        ),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_allowed(name, value, message):
    with pytest.raises(ParameterError) as err:
        SCHEMA.check({name: value})
    assert message in str(err.value)


def test_good_values_are_converted_where_unambiguous(tmp_path):
    out = SCHEMA.check({"seeds": 3, "n_genes": "200", "fdr": 0.1, "models": "b", "flag": False, "path": None})
    assert out == {"seeds": [3], "n_genes": 200, "fdr": 0.1, "models": ["b"], "flag": False, "path": None}
    (tmp_path / "p.csv").write_text("x")
    out = SCHEMA.check({"path": tmp_path / "p.csv", "files": {"a": "f.csv"}, "strengths": 0, "presets": " b , a "})
    assert out == {"path": str(tmp_path / "p.csv"), "files": {"a": "f.csv"}, "strengths": [0.0], "presets": ["b", "a"]}
    assert SCHEMA.check({"files": "auto"}) == {"files": "auto"}
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['n_gens'\]"):
        SCHEMA.check({"n_gens": 3})
    assert SCHEMA.check({"output_dir": "."}) == {}  # set by the runner
    table = SCHEMA.table()
    assert list(table.columns) == ["parameter", "default", "allowed", "meaning"] and len(table) == len(SCHEMA.params)


CHAPTERS = ["double_perturbations", "unseen_perturbations", "systema", "progress_bars"]
NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


def test_every_notebook_declares_its_schema():
    from helpers.book.pages import SCHEMAS

    assert set(CHAPTERS) <= set(NOTEBOOKS)
    for name in NOTEBOOKS:
        declared = name in SCHEMAS or isinstance(getattr(_chapter_module(name), "PARAMETERS", None), Schema)
        assert declared, f"{name} declares no parameters: add a Schema to helpers/book/pages.py or its chapter module"
        assert not (name in SCHEMAS and _chapter_module(name) is not None and hasattr(_chapter_module(name), "PARAMETERS")), name


def _chapter_module(name):
    try:
        return importlib.import_module(f"helpers.benchmarks.{name}")
    except ModuleNotFoundError:
        return None


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_each_schema_matches_its_notebook(notebook):
    # the notebook's parameters cell and its declared schema hold the same names and defaults
    from helpers.book.runner import notebook_schema

    schema = notebook_schema(notebook)
    cell = pm.inspect_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"))
    names = [n for n in cell if n != "output_dir"]
    assert names == schema.names
    for name in names:
        default = eval(cell[name]["default"])  # the literal written in the notebook
        assert schema[name].check(default) == schema[name].check(schema[name].default), name


def test_a_seed_template_path_needs_one_existing_file(tmp_path):
    template = str(tmp_path / "mine_{seed}.csv")
    with pytest.raises(ParameterError, match="no such file"):
        SCHEMA.check({"path": template})
    (tmp_path / "mine_3.csv").write_text("x")
    assert SCHEMA.check({"path": template}) == {"path": template}  # the chapter names a missing seed's file
    with pytest.raises(ParameterError, match="no such file"):
        SCHEMA.check({"path": str(tmp_path / "other_{seed}.csv")})
