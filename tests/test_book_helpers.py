"""The teaching chapters' helpers (helpers.book) and the function names the Methods chapters cite."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

import helpers.benchmarks.progress_bars
import helpers.data
import helpers.data.simulate
from helpers.book.runner import NOTEBOOK_DIR
from helpers.book.teaching import (
    Implementation,
    implemented_in,
    resolve,
    same_result,
    summary_line,
)
from helpers.models import MeanBaseline

METHODS_NOTEBOOKS = ["methods_data", "methods_models_metrics", "methods_bounds"]


# ---------------------------------------------------------------------------------------
# resolve / implemented_in
# ---------------------------------------------------------------------------------------


def test_resolve_prefers_the_exported_function_over_a_module_of_the_same_name():
    # helpers/data/pseudobulk.py is a module, but helpers.data.pseudobulk is the function it exports
    assert resolve("helpers.data.pseudobulk") is helpers.data.pseudobulk
    assert callable(resolve("helpers.data.pseudobulk"))
    # ... and the module's own functions are still reachable through the module path
    module = sys.modules["helpers.data.pseudobulk"]
    assert resolve("helpers.data.pseudobulk.control_profile") is module.control_profile
    assert resolve("helpers.data.pseudobulk.pseudobulk") is helpers.data.pseudobulk


def test_resolve_imports_submodules_and_classes_and_methods():
    assert resolve("helpers.metrics.calibration.fraction_gap_closed") is helpers.metrics.calibration.fraction_gap_closed
    assert resolve("helpers.models.MeanBaseline") is MeanBaseline
    assert resolve("helpers.data.Split.subset") is helpers.data.Split.subset
    assert resolve("helpers.data.simulate.true_changes") is helpers.data.simulate.true_changes


@pytest.mark.parametrize("path", ["helpers.data.no_such_function", "helpers.no_such_module.f", "helpers.models.MeanBaseline.nope"])
def test_resolve_names_what_does_not_exist(path):
    with pytest.raises(ValueError, match="does not exist") as err:
        resolve(path)
    assert repr(path) in str(err.value)


@pytest.mark.parametrize("path", ["numpy.mean", "helpers..data", "helpers.data.", "", "helpers data"])
def test_resolve_refuses_paths_outside_the_suite_or_malformed(path):
    with pytest.raises(ValueError, match="dotted path inside the suite"):
        resolve(path)


def test_implemented_in_a_function_signature_and_first_docstring_line():
    info = implemented_in("helpers.metrics.l2")
    assert isinstance(info, Implementation)
    assert info.path == "helpers.metrics.l2"
    assert info.signature == "l2(pred, truth)"
    assert info.summary == "Euclidean prediction error, the main metric of Ahlmann-Eltze et al."
    assert info.markdown() == (
        "**Implemented in** [`helpers.metrics.l2`](#helpers.metrics.l2) — `l2(pred, truth)`: Euclidean prediction error, the main metric of Ahlmann-Eltze et al."
    )
    assert info._repr_markdown_() == info.markdown()
    assert str(info).startswith("Implemented in helpers.metrics.l2 — l2(pred, truth): ")


def test_implemented_in_a_class_shows_the_constructor_without_self_or_annotations():
    info = implemented_in("helpers.models.MeanBaseline")
    assert info.signature == "MeanBaseline(weighting='perturbation', include_control=False)"
    assert info.summary == "Predict the same average perturbed profile for every perturbation."
    # a model without its own __init__ takes no hyperparameters
    assert implemented_in("helpers.models.Additive").signature == "Additive()"
    # keyword-only parameters keep their marker
    assert "*, higher_is_better=None" in implemented_in("helpers.metrics.dynamic_range_fraction").signature


def test_implemented_in_a_method_drops_self():
    assert implemented_in("helpers.data.Split.counts").signature == "counts()"


def test_implemented_in_an_instance_has_no_borrowed_docstring():
    info = implemented_in("helpers.data.simulate.PRESETS")  # a dict: its type's docstring says nothing about it
    assert info.signature == "PRESETS"
    assert info.summary == ""
    assert info.markdown() == "**Implemented in** `helpers.data.simulate.PRESETS` — `PRESETS`"


def test_summary_line_joins_the_first_paragraph_and_removes_sphinx_roles():
    def documented():
        """Average of :func:`helpers.data.profiles` rows,
        weighted by :py:class:`~helpers.data.Split` parts.

        Second paragraph, not shown.
        """

    assert summary_line(documented) == ("Average of ``helpers.data.profiles`` rows, weighted by ``helpers.data.Split`` parts.")

    def undocumented():
        pass

    assert summary_line(undocumented) == ""


# ---------------------------------------------------------------------------------------
# same_result
# ---------------------------------------------------------------------------------------


def test_same_result_prints_true_and_aligns_pandas_objects_by_label(capsys):
    a = pd.DataFrame({"g1": [1.0, 2.0], "g2": [3.0, 4.0]}, index=["A", "B"])
    b = a.loc[["B", "A"], ["g2", "g1"]]  # same numbers, other order
    same_result(a, b)
    same_result(a["g1"], b["g1"], label="a column")
    assert capsys.readouterr().out == "same result: True\na column: True\n"


def test_same_result_raises_when_the_numbers_differ(capsys):
    with pytest.raises(AssertionError, match="my check: the computation by hand and the suite's function disagree"):
        same_result(np.array([1.0, 2.0]), np.array([1.0, 2.1]), label="my check")
    assert capsys.readouterr().out == "my check: False\n"


def test_same_result_uses_the_tolerances_given():
    same_result(100.0, 104.0, rtol=0.05)
    with pytest.raises(AssertionError):
        same_result(100.0, 106.0, rtol=0.05)
    same_result([0.771, 1.257], [0.772, 1.252], rtol=0, atol=0.01)


def test_same_result_compares_labels_shapes_and_nan():
    same_result(np.array([1.0, np.nan]), np.array([1.0, np.nan]))  # undefined values agree with undefined values
    with pytest.raises(AssertionError):
        same_result(np.array([1.0, np.nan]), np.array([1.0, 0.0]))
    with pytest.raises(AssertionError):
        same_result(pd.Series([1.0], index=["A"]), pd.Series([1.0], index=["B"]))
    with pytest.raises(AssertionError):
        same_result(np.ones(3), np.ones(4))
    with pytest.raises(AssertionError):
        same_result(pd.Series([1.0], index=["A"]), pd.DataFrame({"x": [1.0]}, index=["A"]))


def test_same_result_compares_names_sets_and_dicts_exactly():
    same_result(["A", "B"], ("A", "B"))
    same_result({"B", "A"}, {"A", "B"})
    same_result({"x": ["A"], "y": [1.0, 2.0]}, {"y": np.array([1.0, 2.0]), "x": ["A"]})
    with pytest.raises(AssertionError):
        same_result(["A", "B"], ["B", "A"])  # order of a list matters
    with pytest.raises(AssertionError):
        same_result({"x": 1.0}, {"x": 1.0, "y": 2.0})


# ---------------------------------------------------------------------------------------
# the Methods chapters
# ---------------------------------------------------------------------------------------


def _cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


_CITED = re.compile(r"`(helpers(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_SHOWN = re.compile(r"implemented_in\(\"([^\"]+)\"\)")


@pytest.mark.parametrize("name", METHODS_NOTEBOOKS)
def test_every_function_a_methods_chapter_names_exists(name):
    cited = set()
    for cell in _cells(name):
        text = _source(cell)
        cited.update(_CITED.findall(text) if cell["cell_type"] == "markdown" else _SHOWN.findall(text))
    assert len(cited) >= 5, f"{name} names only {sorted(cited)}"
    missing = []
    for path in sorted(cited):
        try:
            resolve(path)
        except ValueError as err:
            missing.append(str(err))
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", METHODS_NOTEBOOKS)
def test_every_section_of_a_methods_chapter_names_its_function_and_what_to_remember(name):
    sections: dict[str, str] = {}
    current = None
    for cell in _cells(name):
        for line in _source(cell).splitlines():
            if cell["cell_type"] == "markdown" and line.startswith("## "):
                current = line[3:].strip()
                sections[current] = ""
            elif current is not None:
                sections[current] += line + "\n"
    assert len(sections) >= 4
    for title, body in sections.items():
        assert _CITED.search(body) or _SHOWN.search(body), f"{name}, section {title!r} names no helpers function"
        if title.lower() != "summary" and not title.lower().startswith("summary"):
            assert ":::{admonition} To remember\n:class: tip\n" in body, f"{name}, section {title!r} has no 'To remember' box"
            assert "**To remember:**" not in body, f"{name}, section {title!r}: a plain 'To remember' line instead of a box"


@pytest.mark.parametrize("name", METHODS_NOTEBOOKS)
def test_methods_chapters_are_parameterised_and_stripped(name):
    cells = _cells(name)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert 'output_dir = "."' in _source(code[0])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs must be stripped"
    assert "write_results(" not in "".join(_source(c) for c in code), "a Methods chapter writes no results table"
