"""Command line: ``python -m helpers {run,sweep,book,datasets,download,evaluate} ...``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    from ..errors import DataError, ParameterError
    from .runner import NotebookFailed, parameter_table, parse_value, run_notebook

    if args.parameters:
        try:
            table = parameter_table(args.name)
        except NotebookFailed as err:
            return _error(err)
        if table.empty:
            print(f"{args.name} has no parameters")
        for row in table.itertuples():
            print(f"{row.parameter} = {row.default}\n    allowed: {row.allowed}\n    {row.meaning}")
        return 0
    params = {}
    for key, value in args.param or []:
        if key in params:
            return _error(f"parameter {key} is given twice (-p {key} ...); give each parameter once")
        params[key] = parse_value(value)
    try:
        result = run_notebook(args.name, params, args.out, progress=not args.quiet, page=args.page)
    except (NotebookFailed, DataError, ParameterError) as err:
        return _error(err)
    print(f"{result.name}: executed in {result.seconds:.1f} s -> {result.path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..errors import DataError, ParameterError
    from .runner import NotebookFailed, parse_value
    from .sweep import run_sweep

    grid: dict[str, list] = {}
    for key, *values in args.param or []:
        if key in grid:
            return _error(f"parameter {key} is given twice (-p {key} ...); give all its values after one -p")
        if not values:
            return _error(f"-p {key} needs at least one value: -p {key} VALUE [VALUE ...]")
        grid[key] = [parse_value(v) for v in values]
    if not grid:
        return _error("a sweep needs at least one parameter: -p KEY VALUE [VALUE ...]")
    try:
        result = run_sweep(
            args.name, grid, args.out, scheduler=args.scheduler, workers=args.workers, threads=args.threads, progress=not args.quiet
        )
    except (NotebookFailed, DataError, ParameterError) as err:
        return _error(err)
    print(result.summary())
    print(f"results of every run: {result.path}")
    return 1 if result.failures else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from ..errors import CheckoutRequired
    from .runner import BOOK_DIR, NotebookFailed, build_html, execute_all, require_checkout

    try:
        require_checkout()
    except CheckoutRequired as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    if not args.skip_run:
        print(f"executing notebooks into {BOOK_DIR} ({args.jobs} at a time):", flush=True)
        results = execute_all(BOOK_DIR, jobs=args.jobs)
        failed = [(n, e) for n, _, e in results if e]
        if failed:
            for _, error in failed:
                print(f"error: {error}", file=sys.stderr)
            return 1
    print("building the HTML with jupyter-book ...", flush=True)
    try:
        index = build_html()
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"book built in {time.perf_counter() - start:.0f} s: open {index}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..data import list_datasets

    table = list_datasets()
    with pd.option_context("display.max_colwidth", 110, "display.width", 250):
        print(table.to_string(index=False))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from ..data import registry
    from ..errors import DataError

    if args.force and args.forget:
        return _error("--force and --forget exclude each other: --forget only deletes, --force deletes and downloads again")
    try:
        if args.forget:
            removed = registry.forget(args.name)
            if removed:
                print(f"{args.name}: deleted {', '.join(str(p) for p in removed)}")
            else:
                print(f"{args.name}: nothing cached, nothing recorded")
            return 0
        path = registry.fetch(args.name, force=args.force)
    except DataError as err:
        return _error(err)
    print(f"{args.name}: {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Check the inputs here (a bad input fails fast, with the whole message), then run the report notebook."""
    import shutil
    import tempfile

    from ..benchmarks.evaluate import load_inputs, results_name
    from ..errors import DataError
    from .runner import NotebookFailed, default_out_dir, run_notebook

    out = Path(args.out) if args.out is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".evaluate-") as tmp:
        try:
            inputs = load_inputs(
                args.predictions,
                args.truth,
                args.name,
                args.control,
                args.perturbation_column,
                args.values,
                args.style,
                args.evaluate_on,
                args.seed,
            )
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        for role, row in inputs.table().iterrows():
            print(f"{role}: {row['source']} — {row['layout']} ({row['why']}); {row['values']}")
        params = {
            "predictions": args.predictions,
            "truth": args.truth,
            "model_name": args.name,
            "control": args.control,
            "perturbation_column": args.perturbation_column,
            "values": args.values,
            "style": args.style,
            "evaluate_on": args.evaluate_on,
            "perturbed_mean_from": args.perturbed_mean_from,
            "calibration": not args.no_calibration,
            "seed": args.seed,
            "add_to_scoreboard": not args.no_scoreboard,
        }
        run_dir = Path(tmp) / "run"
        try:
            result = run_notebook("evaluate", params, run_dir, progress=not args.quiet)
        except NotebookFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        stem = results_name(inputs.model, inputs.example)
        written = []
        for path in sorted(run_dir.iterdir()):
            target = out / (f"{stem}.ipynb" if path.name == "evaluate.ipynb" else path.name)
            shutil.move(str(path), target)
            written.append(target)
    print(f"{inputs.model}: evaluated in {result.seconds:.1f} s -> " + ", ".join(str(w) for w in written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers", description="Perturbation-response benchmarks: run notebooks, build the book, manage datasets."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute one notebook with papermill")
    run.add_argument("name", help="notebook name, e.g. double_perturbations (notebooks/NAME.ipynb; an installed package has its own copy)")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="parameter (YAML/Python literal value); repeatable"
    )
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the executed notebook and its results (default: book/ in a checkout of the repository, else the current folder)",
    )
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    run.add_argument(
        "--page", default=None, help="name of the executed notebook in --out (default: NAME); the book's chapter variants use it"
    )
    run.add_argument("--parameters", action="store_true", help="list the notebook's parameters (default, allowed values, meaning) and exit")
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser(
        "sweep",
        help="run a notebook over a grid of parameter values on dask.distributed (resumable), gather the results",
        description="Run a notebook for every combination of the values given with -p, in parallel on a dask.distributed "
        "cluster (a LocalCluster by default), into DIR/<run>/; runs already done are skipped; the results tables are "
        "gathered into DIR/NAME.sweep.csv with one column per parameter.",
    )
    sw.add_argument("name", help="notebook name, e.g. double_perturbations")
    sw.add_argument(
        "-p",
        "--param",
        nargs="+",
        action="append",
        metavar=("KEY", "VALUE"),
        help="a parameter and its values (YAML/Python literals); repeatable",
    )
    sw.add_argument("--out", type=Path, required=True, help="folder of the sweep: one folder per run and the gathered table")
    sw.add_argument(
        "--scheduler", default=None, help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster)"
    )
    sw.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (notebooks run at the same time)")
    sw.add_argument("--threads", type=int, default=1, help="BLAS threads of each notebook's kernel")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_cmd_sweep)

    book = sub.add_parser(
        "book", help="execute every notebook on its defaults and build the HTML book (needs a checkout of the repository)"
    )
    book.add_argument("--jobs", type=int, default=2, help="notebooks executed at the same time")
    book.add_argument("--skip-run", action="store_true", help="only rebuild the HTML from the executed notebooks")
    book.set_defaults(func=_cmd_book)

    ds = sub.add_parser("datasets", help="list every dataset the suite knows")
    ds.set_defaults(func=_cmd_datasets)

    dl = sub.add_parser(
        "download",
        help="download a published dataset into the cache (checked, then its SHA-256 recorded in hashes.json)",
        description="Download a published dataset into the cache ($PERTURB_DATA_CACHE). A new download is checked (complete, "
        "the registered format and layout, plausible size) before its SHA-256 is recorded in hashes.json; every later use "
        "verifies it.",
    )
    dl.add_argument("name", help="a downloadable dataset (python -m helpers datasets)")
    dl.add_argument("--force", action="store_true", help="delete the cached files and the recorded hashes first, then download again")
    dl.add_argument("--forget", action="store_true", help="only delete the cached files and the recorded hashes (no download)")
    dl.set_defaults(func=_cmd_download)

    ev = sub.add_parser(
        "evaluate",
        help="score a predictions file (table of profiles, or predicted cells) against observed cells; writes a report and a results table",
    )
    ev.add_argument(
        "--predictions", required=True, help="predictions: .h5ad (cells or perturbations), .csv/.tsv/.parquet table, or 'example'"
    )
    ev.add_argument("--truth", required=True, help="observed cells: a dataset name (python -m helpers datasets) or an .h5ad file")
    ev.add_argument("--name", default=None, help="the model's name in the results and on the scoreboard (default: the file name)")
    ev.add_argument(
        "--control", default=None, help="label of the control cells as written in the files, e.g. non-targeting (default: detected)"
    )
    ev.add_argument(
        "--perturbation-column", default=None, help="obs column with each cell's perturbation, e.g. target_gene (default: detected)"
    )
    ev.add_argument(
        "--values", default="auto", choices=("auto", "expression", "counts", "change"), help="what the predictions hold (default: auto)"
    )
    ev.add_argument("--style", default="gears", help="naming convention of the perturbation labels (gears, scperturb, canonical, ...)")
    ev.add_argument(
        "--evaluate-on",
        default="all",
        choices=("all", "predicted"),
        help="'predicted': score only the predicted perturbations, list the others",
    )
    ev.add_argument(
        "--perturbed-mean-from",
        default="evaluated",
        choices=("evaluated", "others"),
        help="perturbations the perturbed-mean reference averages",
    )
    ev.add_argument("--seed", type=int, default=1, help="seed of the calibration controls' halves and the PCA's cells")
    ev.add_argument("--no-calibration", action="store_true", help="skip the calibration controls (technical duplicate, mean, no change)")
    ev.add_argument("--no-scoreboard", action="store_true", help="do not mark the model's rows for the book's scoreboard")
    ev.add_argument("--out", type=Path, default=None, help="folder for the report and the results (default: book/ in a checkout, else .)")
    ev.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of our output went away (e.g. `python -m helpers datasets | head`): not an error of ours
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not raise BrokenPipeError again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
