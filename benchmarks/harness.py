"""What a benchmark step is: a timed callable, optionally with an untimed setup and a target.

A ``benchmarks/bench_<topic>.py`` module defines ``STEPS``, a list of :class:`Step` (or plain
``(name, callable)`` tuples). ``benchmarks/run.py`` runs every step in a fresh process and
reports the wall time of ``run`` and the peak memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    name: str
    run: Callable[..., Any]
    setup: Callable[[], Any] | None = None
    target: str = ""


def run_steps(steps: Sequence[Step], width: int = 75) -> None:
    """Run each step in this process (setup untimed) and print its wall time beside its target.

    For ``python benchmarks/bench_<topic>.py`` by hand; ``benchmarks/run.py`` is the measurement.
    """
    print(f"{'step':{width}s} {'wall s':>8s}")
    for step in steps:
        value = step.setup() if step.setup else None
        start = time.perf_counter()
        step.run(value) if step.setup else step.run()
        print(f"{step.name:{width}s} {time.perf_counter() - start:8.2f}  {step.target}")
