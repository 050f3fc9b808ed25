"""Which property of a screen makes each published finding true: the simulator's mechanisms, one switched off at a time.

The chapter ``notebooks/ablation.ipynb`` calls these functions. For every finding of
:data:`FINDINGS` (each one a published result that a chapter of this book tests) and every
mechanism of :data:`helpers.data.simulate.MECHANISMS`, the screens the finding is tested on are
simulated with the presets' defaults and with that one mechanism switched off, the chapter's own
computation is run on them (its public functions in ``helpers.benchmarks.*``, never a copy), and
the finding's effect size is compared with the rule that says whether it holds.

A mechanism that does not change a finding's screens (e.g. the capacity of doubles on a screen
of single perturbations, or the rewiring of cell lines on a single cell line) gives the very same
screens, so its result is the defaults' result (``same_screens = True``); it is not recomputed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..console import progress_bar
from ..errors import ParameterError
from ..params import Param, Schema

NAME = "ablation"

#: The configuration with every mechanism at its default.
DEFAULTS = "all mechanisms (defaults)"


@dataclass(frozen=True)
class Finding:
    """A published finding, where it is tested, and the rule that says whether a run reproduces it.

    ``effect`` names the effect size; the finding holds when ``holds(effect)`` is true (the rule is
    spelled out in ``rule``). ``presets`` are the simulated screens it is computed on.
    """

    key: str
    statement: str
    source: str
    chapter: str
    presets: tuple[str, ...]
    effect: str
    rule: str
    holds: Callable[[float], bool]


FINDINGS: dict[str, Finding] = {
    f.key: f
    for f in (
        Finding(
            "additive best on doubles",
            "The additive model has a lower mean L2 on double perturbations than every other model",
            "Ahlmann-Eltze, Huber & Anders 2025",
            "double_perturbations",
            ("norman_like",),
            "lowest mean L2 of the other models minus the additive model's",
            "> 0",
            lambda e: e > 0,
        ),
        Finding(
            "no change best at interactions",
            'No model ranks the non-additive (double, gene) pairs better than "no change" (AUPRC)',
            "Ahlmann-Eltze, Huber & Anders 2025",
            "double_perturbations",
            ("norman_like",),
            "AUPRC of no change minus the best AUPRC of the other models",
            "≥ 0",
            lambda e: e >= 0,
        ),
        Finding(
            "linear about the mean",
            "The linear model with PCA embeddings of its own training data is within about 5 % of the mean baseline (L2)",
            "Ahlmann-Eltze, Huber & Anders 2025 (ratio 0.96-1.03)",
            "unseen_perturbations",
            ("replogle_k562_like", "replogle_rpe1_like"),
            "largest |L2 ratio to the mean − 1| over the two screens",
            "≤ 0.05",
            lambda e: e <= 0.05,
        ),
        Finding(
            "P from other screen beats the mean",
            "The linear model with the perturbation embedding of another screen beats the mean baseline (L2 ratio < 1)",
            "Ahlmann-Eltze, Huber & Anders 2025",
            "unseen_perturbations",
            ("replogle_k562_like", "replogle_rpe1_like"),
            "largest L2 ratio to the mean over the two screens (K562 ← RPE1, RPE1 ← K562)",
            "< 1",
            lambda e: e < 1,
        ),
        Finding(
            "PearsonΔ tracks systematic variation",
            "The mean baseline's PearsonΔ against control grows with systematic variation (r across screens), "
            "against the perturbed mean it stays near 0",
            "Viñas Torné et al. 2025 (Systema; r = 0.97)",
            "systema",
            ("replogle_k562_like",),
            "Pearson r across the sweep of the score and the mean baseline's PearsonΔ vs control "
            "(the finding also needs |PearsonΔ vs perturbed mean| < 0.2 throughout, else the effect is set to −1)",
            "> 0.8",
            lambda e: e > 0.8,
        ),
        Finding(
            "gap closed differs by cell line",
            "The fraction of the gap closed (between worst acceptable and best achievable) differs between cell lines",
            "Cole et al. 2026",
            "progress_bars",
            ("essential_like",),
            "range over cell lines of the fraction of the gap closed by the 'other contexts' embedding (kNN)",
            "≥ 0.1",
            lambda e: e >= 0.1,
        ),
    )
}


#: The claim of the registry (:data:`helpers.benchmarks.claims.CLAIMS`) that each finding is.
CLAIM_OF = {
    "additive best on doubles": "AE-D1",
    "no change best at interactions": "AE-D4",
    "linear about the mean": "AE-S1",
    "P from other screen beats the mean": "AE-S2",
    "PearsonΔ tracks systematic variation": "SYS-2",
    "gap closed differs by cell line": "COLE-1",
}


def _mechanism_names() -> list[str]:
    from ..data.simulate import MECHANISMS

    return list(MECHANISMS)


#: The mechanisms the book's run switches off (the two other mechanisms of doubles, neomorphic pairs and
#: random interactions, are left out for time; add them with the ``mechanisms`` parameter).
BOOK_MECHANISMS = (
    "capacity of doubles",
    "heavy-tailed responses",
    "barely expressed genes",
    "read-out coupling",
    "dispersion heterogeneity",
    "cell-line rewiring",
    "systematic variation",
)

PARAMETERS = Schema(
    (
        Param("scale", "float", 0.3, "size of every simulated screen relative to its preset (smaller: faster, noisier)", minimum=0.05),
        Param("simulation_seed", "int", 0, "seed of the simulated cells", minimum=0),
        Param("split_seed", "int", 1, "seed of the splits of the double, unseen and sweep analyses", minimum=0),
        Param("findings", "strs", list(FINDINGS), "findings to test (drop any to skip it)", choices=tuple(FINDINGS)),
        Param(
            "mechanisms",
            "strs",
            list(BOOK_MECHANISMS),
            "mechanisms to switch off one at a time (None: all of helpers.data.simulate.MECHANISMS)",
            none=True,
        ),
        Param("sweep_strengths", "any", [0.0, 0.15, 0.3], "systematic strengths of the sweep finding"),
    )
)


def check_mechanisms(mechanisms: Sequence[str] | None) -> list[str]:
    """The mechanisms to ablate (all of :data:`~helpers.data.simulate.MECHANISMS` for None); unknown names are refused."""
    known = _mechanism_names()
    if mechanisms is None:
        return known
    unknown = [m for m in mechanisms if m not in known]
    if unknown:
        raise ParameterError(f"unknown mechanisms {unknown}; known: {known}")
    return list(mechanisms)


def changes_screen(preset: str, mechanism: str | None, scale: float) -> bool:
    """Whether switching ``mechanism`` off changes the screens of ``preset`` at ``scale``.

    False when every overridden parameter already has its "off" value, or when the mechanism
    acts on doubles only and the screen has none.
    """
    from ..data.simulate import MECHANISMS, PRESETS

    if mechanism is None:
        return True
    spec = MECHANISMS[mechanism]
    p = PRESETS[preset].scaled_params(scale)
    if spec.get("doubles_only") and p.n_doubles == 0:
        return False
    return p != PRESETS[preset].scaled_params(scale, **spec["off"])


def overrides_of(mechanism: str | None) -> dict:
    """Simulator overrides that switch ``mechanism`` off ({} for the defaults)."""
    from ..data.simulate import MECHANISMS

    return {} if mechanism is None else dict(MECHANISMS[mechanism]["off"])


def _simulate(preset: str, scale: float, seed: int, **overrides) -> object:
    from ..data.simulate import PRESETS

    return PRESETS[preset].generate(scale=scale, seed=seed, **overrides)


# ---------------------------------------------------------------------------------------
# the findings, each computed with its chapter's functions
# ---------------------------------------------------------------------------------------


def doubles_findings(overrides: Mapping, scale: float, seed: int, split_seed: int) -> dict[str, dict]:
    """Both double-perturbation findings from one run of the chapter's benchmark (fast models, one split)."""
    from . import double_perturbations as dp

    adata = _simulate("norman_like", scale, seed, **overrides)
    screen = dp.describe_screen(adata, n_genes=1000)
    models = ["no change", "additive", "mean", "linear"]
    results = dp.run_benchmark(adata, screen.genes, [split_seed], models, progress=False)
    r = results[0]
    scored = r.evaluation.score(screen.profiles, screen.control, genes=screen.genes, metrics=["l2"])
    scored = scored[scored["perturbation"].isin(r.common)]
    l2 = scored.groupby("model")["value"].mean()
    others = l2.drop("additive")
    null, _ = dp.fit_null(screen, screen.gi_doubles, 0.05)
    _, det = dp.detection_scores(results, screen.profiles, screen.control, null)
    auprc = det.groupby("model")["auprc"].mean()
    best_other = auprc.drop("no change")
    return {
        "additive best on doubles": {
            "effect": float(others.min() - l2["additive"]),
            "detail": ", ".join(f"{m} {v:.2f}" for m, v in l2.sort_values().items()) + " (mean L2)",
        },
        "no change best at interactions": {
            "effect": float(auprc["no change"] - best_other.max()),
            "detail": ", ".join(f"{m} {v:.3f}" for m, v in auprc.sort_values(ascending=False).items()) + " (AUPRC)",
        },
    }


def unseen_findings(overrides: Mapping, scale: float, seed: int, split_seed: int) -> dict[str, dict]:
    """Both unseen-perturbation findings: the chapter's benchmark on K562-like and RPE1-like screens, each P from the other."""
    from . import unseen_perturbations as up

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for preset in ("replogle_k562_like", "replogle_rpe1_like"):
            path = str(Path(tmp) / f"{preset}.h5ad")
            _simulate(preset, scale, seed, **overrides).write_h5ad(path)
            paths[preset] = path
        k562, rpe1 = paths["replogle_k562_like"], paths["replogle_rpe1_like"]
        screens = up.Screens()
        datasets = [k562, rpe1]
        splits, _ = up.make_splits(screens, datasets, [split_seed])
        reference, _, _ = up.reference_embeddings(screens, datasets, {k562: rpe1, rpe1: k562}, n_components=10)
        run = up.run_benchmark(
            screens,
            datasets,
            [split_seed],
            splits,
            ["mean", "linear", "linear (P from other screen)"],
            n_genes=1000,
            progress=False,
            reference=reference,
            go={},
        )
    on_common = run.results[run.results["common_set"]]
    ratios = up.ratios_to_mean(on_common, n_resamples=200)
    label = {k562: "K562", rpe1: "RPE1"}
    ratios = ratios.assign(screen=ratios["dataset"].map(label))

    def ratio(model: str) -> pd.Series:
        return ratios[ratios["model"] == model].set_index("screen")["mean_ratio"]

    lin, other = ratio("linear"), ratio("linear (P from other screen)")
    return {
        "linear about the mean": {
            "effect": float((lin - 1).abs().max()),
            "detail": ", ".join(f"{s} {v:.3f}" for s, v in lin.items()) + " (L2 ratio to the mean)",
        },
        "P from other screen beats the mean": {
            "effect": float(other.max()),
            "detail": ", ".join(f"{s} {v:.3f}" for s, v in other.items()) + " (L2 ratio to the mean)",
        },
    }


def sweep_finding(overrides: Mapping, scale: float, seed: int, split_seed: int, strengths: Sequence[float]) -> dict[str, dict]:
    """The Systema finding from the chapter's sweep of the systematic strength (mean baseline)."""
    from . import systema as sysm

    overrides = {k: v for k, v in overrides.items() if k != "systematic_strength"}

    def simulate(strength: float) -> object:
        return _simulate("replogle_k562_like", scale, seed, systematic_strength=strength, **overrides)

    screens, rows = sysm.sweep(strengths, simulate, [split_seed], lambda: sysm.make_models(["mean"]), progress=False)
    table = sysm.sweep_summary(screens, rows)
    r = sysm.sweep_correlation(table, "mean")["r"]
    pert = table.query("model == 'mean' and metric == 'pearson_delta_vs_perturbed_mean'")["value"]
    ctrl = table.query("model == 'mean' and metric == 'pearson_delta_vs_control'").sort_values("systematic_strength")
    effect = float(r) if np.isfinite(r) and pert.abs().max() < 0.2 else -1.0
    return {
        "PearsonΔ tracks systematic variation": {
            "effect": effect,
            "detail": (
                f"score {ctrl['systematic_variation'].min():.2f}–{ctrl['systematic_variation'].max():.2f}; PearsonΔ vs control "
                f"{ctrl['value'].iloc[0]:.2f}→{ctrl['value'].iloc[-1]:.2f} (r = {r:.2f}); vs perturbed mean "
                f"{pert.min():.2f}…{pert.max():.2f}"
            ),
        }
    }


def progress_finding(overrides: Mapping, scale: float, seed: int, n_folds: int = 3, n_components: int = 20) -> dict[str, dict]:
    """The progress-bar finding: the chapter's evaluation of the 'other contexts' embedding on the four cell lines.

    The BAP is the chapter's idealized-PCA cheater (the bootstrap bound is left out for time);
    3 folds and 20 PCA components instead of the chapter's 5 and 100, for time.
    """
    from . import progress_bars as pb

    adata = _simulate("essential_like", scale, seed, **overrides)
    changes_by_context = pb.context_changes(adata)
    truth = pb.true_effects(adata, changes_by_context)
    sources = {
        (ctx, seed): pb.embedding_sources(["other contexts"], ctx, seed, adata, changes_by_context, {}, True, n_components)
        for ctx in changes_by_context
    }
    per, _, _ = pb.run_contexts(adata, changes_by_context, sources, [seed], ("knn",), n_folds, n_components, True, truth=truth)
    kinds = dict(zip(per["model"], per["kind"]))
    progress = pb.progress_table(pb.fold_errors(per), kinds)
    frac = progress[progress["model"] == "other contexts (kNN)"].set_index("context")["fraction_gap_closed"]
    return {
        "gap closed differs by cell line": {
            "effect": float(frac.max() - frac.min()),
            "detail": ", ".join(f"{c.replace('_like', '')} {v:.2f}" for c, v in frac.items()) + " (fraction of the gap closed)",
        }
    }


#: Which function computes which findings, and the presets of its screens.
GROUPS = (
    (("additive best on doubles", "no change best at interactions"), ("norman_like",), "doubles"),
    (("linear about the mean", "P from other screen beats the mean"), ("replogle_k562_like", "replogle_rpe1_like"), "unseen"),
    (("PearsonΔ tracks systematic variation",), ("replogle_k562_like",), "sweep"),
    (("gap closed differs by cell line",), ("essential_like",), "progress"),
)


def _run_group(kind: str, overrides: Mapping, scale: float, seed: int, split_seed: int, strengths: Sequence[float]) -> dict[str, dict]:
    if kind == "doubles":
        return doubles_findings(overrides, scale, seed, split_seed)
    if kind == "unseen":
        return unseen_findings(overrides, scale, seed, split_seed)
    if kind == "sweep":
        return sweep_finding(overrides, scale, seed, split_seed, strengths)
    return progress_finding(overrides, scale, seed)


def not_applicable(finding: str, mechanism: str) -> str:
    """Why a mechanism cannot be switched off for a finding ("" if it can)."""
    if finding == "PearsonΔ tracks systematic variation" and mechanism == "systematic variation":
        return "the finding sweeps this mechanism's strength"
    return ""


def run_ablation(
    findings: Sequence[str],
    mechanisms: Sequence[str],
    scale: float = 0.3,
    seed: int = 0,
    split_seed: int = 1,
    sweep_strengths: Sequence[float] = (0.0, 0.15, 0.3),
    progress: bool = True,
) -> pd.DataFrame:
    """Every finding with every mechanism switched off in turn, and with all at their defaults.

    Returns one row per (finding, configuration): ``finding, mechanism`` (:data:`DEFAULTS` or the
    mechanism switched off), ``effect``, ``holds``, ``detail`` (the numbers behind the effect),
    ``same_screens`` (the mechanism does not change these screens, the defaults' result is
    reused), ``seconds`` and ``note`` (why a cell is not applicable).
    """
    import time

    unknown = [f for f in findings if f not in FINDINGS]
    if unknown:
        raise ParameterError(f"unknown findings {unknown}; known: {list(FINDINGS)}")
    mechanisms = check_mechanisms(mechanisms)
    jobs = [(group, m) for group in GROUPS if set(group[0]) & set(findings) for m in [None, *mechanisms]]
    rows, defaults = [], {}
    for (keys, presets, kind), mechanism in progress_bar(jobs, desc="ablation", disable=not progress):
        keys = [k for k in keys if k in findings]
        label = DEFAULTS if mechanism is None else mechanism
        notes = {k: (not_applicable(k, mechanism) if mechanism else "") for k in keys}
        if mechanism is not None and all(notes.values()):
            rows += [{"finding": k, "mechanism": label, "effect": np.nan, "holds": None, "detail": "", "same_screens": False,
                      "seconds": 0.0, "note": notes[k]} for k in keys]  # fmt: skip
            continue
        same = mechanism is not None and not any(changes_screen(p, mechanism, scale) for p in presets)
        start = time.perf_counter()
        if same:
            out = defaults[kind]
        else:
            out = _run_group(kind, overrides_of(mechanism), scale, seed, split_seed, sweep_strengths)
        seconds = 0.0 if same else time.perf_counter() - start
        if mechanism is None:
            defaults[kind] = out
        for k in keys:
            if notes[k]:
                rows.append({"finding": k, "mechanism": label, "effect": np.nan, "holds": None, "detail": "", "same_screens": False,
                             "seconds": 0.0, "note": notes[k]})  # fmt: skip
                continue
            effect = out[k]["effect"]
            rows.append(
                {
                    "finding": k,
                    "mechanism": label,
                    "effect": effect,
                    "holds": bool(FINDINGS[k].holds(effect)) if np.isfinite(effect) else None,
                    "detail": out[k]["detail"],
                    "same_screens": bool(same),
                    "seconds": seconds,
                    "note": "",
                }
            )
    return pd.DataFrame(rows)


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Finding x configuration: "holds (effect)" / "fails (effect)" / "n/a", with the defaults first."""

    def cell(row: pd.Series) -> str:
        if row["holds"] is None or (isinstance(row["holds"], float) and np.isnan(row["holds"])):
            return "n/a"
        mark = "holds" if row["holds"] else "FAILS"
        same = " =" if row["same_screens"] else ""
        return f"{mark} ({row['effect']:+.3f}){same}"

    table = frame.assign(cell=frame.apply(cell, axis=1)).pivot(index="finding", columns="mechanism", values="cell")
    columns = [DEFAULTS] + [m for m in dict.fromkeys(frame["mechanism"]) if m != DEFAULTS]
    rows = [f for f in FINDINGS if f in table.index]
    return table.loc[rows, [c for c in columns if c in table.columns]]


def findings_table(findings: Sequence[str]) -> pd.DataFrame:
    """The findings tested: statement, source, chapter, screens, effect size and the rule."""
    return pd.DataFrame(
        [
            {
                "finding": FINDINGS[k].key,
                "claim": CLAIM_OF.get(k, ""),
                "published finding": FINDINGS[k].statement,
                "source": FINDINGS[k].source,
                "chapter": FINDINGS[k].chapter,
                "screens": ", ".join(FINDINGS[k].presets),
                "effect size": FINDINGS[k].effect,
                "holds when": FINDINGS[k].rule,
            }
            for k in findings
        ]
    ).set_index("finding")


def conclusions(frame: pd.DataFrame) -> list[str]:
    """One sentence per finding: does it hold with the defaults, and which mechanisms it needs (fails without)."""
    lines = []
    for key in [f for f in FINDINGS if f in set(frame["finding"])]:
        rows = frame[frame["finding"] == key]
        base = rows[rows["mechanism"] == DEFAULTS].iloc[0]
        off = rows[(rows["mechanism"] != DEFAULTS) & rows["holds"].notna()]
        flips = off[off["holds"] != base["holds"]]
        state = "holds" if base["holds"] else "does **not** hold"
        text = f"* **{key}** {state} with the defaults (effect {base['effect']:+.3f}; {base['detail']})."
        if len(flips):
            verb = "fails" if base["holds"] else "holds"
            text += (
                f" It {verb} when switching off: " + ", ".join(f"{m} ({e:+.3f})" for m, e in zip(flips["mechanism"], flips["effect"])) + "."
            )
        else:
            text += " No single mechanism switched off changes that."
        lines.append(text)
    return lines


def results_table(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Tidy rows for ``ablation.results.csv``: ``dataset`` = the finding, ``model`` = the configuration, metric ``effect``."""
    out = frame[frame["effect"].notna()]
    return pd.DataFrame(
        {
            "dataset": out["finding"].to_numpy(),
            "seed": seed,
            "model": out["mechanism"].to_numpy(),
            "perturbation": "all",
            "holds": out["holds"].astype(bool).to_numpy(),
            "metric": "effect",
            "value": out["effect"].to_numpy(dtype=float),
        }
    )
