#!/usr/bin/env python
"""Refit the simulator's count-model constants on the real Norman 2019 subset and print them.

The result is stored as ``DEFAULT_CALIBRATION`` in ``helpers/data/simulation/calibration.py``
so that generating data never needs the real file; ``tests/test_simulate.py`` checks that a
fresh fit still agrees. Usage::

    python scripts/calibrate_simulator.py [path/to/norman2019_subset.h5ad]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    from helpers.data import load_dataset
    from helpers.data.simulate import DEFAULT_CALIBRATION, calibrate

    adata = load_dataset(argv[0] if argv else "norman2019_subset")
    fit = calibrate(adata)
    print("Calibration(")
    for key, value in fit.as_dict().items():
        stored = DEFAULT_CALIBRATION.as_dict()[key]
        note = "" if value == stored else f"  # stored: {stored}"
        print(f"    {key}={value!r},{note}")
    print(")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
