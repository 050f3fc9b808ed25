"""The tables of the book's Performance page, read from the files that record run times.

* :func:`notebook_timings`: the wall time of every notebook of this build (``book/_timings.json``,
  written by :func:`helpers.book.runner.execute_all` after each phase);
* :func:`gears_timings`: the fits of GEARS whose predictions are shipped (``data/gears/**/*.json``,
  their provenance records ``wall_seconds`` and ``resources``);
* :func:`comparison_tables`: the measured comparisons of ``benchmarks/*.json`` other than
  ``latest.json`` (e.g. ``evaluate_vs_celleval.json``: this suite against cell-eval on the same data),
  one table of runs and one of their steps per file;
* :func:`scale_table`: the genome-wide measurements of ``benchmarks/scale*.json``
  (``benchmarks/scale.py``): streamed pseudobulk against the disk's read speed, and a sweep on a
  LocalCluster against the same runs one after another, each with its target.

Every function returns an empty table when its files are missing, so the page says so instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def notebook_timings(timings: dict) -> pd.DataFrame:
    """Notebooks and their wall time in seconds, slowest first, with the share of the whole build.

    ``timings`` is the content of ``_timings.json``: ``{"jobs": n, "notebooks": {name: seconds}}``.
    """
    seconds = pd.Series(timings.get("notebooks", {}), dtype=float)
    if seconds.empty:
        return pd.DataFrame(columns=["notebook", "wall time (s)", "share of the summed time"])
    seconds = seconds.sort_values(ascending=False)
    return pd.DataFrame(
        {
            "notebook": seconds.index,
            "wall time (s)": seconds.round(1).to_numpy(),
            "share of the summed time": (seconds / seconds.sum()).map(lambda v: f"{v:.0%}").to_numpy(),
        }
    )


def gears_timings(folder: Path) -> pd.DataFrame:
    """One row per shipped GEARS fit (``folder/**/*.json``): chapter, dataset, seed, epochs, seconds, memory, cores."""
    rows = []
    for path in sorted(Path(folder).glob("**/*.json")):
        record = json.loads(path.read_text())
        wall = record.get("wall_seconds")
        if record.get("model") != "GEARS" or not isinstance(wall, dict):
            continue
        resources = record.get("resources", {})
        rows.append(
            {
                "chapter": record.get("chapter"),
                "dataset": record.get("dataset"),
                "seed": record.get("seed"),
                "epochs": record.get("hyperparameters", {}).get("epochs"),
                "fit (s)": wall.get("fit"),
                "predict (s)": wall.get("predict"),
                "total (s)": wall.get("total"),
                "peak memory of the fit (MB)": resources.get("fit_peak_memory_mb"),
                "threads": record.get("hyperparameters", {}).get("n_threads"),
                "cores": record.get("machine", {}).get("cores"),
                "made on": str(record.get("made_on", ""))[:16].replace("T", " "),
            }
        )
    return pd.DataFrame(rows)


def comparison_tables(folder: Path) -> dict[str, tuple[str, pd.DataFrame, pd.DataFrame]]:
    """For each ``folder/*.json`` with ``runs`` (not ``latest.json``): a caption, the runs and their steps.

    The caption names the data, the target, the date and the machine; ``runs`` has one row per
    run (wall and CPU seconds, peak memory); ``steps`` the seconds of each step per run (empty
    when no run records steps).
    """
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name == "latest.json":
            continue
        record = json.loads(path.read_text())
        runs = record.get("runs")
        if not isinstance(runs, dict):
            continue
        table = pd.DataFrame(
            [
                {"run": name, "wall time (s)": r.get("seconds"), "CPU time (s)": r.get("cpu_seconds"), "peak memory (MB)": r.get("peak_mb")}
                for name, r in runs.items()
            ]
        )
        steps = pd.DataFrame({name: r["steps_seconds"] for name, r in runs.items() if isinstance(r.get("steps_seconds"), dict)})
        steps = steps.loc[(steps != 0).any(axis=1)] if not steps.empty else steps
        caption = "; ".join(
            part
            for part in (
                f"data: {record['data']}" if record.get("data") else "",
                f"target: {record['target']}" if record.get("target") else "",
                f"measured {record['when']}" if record.get("when") else "",
                f"{record['cpus']} CPUs" if record.get("cpus") else "",
                f"load average {record['load_average']}" if record.get("load_average") is not None else "",
            )
            if part
        )
        out[path.stem] = (caption, table, steps.rename_axis("step"))
    return out


def _scale_row(
    base: dict, measurement: str, value: float | None, unit: str, target: float | None = None, fmt: str = "{:,.1f}"
) -> dict | None:
    if value is None:
        return None
    if target is None:
        met = ""
    elif base["scale"] != 1:
        met = "the target is for the full screen"
    else:
        met = "yes" if value <= target else "no"
    target_text = "" if target is None else f"< {fmt.format(target)} {unit}"
    return {**base, "measurement": measurement, "value": f"{fmt.format(value)} {unit}", "target": target_text, "met": met}


def scale_table(folder: Path) -> pd.DataFrame:
    """One row per measurement of each ``folder/scale*.json`` (full scale first): what, value, target, met.

    ``met`` is "yes" / "no" against the file's ``targets`` on the full screen (scale 1; a
    scaled-down file says the target is for the full screen) and empty for a figure without a
    target (the disk's read speed, the share of it the pass reaches). Columns: ``file, scale,
    cells, measurement, value, target, met``.
    """
    rows = []
    for path in sorted(Path(folder).glob("scale*.json"), key=lambda p: (p.name != "scale.json", p.name)):
        record = json.loads(path.read_text())
        screen, targets = record.get("screen", {}), record.get("targets", {})
        disk, pb, sweep = record.get("disk_read", {}), record.get("pseudobulk", {}), record.get("sweep", {})
        base = {"file": path.name, "scale": record.get("scale"), "cells": screen.get("cells")}
        share = pb.get("read_share_of_disk_speed")
        candidates = [
            ("screen size on disk (X)", (screen.get("x_bytes") or 0) / 1e9 or None, "GB", None, "{:,.2f}"),
            ("disk: sequential read, page cache dropped", disk.get("mb_per_s"), "MB/s", None, "{:,.0f}"),
            ("streamed pseudobulk: wall time", pb.get("seconds"), "s", targets.get("pseudobulk_seconds"), "{:,.1f}"),
            (
                "streamed pseudobulk: memory over the baseline",
                pb.get("peak_over_baseline_mb"),
                "MB",
                targets.get("pseudobulk_peak_over_baseline_mb"),
                "{:,.0f}",
            ),
            ("streamed pseudobulk: X read", pb.get("mb_per_s"), "MB/s", None, "{:,.0f}"),
            ("streamed pseudobulk: share of the disk's speed", None if share is None else 100 * share, "%", None, "{:,.0f}"),
        ]
        if sweep:
            candidates += [
                (f"sweep of {sweep.get('runs')} runs one after another", sweep.get("sequential_seconds"), "s", None, "{:,.0f}"),
                (f"the same on a {sweep.get('workers')}-worker LocalCluster", sweep.get("local_cluster_seconds"), "s", None, "{:,.0f}"),
                ("sweep speed-up (sequential / cluster)", sweep.get("speedup"), "x", None, "{:,.2f}"),
            ]
        rows += [row for c in candidates if (row := _scale_row(base, *c)) is not None]
    return pd.DataFrame(rows, columns=["file", "scale", "cells", "measurement", "value", "target", "met"])


__all__ = ["comparison_tables", "gears_timings", "notebook_timings", "scale_table"]
