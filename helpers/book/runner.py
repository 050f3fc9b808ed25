"""Execute the parameterised notebooks with papermill and build the book.

``python -m helpers run NAME -p KEY VALUE --out DIR`` executes ``notebooks/NAME.ipynb``
into ``DIR/NAME.ipynb``, with the kernel's working folder set to ``DIR`` so that the
notebook's result files land beside it. The notebooks come from the checkout's
``notebooks/`` or, in an installed package, from its copy of them
(:func:`helpers.resources.notebook_dir`); the default ``DIR`` is ``book/`` in a checkout and
the current folder otherwise (:func:`default_out_dir`). ``python -m helpers book`` executes
every notebook of the table of contents and builds the HTML; it needs a checkout. Besides
the notebooks on their defaults it executes the chapter *variants* of
:data:`helpers.book.pages.VARIANTS` (a notebook run again with other parameters into a page of
its own, ``--page NAME``); :func:`book_runs` is that plan.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import CheckoutRequired, DataError, ParameterError
from ..resources import PROJECT_ROOT, checkout_root, notebook_dir
from .layout import place_in_book

if TYPE_CHECKING:
    import pandas as pd

    from ..params import Schema
    from .pages import Variant

ROOT = PROJECT_ROOT
NOTEBOOK_DIR = notebook_dir()
#: The book's pages and executed notebooks; exists only in a checkout.
BOOK_DIR = ROOT / "book"
TIMINGS_FILE = "_timings.json"


class NotebookFailed(RuntimeError):
    """A notebook raised an error; the message is one line naming the cell."""


def require_checkout(command: str = "python -m helpers book") -> Path:
    """The repository root; raises :class:`~helpers.errors.CheckoutRequired` (one line) in an installed package."""
    root = checkout_root()
    if root is None:
        raise CheckoutRequired(
            f"`{command}` needs a checkout of the repository: the book's table of contents (_toc.yml) and "
            f"pages (book/) are not installed with the package (found the package in {ROOT}); clone the "
            "repository and run it there, or execute single notebooks with `python -m helpers run NAME --out DIR`"
        )
    return root


def default_out_dir() -> Path:
    """Where ``run`` writes when no folder is given: ``book/`` in a checkout, else the current folder."""
    return BOOK_DIR if checkout_root() is not None else Path.cwd()


@dataclass
class RunResult:
    name: str
    seconds: float
    path: Path


def parse_value(text: str) -> Any:
    """Parse a command-line parameter value as YAML, then as a Python literal.

    ``"3"`` -> 3, ``"[1, 2]"`` -> [1, 2], ``"1e-3"`` -> 0.001, ``"true"`` -> True,
    ``"norman_like"`` -> ``"norman_like"``.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return value


def notebook_path(name: str) -> Path:
    known = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    stem = Path(name).stem if name.endswith(".ipynb") else name
    if stem not in known:
        import difflib

        close = difflib.get_close_matches(stem, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise NotebookFailed(f"no notebook named {name!r} in {NOTEBOOK_DIR}.{hint} Known notebooks: {', '.join(known)}")
    return NOTEBOOK_DIR / f"{stem}.ipynb"


def notebook_schema(name: str) -> Schema:
    """The declared parameters of a notebook: a chapter's ``PARAMETERS`` or a page's in :mod:`helpers.book.pages`.

    A notebook that declares none (e.g. one added to ``notebooks/`` by a user) gets a schema read
    from its ``parameters`` cell that accepts any value (a test makes sure the book's notebooks all
    declare theirs).
    """
    import importlib

    from ..params import Param, Schema
    from .pages import SCHEMAS

    stem = notebook_path(name).stem
    if stem in SCHEMAS:
        return SCHEMAS[stem]
    if importlib.util.find_spec(f"helpers.benchmarks.{stem}") is not None:
        module = importlib.import_module(f"helpers.benchmarks.{stem}")
        if isinstance(getattr(module, "PARAMETERS", None), Schema):
            return module.PARAMETERS
    cell = _inspect(stem)
    return Schema(tuple(Param(k, "any", v["default"], v.get("help", "")) for k, v in cell.items() if k != "output_dir"))


def notebook_parameters(name: str) -> dict:
    """Default parameters of a notebook (from its ``parameters`` cell)."""
    return {k: v["default"] for k, v in _inspect(name).items()}


def _inspect(name: str) -> dict:
    import papermill as pm

    return pm.inspect_notebook(str(notebook_path(name)))


def parameter_table(name: str) -> pd.DataFrame:
    """A notebook's parameters as a table, from its declared schema (:func:`notebook_schema`): name, default, allowed values, meaning."""
    return notebook_schema(name).table()


def _absolutise(value: object) -> object:
    """Relative file paths that exist from the caller's folder become absolute (the kernel runs elsewhere)."""
    if isinstance(value, str) and ("/" in value or Path(value).suffix):
        candidate = Path(value).expanduser()
        if not candidate.is_absolute() and candidate.exists():
            return str(candidate.resolve())
    return value


#: Lines the kernel process prints on every start that say nothing about the notebook.
_KERNEL_NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")


@contextlib.contextmanager
def _quiet_kernel_stderr():
    """Hide the kernel's start-up warnings, pass everything else on.

    The kernel process inherits file descriptor 2, so fd 2 goes to a temporary file while
    the notebook runs; Python's own ``sys.stderr`` (papermill's progress bar) keeps writing
    to the terminal through a duplicate of the original descriptor.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    original = sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = original
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if not any(noise in line for noise in _KERNEL_NOISE):
                    print(line, file=sys.stderr)


def check_parameters(name: str, parameters: dict) -> dict:
    """Check values against the notebook's declared schema before any work; :class:`ParameterError` names the notebook too.

    Returns the checked values (converted where unambiguous: ``"3"`` to 3, a single seed to a
    list); the runner passes these to the notebook, except for lists given as one separated text
    (``sep``), which the notebook splits itself.
    """
    schema = notebook_schema(name)
    try:
        return schema.check(parameters)
    except ParameterError as err:
        raise ParameterError(f"{name}: {err} The parameters: `python -m helpers run {name} --parameters`.") from None


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create the output folder, or say in one line why it cannot be used."""
    out_dir = out_dir.expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file, not a folder; name a folder (it is created if missing).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"--out {out_dir} cannot be created ({err.strerror or type(err).__name__}); name a folder you can write to."
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise DataError(f"--out {out_dir} is not writable; name a folder you can write to.")
    return out_dir


def run_notebook(
    name: str, parameters: dict | None = None, out_dir: str | Path | None = None, progress: bool = False, page: str | None = None
) -> RunResult:
    """Execute ``notebooks/NAME.ipynb`` into ``out_dir/PAGE.ipynb`` (default ``NAME``, folder :func:`default_out_dir`) with papermill.

    Unknown parameter names are refused (papermill would only warn), and the values are
    checked against the notebook's declared schema (:func:`check_parameters`) before papermill
    starts: a value that is not allowed raises :class:`~helpers.errors.ParameterError` naming the
    parameter, the value and what is allowed; an output folder that cannot be created raises
    :class:`~helpers.errors.DataError`. On failure raises :class:`NotebookFailed` with a one-line
    reason naming the failing cell; the partly executed notebook is still written for inspection.
    """
    import papermill as pm

    source = notebook_path(name)
    name = source.stem
    parameters = dict(parameters or {})
    known = notebook_parameters(name)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookFailed(f"notebook {name!r} has no parameter(s) {unknown}; its parameters are: {', '.join(known)}")
    checked = check_parameters(name, parameters)
    schema = notebook_schema(name)
    # the checked values (e.g. a single seed wrapped in a list), except texts the notebook splits itself
    parameters = {k: _absolutise(v if k not in checked or schema[k].sep else checked[k]) for k, v in parameters.items()}
    if "output_dir" in known:
        parameters["output_dir"] = "."
    out_dir = _prepare_out_dir(Path(out_dir) if out_dir is not None else default_out_dir())
    if page is not None and (not page or Path(page).name != page or page.endswith(".ipynb")):
        raise ParameterError(f"--page {page!r}: give a file name without folder or suffix, e.g. {name}_mydata")
    target = out_dir / f"{page or name}.ipynb"
    start, started = time.perf_counter(), time.time()
    # Progress bars inside a papermill run are never seen live (papermill shows its own per-cell
    # bar); they would only clutter the executed notebook. The kernel inherits this setting.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with _quiet_kernel_stderr():
            pm.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                cwd=str(out_dir),
                kernel_name="python3",
                progress_bar=progress,
                log_output=False,
                request_save_on_cell_execute=False,
                # one stream output per cell and stream: on a busy machine the kernel sends a print in
                # pieces (text, then its newline), which otherwise became outputs that differ run to run
                coalesce_streams=True,
            )
    except pm.PapermillExecutionError as err:
        first = next((line.strip() for line in str(err.source).splitlines() if line.strip()), "")
        evalue = " ".join(str(err.evalue).split())
        # the suite's own errors are written to be read whole; others are cut to one short line
        limit = 1500 if err.ename in ("DataError", "ParameterError") else 300
        raise NotebookFailed(
            f"notebook {name!r} failed in cell {err.cell_index} ({first[:60]!r}): {err.ename}: {evalue[:limit]} "
            f"— partial notebook at {target}"
        ) from None
    except Exception as err:  # kernel died, timeout, ...
        raise NotebookFailed(f"notebook {name!r} could not be executed: {type(err).__name__}: {err}") from None
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    results = out_dir / f"{results_stem(name, parameters)}.results.csv"
    fresh = results.exists() and results.stat().st_mtime >= started - 1
    place_in_book(target, name, parameters, results.name if fresh else None)
    return RunResult(name, time.perf_counter() - start, target)


def toc_files(root: Path = ROOT) -> list[str]:
    """Every page of the table of contents (paths without suffix, relative to the book root), in order."""
    if root == ROOT:
        require_checkout()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            if "root" in node:
                files.append(node["root"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return files


def toc_notebooks() -> list[str]:
    """Names of the notebooks that the book's table of contents includes, in order."""
    names = []
    for f in toc_files():
        stem = Path(f).stem
        if (NOTEBOOK_DIR / f"{stem}.ipynb").exists() and stem not in names:
            names.append(stem)
    return names


def variants() -> dict[str, Variant]:
    """The book's chapter variants by page name (:data:`helpers.book.pages.VARIANTS`)."""
    from .pages import VARIANTS

    return {v.page: v for v in VARIANTS}


@dataclass(frozen=True)
class BookRun:
    """One execution of ``make book``: ``notebook`` with ``parameters`` (empty: its defaults) into ``book/<page>.ipynb``."""

    page: str
    notebook: str
    parameters: dict

    @property
    def results_stem(self) -> str:
        """The name of the results file the run writes, ``<stem>.results.csv`` (if it writes one)."""
        return results_stem(self.notebook, self.parameters)


def source_notebook(page: str) -> str:
    """The notebook a page of the book is executed from: itself, or a variant's chapter."""
    found = variants().get(page)
    return found.notebook if found is not None else page


def results_stem(notebook: str, parameters: dict | None = None) -> str:
    """The stem of the results file a chapter writes with these parameters (:func:`helpers.results.results_name`).

    A chapter with a ``dataset`` parameter writes ``NAME.results.csv`` on its default dataset
    and ``NAME-<dataset>.results.csv`` on any other, so that the runs on several datasets can
    share a folder; every other notebook writes ``NAME.results.csv``.
    """
    from ..results import results_name

    schema = notebook_schema(notebook)
    if "dataset" not in schema.names:
        return notebook
    default = schema["dataset"].default
    return results_name(notebook, (parameters or {}).get("dataset", default), default)


def toc_pages() -> list[str]:
    """Every executed page of the table of contents, in order: the notebooks and the variants."""
    known = variants()
    pages = []
    for f in toc_files():
        stem = Path(f).stem
        if ((NOTEBOOK_DIR / f"{stem}.ipynb").exists() or stem in known) and stem not in pages:
            pages.append(stem)
    return pages


def book_runs() -> list[BookRun]:
    """What ``make book`` executes, in the order of the table of contents.

    Every notebook of the table of contents on its defaults, and every variant of
    :data:`~helpers.book.pages.VARIANTS` (its parameters checked against the chapter's schema
    here, before any work). A variant missing from ``_toc.yml`` or named like a notebook, or two
    runs writing the same results file, raise :class:`~helpers.errors.ParameterError`.
    """
    known = variants()
    pages = toc_pages()
    missing = sorted(set(known) - set(pages))
    if missing:
        raise ParameterError(f"variants {missing} are not in _toc.yml; list each under its chapter (- file: book/PAGE).")
    runs = []
    for page in pages:
        variant = known.get(page)
        if variant is None:
            runs.append(BookRun(page, page, {}))
            continue
        if (NOTEBOOK_DIR / f"{page}.ipynb").exists():
            raise ParameterError(f"variant page {page!r} has the name of a notebook; give it another name.")
        check_parameters(variant.notebook, dict(variant.parameters))
        runs.append(BookRun(page, variant.notebook, dict(variant.parameters)))
    stems: dict[str, str] = {}
    for run in runs:
        if "dataset" in notebook_schema(run.notebook).names:
            other = stems.setdefault(run.results_stem, run.page)
            if other != run.page:
                raise ParameterError(f"pages {other!r} and {run.page!r} would both write {run.results_stem}.results.csv.")
    return runs


def _suite_flag(name: str, flag: str) -> bool:
    """A flag of the ``suite`` metadata of a notebook (or of the notebook a variant page runs)."""
    meta = json.loads(notebook_path(source_notebook(name)).read_text()).get("metadata", {})
    return bool(meta.get("suite", {}).get(flag, False))


def runs_after_others(name: str) -> bool:
    """Whether a notebook (or a page executed from it) gathers the others' results and must run last."""
    return _suite_flag(name, "runs_after_others")


def runs_last(name: str) -> bool:
    """Whether a notebook reports on all the others, the gathering ones included (the Performance page's timings)."""
    return _suite_flag(name, "runs_last")


def phases(names: list[str]) -> list[list[str]]:
    """The notebooks in the order they must run: the others first, then those that gather
    their results (``runs_after_others``), then those that report on every other run
    (``runs_last``); empty phases left out."""
    final = [n for n in names if runs_last(n)]
    after = [n for n in names if runs_after_others(n) and n not in final]
    return [phase for phase in ([n for n in names if n not in after and n not in final], after, final) if phase]


def run_command(run: BookRun, out_dir: Path) -> list[str]:
    """The command line that executes one :class:`BookRun` (values as JSON, which ``parse_value`` reads back)."""
    cmd = [sys.executable, "-m", "helpers", "run", run.notebook, "--out", str(out_dir)]
    for key, value in run.parameters.items():
        cmd += ["-p", key, json.dumps(value)]
    if run.page != run.notebook:
        cmd += ["--page", run.page]
    return cmd


def _run_in_subprocess(run: BookRun | str, out_dir: Path, threads: int) -> tuple[str, float, str | None]:
    if isinstance(run, str):
        run = BookRun(run, source_notebook(run), dict(variants()[run].parameters) if run in variants() else {})
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(
        run_command(run, out_dir),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    error = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return run.page, seconds, error


def execute_all(out_dir: Path = BOOK_DIR, jobs: int = 2) -> list[tuple[str, float, str | None]]:
    """Execute every page of the table of contents (:func:`book_runs`); those marked ``runs_after_others`` last."""
    runs = {run.page: run for run in book_runs()}
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    results = []
    for pages in phases(list(runs)):
        batch = [runs[p] for p in pages]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for name, seconds, error in pool.map(lambda r: _run_in_subprocess(r, out_dir, threads), batch):
                status = "ok" if error is None else "FAILED"
                print(f"  {name:<32} {seconds:7.1f} s  {status}", flush=True)
                results.append((name, seconds, error))
        # written after each phase so that the notebooks of the last phase can show the others' times
        timings = {"jobs": jobs, "notebooks": {n: round(s, 1) for n, s, _ in results}}
        (out_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2))
    return results


def build_html(root: Path = ROOT) -> Path:
    """Run ``jupyter-book build`` on a book folder (default: the project) and return the index page.

    Warnings are errors: a broken reference or a missing page fails the build.
    """
    if root == ROOT:
        require_checkout()
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise NotebookFailed(f"jupyter-book build failed:\n{tail}")
    return root / "_build" / "html" / "index.html"
