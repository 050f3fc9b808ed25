#!/usr/bin/env python
"""Benchmarks at genome-wide scale (``make bench``): screens from disk and sweeps on dask.distributed.

1. **The genome-wide preset on disk.** ``replogle_k562_gw_like`` (~2 million cells x 8,000 genes,
   9,800 perturbations; :data:`helpers.data.simulate.GENOME_WIDE`) is simulated block by block into
   ``$PERTURB_BENCH_DIR/replogle_k562_gw_like.h5ad`` (default ``benchmarks/_data/``; kept and reused
   by later runs; generation is timed once).
2. **The disk's sequential read speed**, measured in the same run on that file: its pages are
   dropped from the page cache (``posix_fadvise(DONTNEED)``), then it is read once in 64 MB
   chunks. This is the physical limit of a one-pass algorithm.
3. **Streaming pseudobulk** of the file (:func:`helpers.data.streaming.pseudobulk_streamed`), in a
   fresh process, after dropping the file's pages again: wall time, peak memory over the
   process's baseline (resident memory after opening the file, before the pass), and MB/s of
   ``X`` read. Targets: < 2 min and < 2 GB over the baseline on 2 cores.
4. **A sweep of 8 runs** of a short notebook on a 2-worker LocalCluster against the same 8 runs one
   after another (:func:`helpers.book.runner.run_notebook` in a loop): the ratio of wall times.

Writes ``benchmarks/scale.json``. ``python benchmarks/scale.py --scale 0.05`` runs everything on a
smaller screen (a quick check; the JSON records the scale).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SWEEP_NOTEBOOK = "methods_data"
SWEEP_GRID = {"seed": list(range(8))}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _drop_cache(path: Path) -> bool:
    """Drop the file's pages from the page cache (clean pages only; no root needed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def sequential_read_mb_s(path: Path, chunk: int = 64 << 20) -> tuple[float, float, bool]:
    """(MB/s, seconds, whether the cache was dropped) of one sequential read of ``path``."""
    dropped = _drop_cache(path)
    start = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            n += len(block)
    seconds = time.perf_counter() - start
    return n / 1e6 / seconds, seconds, dropped


def matrix_bytes(path: Path) -> int:
    import h5py

    with h5py.File(path) as f:
        return sum(f["X"][k].size * f["X"][k].dtype.itemsize for k in ("data", "indices", "indptr"))


def _pseudobulk_child(path: str, batch_key: str | None) -> None:
    """In a fresh process: open the file, reset the memory high-water mark, stream the pseudobulk."""
    from helpers.data.streaming import open_screen, pseudobulk_streamed

    screen = open_screen(path)
    baseline = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    pb = pseudobulk_streamed(screen, batch_key=batch_key)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline, "peak_mb": peak, "groups": int(pb.n_obs), "genes": int(pb.n_vars)}))


def pseudobulk_step(path: Path, batch_key: str | None) -> dict:
    _drop_cache(path)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), batch_key or ""], capture_output=True, text=True, cwd=HERE.parent
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    size = matrix_bytes(path)
    r.update(
        batch_key=batch_key,
        x_bytes=size,
        mb_per_s=size / 1e6 / r["seconds"],
        peak_over_baseline_mb=r["peak_mb"] - r["baseline_mb"],
    )
    return r


def sweep_step(workers: int = 2) -> dict:
    from helpers.book.runner import run_notebook
    from helpers.book.sweep import expand_grid, run_sweep

    env = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for run in expand_grid(SWEEP_GRID):
            run_notebook(SWEEP_NOTEBOOK, run.params, Path(tmp) / "seq" / run.folder)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        result = run_sweep(SWEEP_NOTEBOOK, SWEEP_GRID, Path(tmp) / "sweep", workers=workers, progress=False)
        parallel = time.perf_counter() - start
    return {
        "notebook": SWEEP_NOTEBOOK,
        "runs": len(result.records),
        "failed": len(result.failures),
        "workers": workers,
        "sequential_seconds": sequential,
        "local_cluster_seconds": parallel,
        "speedup": sequential / parallel,
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        _pseudobulk_child(argv[1], argv[2] or None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the genome-wide preset (1: ~2 million cells)")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args(argv)

    from helpers.data.simulate import GENOME_WIDE

    folder = Path(os.environ.get("PERTURB_BENCH_DIR", HERE / "_data"))
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.scale == 1.0 else f"_scale{args.scale:g}"
    path = folder / f"{GENOME_WIDE.name}{suffix}.h5ad"
    out = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "scale": args.scale, "file": str(path)}
    out["load_average_at_start"] = os.getloadavg()[0]  # other work on the machine slows every figure below
    if not path.exists():
        print(f"writing {path} (the genome-wide preset, scale {args.scale:g}) ...", flush=True)
        start = time.perf_counter()
        GENOME_WIDE.write(path, scale=args.scale, seed=0, progress=True)
        out["generate_seconds"] = time.perf_counter() - start
    import anndata as ad

    backed = ad.read_h5ad(path, backed="r")
    size = matrix_bytes(path)
    out["screen"] = {
        "cells": int(backed.n_obs),
        "genes": int(backed.n_vars),
        "perturbations": int(backed.obs["perturbation"].nunique() - 1),
        "density": float(backed.X.group["data"].shape[0] / (backed.n_obs * backed.n_vars)) if hasattr(backed.X, "group") else None,
        "x_bytes": size,
        "file_bytes": path.stat().st_size,
    }
    backed.file.close()
    mb_s, seconds, dropped = sequential_read_mb_s(path)
    out["disk_read"] = {"mb_per_s": mb_s, "seconds": seconds, "bytes": path.stat().st_size, "page_cache_dropped": dropped}
    print(f"disk: sequential read {mb_s:.0f} MB/s ({seconds:.1f} s)", flush=True)
    out["pseudobulk"] = pseudobulk_step(path, None)
    pb = out["pseudobulk"]
    out["pseudobulk"]["read_share_of_disk_speed"] = pb["mb_per_s"] / mb_s
    print(
        f"pseudobulk: {pb['seconds']:.1f} s, {pb['mb_per_s']:.0f} MB/s of X, {pb['peak_over_baseline_mb']:.0f} MB over baseline "
        "(targets < 120 s, < 2048 MB)",
        flush=True,
    )
    out["targets"] = {"pseudobulk_seconds": 120, "pseudobulk_peak_over_baseline_mb": 2048}
    if not args.skip_sweep:
        out["sweep"] = sweep_step()
        s = out["sweep"]
        print(
            f"sweep of {s['runs']} runs: sequential {s['sequential_seconds']:.0f} s, LocalCluster ({s['workers']} workers) "
            f"{s['local_cluster_seconds']:.0f} s: {s['speedup']:.2f}x",
            flush=True,
        )
    out["load_average_at_end"] = os.getloadavg()[0]
    target = HERE / ("scale.json" if args.scale == 1.0 else f"scale{suffix}.json")
    target.write_text(json.dumps(out, indent=2))
    print(f"wrote {target.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
