#!/usr/bin/env python
"""Run every benchmark step and print wall time and peak memory (``make bench``).

Each step runs in its own process so that its memory is measured alone:

* ``seconds`` — wall time of the step's ``run`` (its ``setup``, e.g. generating data, is not timed);
* ``peak traced MB`` — peak of the memory allocated by Python and numpy during ``run``
  (``tracemalloc``; numpy and scipy arrays are traced, a few C libraries are not);
* ``peak RSS MB`` — the process's peak resident memory, setup and imports included.

Usage: ``python benchmarks/run.py [substring ...]`` runs the steps whose "topic: name"
contains any of the substrings (all by default).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import Step  # noqa: E402


def _steps(module_name: str) -> list[Step]:
    module = importlib.import_module(module_name)
    steps = []
    for item in module.STEPS:
        steps.append(item if isinstance(item, Step) else Step(item[0], item[1], None, item[2] if len(item) > 2 else ""))
    return steps


def _child(module_name: str, index: int) -> None:
    step = _steps(module_name)[index]
    value = step.setup() if step.setup else None
    tracemalloc.start()
    start = time.perf_counter()
    step.run(value) if step.setup else step.run()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "traced_mb": peak / 2**20, "rss_mb": rss_mb}))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--child":
        _child(argv[1], int(argv[2]))
        return 0
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    rows, failed = [], 0
    print(f"{'step':<58} {'seconds':>9} {'peak traced MB':>15} {'peak RSS MB':>12}  target", flush=True)
    for module_name in modules:
        for index, step in enumerate(_steps(module_name)):
            label = f"{module_name.removeprefix('bench_')}: {step.name}"
            if argv and not any(a in label for a in argv):
                continue
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", module_name, str(index)],
                capture_output=True, text=True, cwd=HERE.parent, env=dict(os.environ),
            )
            if proc.returncode != 0:
                failed += 1
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{label:<58} FAILED: {last}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"step": label, **r, "target": step.target})
            print(f"{label:<58} {r['seconds']:9.2f} {r['traced_mb']:15.0f} {r['rss_mb']:12.0f}  {step.target}", flush=True)
    out = HERE / "latest.json"
    if argv and out.exists():  # a filtered run updates its steps and keeps the others
        kept = [r for r in json.loads(out.read_text())["steps"] if r["step"] not in {x["step"] for x in rows}]
        order = [f"{m.removeprefix('bench_')}: {s.name}" for m in modules for s in _steps(m)]
        rows = sorted(kept + rows, key=lambda r: order.index(r["step"]) if r["step"] in order else len(order))
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "steps": rows}, indent=2))
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
