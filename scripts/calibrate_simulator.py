#!/usr/bin/env python
"""Refit the simulator on the real subsets and print the results.

1. The count-model constants (library sizes, dispersion trend, abundances) on the Norman 2019
   subset; the result is stored as ``DEFAULT_CALIBRATION`` in
   ``helpers/data/simulation/calibration.py`` so that generating data never needs the real file
   (``tests/test_simulate.py`` checks that a fresh fit still agrees).
2. With ``--mechanisms``: the mechanism parameters (barely expressed genes, heavy-tailed responses,
   dispersion heterogeneity, capacity of doubles) whose simulated twins of each real subset come
   closest to it (:func:`helpers.benchmarks.simulation.fit_mechanisms`, mean Kolmogorov–Smirnov
   distance over the chapter's statistics). The fitted values are written into the presets
   (``helpers/data/simulate.py``) by hand, with a comment.

Usage::

    python scripts/calibrate_simulator.py [--mechanisms] [path/to/norman2019_subset.h5ad]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    from helpers.data import load_dataset
    from helpers.data.simulate import DEFAULT_CALIBRATION, calibrate

    mechanisms = "--mechanisms" in argv
    argv = [a for a in argv if a != "--mechanisms"]
    adata = load_dataset(argv[0] if argv else "norman2019_subset")
    fit = calibrate(adata)
    print("Calibration(")
    for key, value in fit.as_dict().items():
        stored = DEFAULT_CALIBRATION.as_dict()[key]
        note = "" if value == stored else f"  # stored: {stored}"
        print(f"    {key}={value!r},{note}")
    print(")")
    if mechanisms:
        from helpers.benchmarks.simulation import fit_mechanisms
        from helpers.data.simulate import (
            LEGACY_MECHANISMS,
            PRESETS,  # noqa: I001
        )

        for real_name, preset in (("norman2019_subset", "norman_like"), ("mcfaline2023_subset", "replogle_k562_like")):
            real = load_dataset(real_name)
            base = PRESETS[preset].params.with_overrides(**LEGACY_MECHANISMS)
            best, log = fit_mechanisms(real, base)
            start = log.groupby("round").first()
            print(f"\n{real_name} (mechanisms of {preset}): mean KS distance {log['objective'].min():.3f}")
            print(f"  first evaluation (legacy values): {start['objective'].iloc[0]:.3f}")
            for key, value in best.items():
                print(f"  {key} = {value!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
