"""Simulated Perturb-seq screens with known ground truth (public entry point).

The full published screens cannot be downloaded on the machines this suite is built on, so
the benchmarks run on simulated screens by default, and the book uses them to show what a
metric gets right and wrong when the truth is known.

Quick start
-----------
>>> from helpers.data.simulate import PRESETS, true_changes
>>> adata = PRESETS["replogle_k562_like"].generate(seed=0)       # doctest: +SKIP
>>> truth = true_changes(adata)          # perturbations x genes, same unit as helpers.data.changes

What is simulated
-----------------
* **Counts**: negative-binomial UMIs with gene-specific means and dispersions and log-normal
  library sizes, all calibrated on the real Norman 2019 cells shipped with the suite
  (:mod:`helpers.data.simulation.calibration`); ``layers['counts']`` and the log-normalised ``X``
  (``log1p(counts · 1e4 / ncounts)`` with ``obs['ncounts']`` the cell's library over the whole
  simulated transcriptome, as in the published files; ``normalisation="panel"`` gives
  ``log_normalise(counts)`` instead); gem groups (``obs['batch']``) with small gene-wise batch
  effects; many control cells.
* **Gene programs** seeded from Gene Ontology terms (``knowledge_agreement`` tunes how closely),
  so perturbing genes of one program gives similar responses; a self-effect on the target
  (knock-down for CRISPRi, over-expression for CRISPRa); a share of perturbations without
  phenotype and heavy-tailed effect strengths.
* **Systematic variation**: a response shared by all perturbed cells (``systematic_strength``).
* **Double perturbations**: additive in the expected log-normalised expression, plus synergy,
  buffering and opposite interactions on chosen pairs and genes, with labels.
* **Contexts** (cell lines) sharing programs with context-specific effect sizes and noise.

The truth travels in ``adata.uns['simulation']`` (it survives ``write_h5ad``/``read_h5ad``);
read it with :func:`true_changes`, :func:`systematic_component`, :func:`interaction_labels`,
:func:`perturbation_truth` and :func:`simulation_params`.

Presets
-------
:data:`PRESETS` maps names to :class:`Preset` objects. Each small preset (book-sized, a few
seconds) has a ``*_full`` twin at the published size. ``replogle_k562_like``,
``replogle_rpe1_like``, ``adamson_like`` and ``essential_like`` share one biology (genes,
programs, targets; the small ones one of 2,000 genes, the full ones one of 5,000 genes), so a
perturbation embedding learnt in one cell line can be used in another. ``norman_like`` has its
own CRISPRa biology.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .simulation.calibration import DEFAULT_CALIBRATION, Calibration, calibrate
from .simulation.screen import (
    INTERACTION_LABELS,
    ContextParams,
    SimulationParams,
    interaction_labels,
    perturbation_truth,
    simulate_screen,
    simulation_params,
    systematic_component,
    true_changes,
)

__all__ = [
    "PRESETS",
    "Preset",
    "SimulationParams",
    "ContextParams",
    "Calibration",
    "DEFAULT_CALIBRATION",
    "INTERACTION_LABELS",
    "calibrate",
    "simulate_screen",
    "true_changes",
    "systematic_component",
    "interaction_labels",
    "perturbation_truth",
    "simulation_params",
    "systematic_variation_score",
]

#: Biology seeds: one shared "essential-gene CRISPRi" biology and one CRISPRa biology.
ESSENTIAL_BIOLOGY_SEED = 2022
NORMAN_BIOLOGY_SEED = 2019


def systematic_variation_score(changes) -> float:
    """Systema's systematic-variation score of a changes table (mean cosine to the mean change).

    Delegates to :func:`helpers.metrics.systematic_variation` and returns its ``score``.
    """
    from ..metrics import systematic_variation

    return float(systematic_variation(changes).score)


@dataclass(frozen=True)
class Preset:
    """A named simulated screen.

    ``generate(scale, seed, **overrides)`` returns a canonical AnnData with ground truth.
    ``scale`` multiplies the number of single perturbations, of double perturbations and of
    control cells (per context, rounded, at least 1 single, 2 if there are doubles); cells per
    perturbation, genes and every effect are unchanged. Because a screen perturbs the first
    targets of its biology's pool, the singles of a smaller scale are a subset of those of a
    larger one, with the same effects (the doubles are drawn anew among the singles). ``overrides`` are :class:`SimulationParams` fields, or
    :class:`ContextParams` fields (then applied to every context).
    """

    name: str
    params: SimulationParams
    summary: str

    @property
    def description(self) -> str:
        """One line with the shape: cells, genes, perturbations."""
        p = self.params
        cells = sum((c.n_singles or p.n_singles) * c.cells_per_perturbation + p.n_doubles * c.cells_per_perturbation + c.n_control_cells
                    for c in p.contexts)
        perts = f"{p.n_singles:,} singles" + (f" + {p.n_doubles:,} doubles" if p.n_doubles else "")
        ctx = f", {len(p.contexts)} cell lines" if len(p.contexts) > 1 else ""
        return f"{self.summary}: ~{cells:,} cells x {p.n_genes:,} genes, {perts}{ctx} (simulated, {p.modality})"

    def scaled_params(self, scale: float = 1.0, **overrides) -> SimulationParams:
        """The parameters :meth:`generate` uses."""
        scale = float(scale)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        p = self.params
        n_singles = max(1, int(round(p.n_singles * scale)))
        n_doubles = int(round(p.n_doubles * scale))
        if p.n_doubles:
            n_singles = max(n_singles, 2)
            n_doubles = max(n_doubles, 1)
        contexts = tuple(
            replace(c, n_control_cells=max(1, int(round(c.n_control_cells * scale))),
                    n_singles=None if c.n_singles is None else min(n_singles, max(1, int(round(c.n_singles * scale)))))
            for c in p.contexts
        )
        p = replace(p, n_singles=n_singles, n_doubles=n_doubles, contexts=contexts)
        return p.with_overrides(**overrides) if overrides else p

    def generate(self, scale: float = 1.0, seed: int = 0, **overrides):
        """Simulate the screen; see the class docstring for ``scale`` and ``overrides``."""
        n_jobs = overrides.pop("n_jobs", None)
        progress = overrides.pop("progress", False)
        return simulate_screen(self.scaled_params(scale, **overrides), seed=int(seed), n_jobs=n_jobs, progress=progress)


# ----------------------------------------------------------------------------- preset definitions

# The essential-gene biology (K562, RPE1, Adamson, essential_like). Small: 2,000 genes, 20
# programs of 40 genes; full: 5,000 genes, 40 programs of 50 genes.
_ESSENTIAL_SMALL = dict(n_genes=2000, n_programs=20, program_size=40, effect_size_median=0.8, biology_seed=ESSENTIAL_BIOLOGY_SEED)
_ESSENTIAL_FULL = dict(n_genes=5000, n_programs=40, program_size=50, effect_size_median=0.8, biology_seed=ESSENTIAL_BIOLOGY_SEED)

#: Cell-line contexts. Their signal-to-noise differs on purpose (what the progress bars show):
#: K562 moderate; HepG2 larger effects but fewer UMIs; Jurkat small effects, few UMIs and noisier
#: cells (little signal to find); RPE1 large, more cell-line-specific effects (most headroom).
K562 = ContextParams("K562_like", effect_scale=1.0, similarity=0.8, systematic_strength=0.07, idiosyncratic_scale=1.0)
HEPG2 = ContextParams("HepG2_like", effect_scale=1.2, similarity=0.7, systematic_strength=0.12, library_scale=0.8, idiosyncratic_scale=1.2)
JURKAT = ContextParams("Jurkat_like", effect_scale=0.95, similarity=0.75, systematic_strength=0.07, library_scale=0.75, dispersion_scale=1.15)
RPE1 = ContextParams("RPE1_like", effect_scale=1.5, similarity=0.6, systematic_strength=0.24, idiosyncratic_scale=1.5)


def _essential(contexts, n_singles, small: bool, **extra) -> SimulationParams:
    biology = _ESSENTIAL_SMALL if small else _ESSENTIAL_FULL
    return SimulationParams(modality="CRISPRi", n_singles=n_singles, contexts=tuple(contexts), **biology, **extra)


def _ctx(base: ContextParams, cells: int, controls: int, **kw) -> ContextParams:
    return replace(base, cells_per_perturbation=cells, n_control_cells=controls, **kw)


def _norman(small: bool) -> SimulationParams:
    ctx = ContextParams("K562_CRISPRa_like", effect_scale=1.0, similarity=1.0, systematic_strength=0.1,
                        cells_per_perturbation=200 if small else 320, n_control_cells=3000 if small else 11000)
    return SimulationParams(
        name="norman_like_small" if small else "norman_like_full",
        modality="CRISPRa",
        n_genes=2000 if small else 19264,
        n_singles=100,
        n_doubles=124,
        contexts=(ctx,),
        n_programs=20,
        program_size=40,
        biology_seed=NORMAN_BIOLOGY_SEED,
        no_phenotype_share=0.25,
        effect_size_median=1.0,
    )


def _make_presets() -> dict[str, Preset]:
    presets = {}

    def add(name, params, summary):
        presets[name] = Preset(name, replace(params, name=name), summary)

    for small, suffix in ((True, ""), (False, "_full")):
        add(f"norman_like{suffix}", _norman(small), "Norman-2019-like CRISPRa K562 screen with double perturbations")
        add(f"adamson_like{suffix}",
            _essential([_ctx(K562, 100 if small else 750, 1000 if small else 5000, systematic_strength=0.25)], 80 if small else 81, small,
                       focus_programs=3),
            "Adamson-2016-like focused CRISPRi K562 screen (UPR-like programs)")
        add(f"replogle_k562_like{suffix}",
            _essential([_ctx(K562, 100 if small else 140, 1000 if small else 10000)], 300 if small else 1087, small),
            "Replogle-2022-like essential-gene CRISPRi screen in K562")
        add(f"replogle_rpe1_like{suffix}",
            _essential([_ctx(RPE1, 100 if small else 100, 1000 if small else 8000)], 300 if small else 1534, small),
            "Replogle-2022-like essential-gene CRISPRi screen in RPE1")
        cells, controls = (80, 1500) if small else (30, 3000)
        add(f"essential_like{suffix}",
            _essential([_ctx(c, cells, controls) for c in (K562, HEPG2, JURKAT, RPE1)], 300 if small else 2000, small),
            "Essential-gene CRISPRi screens in 4 cell lines (Nadig/Replogle-like)")
    return presets


#: Named presets; ``*_full`` are the published sizes, the others book-sized.
PRESETS: dict[str, Preset] = _make_presets()
