"""Speed and memory of GEARS on the CPU, on the real Norman subset (3,375 cells x 500 genes).

GEARS runs in a worker process of its own environment, so the runner's wall time covers
it but the peak memory it sees is the parent's; each step therefore also prints what the
worker reports (its peak resident memory, time per epoch).

Run with ``python benchmarks/gears_cpu.py`` (not part of ``make bench``, which never builds
``.venv-gears``). The
first step builds ``.venv-gears`` if it is missing (about a minute).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCHS = 3
THREADS = 1  # see GEARSModel's n_threads: one thread is faster on a shared 2-core machine
_state: dict = {}


def _data():
    if "cells" not in _state:
        import anndata as ad

        from helpers.data.canonical import make_canonical, target_genes
        from helpers.data.splits import double_perturbation_split

        path = ROOT / "data" / "norman2019_subset.h5ad"
        if not path.exists():
            path = ROOT.parent / "shared" / "data" / "norman2019_subset.h5ad"
        cells = make_canonical(ad.read_h5ad(path), "condition", "perturbench")
        split = double_perturbation_split(cells, seed=1)
        _state.update(
            cells=cells,
            split=split,
            targets=sorted({g for p in cells.obs["perturbation"].astype(str).unique() for g in target_genes(p)}),
        )
    return _state


def build_environment():
    from helpers.models.gears import ensure_gears_environment

    print(f"GEARS python: {ensure_gears_environment()}")


def fit_double_split():
    from helpers.models.gears import GEARSModel

    s = _data()
    train = s["split"].subset(s["cells"], "train")
    t0 = time.perf_counter()
    model = GEARSModel(epochs=EPOCHS, seed=1, n_threads=THREADS, perturbable_genes=s["targets"]).fit(train)
    wall = time.perf_counter() - t0
    _state["model"] = model
    r = model.resources_
    print(f"training cells: {train.n_obs} x {train.n_vars} genes; {len(model.train_perturbations_)} perturbations")
    print(f"fit wall time {wall:.1f} s: data preparation {r['prepare_seconds']:.1f} s, model + training {r['train_seconds']:.1f} s")
    print("seconds per epoch (training steps + GEARS' evaluation):", ", ".join(f"{x:.1f}" for x in model.history_["seconds"]))
    print(f"worker peak memory (fit): {r['fit_peak_memory_mb']:.0f} MB")


def fit_all_cells():
    """One epoch on every cell of the subset (the setting of the issue's measurement)."""
    from helpers.models.gears import GEARSModel

    s = _data()
    model = GEARSModel(epochs=1, seed=1, n_threads=THREADS).fit(s["cells"])
    r = model.resources_
    print(f"all {model.train_perturbations_.size} usable perturbations, excluded: {model.excluded_}")
    print(f"1 epoch: {model.history_['seconds'].iloc[0]:.1f} s; worker peak memory {r['fit_peak_memory_mb']:.0f} MB")


def predict_evaluated():
    s = _data()
    model = s.get("model")
    if model is None:
        fit_double_split()
        model = _state["model"]
    perts = [str(p) for p in s["split"].evaluated]
    bad = model.unpredictable(perts)
    ok = [p for p in perts if p not in bad]
    t0 = time.perf_counter()
    pred = model.predict(ok)
    r = model.resources_
    print(
        f"predicted {pred.shape[0]} perturbations in {time.perf_counter() - t0:.1f} s wall "
        f"({r['predict_seconds']:.1f} s in GEARS); worker peak memory {r['predict_peak_memory_mb']:.0f} MB; unpredictable: {bad}"
    )


STEPS = [
    ("GEARS: environment ready (builds it once)", build_environment),
    (f"GEARS: fit {EPOCHS} epochs, double split of the Norman subset", fit_double_split),
    ("GEARS: predict the evaluated doubles", predict_evaluated),
    ("GEARS: 1 epoch on all 3,375 cells", fit_all_cells),
]


if __name__ == "__main__":
    for name, step in STEPS:
        print(f"== {name}")
        t = time.perf_counter()
        step()
        print(f"   ({time.perf_counter() - t:.1f} s)")
