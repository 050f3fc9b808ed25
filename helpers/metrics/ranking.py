"""Metrics that ask whether a prediction is closer to its own truth than to the others.

These compare every prediction with every observed profile (an N x N table of distances
or similarities), so a model that predicts the same profile for all perturbations ("mode
collapse", e.g. the mean baseline) scores at chance (≈0.5) even when its error is small.
They are computed with matrix algebra in blocks of perturbations (memory ∝ block x N).

Ties are resolved deterministically by *average rank*: a competitor at exactly the same
distance as the true match counts as half better, half worse. Distances that differ by
less than :data:`TIE_RTOL` of their scale (float rounding of the matrix products) are
ties. So identical predictions (mode collapse) give exactly 0.5 instead of a number that
depends on a random shuffle or on the order of the perturbations.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from ..data.canonical import target_genes
from ..errors import DataError
from ._inputs import Aligned, _as_frame, _check_numeric, _examples, align

logger = logging.getLogger(__name__)

#: Relative tolerance under which two distances (or similarities) count as tied.
TIE_RTOL = 1e-10

#: Largest number of entries of one block of the N x N table (bounds memory at ~32 MB).
BLOCK_ENTRIES = 2**22


def _blocks(n_anchor: int, n_candidates: int):
    size = max(1, min(n_anchor, BLOCK_ENTRIES // max(1, n_candidates)))
    for start in range(0, n_anchor, size):
        yield np.arange(start, min(start + size, n_anchor))


def _closer_and_tied(score: np.ndarray, self_col: np.ndarray, atol: np.ndarray, lower_is_closer: bool):
    """For each anchor row: how many other candidates are closer than, and tied with, its own match.

    ``score`` is anchors x candidates; ``self_col[i]`` is the column of row i's true match;
    ``atol[i]`` the tie tolerance of row i.
    """
    rows = np.arange(score.shape[0])
    own = score[rows, self_col][:, None]
    diff = score - own if lower_is_closer else own - score  # negative = closer than own match
    tol = atol[:, None]
    closer = diff < -tol
    tied = np.abs(diff) <= tol
    tied[rows, self_col] = False
    closer[rows, self_col] = False
    return closer.sum(axis=1).astype(np.float64), tied.sum(axis=1).astype(np.float64)


def _squared_distance_keys(A: np.ndarray, C: np.ndarray, C_sq: np.ndarray):
    """``|C_q|² − 2 A_i·C_q`` (squared Euclidean distance minus the row constant |A_i|²) and its scale."""
    keys = C_sq[None, :] - 2.0 * (A @ C.T)
    scale = (A * A).sum(axis=1) + C_sq.max()
    return keys, scale


def _need_two(a_n: int, metric: str) -> bool:
    if a_n < 2:
        logger.warning("%s needs at least 2 perturbations to compare; got %d, returning NaN.", metric, a_n)
        return False
    return True


# ---------------------------------------------------------------------------------------
# centroid accuracy (Systema)
# ---------------------------------------------------------------------------------------


def centroid_accuracy(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    ties: str = "half",
    extra_truth: pd.DataFrame | None = None,
) -> pd.Series:
    """Systema's centroid accuracy: how many other observed profiles are farther from the prediction.

    With Euclidean distance :math:`d` and :math:`N` reference profiles:

    .. math::

        CA_p = \\frac{\\#\\{q \\ne p : d(\\hat{x}_p, x_q) > d(\\hat{x}_p, x_p)\\}
                     + \\tfrac12 \\#\\{q \\ne p : d(\\hat{x}_p, x_q) = d(\\hat{x}_p, x_p)\\}}{N - 1}

    1 = the prediction is closer to its own observed profile than to any other; ≈0.5 =
    chance. The mean over perturbations of a model that predicts one profile for all
    (mode collapse) is exactly 0.5 when no two observed profiles tie. Higher is better.
    Reference-free. Miller et al.'s "nir" is the same quantity.

    ``ties="half"`` (default) counts ties as 1/2 (documented choice of this suite);
    ``ties="strict"`` counts only strictly farther profiles, reproducing Systema's code
    (``centroid_accuracy.py``, which has no tie handling) — there a tie counts as a failure.

    Source: Viñas Torné et al., Nature Biotechnology 2025 (Systema); Miller
    et al. 2025 "nir" (E.2). The prediction is the anchor; PerturBench's rank metric
    (:func:`rank_metric`) anchors on the observed profile instead.

    Parameters
    ----------
    ties
        ``"half"`` or ``"strict"``.
    extra_truth
        Optional observed profiles of further perturbations (e.g. the training ones) that
        act as competitors only, as in Systema's K562 analysis where all perturbations are
        references. Then :math:`N` counts them too.

    Returns
    -------
    Series
        Named ``centroid_accuracy``.
    """
    if ties not in ("half", "strict"):
        raise ValueError(f"ties must be 'half' or 'strict', not {ties!r}")
    a = align(pred, truth)
    C = a.T
    if extra_truth is not None:
        extra = _as_frame(extra_truth, "extra_truth")
        overlap = extra.index.intersection(a.perturbations)
        if len(overlap):
            raise DataError(f"extra_truth repeats evaluated perturbations ({_examples(overlap)}); give only further ones.")
        missing = a.genes.difference(extra.columns, sort=False)
        if len(missing):
            raise DataError(f"extra_truth lacks {len(missing)} evaluated genes ({_examples(missing)}).")
        C = np.vstack([C, _check_numeric(extra.reindex(columns=a.genes), "extra_truth")])
    n_ref = C.shape[0]
    out = np.full(len(a.perturbations), np.nan)
    if not _need_two(n_ref, "centroid_accuracy"):
        return a.series(out, "centroid_accuracy")
    C_sq = (C * C).sum(axis=1)
    for rows in _blocks(len(a.perturbations), n_ref):
        keys, scale = _squared_distance_keys(a.P[rows], C, C_sq)
        closer, tied = _closer_and_tied(keys, rows, TIE_RTOL * scale, lower_is_closer=True)
        farther = (n_ref - 1) - closer - tied
        out[rows] = (farther + (0.5 * tied if ties == "half" else 0.0)) / (n_ref - 1)
    return a.series(out, "centroid_accuracy")


# ---------------------------------------------------------------------------------------
# PerturBench rank metric
# ---------------------------------------------------------------------------------------


def rank_metric(pred: pd.DataFrame, truth: pd.DataFrame, distance: str = "rmse", control: pd.Series | None = None) -> pd.Series:
    """PerturBench's rank metric: where the matching prediction ranks among all predictions.

    For each observed profile :math:`x_p`, sort all predictions :math:`\\hat{x}_q` by their
    distance (or similarity) to it and take the position of :math:`\\hat{x}_p`:

    .. math::

        rank_p = \\frac{\\#\\{q \\ne p : m(\\hat{x}_q, x_p) \\text{ closer than } m(\\hat{x}_p, x_p)\\}
                       + \\tfrac12 \\#\\{q \\ne p : \\text{tied}\\}}{N - 1}

    0 = perfect (the matching prediction is the closest), ≈0.5 = random, 1 = worst.
    Mode collapse (the same prediction for all) gives exactly 0.5. Lower is better.

    Normalised by :math:`N - 1` as in PerturBench's final code (``rank_helper``, fixed in
    PR #17, July 2025; the 2024 code divided by :math:`N`). PerturBench breaks ties by a
    random shuffle; here ties get the average rank (deterministic).

    Distances:

    * ``"rmse"``: :math:`m = \\sqrt{\\frac1G \\sum_g (\\hat{x}_{qg} - x_{pg})^2}` on the profiles
      (PerturBench ``rmse_rank_average``); reference-free.
    * ``"cosine"``: cosine similarity of the changes from control,
      :math:`\\cos(\\hat{x}_q - c, x_p - c)`, higher = closer. PerturBench's
      ``cosine_rank_logfc`` uses :math:`\\log_2(\\bar{x}+0.1)` fold changes instead; this is
      the same idea on the suite's Δ. A prediction with no change has an undefined cosine,
      counted as 0 (no similarity); a perturbation whose observed change is zero gets NaN.

    Source: Wu et al., PerturBench (arXiv 2408.10609),
    ``analysis/benchmarks/metrics.py::rank_helper``.

    Returns
    -------
    Series
        Named ``rank_rmse`` or ``rank_cosine_delta_vs_control``.
    """
    if distance == "rmse":
        a = align(pred, truth)
        name = "rank_rmse"
    elif distance == "cosine":
        if control is None:
            raise DataError("the cosine rank metric compares changes from control: pass control=.")
        a = align(pred, truth, {"control": control})
        name = "rank_cosine_delta_vs_control"
    else:
        raise ValueError(f"distance must be 'rmse' or 'cosine', not {distance!r}")
    n = len(a.perturbations)
    out = np.full(n, np.nan)
    if not _need_two(n, name):
        return a.series(out, name)
    if distance == "rmse":
        C, C_sq = a.P, (a.P * a.P).sum(axis=1)
        for rows in _blocks(n, n):
            keys, scale = _squared_distance_keys(a.T[rows], C, C_sq)
            closer, tied = _closer_and_tied(keys, rows, TIE_RTOL * scale, lower_is_closer=True)
            out[rows] = (closer + 0.5 * tied) / (n - 1)
    else:
        c = a.refs["control"]
        dP, dT = a.P - c, a.T - c
        norm_p = np.linalg.norm(dP, axis=1)
        norm_t = np.linalg.norm(dT, axis=1)
        inv_p = np.divide(1.0, norm_p, out=np.zeros_like(norm_p), where=norm_p > 0)
        for rows in _blocks(n, n):
            with np.errstate(invalid="ignore", divide="ignore"):
                sim = (dT[rows] @ dP.T) * inv_p[None, :] / norm_t[rows, None]
            closer, tied = _closer_and_tied(sim, rows, np.full(rows.size, TIE_RTOL), lower_is_closer=False)
            out[rows] = (closer + 0.5 * tied) / (n - 1)
        out[norm_t == 0] = np.nan
    return a.series(out, name)


def rank_rmse(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """PerturBench rank metric with RMSE on the profiles; see :func:`rank_metric`."""
    return rank_metric(pred, truth, "rmse")


def rank_cosine_delta_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """PerturBench rank metric with cosine similarity of the changes from control; see :func:`rank_metric`."""
    return rank_metric(pred, truth, "cosine", control=control)


# ---------------------------------------------------------------------------------------
# cell-eval discrimination score (PDS)
# ---------------------------------------------------------------------------------------


def _target_slots(a: Aligned) -> list[tuple[np.ndarray, np.ndarray]]:
    """Target-gene columns of each perturbation, as (rows, gene columns) per target slot.

    Slot k lists the perturbations that have a k-th measured target gene. Targets that are
    not among the evaluated genes (or names that are not gene symbols) are simply absent.
    """
    col = pd.Series(np.arange(len(a.genes)), index=a.genes)
    per_row = [[int(col[g]) for g in target_genes(str(p)) if g in col.index] for p in a.perturbations]
    slots = []
    for k in range(max((len(t) for t in per_row), default=0)):
        rows = np.array([i for i, t in enumerate(per_row) if len(t) > k], dtype=np.int64)
        cols = np.array([per_row[i][k] for i in rows], dtype=np.int64)
        slots.append((rows, cols))
    return slots


def discrimination_score(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    control: pd.Series,
    distance: str = "l1",
    exclude_targets: bool = True,
) -> pd.Series:
    """cell-eval's perturbation discrimination score (PDS).

    For each perturbation :math:`p`, the distances from its predicted change
    :math:`\\hat{\\Delta}_p = \\hat{x}_p - c` to every observed change :math:`\\Delta_q = x_q - c`
    are sorted ascending, over all genes except the target gene(s) of :math:`p`:

    .. math::

        rank_p = \\#\\{q \\ne p : d(\\hat{\\Delta}_p, \\Delta_q) < d(\\hat{\\Delta}_p, \\Delta_p)\\}
                 + \\tfrac12 \\#\\{q \\ne p : \\text{tied}\\},
        \\qquad PDS_p = 1 - \\frac{rank_p}{N}

    The rank starts at 0 (cell-eval takes the position in ``np.argsort``), and the divisor is
    :math:`N` (the number of perturbations), not :math:`N-1`: perfect = 1, worst = :math:`1/N`.
    Higher is better. cell-eval breaks ties by sort order; here ties get the average rank.

    **Chance level.** Without target exclusion a random prediction scores about
    :math:`0.5 + 1/(2N)`. With the target genes measured and excluded, it scores *higher*: the
    own observed change loses its largest component (the knocked-down gene) while every other
    candidate keeps its own, so the own truth is closer to an uninformative prediction than the
    others are. The chance level then depends on the data: compute it by permutation with
    :func:`discrimination_chance`.

    Target genes: for ``"A+B"`` both A and B are left out; targets that are not measured
    are simply absent. Excluding them matters because a knock-down's own gene changes
    most, so including it lets a model "discriminate" by copying the target list
    (cell-eval issues #35, #74).

    The control is the one observed control profile for both predicted and observed
    changes (cell-eval takes the predicted change against the *predicted* controls, which
    can be gamed; issues #196, #183). With one shared control, L1 and L2 distances of the
    changes equal those of the profiles; the cosine variant depends on the control.

    Source: Arc Institute cell-eval v0.8.1, ``metrics/_anndata.py::discrimination_score``;
    ``discrimination_score_l1`` is part of the Virtual Cell Challenge score.

    Parameters
    ----------
    distance
        ``"l1"`` (cell-eval's default, Manhattan), ``"l2"`` (Euclidean) or ``"cosine"``
        (cosine distance).
    exclude_targets
        Leave out each perturbation's target gene columns (default True).

    Returns
    -------
    Series
        Named ``discrimination_score_{distance}_vs_control``.
    """
    if distance not in ("l1", "l2", "cosine"):
        raise ValueError(f"distance must be 'l1', 'l2' or 'cosine', not {distance!r}")
    name = f"discrimination_score_{distance}_vs_control"
    a = align(pred, truth, {"control": control})
    n = len(a.perturbations)
    out = np.full(n, np.nan)
    if not _need_two(n, name):
        return a.series(out, name)
    c = a.refs["control"]
    A_all, C = a.P - c, a.T - c  # anchors: predicted changes; candidates: observed changes
    slots = _target_slots(a) if exclude_targets else []
    C_sq = (C * C).sum(axis=1)
    for rows in _blocks(n, n):
        A = A_all[rows]
        pos = np.full(n, -1, dtype=np.int64)
        pos[rows] = np.arange(rows.size)
        # per-block target columns: (local row, gene column)
        block_slots = []
        for s_rows, s_cols in slots:
            keep = pos[s_rows] >= 0
            if keep.any():
                block_slots.append((pos[s_rows[keep]], s_cols[keep]))
        if distance == "l1":
            score = cdist(A, C, "cityblock")
            for r, g in block_slots:
                score[r] -= np.abs(A[r, g][:, None] - C[:, g].T)
            atol = TIE_RTOL * (np.abs(A).sum(axis=1) + np.abs(C).sum(axis=1).max())
            lower = True
        elif distance == "l2":
            score, scale = _squared_distance_keys(A, C, C_sq)
            score += (A * A).sum(axis=1)[:, None]  # full squared distance (corrections need it)
            for r, g in block_slots:
                score[r] -= (A[r, g][:, None] - C[:, g].T) ** 2
            atol = TIE_RTOL * scale
            lower = True
        else:
            dot = A @ C.T
            a_sq = np.broadcast_to((A * A).sum(axis=1)[:, None], dot.shape).copy()
            c_sq = np.broadcast_to(C_sq[None, :], dot.shape).copy()
            for r, g in block_slots:
                dot[r] -= A[r, g][:, None] * C[:, g].T
                a_sq[r] -= (A[r, g] ** 2)[:, None]
                c_sq[r] -= (C[:, g].T) ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                sim = dot / np.sqrt(np.clip(a_sq, 0, None) * np.clip(c_sq, 0, None))
            score = np.where(np.isfinite(sim), sim, 0.0)  # undefined cosine = no similarity
            atol = np.full(rows.size, TIE_RTOL)
            lower = False
        closer, tied = _closer_and_tied(score, rows, atol, lower_is_closer=lower)
        out[rows] = 1.0 - (closer + 0.5 * tied) / n
    return a.series(out, name)


def discrimination_chance(
    truth: pd.DataFrame,
    control: pd.Series,
    predictions: pd.DataFrame | None = None,
    distance: str = "l1",
    exclude_targets: bool = True,
    n_permutations: int = 20,
    seed: int = 0,
) -> tuple[float, float]:
    """Chance level of :func:`discrimination_score` on these data, by permutation.

    The score of predictions that carry no information about *which* perturbation they are for:
    ``predictions`` (default: the observed profiles themselves) with their labels deranged (random
    permutations without fixed points, seeded ``numpy.random.default_rng(seed)``),
    :math:`\\hat x_p = y_{\\sigma(p)}`, :math:`\\sigma(p) \\ne p`. The chance level is the mean PDS over
    perturbations and ``n_permutations`` derangements. For a mode-collapsed prediction (one profile
    for all) every derangement gives the same score, its own. With the target genes measured and
    excluded the level lies above the :math:`0.5 + 1/(2N)` of random ranks (for a collapsed
    prediction up to 1: the own truth, without its knocked-down gene, is the closest to it).

    Returns
    -------
    (chance, standard error over the permutations)
    """
    n = len(truth)
    if n < 2:
        raise ValueError("the chance level of a discrimination score needs at least two perturbations")
    source = truth if predictions is None else predictions.reindex(index=truth.index, columns=truth.columns)
    if not np.isfinite(source.to_numpy(dtype=float)).all():
        raise ValueError("predictions must cover every perturbation and gene of truth")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_permutations):
        while True:
            order = rng.permutation(n)
            if not (order == np.arange(n)).any():
                break
        pred = pd.DataFrame(source.to_numpy()[order], index=truth.index, columns=truth.columns)
        values.append(float(np.nanmean(discrimination_score(pred, truth, control, distance, exclude_targets).to_numpy())))
    values = np.asarray(values)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def discrimination_score_l1_vs_control(pred: pd.DataFrame, truth: pd.DataFrame, control: pd.Series) -> pd.Series:
    """cell-eval PDS with L1 distance of the changes from control, target genes excluded; see :func:`discrimination_score`."""
    return discrimination_score(pred, truth, control, "l1")
