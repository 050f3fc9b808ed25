"""The book's chapter variants: planned once, each into its own page and its own results file (no notebook runs here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from helpers.book import runner
from helpers.book.pages import VARIANTS, Variant
from helpers.errors import ParameterError
from helpers.results import results_name


def test_results_name_follows_the_dataset():
    assert results_name("double_perturbations", "norman_like", "norman_like") == "double_perturbations"
    assert results_name("double_perturbations", "norman2019_subset", "norman_like") == "double_perturbations-norman2019_subset"
    assert results_name("systema", "/data/my_screen.h5ad", "norman_like") == "systema-my_screen"
    assert results_name("scoreboard") == "scoreboard"


def test_every_variant_is_planned_with_checked_parameters_and_a_distinct_results_file():
    runs = runner.book_runs()
    pages = [r.page for r in runs]
    assert len(pages) == len(set(pages))
    by_page = {r.page: r for r in runs}
    stems = {}
    for v in VARIANTS:
        run = by_page[v.page]  # in the plan, under its own page
        assert run.notebook == v.notebook and run.parameters == v.parameters
        assert run.results_stem == f"{v.notebook}-{v.parameters['dataset']}"
        assert run.results_stem != by_page[v.notebook].results_stem == v.notebook  # beside the chapter's own file
        stems[run.results_stem] = v.page
        assert runner.source_notebook(v.page) == v.notebook
        assert runner.runs_after_others(v.page) is False
    assert len(stems) == len(VARIANTS)
    # the variants run in the first phase, before the scoreboard gathers every results file
    first, *rest = runner.phases(pages)
    assert {v.page for v in VARIANTS} <= set(first)
    assert "scoreboard" in rest[0] and "performance" in rest[-1]  # the performance page reports on every run


def test_the_variants_are_pages_of_the_table_of_contents_under_their_chapter():
    toc = yaml.safe_load((runner.ROOT / "_toc.yml").read_text())
    chapters = [c for part in toc["parts"] for c in part["chapters"]]
    for v in VARIANTS:
        parent = next(c for c in chapters if c["file"] == f"book/{v.notebook}")
        assert f"book/{v.page}" in [s["file"] for s in parent.get("sections", [])]
        assert not (runner.NOTEBOOK_DIR / f"{v.page}.ipynb").exists()
    assert set(runner.toc_pages()) == set(runner.toc_notebooks()) | {v.page for v in VARIANTS}


def test_the_command_line_of_a_variant_reaches_the_runner_unchanged():
    run = next(r for r in runner.book_runs() if r.page == "progress_bars_mcfaline2023")
    cmd = run_cmd = runner.run_command(run, runner.BOOK_DIR)
    assert cmd[cmd.index("--page") + 1] == "progress_bars_mcfaline2023"
    pairs = {run_cmd[i + 1]: runner.parse_value(run_cmd[i + 2]) for i, a in enumerate(run_cmd) if a == "-p"}
    assert pairs == run.parameters
    plain = next(r for r in runner.book_runs() if r.page == "progress_bars")
    assert "--page" not in runner.run_command(plain, runner.BOOK_DIR) and "-p" not in runner.run_command(plain, runner.BOOK_DIR)


def test_a_bad_variant_is_refused_before_any_work(monkeypatch):
    from helpers.book import pages

    bad = (*VARIANTS, Variant("double_perturbations_typo", "double_perturbations", {"n_genes": -1}))
    monkeypatch.setattr(pages, "VARIANTS", bad)
    with pytest.raises(ParameterError, match="not in _toc.yml"):
        runner.book_runs()
    monkeypatch.setattr(runner, "toc_pages", lambda: [*runner.toc_notebooks(), *(v.page for v in bad)])
    with pytest.raises(ParameterError, match="n_genes = -1 is not allowed"):
        runner.book_runs()
    clash = (*VARIANTS, Variant("double_perturbations_again", "double_perturbations", {"dataset": "norman2019_subset"}))
    monkeypatch.setattr(pages, "VARIANTS", clash)
    monkeypatch.setattr(runner, "toc_pages", lambda: [*runner.toc_notebooks(), *(v.page for v in clash)])
    with pytest.raises(ParameterError, match="would both write double_perturbations-norman2019_subset.results.csv"):
        runner.book_runs()


def test_page_names_are_checked(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "helpers", "run", "datasets", "--page", "a/b", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "--page 'a/b'" in proc.stderr
    assert json.loads(json.dumps(VARIANTS[0].parameters)) == VARIANTS[0].parameters  # the parameters travel as JSON
