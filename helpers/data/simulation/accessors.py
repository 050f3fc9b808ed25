"""Reading the ground truth of a simulated screen back from ``adata.uns['simulation']``.

:func:`true_changes`, :func:`systematic_component`, :func:`interaction_labels`,
:func:`perturbation_truth` and :func:`simulation_params` read what
:func:`~.assembly.truth_uns` stored; they work on a subset of the cells or genes and after a
``write_h5ad``/``read_h5ad`` round trip, and raise :class:`~helpers.errors.DataError` on an
AnnData without that truth.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...errors import DataError
from .params import SimulationParams

if TYPE_CHECKING:
    from anndata import AnnData


def _sim(adata: AnnData) -> dict:
    sim = adata.uns.get("simulation")
    if not isinstance(sim, dict) or "true_changes" not in sim:
        raise DataError(
            "this AnnData carries no simulation ground truth (uns['simulation']); generate it with "
            "helpers.data.simulate.simulate_screen or a preset (helpers.data.simulate.PRESETS), and keep uns when subsetting."
        )
    return sim


def _context(sim: dict, context: str | None) -> str:
    names = [str(n) for n in np.asarray(sim["contexts"]).tolist()]
    if context is None:
        if len(names) > 1:
            raise DataError(f"this screen has several contexts {names}; pass context=... (and subset the cells to it).")
        return names[0]
    if context not in names:
        raise DataError(f"unknown context {context!r}; this screen has {names}")
    return context


def _gene_axis(adata: AnnData, sim: dict) -> tuple[pd.Index, np.ndarray | None]:
    genes = pd.Index(np.asarray(sim["genes"]).astype(str))
    current = pd.Index(adata.var_names.astype(str))
    if current.equals(genes):
        return genes, None
    missing = current.difference(genes)
    if len(missing):
        raise DataError(f"{len(missing)} genes of this AnnData are not in the simulation (e.g. {list(missing[:3])}).")
    return current, genes.get_indexer(current)


def true_changes(adata: AnnData, context: str | None = None) -> pd.DataFrame:
    """True change from control of every perturbation, perturbations x genes.

    Same unit as :func:`helpers.data.changes`: the limit, as cells per perturbation grow, of
    ``x̄_p − x̄_control`` on the log-normalised ``X``, i.e.
    ``Δ_p[g] = mean_b F_g(μ_pbg, κ_pb) − mean_b F_g(μ_cbg, κ_cb)`` with ``F`` the expected
    log-normalised expression of a negative-binomial gene (:mod:`.truth`), ``μ`` the mean UMIs
    in batch ``b`` and ``κ`` the library normalisation. It is *not* the log-mean shift put
    into the counts (Jensen's inequality and the normalisation make them differ).

    Columns follow ``adata.var_names`` (a gene subset of the simulated panel is allowed);
    rows are all perturbations of the context, also those not in ``adata`` after a split.
    """
    sim = _sim(adata)
    ctx = _context(sim, context)
    genes, idx = _gene_axis(adata, sim)
    values = np.asarray(sim["true_changes"][ctx])
    if idx is not None:
        values = values[:, idx]
    perts = pd.Index(np.asarray(sim["perturbations"][ctx]).astype(str), name="perturbation")
    return pd.DataFrame(values, index=perts, columns=genes)


def systematic_component(adata: AnnData, context: str | None = None) -> pd.Series:
    """True change (same unit as :func:`true_changes`) of the systematic shift alone.

    It is the change from control of a perturbation with no specific effect and the average
    systematic weight of the context's perturbations: what every perturbed cell shares.
    """
    sim = _sim(adata)
    ctx = _context(sim, context)
    genes, idx = _gene_axis(adata, sim)
    values = np.asarray(sim["systematic"][ctx])
    if idx is not None:
        values = values[idx]
    return pd.Series(values, index=genes, name=f"systematic_component_{ctx}")


def interaction_labels(adata: AnnData, context: str | None = None) -> pd.DataFrame:
    """Genetic interactions of the double perturbations, one row per (double, gene).

    With ``Δ`` the true changes from control (:func:`true_changes`) and the additive
    expectation ``add = Δ_A + Δ_B``, a gene of double ``AB`` is listed when an interaction was
    put there (``designed``) or when ``|Δ_AB − add| > 0.05`` for another reason (``source``
    ``"floor"``: the additive expectation fell below zero expression; ``"saturation"``: it exceeded
    ``effect_knee`` and was bent towards ``effect_cap``; ``"normalisation"``: the library-size
    normalisation couples genes, so a double that moves many genes shifts the others a little).
    ``label``:

    * ``synergy``: ``Δ_AB`` has the sign of ``add`` and is larger in size;
    * ``buffering``: same sign (or zero), smaller in size;
    * ``opposite``: the other sign — the double crosses to the other side of control.

    These are the classes of Ahlmann-Eltze et al. with the additive
    prediction as reference. ``deviation = Δ_AB − add`` is the true deviation from additivity;
    ``designed_as`` is the type the simulator put there (the ``label`` is computed from the final
    truth, so it can differ where saturation or the floor also acted).
    Every gene not listed has ``|deviation| ≤ 0.05`` (:data:`~.doubles.LABEL_TOLERANCE`).
    """
    sim = _sim(adata)
    frame = sim["interactions"]
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    frame = frame.copy()
    if context is not None:
        ctx = _context(sim, context)
        frame = frame[frame["context"].astype(str) == ctx]
    for col in ("perturbation", "gene", "label", "designed_as", "source", "context"):
        if col in frame:
            frame[col] = frame[col].astype(str)
    return frame.reset_index(drop=True)


def perturbation_truth(adata: AnnData, context: str | None = None) -> pd.DataFrame:
    """Per perturbation: target(s), program, strength, no-phenotype flag, target measured, ...

    Columns: ``context``, ``perturbation``, ``n_targets``, ``targets``, ``program`` (program of
    each target, ``""`` outside programs), ``target_measured`` (False: the target gene is not in
    the panel, so gene-embedding models cannot embed it), ``strength`` (``a``; 0 = no
    phenotype), ``no_phenotype``, ``self_log_shift`` (log-mean shift of the target gene),
    ``knockdown_escape``, ``systematic_weight`` (``γ``), ``interacting`` (doubles).
    """
    sim = _sim(adata)
    frame = sim["perturbation_truth"]
    frame = frame.copy() if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    if context is not None:
        frame = frame[frame["context"].astype(str) == _context(sim, context)]
    return frame.set_index("perturbation", drop=False).rename_axis(None)


def simulation_params(adata: AnnData) -> SimulationParams:
    """The :class:`SimulationParams` a simulated screen was generated with."""
    return SimulationParams.from_dict(json.loads(str(_sim(adata)["params_json"])))
