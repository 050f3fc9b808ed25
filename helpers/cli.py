"""Command line: ``python -m helpers {run,book,datasets,download} ...``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _cmd_run(args) -> int:
    from .runner import NotebookFailed, parse_value, run_notebook

    params = {}
    for key, value in args.param or []:
        params[key] = parse_value(value)
    try:
        result = run_notebook(args.name, params, args.out, progress=not args.quiet)
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result.name}: executed in {result.seconds:.1f} s -> {result.path}")
    return 0


def _cmd_book(args) -> int:
    from .runner import BOOK_DIR, NotebookFailed, build_html, execute_all

    start = time.perf_counter()
    if not args.skip_run:
        print(f"executing notebooks into {BOOK_DIR} ({args.jobs} at a time):", flush=True)
        results = execute_all(BOOK_DIR, jobs=args.jobs)
        failed = [(n, e) for n, _, e in results if e]
        if failed:
            for name, error in failed:
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


def _cmd_datasets(args) -> int:
    import pandas as pd

    from .data import list_datasets

    table = list_datasets()
    with pd.option_context("display.max_colwidth", 110, "display.width", 250):
        print(table.to_string(index=False))
    return 0


def _cmd_download(args) -> int:
    from .data import DataError, fetch

    try:
        path = fetch(args.name)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Perturbation-response benchmarks: run notebooks, build the book, manage datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute one notebook with papermill")
    run.add_argument("name", help="notebook name, e.g. double_perturbations (notebooks/NAME.ipynb)")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="parameter (YAML/Python literal value); repeatable")
    run.add_argument("--out", type=Path, default=None, help="folder for the executed notebook and its results (default: book/)")
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    run.set_defaults(func=_cmd_run)

    book = sub.add_parser("book", help="execute every notebook on its defaults and build the HTML book")
    book.add_argument("--jobs", type=int, default=2, help="notebooks executed at the same time")
    book.add_argument("--skip-run", action="store_true", help="only rebuild the HTML from the executed notebooks")
    book.set_defaults(func=_cmd_book)

    ds = sub.add_parser("datasets", help="list every dataset the suite knows")
    ds.set_defaults(func=_cmd_datasets)

    dl = sub.add_parser("download", help="download a published dataset into the cache")
    dl.add_argument("name")
    dl.set_defaults(func=_cmd_download)

    args = parser.parse_args(argv)
    return args.func(args)
