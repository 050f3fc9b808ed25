"""The design of a screen: its biology and which single and double perturbations it has.

:func:`biology_of` gives the (cached) :class:`~.biology.Biology` of a screen's parameters;
:func:`select_singles` takes the first eligible targets of the biology's ordered pool, so a
smaller screen's singles are a subset of a larger one's; :func:`select_doubles` draws the
pairs of singles that are perturbed together.
"""

from __future__ import annotations

from functools import lru_cache

from ..canonical import CONTROL_LABELS
from .biology import Biology, driven_program, make_biology, rng_for
from .calibration import Calibration
from .params import SimulationParams
from .streams import STREAM_PAIRS

_BIOLOGY_FIELDS = (
    "n_genes",
    "n_programs",
    "program_size",
    "go_term_size",
    "knowledge_agreement",
    "unmeasured_member_share",
    "spill_share",
    "spill_sd",
    "response_log_sd",
    "response_max",
    "gene_capacity",
    "gene_capacity_sd",
    "low_expression_share",
    "low_expression_floor",
    "dispersion_heterogeneity",
    "target_program_share",
    "target_unmeasured_share",
    "panel_min_mean",
    "biology_seed",
)


@lru_cache(maxsize=4)
def _cached_biology(key: tuple, calibration: Calibration) -> Biology:
    values = dict(zip(_BIOLOGY_FIELDS, key))
    return make_biology(SimulationParams(**values), calibration)


def biology_of(p: SimulationParams) -> Biology:
    """The :class:`~.biology.Biology` of parameters ``p`` (cached; it depends on the biology fields only)."""
    return _cached_biology(tuple(getattr(p, f) for f in _BIOLOGY_FIELDS), p.calibration)


def select_singles(bio: Biology, p: SimulationParams) -> list[int]:
    """Pool indices of the screen's single perturbations (the first ``n_singles`` eligible targets).

    With ``focus_programs = k`` only targets that drive one of the first ``k`` programs
    (:func:`~.biology.driven_program`) are eligible. A gene whose symbol reads as a control label
    (``CTRL``, a real gene) is never a target: its cells would be read back as controls.
    """
    if p.focus_programs is not None:
        # a focused screen picks targets by what they do: those that drive the first programs
        eligible = [i for i in range(len(bio.pool)) if 0 <= driven_program(bio, p, i) < p.focus_programs]
    else:
        eligible = list(range(len(bio.pool)))
    eligible = [i for i in eligible if bio.pool[i].lower() not in CONTROL_LABELS]
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
    rng = rng_for(bio.seed, STREAM_PAIRS, p.n_singles)
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
