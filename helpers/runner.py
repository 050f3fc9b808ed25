"""Execute the parameterised notebooks with papermill and build the book.

``python -m helpers run NAME -p KEY VALUE --out DIR`` executes ``notebooks/NAME.ipynb``
into ``DIR/NAME.ipynb`` (default ``DIR`` = ``book/``), with the kernel's working folder set
to ``DIR`` so that the notebook's result files land beside it. ``python -m helpers book``
executes every notebook of the table of contents and builds the HTML.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
BOOK_DIR = ROOT / "book"
TIMINGS_FILE = "_timings.json"


class NotebookFailed(RuntimeError):
    """A notebook raised an error; the message is one line naming the cell."""


@dataclass
class RunResult:
    name: str
    seconds: float
    path: Path


def parse_value(text: str):
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
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
        raise NotebookFailed(f"no notebook named {name!r} in {NOTEBOOK_DIR}; known notebooks: {known}")
    return path


def notebook_parameters(name: str) -> dict:
    """Default parameters of a notebook (from its ``parameters`` cell)."""
    return {k: v["default"] for k, v in _inspect(name).items()}


def _inspect(name: str) -> dict:
    import papermill as pm

    return pm.inspect_notebook(str(notebook_path(name)))


def parameter_table(name: str):
    """A notebook's parameters as a table: name, default (as written) and the comment beside it."""
    import pandas as pd

    rows = [{"parameter": k, "default": v["default"], "meaning": v.get("help", "")} for k, v in _inspect(name).items() if k != "output_dir"]
    return pd.DataFrame(rows, columns=["parameter", "default", "meaning"])


def _absolutise(value):
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


def run_notebook(name: str, parameters: dict | None = None, out_dir: str | Path | None = None, progress: bool = False) -> RunResult:
    """Execute ``notebooks/NAME.ipynb`` into ``out_dir`` with papermill.

    Unknown parameter names are refused (papermill would only warn). On failure raises
    :class:`NotebookFailed` with a one-line reason naming the failing cell; the partly
    executed notebook is still written for inspection.
    """
    import papermill as pm

    source = notebook_path(name)
    parameters = dict(parameters or {})
    known = notebook_parameters(name)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookFailed(f"notebook {name!r} has no parameter(s) {unknown}; its parameters are: {', '.join(known)}")
    parameters = {k: _absolutise(v) for k, v in parameters.items()}
    if "output_dir" in known:
        parameters["output_dir"] = "."
    out_dir = Path(out_dir) if out_dir is not None else BOOK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    start = time.perf_counter()
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
            )
    except pm.PapermillExecutionError as err:
        first = next((line.strip() for line in str(err.source).splitlines() if line.strip()), "")
        evalue = " ".join(str(err.evalue).split())
        raise NotebookFailed(
            f"notebook {name!r} failed in cell {err.cell_index} ({first[:60]!r}): {err.ename}: {evalue[:300]} "
            f"— partial notebook at {target}"
        ) from None
    except Exception as err:  # kernel died, timeout, ...
        raise NotebookFailed(f"notebook {name!r} could not be executed: {type(err).__name__}: {err}") from None
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    _hide_injected_parameters_if_asked(target)
    return RunResult(name, time.perf_counter() - start, target)


def _hide_injected_parameters_if_asked(path: Path) -> None:
    """Reference pages hide their parameters cell (tag ``remove-cell``); hide papermill's copy too."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tags = [set(c.metadata.get("tags", [])) for c in nb.cells]
    if not any({"parameters", "remove-cell"} <= t for t in tags):
        return
    for cell, t in zip(nb.cells, tags):
        if "injected-parameters" in t and "remove-cell" not in t:
            cell.metadata["tags"] = sorted(t | {"remove-cell"})
    nbformat.write(nb, path)


def toc_files(root: Path = ROOT) -> list[str]:
    """Every page of the table of contents (paths without suffix, relative to the book root), in order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = []

    def walk(node):
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


def runs_after_others(name: str) -> bool:
    meta = json.loads(notebook_path(name).read_text()).get("metadata", {})
    return bool(meta.get("suite", {}).get("runs_after_others", False))


def phases(names: list[str]) -> list[list[str]]:
    """The notebooks in the order they must run: the others first, then those that gather
    their results (``runs_after_others``); empty phases left out."""
    last = [n for n in names if runs_after_others(n)]
    return [phase for phase in ([n for n in names if n not in last], last) if phase]


def _run_in_subprocess(name: str, out_dir: Path, threads: int) -> tuple[str, float, str | None]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "helpers", "run", name, "--out", str(out_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    error = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return name, seconds, error


def execute_all(out_dir: Path = BOOK_DIR, jobs: int = 2) -> list[tuple[str, float, str | None]]:
    """Execute every notebook of the table of contents; those marked ``runs_after_others`` last."""
    names = toc_notebooks()
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    results = []
    for batch in phases(names):
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for name, seconds, error in pool.map(lambda n: _run_in_subprocess(n, out_dir, threads), batch):
                status = "ok" if error is None else "FAILED"
                print(f"  {name:<28} {seconds:7.1f} s  {status}", flush=True)
                results.append((name, seconds, error))
        # written after each phase so that the notebooks of the last phase can show the others' times
        timings = {"jobs": jobs, "notebooks": {n: round(s, 1) for n, s, _ in results}}
        (out_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2))
    return results


def build_html(root: Path = ROOT) -> Path:
    """Run ``jupyter-book build`` on a book folder (default: the project) and return the index page.

    Warnings are errors: a broken reference or a missing page fails the build.
    """
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise NotebookFailed(f"jupyter-book build failed:\n{tail}")
    return root / "_build" / "html" / "index.html"
