"""The declared parameters of the book's pages that are not benchmark chapters.

A benchmark chapter declares its parameters in its module of :mod:`helpers.benchmarks`
(``PARAMETERS``); every other notebook's are here, in :data:`SCHEMAS`, so that each notebook
has exactly one declared schema (:func:`helpers.book.runner.notebook_schema`). The runner
checks the values given on the command line against it before any work, and the book's rerun
page shows it (``tests/test_params.py`` keeps each schema equal to its notebook's
``parameters`` cell).

It also declares the book's chapter *variants* (:data:`VARIANTS`): a chapter notebook executed a
second time with other parameters into a page of its own (e.g. the double-perturbation chapter on
the real Norman subset), listed in ``_toc.yml`` under its chapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.simulate import PRESETS
from ..params import SEED_MAX, Param, Schema

_PRESETS = tuple(PRESETS)

SCHEMAS: dict[str, Schema] = {
    "data": Schema(
        (
            Param("dataset", "str", "norman2019_subset", "registry name (python -m helpers datasets) or path to an .h5ad file"),
            Param("n_heatmap_genes", "int", 30, "genes shown in the heatmap of doubles next to their singles", minimum=1, maximum=500),
        )
    ),
    "datasets": Schema(()),
    "methods_bounds": Schema(
        (
            Param("seed", "int", 0, "seed of the toy data and of the cells of the simulated screens", minimum=0, maximum=SEED_MAX),
            Param("preset", "str", "replogle_rpe1_like", "simulated screen (python -m helpers datasets)", choices=_PRESETS),
            Param("reference_preset", "str", "replogle_k562_like", "other cell line: the linear model's embedding", choices=_PRESETS),
            Param("scale", "float", 0.1, "share of the preset's perturbations kept; 0.1 gives 30 singles", minimum=0.01, maximum=10),
        )
    ),
    "methods_data": Schema(
        (Param("seed", "int", 0, "seed of the simulated screen and of the random draws in this chapter", minimum=0, maximum=SEED_MAX),)
    ),
    "methods_models_metrics": Schema(
        (Param("seed", "int", 0, "seed of the random toy screen used for the metrics", minimum=0, maximum=SEED_MAX),)
    ),
    "performance": Schema(()),
    "rerun": Schema(()),
    "scoreboard": Schema((Param("results_dir", "path", ".", "folder with the chapters' *.results.csv (default: this run of the book)"),)),
    "simulation": Schema(
        (
            Param("preset", "str", "norman_like", "simulated preset shown side by side with the real cells", choices=_PRESETS),
            Param("seed", "int", 0, "seed of the simulated cells", minimum=0, maximum=SEED_MAX),
            Param("real_dataset", "str", "norman2019_subset", "real screen to compare with (needs obs['ncounts'])"),
            Param(
                "realism_presets",
                "strs",
                "norman_like,adamson_like,replogle_k562_like,replogle_rpe1_like",
                "presets checked against published numbers (names separated by commas)",
                choices=_PRESETS,
                sep=",",
            ),
            Param(
                "split_seed",
                "int",
                1,
                "seed of the GEARS / double-perturbation split used by the realism checks",
                minimum=0,
                maximum=SEED_MAX,
            ),
            Param(
                "twin_datasets",
                "strs",
                ["norman2019_subset", "mcfaline2023_subset"],
                "real subsets compared statistic by statistic with simulated twins",
                nonempty=True,
            ),
            Param("twin_seeds", "ints", [0], "seeds of the simulated twins", minimum=0, maximum=SEED_MAX, nonempty=True),
        )
    ),
}


@dataclass(frozen=True)
class Variant:
    """A chapter executed once more, with ``parameters``, into ``book/<page>.ipynb``.

    The notebook derives its results file from its dataset (:func:`helpers.results.results_name`),
    so a variant on another dataset writes ``<notebook>-<dataset>.results.csv`` beside the
    chapter's own results; ``why`` says in one line what the variant is for.
    """

    page: str
    notebook: str
    parameters: dict = field(default_factory=dict)
    why: str = ""


#: The variants `make book` executes besides every notebook on its defaults. Parameters are
#: chosen so that the real subsets run in about a minute each (see each page for what the data
#: can and cannot show).
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "double_perturbations_norman2019",
        "double_perturbations",
        {"dataset": "norman2019_subset"},
        "the double-perturbation benchmark on the real Norman subset (the chapter's default seeds 1-5, all its models)",
    ),
    Variant(
        "systema_mcfaline2023",
        "systema",
        {"dataset": "mcfaline2023_subset", "score_datasets": [], "seeds": [1, 2, 3], "run_sweep": False},
        "Systema on the real McFaline-Figueroa subset: systematic variation of every cell line, the two references, "
        "mode collapse and calibration (the simulated sweep and the simulated screens' scores are on the chapter's page)",
    ),
    Variant(
        "progress_bars_mcfaline2023",
        "progress_bars",
        {
            "dataset": "mcfaline2023_subset",
            "n_folds": 3,
            "inner_folds": 3,
            "knn_k": [1, 2, 3, 4],
            "heads": ["knn", "lasso"],
        },
        "the progress bars of the three real glioblastoma lines (9 perturbations each: leave-one-out outer folds, 4 inner folds, small k)",
    ),
)

__all__ = ["SCHEMAS", "VARIANTS", "Variant"]
