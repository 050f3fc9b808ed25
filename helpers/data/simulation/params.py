"""The parameters of a simulated screen: :class:`ContextParams` and :class:`SimulationParams`.

Every knob of :func:`~.generate.simulate_screen` lives here, with the checks of
:meth:`SimulationParams.validate`, the overrides of :meth:`SimulationParams.with_overrides`
(how presets are scaled and tuned) and the plain-dict form
(:meth:`SimulationParams.to_dict`, :meth:`SimulationParams.from_dict`) that travels in
``adata.uns['simulation']``. Nothing here draws random numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .calibration import DEFAULT_CALIBRATION, Calibration

INTERACTION_LABELS = ("synergy", "buffering", "opposite")


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
    relatedness
        Probability that a target acts, in this cell line, through the same program as in the
        screen's shared biology; otherwise it is *rewired*: it drives the program of another,
        randomly drawn target of the pool (a context-specific draw). ``similarity`` makes the
        programs' responses differ between cell lines; ``relatedness`` makes *which* targets act
        alike differ, so that a perturbation embedding learnt in one cell line transfers to
        another only as far as this parameter says. 1 = the same wiring in every context.
        Rationale: different cell lines share core essential machinery (ribosome, proteasome,
        mediator behave alike in K562 and RPE1, Replogle et al. 2022) but rewire a part of their
        regulatory network; the presets set it per cell line (see :mod:`helpers.data.simulate`).
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
    relatedness: float = 1.0


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
    Sparse, heavy-tailed responses
        The members of a program move with magnitudes ``|R_jg| ~ LogNormal(−σ², σ)`` with
        ``σ = response_log_sd`` (RMS ``e^{1/4}`` whatever ``σ``, capped at ``response_max``): a large
        ``σ`` makes a few members respond strongly and most weakly, as real perturbations change
        a few genes strongly and a long tail weakly. ``spill_share`` of the other genes get a
        weak spill-over ``N(0, spill_sd)``. The cap (1.5, the first simulator had 3, rarely reached
        with its light tail) keeps the few strongest responses of a heavy tail within the range of
        the largest changes of the Norman subset (2.2); with a cap of 3, a handful of extreme
        deviations of doubles made the local-fdr null fit of the double-perturbation chapter unstable.
    Barely expressed genes
        ``low_expression_share`` of the panel's genes are barely expressed: their mean UMIs per
        cell (at the average library) are log-uniform between ``low_expression_floor`` and
        ``panel_min_mean`` (real panels hold genes that are selected on other data or other cell
        types and have almost no UMI in these cells: 397 of the 500 genes of the Norman subset
        have a zero control mean). The rest follow the calibrated transcriptome above
        ``panel_min_mean``.
    Read-out / perturbation coupling
        ``readout_coupling`` = probability that a target drives (when perturbed) the program it
        belongs to as a read-out; otherwise it drives the program of another randomly drawn
        target of the pool (independent of its own membership). 1: genes of one program respond
        alike and, perturbed, act alike (what a gene embedding learnt from read-outs, such as the
        linear model's, rests on); 0: a gene's read-out profile carries no information about its
        effect as a perturbation (beyond its own knock-down). The default 0.8 is a judgment: genes
        of one complex are co-expressed and, knocked down, give similar profiles (Replogle et al.
        2022), but not every member of a co-expressed program acts through it.
    Noise
        ``dispersion_heterogeneity`` multiplies the calibrated gene-to-gene SD of ``log φ``
        around the dispersion trend (1 = as fitted on the real cells, 0 = every gene on the trend).
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
        ``double_same_program_share`` of pairs are drawn within a program. A double's change is
        the sum of its singles' changes ``u = Δ_A[g]``, ``v = Δ_B[g]`` (in the expected
        log-normalised expression), changed by three mechanisms:

        * **capacity** (saturating combination): a gene cannot move without bound. Where the two
          singles move a gene the same way, the second adds less the closer the first has
          brought it to the gene's capacity ``C_g ~ LogNormal(log gene_capacity,
          gene_capacity_sd)``: ``|Δ_AB| = |u + v| − saturation_strength · min(|u|,|v|) ·
          M²/(C_g² + M²)``, ``M = max(|u|,|v|)``. The deviation from additivity grows with both
          single effects (it is ``≈ min·M²/C²`` for small effects and tends to the smaller
          single's effect, i.e. the double equals the stronger single, for large ones), so
          buffering concentrates on the genes that respond strongly to the singles. Singles
          that move a gene in opposite directions stay additive. ``saturation_strength`` 0
          switches it off.
        * **neomorphic** interactions: ``neomorphic_pair_share`` of the pairs also move a
          program that neither single moves (a random program's response ``R_j``, times
          ``neomorphic_size``), an effect no combination of the singles predicts.
        * **random placement**: in ``interaction_pair_share`` of the pairs, on
          ``interaction_gene_share`` of the genes with an additive change of at least
          ``interaction_min_change``, an interaction of a type drawn with weights
          ``interaction_types`` (synergy, buffering, opposite) applies, whatever the size of the
          singles' effects.

        The targets' own genes are never changed (see :func:`interaction_labels`).
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
    spill_sd: float = 0.35
    response_log_sd: float = 1.0  # fitted: twin of the Norman subset (scripts/calibrate_simulator.py --mechanisms; McFaline: 2.0)
    response_max: float = 1.5  # the strongest member responses stay within the real subsets' largest changes; see the docstring
    program_mixing: float = 0.15
    readout_coupling: float = 0.8  # judgment (the subsets' 9-27 perturbations cannot inform it), see the docstring
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
    interaction_pair_share: float = 0.1
    interaction_gene_share: float = 0.15
    interaction_min_change: float = 0.1
    interaction_types: dict = field(default_factory=_default_interaction_types)
    saturation_strength: float = 1.0  # fitted: twin of the Norman subset (its 5 doubles with both singles)
    gene_capacity: float = 0.5  # from Norman et al.'s fits: doubles reach ~0.7 of additive (median magnitude 0.70)
    gene_capacity_sd: float = 0.5
    neomorphic_pair_share: float = 0.05  # 5 of Norman et al.'s 125 fitted pairs have a fit correlation below 0.7
    neomorphic_size: float = 0.5
    panel_min_mean: float = 0.05
    low_expression_share: float = 0.4  # fitted: twin of the McFaline subset (the Norman subset's panel: 0.91)
    low_expression_floor: float = 1e-5  # fitted: as low_expression_share
    dispersion_heterogeneity: float = 0.75  # fitted: twin of the Norman subset (McFaline subset: 0.5)
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
        for name, value in [
            ("knowledge_agreement", self.knowledge_agreement),
            ("no_phenotype_share", self.no_phenotype_share),
            ("target_program_share", self.target_program_share),
            ("target_unmeasured_share", self.target_unmeasured_share),
            ("interaction_pair_share", self.interaction_pair_share),
            ("interaction_gene_share", self.interaction_gene_share),
            ("double_same_program_share", self.double_same_program_share),
            ("readout_coupling", self.readout_coupling),
            ("saturation_strength", self.saturation_strength),
            ("neomorphic_pair_share", self.neomorphic_pair_share),
            ("low_expression_share", self.low_expression_share),
        ]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name, value in [
            ("response_log_sd", self.response_log_sd),
            ("spill_sd", self.spill_sd),
            ("gene_capacity_sd", self.gene_capacity_sd),
            ("neomorphic_size", self.neomorphic_size),
            ("dispersion_heterogeneity", self.dispersion_heterogeneity),
        ]:
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        if not self.gene_capacity > 0 or not self.response_max > 0:
            raise ValueError("gene_capacity and response_max must be positive")
        if not 0 < self.low_expression_floor < self.panel_min_mean:
            raise ValueError(
                f"low_expression_floor must lie in (0, panel_min_mean = {self.panel_min_mean}), got {self.low_expression_floor}"
            )
        if self.target_program_share + self.target_unmeasured_share > 1.0:
            raise ValueError("target_program_share + target_unmeasured_share must not exceed 1")
        bad = sorted(set(self.interaction_types) - set(INTERACTION_LABELS))
        if bad or not self.interaction_types or min(self.interaction_types.values()) < 0:
            raise ValueError(f"interaction_types must map {INTERACTION_LABELS} to non-negative weights, got {self.interaction_types}")
        for c in self.contexts:
            if not 0.0 <= c.similarity <= 1.0:
                raise ValueError(f"context {c.name}: similarity must lie in [0, 1]")
            if not 0.0 <= c.relatedness <= 1.0:
                raise ValueError(f"context {c.name}: relatedness must lie in [0, 1]")
            if c.cells_per_perturbation < 1 or c.n_control_cells < 1:
                raise ValueError(f"context {c.name}: needs at least one cell per perturbation and one control cell")
            if c.n_singles is not None and not 1 <= c.n_singles <= self.n_singles:
                raise ValueError(f"context {c.name}: n_singles must lie in [1, {self.n_singles}]")
