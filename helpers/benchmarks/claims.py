"""The published findings this book reproduces, each a claim with a test written as code.

A :class:`Claim` names its paper, figure or table, the finding in one sentence, the chapter
(task and protocol) whose results can test it, and a ``test``: a function that takes that
chapter's tidy results table (``NAME.results.csv``: ``dataset, seed, model, perturbation,
[labels], metric, value``, one dataset at a time) and returns a :class:`Verdict`:

* ``status``: ``holds``, ``fails`` or ``not testable here`` (with the reason, e.g. "needs ≥ 2
  cell lines");
* the effect size with its name and unit, and its uncertainty: a 95 % t interval over split
  seeds when there are at least :data:`MIN_SEEDS_FOR_T` seeds, otherwise a percentile
  bootstrap over perturbations (paired, resampled within each seed, :data:`N_BOOTSTRAP`
  resamples, seed :data:`BOOTSTRAP_SEED`); ``n`` counts the units behind it.

:func:`check_claims` runs every claim of a chapter; :func:`explain` gives, for a verdict that
disagrees with the paper, the reason as far as the run can show it (an interval that includes the
threshold, a small screen, a simulated screen and the property the finding depends on, a
deliberate protocol difference); :func:`claims_box` renders the chapter's take-away box. The
scoreboard (:mod:`helpers.book.scoreboard`) runs the claims on every results file of a run.

Papers: Ahlmann-Eltze, Huber & Anders 2025 (Nature Methods 22:1657); Viñas Torné et al. 2025
(Systema, Nature Biotechnology); Wu et al. 2024 (PerturBench, arXiv 2408.10609); Miller et al.
2025 (bioRxiv 10.1101/2025.10.20.683304); Cole et al. 2026 (bioRxiv 10.64898/2026.02.18.706454).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats as _stats

HOLDS, FAILS, UNTESTABLE = "holds", "fails", "not testable here"
STATUSES = (HOLDS, FAILS, UNTESTABLE)

#: Resamples and seed of every bootstrap over perturbations.
N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
#: With at least this many split seeds the interval is a t interval over seeds.
MIN_SEEDS_FOR_T = 3
CONFIDENCE = 0.95

PAPERS = {
    "Ahlmann-Eltze 2025": "Ahlmann-Eltze, Huber & Anders 2025, Nature Methods 22:1657",
    "Systema 2025": "Viñas Torné et al. 2025 (Systema), Nature Biotechnology",
    "PerturBench 2024": "Wu et al. 2024 (PerturBench), arXiv 2408.10609",
    "Miller 2025": "Miller et al. 2025, bioRxiv 10.1101/2025.10.20.683304",
    "Cole 2026": "Cole et al. 2026, bioRxiv 10.64898/2026.02.18.706454",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a claim's test on one results table.

    ``effect`` is the effect size (named ``effect_name``, in ``unit``); ``low``/``high`` its 95 %
    interval (``uncertainty`` says how it was computed, NaN when it could not be); ``n`` the
    number of units behind it (seeds, perturbations or strengths, as ``uncertainty`` says);
    ``reason`` why the claim is not testable; ``detail`` the numbers behind the effect.
    """

    status: str
    effect: float = np.nan
    effect_name: str = ""
    unit: str = ""
    low: float = np.nan
    high: float = np.nan
    uncertainty: str = ""
    n: int = 0
    reason: str = ""
    detail: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def text(self, digits: int = 3) -> str:
        """``holds (+0.123 [0.05, 0.20])``; ``not testable here`` for untestable claims."""
        if self.status == UNTESTABLE:
            return UNTESTABLE
        interval = f" [{self.low:.{digits}g}, {self.high:.{digits}g}]" if np.isfinite(self.low) and np.isfinite(self.high) else ""
        return f"{self.status} ({self.effect:+.{digits}g}{interval})"


def untestable(reason: str) -> Verdict:
    """A :class:`Verdict` saying why the data cannot test the claim."""
    return Verdict(UNTESTABLE, reason=reason)


@dataclass(frozen=True)
class Claim:
    """A published finding and the test that checks it on a chapter's results.

    ``threshold`` is the boundary of the rule (``rule``) on the effect size: an interval that
    includes it means the run cannot decide. ``depends_on`` names the property of a screen the
    finding needs (shown when a simulated screen disagrees); ``protocol`` the protocol of the
    paper, ``differences`` how the chapter's protocol differs. ``scope`` is ``"dataset"`` (the
    test takes the rows of one dataset) or ``"task"`` (the rows of every dataset of the chapter,
    for findings across screens).
    """

    id: str
    paper: str
    figure: str
    statement: str
    chapter: str
    protocol: str
    published: str
    effect_name: str
    unit: str
    rule: str
    threshold: float
    test: Callable[[pd.DataFrame], Verdict]
    depends_on: str = ""
    differences: str = ""
    scope: str = "dataset"
    min_n: int = 10

    def check(self, results: pd.DataFrame) -> Verdict:
        """Run the test; the effect's name and unit are the claim's unless the test sets them."""
        if results.empty:
            return untestable(f"no rows of the {self.chapter} chapter")
        verdict = self.test(results)
        return replace(verdict, effect_name=verdict.effect_name or self.effect_name, unit=verdict.unit or self.unit)


# ---------------------------------------------------------------------------------------
# uncertainty
# ---------------------------------------------------------------------------------------


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided t interval: :math:`\\bar x \\pm t_{(1+c)/2,\\,k-1}\\, s/\\sqrt{k}` (NaN bounds for k < 2)."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size == 0:
        return np.nan, np.nan, np.nan
    m = float(x.mean())
    if x.size < 2:
        return m, np.nan, np.nan
    half = float(_stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return m, m - half, m + half


@dataclass
class Estimate:
    """An effect with its interval (see :func:`mean_statistic`)."""

    effect: float
    low: float
    high: float
    n: int
    how: str
    per_seed: dict = field(default_factory=dict)


def mean_statistic(
    wide: pd.DataFrame,
    statistic: Callable[[Mapping[str, np.ndarray]], np.ndarray],
    n_resamples: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """A statistic of per-seed column means, with its 95 % interval.

    ``wide`` has a (``seed``, ``perturbation``) index and one column per quantity (e.g. one per
    model); rows with a missing value are dropped (the comparison is paired). For every seed,
    :math:`s_k = f(\\bar x_{k,1}, \\dots, \\bar x_{k,m})` with :math:`\\bar x_{k,j}` the mean of
    column j over that seed's perturbations; the effect is :math:`\\frac1K \\sum_k s_k`. With at
    least :data:`MIN_SEEDS_FOR_T` seeds the interval is the t interval over the :math:`s_k`;
    otherwise the percentile bootstrap: perturbations are resampled with replacement within each
    seed (``n_resamples`` times, ``numpy.random.default_rng(seed)``) and the effect recomputed.

    ``statistic`` receives a mapping column -> array (the means; a scalar array or one value per
    resample) and returns an array of the same shape.
    """
    wide = wide.dropna()
    if wide.empty:
        return Estimate(np.nan, np.nan, np.nan, 0, "no paired values")
    seeds = list(dict.fromkeys(wide.index.get_level_values(0)))
    columns = list(wide.columns)
    per_seed = {}
    arrays = {}
    for s in seeds:
        X = wide.xs(s, level=0).to_numpy(dtype=float)
        arrays[s] = X
        per_seed[s] = float(statistic(dict(zip(columns, X.mean(axis=0)))))
    effect = float(np.mean(list(per_seed.values())))
    n_units = len(wide)
    if len(seeds) >= MIN_SEEDS_FOR_T:
        _, low, high = t_interval(list(per_seed.values()))
        return Estimate(effect, low, high, n_units, f"95 % t interval over {len(seeds)} seeds ({n_units} perturbations)", per_seed)
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    for s in seeds:
        X = arrays[s]
        idx = rng.integers(0, len(X), size=(n_resamples, len(X)))
        means = X[idx].mean(axis=1)  # resamples x columns
        total += np.asarray(statistic({c: means[:, j] for j, c in enumerate(columns)}), dtype=float)
    boot = total / len(seeds)
    low, high = np.nanpercentile(boot, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    how = f"95 % bootstrap over {n_units} perturbations ({n_resamples} resamples within seed, seed {seed})"
    return Estimate(effect, float(low), float(high), n_units, how, per_seed)


def _rows_corr(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` with every row of ``Y`` (NaN where a row or ``x`` is constant)."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (Yc @ xc) / (np.sqrt((Yc**2).sum(axis=-1)) * np.sqrt((xc**2).sum()))


def bootstrap_median(values: np.ndarray, n_resamples: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95 % interval of the median of ``values`` (resampled with replacement; seed :data:`BOOTSTRAP_SEED`)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    boot = np.median(values[rng.integers(0, values.size, (n_resamples, values.size))], axis=1)
    return _percentiles(boot)


def bootstrap_correlation(x: np.ndarray, y: np.ndarray, n_resamples: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95 % interval of Pearson r over resampled (x, y) pairs (seed :data:`BOOTSTRAP_SEED`; degenerate resamples dropped)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, x.size, (n_resamples, x.size))
    X, Y = x[idx], y[idx]
    Xc, Yc = X - X.mean(axis=1, keepdims=True), Y - Y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc * Yc).sum(axis=1) / np.sqrt((Xc**2).sum(axis=1) * (Yc**2).sum(axis=1))
    return _percentiles(r)


def _percentiles(boot: np.ndarray) -> tuple[float, float]:
    if not np.isfinite(boot).any():
        return np.nan, np.nan
    low, high = np.nanpercentile(boot, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def per_seed_scalar(rows: pd.DataFrame, models: Sequence[str], metric: str) -> pd.DataFrame:
    """seed x model table of a metric that has one value per seed (e.g. AUPRC over all doubles)."""
    part = rows[(rows["metric"] == metric) & rows["model"].isin(models)]
    return part.pivot_table(index="seed", columns="model", values="value", aggfunc="mean")


def seed_estimate(values: pd.Series) -> Estimate:
    """Mean over seeds with the t interval (no interval for a single seed)."""
    m, lo, hi = t_interval(values.to_numpy(dtype=float))
    n = int(values.notna().sum())
    how = f"95 % t interval over {n} seeds" if n >= 2 else "one seed: no interval (one value per seed, nothing to resample)"
    return Estimate(m, lo, hi, n, how, values.to_dict())


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


def is_deep(model: str) -> bool:
    """A deep (gradient-trained) model: a registry model tagged ``slow``, or predictions made elsewhere (not in the registry)."""
    from ..models.registry import MODELS, model_tags

    if model not in MODELS:
        return True
    return bool(model_tags(model).slow)


def is_simulated(dataset: str) -> bool:
    """Whether a dataset label names a simulated preset (``norman_like``, ``essential_like_full``, ...)."""
    from ..data.simulate import PRESETS

    name = str(dataset).removesuffix("_full")
    return name in PRESETS or name.endswith("_like")


def _wide(rows: pd.DataFrame, metric: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    part = rows[rows["metric"] == metric]
    if models is not None:
        part = part[part["model"].isin(models)]
    return part.pivot_table(index=["seed", "perturbation"], columns="model", values="value", aggfunc="first")


def _has(rows: pd.DataFrame, models: Sequence[str], metric: str) -> str:
    """'' when every model has rows of the metric, else the reason."""
    part = rows[rows["metric"] == metric]
    missing = [m for m in models if m not in set(part["model"])]
    return f"needs {', '.join(repr(m) for m in missing)} with {metric}; this run has none" if missing else ""


def _verdict(ok: bool, est: Estimate, detail: str) -> Verdict:
    if not np.isfinite(est.effect):
        return untestable("no paired values to compare (" + est.how + ")")
    return Verdict(HOLDS if ok else FAILS, est.effect, low=est.low, high=est.high, uncertainty=est.how, n=est.n, detail=detail)


def _fmt_means(wide: pd.DataFrame, digits: int = 3) -> str:
    means = wide.dropna().groupby(level=0).mean().mean()
    return ", ".join(f"{m} {v:.{digits}g}" for m, v in means.sort_values().items())


# ---------------------------------------------------------------------------------------
# Ahlmann-Eltze et al. 2025: double perturbations (double_perturbations chapter)
# ---------------------------------------------------------------------------------------


def _doubles(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-double rows of the common set (test and validation doubles, every model predicted them)."""
    if "common_set" in rows:
        rows = rows[rows["common_set"].astype(str) == "True"]
    return rows[rows["perturbation"].astype(str).str.contains(r"\+", regex=True)]


def verify_additive_beats_deep(rows: pd.DataFrame) -> Verdict:
    """Effect: lowest mean L2 of the deep models minus the additive model's (> 0: additive better)."""
    rows = _doubles(rows)
    deep = sorted(m for m in set(rows["model"]) if is_deep(m))
    if not deep:
        return untestable("no deep model in this run (switch on run_slow_models or give predictions)")
    if why := _has(rows, ["additive"], "l2"):
        return untestable(why)
    wide = _wide(rows, "l2", ["additive", *deep])
    est = mean_statistic(wide, lambda m: np.min([m[d] for d in deep], axis=0) - m["additive"])
    return _verdict(est.effect > 0, est, _fmt_means(wide) + " (mean L2)")


def verify_additive_beats_no_change(rows: pd.DataFrame) -> Verdict:
    """Effect: L2(additive) / L2(no change), means over doubles (< 1: additive better)."""
    rows = _doubles(rows)
    if why := _has(rows, ["additive", "no change"], "l2"):
        return untestable(why)
    wide = _wide(rows, "l2", ["additive", "no change"])
    est = mean_statistic(wide, lambda m: m["additive"] / m["no change"])
    return _verdict(est.effect < 1, est, _fmt_means(wide) + " (mean L2)")


def verify_additive_best_pearson(rows: pd.DataFrame) -> Verdict:
    """Effect: PearsonΔ (vs control) of the additive model minus the best other model's (> 0: additive best)."""
    rows = _doubles(rows)
    metric = "pearson_delta_vs_control"
    if why := _has(rows, ["additive"], metric):
        return untestable(why)
    others = sorted(m for m in set(rows.loc[rows["metric"] == metric, "model"]) if m not in ("additive", "no change"))
    if not others:
        return untestable("no model to compare with the additive baseline")
    wide = _wide(rows, metric, ["additive", *others])
    est = mean_statistic(wide, lambda m: m["additive"] - np.max([m[o] for o in others], axis=0))
    return _verdict(est.effect > 0, est, _fmt_means(wide) + " (mean PearsonΔ vs control)")


def verify_no_change_best_at_interactions(rows: pd.DataFrame) -> Verdict:
    """Effect: AUPRC of no change minus the best AUPRC of the other models, per seed (≥ 0: no model beats it)."""
    if why := _has(rows, ["no change"], "gi_auprc"):
        return untestable(why + " (the interaction analysis needs doubles with both singles measured)")
    others = sorted(m for m in set(rows.loc[rows["metric"] == "gi_auprc", "model"]) if m != "no change")
    if not others:
        return untestable("no model besides no change was scored on interactions")
    table = per_seed_scalar(rows, ["no change", *others], "gi_auprc")
    effect = table["no change"] - table[others].max(axis=1)
    est = seed_estimate(effect)
    means = table.mean().sort_values(ascending=False)
    return _verdict(est.effect >= 0, est, ", ".join(f"{m} {v:.3f}" for m, v in means.items()) + " (mean AUPRC)")


# ---------------------------------------------------------------------------------------
# Ahlmann-Eltze et al. 2025: single perturbations (unseen_perturbations chapter)
# ---------------------------------------------------------------------------------------


def _singles(rows: pd.DataFrame) -> pd.DataFrame:
    if "common_set" in rows:
        rows = rows[rows["common_set"].astype(str) == "True"]
    return rows


def _ratio_to_mean(rows: pd.DataFrame, model: str) -> tuple[Estimate, pd.DataFrame] | Verdict:
    """Mean over perturbations of L2(model) / L2(mean), paired by (seed, perturbation) (Fig. 2c)."""
    rows = _singles(rows)
    if why := _has(rows, [model, "mean"], "l2"):
        return untestable(why)
    wide = _wide(rows, "l2", [model, "mean"]).dropna()
    ratio = (wide[model] / wide["mean"]).rename("ratio").to_frame()
    return mean_statistic(ratio, lambda m: m["ratio"]), wide


def _ratio_claim(model: str, rule: Callable[[float], bool]) -> Callable[[pd.DataFrame], Verdict]:
    def test(rows: pd.DataFrame) -> Verdict:
        out = _ratio_to_mean(rows, model)
        if isinstance(out, Verdict):
            return out
        est, wide = out
        return _verdict(rule(est.effect), est, f"L2 ratio of {model} to the mean {est.effect:.3f}; " + _fmt_means(wide) + " (mean L2)")

    test.__doc__ = f"Effect: mean L2 ratio of {model!r} to the mean baseline."
    return test


def verify_linear_near_mean(rows: pd.DataFrame) -> Verdict:
    """Effect: |mean L2 ratio of linear to the mean − 1| (≤ 0.05: within 5 %)."""
    out = _ratio_to_mean(rows, "linear")
    if isinstance(out, Verdict):
        return out
    est, wide = out
    lo, hi = est.low - 1, est.high - 1
    low, high = (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
    est = Estimate(abs(est.effect - 1), low, high, est.n, est.how + " (of |ratio − 1|)")
    return _verdict(est.effect <= 0.05, est, f"ratio {1 + (est.effect if out[0].effect >= 1 else -est.effect):.3f}; " + _fmt_means(wide))


def verify_deep_no_better_than_transfer(rows: pd.DataFrame) -> Verdict:
    """Effect: best deep model's L2 ratio to the mean minus that of linear with P from the other screen (> 0: no deep model beats it)."""
    rows = _singles(rows)
    deep = sorted(m for m in set(rows.loc[rows["metric"] == "l2", "model"]) if is_deep(m))
    if not deep:
        return untestable("no deep model in this run (switch on run_slow_models or give predictions)")
    transfer = "linear (P from other screen)"
    if why := _has(rows, [transfer, "mean"], "l2"):
        return untestable(why + " (needs a second screen as reference)")
    wide = _wide(rows, "l2", [transfer, "mean", *deep]).dropna()
    ratios = pd.DataFrame({m: wide[m] / wide["mean"] for m in [transfer, *deep]})
    est = mean_statistic(ratios, lambda m: np.min([m[d] for d in deep], axis=0) - m[transfer])
    means = ratios.groupby(level=0).mean().mean().sort_values()
    return _verdict(est.effect > 0, est, ", ".join(f"{m} {v:.3f}" for m, v in means.items()) + " (L2 ratio to the mean)")


# ---------------------------------------------------------------------------------------
# Systema (systema chapter)
# ---------------------------------------------------------------------------------------

MEAN_BASELINES = ("mean (perturbations)", "mean", "mean (cells)")


def _analysis(rows: pd.DataFrame, analysis: str, subset: str | None = None) -> pd.DataFrame:
    if "analysis" not in rows:
        return rows.iloc[0:0]
    part = rows[rows["analysis"] == analysis]
    if subset is not None and "subset" in part:
        part = part[part["subset"] == subset]
    return part


def verify_sweep_tracks_systematic_variation(rows: pd.DataFrame) -> Verdict:
    """Effect: Pearson r across the sweep's strengths between the strength and the mean baseline's PearsonΔ vs control.

    The finding also needs the PearsonΔ against the perturbed mean to stay near 0 (|·| < 0.2 at every
    strength); otherwise it fails whatever r is.
    """
    sweep = _analysis(rows, "sweep")
    if sweep.empty or "systematic_strength" not in sweep:
        return untestable("needs the sweep of the systematic strength (the Systema chapter's run_sweep on a simulated preset)")
    model = next((m for m in MEAN_BASELINES if m in set(sweep["model"])), None)
    if model is None:
        return untestable("the sweep has no mean baseline")
    strengths = sorted(sweep["systematic_strength"].dropna().unique())
    if len(strengths) < 3:
        return untestable(f"needs ≥ 3 systematic strengths in the sweep; this run has {len(strengths)}")
    ctrl = sweep[(sweep["model"] == model) & (sweep["metric"] == "pearson_delta_vs_control")]
    groups = [ctrl.loc[ctrl["systematic_strength"] == s, "value"].dropna().to_numpy() for s in strengths]
    means = np.array([g.mean() for g in groups])
    r = float(np.corrcoef(strengths, means)[0, 1])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    boot = np.stack([g[rng.integers(0, len(g), (N_BOOTSTRAP, len(g)))].mean(axis=1) for g in groups], axis=1)  # resamples x strengths
    low, high = _percentiles(_rows_corr(np.asarray(strengths, dtype=float), boot))
    pert = sweep[sweep["metric"] == "pearson_delta_vs_perturbed_mean"].groupby(["model", "systematic_strength"])["value"].mean().dropna()
    near_zero = bool(pert.abs().max() < 0.2) if len(pert) else True
    detail = f"{model}: PearsonΔ vs control {means[0]:.2f} → {means[-1]:.2f} over strengths {strengths[0]:g}–{strengths[-1]:g}"
    if len(pert):
        detail += f"; vs perturbed mean {pert.min():.2f} … {pert.max():.2f}"
    how = f"95 % bootstrap over perturbations within each of {len(strengths)} strengths ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED})"
    return Verdict(HOLDS if r > 0.8 and near_zero else FAILS, r, low=low, high=high, uncertainty=how, n=len(strengths),
                   detail=detail + ("" if near_zero else " (not near 0)"))  # fmt: skip


def verify_across_screens(rows: pd.DataFrame) -> Verdict:
    """Effect: Pearson r across screens (datasets, or cell lines) between systematic variation and the mean baseline's PearsonΔ vs control."""
    score = _analysis(rows, "systematic_variation")
    base = _analysis(rows, "baselines", "1-gene test")
    key = ["dataset"] + (["context"] if "context" in rows and rows["context"].notna().any() else [])
    if score.empty or base.empty:
        return untestable("needs each screen's systematic variation and its mean baseline's scores (Systema chapter)")
    model = next((m for m in MEAN_BASELINES if m in set(base["model"])), None)
    if model is None:
        return untestable("no mean baseline among the baselines")
    x = score[score["metric"] == "systematic_variation_cosine"].groupby(key, dropna=False)["value"].mean()
    pd_ctrl = base[(base["model"] == model) & (base["metric"] == "pearson_delta_vs_control")]
    y = pd_ctrl.groupby(key, dropna=False)["value"].mean()
    both = pd.concat([x.rename("x"), y.rename("y")], axis=1).dropna()
    if len(both) < 3:
        return untestable(f"needs ≥ 3 screens with both the score and the mean baseline's PearsonΔ; this run has {len(both)}")
    r = float(np.corrcoef(both["x"], both["y"])[0, 1])
    low, high = bootstrap_correlation(both["x"].to_numpy(), both["y"].to_numpy())
    how = f"95 % bootstrap over {len(both)} screens ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED})"
    detail = ", ".join(f"{'/'.join(map(str, k)) if isinstance(k, tuple) else k}: {a:.2f} → {b:.2f}" for k, (a, b) in both.iterrows())
    return Verdict(HOLDS if r > 0.8 else FAILS, r, low=low, high=high, uncertainty=how, n=len(both), detail=detail)


def verify_across_presets(rows: pd.DataFrame) -> Verdict:
    """Effect: Pearson r across simulated screens between systematic variation and the mean baseline's PearsonΔ vs control.

    From the simulation chapter's realism summary: ``systematic_variation`` (model ``(data)``) and the
    per-perturbation ``pearson_delta_vs_control`` of ``mean`` on each screen's held-out singles.
    """
    score = rows[rows["metric"] == "systematic_variation"].groupby("dataset")["value"].mean()
    base = rows[(rows["metric"] == "pearson_delta_vs_control") & (rows["model"] == "mean")].groupby("dataset")["value"].mean()
    both = pd.concat([score.rename("x"), base.rename("y")], axis=1).dropna()
    if len(both) < 3:
        return untestable(f"needs ≥ 3 screens with the score and the mean baseline's PearsonΔ; this run has {len(both)}")
    r = float(np.corrcoef(both["x"], both["y"])[0, 1])
    low, high = bootstrap_correlation(both["x"].to_numpy(), both["y"].to_numpy())
    how = f"95 % bootstrap over {len(both)} screens ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED})"
    detail = ", ".join(f"{k}: {a:.2f} → {b:.2f}" for k, (a, b) in both.iterrows()) + " (systematic variation → mean's PearsonΔ vs control)"
    return Verdict(HOLDS if r > 0.8 else FAILS, r, low=low, high=high, uncertainty=how, n=len(both), detail=detail)


def verify_reference_matters(rows: pd.DataFrame) -> Verdict:
    """Effect: the mean baseline's PearsonΔ vs control minus vs the perturbed mean (1-gene test; holds when ≥ 0.2 and |vs perturbed| < 0.2)."""
    base = _analysis(rows, "baselines", "1-gene test")
    model = "mean (cells)" if "mean (cells)" in set(base["model"]) else next((m for m in MEAN_BASELINES if m in set(base["model"])), None)
    if base.empty or model is None:
        return untestable("needs the Systema chapter's baselines on 1-gene test perturbations")
    part = base[base["model"] == model]
    wide = part.pivot_table(index=["seed", "perturbation"], columns="metric", values="value", aggfunc="first")
    cols = ["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"]
    if not set(cols) <= set(wide.columns):
        return untestable(f"{model} lacks PearsonΔ against both references")
    wide = wide[cols]
    est = mean_statistic(wide, lambda m: m[cols[0]] - m[cols[1]])
    means = wide.dropna().groupby(level=0).mean().mean()
    ok = est.effect >= 0.2 and abs(means[cols[1]]) < 0.2
    return _verdict(ok, est, f"{model}: vs control {means[cols[0]]:.3f}, vs perturbed mean {means[cols[1]]:.3f}")


def verify_matching_mean_doubles(rows: pd.DataFrame) -> Verdict:
    """Effect: PearsonΔ vs control of the matching mean minus the overall mean baseline's, on doubles with both genes seen."""
    part = _analysis(rows, "doubles", "2-gene test, 2 seen")
    if part.empty:
        return untestable("needs doubles whose two genes were both seen in training (the Systema chapter's doubles analysis)")
    other = next((m for m in MEAN_BASELINES if m in set(part["model"])), None)
    if "matching mean" not in set(part["model"]) or other is None:
        return untestable("needs the matching mean and a mean baseline on the doubles")
    wide = _wide(part, "pearson_delta_vs_control", ["matching mean", other])
    est = mean_statistic(wide, lambda m: m["matching mean"] - m[other])
    return _verdict(est.effect > 0, est, _fmt_means(wide) + " (mean PearsonΔ vs control)")


def verify_rank_exposes_collapse(rows: pd.DataFrame) -> Verdict:
    """Effect: rank_rmse of the collapsed mean minus the RMSE-matched duplicate's (holds when ≥ 0.2 with RMSEs within 5 %)."""
    part = _analysis(rows, "mode_collapse")
    needed = ["duplicate (RMSE-matched)", "mean (perturbations)"]
    if part.empty or any(m not in set(part["model"]) for m in needed):
        return untestable("needs the mode-collapse analysis (a collapsed prediction and an RMSE-matched duplicate)")
    rank = _wide(part, "rank_rmse", needed)
    rmse = _wide(part, "rmse", needed).dropna().groupby(level=0).mean().mean()
    est = mean_statistic(rank, lambda m: m["mean (perturbations)"] - m["duplicate (RMSE-matched)"])
    rel = abs(rmse[needed[0]] - rmse[needed[1]]) / rmse[needed[1]]
    detail = f"rank_rmse: {_fmt_means(rank)}; RMSE collapsed {rmse[needed[1]]:.4f} vs matched duplicate {rmse[needed[0]]:.4f}"
    return _verdict(est.effect >= 0.2 and rel <= 0.05, est, detail)


# ---------------------------------------------------------------------------------------
# Miller et al. 2025: calibration (systema chapter, calibration analysis)
# ---------------------------------------------------------------------------------------


def drf_estimate(rows: pd.DataFrame, metric: str, positive: str = "technical duplicate") -> Estimate | Verdict:
    """Median dynamic range fraction of ``metric`` (:func:`helpers.metrics.calibration.dynamic_range_fraction`), with a bootstrap interval."""
    from ..metrics.calibration import dynamic_range_fraction, negative_control_of

    part = _analysis(rows, "calibration")
    negative = negative_control_of(metric)
    if part.empty:
        return untestable("needs the calibration controls (the Systema chapter's run_calibration)")
    if why := _has(part, [positive, negative], metric):
        return untestable(why)
    wide = _wide(part, metric, [positive, negative]).dropna()
    idx = pd.Index(["|".join(map(str, k)) for k in wide.index])
    drf = dynamic_range_fraction(pd.Series(wide[positive].to_numpy(), index=idx), pd.Series(wide[negative].to_numpy(), index=idx), metric)
    values = drf.values.dropna().to_numpy()
    low, high = bootstrap_median(values)
    how = f"95 % bootstrap of the median over {len(values)} perturbation-seed pairs ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED})"
    return Estimate(drf.median, low, high, len(values), how)


def _drf_claim(metrics: Sequence[str], rule: Callable[[float], bool], combine: Callable = min) -> Callable[[pd.DataFrame], Verdict]:
    def test(rows: pd.DataFrame) -> Verdict:
        ests = {m: drf_estimate(rows, m) for m in metrics}
        ok = {m: e for m, e in ests.items() if isinstance(e, Estimate)}
        if not ok:
            return next(iter(ests.values()))
        pick = combine(ok, key=lambda m: ok[m].effect)
        est = ok[pick]
        detail = ", ".join(f"{m} {e.effect:.2f}" for m, e in ok.items()) + " (median DRF, technical duplicate vs the negative control)"
        return _verdict(rule(est.effect), est, detail)

    return test


# ---------------------------------------------------------------------------------------
# Cole et al. 2026: progress bars (progress_bars chapter)
# ---------------------------------------------------------------------------------------


def _gap_fractions(fold_means: np.ndarray, null_idx: list[int], cheat_idx: list[int]) -> np.ndarray:
    """(..., folds, models) fold means -> (..., models) fractions of the gap closed (median over folds; WAP best null, BAP worst cheater)."""
    med = np.median(fold_means, axis=-2)
    wap = np.min(med[..., null_idx], axis=-1, keepdims=True)
    bap = np.max(med[..., cheat_idx], axis=-1, keepdims=True)
    gap = wap - bap
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, (wap - med) / np.where(gap > 0, gap, 1.0), np.nan)


def fraction_closed(rows: pd.DataFrame, n_resamples: int = N_BOOTSTRAP) -> dict[str, pd.DataFrame]:
    """Per context: fraction of the gap closed per model with its bootstrap interval, from the per-perturbation L2.

    As in the chapter (:func:`helpers.benchmarks.progress_bars.progress_table`): per fold the mean
    L2 over the fold's perturbations, per model the median over folds; WAP = the best model of kind
    ``null method``, BAP = the worst of kind ``cheater``;
    :math:`f = (L2_{WAP} - L2_{model}) / (L2_{WAP} - L2_{BAP})`. The interval resamples the
    perturbations within each fold (paired across models, seeds pooled as units).
    Returns context -> DataFrame (index model; columns ``kind, fraction, low, high, n``).
    """
    per = rows[(rows["metric"] == "l2") & (rows["fold"].astype(str) != "all")]
    out = {}
    for ctx, part in per.groupby("context", sort=True):
        kinds = part.groupby("model")["kind"].first()
        nulls = [m for m in kinds.index if kinds[m] == "null method"]
        cheaters = [m for m in kinds.index if kinds[m] == "cheater"]
        if not nulls or not cheaters:
            continue
        wide = part.pivot_table(index=["fold", "seed", "perturbation"], columns="model", values="value", aggfunc="first").dropna()
        models = list(wide.columns)
        folds = [wide.xs(f, level=0).to_numpy(dtype=float) for f in dict.fromkeys(wide.index.get_level_values(0))]
        rng = np.random.default_rng(BOOTSTRAP_SEED)

        null_idx, cheat_idx = [models.index(m) for m in nulls], [models.index(m) for m in cheaters]
        point = _gap_fractions(np.stack([f.mean(axis=0) for f in folds]), null_idx, cheat_idx)
        boot = _gap_fractions(
            np.stack([f[rng.integers(0, len(f), (n_resamples, len(f)))].mean(axis=1) for f in folds], axis=1), null_idx, cheat_idx
        )
        with warnings.catch_warnings():  # a model whose fraction is undefined in every resample (no gap): NaN bounds
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        frame = pd.DataFrame({"kind": kinds.reindex(models).to_numpy(), "fraction": point, "low": low, "high": high,
                              "n": len(wide)}, index=pd.Index(models, name="model"))  # fmt: skip
        frame.attrs["boot"] = boot  # resamples x models, in the order of the index
        out[ctx] = frame
    return out


def _no_gap(fr: Mapping[str, pd.DataFrame]) -> list[str]:
    """Lines whose bounds leave no room (WAP − BAP ≤ 0: every fraction undefined)."""
    return [c for c, f in fr.items() if f["fraction"].isna().all()]


def _gap_reason(lines: Sequence[str]) -> str:
    return (
        f"the best achievable bound is not below the worst acceptable one in {', '.join(map(_context_label, lines))} "
        "(WAP − BAP ≤ 0): there is no gap to close on these data"
    )


def _context_label(ctx: str) -> str:
    return str(ctx).removesuffix("_like")


def _best_embedding(frame: pd.DataFrame) -> str | None:
    emb = frame[frame["kind"] == "embedding"]["fraction"].dropna()
    return emb.idxmax() if len(emb) else None


def _line_boot(fr: Mapping[str, pd.DataFrame]) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, str], int]:
    """Per line: the best embedding (by its point estimate), its fraction, its bootstrap resamples; and the units."""
    vals, boots, best = {}, {}, {}
    n = 0
    for c, f in fr.items():
        m = _best_embedding(f)
        if m is None:
            continue
        best[c] = m
        vals[c] = float(f.loc[m, "fraction"])
        boots[c] = f.attrs["boot"][:, list(f.index).index(m)]
        n += int(f["n"].iloc[0])
    return vals, boots, best, n


_LINES_HOW = "95 % bootstrap over perturbations within folds, lines resampled independently ({} resamples, seed {})"


def verify_gap_differs_by_line(rows: pd.DataFrame) -> Verdict:
    """Effect: range over cell lines of the fraction of the gap closed by each line's best embedding (≥ 0.1: differs)."""
    fr = fraction_closed(rows)
    if len(fr) < 2:
        return untestable(f"needs ≥ 2 cell lines with bounds; this run has {len(fr)}")
    if len(fr) - len(_no_gap(fr)) < 2:
        return untestable(_gap_reason(_no_gap(fr)))
    vals, boots, best, n = _line_boot(fr)
    if len(vals) < 2:
        return untestable("needs an embedding (kind 'embedding') in ≥ 2 cell lines")
    effect = max(vals.values()) - min(vals.values())
    stacked = np.stack(list(boots.values()), axis=1)
    low, high = _percentiles(np.nanmax(stacked, axis=1) - np.nanmin(stacked, axis=1))
    detail = ", ".join(f"{_context_label(c)} {v:.2f} ({best[c]})" for c, v in vals.items())
    how = _LINES_HOW.format(N_BOOTSTRAP, BOOTSTRAP_SEED)
    return Verdict(HOLDS if effect >= 0.1 else FAILS, effect, low=low, high=high, uncertainty=how, n=n, detail=detail)


def verify_jurkat_highest(rows: pd.DataFrame) -> Verdict:
    """Effect: fraction closed in Jurkat minus the highest other line's (best embedding of each line; > 0: Jurkat highest)."""
    fr = fraction_closed(rows)
    jurkat = [c for c in fr if "JURKAT" in str(c).upper()]
    if not jurkat:
        return untestable("needs a Jurkat line" + (f"; this run has {', '.join(map(_context_label, fr))}" if fr else ""))
    if len(fr) < 2:
        return untestable("needs ≥ 2 cell lines with bounds")
    if jurkat[0] in _no_gap(fr) or len(fr) - len(_no_gap(fr)) < 2:
        return untestable(_gap_reason(_no_gap(fr)))
    vals, boots, best, n = _line_boot(fr)
    j = jurkat[0]
    if j not in vals or len(vals) < 2:
        return untestable("needs an embedding in Jurkat and another line")
    others = [c for c in vals if c != j]
    effect = vals[j] - max(vals[c] for c in others)
    low, high = _percentiles(boots[j] - np.nanmax(np.stack([boots[c] for c in others], axis=1), axis=1))
    detail = ", ".join(f"{_context_label(c)} {v:.2f}" for c, v in sorted(vals.items(), key=lambda kv: -kv[1]))
    how = _LINES_HOW.format(N_BOOTSTRAP, BOOTSTRAP_SEED)
    return Verdict(HOLDS if effect > 0 else FAILS, effect, low=low, high=high, uncertainty=how, n=n, detail=detail)


def _every_line(model_match: Callable[[str], bool], rule: Callable[[float], bool], what: str) -> Callable[[pd.DataFrame], Verdict]:
    def test(rows: pd.DataFrame) -> Verdict:
        fr = fraction_closed(rows)
        if not fr:
            return untestable("needs at least one cell line with a null method and a cheater (the bounds)")
        vals = {}
        for c, f in fr.items():
            hits = [m for m in f.index if model_match(m)]
            if hits and np.isfinite(f.loc[hits[0], "fraction"]):
                vals[c] = f.loc[hits[0]]
        if not vals:
            return untestable(_gap_reason(_no_gap(fr)) if _no_gap(fr) else f"needs {what} in this run")
        worst = max(vals, key=lambda c: vals[c]["fraction"])
        row = vals[worst]
        detail = ", ".join(f"{_context_label(c)} {v['fraction']:.2f}" for c, v in vals.items()) + f" ({what}, fraction of the gap closed)"
        if _no_gap(fr):
            detail += f"; not tested in {', '.join(map(_context_label, _no_gap(fr)))} (no gap between the bounds)"
        how = f"95 % bootstrap over perturbations within folds, line with the largest fraction ({_context_label(worst)})"
        ok = all(rule(v["fraction"]) for v in vals.values())
        return Verdict(HOLDS if ok else FAILS, float(row["fraction"]), low=float(row["low"]), high=float(row["high"]), uncertainty=how,
                       n=int(row["n"]), detail=detail)  # fmt: skip

    return test


# ---------------------------------------------------------------------------------------
# PerturBench (perturbench chapter)
# ---------------------------------------------------------------------------------------


def _pb_per_seed(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """seed x model table of the per-seed means of a metric (as the chapter's summary table)."""
    from .perturbench import seed_means

    part = seed_means(rows[rows["metric"] == metric], by=("model", "metric"))
    return part.pivot_table(index="seed", columns="model", values="value")


def _pb_metrics(rows: pd.DataFrame) -> list[str]:
    from .perturbench import metric_order

    return metric_order(rows)


def _pb_better(metric: str) -> int:
    from .perturbench import lower_is_better

    return 1 if lower_is_better(metric) else -1


def _per_metric(rows: pd.DataFrame, a: Sequence[str], b: Sequence[str]) -> str:
    """'metric: best-of-a vs best-of-b, holds/fails' for every metric, with the chapter's rule (better or within one seed SD)."""
    from .perturbench import _best, _no_worse, summary_table

    summary = summary_table(rows)
    parts = []
    for metric in dict.fromkeys(summary.columns.get_level_values(0)):
        if not any(m in summary.index for m in a) or not any(m in summary.index for m in b):
            continue
        am, av, asd = _best(summary, a, metric)
        bm, bv, bsd = _best(summary, b, metric)
        sds = [x for x in (asd, bsd) if np.isfinite(x)]
        ok = _no_worse(av, bv, max(sds) if sds else np.nan, metric)
        parts.append(f"{metric} {av:.3g} vs {bv:.3g} {'✓' if ok else '✗'}")
    return "; ".join(parts)


def _pb_compare(better: Sequence[str], worse: Sequence[str], label: str) -> Callable[[pd.DataFrame], Verdict]:
    def test(rows: pd.DataFrame) -> Verdict:
        have = set(rows["model"])
        if not (have & set(better)) or not (have & set(worse)):
            return untestable(f"needs {label}; this run lacks " + ", ".join(repr(m) for m in [*better, *worse] if m not in have))
        table = _pb_per_seed(rows, "rmse")
        a = table[[m for m in better if m in table]].min(axis=1)
        b = table[[m for m in worse if m in table]].min(axis=1)
        est = seed_estimate(b - a)
        # "match or beat": holds unless the better-claimed side is credibly worse (whole interval below 0)
        upper = est.high if np.isfinite(est.high) else est.effect
        return _verdict(upper >= 0, est, _per_metric(rows, better, worse))

    return test


def verify_decoder_cov_collapsed(rows: pd.DataFrame) -> Verdict:
    """Effect: mean rank_rmse of decoder-cov (holds when within 0.1 of 0.5 and its RMSE is at most the median of the models)."""
    from .perturbench import MODE_COLLAPSE_EXAMPLE, NEAR_CHANCE

    if MODE_COLLAPSE_EXAMPLE not in set(rows["model"]):
        return untestable(f"needs the covariate-only model {MODE_COLLAPSE_EXAMPLE!r}")
    rank, rmse = _pb_per_seed(rows, "rank_rmse"), _pb_per_seed(rows, "rmse")
    if MODE_COLLAPSE_EXAMPLE not in rank or MODE_COLLAPSE_EXAMPLE not in rmse:
        return untestable("needs rank_rmse and rmse of decoder-cov")
    est = seed_estimate(rank[MODE_COLLAPSE_EXAMPLE])
    own, median = rmse[MODE_COLLAPSE_EXAMPLE].mean(), rmse.mean().median()
    ok = abs(est.effect - 0.5) <= NEAR_CHANCE and own <= median
    return _verdict(ok, est, f"rank_rmse {est.effect:.3f}; RMSE {own:.4f} vs median of all models {median:.4f}")


# ---------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------

_DOUBLES_PROTOCOL = "GEARS simulation split of the Norman doubles, 5 seeds, test and validation doubles, top 1,000 expressed genes"
_SINGLES_PROTOCOL = "GEARS simulation split, seeds 1-2, test and validation perturbations, top 1,000 genes, common set of all methods"
_SYSTEMA_PROTOCOL = "Systema's split (1-gene test perturbations), 3 seeds, mean over perturbations"
_MILLER_PROTOCOL = "technical duplicate (second half of each condition's cells) vs the mean baseline, median DRF over perturbations"
_COLE_PROTOCOL = "Essential LFC screens of four lines, kNN head, 5-fold CV, median L2 over folds; WAP train mean, BAP experimental error"
_PB_PROTOCOL = "covariate transfer (a perturbation held out in one line, measured in others); mean over seeds of per-seed means"

CLAIMS: dict[str, Claim] = {
    c.id: c
    for c in (
        Claim(
            "AE-D1", "Ahlmann-Eltze 2025", "Fig. 1b; source data Panel A",
            "For double perturbations the additive baseline has a lower mean L2 than every deep model.",
            "double_perturbations", _DOUBLES_PROTOCOL,
            "additive 2.766; best deep model Geneformer (repurposed, linear decoder) 3.479, GEARS 4.096 (mean L2, Norman)",
            "lowest deep-model L2 minus additive L2", "L2 (log-expression units)", "> 0", 0.0, verify_additive_beats_deep,
            depends_on="doubles that mostly add up (few, small interactions) and singles measured with enough cells",
        ),
        Claim(
            "AE-D2", "Ahlmann-Eltze 2025", "Fig. 1b; source data Panel A",
            "The additive baseline has about half the L2 of no change on double perturbations.",
            "double_perturbations", _DOUBLES_PROTOCOL, "additive 2.766 vs no change 5.617 (ratio 0.49)",
            "L2(additive) / L2(no change)", "ratio", "< 1", 1.0, verify_additive_beats_no_change,
            depends_on="singles whose effects carry over to the double",
        ),
        Claim(
            "AE-D3", "Ahlmann-Eltze 2025", "Fig. 1; source data Panel A",
            "The additive baseline has the highest PearsonΔ (vs control) of all models on doubles.",
            "double_perturbations", _DOUBLES_PROTOCOL, "additive 0.892; Geneformer (repurposed, linear decoder) 0.773; GEARS 0.631",
            "PearsonΔ of additive minus the best other model's", "Pearson r", "> 0", 0.0, verify_additive_best_pearson,
            depends_on="doubles that mostly add up",
        ),
        Claim(
            "AE-D4", "Ahlmann-Eltze 2025", "Suppl. ROC curves (final version)",
            "No model finds non-additive (double, gene) pairs better than the no-change baseline (AUPRC).",
            "double_perturbations", _DOUBLES_PROTOCOL + "; interactions called by a locfdr null",
            "no change 0.33 ± 0.03; best other (scGPT) 0.29 ± 0.03 (AUPRC, mean ± SE over 5 seeds)",
            "AUPRC of no change minus the best other model's", "AUPRC", "≥ 0", 0.0, verify_no_change_best_at_interactions,
            depends_on="interactions that sit where the additive change is large; no model that learns the interactions",
            min_n=3,
        ),
        Claim(
            "AE-S1", "Ahlmann-Eltze 2025", "Fig. 2c; source data Panel C",
            "The linear model with PCA embeddings of its own training data is within 5 % of the mean baseline (L2).",
            "unseen_perturbations", _SINGLES_PROTOCOL, "L2 ratio to the mean 1.030 / 0.991 / 0.958 (Adamson / K562 / RPE1)",
            "|mean L2 ratio of linear to the mean − 1|", "fraction of the mean's L2", "≤ 0.05", 0.05, verify_linear_near_mean,
            depends_on="a training set too small or too unstructured for the PCA of training changes to describe unseen genes",
        ),
        Claim(
            "AE-S2", "Ahlmann-Eltze 2025", "Fig. 2c; source data Panel C",
            "The linear model with the perturbation embedding of another screen beats the mean baseline (screen-to-screen transfer).",
            "unseen_perturbations", _SINGLES_PROTOCOL + "; P from the other Replogle screen",
            "L2 ratio to the mean 0.858 / 0.886 / 0.894 (Adamson / K562 / RPE1)",
            "mean L2 ratio of linear (P from other screen) to the mean", "ratio", "< 1", 1.0,
            _ratio_claim("linear (P from other screen)", lambda e: e < 1),
            depends_on="perturbations whose effects are shared between the two screens (cell lines)",
        ),
        Claim(
            "AE-S3", "Ahlmann-Eltze 2025", "Fig. 2c",
            "No deep model beats the linear model with the perturbation embedding of another screen.",
            "unseen_perturbations", _SINGLES_PROTOCOL, "GEARS 0.943 / 1.001 / 1.096, scGPT 1.286 / 1.091 / 1.138 vs 0.858 / 0.886 / 0.894",
            "best deep model's L2 ratio to the mean minus that of linear (P from other screen)", "ratio", "> 0", 0.0,
            verify_deep_no_better_than_transfer,
            depends_on="effects shared between screens, and too few training perturbations for a deep model to learn them",
        ),
        Claim(
            "AE-S4", "Ahlmann-Eltze 2025", "Fig. 2c",
            "The linear model with P from GEARS' Gene Ontology graph is no better than the mean baseline (within 5 %).",
            "unseen_perturbations", _SINGLES_PROTOCOL, "L2 ratio to the mean 1.014 / 1.003 / 0.989",
            "mean L2 ratio of linear (P from GO) to the mean", "ratio", "≥ 0.95", 0.95,
            _ratio_claim("linear (P from GO)", lambda e: e >= 0.95),
            depends_on="gene annotations that say little about the response (in the simulator, GO terms seed the gene programs)",
        ),
        Claim(
            "AE-S5", "Ahlmann-Eltze 2025", "Fig. 2c",
            "A random perturbation embedding does not beat the mean baseline.",
            "unseen_perturbations", _SINGLES_PROTOCOL, "L2 ratio to the mean 1.106 / 1.003 / 1.003",
            "mean L2 ratio of linear (random P) to the mean", "ratio", "≥ 0.97", 0.97,
            _ratio_claim("linear (random P)", lambda e: e >= 0.97),
            depends_on="nothing but chance: a random embedding carries no information",
        ),
        Claim(
            "SYS-1", "Systema 2025", "benchmark_all.ipynb cell 11",
            "Across screens, the PearsonΔ (vs control) of the methods grows with the screen's systematic variation.",
            "systema", "10 screens; method-averaged PearsonΔ vs control against mean cosine to the average shift",
            "r = 0.970 (p = 3.3e-6) across 10 datasets", "Pearson r across screens", "Pearson r", "> 0.8", 0.8, verify_across_screens,
            depends_on="screens that differ in how much of every perturbation's change is shared", scope="task", min_n=3,
        ),
        Claim(
            "SYS-1s", "Systema 2025", "benchmark_all.ipynb cell 11; the simulated presets",
            "Across screens, the mean baseline's PearsonΔ (vs control) grows with the screen's systematic variation.",
            "simulation", "the simulation chapter's summary of each preset: Systema's score and the mean baseline on held-out singles",
            "r = 0.970 across 10 real datasets (method-averaged PearsonΔ)", "Pearson r across screens", "Pearson r", "> 0.8", 0.8,
            verify_across_presets, depends_on="presets that differ in systematic variation", scope="task", min_n=3,
        ),
        Claim(
            "SYS-2", "Systema 2025", "benchmark_all.ipynb cells 21/24; sweep analogue",
            "The mean baseline's PearsonΔ vs control grows with systematic variation, while vs the perturbed mean it stays near 0.",
            "systema", "simulated sweep of the systematic strength (the book's analogue of the across-screen comparison)",
            "r = 0.97 across screens; PearsonΔ vs perturbed mean of the mean baseline 0.00-0.15",
            "Pearson r between strength and PearsonΔ vs control", "Pearson r", "> 0.8 (and |vs perturbed mean| < 0.2)", 0.8,
            verify_sweep_tracks_systematic_variation, depends_on="a systematic shift shared by all perturbations", min_n=3,
        ),
        Claim(
            "SYS-3", "Systema 2025", "benchmark_all.ipynb cells 21 and 24",
            "The mean baseline scores well on PearsonΔ against control but near 0 against the perturbed mean.",
            "systema", _SYSTEMA_PROTOCOL, "Norman 0.49 vs 0.10; Adamson 0.70 vs 0.00; K562 0.32 vs 0.06; RPE1 0.55 vs 0.08",
            "PearsonΔ vs control minus vs perturbed mean (mean baseline)", "Pearson r", "≥ 0.2 (and |vs perturbed mean| < 0.2)", 0.2,
            verify_reference_matters, depends_on="systematic variation (a shift shared by all perturbations)",
            differences="the book's mean baseline of cells and Systema's perturbation-weighted reference differ slightly (the paper's "
            "non-zero values)",
        ),
        Claim(
            "SYS-4", "Systema 2025", "benchmark_all.ipynb cell 28",
            "For double perturbations whose genes were both seen, the matching mean beats the overall mean (PearsonΔ vs control).",
            "systema", "Norman doubles by number of seen genes", "matching mean median PearsonΔ ≈ 0.93 (2 seen), ≈ 0.8 (1 seen)",
            "PearsonΔ of the matching mean minus the mean baseline's", "Pearson r", "> 0", 0.0, verify_matching_mean_doubles,
            depends_on="doubles whose change resembles the changes of their singles",
        ),
        Claim(
            "PB-1", "PerturBench 2024", "Srivatsan20 transfer table; the RMSE-matched duplicate of the Systema chapter",
            "Rank metrics expose a mode-collapsed prediction that RMSE rates as well as a good one.",
            "systema", "a collapsed prediction (the mean) against the technical duplicate made as bad on RMSE",
            "decoder-cov: RMSE 0.023 (among the best) with rank 0.47 (chance 0.5)",
            "rank_rmse of the collapsed mean minus the RMSE-matched duplicate's", "rank (0 perfect, 0.5 chance)",
            "≥ 0.2 with RMSEs within 5 %", 0.2, verify_rank_exposes_collapse,
            depends_on="perturbations that differ from each other more than the noise",
        ),
        Claim(
            "MIL-1", "Miller 2025", "calibration figures; abstract",
            "PearsonΔ against control is poorly calibrated: the mean baseline scores almost like a technical duplicate.",
            "systema", _MILLER_PROTOCOL, "\"MSE and control-referenced PearsonΔ are often poorly calibrated\" (14 datasets)",
            "median DRF of pearson_delta_vs_control", "DRF (0 = mean baseline, 1 = perfect)", "< 0.2", 0.2,
            _drf_claim(["pearson_delta_vs_control"], lambda e: e < 0.2),
            depends_on="strong systematic variation and few cells per perturbation (a noisy duplicate)",
        ),
        Claim(
            "MIL-2", "Miller 2025", "calibration figures; abstract",
            "MSE is poorly calibrated: the mean baseline's MSE is close to the technical duplicate's.",
            "systema", _MILLER_PROTOCOL, "\"MSE and control-referenced PearsonΔ are often poorly calibrated\"",
            "median DRF of mse", "DRF", "< 0.2", 0.2, _drf_claim(["mse"], lambda e: e < 0.2),
            depends_on="small effects relative to the noise of a half-sample duplicate",
        ),
        Claim(
            "MIL-3", "Miller 2025", "calibration figures; abstract",
            "The DEG-weighted R² of the change against the perturbed mean is well calibrated.",
            "systema", _MILLER_PROTOCOL, "recommended metric; \"weighted and rank-based metrics are consistently calibrated\"",
            "median DRF of weighted_r2_delta_vs_perturbed_mean", "DRF", "≥ 0.5", 0.5,
            _drf_claim(["weighted_r2_delta_vs_perturbed_mean"], lambda e: e >= 0.5),
            depends_on="differentially expressed genes that a duplicate reproduces",
        ),
        Claim(
            "MIL-4", "Miller 2025", "calibration figures; abstract",
            "Rank-based metrics are well calibrated (every rank metric's DRF ≥ 0.5).",
            "systema", _MILLER_PROTOCOL, "\"weighted and rank-based metrics are consistently calibrated\"",
            "lowest median DRF of the rank metrics", "DRF", "≥ 0.5", 0.5,
            _drf_claim(["rank_rmse", "rank_cosine_delta_vs_control", "centroid_accuracy"], lambda e: e >= 0.5),
            depends_on="perturbations distinguishable from one another in a half-sample duplicate",
        ),
        Claim(
            "COLE-1", "Cole 2026", "Fig. 1 (progress bars); per-fold score table",
            "The fraction of the gap closed differs between cell lines.",
            "progress_bars", _COLE_PROTOCOL, "best unimodal: K562 0.77, HepG2 0.63, Jurkat 1.25, RPE1 0.34",
            "range over lines of the best embedding's fraction of the gap closed", "fraction of the gap", "≥ 0.1", 0.1,
            verify_gap_differs_by_line, depends_on="cell lines that differ in effect size, noise and shared biology", min_n=2,
        ),
        Claim(
            "COLE-2", "Cole 2026", "Fig. 1; blog \"the Jurkat task is basically solved\"",
            "The fraction of the gap closed is highest in Jurkat.",
            "progress_bars", _COLE_PROTOCOL, "Jurkat 1.25 vs K562 0.77 (best unimodal)",
            "Jurkat's fraction minus the highest other line's", "fraction of the gap", "> 0", 0.0, verify_jurkat_highest,
            depends_on="a Jurkat line with small effects and a small gap between the bounds", min_n=2,
        ),
        Claim(
            "COLE-3", "Cole 2026", "Fig. 1",
            "No change is worse than the training mean in every cell line (negative fraction of the gap).",
            "progress_bars", _COLE_PROTOCOL, "no change −0.33 / −0.35 / −0.80 / −0.58 (K562 / HepG2 / Jurkat / RPE1)",
            "largest fraction of the gap closed by no change over the lines", "fraction of the gap", "< 0", 0.0,
            _every_line(lambda m: m == "no change", lambda e: e < 0, "no change"),
            depends_on="a shared effect of the perturbations (the training mean differs from control)",
        ),
        Claim(
            "COLE-4", "Cole 2026", "Fig. 1",
            "Random embeddings close less than a tenth of the gap in every cell line.",
            "progress_bars", _COLE_PROTOCOL, "random −0.08 / −0.06 / −0.20 / −0.04",
            "largest fraction of the gap closed by the random embedding over the lines", "fraction of the gap", "< 0.1", 0.1,
            _every_line(lambda m: m.startswith("random"), lambda e: e < 0.1, "the random embedding"),
            depends_on="nothing but chance",
        ),
        Claim(
            "PB-2", "PerturBench 2024", "main results; Srivatsan20 transfer table",
            "Simple architectures (linear, latent additive, decoder only) match or beat complex ones (CPA) on covariate transfer.",
            "perturbench", _PB_PROTOCOL, "Srivatsan20: decoder 0.019, linear 0.030 vs CPA in the PDF tables (RMSE)",
            "RMSE of the best complex model minus the best simple one's", "RMSE (log-expression)", "interval upper bound ≥ 0", 0.0,
            _pb_compare(("linear additive (cells, covariates)", "latent additive (cells, covariates)", "decoder only (cells, covariates)"),
                        ("CPA", "CPA (no adversary)"), "a simple and a complex model"),
            depends_on="little signal beyond what an additive latent model captures", min_n=3,
        ),
        Claim(
            "PB-3", "PerturBench 2024", "model ablations",
            "Removing CPA's adversary does not hurt it.",
            "perturbench", _PB_PROTOCOL, "CPA without the adversary is as good as with it",
            "RMSE of CPA minus CPA (no adversary)", "RMSE (log-expression)", "interval upper bound ≥ 0", 0.0,
            _pb_compare(("CPA (no adversary)",), ("CPA",), "CPA with and without its adversary"), min_n=3,
        ),
        Claim(
            "PB-4", "PerturBench 2024", "Srivatsan20 transfer table (decoder-cov)",
            "A covariate-only (mode-collapsed) model has a good RMSE but a rank near chance (0.5).",
            "perturbench", _PB_PROTOCOL, "decoder-cov: RMSE 0.023, rank 0.47",
            "mean rank_rmse of decoder-cov", "rank (0 perfect, 0.5 chance)", "|rank − 0.5| ≤ 0.1 and RMSE ≤ median", 0.4,
            verify_decoder_cov_collapsed, depends_on="lines whose perturbations differ little from the line's average", min_n=3,
        ),
        Claim(
            "PB-5", "PerturBench 2024", "covariate-transfer task",
            "A perturbation's effect measured in other cell lines predicts its effect in a new line better than the line's average.",
            "perturbench", _PB_PROTOCOL, "the premise of the transfer task: models that see the perturbation in other lines win",
            "RMSE of the line mean minus the mean effect in other lines", "RMSE (log-expression)", "> 0 (interval upper bound ≥ 0)", 0.0,
            _pb_compare(("mean effect in other lines",), ("line mean",), "the line mean and the mean effect in other lines"),
            depends_on="perturbation effects shared between cell lines", min_n=3,
        ),
    )
}  # fmt: skip

#: The chapters that have claims, in the book's order.
CHAPTERS = tuple(dict.fromkeys(c.chapter for c in CLAIMS.values()))


def claims_of(chapter: str) -> list[Claim]:
    """The claims a chapter's results can test."""
    return [c for c in CLAIMS.values() if c.chapter == chapter]


def chapter_of(notebook: str) -> str | None:
    """The chapter a results file belongs to: its name, or the longest chapter name it starts with (``systema-mcfaline`` -> systema)."""
    name = str(notebook)
    if name in CHAPTERS:
        return name
    hits = [c for c in CHAPTERS if name.startswith(c) and len(name) > len(c) and name[len(c)] in "-_.@ "]
    return max(hits, key=len) if hits else None


# ---------------------------------------------------------------------------------------
# verdicts of a run, and why they disagree
# ---------------------------------------------------------------------------------------


def explain(claim: Claim, verdict: Verdict, dataset: str) -> str:
    """Why a verdict disagrees with the paper, as far as the run can show it ('' when it holds).

    In order: an interval that includes the claim's threshold (the data cannot decide), too few
    units (``n`` below the claim's ``min_n``), a simulated screen (the property the finding
    depends on), a real screen that is not the paper's (a subset, another protocol), and the
    deliberate protocol differences of the chapter.
    """
    if verdict.status != FAILS:
        return verdict.reason if verdict.status == UNTESTABLE else ""
    reasons = []
    if np.isfinite(verdict.low) and np.isfinite(verdict.high) and verdict.low <= claim.threshold <= verdict.high:
        reasons.append(
            f"the 95 % interval [{verdict.low:.3g}, {verdict.high:.3g}] includes the threshold {claim.threshold:g}: "
            f"the data are too small to decide ({verdict.n} units)"
        )
    elif verdict.n < claim.min_n:
        reasons.append(f"data too small: {verdict.n} units (the claim needs about {claim.min_n})")
    if is_simulated(dataset):
        reasons.append(
            "simulated screen: the finding depends on " + (claim.depends_on or "properties of real screens")
            + "; the simulator may lack that mechanism or set it differently (the ablation chapter switches mechanisms off)"
        )  # fmt: skip
    elif "subset" in str(dataset):
        reasons.append("a subset of the published screen (fewer perturbations, cells and genes than the paper used)")
    if claim.differences:
        reasons.append("protocol difference: " + claim.differences)
    return "; ".join(reasons) if reasons else "not explained by size or protocol: the finding does not reproduce on these data"


def check_claims(results: pd.DataFrame, chapter: str, claims: Sequence[Claim] | None = None) -> pd.DataFrame:
    """Every claim of ``chapter`` on its results, per dataset (task-wide claims once, on all datasets).

    Returns one row per (claim, dataset): ``claim, paper, statement, dataset, kind`` (``real`` or
    ``simulated``), ``status, effect, low, high, effect_name, unit, uncertainty, n, detail,
    reason`` (:func:`explain`), ``published``.
    """
    claims = claims_of(chapter) if claims is None else list(claims)
    rows = []
    datasets = sorted(results["dataset"].astype(str).unique()) if len(results) else []
    for claim in claims:
        groups = (
            [("all screens of the run", results)]
            if claim.scope == "task"
            else [(d, results[results["dataset"].astype(str) == d]) for d in datasets]
        )
        for dataset, part in groups:
            verdict = claim.check(part)
            kinds = {("simulated" if is_simulated(d) else "real") for d in part["dataset"].astype(str).unique()}
            # a task-wide claim is explained as simulated only when every screen is
            label = dataset if claim.scope != "task" else (str(part["dataset"].iloc[0]) if kinds == {"simulated"} else "")
            rows.append(
                {
                    "claim": claim.id,
                    "paper": claim.paper,
                    "statement": claim.statement,
                    "dataset": dataset,
                    "kind": "/".join(sorted(kinds)),
                    "status": verdict.status,
                    "effect": verdict.effect,
                    "low": verdict.low,
                    "high": verdict.high,
                    "effect_name": verdict.effect_name,
                    "unit": verdict.unit,
                    "uncertainty": verdict.uncertainty,
                    "n": verdict.n,
                    "detail": verdict.detail,
                    "reason": explain(claim, verdict, label),
                    "published": claim.published,
                    "verdict": verdict.text(),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def registry_table() -> pd.DataFrame:
    """Every claim: paper, figure, statement, chapter, protocol, published numbers, effect size, unit and the rule."""
    return pd.DataFrame(
        [
            {
                "claim": c.id,
                "paper": PAPERS[c.paper],
                "figure / table": c.figure,
                "statement": c.statement,
                "chapter": c.chapter,
                "protocol": c.protocol,
                "published": c.published,
                "effect size": c.effect_name,
                "unit": c.unit,
                "holds when": c.rule,
            }
            for c in CLAIMS.values()
        ]
    ).set_index("claim")


@dataclass(frozen=True)
class ClaimBox:
    """A chapter's claims and verdicts: ``table`` (one row per claim and dataset) and ``markdown`` (a MyST admonition)."""

    table: pd.DataFrame
    markdown: str

    def _repr_markdown_(self) -> str:
        return self.markdown


def claims_box(results: pd.DataFrame, chapter: str) -> ClaimBox:
    """The take-away box that ends a chapter: its published claims and this run's verdicts.

    Each claim is listed with its statement, the paper's numbers and, per dataset, the verdict with
    its effect size and interval; each verdict that disagrees with the paper is followed by the
    reason as far as the run can show it (:func:`explain`). Rendered as a MyST ``{admonition}``.
    """
    table = check_claims(results, chapter)
    lines = [f"```{{admonition}} Published claims tested by this chapter ({len(claims_of(chapter))})", ":class: tip", ""]
    if table.empty:
        lines.append("This run produced no results to test the claims on.")
    counts = table["status"].value_counts() if len(table) else pd.Series(dtype=int)
    if len(table):
        lines.append(
            f"Verdicts of this run: {int(counts.get(HOLDS, 0))} hold, {int(counts.get(FAILS, 0))} fail, "
            f"{int(counts.get(UNTESTABLE, 0))} not testable here."
        )
        lines.append("")
    for claim_id, part in table.groupby("claim", sort=False):
        c = CLAIMS[claim_id]
        lines.append(f"- **{c.id}** ({PAPERS[c.paper]}, {c.figure}): {c.statement} *Published*: {c.published}.")
        tested = part[part["status"] != UNTESTABLE]
        for _, row in part.iterrows():
            if row["status"] == UNTESTABLE:
                if tested.empty:  # shown only when no dataset of the run tests the claim
                    lines.append(f"  - {row['dataset']}: not testable here — {row['reason']}.")
                continue
            interval = f" [{row['low']:.3g}, {row['high']:.3g}]" if np.isfinite(row["low"]) and np.isfinite(row["high"]) else ""
            text = (
                f"  - {row['dataset']}: **{row['status']}** — {row['effect_name']} = {row['effect']:.3g}{interval} "
                f"({row['unit']}; {row['uncertainty']}); {row['detail']}."
            )
            if row["status"] == FAILS:
                text += f" *Why it may differ*: {row['reason']}."
            lines.append(text)
        skipped = part[part["status"] == UNTESTABLE] if len(tested) else part.iloc[0:0]
        for reason, names in skipped.groupby("reason", sort=False)["dataset"]:
            lines.append(f"  - not testable on {', '.join(names)}: {reason}.")
    lines.append("```")
    return ClaimBox(table, "\n".join(lines))


__all__ = [
    "CHAPTERS",
    "CLAIMS",
    "FAILS",
    "HOLDS",
    "PAPERS",
    "UNTESTABLE",
    "Claim",
    "ClaimBox",
    "Verdict",
    "chapter_of",
    "check_claims",
    "claims_box",
    "claims_of",
    "explain",
    "mean_statistic",
    "registry_table",
    "t_interval",
    "untestable",
]
