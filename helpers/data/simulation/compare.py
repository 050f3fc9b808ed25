"""Side-by-side statistics of real and simulated screens, and the realism checks of the presets.

Used by the book chapter "Simulated screens" (``notebooks/simulation.ipynb``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import roots_hermitenorm

from ..canonical import CONTROL, DataError
from .calibration import gene_statistics, recover_counts


def counts_of(adata) -> sp.csr_matrix:
    """UMI counts of a screen: ``layers['counts']`` or, for log-normalised files, recovered from ``X``."""
    if "counts" in adata.layers:
        return sp.csr_matrix(adata.layers["counts"])
    return recover_counts(adata)


def count_statistics(adata, perturbation: str = CONTROL) -> pd.DataFrame:
    """Per-gene UMI statistics of the cells of one perturbation (default: control).

    Columns ``mean``, ``variance``, ``fraction_zero`` and ``dispersion`` (method of moments with
    library-size offsets, see :func:`~.calibration.gene_statistics`), indexed by gene.
    """
    mask = adata.obs["perturbation"].astype(str).to_numpy() == perturbation
    if not mask.any():
        raise DataError(f"no cells of {perturbation!r}")
    counts = counts_of(adata)[np.flatnonzero(mask)]
    library = adata.obs["ncounts"].to_numpy()[mask] if "ncounts" in adata.obs else None
    stats = gene_statistics(counts, None, library)
    stats.index = adata.var_names.copy()
    return stats


def expected_zero_fraction(mean, dispersion, library_log_sd: float) -> np.ndarray:
    """Fraction of zeros of NB genes with cell-to-cell library variation.

    ``E_ℓ[(1 + φ ℓ μ)^(−1/φ)]`` with log-normal ``ℓ`` (mean 1, SD ``library_log_sd`` on the log
    scale), by Gauss–Hermite quadrature.
    """
    mean = np.asarray(mean, dtype=np.float64)
    phi = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), mean.shape)
    z, w = roots_hermitenorm(20)
    w = w / w.sum()
    out = np.zeros(mean.shape)
    for zi, wi in zip(z, w):
        ell = np.exp(library_log_sd * zi - 0.5 * library_log_sd**2)
        out += wi * (1.0 + phi * ell * mean) ** (-1.0 / phi)
    return out


def realism_summary(adata, dataset: str, split_seed: int = 1, n_genes: int = 1000) -> pd.DataFrame:
    """Statistics that the published benchmarks report, computed on one screen.

    * ``systematic_variation``: Systema's score on all perturbations (estimated changes);
    * ``pearson_delta_vs_control`` of the mean baseline (average of the training profiles and
      the control, Ahlmann-Eltze et al.) on the test and validation singles of the GEARS
      simulation split (seed ``split_seed``), over the ``n_genes`` genes most expressed in control;
    * for screens with doubles, the same metric and ``l2`` of the additive baseline and of "no
      change" on the doubles of the double-perturbation split.

    Returns a tidy frame (``dataset, seed, model, perturbation, metric, value``) with one row per
    evaluated perturbation (``perturbation = "all"`` for the dataset-level score).
    """
    from ...metrics import l2, pearson_delta_vs_control, systematic_variation
    from ...models.baselines import Additive, MeanBaseline, NoChange
    from ...results import tidy
    from ..genesets import top_expressed_genes
    from ..pseudobulk import changes, profiles
    from ..splits import double_perturbation_split, gears_simulation_split

    rows = []
    score = systematic_variation(changes(adata)).score
    rows.append(pd.DataFrame({"dataset": [dataset], "seed": [split_seed], "model": ["(data)"], "perturbation": ["all"],
                              "metric": ["systematic_variation"], "value": [score]}))
    genes = top_expressed_genes(adata, min(n_genes, adata.n_vars))
    prof = profiles(adata)
    control = prof.loc[CONTROL, genes]
    perts = adata.obs["perturbation"].astype(str)
    singles = sorted(p for p in perts.unique() if p != CONTROL and "+" not in p)
    split = gears_simulation_split(singles, seed=split_seed)
    train = adata[perts.isin(set(split.train) | {CONTROL}).to_numpy()]
    model = MeanBaseline(include_control=True).fit(train)
    evaluated = list(split.evaluated)
    pred = model.predict(evaluated)[genes]
    truth = prof.loc[evaluated, genes]
    rows.append(tidy(pearson_delta_vs_control(pred, truth, control), "pearson_delta_vs_control", dataset=dataset, seed=split_seed, model="mean"))
    doubles = sorted(p for p in perts.unique() if "+" in p)
    if len(doubles) >= 2:
        dsplit = double_perturbation_split(singles + doubles, seed=split_seed)
        dtrain = adata[perts.isin(set(dsplit.train) | {CONTROL}).to_numpy()]
        targets = list(dsplit.evaluated)
        dtruth = prof.loc[targets, genes]
        for name, m in (("additive", Additive()), ("no change", NoChange())):
            fitted = m.fit(dtrain)
            dpred = fitted.predict(targets)[genes]
            rows.append(tidy(l2(dpred, dtruth), "l2", dataset=dataset, seed=split_seed, model=name))
            if name != "no change":
                rows.append(tidy(pearson_delta_vs_control(dpred, dtruth, control), "pearson_delta_vs_control",
                                 dataset=dataset, seed=split_seed, model=name))
    return pd.concat(rows, ignore_index=True)


#: Published values to compare with (METHODS.md A.6 and B.5): systematic variation (Systema) and
#: the mean baseline's PearsonΔ (Ahlmann-Eltze et al., test+val perturbations of two splits).
PUBLISHED = pd.DataFrame(
    [
        ("norman_like", "systematic_variation", 0.50, "Systema, Norman 2019"),
        ("adamson_like", "systematic_variation", 0.76, "Systema, Adamson 2016"),
        ("replogle_k562_like", "systematic_variation", 0.32, "Systema, Replogle K562"),
        ("replogle_rpe1_like", "systematic_variation", 0.56, "Systema, Replogle RPE1"),
        ("adamson_like", "pearson_delta_vs_control (mean)", 0.724, "Ahlmann-Eltze et al., Adamson"),
        ("replogle_k562_like", "pearson_delta_vs_control (mean)", 0.408, "Ahlmann-Eltze et al., K562"),
        ("replogle_rpe1_like", "pearson_delta_vs_control (mean)", 0.678, "Ahlmann-Eltze et al., RPE1"),
        ("norman_like", "pearson_delta_vs_control (additive, doubles)", 0.892, "Ahlmann-Eltze et al., Norman doubles"),
        ("norman_like", "l2 (additive, doubles)", 2.766, "Ahlmann-Eltze et al., Norman doubles"),
        ("norman_like", "l2 (no change, doubles)", 5.617, "Ahlmann-Eltze et al., Norman doubles"),
    ],
    columns=["dataset", "statistic", "published", "source"],
)


def summarise_realism(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of :func:`realism_summary` rows per dataset and statistic, next to the published value."""
    frame = frame.copy()
    is_double = frame["perturbation"].str.contains(r"\+", regex=True)
    label = frame["metric"] + np.where(frame["model"] == "(data)", "", " (" + frame["model"] + np.where(is_double, ", doubles", "") + ")")
    frame["statistic"] = label
    out = frame.groupby(["dataset", "statistic"], sort=False)["value"].mean().rename("simulated").reset_index()
    return out.merge(PUBLISHED, on=["dataset", "statistic"], how="left")


def error_by_cells(adata, cells, control_ratio: float = 10.0, seed: int = 0, context: str | None = None) -> pd.DataFrame:
    """RMS error of estimated changes against :func:`true_changes` when only ``n`` cells are used.

    For each ``n`` in ``cells``, ``n`` cells of every perturbation and ``control_ratio · n``
    control cells are drawn without replacement (seeded), and the RMS over perturbations and
    genes of ``Δ̂ − Δ`` is reported. Needs at least ``max(cells)`` cells per perturbation.
    """
    from ..pseudobulk import changes
    from .screen import true_changes

    truth = true_changes(adata, context)
    perts = adata.obs["perturbation"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    order = {p: rng.permutation(np.flatnonzero(perts == p)) for p in [CONTROL, *truth.index]}
    rows = []
    for n in cells:
        n_ctrl = int(round(control_ratio * n))
        if len(order[CONTROL]) < n_ctrl or min(len(order[p]) for p in truth.index) < n:
            raise DataError(f"not enough cells for {n} per perturbation and {n_ctrl} controls")
        keep = np.concatenate([order[CONTROL][:n_ctrl]] + [order[p][:n] for p in truth.index])
        est = changes(adata[np.sort(keep)]).loc[truth.index, truth.columns]
        rows.append({"cells": n, "control_cells": n_ctrl, "rms_error": float(np.sqrt(((est - truth) ** 2).to_numpy().mean()))})
    return pd.DataFrame(rows)


def additivity_table(adata, genes=None) -> pd.DataFrame:
    """Estimated and true deviation from additivity of every double, per gene.

    ``estimated = Δ̂_AB − Δ̂_A − Δ̂_B`` from the cells (pseudobulk changes), ``true`` the same
    from :func:`true_changes`; ``label`` from :func:`interaction_labels` (``"additive"`` for
    genes not listed). Doubles whose singles are not both in the screen are left out.
    """
    from ..pseudobulk import changes
    from .screen import interaction_labels, true_changes

    truth = true_changes(adata)
    est = changes(adata)
    genes = list(truth.columns) if genes is None else list(genes)
    doubles = [p for p in truth.index if "+" in p and all(g in est.index for g in p.split("+")) and p in est.index]
    frames = []
    for d in doubles:
        a, b = d.split("+")
        frames.append(pd.DataFrame({
            "perturbation": d,
            "gene": genes,
            "estimated": (est.loc[d, genes] - est.loc[a, genes] - est.loc[b, genes]).to_numpy(),
            "true": (truth.loc[d, genes] - truth.loc[a, genes] - truth.loc[b, genes]).to_numpy(),
        }))
    table = pd.concat(frames, ignore_index=True)
    labels = interaction_labels(adata)[["perturbation", "gene", "label", "source"]]
    table = table.merge(labels, on=["perturbation", "gene"], how="left")
    table["label"] = table["label"].fillna("additive")
    table["source"] = table["source"].fillna("")
    return table
