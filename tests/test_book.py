"""The main job, checked end to end: every notebook runs, reruns identically, and the book reads well.

One session-scoped run executes every notebook of the table of contents on its default
parameters (as ``make book`` does) into a temporary copy of the book and builds the HTML.
Then:

* every benchmark notebook has written a valid tidy results table;
* nbval re-executes the executed notebooks and compares every output (timings and paths
  sanitised, see ``nbval_sanitize.cfg``) — the second run of the main job — and the results
  tables of the two runs are byte-identical. The chapters in :data:`RERUN_ELSEWHERE` are
  not re-executed here: each has a test that runs it twice on small parameters and compares
  the results tables and every output the same way (``conftest.assert_same_outputs``), which
  proves the same property for a fraction of a second default run (the budget of
  ``make test-slow``, which CI runs after ``make test``); their first-run results are copied into the rerun
  folder so that the notebooks that gather results (scoreboard, performance) see the same inputs;
* headless Chromium opens every page of the table of contents and checks it loads, shows
  its figures, and contains no traceback or error output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.book.runner import NOTEBOOK_DIR, ROOT, TIMINGS_FILE, book_runs, build_html, execute_all, phases, toc_files
from helpers.results import check_results

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


#: Chapters whose "same parameters, same outputs" check runs on small parameters in their own
#: test (twice, results tables and outputs compared) instead of a second default run here.
RERUN_ELSEWHERE = {
    "double_perturbations": "test_doubles.py::test_notebook_runs_on_the_real_subset_with_predictions_file",
    "unseen_perturbations": "test_unseen.py::test_notebook_runs_with_own_predictions_and_gives_identical_results_twice",
    "systema": "test_systematic.py::test_systema_notebook_runs_and_gives_identical_results_twice",
    "progress_bars": "test_bounds.py::test_notebook_on_the_published_file_with_own_embeddings_twice",
    "perturbench": "test_perturbench_chapter.py::test_notebook_runs_with_own_predictions_and_gives_identical_results_twice",
    "ablation": "test_ablation.py::test_ablation_notebook_twice_on_small_parameters",
}


def _rerun_here() -> list[str]:
    """Pages executed a second time here: all but those whose notebook is re-run elsewhere (variants included)."""
    return [r.page for r in book_runs() if r.notebook not in RERUN_ELSEWHERE]


def test_chapters_checked_elsewhere_name_a_real_test():
    """Every chapter left out of the second run names a test that exists and runs a notebook twice."""
    import re

    for chapter, node in RERUN_ELSEWHERE.items():
        assert chapter in [r.notebook for r in book_runs()], f"{chapter} is not in the book"
        file, name = node.split("::")
        source = (Path(__file__).parent / file).read_text()
        match = re.search(rf"def {name}\(.*?(?=\n(?:@|def )|\Z)", source, flags=re.S)
        assert match, f"{node} does not exist"
        assert f'"{chapter}"' in match.group(0) and "assert_same_outputs" in match.group(0), f"{node} does not run {chapter} twice"


def _benchmark_notebooks(rerun_here: bool = False) -> dict[str, str]:
    """Every page that writes a results table (the chapter variants included) and the stem of its file."""
    runs = [r for r in book_runs() if "write_results(" in (NOTEBOOK_DIR / f"{r.notebook}.ipynb").read_text()]
    return {r.page: r.results_stem for r in runs if not (rerun_here and r.notebook in RERUN_ELSEWHERE)}


@pytest.fixture(scope="session")
def book_run(tmp_path_factory):
    """Execute every notebook into a copy of the book and build it; returns the copy's root."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb", "*.results.csv", "_timings.json"))
    results = execute_all(root / "book", jobs=2)
    failures = [f"{name}: {error}" for name, _, error in results if error]
    index = build_html(root) if not failures else None
    return {"root": root, "failures": failures, "index": index}


def test_every_notebook_executes_and_the_book_builds(book_run):
    assert not book_run["failures"], "\n".join(book_run["failures"])
    assert book_run["index"].exists()


def test_benchmark_notebooks_write_tidy_results(book_run):
    names = _benchmark_notebooks()
    assert names, "no benchmark notebook found in the table of contents"
    assert len(set(names.values())) == len(names), "two pages write the same results file"
    for name, stem in names.items():
        path = book_run["root"] / "book" / f"{stem}.results.csv"
        assert path.exists(), f"{name} wrote no {path.name}"
        import pandas as pd

        check_results(pd.read_csv(path))


@pytest.fixture(scope="session")
def second_run(book_run, tmp_path_factory):
    """nbval: re-execute the executed notebooks in a fresh folder and compare all outputs.

    As in the main job, the notebooks that gather the others' results (the scoreboard, the
    performance page) run after the others, and the notebook timings of the first run are
    there for the performance page to show.
    """
    folder = tmp_path_factory.mktemp("rerun")
    names = _rerun_here()
    for name in names:
        shutil.copy(book_run["root"] / "book" / f"{name}.ipynb", folder / f"{name}.ipynb")
    for run in book_runs():  # the inputs of the gathering notebooks, as in the first run
        path = book_run["root"] / "book" / f"{run.results_stem}.results.csv"
        if run.notebook in RERUN_ELSEWHERE and path.exists():
            shutil.copy(path, folder / path.name)
    shutil.copy(book_run["root"] / "book" / TIMINGS_FILE, folder / TIMINGS_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XDIST_"))}  # not this pytest's worker
    env.update(TQDM_DISABLE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    outputs = []
    returncode = 0
    for phase in phases(names):
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "--nbval-cell-timeout=900",
            "--nbval-sanitize-with",
            str(Path(__file__).parent / "nbval_sanitize.cfg"),
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-n",
            str(min(2, len(phase))),
            "--dist",
            "loadfile",
            "-q",
            "--rootdir",
            str(folder),  # one node id per notebook, so each notebook's cells stay on one worker
            *[str(folder / f"{n}.ipynb") for n in phase],
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder)
        outputs.append(proc.stdout[-6000:] + proc.stderr[-2000:])
        returncode = returncode or proc.returncode
    return {"folder": folder, "returncode": returncode, "output": "\n".join(outputs)}


def test_executed_notebooks_validate_with_nbval(second_run):
    assert second_run["returncode"] == 0, second_run["output"]


def test_same_parameters_give_identical_results_tables(book_run, second_run):
    for stem in _benchmark_notebooks(rerun_here=True).values():
        first = (book_run["root"] / "book" / f"{stem}.results.csv").read_bytes()
        second = (second_run["folder"] / f"{stem}.results.csv").read_bytes()
        assert first == second, f"{stem}.results.csv differs between two runs with the same parameters"


def test_every_page_loads_with_its_figures_and_no_errors(book_run):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it (make test-deps)")
    from playwright.sync_api import sync_playwright

    html = book_run["root"] / "_build" / "html"
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page()
        for doc in toc_files(book_run["root"]):
            path = html / f"{doc}.html"
            if not path.exists():
                problems.append(f"{doc}: page missing")
                continue
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            text = page.inner_text("main")
            if len(text.strip()) < 200:
                problems.append(f"{doc}: page has almost no text")
            if "Traceback (most recent call last)" in text:
                problems.append(f"{doc}: shows a Python traceback")
            errors = page.eval_on_selector_all(
                ".output.error, .output.traceback, .output.stderr", "els => els.map(e => e.innerText.slice(0, 200))"
            )
            if errors:
                problems.append(f"{doc}: error or stderr output: {errors[:2]}")
            images = page.evaluate(
                "Array.from(document.querySelectorAll('main img')).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
            )
            broken = [src for src, ok in images if not ok]
            if broken:
                problems.append(f"{doc}: figures do not load: {broken[:3]}")
            notebook = book_run["root"] / f"{doc}.ipynb"
            if notebook.exists():
                expected = notebook.read_text().count('"image/png"')
                if len(images) < expected:
                    problems.append(f"{doc}: {expected} figures in the notebook, {len(images)} on the page")
        browser.close()
    assert not problems, "\n".join(problems)


def test_every_page_fits_its_column_and_hides_its_plumbing(book_run):
    """Wide tables and outputs scroll in their own box, figures are not shrunk below half, plumbing code is folded."""
    from book_layout_check import check_pages

    problems = check_pages(book_run["root"] / "_build" / "html", toc_files(book_run["root"]))
    assert not problems, "\n".join(problems)
