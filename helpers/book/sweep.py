"""Parameter sweeps: a grid of notebook runs on a dask.distributed cluster, resumable, gathered into one table.

``python -m helpers sweep NAME -p KEY VALUE [VALUE ...] ... --out DIR`` expands the values of
every ``-p`` into the Cartesian grid of runs, and executes each run
(:func:`helpers.book.runner.run_notebook`) into its own folder ``DIR/<run>/``. The runs go to a
dask.distributed cluster: a :class:`distributed.LocalCluster` of ``workers`` processes on this
machine by default, or the scheduler at ``--scheduler ADDRESS`` (the same code path: a
:class:`distributed.Client` either way). Then:

* **progress**: a bar over the runs as they finish;
* **resume**: a run whose folder holds its record ``run.json`` with status ``ok`` (and its
  results table, for a notebook that writes one) is skipped, so an interrupted sweep started
  again runs only what is missing or failed;
* **failures**: a run that fails is recorded with its parameters and its failing cell (the
  runner's one-line message) and does not stop the others;
* **gathering**: the results tables of all successful runs become one tidy table
  ``DIR/NAME.sweep.csv`` with one column per swept parameter (:func:`gather`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ParameterError

RECORD = "run.json"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class SweepRun:
    """One point of the grid: its parameters and its folder (relative to the sweep's)."""

    params: dict
    folder: str


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: every run's record, the gathered table and its path."""

    records: list[dict]
    table: pd.DataFrame
    path: Path | None
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        ok = sum(r["status"] == "ok" for r in self.records)
        text = f"{ok} of {len(self.records)} runs ok ({self.skipped} already done), {len(self.failures)} failed"
        return text + "".join(f"\n  FAILED {_describe(f['params'])}: {f['error']}" for f in self.failures)


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def run_folder(params: dict) -> str:
    """A readable, unique folder name for a run: ``key=value`` pairs and a short hash of all values."""
    text = "_".join(f"{k}={v}" for k, v in params.items())
    text = re.sub(r"[^A-Za-z0-9=.,+-]+", "-", text).strip("-")[:80]
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{text}_{digest}" if text else digest


def expand_grid(grid: dict[str, list]) -> list[SweepRun]:
    """The Cartesian product of the values, in the order given (last key varies fastest)."""
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ParameterError(f"sweep parameter {key!r} needs at least one value (-p {key} VALUE [VALUE ...])")
    keys = list(grid)
    runs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        runs.append(SweepRun(params, run_folder(params)))
    return runs


def _results_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.results.csv"))


def is_done(folder: Path) -> bool:
    """Whether a run's folder holds a successful record (and the results table the record names)."""
    record = folder / RECORD
    if not record.exists():
        return False
    try:
        data = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("status") == "ok" and all((folder / name).exists() for name in data.get("results", []))


def execute_run(name: str, params: dict, folder: str, threads: int = 1, notebook_dir: str | None = None) -> dict:
    """Run one notebook into ``folder`` and write its record; never raises (a failure is the record's ``error``).

    Executed on a dask worker. ``threads`` sets the BLAS threads of the notebook's kernel;
    ``notebook_dir`` runs a notebook from another folder than the suite's ``notebooks/``.
    """
    from . import runner

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).unlink(missing_ok=True)
    saved_env = {v: os.environ.get(v) for v in _THREAD_VARS}
    saved_dir = runner.NOTEBOOK_DIR
    os.environ.update({v: str(threads) for v in _THREAD_VARS})
    if notebook_dir is not None:
        runner.NOTEBOOK_DIR = Path(notebook_dir)
    start = time.perf_counter()
    record: dict[str, Any] = {"notebook": name, "params": params, "folder": out.name}
    try:
        runner.run_notebook(name, params, out)
        record.update(status="ok", error=None, results=[p.name for p in _results_files(out)])
    except Exception as err:  # NotebookFailed names the cell; anything else is reported in one line too
        record.update(status="failed", error=" ".join(str(err).split()) or type(err).__name__, results=[])
    finally:
        runner.NOTEBOOK_DIR = saved_dir
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    record["seconds"] = round(time.perf_counter() - start, 2)
    (out / RECORD).write_text(json.dumps(record, indent=1, default=str))
    return record


def gather(out: Path, records: list[dict], keys: list[str]) -> pd.DataFrame:
    """One tidy table of every successful run's results, with a column per swept parameter.

    A parameter whose name is already a column of the results (e.g. ``seed``) gets the
    column ``param_<name>``. List values are written as their text (``[1, 2]``).
    """
    frames = []
    for rec in records:
        if rec["status"] != "ok":
            continue
        for name in rec.get("results", []):
            frame = pd.read_csv(out / rec["folder"] / name)
            for key in keys:
                value = rec["params"][key]
                column = f"param_{key}" if key in frame.columns else key
                frame.insert(0, column, value if not isinstance(value, (list, tuple, dict)) else json.dumps(value))
            frame.insert(0, "run", rec["folder"])
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", *keys])


def run_sweep(
    name: str,
    grid: dict[str, list],
    out: str | Path,
    scheduler: str | None = None,
    workers: int = 2,
    threads: int = 1,
    processes: bool = True,
    progress: bool = True,
    notebook_dir: str | Path | None = None,
) -> SweepResult:
    """Run the grid of notebook runs on dask.distributed; see the module docstring.

    Parameters
    ----------
    name
        The notebook (``python -m helpers run --help`` lists them).
    grid
        Parameter name -> the values to sweep (a single value is a fixed parameter).
    out
        The sweep's folder: one folder per run, the gathered ``NAME.sweep.csv``.
    scheduler
        Address of a running dask scheduler (``tcp://host:8786``); default: a LocalCluster.
    workers, threads, processes
        The LocalCluster's workers (each runs one notebook at a time), the BLAS threads of each
        notebook's kernel, and whether the workers are processes (else threads of this process).
    """
    from distributed import Client, LocalCluster, as_completed

    from ..console import progress_bar
    from .runner import check_parameters, notebook_path, notebook_schema

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    saved_dir = None
    if notebook_dir is not None:
        from . import runner

        saved_dir, runner.NOTEBOOK_DIR = runner.NOTEBOOK_DIR, Path(notebook_dir)
    try:
        name = notebook_path(name).stem
        runs = expand_grid(grid)
        notebook_schema(name)
        for run in runs:  # every value is checked before any run starts
            check_parameters(name, run.params)
    finally:
        if saved_dir is not None:
            runner.NOTEBOOK_DIR = saved_dir
    records, todo = [], []
    for run in runs:
        if is_done(out / run.folder):
            records.append(json.loads((out / run.folder / RECORD).read_text()))
        else:
            todo.append(run)
    skipped = len(records)
    if todo:
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None, silence_logs=40)
        client = Client(scheduler if scheduler is not None else cluster)
        try:
            futures = [
                client.submit(
                    execute_run,
                    name,
                    run.params,
                    str(out / run.folder),
                    threads,
                    None if notebook_dir is None else str(notebook_dir),
                    key=f"{name}-{run.folder}",
                    pure=False,
                )
                for run in todo
            ]
            with progress_bar(total=len(futures), desc=f"sweep {name}", unit="run", disable=not progress) as bar:
                for future in as_completed(futures):
                    record = future.result()
                    records.append(record)
                    bar.update()
                    if record["status"] != "ok":
                        bar.write(f"FAILED {_describe(record['params'])}: {record['error']}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    order = {run.folder: i for i, run in enumerate(runs)}
    records.sort(key=lambda r: order[r["folder"]])
    table = gather(out, records, list(grid))
    path = out / f"{name}.sweep.csv"
    table.to_csv(path, index=False)
    failures = [r for r in records if r["status"] != "ok"]
    (out / "sweep.json").write_text(json.dumps({"notebook": name, "grid": grid, "runs": records}, indent=1, default=str))
    return SweepResult(records, table, path, skipped, failures)
