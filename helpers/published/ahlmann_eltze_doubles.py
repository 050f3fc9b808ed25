"""Published numbers of the double-perturbation benchmark of Ahlmann-Eltze, Huber & Anders (2025).

Nature Methods 22:1657–1661, doi 10.1038/s41592-025-02772-6; values as collected in
METHODS.md A.5–A.6 (source data sheets ``perturbation_prediction.xlsx`` and
``suppl-pearson_delta_performance.xlsx``, ``suppl-roc_curves.pdf``, ``suppl-qqplot.pdf``,
``double_perturbation_analysis.html``). Dataset: Norman et al. 2019 as distributed by
scFoundation (19,264 genes, 100 singles + 124 doubles), registry name
``norman2019_scfoundation``. Seeds 1–5, 62 test+val doubles per seed (310 rows); metrics
on the 1,000 genes with the highest control mean.

Model names follow the suite where the model is one of ours (``additive``,
``no change``); the others keep the paper's names. The paper marks Geneformer, scBERT and
UCE with * ("repurposed via a linear decoder"). Extra columns: ``seed`` (per-seed
table), ``n_genes`` (cumulative error), ``fdp`` (TPR at a given FDP), ``class`` (GI
classes; the paper's "cryptic" class is the suite's ``opposite``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DATASET = "norman2019_scfoundation"
PAPER = "Ahlmann-Eltze, Huber & Anders, Nature Methods 2025"
_PANEL_A = "source_data/perturbation_prediction.xlsx, Panel A"


def _rows(records: list[dict], source: str, **constant) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    for key, value in constant.items():
        frame[key] = value
    frame["dataset"] = DATASET
    frame["source"] = source
    return frame


# (model, mean L2, median L2, mean PearsonΔ, median PearsonΔ); no change has no PearsonΔ
_L2_PEARSON = [
    ("additive", 2.766, 2.419, 0.892, 0.910),
    ("Geneformer", 3.479, 3.194, 0.773, 0.830),
    ("GEARS", 4.096, 3.783, 0.631, 0.698),
    ("scBERT", 4.279, 4.069, 0.610, 0.688),
    ("UCE", 4.279, 4.070, 0.610, 0.688),
    ("scGPT", 4.616, 4.418, 0.527, 0.585),
    ("scFoundation", 4.722, 4.591, 0.537, 0.593),
    ("no change", 5.617, 5.635, np.nan, np.nan),
    ("CPA", 12.205, 12.348, 0.146, 0.140),
]

l2_pearson = _rows(
    [
        {"model": m, "metric": metric, "statistic": stat, "value": v}
        for m, l2_mean, l2_median, pd_mean, pd_median in _L2_PEARSON
        for metric, stat, v in (
            ("l2", "mean", l2_mean),
            ("l2", "median", l2_median),
            ("pearson_delta_vs_control", "mean", pd_mean),
            ("pearson_delta_vs_control", "median", pd_median),
        )
        if not np.isnan(v)
    ],
    _PANEL_A + "; 62 test+val doubles x 5 seeds = 310 values",
)

l2_per_seed = _rows(
    [
        {"model": m, "seed": seed, "metric": "l2", "statistic": "mean over the seed's 62 test+val doubles", "value": v}
        for m, values in (("additive", (2.833, 2.692, 2.840, 2.555, 2.910)), ("no change", (5.976, 5.529, 5.557, 5.518, 5.503)))
        for seed, v in zip(range(1, 6), values)
    ],
    _PANEL_A,
)

cumulative_l2 = _rows(
    [
        {"model": m, "n_genes": 19264, "metric": "cumulative_l2_by_control_expression", "statistic": "mean over doubles", "value": v}
        for m, v in (
            ("additive", 4.30),
            ("Geneformer", 5.17),
            ("scBERT", 5.98),
            ("UCE", 5.98),
            ("scGPT", 6.32),
            ("GEARS", 6.57),
            ("no change", 7.49),
            ("scFoundation", 12.5),
            ("CPA", 23.95),
        )
    ]
    + [
        {"model": m, "n_genes": 100, "metric": "cumulative_l2_by_control_expression", "statistic": "mean over doubles", "value": v}
        for m, v in (("additive", 0.73), ("no change", 1.39))
    ],
    "suppl-pearson_delta_performance.xlsx, Panel B",
)

# (model, AUPRC mean, AUPRC se, AUROC mean, AUROC se), final version, 5 seeds
_GI = [
    ("no change", 0.33, 0.03, 0.84, 0.01),
    ("scGPT", 0.29, 0.03, 0.81, 0.01),
    ("UCE", 0.29, 0.03, 0.81, 0.01),
    ("scBERT", 0.29, 0.03, 0.81, 0.01),
    ("scFoundation", 0.19, 0.02, 0.72, 0.01),
    ("GEARS", 0.18, 0.02, 0.75, 0.03),
    ("Geneformer", 0.18, 0.02, 0.76, 0.02),
    ("CPA", 0.11, 0.02, 0.66, 0.02),
]

gi_detection = _rows(
    [
        {"model": m, "metric": metric, "statistic": stat, "value": v}
        for m, pr, pr_se, roc, roc_se in _GI
        for metric, stat, v in (
            ("gi_auprc", "mean over 5 seeds", pr),
            ("gi_auprc", "se over 5 seeds", pr_se),
            ("gi_auroc", "mean over 5 seeds", roc),
            ("gi_auroc", "se over 5 seeds", roc_se),
        )
    ],
    "suppl-roc_curves.pdf, final version",
)

gi_tpr_at_fdp = _rows(
    [
        {"model": m, "fdp": fdp, "metric": "gi_tpr_at_fdp", "statistic": "mean of the 5 seeds' interpolated curves", "value": v}
        for fdp, values in (
            (0.5, (0.272, 0.215, 0.216, 0.210, 0.104, 0.061, 0.032, 0.001)),
            (0.8, (0.617, 0.554, 0.555, 0.562, 0.320, 0.362, 0.358, 0.206)),
        )
        for m, v in zip(("no change", "scBERT", "UCE", "scGPT", "scFoundation", "GEARS", "Geneformer", "CPA"), values)
    ],
    "perturbation_prediction.xlsx, Panel C",
)

gi_classes = _rows(
    [
        {"model": "observed data", "class": c, "metric": "gi_pairs", "statistic": "count, seed 1, 124,000 (double, gene) pairs", "value": v}
        for c, v in (("additive", 118965), ("other", 1396), ("buffering", 2878), ("synergy", 761), ("opposite", 0))
    ]
    + [
        {
            "model": "observed data",
            "class": "below lower threshold",
            "metric": "gi_pairs",
            "statistic": "count, 124,000 pairs",
            "value": 1408,
        },
        {
            "model": "observed data",
            "class": "above upper threshold",
            "metric": "gi_pairs",
            "statistic": "count, 124,000 pairs",
            "value": 3627,
        },
    ],
    "source data 'Panel E' and suppl-qqplot.pdf; 'cryptic' is the suite's 'opposite'",
)

gi_null_v1 = _rows(
    [
        {"model": "observed data", "metric": metric, "statistic": "v1 (bioRxiv): locfdr on the 5-seed pool", "value": v}
        for metric, v in (
            ("gi_null_delta", 0.00677),
            ("gi_null_sigma", 0.0576),
            ("gi_null_p0", 0.827),
            ("gi_lower_threshold", -0.2049),
            ("gi_upper_threshold", 0.1948),
        )
    ],
    "double_perturbation_analysis.html v1; the final version's thresholds are not published",
)

TABLES = {
    "double_l2_pearson": l2_pearson,
    "double_l2_per_seed": l2_per_seed,
    "double_cumulative_l2": cumulative_l2,
    "gi_detection": gi_detection,
    "gi_tpr_at_fdp": gi_tpr_at_fdp,
    "gi_classes": gi_classes,
    "gi_null_v1": gi_null_v1,
}
