"""Published numbers of Systema (Viñas Torné et al., Nature Biotechnology 2025).

doi 10.1038/s41587-025-02777-8; code github.com/mlbio-epfl/systema (fe087c9). Every value
is from METHODS.md section B.5, which names the notebook cell each comes from; values read
off a figure are marked ``≈`` in ``statistic``.

Dataset names: Systema's Adamson and Norman are the GEARS objects, which the registry
downloads as ``adamson2016`` and ``norman2019``. Its Replogle data are **not** the
essential-gene screens of the registry but the genome-wide K562 screen and the RPE1
screen restricted to "strong phenotype" perturbations (``k562_1900_100``,
``rpe1_1900_100``); they and the other datasets keep the paper's names.

Model names: Systema's "non-control mean" (mean of all perturbed training cells) is the
suite's ``mean (cells)``; its "matching mean" is ``matching mean``; the deep-learning
models keep their published names.
"""

from __future__ import annotations

import pandas as pd

PAPER = "Viñas Torné et al. 2025 (Systema), Nature Biotechnology"

#: Systema's dataset columns -> dataset name used in these tables.
DATASETS = {
    "Adamson": "adamson2016",
    "Norman": "norman2019",
    "Repl. K562": "ReplogleK562_gwps",
    "Repl. RPE1": "ReplogleRPE1",
    "Tian a": "TianCRISPRa2021",
    "Tian i": "TianCRISPRi2021",
    "Xu": "XuKinetics2024",
    "Frang. Ctrl": "Frangieh2021_control",
    "Frang. Co-cult": "Frangieh2021_coculture",
    "Frang. IFN": "Frangieh2021_IFN",
}
_ORDER = list(DATASETS.values())

#: The simulated preset of the suite that mimics each of Systema's datasets (shape and
#: systematic variation); the published values are a reference for it, not a target.
SIMULATED_COUNTERPART = {
    "adamson_like": "adamson2016",
    "norman_like": "norman2019",
    "replogle_k562_like": "ReplogleK562_gwps",
    "replogle_rpe1_like": "ReplogleRPE1",
}

_MODELS = {"CPA": "CPA", "GEARS": "GEARS", "scGPT": "scGPT", "scGPT(ft)": "scGPT (fine-tuned)", "Non-ctl mean": "mean (cells)"}

# method -> "Δ/Δ20" per dataset, in the order of DATASETS (benchmark_all.ipynb cell 21)
_PEARSON_VS_CONTROL = {
    "CPA": "0.02/0.11 0.21/0.34 0.06/0.07 0.10/0.21 0.10/0.17 0.24/0.44 0.11/0.23 0.08/0.08 0.08/0.20 0.07/0.12",
    "GEARS": "0.65/0.72 0.41/0.59 0.22/0.31 0.48/0.55 0.31/0.56 0.24/0.45 0.13/0.21 0.03/0.01 0.05/0.07 0.05/0.07",
    "scGPT": "0.69/0.77 0.40/0.44 0.29/0.46 0.52/0.66 0.28/0.55 0.37/0.74 0.18/0.28 0.07/0.39 0.06/0.44 0.05/0.48",
    "scGPT(ft)": "0.62/0.79 0.36/0.47 0.27/0.43 0.51/0.66 0.26/0.62 0.24/0.70 0.22/0.44 0.04/0.48 0.08/0.57 0.06/0.48",
    "Non-ctl mean": "0.70/0.73 0.49/0.52 0.32/0.41 0.55/0.62 0.50/0.70 0.51/0.75 0.32/0.49 0.15/-0.14 0.15/0.13 0.12/-0.03",
}
# (cell 24)
_PEARSON_VS_PERTURBED = {
    "CPA": "0.01/-0.31 0.15/-0.17 0.05/-0.21 0.08/-0.32 0.09/-0.17 0.00/-0.10 0.02/-0.04 -0.01/0.06 -0.01/0.20 -0.02/0.11",
    "GEARS": "0.13/0.03 0.16/0.07 0.00/0.00 0.19/-0.00 -0.05/0.13 -0.00/0.05 0.01/-0.04 0.01/0.08 0.05/0.08 0.03/0.13",
    "scGPT": "0.13/0.36 0.14/-0.01 0.03/0.34 0.08/0.21 0.08/-0.05 0.03/0.21 0.13/0.13 0.08/0.48 0.11/0.44 0.11/0.54",
    "scGPT(ft)": "0.16/0.51 0.11/0.10 0.06/0.32 0.13/0.21 0.03/0.05 0.01/0.25 0.12/0.28 0.03/0.51 0.06/0.58 0.05/0.52",
    "Non-ctl mean": "0.00/0.09 0.10/-0.17 0.06/-0.12 0.08/-0.31 -0.11/0.17 0.01/0.10 0.15/-0.09 0.03/-0.17 0.10/0.12 0.03/-0.06",
}
# (cell 22) all genes / top-20 DE genes
_RMSE = {
    "CPA": "0.10/0.59 0.05/0.51 0.07/0.33 0.12/0.51 0.04/0.19 0.03/0.10 0.01/0.09 0.52/0.57 0.52/0.53 0.53/0.63",
    "GEARS": "0.07/0.38 0.05/0.45 0.07/0.31 0.11/0.39 0.05/0.15 0.04/0.10 0.01/0.09 0.05/0.16 0.04/0.16 0.05/0.17",
    "scGPT": "0.07/0.34 0.05/0.48 0.07/0.29 0.11/0.37 0.03/0.17 0.02/0.09 0.01/0.09 0.04/0.11 0.04/0.14 0.04/0.14",
    "scGPT(ft)": "0.08/0.30 0.06/0.47 0.07/0.29 0.11/0.36 0.04/0.16 0.03/0.09 0.01/0.08 0.05/0.11 0.05/0.14 0.05/0.14",
    "Non-ctl mean": "0.06/0.38 0.05/0.47 0.06/0.31 0.10/0.41 0.03/0.14 0.02/0.09 0.01/0.08 0.04/0.13 0.04/0.16 0.04/0.16",
}

_SUMMARY = "mean over 1-gene test perturbations and seeds 1-3"


def _pairs_table(raw: dict, metrics: tuple[str, str], source: str) -> pd.DataFrame:
    rows = []
    for method, text in raw.items():
        cells = text.split()
        if len(cells) != len(_ORDER):
            raise ValueError(f"{method}: expected {len(_ORDER)} datasets, got {len(cells)}")
        for dataset, cell in zip(_ORDER, cells):
            for metric, value in zip(metrics, cell.split("/")):
                rows.append(
                    {
                        "dataset": dataset,
                        "model": _MODELS[method],
                        "metric": metric,
                        "statistic": _SUMMARY,
                        "value": float(value),
                        "source": source,
                    }
                )
    return pd.DataFrame(rows)


_SV = {
    "Frangieh2021_IFN": 0.16,
    "Frangieh2021_coculture": 0.19,
    "Frangieh2021_control": 0.19,
    "XuKinetics2024": 0.31,
    "ReplogleK562_gwps": 0.32,
    "norman2019": 0.50,
    "TianCRISPRi2021": 0.52,
    "TianCRISPRa2021": 0.53,
    "ReplogleRPE1": 0.56,
    "adamson2016": 0.76,
}
_N_PERTURBATIONS = {"adamson2016": 80, "norman2019": 270, "ReplogleK562_gwps": 1800, "ReplogleRPE1": 1400}

TABLES: dict[str, pd.DataFrame] = {
    "pearson_delta_vs_control": _pairs_table(
        _PEARSON_VS_CONTROL,
        ("pearson_delta_vs_control", "pearson_delta_de20_vs_control"),
        "Systema benchmark_all.ipynb cell 21",
    ),
    "pearson_delta_vs_perturbed_mean": _pairs_table(
        _PEARSON_VS_PERTURBED,
        ("pearson_delta_vs_perturbed_mean", "pearson_delta_de20_vs_perturbed_mean"),
        "Systema benchmark_all.ipynb cell 24",
    ),
    # rmse_de20 (RMSE over the top-20 DE genes) has no counterpart among the suite's metrics.
    "rmse": _pairs_table(_RMSE, ("rmse", "rmse_de20"), "Systema benchmark_all.ipynb cell 22"),
    "systematic_variation": pd.DataFrame(
        [
            {
                "dataset": d,
                "model": "",
                "metric": "systematic_variation",
                "statistic": "≈ mean cosine to the average shift",
                "value": v,
                "n_perturbations": _N_PERTURBATIONS.get(d),
                "source": "Systema figures of cells 12 and 17",
            }
            for d, v in _SV.items()
        ]
    ),
    "correlation": pd.DataFrame(
        [
            {
                "dataset": "10 datasets",
                "model": "method average",
                "metric": "pearson_r(systematic_variation, pearson_delta_vs_control)",
                "statistic": "Pearson r across datasets",
                "value": 0.970,
                "p_value": 3.3e-6,
                "source": "Systema benchmark_all.ipynb cell 11 printout",
            }
        ]
    ),
    "centroid_accuracy": pd.DataFrame(
        [
            {
                "dataset": "ReplogleK562_gwps",
                "model": m,
                "metric": "centroid_accuracy",
                "statistic": "mean ± se over 1,043 test perturbations (predictions averaged over 3 seeds)",
                "value": v,
                "se": se,
                "source": "Systema replogle_gwps_downstream.ipynb cell 45",
            }
            for m, v, se in [("CPA", 0.499, 0.009), ("GEARS", 0.509, 0.009), ("scGPT", 0.534, 0.009), ("scGPT (fine-tuned)", 0.572, 0.009)]
        ]
        + [
            {
                "dataset": "ReplogleK562_gwps",
                "model": "mean (cells)",
                "metric": "centroid_accuracy",
                "statistic": "≈ (dashed line in the figure)",
                "value": 0.50,
                "se": float("nan"),
                "source": "Systema replogle_gwps_downstream.ipynb",
            }
        ]
    ),
    "doubles_by_seen_genes": pd.DataFrame(
        [
            {
                "dataset": "norman2019",
                "context": f"{k} seen",
                "model": m,
                "metric": "pearson_delta_vs_control",
                "statistic": "≈ median over 2-gene test perturbations (figure)",
                "value": v,
                "source": "Systema benchmark_all.ipynb cell 28 figure",
            }
            for k, m, v in [(1, "matching mean", 0.80), (2, "matching mean", 0.93), (0, "CPA", 0.27)]
        ]
    ),
}
# The figure gives only a range (≈0.5–0.65) for GEARS, scGPT and the non-control mean with 0 seen genes.
DOUBLES_ZERO_SEEN_RANGE = (0.5, 0.65)


def systematic_variation_reference() -> pd.DataFrame:
    """Published systematic variation per dataset, with the simulated preset that mimics it."""
    table = TABLES["systematic_variation"][["dataset", "value", "n_perturbations"]].rename(columns={"value": "published"})
    preset = {v: k for k, v in SIMULATED_COUNTERPART.items()}
    table.insert(1, "simulated_counterpart", table["dataset"].map(preset).fillna(""))
    return table.reset_index(drop=True)
