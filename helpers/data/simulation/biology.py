"""The simulated "biology": genes, gene programs, perturbation targets and their effects.

Everything here is drawn from ``biology_seed`` alone (never from the seed that draws the
cells), so several screens built on the same biology — the K562-like and RPE1-like presets,
the four cell lines of ``essential_like`` — measure the same genes and perturb the same targets,
with related but context-specific effects.

Structure (all effects are shifts of the log negative-binomial mean, "log-mean shifts"):

* **Genes.** ``n_genes`` real human gene symbols (from the shipped GO annotations). Gene
  abundances are drawn from the calibrated log-normal transcriptome (truncated to the genes a
  panel would keep, see :func:`draw_abundances`), except a share of barely expressed genes
  (:func:`draw_low_expression`); dispersions from the calibrated trend with a gene-to-gene
  scatter; each gene has a capacity ``C_g`` for the saturating combination of doubles.
* **Programs.** ``n_programs`` gene programs. Program ``j`` is seeded from a Gene Ontology
  term: each of its ``program_size`` members comes from that term with probability
  ``knowledge_agreement`` and is a random gene otherwise. A program's response ``R_j`` moves
  its members together (mostly in one direction, heavy-tailed sizes: a few members strongly,
  most weakly) and spills onto a few other genes.
* **Targets.** An ordered pool of perturbation targets: mostly program members (the
  perturbation then drives its program's response), some genes outside every program (only
  a small gene-specific response), and a few program members that are *not measured* (their
  knock-down still has an effect, but no model can embed them through the gene panel). A
  screen with ``n`` singles perturbs the first ``n`` targets of the pool, so larger screens
  extend smaller ones.
* **Single-perturbation effect** of target ``t`` in context ``k``::

      δ_t = α_k · a_t · e^{η_tk} · (v_t R^k + ε_t^k)  +  γ_t^k · σ_k · s^k

  ``a_t`` heavy-tailed strength (0 for the share without phenotype), ``v_t`` the indicator of
  the program the target *drives* (its own program as a read-out with probability
  ``readout_coupling``, else another target's, :func:`driven_program`; in a context with
  ``relatedness < 1`` a share is rewired again) plus small random mixing over programs, ``ε_t`` a sparse gene-specific
  effect, ``R^k``, ``ε^k``, ``s^k`` mixtures of shared and context-specific draws with weight
  ``similarity``, ``α_k`` the context's effect scale, ``σ_k`` its systematic strength and ``s``
  the systematic direction shared by all perturbed cells. The target's own gene gets the
  self-effect instead (knock-down for CRISPRi, over-expression for CRISPRa).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import norm, truncnorm

from .truth import DISPERSION_GRID, snap_dispersion

if TYPE_CHECKING:
    from .calibration import Calibration

# ``p`` and ``ctx`` below are a SimulationParams and a ContextParams: .params sits above this module in the
# simulator's import order (tests/test_simulation_package.py), so they are typed Any instead of imported.

# Stream identifiers for SeedSequence spawn keys, so that each random quantity has its own
# independent, stable stream.
_STREAM_GENES, _STREAM_PROGRAMS, _STREAM_POOL, _STREAM_TARGET, _STREAM_CONTEXT, _STREAM_PAIR = range(6)
# Sub-streams of the mechanisms added later (keyed under the streams above, so that switching a
# mechanism off leaves every other draw of the screen unchanged).
_SUB_LOW_EXPRESSION, _SUB_CAPACITY, _SUB_WIRING = 1, 2, 3


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every Python process (unlike ``hash``)."""
    return zlib.crc32(text.encode("utf-8"))


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """Generator of the independent stream ``key`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


@lru_cache(maxsize=1)
def _go_index():
    """(sorted gene symbols, {GO term: sorted genes}) from the shipped annotations."""
    from ..annotations import load_gene_go

    gene_go = load_gene_go()
    genes = sorted(g for g, terms in gene_go.items() if terms)
    terms = defaultdict(list)
    for gene in genes:
        for term in gene_go[gene]:
            terms[term].append(gene)
    return tuple(genes), {t: tuple(v) for t, v in terms.items()}


def draw_abundances(rng: np.random.Generator, n: int, calibration: Calibration, min_mean: float, library_mean: float) -> np.ndarray:
    """Relative abundances ``π_g`` (share of a cell's transcriptome) of ``n`` panel genes.

    The transcriptome has ``N`` genes with ``log π ~ N(m, σ)`` (calibrated ``σ``; ``m`` such
    that ``Σ π = 1`` in expectation). A panel keeps genes with at least ``min_mean`` UMIs per
    cell at the average library size (like a detection filter before choosing highly variable
    genes); if fewer than ``n`` genes pass, the threshold is lowered to the ``n``-th most
    abundant. The panel's genes are a random draw from the truncated distribution.
    """
    sigma = calibration.abundance_log_sd
    big_n = calibration.n_transcriptome
    m = -np.log(big_n) - 0.5 * sigma**2  # E[π] = 1/N
    z_thr = (np.log(min_mean / library_mean) - m) / sigma
    z_quota = norm.ppf(max(0.0, 1.0 - n / big_n)) if n < big_n else -np.inf
    z_lo = min(z_thr, z_quota)
    z = truncnorm.rvs(z_lo, np.inf, size=n, random_state=rng)
    return np.exp(m + sigma * z)


def draw_low_expression(
    rng: np.random.Generator, abundance: np.ndarray, share: float, floor: float, min_mean: float, library_mean: float
) -> np.ndarray:
    """Make ``share`` of the genes barely expressed: mean UMIs per cell log-uniform in ``[floor, min_mean]``.

    The genes are a random subset (``round(share · n)`` of them); the others keep ``abundance``.
    Returns the new abundances (share of the transcriptome, ``mean / library_mean``).
    """
    n = abundance.size
    k = int(round(share * n))
    if k == 0:
        return abundance
    out = abundance.copy()
    chosen = rng.choice(n, k, replace=False)
    out[chosen] = np.exp(rng.uniform(np.log(floor), np.log(min_mean), k)) / library_mean
    return out


@dataclass
class Program:
    name: str
    go_term: str
    members: tuple[str, ...]  # measured and unmeasured members
    from_go: int  # members drawn from the GO term


@dataclass
class Biology:
    """Genes, programs and target pool of one simulated biology (see the module docstring)."""

    seed: int
    genes: np.ndarray  # panel gene symbols (sorted)
    abundance: np.ndarray  # π_g, share of a cell's transcriptome
    dispersion_index: np.ndarray  # index into DISPERSION_GRID
    gene_program: np.ndarray  # program index of each panel gene, −1 for none
    capacity: np.ndarray  # C_g, gene-specific capacity of the saturating combination of doubles
    programs: list[Program]
    response: np.ndarray  # n_programs x n_genes, shared program responses R
    systematic: np.ndarray  # n_genes, shared systematic direction s (RMS 1)
    pool: list[str]  # ordered targets
    pool_program: np.ndarray  # program index of each pool target (−1 none)
    pool_measured: np.ndarray  # bool
    gene_index: dict = field(default_factory=dict)

    @property
    def dispersion(self) -> np.ndarray:
        return DISPERSION_GRID[self.dispersion_index]

    @property
    def n_genes(self) -> int:
        return self.genes.size


def _program_response(rng: np.random.Generator, members_idx: np.ndarray, n_genes: int, p: Any) -> np.ndarray:
    """One program's response: members move together, a few other genes move a little.

    Member magnitudes are ``LogNormal(0, σ) · e^{1/4 − σ²}`` (``σ = p.response_log_sd``), so their
    root mean square is ``e^{1/4}`` whatever ``σ`` (the value of ``σ = 1/2``): a larger ``σ`` puts
    the same total response on fewer genes (heavy tail), capped at ``p.response_max``. Spill-over:
    ``p.spill_share`` of the other genes get ``N(0, p.spill_sd)``.
    """
    r = np.zeros(n_genes)
    sigma = float(p.response_log_sd)
    direction = rng.choice([-1.0, 1.0])
    signs = np.where(rng.random(members_idx.size) < 0.85, direction, -direction)
    r[members_idx] = signs * np.minimum(rng.lognormal(0.0, sigma, members_idx.size) * np.exp(0.25 - sigma**2), p.response_max)
    spill = np.flatnonzero(rng.random(n_genes) < p.spill_share)
    spill = np.setdiff1d(spill, members_idx)
    r[spill] += rng.normal(0.0, p.spill_sd, spill.size)
    return r


def make_biology(p: Any, calibration: Calibration) -> Biology:
    """Draw the biology for simulation parameters ``p`` (see :class:`SimulationParams`)."""
    seed = p.biology_seed
    all_genes, terms = _go_index()
    all_genes = np.array(all_genes)
    rng = rng_for(seed, _STREAM_PROGRAMS)

    # --- programs seeded from GO terms of suitable size, overlapping little
    lo, hi = p.go_term_size
    eligible = sorted(t for t, g in terms.items() if lo <= len(g) <= hi)
    order = rng.permutation(len(eligible))
    taken: set[str] = set()
    programs: list[Program] = []
    n_unmeasured_per_program = int(round(p.program_size * p.unmeasured_member_share))
    for ti in order:
        if len(programs) == p.n_programs:
            break
        term = eligible[ti]
        candidates = [g for g in terms[term] if g not in taken]
        if len(candidates) < 0.7 * len(terms[term]) or len(candidates) < 10:
            continue  # overlaps an earlier program too much
        n_go = int(rng.binomial(p.program_size, p.knowledge_agreement))
        n_go = min(n_go, len(candidates))
        from_go = list(rng.choice(candidates, n_go, replace=False)) if n_go else []
        taken.update(from_go)
        pool_random = all_genes[~np.isin(all_genes, list(taken))]
        rand = list(rng.choice(pool_random, p.program_size - n_go, replace=False))
        taken.update(rand)
        members = from_go + rand
        members = [members[i] for i in rng.permutation(len(members))]
        programs.append(Program(f"P{len(programs) + 1:02d}", term, tuple(members), n_go))
    if len(programs) < p.n_programs:
        raise ValueError(f"only {len(programs)} GO terms fit the program settings; lower n_programs or widen go_term_size")

    measured_members = [g for prog in programs for g in prog.members[n_unmeasured_per_program:]]
    unmeasured = [(g, j) for j, prog in enumerate(programs) for g in prog.members[:n_unmeasured_per_program]]
    if len(measured_members) > 0.6 * p.n_genes:
        raise ValueError(
            f"{len(measured_members)} program members do not fit a panel of {p.n_genes} genes; lower n_programs or program_size"
        )

    # --- the gene panel: measured program members plus random background genes
    rng_g = rng_for(seed, _STREAM_GENES)
    excluded = set(taken)
    background_pool = all_genes[~np.isin(all_genes, list(excluded))]
    background = rng_g.choice(background_pool, p.n_genes - len(measured_members), replace=False)
    genes = np.array(sorted(set(measured_members) | set(background.tolist())))
    gene_index = {g: i for i, g in enumerate(genes)}
    library_mean = np.exp(calibration.library_log_mean + 0.5 * calibration.library_log_sd**2)
    abundance = draw_abundances(rng_g, genes.size, calibration, p.panel_min_mean, library_mean)
    trend = calibration.dispersion_trend(abundance * library_mean)
    phi = trend * np.exp(rng_g.normal(0.0, calibration.dispersion_log_sd * p.dispersion_heterogeneity, genes.size))
    if p.low_expression_share > 0:
        # barely expressed genes keep their dispersion scatter around the trend at their new mean
        low = draw_low_expression(
            rng_for(seed, _STREAM_GENES, _SUB_LOW_EXPRESSION),
            abundance,
            p.low_expression_share,
            p.low_expression_floor,
            p.panel_min_mean,
            library_mean,
        )
        changed = low != abundance
        phi[changed] *= calibration.dispersion_trend(low[changed] * library_mean) / trend[changed]
        abundance = low
    dispersion_index = snap_dispersion(phi)
    capacity = np.exp(
        np.log(p.gene_capacity) + p.gene_capacity_sd * rng_for(seed, _STREAM_GENES, _SUB_CAPACITY).standard_normal(genes.size)
    )
    gene_program = np.full(genes.size, -1)
    for j, prog in enumerate(programs):
        for g in prog.members[n_unmeasured_per_program:]:
            gene_program[gene_index[g]] = j

    # --- shared program responses and systematic direction
    response = np.zeros((len(programs), genes.size))
    for j in range(len(programs)):
        members_idx = np.flatnonzero(gene_program == j)
        response[j] = _program_response(rng_for(seed, _STREAM_PROGRAMS, 1, j), members_idx, genes.size, p)
    systematic = _systematic_direction(rng_for(seed, _STREAM_PROGRAMS, 2), genes.size)

    # --- ordered target pool
    rng_p = rng_for(seed, _STREAM_POOL)
    in_prog = [gene_index[g] for g in measured_members]
    in_prog = [in_prog[i] for i in rng_p.permutation(len(in_prog))]
    outside = np.flatnonzero(gene_program < 0)
    outside = outside[rng_p.permutation(outside.size)].tolist()
    unmeasured = [unmeasured[i] for i in rng_p.permutation(len(unmeasured))]
    lists = {
        "unmeasured": [(g, j, False) for g, j in unmeasured],
        "program": [(genes[gi], gene_program[gi], True) for gi in in_prog],
        "outside": [(genes[gi], -1, True) for gi in outside],
    }
    pool, pool_program, pool_measured = [], [], []
    while any(lists.values()):
        u = rng_p.random()
        if u < p.target_unmeasured_share:
            first = "unmeasured"
        elif u < p.target_unmeasured_share + p.target_program_share:
            first = "program"
        else:
            first = "outside"
        for kind in (first, "program", "outside", "unmeasured"):
            if lists[kind]:
                g, j, measured = lists[kind].pop()
                pool.append(str(g)), pool_program.append(int(j)), pool_measured.append(measured)
                break
    return Biology(
        seed=seed,
        genes=genes,
        abundance=abundance,
        dispersion_index=dispersion_index,
        gene_program=gene_program,
        capacity=capacity,
        programs=programs,
        response=response,
        systematic=systematic,
        pool=pool,
        pool_program=np.array(pool_program),
        pool_measured=np.array(pool_measured),
        gene_index=gene_index,
    )


def _systematic_direction(rng: np.random.Generator, n_genes: int) -> np.ndarray:
    """Direction of the response shared by perturbed cells: broad, with a stronger core (RMS 1)."""
    s = rng.normal(0.0, 0.5, n_genes)
    core = rng.random(n_genes) < 0.1
    s[core] += rng.normal(0.0, 2.0, core.sum())
    return s / np.sqrt(np.mean(s**2))


def soft_cap(x: np.ndarray, knee: float, cap: float) -> np.ndarray:
    """Identity for ``|x| ≤ knee``, then bends smoothly towards ``±cap`` (responses saturate)."""
    x = np.asarray(x, dtype=np.float64)
    over = np.abs(x) - knee
    bent = np.sign(x) * (knee + (cap - knee) * np.tanh(np.maximum(over, 0.0) / (cap - knee)))
    return np.where(over > 0, bent, x)


def _mix(shared: np.ndarray, specific: np.ndarray, similarity: float) -> np.ndarray:
    return np.sqrt(similarity) * shared + np.sqrt(1.0 - similarity) * specific


def _rewired(rng: np.random.Generator, bio: Biology, own: int, keep: float) -> int:
    """``own`` with probability ``keep``, else the program of a random pool target (one uniform, one index drawn always)."""
    u, other = rng.random(), int(rng.integers(len(bio.pool)))
    return own if u < keep else int(bio.pool_program[other])


def driven_program(bio: Biology, p: Any, pool_index: int) -> int:
    """The program target ``pool_index`` drives when perturbed (−1: none), before any context rewiring.

    With probability ``p.readout_coupling`` it is the program the target belongs to as a read-out
    (``bio.pool_program``); otherwise the program (or none) of another target drawn uniformly from
    the pool, independent of the target's own membership.
    """
    own = int(bio.pool_program[pool_index])
    if p.readout_coupling >= 1.0:
        return own
    return _rewired(rng_for(bio.seed, _STREAM_TARGET, pool_index, _SUB_WIRING), bio, own, p.readout_coupling)


@dataclass
class TargetDraw:
    """Context-independent random draws of one pool target."""

    strength: float  # a_t (0 = no phenotype)
    mixing: np.ndarray  # v_t over programs
    idiosyncratic: np.ndarray  # ε_t over genes
    self_effect: float  # log-mean shift of the target gene (before the context factor)
    knockdown_escape: bool
    driven: int  # program the target drives (−1 none), before context rewiring


def target_draw(bio: Biology, p: Any, pool_index: int) -> TargetDraw:
    """The base draws of target ``pool_index`` (independent of which screen uses it)."""
    rng = rng_for(bio.seed, _STREAM_TARGET, pool_index)
    n_prog, n_genes = bio.response.shape
    no_phenotype = rng.random() < p.no_phenotype_share
    strength = 0.0 if no_phenotype else float(min(rng.lognormal(np.log(p.effect_size_median), p.effect_size_sigma), p.effect_size_max))
    mixing = rng.normal(0.0, p.program_mixing, n_prog)
    j = driven_program(bio, p, pool_index)
    if j >= 0:
        mixing[j] += 1.0
    idio = np.zeros(n_genes)
    hit = np.flatnonzero(rng.random(n_genes) < p.idiosyncratic_share)
    idio[hit] = rng.normal(0.0, p.idiosyncratic_sd, hit.size)
    if p.modality == "CRISPRi":
        escape = rng.random() < p.knockdown_escape_share
        residual = rng.uniform(0.6, 1.0) if escape else float(np.clip(rng.lognormal(np.log(p.knockdown_residual), 0.5), 0.02, 0.6))
        self_effect = float(np.log(residual))
    else:
        escape = False
        self_effect = float(rng.lognormal(np.log(p.overexpression_fold), 0.7))  # fold; turned into a shift later
    return TargetDraw(strength, mixing, idio, self_effect, escape, j)


@dataclass
class ContextBiology:
    """Context-specific versions of the shared responses."""

    response: np.ndarray  # R^k
    systematic: np.ndarray  # s^k (RMS 1)


def context_biology(bio: Biology, p: Any, ctx: Any) -> ContextBiology:
    key = stable_hash(ctx.name)
    rng = rng_for(bio.seed, _STREAM_CONTEXT, key)
    own = np.zeros_like(bio.response)
    for j in range(own.shape[0]):
        own[j] = _program_response(rng_for(bio.seed, _STREAM_CONTEXT, key, 1, j), np.flatnonzero(bio.gene_program == j), bio.n_genes, p)
    # keep each member's direction (so programs stay recognisable) but redraw magnitudes and spill-over
    own = np.where(bio.gene_program[None, :] == np.arange(own.shape[0])[:, None], np.abs(own) * np.sign(bio.response), own)
    response = _mix(bio.response, own, ctx.similarity)
    systematic = _mix(bio.systematic, _systematic_direction(rng, bio.n_genes), ctx.similarity)
    systematic /= np.sqrt(np.mean(systematic**2))
    return ContextBiology(response, systematic)


def single_effects(bio: Biology, cbio: ContextBiology, p: Any, ctx: Any, pool_indices: Sequence[int]) -> dict:
    """Log-mean shifts of the singles ``pool_indices`` in one context.

    Returns a dict with ``specific`` (n x genes, program + idiosyncratic part incl. the
    self-effect), ``systematic_weight`` (γ_t, n) and per-target records for the truth table.
    """
    key = stable_hash(ctx.name)
    n = len(pool_indices)
    specific = np.zeros((n, bio.n_genes))
    gamma = np.zeros(n)
    strength = np.zeros(n)
    self_shift = np.full(n, np.nan)
    escape = np.zeros(n, dtype=bool)
    driven = np.full(n, -1)
    for row, t in enumerate(pool_indices):
        base = target_draw(bio, p, t)
        mixing = base.mixing
        driven[row] = base.driven
        if ctx.relatedness < 1.0:
            # context rewiring: this cell line may route the target through another program
            j = _rewired(rng_for(bio.seed, _STREAM_CONTEXT, key, 3, t), bio, base.driven, ctx.relatedness)
            if j != base.driven:
                mixing = mixing.copy()
                if base.driven >= 0:
                    mixing[base.driven] -= 1.0
                if j >= 0:
                    mixing[j] += 1.0
                driven[row] = j
        rng = rng_for(bio.seed, _STREAM_CONTEXT, key, 2, t)
        eta = rng.normal(0.0, ctx.strength_sd)
        idio_own = np.zeros(bio.n_genes)
        hit = np.flatnonzero(rng.random(bio.n_genes) < p.idiosyncratic_share)
        idio_own[hit] = rng.normal(0.0, p.idiosyncratic_sd, hit.size)
        idio = _mix(base.idiosyncratic, idio_own, ctx.similarity) * ctx.idiosyncratic_scale
        a = ctx.effect_scale * base.strength * np.exp(eta)
        strength[row] = a
        specific[row] = soft_cap(a * (mixing @ cbio.response + idio), p.effect_knee, p.effect_cap)
        gamma[row] = np.exp(rng.normal(0.0, 0.3))
        escape[row] = base.knockdown_escape
        target = bio.pool[t]
        if bio.pool_measured[t]:
            gi = bio.gene_index[target]
            ctx_factor = rng.normal(0.0, 0.15)
            if p.modality == "CRISPRi":
                shift = base.self_effect * np.exp(ctx_factor)
            else:
                fold = base.self_effect * np.exp(ctx_factor)
                # over-expression adds (fold − 1)·m·S/(m + S) UMIs to the mean m (it saturates at
                # (fold − 1)·S for genes already expressed) plus a floor, so unexpressed targets
                # become visible and highly expressed ones do not swamp the library
                m = max(bio.abundance[gi] * ctx_library_mean(p, ctx), 1e-12)
                sat = p.overexpression_saturation
                shift = np.log((m + (fold - 1.0) * m * sat / (m + sat) + p.overexpression_floor) / m)
            specific[row, gi] = shift
            self_shift[row] = shift
    return {"specific": specific, "gamma": gamma, "strength": strength, "self_shift": self_shift, "escape": escape, "driven": driven}


def ctx_library_mean(p: Any, ctx: Any) -> float:
    """Mean library size (UMIs per cell over the whole transcriptome) of a context."""
    cal = p.calibration
    return float(np.exp(cal.library_log_mean + 0.5 * cal.library_log_sd**2) * ctx.library_scale)
