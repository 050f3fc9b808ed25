"""Double perturbations of one context: the interactions put into them, their means and their labels.

A double's change from control is the sum of its singles' changes in the expected
log-normalised expression (at the normalisation of the panel without batches), changed by three
mechanisms (see :class:`~.params.SimulationParams`, "Doubles"): the saturating combination with
gene-specific capacity (:func:`capacity_deviation`, source ``"capacity"``), neomorphic effects of a
share of pairs (``"neomorphic"``) and interactions of random type placed on random responding genes
of a share of pairs (``"designed"``). :func:`double_truth` turns these target changes into the
negative-binomial means the cells are drawn from, and the true changes of those means;
:func:`interaction_table` lists every gene of a double that deviates from additivity in the
final truth (see :func:`~.accessors.interaction_labels`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..canonical import TARGET_SUM
from .biology import Biology, rng_for, soft_cap, stable_hash
from .params import SimulationParams
from .streams import STREAM_PAIRS
from .truth import ExpectedLogTable, batched_values, kappas

LABEL_TOLERANCE = 0.05  # |true deviation from additivity| above which a gene of a double is listed


def _classify(additive: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Interaction class of an observed change relative to the additive expectation (both vs control).

    ``opposite``: the double's change has the other sign than the additive expectation
    (it crosses to the other side of control); ``synergy``: same sign and larger in size;
    ``buffering``: same sign (or zero) and smaller in size.
    """
    opposite = np.sign(observed) * np.sign(additive) < 0
    synergy = ~opposite & (np.abs(observed) > np.abs(additive))
    return np.where(opposite, "opposite", np.where(synergy, "synergy", "buffering"))


def capacity_deviation(u: np.ndarray, v: np.ndarray, capacity: np.ndarray, strength: float) -> np.ndarray:
    """Deviation from additivity of the saturating combination of two single changes ``u`` and ``v``.

    Where ``u`` and ``v`` have the same sign, the double moves the gene by
    ``|u + v| − strength · min(|u|,|v|) · M²/(C² + M²)`` with ``M = max(|u|,|v|)`` and ``C`` the
    gene's capacity: the returned deviation (double minus additive) is
    ``−sign(u) · strength · min(|u|,|v|) · M²/(C² + M²)``. It is 0 where the singles move the gene
    in opposite directions or either does not move it, grows with both single effects, and never
    exceeds the smaller single's effect in size (the double is at least as strong as the stronger single).
    """
    same = np.sign(u) * np.sign(v) > 0
    big = np.maximum(np.abs(u), np.abs(v))
    small = np.minimum(np.abs(u), np.abs(v))
    dev = strength * small * big**2 / (capacity**2 + big**2)
    return np.where(same, -np.sign(u) * dev, 0.0)


def _designed_change(
    rng: np.random.Generator,
    rng_neo: np.random.Generator,
    bio: Biology,
    p: SimulationParams,
    a: int,
    b: int,
    u: np.ndarray,
    v: np.ndarray,
):
    """Target change of double ``(a, b)`` from its singles' changes ``u`` and ``v``, with the interactions put there.

    Returns ``(target, interacting, designed, kind)``: the target change per gene, whether the
    pair interacts, which genes got an interaction and of which kind (``""`` elsewhere): the
    random-placement types (``synergy``, ``buffering``, ``opposite``), ``capacity`` (the
    saturating combination, :func:`capacity_deviation`) or ``neomorphic``.
    """
    additive = u + v
    target = additive.copy()
    designed = np.zeros(bio.n_genes, dtype=bool)
    kind = np.array([""] * bio.n_genes, dtype=object)
    own = [bio.gene_index.get(bio.pool[a], -1), bio.gene_index.get(bio.pool[b], -1)]
    own = [g for g in own if g >= 0]
    if p.saturation_strength > 0:
        dev = capacity_deviation(u, v, bio.capacity, p.saturation_strength)
        dev[own] = 0.0
        target += dev
        hit = np.abs(dev) >= 0.01
        designed |= hit
        kind[hit] = "capacity"
    # neomorphic draws come from their own stream, so switching them off changes nothing else
    u_neo, j_neo, size_neo = rng_neo.random(), int(rng_neo.integers(bio.response.shape[0])), rng_neo.lognormal(0.0, 0.5)
    neomorphic = u_neo < p.neomorphic_pair_share
    if neomorphic:
        extra = p.neomorphic_size * size_neo * bio.response[j_neo]
        extra[own] = 0.0
        target += extra
        hit = np.abs(extra) >= 0.01
        designed |= hit
        kind[hit] = "neomorphic"
    interacting = rng.random() < p.interaction_pair_share
    if interacting:
        cand = np.flatnonzero(np.abs(additive) >= p.interaction_min_change)
        cand = np.setdiff1d(cand, own)
        chosen = cand[rng.random(cand.size) < p.interaction_gene_share]
        types = list(p.interaction_types)
        weights = np.array([p.interaction_types[t] for t in types], dtype=float)
        drawn = rng.choice(types, chosen.size, p=weights / weights.sum())
        for g, t in zip(chosen, drawn):
            if t == "synergy":
                target[g] = additive[g] * (1.0 + rng.uniform(0.5, 1.5))
            elif t == "buffering":
                target[g] = additive[g] * (1.0 - rng.uniform(0.4, 0.9))
            else:
                target[g] = -additive[g] * rng.uniform(0.3, 1.0)
        designed[chosen] = True
        kind[chosen] = drawn
    return target, bool(interacting or neomorphic or designed.any()), designed, kind


def double_truth(
    bio: Biology, p: SimulationParams, state: dict, table: ExpectedLogTable, gtab: np.ndarray, index_of: dict, ctrl_value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[dict], list[tuple]]:
    """Means and true changes of the doubles of one context (``state`` from :func:`~.effects.context_means`).

    Returns ``(means, changes, records, designs)``: the NB means (doubles x genes, UMIs at the
    average library), the true changes from control (doubles x genes, ``X`` units), one
    :func:`~.accessors.perturbation_truth` record per double, and per double
    ``(name, a, b, designed, kind, floor, saturated)`` for :func:`interaction_table`.
    """
    ctx, pairs, m_c, m_s = state["ctx"], state["pairs"], state["m_c"], state["m_s"]
    didx, batch_factor = state["didx"], state["batch_factor"]
    m_d = np.zeros((len(pairs), bio.n_genes))
    inter_rows = []
    ref = np.ones((1, bio.n_genes))
    f_ref = batched_values(table, gtab, np.vstack([m_c[None, :], m_s]), ref, np.array([state["rest"]]))
    ref_ctrl, ref_change = f_ref[0], f_ref[1:] - f_ref[0]
    d_records = []
    for d, (a, b) in enumerate(pairs):
        name = f"{bio.pool[a]}+{bio.pool[b]}"
        rng = rng_for(bio.seed, STREAM_PAIRS, stable_hash(name), stable_hash(ctx.name))
        rng_neo = rng_for(bio.seed, STREAM_PAIRS, stable_hash(name), stable_hash(ctx.name), 1)
        u, v = ref_change[index_of[a]], ref_change[index_of[b]]
        target, interacting, designed, kind = _designed_change(rng, rng_neo, bio, p, a, b, u, v)
        capped = soft_cap(target, p.effect_knee, p.effect_cap)
        saturated = ~designed & (np.abs(capped - target) > 1e-9)
        level = ref_ctrl + capped
        floor = level < 0
        # the NB means whose expected log-normalised expression is the target level, at the
        # library normalisation of the log-additive double (exp(δ_A + δ_B)); normalisation
        # couples genes, so the forward truth below differs from the target by a small,
        # nearly uniform compositional shift (listed if it exceeds the label tolerance)
        log_add = np.log(m_s[index_of[a]]) + np.log(m_s[index_of[b]]) - np.log(m_c)
        kappa = TARGET_SUM / (state["rest"] + np.exp(log_add).sum())
        m = table.invert(table.at_kappa(gtab, kappa), level)
        m_d[d] = m
        d_records.append(
            {
                "perturbation": name,
                "n_targets": 2,
                "targets": name,
                "program": "+".join(bio.programs[j].name if j >= 0 else "" for j in bio.pool_program[[a, b]]),
                "driven_program": "+".join(
                    bio.programs[j].name if j >= 0 else ""
                    for j in (state["eff"]["driven"][index_of[a]], state["eff"]["driven"][index_of[b]])
                ),
                "target_measured": bool(bio.pool_measured[a] and bio.pool_measured[b]),
                "strength": np.nan,
                "no_phenotype": False,
                "self_log_shift": np.nan,
                "knockdown_escape": False,
                "systematic_weight": np.nan,
                "interacting": bool(interacting),
            }
        )
        inter_rows.append((name, a, b, designed, kind, floor, saturated))
    kap_d = kappas(m_d, batch_factor, state["remainder"])
    lo, hi = np.exp(table.ln_kappa[0]), np.exp(table.ln_kappa[-1])
    if kap_d.min() < lo or kap_d.max() > hi:  # rare: a double moved the library a lot
        table = ExpectedLogTable(
            np.unique(didx),
            (min(lo, kap_d.min() / 1.05), max(hi, kap_d.max() * 1.05)),
            p.calibration.library_log_sd,
            mu_max=np.exp(table.ln_mu[-1]) / 1.05,
        )
        gtab = table.gene_tables(didx)
    changes_d = batched_values(table, gtab, m_d, batch_factor, state["remainder"]) - ctrl_value
    return m_d, changes_d, d_records, inter_rows


def interaction_table(bio: Biology, designs: list, changes_s: np.ndarray, changes_d: np.ndarray, index_of: dict) -> pd.DataFrame:
    """Interaction labels of a context's doubles from the final (batch-averaged) truth.

    ``designs`` from :func:`double_truth`; ``changes_s`` and ``changes_d`` are the true changes
    of the singles and of the doubles. Lists every gene with an interaction put there or with
    ``|deviation from additivity| > LABEL_TOLERANCE``.
    """
    label_frames = []
    for d, (name, a, b, designed, kind, floor, saturated) in enumerate(designs):
        additive = changes_s[index_of[a]] + changes_s[index_of[b]]
        observed = changes_d[d]
        deviation = observed - additive
        keep = designed | (np.abs(deviation) > LABEL_TOLERANCE)
        if not keep.any():
            continue
        g = np.flatnonzero(keep)
        label_frames.append(
            pd.DataFrame(
                {
                    "perturbation": name,
                    "gene": bio.genes[g],
                    "label": _classify(additive[g], observed[g]),
                    "deviation": deviation[g].astype(np.float32),
                    "additive_change": additive[g].astype(np.float32),
                    "true_change": observed[g].astype(np.float32),
                    "designed": designed[g],
                    "designed_as": kind[g].astype(str),
                    "source": np.where(
                        designed[g],
                        np.where(np.isin(kind[g].astype(str), ["capacity", "neomorphic"]), kind[g].astype(str), "designed"),
                        np.where(floor[g], "floor", np.where(saturated[g], "saturation", "normalisation")),
                    ),
                }
            )
        )
    return (
        pd.concat(label_frames, ignore_index=True)
        if label_frames
        else pd.DataFrame(
            columns=["perturbation", "gene", "label", "deviation", "additive_change", "true_change", "designed", "designed_as", "source"]
        )
    )
