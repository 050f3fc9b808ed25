"""Simulated screens: time and memory of every preset.

Target (issue 3): the full-size ``replogle_k562_like_full`` (~160,000 cells x 5,000 genes,
1,087 perturbations) generates in under 2 minutes and 4 GB on 2 cores; each book-sized preset
in a few seconds. Run alone with ``python benchmarks/run.py simulate`` or, for the process's
own peak memory, ``/usr/bin/time -v python benchmarks/bench_simulate.py replogle_k562_like_full``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Step  # noqa: E402


def _warm():
    """Load the GO annotations once (cached in the process) so steps time the simulation itself."""
    from helpers.data.simulation.biology import _go_index

    _go_index()


def _generate(name: str):
    def run(_=None):
        from helpers.data.simulate import PRESETS

        adata = PRESETS[name].generate(seed=0)
        assert adata.n_obs > 0
        return adata

    return run


_SMALL = ["norman_like", "adamson_like", "replogle_k562_like", "replogle_rpe1_like", "essential_like"]

STEPS = [Step(f"{name} (book-sized)", _generate(name), _warm, "a few seconds") for name in _SMALL] + [
    Step("replogle_k562_like_full (~160k cells x 5,000 genes)", _generate("replogle_k562_like_full"), _warm, "< 120 s, < 4 GB on 2 cores"),
]


if __name__ == "__main__":
    # e.g. /usr/bin/time -v python benchmarks/bench_simulate.py replogle_k562_like_full
    from helpers.data.simulate import PRESETS

    for name in sys.argv[1:] or _SMALL:
        _warm()
        start = time.perf_counter()
        adata = PRESETS[name].generate(seed=0)
        seconds = time.perf_counter() - start
        nnz = adata.layers["counts"].nnz
        print(
            f"{name}: {adata.n_obs:,} cells x {adata.n_vars:,} genes, {nnz:,} non-zeros "
            f"({nnz / adata.n_obs / adata.n_vars:.1%}), {seconds:.1f} s",
            flush=True,
        )
