"""Simulated Perturb-seq screens with their ground truth: parameters, generation, truth accessors."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..canonical import CONTROL, TARGET_SUM, DataError
from .biology import (
    Biology,
    context_biology,
    ctx_library_mean,
    make_biology,
    rng_for,
    single_effects,
    soft_cap,
    stable_hash,
)
from .calibration import DEFAULT_CALIBRATION, Calibration
from .sampling import sample_block
from .truth import DISPERSION_GRID, ExpectedLogTable, snap_dispersion

INTERACTION_LABELS = ("synergy", "buffering", "opposite")
LABEL_TOLERANCE = 0.05  # |true deviation from additivity| above which a gene of a double is listed
CONTROL_CHUNK = 500  # control cells are drawn in blocks of this size, each with its own stream
_STREAM_CELLS, _STREAM_BATCH, _STREAM_PAIRS = 100, 101, 102


@dataclass(frozen=True)
class ContextParams:
    """One cell line ("context") of a simulated screen.

    Attributes
    ----------
    name
        Context name, e.g. ``"K562_like"`` (stored in ``obs['context']`` when a screen has
        several). Context-specific draws are keyed by this name, so the same name gives the same
        context-specific effects in every screen built on the same biology.
    effect_scale
        Multiplies every perturbation-specific log-mean shift (signal size).
    similarity
        Weight ``ρ`` of the shared biology in this context's program responses, gene-specific
        effects and systematic direction (``√ρ · shared + √(1−ρ) · own``): 1 = identical
        responses in every context, 0 = unrelated.
    strength_sd
        SD of the context-specific log-factor on each perturbation's strength.
    idiosyncratic_scale
        Multiplies the gene-specific (non-program) part of every response: more of it means
        less of the response can be predicted from the program a target belongs to.
    systematic_strength
        RMS log-mean shift of the response shared by all perturbed cells (Systema's systematic
        variation). 0 switches it off.
    cells_per_perturbation
        Mean number of cells of each perturbation.
    n_control_cells
        Number of control cells.
    library_scale
        Multiplies the calibrated library sizes (UMIs per cell): lower = sparser, noisier cells.
    dispersion_scale
        Multiplies the gene dispersions: higher = noisier cells.
    n_singles
        Perturb only the first ``n_singles`` of the screen's single perturbations in this
        context (``None`` = all).
    """

    name: str = "K562_like"
    effect_scale: float = 1.0
    similarity: float = 0.8
    strength_sd: float = 0.3
    idiosyncratic_scale: float = 1.0
    systematic_strength: float = 0.3
    cells_per_perturbation: int = 50
    n_control_cells: int = 1000
    library_scale: float = 1.0
    dispersion_scale: float = 1.0
    n_singles: int | None = None


def _default_interaction_types() -> dict:
    return {"synergy": 0.35, "buffering": 0.5, "opposite": 0.15}


@dataclass(frozen=True)
class SimulationParams:
    """Every knob of :func:`simulate_screen` (effects are shifts of the log NB mean).

    Screen layout
        ``name``; ``modality`` (``"CRISPRi"``: the target gene is knocked down;
        ``"CRISPRa"``: it is over-expressed); ``n_genes`` measured genes; ``n_singles`` single
        perturbations (the first targets of the biology's pool); ``n_doubles`` double
        perturbations (pairs of the singles); ``contexts`` (a tuple of :class:`ContextParams`);
        ``cells_cv`` (coefficient of variation of cells per perturbation, 0 = all equal);
        ``min_cells``; ``n_batches`` gem groups (cells are assigned uniformly at random);
        ``batch_sd`` (SD of the gene-wise log-mean batch effects) and ``batch_library_sd`` (SD
        of the log library-size factor of each batch).
    Gene programs
        ``n_programs`` programs of ``program_size`` genes, each seeded from a Gene Ontology term
        with ``go_term_size`` = (min, max) annotated genes; ``knowledge_agreement`` = probability
        that a member comes from the GO term (1 = programs are GO terms, 0 = random gene sets);
        ``unmeasured_member_share`` of each program's members are left out of the panel;
        ``spill_share`` = share of non-member genes a program also moves a little;
        ``program_mixing`` = SD of the weights with which a target also drives other programs.
    Targets
        ``target_program_share`` of targets are program members, ``target_unmeasured_share``
        are not measured (no model can embed them from the gene panel), the rest are genes
        outside every program; ``focus_programs`` = draw targets only from the first k
        programs (a focused screen such as Adamson's, which raises systematic variation).
    Effect sizes
        ``no_phenotype_share`` of perturbations have no effect beyond the self-effect and the
        systematic shift; the others have strength ``a ~ LogNormal(log effect_size_median,
        effect_size_sigma)`` (heavy-tailed); ``idiosyncratic_share`` of genes get a
        perturbation-specific effect ``N(0, idiosyncratic_sd)`` (times ``a``).
    Self-effect
        CRISPRi: the target keeps ``knockdown_residual`` (median) of its expression, except a
        ``knockdown_escape_share`` that keep 60–100 %. CRISPRa: ``(fold − 1)·m·S/(m + S) + overexpression_floor``
        UMIs are added to its mean ``m`` (``S = overexpression_saturation``: the extra expression
        saturates for genes already expressed), ``fold ~ LogNormal(log overexpression_fold, 0.7)``.
    Doubles
        ``double_same_program_share`` of pairs are drawn within a program; a double's change is
        the sum of its singles' changes (in the expected log-normalised expression) except on
        ``interaction_gene_share`` of the genes with an additive change of at least
        ``interaction_min_change``, in ``interaction_pair_share`` of the pairs, where an
        interaction of a type drawn with weights ``interaction_types`` applies (see
        :func:`interaction_labels`).
    Counts
        ``panel_min_mean``: the panel keeps genes with at least this many UMIs per cell;
        ``normalisation``: ``"transcriptome"`` (default) normalises ``X`` by each cell's library
        over the whole simulated transcriptome (``obs['ncounts']``: the measured genes' UMIs plus
        the expected UMIs of the unmeasured rest), as in the published GEARS and Norman files
        that were normalised before genes were selected; ``"panel"`` normalises over the
        measured genes only, i.e. ``X = log_normalise(layers['counts'])``;
        ``calibration``: count-model constants (:data:`DEFAULT_CALIBRATION`).
    Seeds
        ``biology_seed`` draws genes, programs, targets and effects (``None`` = the screen's
        ``seed``); the ``seed`` of :func:`simulate_screen` draws batches and cells.
    """

    name: str = "simulated"
    modality: str = "CRISPRi"
    n_genes: int = 2000
    n_singles: int = 300
    n_doubles: int = 0
    contexts: tuple = field(default_factory=lambda: (ContextParams(),))
    cells_cv: float = 0.25
    min_cells: int = 5
    n_batches: int = 4
    batch_sd: float = 0.1
    batch_library_sd: float = 0.1
    n_programs: int = 20
    program_size: int = 40
    go_term_size: tuple = (30, 300)
    knowledge_agreement: float = 0.7
    unmeasured_member_share: float = 0.05
    spill_share: float = 0.05
    program_mixing: float = 0.15
    target_program_share: float = 0.85
    target_unmeasured_share: float = 0.03
    focus_programs: int | None = None
    no_phenotype_share: float = 0.2
    effect_size_median: float = 0.4
    effect_size_sigma: float = 0.8
    effect_size_max: float = 2.0
    effect_knee: float = 2.5
    effect_cap: float = 4.0
    idiosyncratic_share: float = 0.02
    idiosyncratic_sd: float = 0.5
    knockdown_residual: float = 0.15
    knockdown_escape_share: float = 0.05
    overexpression_fold: float = 8.0
    overexpression_floor: float = 2.0
    overexpression_saturation: float = 10.0
    double_same_program_share: float = 0.5
    interaction_pair_share: float = 0.3
    interaction_gene_share: float = 0.15
    interaction_min_change: float = 0.1
    interaction_types: dict = field(default_factory=_default_interaction_types)
    panel_min_mean: float = 0.05
    normalisation: str = "transcriptome"
    biology_seed: int | None = None
    calibration: Calibration = DEFAULT_CALIBRATION

    def context_names(self) -> list[str]:
        return [c.name for c in self.contexts]

    def to_dict(self) -> dict:
        """Plain nested dict (JSON-safe) of every parameter."""
        out = asdict(self)
        out["contexts"] = [asdict(c) for c in self.contexts]
        out["go_term_size"] = list(self.go_term_size)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SimulationParams:
        data = dict(data)
        data["contexts"] = tuple(ContextParams(**c) for c in data.get("contexts", []))
        data["go_term_size"] = tuple(data.get("go_term_size", (30, 300)))
        if "calibration" in data and isinstance(data["calibration"], dict):
            data["calibration"] = Calibration(**data["calibration"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_overrides(self, **overrides) -> SimulationParams:
        """Copy with fields replaced; :class:`ContextParams` fields apply to every context.

        ``contexts`` may be given as a dict ``{context name: {field: value}}`` to change one
        context only.
        """
        top = {f.name for f in fields(self)}
        ctx_fields = {f.name for f in fields(ContextParams)}
        mine, for_contexts = {}, {}
        for key, value in overrides.items():
            if key == "contexts" and isinstance(value, dict):
                names = self.context_names()
                unknown = sorted(set(value) - set(names))
                if unknown:
                    raise ValueError(f"unknown contexts {unknown}; this screen has {names}")
                ctxs = tuple(replace(c, **value.get(c.name, {})) for c in self.contexts)
                mine["contexts"] = ctxs
            elif key in top and key != "name":
                mine[key] = value
            elif key in ctx_fields and key != "name":
                for_contexts[key] = value
            else:
                raise ValueError(
                    f"unknown simulation parameter {key!r}. Screen parameters: {sorted(top)}; "
                    f"per-context parameters (applied to every context): {sorted(ctx_fields - {'name'})}"
                )
        out = replace(self, **mine)
        if for_contexts:
            out = replace(out, contexts=tuple(replace(c, **for_contexts) for c in out.contexts))
        return out

    def validate(self) -> None:
        if self.normalisation not in ("transcriptome", "panel"):
            raise ValueError(f"normalisation must be 'transcriptome' or 'panel', not {self.normalisation!r}")
        if self.modality not in ("CRISPRi", "CRISPRa"):
            raise ValueError(f"modality must be 'CRISPRi' or 'CRISPRa', not {self.modality!r}")
        if not self.contexts:
            raise ValueError("a screen needs at least one context")
        names = self.context_names()
        if len(set(names)) != len(names):
            raise ValueError(f"context names must be unique, got {names}")
        if self.n_singles < 1:
            raise ValueError("n_singles must be at least 1")
        if self.n_doubles and self.n_singles < 2:
            raise ValueError("doubles need at least 2 singles")
        if self.n_doubles > self.n_singles * (self.n_singles - 1) // 2:
            raise ValueError(f"{self.n_doubles} doubles do not fit among pairs of {self.n_singles} singles")
        for name, value in [("knowledge_agreement", self.knowledge_agreement), ("no_phenotype_share", self.no_phenotype_share),
                            ("target_program_share", self.target_program_share), ("target_unmeasured_share", self.target_unmeasured_share),
                            ("interaction_pair_share", self.interaction_pair_share), ("interaction_gene_share", self.interaction_gene_share),
                            ("double_same_program_share", self.double_same_program_share)]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.target_program_share + self.target_unmeasured_share > 1.0:
            raise ValueError("target_program_share + target_unmeasured_share must not exceed 1")
        bad = sorted(set(self.interaction_types) - set(INTERACTION_LABELS))
        if bad or not self.interaction_types or min(self.interaction_types.values()) < 0:
            raise ValueError(f"interaction_types must map {INTERACTION_LABELS} to non-negative weights, got {self.interaction_types}")
        for c in self.contexts:
            if not 0.0 <= c.similarity <= 1.0:
                raise ValueError(f"context {c.name}: similarity must lie in [0, 1]")
            if c.cells_per_perturbation < 1 or c.n_control_cells < 1:
                raise ValueError(f"context {c.name}: needs at least one cell per perturbation and one control cell")
            if c.n_singles is not None and not 1 <= c.n_singles <= self.n_singles:
                raise ValueError(f"context {c.name}: n_singles must lie in [1, {self.n_singles}]")


# ----------------------------------------------------------------------------- biology cache

_BIOLOGY_FIELDS = ("n_genes", "n_programs", "program_size", "go_term_size", "knowledge_agreement", "unmeasured_member_share",
                   "spill_share", "target_program_share", "target_unmeasured_share", "panel_min_mean", "biology_seed")


@lru_cache(maxsize=4)
def _cached_biology(key: tuple, calibration: Calibration) -> Biology:
    values = dict(zip(_BIOLOGY_FIELDS, key))
    return make_biology(SimulationParams(**values), calibration)


def biology_of(p: SimulationParams) -> Biology:
    """The :class:`~.biology.Biology` of parameters ``p`` (cached; it depends on the biology fields only)."""
    return _cached_biology(tuple(getattr(p, f) for f in _BIOLOGY_FIELDS), p.calibration)


def select_singles(bio: Biology, p: SimulationParams) -> list[int]:
    """Pool indices of the screen's single perturbations (the first ``n_singles`` eligible targets)."""
    if p.focus_programs is not None:
        eligible = [i for i in range(len(bio.pool)) if 0 <= bio.pool_program[i] < p.focus_programs]
    else:
        eligible = list(range(len(bio.pool)))
    if p.n_singles > len(eligible):
        raise ValueError(
            f"the biology has only {len(eligible)} eligible targets for {p.n_singles} singles; "
            "raise n_genes, n_programs or program_size (or focus_programs), or lower n_singles/scale"
        )
    return eligible[: p.n_singles]


def select_doubles(bio: Biology, p: SimulationParams, singles: list[int]) -> list[tuple[int, int]]:
    """Pairs of singles (pool indices, sorted by gene name) for the double perturbations."""
    if not p.n_doubles:
        return []
    rng = rng_for(bio.seed, _STREAM_PAIRS, p.n_singles)
    by_program: dict[int, list[int]] = {}
    for t in singles:
        by_program.setdefault(int(bio.pool_program[t]), []).append(t)
    groups = [v for k, v in by_program.items() if k >= 0 and len(v) >= 2]
    pairs, seen = [], set()
    tries = 0
    while len(pairs) < p.n_doubles and tries < 100 * p.n_doubles + 1000:
        tries += 1
        if groups and rng.random() < p.double_same_program_share:
            grp = groups[rng.integers(len(groups))]
            a, b = rng.choice(grp, 2, replace=False)
        else:
            a, b = rng.choice(singles, 2, replace=False)
        a, b = sorted((int(a), int(b)), key=lambda t: bio.pool[t])
        if (a, b) in seen:
            continue
        seen.add((a, b))
        pairs.append((a, b))
    if len(pairs) < p.n_doubles:
        raise ValueError(f"could only form {len(pairs)} distinct pairs for {p.n_doubles} doubles")
    return pairs


# ----------------------------------------------------------------------------- truth


def _classify(additive: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Interaction class of an observed change relative to the additive expectation (both vs control).

    ``opposite``: the double's change has the other sign than the additive expectation
    (it crosses to the other side of control); ``synergy``: same sign and larger in size;
    ``buffering``: same sign (or zero) and smaller in size.
    """
    opposite = np.sign(observed) * np.sign(additive) < 0
    synergy = ~opposite & (np.abs(observed) > np.abs(additive))
    return np.where(opposite, "opposite", np.where(synergy, "synergy", "buffering"))


@dataclass
class _ContextTruth:
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


def _kappas(means: np.ndarray, batch_factor: np.ndarray, remainder: np.ndarray) -> np.ndarray:
    """``κ = 1e4 / (R_b + T)`` per (row, batch).

    ``T = Σ_g mean_g · B_bg`` is the expected total of the measured genes at the average library
    size and ``R_b`` the expected UMIs of the unmeasured rest of the transcriptome (0 when ``X``
    is normalised over the measured genes only).
    """
    return TARGET_SUM / (np.asarray(remainder)[None, :] + means @ batch_factor.T)


def _batched_values(table: ExpectedLogTable, gtab: np.ndarray, means: np.ndarray, batch_factor: np.ndarray,
                    remainder: np.ndarray) -> np.ndarray:
    """Batch-averaged ``F`` of every row of ``means`` (cells equally likely in each batch)."""
    kap = _kappas(means, batch_factor, remainder)
    out = np.zeros(means.shape)
    for b in range(batch_factor.shape[0]):
        for start in range(0, means.shape[0], 256):
            sl = slice(start, start + 256)
            out[sl] += table.values(gtab, means[sl] * batch_factor[b], kap[sl, b])
    return out / batch_factor.shape[0]


def _context_means(bio: Biology, p: SimulationParams, ci: int, ctx: ContextParams, singles: list[int],
                   pairs: list[tuple[int, int]], seed: int) -> dict:
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

    rng_b = rng_for(seed, _STREAM_BATCH, ci)
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
    kap = np.concatenate([_kappas(all_means, batch_factor, remainder).ravel(),
                          _kappas(all_means, np.ones((1, bio.n_genes)), np.array([rest])).ravel()])
    mu_max = float((all_means.max(axis=0) * batch_factor.max(axis=0)).max())
    return dict(ctx=ctx, singles=singles, pairs=pairs, eff=eff, m_c=m_c, m_s=m_s, didx=didx, batch_factor=batch_factor,
                batch_library=batch_library, library_mean=library_mean, remainder=remainder, rest=rest,
                sys_shift=sys_shift, mean_gamma=mean_gamma, all_means=all_means, kappa_range=(kap.min(), kap.max()), mu_max=mu_max)


def _shared_table(states: list[dict], p: SimulationParams) -> ExpectedLogTable:
    """One table of ``F`` covering every context (doubles get room for their library shifts)."""
    doubles = any(st["pairs"] for st in states)
    widen = 1.6 if doubles else 1.05
    lo = min(st["kappa_range"][0] for st in states) / widen
    hi = max(st["kappa_range"][1] for st in states) * widen
    mu_max = max(st["mu_max"] for st in states) * (50.0 if doubles else 1.2)
    didx = np.unique(np.concatenate([st["didx"] for st in states]))
    return ExpectedLogTable(didx, (lo, hi), p.calibration.library_log_sd, mu_max=mu_max)


def _context_truth(bio: Biology, p: SimulationParams, state: dict, table: ExpectedLogTable) -> tuple[_ContextTruth, list[int]]:
    """Second step: true changes (and the doubles' means) from the shared table."""
    ctx, singles, pairs, eff = state["ctx"], state["singles"], state["pairs"], state["eff"]
    m_c, m_s, didx, batch_factor = state["m_c"], state["m_s"], state["didx"], state["batch_factor"]
    sys_shift, mean_gamma, all_means = state["sys_shift"], state["mean_gamma"], state["all_means"]
    gtab = table.gene_tables(didx)

    f_all = _batched_values(table, gtab, all_means, batch_factor, state["remainder"])
    ctrl_value = f_all[0]
    changes_s = f_all[1:-1] - ctrl_value
    systematic = f_all[-1] - ctrl_value

    names = [bio.pool[t] for t in singles]
    index_of = {t: i for i, t in enumerate(singles)}
    rec = pd.DataFrame({
        "perturbation": names,
        "n_targets": 1,
        "targets": names,
        "program": [bio.programs[j].name if j >= 0 else "" for j in bio.pool_program[singles]],
        "target_measured": bio.pool_measured[singles].astype(bool),
        "strength": eff["strength"],
        "no_phenotype": eff["strength"] == 0,
        "self_log_shift": eff["self_shift"],
        "knockdown_escape": eff["escape"],
        "systematic_weight": eff["gamma"],
        "interacting": False,
    })

    changes_d = np.zeros((len(pairs), bio.n_genes))
    m_d = np.zeros((len(pairs), bio.n_genes))
    inter_rows = []
    if pairs:
        ref = np.ones((1, bio.n_genes))
        f_ref = _batched_values(table, gtab, np.vstack([m_c[None, :], m_s]), ref, np.array([state["rest"]]))
        ref_ctrl, ref_change = f_ref[0], f_ref[1:] - f_ref[0]
        d_records = []
        for d, (a, b) in enumerate(pairs):
            name = f"{bio.pool[a]}+{bio.pool[b]}"
            rng = rng_for(bio.seed, _STREAM_PAIRS, stable_hash(name), stable_hash(ctx.name))
            additive = ref_change[index_of[a]] + ref_change[index_of[b]]
            target = additive.copy()
            interacting = rng.random() < p.interaction_pair_share
            designed = np.zeros(bio.n_genes, dtype=bool)
            kind = np.array([""] * bio.n_genes, dtype=object)
            if interacting:
                own = [bio.gene_index.get(bio.pool[a], -1), bio.gene_index.get(bio.pool[b], -1)]
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
            d_records.append({"perturbation": name, "n_targets": 2, "targets": name,
                              "program": "+".join(bio.programs[j].name if j >= 0 else "" for j in bio.pool_program[[a, b]]),
                              "target_measured": bool(bio.pool_measured[a] and bio.pool_measured[b]),
                              "strength": np.nan, "no_phenotype": False, "self_log_shift": np.nan, "knockdown_escape": False,
                              "systematic_weight": np.nan, "interacting": bool(interacting)})
            inter_rows.append((name, a, b, designed, kind, floor, saturated))
        kap_d = _kappas(m_d, batch_factor, state["remainder"])
        lo, hi = np.exp(table.ln_kappa[0]), np.exp(table.ln_kappa[-1])
        if kap_d.min() < lo or kap_d.max() > hi:  # rare: a double moved the library a lot
            table = ExpectedLogTable(np.unique(didx), (min(lo, kap_d.min() / 1.05), max(hi, kap_d.max() * 1.05)),
                                     p.calibration.library_log_sd, mu_max=np.exp(table.ln_mu[-1]) / 1.05)
            gtab = table.gene_tables(didx)
        changes_d = _batched_values(table, gtab, m_d, batch_factor, state["remainder"]) - ctrl_value
        rec = pd.concat([rec, pd.DataFrame(d_records)], ignore_index=True)

    # interaction labels from the final (batch-averaged) truth
    label_frames = []
    for d, (name, a, b, designed, kind, floor, saturated) in enumerate(inter_rows):
        additive = changes_s[index_of[a]] + changes_s[index_of[b]]
        observed = changes_d[d]
        deviation = observed - additive
        keep = designed | (np.abs(deviation) > LABEL_TOLERANCE)
        if not keep.any():
            continue
        g = np.flatnonzero(keep)
        label_frames.append(pd.DataFrame({
            "perturbation": name,
            "gene": bio.genes[g],
            "label": _classify(additive[g], observed[g]),
            "deviation": deviation[g].astype(np.float32),
            "additive_change": additive[g].astype(np.float32),
            "true_change": observed[g].astype(np.float32),
            "designed": designed[g],
            "designed_as": kind[g].astype(str),
            "source": np.where(designed[g], "designed", np.where(floor[g], "floor", np.where(saturated[g], "saturation", "normalisation"))),
        }))
    interactions = (pd.concat(label_frames, ignore_index=True) if label_frames
                    else pd.DataFrame(columns=["perturbation", "gene", "label", "deviation", "additive_change", "true_change", "designed",
                                          "designed_as", "source"]))

    names_all = names + [f"{bio.pool[a]}+{bio.pool[b]}" for a, b in pairs]
    rec.insert(0, "context", ctx.name)
    truth = _ContextTruth(
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


# ----------------------------------------------------------------------------- cells


def _cells_of_group(rng, n_cells: int, means: np.ndarray, truth: _ContextTruth, p: SimulationParams):
    batches = rng.integers(p.n_batches, size=n_cells)
    sd = p.calibration.library_log_sd
    ell = np.exp(rng.normal(-0.5 * sd**2, sd, n_cells))
    block_means = means[None, :] * truth.batch_factor[batches]
    counts = sample_block(rng, ell, block_means, DISPERSION_GRID[truth.dispersion_index])
    # library size over the whole simulated transcriptome, like obs['ncounts'] of real files: the
    # measured genes' UMIs plus the expected UMIs of the unmeasured rest (scaled by the cell's ℓ)
    ncounts = np.rint(ell * truth.rest * truth.batch_library[batches]) + np.asarray(counts.sum(axis=1)).ravel()
    return counts, batches, ncounts


def _n_cells(rng, mean_cells: int, p: SimulationParams) -> int:
    if p.cells_cv <= 0:
        return int(mean_cells)
    s = np.sqrt(np.log1p(p.cells_cv**2))
    return int(max(p.min_cells, round(mean_cells * rng.lognormal(-0.5 * s * s, s))))


def _log_normalise_data(counts: sp.csr_matrix, totals: np.ndarray) -> np.ndarray:
    """``log1p(c · 1e4 / total)`` for the stored entries of a CSR block (float32)."""
    totals = np.asarray(totals, dtype=np.float64)
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)
    return np.log1p(counts.data * np.repeat(scale, np.diff(counts.indptr)))


class _Assembler:
    """Appends CSR blocks into preallocated arrays (grown when needed) to keep memory flat."""

    def __init__(self, n_genes: int, capacity: int):
        self.n_genes = n_genes
        self.counts = np.empty(capacity, dtype=np.float32)
        self.x = np.empty(capacity, dtype=np.float32)
        self.indices = np.empty(capacity, dtype=np.int32)
        self.indptr = [np.zeros(1, dtype=np.int64)]
        self.nnz = 0

    def add(self, block: sp.csr_matrix, x_data: np.ndarray) -> None:
        nnz = block.nnz
        if self.nnz + nnz > self.counts.size:
            new = int(max(self.nnz + nnz, self.counts.size * 1.25))
            for name in ("counts", "x", "indices"):
                getattr(self, name).resize(new, refcheck=False)
        sl = slice(self.nnz, self.nnz + nnz)
        self.counts[sl] = block.data
        self.indices[sl] = block.indices
        self.x[sl] = x_data
        self.indptr.append(self.nnz + block.indptr[1:].astype(np.int64))
        self.nnz += nnz

    def finish(self):
        for name in ("counts", "x", "indices"):
            getattr(self, name).resize(self.nnz, refcheck=False)
        indptr = np.concatenate(self.indptr)
        if self.nnz < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        n_cells = indptr.size - 1
        shape = (n_cells, self.n_genes)
        X = sp.csr_matrix((self.x, self.indices, indptr), shape=shape, copy=False)
        counts = sp.csr_matrix((self.counts, self.indices, indptr), shape=shape, copy=False)
        return X, counts


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is not None:
        return max(1, int(n_jobs))
    return max(1, min(2, os.cpu_count() or 1))


# ----------------------------------------------------------------------------- main entry


def simulate_screen(params: SimulationParams, seed: int = 0, n_jobs: int | None = None, progress: bool = False):
    """Simulate a Perturb-seq screen with known ground truth.

    Parameters
    ----------
    params
        Every knob, see :class:`SimulationParams` and :class:`ContextParams`.
    seed
        Draws batches and cells (and the biology too when ``params.biology_seed`` is None).
        Same parameters and seed give identical data, whatever ``n_jobs``.
    n_jobs
        Threads that draw cells (default: up to 2).
    progress
        Show a progress bar over blocks of cells.

    Returns
    -------
    AnnData
        Canonical screen (``helpers.data.canonical.validate`` passes): ``obs['perturbation']``,
        ``obs['n_targets']``, ``obs['batch']`` (gem group), ``obs['context']`` when there are
        several contexts, and ``obs['ncounts']`` (the cell's library size over the whole simulated
        transcriptome, like the real files' column; the measured genes hold a share of it);
        ``X = log1p(counts · 1e4 / ncounts)`` (float32 CSR; with ``normalisation="panel"``,
        ``log_normalise(counts)``); ``layers['counts']`` the UMI counts; ``var`` has the gene's program, mean and dispersion.
        The ground truth is in ``uns['simulation']``; read it with :func:`true_changes`,
        :func:`systematic_component`, :func:`interaction_labels` and :func:`perturbation_truth`.
    """
    import anndata as ad

    if not isinstance(params, SimulationParams):
        raise TypeError("params must be a SimulationParams")
    p = params if params.biology_seed is not None else replace(params, biology_seed=int(seed))
    p.validate()
    bio = biology_of(p)
    singles = select_singles(bio, p)
    pairs = select_doubles(bio, p, singles)
    multi = len(p.contexts) > 1

    truths, groups = [], []
    states = [_context_means(bio, p, ci, ctx, singles, pairs, seed) for ci, ctx in enumerate(p.contexts)]
    table = _shared_table(states, p)
    for ci, ctx in enumerate(p.contexts):
        truth, ctx_singles = _context_truth(bio, p, states[ci], table)
        states[ci] = None  # free the intermediate arrays
        truths.append(truth)
        n_ctrl = int(ctx.n_control_cells)
        for chunk, start in enumerate(range(0, n_ctrl, CONTROL_CHUNK)):
            groups.append((ci, CONTROL, truth.control_mean, ("control", chunk), min(CONTROL_CHUNK, n_ctrl - start)))
        for row, name in enumerate(truth.perturbations):
            key = ("single", ctx_singles[row]) if row < len(ctx_singles) else ("double", stable_hash(name))
            groups.append((ci, name, truth.pert_means[row], key, None))

    def make(group):
        ci, name, means, key, n_fixed = group
        kind = {"control": 0, "single": 1, "double": 2}[key[0]]
        rng = rng_for(seed, _STREAM_CELLS, ci, kind, key[1])
        n_cells = n_fixed if n_fixed is not None else _n_cells(rng, p.contexts[ci].cells_per_perturbation, p)
        counts, batches, ncounts = _cells_of_group(rng, n_cells, means, truths[ci], p)
        return counts, _log_normalise_data(counts, ncounts), batches, ncounts

    # expected non-zeros, to preallocate (an overestimate: detection is concave in the mean)
    estimate = 0
    for ci, name, means, key, n_fixed in groups:
        n = n_fixed if n_fixed is not None else p.contexts[ci].cells_per_perturbation
        phi = DISPERSION_GRID[truths[ci].dispersion_index]
        estimate += n * float(np.sum(1.0 - (1.0 + phi * means) ** (-1.0 / phi)))
    assembler = _Assembler(bio.n_genes, int(estimate * 1.05) + 1000)
    obs_parts = []
    bar = None
    if progress:
        from ...progress import progress as tqdm

        bar = tqdm(total=len(groups), desc=f"simulating {p.name}", unit="block")
    with ThreadPoolExecutor(_n_jobs(n_jobs)) as pool:
        for group, (counts, x_data, batches, ncounts) in zip(groups, pool.map(make, groups)):
            ci = group[0]
            assembler.add(counts, x_data)
            obs_parts.append((ci, group[1], batches, ncounts))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    X, counts = assembler.finish()

    ctx_codes = np.concatenate([np.full(b.size, ci) for ci, _, b, _ in obs_parts])
    pert = np.concatenate([np.full(b.size, name, dtype=object) for _, name, b, _ in obs_parts])
    batch = np.concatenate([b for _, _, b, _ in obs_parts])
    ncounts = np.concatenate([n for _, _, _, n in obs_parts]).astype(np.float32)
    names = p.context_names()
    batch_labels = [f"{names[c]}_gem{b + 1}" if multi else f"gem{b + 1}" for c in range(len(names)) for b in range(p.n_batches)]
    obs = pd.DataFrame(index=pd.Index([f"cell{i:07d}" for i in range(pert.size)]))
    categories = [CONTROL] + sorted({n for t in truths for n in t.perturbations})
    obs["perturbation"] = pd.Categorical(pert, categories=categories)
    obs["n_targets"] = np.array([0 if n == CONTROL else n.count("+") + 1 for n in categories])[obs["perturbation"].cat.codes]
    obs["batch"] = pd.Categorical.from_codes(ctx_codes * p.n_batches + batch, categories=batch_labels)
    if multi:
        obs["context"] = pd.Categorical.from_codes(ctx_codes, categories=names)
    obs["ncounts"] = ncounts
    var = pd.DataFrame(index=pd.Index(bio.genes.astype(str)))
    var["program"] = [bio.programs[j].name if j >= 0 else "" for j in bio.gene_program]
    var["mean_umis"] = truths[0].control_mean.astype(np.float32)
    var["dispersion"] = DISPERSION_GRID[truths[0].dispersion_index].astype(np.float32)
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": counts})
    adata.uns["simulation"] = _truth_uns(p, seed, bio, truths)
    return adata


def _truth_uns(p: SimulationParams, seed: int, bio: Biology, truths: list[_ContextTruth]) -> dict:
    names = p.context_names()
    programs = pd.DataFrame({
        "program": [pr.name for pr in bio.programs],
        "go_term": [pr.go_term for pr in bio.programs],
        "n_members": [len(pr.members) for pr in bio.programs],
        "n_from_go_term": [pr.from_go for pr in bio.programs],
        "n_measured": [int((bio.gene_program == j).sum()) for j in range(len(bio.programs))],
        "members": [";".join(pr.members) for pr in bio.programs],
    })
    records = pd.concat([t.records for t in truths], ignore_index=True)
    interactions = pd.concat([t.interactions.assign(context=n) for t, n in zip(truths, names)], ignore_index=True)
    params_dict = p.to_dict()
    return {
        "version": 1,
        "seed": int(seed),
        "params_json": json.dumps(params_dict),
        "params": _h5_safe(params_dict),
        "contexts": np.array(names, dtype=object),
        "genes": np.array(bio.genes, dtype=object),
        "true_changes": {n: t.changes.astype(np.float32) for n, t in zip(names, truths)},
        "perturbations": {n: np.array(t.perturbations, dtype=object) for n, t in zip(names, truths)},
        "systematic": {n: t.systematic.astype(np.float32) for n, t in zip(names, truths)},
        "systematic_log_mean": {n: t.systematic_log_mean.astype(np.float32) for n, t in zip(names, truths)},
        "control_mean_umis": {n: t.control_mean.astype(np.float32) for n, t in zip(names, truths)},
        "perturbation_truth": records,
        "interactions": interactions,
        "programs": programs,
    }


def _h5_safe(value):
    """Plain dict for ``uns``: drop ``None`` (h5ad cannot store it), lists become arrays."""
    if isinstance(value, dict):
        return {str(k): _h5_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            return {str(i): _h5_safe(v) for i, v in enumerate(value)}
        return np.array(value)
    return value


# ----------------------------------------------------------------------------- accessors


def _sim(adata) -> dict:
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


def _gene_axis(adata, sim) -> tuple[pd.Index, np.ndarray | None]:
    genes = pd.Index(np.asarray(sim["genes"]).astype(str))
    current = pd.Index(adata.var_names.astype(str))
    if current.equals(genes):
        return genes, None
    missing = current.difference(genes)
    if len(missing):
        raise DataError(f"{len(missing)} genes of this AnnData are not in the simulation (e.g. {list(missing[:3])}).")
    return current, genes.get_indexer(current)


def true_changes(adata, context: str | None = None) -> pd.DataFrame:
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


def systematic_component(adata, context: str | None = None) -> pd.Series:
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


def interaction_labels(adata, context: str | None = None) -> pd.DataFrame:
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

    These are the classes of Ahlmann-Eltze et al. (METHODS.md A.5, step 4) with the additive
    prediction as reference. ``deviation = Δ_AB − add`` is the true deviation from additivity;
    ``designed_as`` is the type the simulator put there (the ``label`` is computed from the final
    truth, so it can differ where saturation or the floor also acted).
    Every gene not listed has ``|deviation| ≤ 0.05`` (:data:`LABEL_TOLERANCE`).
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


def perturbation_truth(adata, context: str | None = None) -> pd.DataFrame:
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


def simulation_params(adata) -> SimulationParams:
    """The :class:`SimulationParams` a simulated screen was generated with."""
    return SimulationParams.from_dict(json.loads(str(_sim(adata)["params_json"])))
