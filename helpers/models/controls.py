"""Calibration controls: predictions whose quality is known before any model is trained.

Miller et al. (2025, bioRxiv 10.1101/2025.10.20.683304) ask of every metric
whether it separates a prediction that is as good as the data allow from one that knows
nothing about the perturbation. They build four predictions for that:

* **technical duplicate** (positive control): each evaluated perturbation's cells are
  shuffled and halved; the mean of the *first* half is the ground truth, the mean of the
  *second* half is the prediction. It differs from the truth only by sampling noise, so
  no model can be expected to do better.
* **interpolated duplicate** (positive control): per gene
  :math:`\\hat x_g = \\alpha_g\\, x^{dup}_g + (1 - \\alpha_g)\\, \\bar x^{mean}_g` with
  :math:`\\alpha_g = 1 - p^{adj}_g`, the BH-adjusted p-value of the gene in the
  perturbation's DE test on the first-half cells. Genes that are clearly changed keep the
  duplicate's value, the rest fall back to the dataset mean: a duplicate with its noise on
  unchanged genes removed.
* **mean** (negative control): the dataset mean, the perturbation-weighted mean of the
  training perturbations' profiles (Miller et al.'s ``split_mean_baseline``).
* **no change** (negative control): the control mean for every perturbation.

All four are evaluated against the same ground truth, the first halves. This module is a
function API (the positive controls read the held-out cells by construction, which the
``fit(train)``/``predict`` interface of :mod:`helpers.models.base` forbids):

>>> controls = calibration_controls(adata, split.test, split.train, seed=1)  # doctest: +SKIP
>>> per_pert = {name: evaluate(pred, controls.truth, controls.control, controls.perturbed_mean)
...             for name, pred in controls.predictions.items()}               # doctest: +SKIP

**How the DE test differs from Miller et al.** They run
``scanpy.tl.rank_genes_groups(method="t-test_overestim_var", reference="rest")``: each
condition's first-half cells against *all other cells* (perturbed and control), with the
group's variance computed as if the group were as large as the rest (which overestimates it,
a conservative test). Here the test is a Welch two-sample t-test of the first-half cells
against the **control** cells, with each group's own unbiased variance and
Welch–Satterthwaite degrees of freedom (:func:`welch_t_test`), and the Benjamini–Hochberg
adjustment over the genes of each perturbation (:func:`benjamini_hochberg`). Against
control, the shift shared by all perturbations (systematic variation) counts as
differential expression; against the rest it largely cancels. So here more genes keep the
duplicate's value, and the interpolated duplicate sits closer to the technical duplicate
than in Miller et al.

Miller et al.'s own test is available too: :func:`welch_t_test` with ``reference="rest"``
and ``overestimate_variance=True`` reproduces scanpy's ``t-test_overestim_var``, and
:func:`miller_t_scores` applies it for the DEG weights of the weighted metrics
(``CalibrationControls.miller_t_scores``).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..data.pseudobulk import control_profile, profiles
from ..errors import DataError
from ..stats.de import benjamini_hochberg, miller_t_scores, welch_t_test

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Model names of the calibration controls in result tables.
TECHNICAL_DUPLICATE = "technical duplicate"
INTERPOLATED_DUPLICATE = "interpolated duplicate"
MEAN = "mean (perturbations)"
NO_CHANGE = "no change"
POSITIVE_CONTROLS = (TECHNICAL_DUPLICATE, INTERPOLATED_DUPLICATE)
NEGATIVE_CONTROLS = (MEAN, NO_CHANGE)


def _stream(seed: int, perturbation: str) -> np.random.Generator:
    """Random stream of one perturbation: depends on the seed and its name only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(perturbation.encode("utf-8"))]))


@dataclass
class Halves:
    """Result of :func:`split_halves`.

    ``first`` and ``second`` are canonical screens holding each halved perturbation's
    first and second half and, in both, all control cells. ``n_cells`` counts the cells of
    each half; ``excluded`` maps perturbations that could not be halved to the reason;
    ``first_rows`` and ``second_rows`` are the positions in the original screen of the
    halved perturbations' cells (control cells not included).
    """

    first: AnnData
    second: AnnData
    n_cells: pd.DataFrame
    excluded: dict[str, str] = field(default_factory=dict)
    first_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    second_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def split_halves(adata: AnnData, seed: int, perturbations: Sequence[str] | None = None) -> Halves:
    """Shuffle each perturbation's cells (seeded) and cut them in two halves.

    For a perturbation with :math:`n` cells, a random permutation (its own stream, seeded
    by ``seed`` and the perturbation's name, so it does not depend on which other
    perturbations are halved) puts the first :math:`\\lceil n/2 \\rceil` cells in the first
    half (the ground truth) and the other :math:`\\lfloor n/2 \\rfloor` in the second half
    (the technical duplicate). Control cells are not halved: both halves keep all of them,
    since the control mean is the shared reference of every metric.

    Parameters
    ----------
    adata
        Canonical screen of cells (with control cells).
    seed
        Seed of the shuffles.
    perturbations
        Perturbations to halve (default: every non-control perturbation).

    Returns
    -------
    Halves
        Perturbations with fewer than 2 cells cannot be halved; they are listed in
        ``excluded`` (never dropped silently) and left out of both halves.
    """
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    present = pd.unique(labels)
    if CONTROL not in set(present):
        raise DataError("the screen has no control cells; the calibration controls need them as reference.")
    if perturbations is None:
        perturbations = sorted(p for p in present if p != CONTROL)
    perturbations = [str(p) for p in perturbations]
    if CONTROL in perturbations:
        raise DataError("'control' cannot be halved as a perturbation; list perturbations only.")
    missing = sorted(set(perturbations) - set(present))
    if missing:
        raise DataError(f"{len(missing)} perturbations have no cells in the screen (e.g. {missing[:5]}).")
    codes, names = pd.factorize(labels)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names)))])
    rows = {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    control_rows = rows[CONTROL]
    first_rows, second_rows, counts, excluded = [], [], {}, {}
    for p in perturbations:
        cells = rows[p]
        if cells.size < 2:
            excluded[p] = f"only {cells.size} cell; a technical duplicate needs at least 2"
            continue
        shuffled = cells[_stream(seed, p).permutation(cells.size)]
        k = (cells.size + 1) // 2
        first_rows.append(np.sort(shuffled[:k]))
        second_rows.append(np.sort(shuffled[k:]))
        counts[p] = (k, cells.size - k)
    if not counts:
        raise DataError("no perturbation has at least 2 cells; nothing can be halved.")
    if excluded:
        logger.warning("split_halves: %d perturbations could not be halved: %s", len(excluded), excluded)
    first_rows, second_rows = np.concatenate(first_rows), np.concatenate(second_rows)
    first = adata[np.concatenate([control_rows, first_rows])].copy()
    second = adata[np.concatenate([control_rows, second_rows])].copy()
    n_cells = pd.DataFrame.from_dict(counts, orient="index", columns=["first_half", "second_half"])
    n_cells.index.name = "perturbation"
    return Halves(first, second, n_cells, excluded, first_rows, second_rows)


def interpolated_duplicate(duplicate: pd.DataFrame, mean: pd.Series, p_adj: pd.DataFrame) -> pd.DataFrame:
    """Miller et al.'s interpolated duplicate: :math:`\\alpha_g x^{dup}_g + (1-\\alpha_g) \\bar x_g`, :math:`\\alpha_g = 1 - p^{adj}_g`.

    Parameters
    ----------
    duplicate
        Perturbations x genes technical-duplicate profiles (second halves).
    mean
        The dataset mean profile (Series indexed by gene).
    p_adj
        Perturbations x genes adjusted p-values of the first-half DE test; genes or
        perturbations missing from it get :math:`p = 1` (:math:`\\alpha = 0`).
    """
    genes = duplicate.columns
    missing_genes = genes.difference(mean.index)
    if len(missing_genes):
        raise DataError(f"the mean profile lacks {len(missing_genes)} genes of the duplicate (e.g. {missing_genes[:5].tolist()}).")
    alpha = 1.0 - p_adj.reindex(index=duplicate.index, columns=genes).fillna(1.0).to_numpy(dtype=np.float64)
    m = mean.reindex(genes).to_numpy(dtype=np.float64)
    values = alpha * duplicate.to_numpy(dtype=np.float64) + (1.0 - alpha) * m
    return pd.DataFrame(values, index=duplicate.index.copy(), columns=genes.copy())


@dataclass
class CalibrationControls:
    """Everything a calibration analysis needs, from :func:`calibration_controls`.

    Attributes
    ----------
    truth
        Ground truth: first-half profiles of the evaluated perturbations (perturbations x genes).
    predictions
        Model name -> perturbations x genes prediction: ``"technical duplicate"``,
        ``"interpolated duplicate"``, ``"mean (perturbations)"``, ``"no change"``.
    control, perturbed_mean
        Reference profiles: control mean of all control cells of the training data, and the
        mean of the training perturbations' profiles (perturbation-weighted).
    t_scores, p_adj
        Welch t statistics and BH-adjusted p-values of the first halves against control
        (p_adj: the interpolation weights; t: one choice of input for
        :func:`helpers.metrics.deg_weights`).
    miller_t_scores
        :func:`miller_t_scores` of the first halves against every other cell of the screen
        except the second halves (Miller et al.'s source of DEG weights).
    halves
        The :class:`Halves` (``halves.first`` holds the ground-truth cells, e.g. for
        :func:`helpers.metrics.de_gene_sets`).
    excluded
        Evaluated perturbations left out, with the reason.
    """

    truth: pd.DataFrame
    predictions: dict[str, pd.DataFrame]
    control: pd.Series
    perturbed_mean: pd.Series
    t_scores: pd.DataFrame
    p_adj: pd.DataFrame
    miller_t_scores: pd.DataFrame
    halves: Halves
    excluded: dict[str, str]

    @property
    def perturbations(self) -> pd.Index:
        return self.truth.index


def calibration_controls(
    adata: AnnData, perturbations: Sequence[str], train_perturbations: Sequence[str], seed: int
) -> CalibrationControls:
    """Build the four calibration controls of Miller et al. for the evaluated perturbations.

    1. :func:`split_halves` halves each evaluated perturbation's cells (``seed``); the
       first-half profiles are the ground truth.
    2. technical duplicate = second-half profiles;
    3. mean = :math:`\\frac{1}{|T|}\\sum_{q \\in T} \\bar x_q` over the training perturbations
       ``T`` (all their cells), the same profile as the perturbed-mean reference;
    4. no change = control mean (all control cells);
    5. interpolated duplicate from the Welch t-test + BH of the first halves against
       control (see the module docstring for how this differs from Miller et al.).

    Parameters
    ----------
    adata
        Canonical screen of cells (one context).
    perturbations
        Evaluated perturbations (e.g. the test singles of a split).
    train_perturbations
        Training perturbations, for the mean; must not overlap ``perturbations``.
    seed
        Seed of the halving.
    """
    perturbations = [str(p) for p in perturbations]
    train = [str(p) for p in train_perturbations if str(p) != CONTROL]
    overlap = sorted(set(perturbations) & set(train))
    if overlap:
        raise DataError(f"{len(overlap)} evaluated perturbations are also training perturbations (e.g. {overlap[:5]}).")
    if not train:
        raise DataError("the mean negative control needs training perturbations; train_perturbations is empty.")
    if not perturbations:
        raise DataError("no perturbations to evaluate.")
    labels = adata.obs["perturbation"].astype(str)
    missing_train = sorted(set(train) - set(labels.unique()))
    if missing_train:
        raise DataError(f"{len(missing_train)} training perturbations have no cells (e.g. {missing_train[:5]}).")
    train_cells = adata[labels.isin(set(train) | {CONTROL}).to_numpy()]
    control = control_profile(train_cells).rename("control")
    train_profiles = profiles(train_cells, include_control=False).loc[train]
    mean = pd.Series(train_profiles.to_numpy().mean(axis=0), index=train_profiles.columns.copy(), name="perturbed_mean")

    halves = split_halves(adata, seed, perturbations)
    kept = [p for p in perturbations if p not in halves.excluded]
    truth = profiles(halves.first, include_control=False).loc[kept]
    duplicate = profiles(halves.second, include_control=False).loc[kept]
    test = welch_t_test(halves.first)
    t_scores = test.t.loc[kept]
    # Miller et al.'s DEG weights: each first half against all other cells except the second halves
    without_second = np.ones(adata.n_obs, dtype=bool)
    without_second[halves.second_rows] = False
    miller_t = miller_t_scores(adata[without_second], kept)
    p_adj = benjamini_hochberg(test.p.loc[kept])
    genes = truth.columns

    def repeat(profile: pd.Series) -> pd.DataFrame:
        return pd.DataFrame(np.tile(profile.reindex(genes).to_numpy(), (len(kept), 1)), index=truth.index.copy(), columns=genes.copy())

    predictions = {
        TECHNICAL_DUPLICATE: duplicate,
        INTERPOLATED_DUPLICATE: interpolated_duplicate(duplicate, mean, p_adj),
        MEAN: repeat(mean),
        NO_CHANGE: repeat(control),
    }
    return CalibrationControls(
        truth=truth,
        predictions=predictions,
        control=control,
        perturbed_mean=mean,
        t_scores=t_scores,
        p_adj=p_adj,
        miller_t_scores=miller_t,
        halves=halves,
        excluded=dict(halves.excluded),
    )
