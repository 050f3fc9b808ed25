"""What a benchmark step is: a timed callable, optionally with an untimed setup and a target.

A ``benchmarks/bench_<topic>.py`` module defines ``STEPS``, a list of :class:`Step` (or plain
``(name, callable)`` tuples). ``benchmarks/run.py`` runs every step in a fresh process and
reports the wall time of ``run`` and the peak memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    name: str
    run: Callable[..., Any]
    setup: Callable[[], Any] | None = None
    target: str = ""
