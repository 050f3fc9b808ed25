"""The truth of each context of a screen: expected means and true changes of every perturbation.

A context's truth is made in two steps, so that one table of the expected log-normalised
expression ``F`` (:class:`~.truth.ExpectedLogTable`) serves every context of a screen:

1. :func:`context_means` draws the context's batch effects and computes the negative-binomial
   means of control cells, of each single perturbation (its effects from :mod:`.biology`) and
   of the systematic shift alone, with the range of normalisation factors they need;
2. :func:`shared_table` tabulates ``F`` over the ranges of all contexts, and
   :func:`context_truth` turns the means into true changes from control (the unit of
   :func:`helpers.data.changes`), adds the doubles (:mod:`.doubles`) and collects the
   per-perturbation records, in a :class:`ContextTruth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .biology import Biology, context_biology, ctx_library_mean, rng_for, single_effects
from .doubles import double_truth, interaction_table
from .params import ContextParams, SimulationParams
from .streams import STREAM_BATCH
from .truth import ExpectedLogTable, batched_values, kappas, snap_dispersion


@dataclass
class ContextTruth:
    """The truth of one context, and what its cells are drawn from (see :func:`context_truth`)."""

    control_mean: np.ndarray  # m_c, genes (UMIs at average library)
    pert_means: np.ndarray  # perturbations x genes
    perturbations: list[str]
    batch_factor: np.ndarray  # batches x genes
    batch_library: np.ndarray  # library-size factor of each batch (included in batch_factor)
    library_mean: float  # mean transcriptome UMIs per cell
    remainder: np.ndarray  # expected UMIs of unmeasured genes per batch (0 with panel normalisation)
    rest: float
    dispersion_index: np.ndarray
    changes: np.ndarray  # perturbations x genes (X units)
    systematic: np.ndarray  # genes (X units)
    systematic_log_mean: np.ndarray
    records: pd.DataFrame
    interactions: pd.DataFrame


def context_means(
    bio: Biology, p: SimulationParams, ci: int, ctx: ContextParams, singles: list[int], pairs: list[tuple[int, int]], seed: int
) -> dict:
    """First step of a context's truth: NB means of control, singles and the systematic shift."""
    n_singles = len(singles) if ctx.n_singles is None else ctx.n_singles
    singles = singles[:n_singles]
    single_set = set(singles)
    pairs = [pr for pr in pairs if pr[0] in single_set and pr[1] in single_set]
    cbio = context_biology(bio, p, ctx)
    eff = single_effects(bio, cbio, p, ctx, singles)
    library_mean = ctx_library_mean(p, ctx)
    m_c = bio.abundance * library_mean
    didx = snap_dispersion(bio.dispersion * ctx.dispersion_scale)

    rng_b = rng_for(seed, STREAM_BATCH, ci)
    gene_batch = rng_b.normal(0.0, p.batch_sd, (p.n_batches, bio.n_genes))
    batch_library = np.exp(rng_b.normal(0.0, p.batch_library_sd, p.n_batches))
    batch_factor = np.exp(gene_batch) * batch_library[:, None]

    sys_shift = ctx.systematic_strength * cbio.systematic
    log_shift = eff["specific"] + eff["gamma"][:, None] * sys_shift[None, :]
    m_s = m_c[None, :] * np.exp(log_shift)
    mean_gamma = float(eff["gamma"].mean()) if len(singles) else 1.0
    m_sys = m_c * np.exp(mean_gamma * sys_shift)

    all_means = np.vstack([m_c[None, :], m_s, m_sys[None, :]])
    share = min(1.0, float(m_c.sum() / library_mean))  # the panel's share of the transcriptome
    rest = library_mean * (1.0 - share) if p.normalisation == "transcriptome" else 0.0
    remainder = rest * batch_library
    kap = np.concatenate(
        [kappas(all_means, batch_factor, remainder).ravel(), kappas(all_means, np.ones((1, bio.n_genes)), np.array([rest])).ravel()]
    )
    mu_max = float((all_means.max(axis=0) * batch_factor.max(axis=0)).max())
    return dict(
        ctx=ctx,
        singles=singles,
        pairs=pairs,
        eff=eff,
        m_c=m_c,
        m_s=m_s,
        didx=didx,
        batch_factor=batch_factor,
        batch_library=batch_library,
        library_mean=library_mean,
        remainder=remainder,
        rest=rest,
        sys_shift=sys_shift,
        mean_gamma=mean_gamma,
        all_means=all_means,
        kappa_range=(kap.min(), kap.max()),
        mu_max=mu_max,
    )


def shared_table(states: list[dict], p: SimulationParams) -> ExpectedLogTable:
    """One table of ``F`` covering every context (doubles get room for their library shifts)."""
    doubles = any(st["pairs"] for st in states)
    widen = 1.6 if doubles else 1.05
    lo = min(st["kappa_range"][0] for st in states) / widen
    hi = max(st["kappa_range"][1] for st in states) * widen
    mu_max = max(st["mu_max"] for st in states) * (50.0 if doubles else 1.2)
    didx = np.unique(np.concatenate([st["didx"] for st in states]))
    return ExpectedLogTable(didx, (lo, hi), p.calibration.library_log_sd, mu_max=mu_max)


def context_truth(bio: Biology, p: SimulationParams, state: dict, table: ExpectedLogTable) -> tuple[ContextTruth, list[int]]:
    """Second step: true changes (and the doubles' means) from the shared table."""
    ctx, singles, pairs, eff = state["ctx"], state["singles"], state["pairs"], state["eff"]
    m_c, m_s, didx, batch_factor = state["m_c"], state["m_s"], state["didx"], state["batch_factor"]
    sys_shift, mean_gamma, all_means = state["sys_shift"], state["mean_gamma"], state["all_means"]
    gtab = table.gene_tables(didx)

    f_all = batched_values(table, gtab, all_means, batch_factor, state["remainder"])
    ctrl_value = f_all[0]
    changes_s = f_all[1:-1] - ctrl_value
    systematic = f_all[-1] - ctrl_value

    names = [bio.pool[t] for t in singles]
    index_of = {t: i for i, t in enumerate(singles)}
    rec = pd.DataFrame(
        {
            "perturbation": names,
            "n_targets": 1,
            "targets": names,
            "program": [bio.programs[j].name if j >= 0 else "" for j in bio.pool_program[singles]],
            "driven_program": [bio.programs[j].name if j >= 0 else "" for j in eff["driven"]],
            "target_measured": bio.pool_measured[singles].astype(bool),
            "strength": eff["strength"],
            "no_phenotype": eff["strength"] == 0,
            "self_log_shift": eff["self_shift"],
            "knockdown_escape": eff["escape"],
            "systematic_weight": eff["gamma"],
            "interacting": False,
        }
    )

    changes_d = np.zeros((len(pairs), bio.n_genes))
    m_d = np.zeros((len(pairs), bio.n_genes))
    inter_rows = []
    if pairs:
        m_d, changes_d, d_records, inter_rows = double_truth(bio, p, state, table, gtab, index_of, ctrl_value)
        rec = pd.concat([rec, pd.DataFrame(d_records)], ignore_index=True)

    # interaction labels from the final (batch-averaged) truth
    interactions = interaction_table(bio, inter_rows, changes_s, changes_d, index_of)

    names_all = names + [f"{bio.pool[a]}+{bio.pool[b]}" for a, b in pairs]
    rec.insert(0, "context", ctx.name)
    truth = ContextTruth(
        control_mean=m_c,
        pert_means=np.vstack([m_s, m_d]) if pairs else m_s,
        perturbations=names_all,
        batch_factor=batch_factor,
        batch_library=state["batch_library"],
        library_mean=state["library_mean"],
        remainder=state["remainder"],
        rest=state["rest"],
        dispersion_index=didx,
        changes=np.vstack([changes_s, changes_d]) if pairs else changes_s,
        systematic=systematic,
        systematic_log_mean=mean_gamma * sys_shift,
        records=rec,
        interactions=interactions,
    )
    return truth, singles
