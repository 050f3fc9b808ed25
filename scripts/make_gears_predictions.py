"""Train GEARS on the chapters' own splits and write the predictions the book ships (``data/gears/``).

    python scripts/make_gears_predictions.py                 # everything the book needs (hours on 2 cores)
    python scripts/make_gears_predictions.py --dataset norman2019_subset --seeds 1
    python scripts/make_gears_predictions.py --status        # which shipped files still match their screens
    python scripts/make_gears_predictions.py --check         # regenerate the CI file and compare (a few minutes)
    python scripts/make_gears_predictions.py --dataset norman2019_subset --seeds 1 --out data/gears_references/<cpu>
                                                             # a reference for a CPU model CI has not seen

GEARS' environment is built on first use (``python -m helpers.models.gears build``; 1.8 GB;
``$GEARS_ENV_DIR`` moves it). Everything is done by :mod:`helpers.benchmarks.gears_predictions`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.benchmarks.gears_predictions import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
