"""The claims registry: each claim's test on small results tables made by hand (holds, fails, not testable)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.benchmarks import claims as cl
from helpers.benchmarks.claims import CLAIMS, FAILS, HOLDS, UNTESTABLE


def _rows(values, dataset="norman_like", metric="l2", **labels):
    """Tidy rows from {(seed, model): {perturbation: value}}."""
    out = []
    for (seed, model), per in values.items():
        for pert, v in per.items():
            out.append({"dataset": dataset, "seed": seed, "model": model, "perturbation": pert, **labels, "metric": metric, "value": v})
    return pd.DataFrame(out)


DOUBLES = ["A+B", "C+D", "E+F"]


def _doubles(deep_by_seed, additive=1.0, seeds=(1, 2, 3)):
    values = {}
    for s, deep in zip(seeds, deep_by_seed):
        values[(s, "additive")] = dict.fromkeys(DOUBLES, additive)
        values[(s, "decoder only (torch)")] = dict.fromkeys(DOUBLES, deep)
        values[(s, "no change")] = dict.fromkeys(DOUBLES, 3.0)
    return _rows(values, split="test", common_set=True)


def test_registry_covers_the_papers():
    assert len(CLAIMS) >= 15
    assert {c.paper for c in CLAIMS.values()} == set(cl.PAPERS)
    for c in CLAIMS.values():
        assert c.statement.endswith(".") and c.published and c.effect_name and c.unit and c.rule
        assert c.chapter in cl.CHAPTERS
    for chapter in ("double_perturbations", "unseen_perturbations", "systema", "progress_bars", "perturbench"):
        assert cl.claims_of(chapter)
    table = cl.registry_table()
    assert list(table.index) == list(CLAIMS)


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_every_claim_says_why_it_cannot_be_tested(claim_id):
    """On rows that hold nothing it needs, every claim is 'not testable here' with a reason, never an exception."""
    rows = _rows({(1, "somebody"): {"P": 1.0}}, metric="unrelated", fold="0", kind="embedding", context="K562", analysis="other")
    verdict = CLAIMS[claim_id].check(rows)
    assert verdict.status == UNTESTABLE and verdict.reason


def test_additive_beats_deep_by_hand():
    # per seed deep − additive = 1, 2, 3: mean 2, t interval 2 ± t(0.975, 2) · 1 / √3
    v = CLAIMS["AE-D1"].check(_doubles([2.0, 3.0, 4.0]))
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert v.status == HOLDS and v.effect == pytest.approx(2.0)
    assert (v.low, v.high) == pytest.approx((2 - half, 2 + half))
    assert v.n == 9 and "3 seeds" in v.uncertainty and v.unit.startswith("L2")
    assert CLAIMS["AE-D1"].check(_doubles([0.5, 0.5, 0.5])).status == FAILS
    no_deep = _doubles([2.0, 2.0, 2.0])
    no_deep = no_deep[no_deep["model"] != "decoder only (torch)"]
    v = CLAIMS["AE-D1"].check(no_deep)
    assert v.status == UNTESTABLE and "no deep model" in v.reason


def test_only_the_common_set_of_doubles_counts():
    rows = _doubles([2.0, 2.0, 2.0])
    extra = rows[rows["model"] == "decoder only (torch)"].assign(common_set=False, value=0.0, perturbation="X+Y")
    single = rows[rows["model"] == "decoder only (torch)"].assign(value=0.0, perturbation="A")
    v = CLAIMS["AE-D1"].check(pd.concat([rows, extra, single]))
    assert v.effect == pytest.approx(1.0)


def test_additive_against_no_change():
    v = CLAIMS["AE-D2"].check(_doubles([2.0, 2.0, 2.0]))
    assert v.status == HOLDS and v.effect == pytest.approx(1 / 3)
    assert CLAIMS["AE-D2"].check(_doubles([2.0, 2.0, 2.0], additive=4.0)).status == FAILS


def _gi(no_change, other):
    rows = []
    for seed, (a, b) in enumerate(zip(no_change, other), start=1):
        rows += [
            {"dataset": "d", "seed": seed, "model": "no change", "perturbation": "all common doubles", "metric": "gi_auprc", "value": a},
            {"dataset": "d", "seed": seed, "model": "mean", "perturbation": "all common doubles", "metric": "gi_auprc", "value": b},
        ]
    return pd.DataFrame(rows)


def test_no_change_best_at_interactions():
    v = CLAIMS["AE-D4"].check(_gi([0.3, 0.32], [0.2, 0.2]))
    assert v.status == HOLDS and v.effect == pytest.approx(0.11) and "2 seeds" in v.uncertainty
    assert CLAIMS["AE-D4"].check(_gi([0.3], [0.4])).status == FAILS
    assert CLAIMS["AE-D4"].check(_gi([0.3], [0.4]).query("model != 'no change'")).status == UNTESTABLE


def _singles(model, ratio, seeds=(1, 2), n=12):
    rng = np.random.default_rng(1)
    values = {}
    for s in seeds:
        mean = dict(zip([f"G{i}" for i in range(n)], 2 + rng.random(n)))
        values[(s, "mean")] = mean
        values[(s, model)] = {p: v * ratio for p, v in mean.items()}
    return _rows(values, dataset="replogle_k562_like", split="test", common_set=True)


def test_ratio_claims_by_hand():
    v = CLAIMS["AE-S2"].check(_singles("linear (P from other screen)", 0.5))
    assert v.status == HOLDS and v.effect == pytest.approx(0.5) and v.low == pytest.approx(0.5) and v.high == pytest.approx(0.5)
    assert "bootstrap over 24 perturbations" in v.uncertainty
    assert CLAIMS["AE-S2"].check(_singles("linear (P from other screen)", 1.5)).status == FAILS
    assert CLAIMS["AE-S2"].check(_singles("linear", 0.5)).status == UNTESTABLE
    assert CLAIMS["AE-S1"].check(_singles("linear", 1.02)).effect == pytest.approx(0.02)
    assert CLAIMS["AE-S1"].check(_singles("linear", 1.02)).status == HOLDS
    assert CLAIMS["AE-S1"].check(_singles("linear", 0.8)).status == FAILS
    assert CLAIMS["AE-S4"].check(_singles("linear (P from GO)", 1.0)).status == HOLDS
    assert CLAIMS["AE-S4"].check(_singles("linear (P from GO)", 0.9)).status == FAILS
    assert CLAIMS["AE-S5"].check(_singles("linear (random P)", 1.1)).status == HOLDS


def test_bootstrap_interval_is_a_percentile_of_resampled_means():
    # one seed, ratios r_i: the interval is the percentile bootstrap of their mean with the fixed seed
    rows = _singles("linear (P from other screen)", 1.0, seeds=(1,))
    rows.loc[rows["model"] == "linear (P from other screen)", "value"] *= np.linspace(0.5, 1.5, 12)
    v = CLAIMS["AE-S2"].check(rows)
    by_name = dict(zip([f"G{i}" for i in range(12)], np.linspace(0.5, 1.5, 12)))
    r = np.array([by_name[p] for p in sorted(by_name)])  # the paired table is sorted by perturbation
    rng = np.random.default_rng(cl.BOOTSTRAP_SEED)
    boot = r[rng.integers(0, 12, size=(cl.N_BOOTSTRAP, 12))].mean(axis=1)
    assert v.effect == pytest.approx(r.mean())
    assert (v.low, v.high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))
    assert CLAIMS["AE-S2"].check(rows) == v  # deterministic


def test_deep_against_transfer():
    rows = pd.concat([_singles("linear (P from other screen)", 0.9), _singles("MLP (torch)", 1.1).query("model != 'mean'")])
    v = CLAIMS["AE-S3"].check(rows)
    assert v.status == HOLDS and v.effect == pytest.approx(0.2)


def _sweep(pearson, perturbed=0.0):
    rows = []
    for strength, value in zip((0.0, 0.1, 0.3), pearson):
        for i in range(4):
            for metric, v in (("pearson_delta_vs_control", value + 0.01 * i), ("pearson_delta_vs_perturbed_mean", perturbed)):
                rows.append({"dataset": "replogle_k562_like", "seed": 1, "model": "mean (cells)", "perturbation": f"G{i}",
                             "analysis": "sweep", "subset": "1-gene test", "systematic_strength": strength, "metric": metric, "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_sweep_claim():
    v = CLAIMS["SYS-2"].check(_sweep([0.2, 0.4, 0.8]))
    # per-strength means 0.215, 0.415, 0.815 against 0, 0.1, 0.3: r by hand
    assert v.status == HOLDS and v.effect == pytest.approx(np.corrcoef([0, 0.1, 0.3], [0.215, 0.415, 0.815])[0, 1])
    assert CLAIMS["SYS-2"].check(_sweep([0.2, 0.4, 0.8], perturbed=0.5)).status == FAILS  # not near 0 vs the perturbed mean
    assert CLAIMS["SYS-2"].check(_sweep([0.8, 0.4, 0.2])).status == FAILS
    two = _sweep([0.2, 0.4, 0.8]).query("systematic_strength < 0.2")
    assert "≥ 3 systematic strengths" in CLAIMS["SYS-2"].check(two).reason


def _screens(scores, pearsons):
    rows = []
    for k, (score, pd_ctrl) in enumerate(zip(scores, pearsons)):
        ds = f"screen{k}"
        rows.append({"dataset": ds, "seed": np.nan, "model": "observed", "perturbation": "P", "analysis": "systematic_variation",
                     "subset": "all perturbations", "metric": "systematic_variation_cosine", "value": score})  # fmt: skip
        for metric, v in (("pearson_delta_vs_control", pd_ctrl), ("pearson_delta_vs_perturbed_mean", 0.0)):
            rows.append({"dataset": ds, "seed": 1, "model": "mean (cells)", "perturbation": "P", "analysis": "baselines",
                         "subset": "1-gene test", "metric": metric, "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_across_screens_and_the_two_references():
    v = CLAIMS["SYS-1"].check(_screens([0.2, 0.5, 0.7], [0.15, 0.45, 0.7]))
    assert v.status == HOLDS and v.effect == pytest.approx(np.corrcoef([0.2, 0.5, 0.7], [0.15, 0.45, 0.7])[0, 1]) and v.n == 3
    assert CLAIMS["SYS-1"].check(_screens([0.2, 0.5, 0.7], [0.7, 0.45, 0.15])).status == FAILS
    assert "≥ 3 screens" in CLAIMS["SYS-1"].check(_screens([0.2], [0.2])).reason
    one = _screens([0.5], [0.45])
    v = CLAIMS["SYS-3"].check(one)
    assert v.status == HOLDS and v.effect == pytest.approx(0.45)
    assert CLAIMS["SYS-3"].check(_screens([0.5], [0.1])).status == FAILS


def _calibration(duplicate, mean, metric="pearson_delta_vs_control", n=5):
    rows = []
    for i in range(n):
        for model, v in (("technical duplicate", duplicate), ("mean (perturbations)", mean), ("no change", 0.0)):
            rows.append({"dataset": "norman_like", "seed": 1, "model": model, "perturbation": f"G{i}", "analysis": "calibration",
                         "subset": "1-gene test, first halves", "metric": metric, "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_calibration_claims_by_hand():
    # DRF = (0.9 − 0.8) / (1 − 0.8 + 1e-6) ≈ 0.5: PearsonΔ vs control is not poorly calibrated here
    v = CLAIMS["MIL-1"].check(_calibration(0.9, 0.8))
    assert v.status == FAILS and v.effect == pytest.approx(0.1 / (0.2 + 1e-6))
    assert CLAIMS["MIL-1"].check(_calibration(0.82, 0.8)).status == HOLDS  # DRF 0.1
    # lower is better (MSE): DRF = (neg − pos) / neg
    assert CLAIMS["MIL-2"].check(_calibration(0.09, 0.1, metric="mse")).effect == pytest.approx(0.01 / (0.1 + 1e-6))
    assert CLAIMS["MIL-3"].check(_calibration(0.9, 0.0, metric="weighted_r2_delta_vs_perturbed_mean")).status == HOLDS
    assert (
        "calibration controls" in CLAIMS["MIL-4"].check(_calibration(0.9, 0.0)).reason
        or CLAIMS["MIL-4"].check(_calibration(0.9, 0.0)).status == UNTESTABLE
    )


def _progress(fractions, contexts):
    """Per context an embedding closing the given fraction of the gap: WAP 2.0, BAP 1.0, embedding 2 − f."""
    rows = []
    for ctx, f in zip(contexts, fractions):
        for fold in ("0", "1"):
            for i in range(3):
                for model, kind, v in (("mean (perturbations)", "null method", 2.0), ("no change", "null method", 2.5),
                                       ("experimental error (cheater)", "cheater", 1.0), ("GO (kNN)", "embedding", 2.0 - f),
                                       ("random (kNN)", "embedding", 2.0)):  # fmt: skip
                    rows.append({"dataset": "essential_like", "seed": 42, "model": model, "perturbation": f"{ctx}{fold}{i}",
                                 "context": ctx, "kind": kind, "fold": fold, "metric": "l2", "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_progress_bar_claims_by_hand():
    rows = _progress([0.5, 0.8], ["K562_like", "Jurkat_like"])
    fr = cl.fraction_closed(rows)
    assert fr["K562_like"].loc["GO (kNN)", "fraction"] == pytest.approx(0.5)
    assert fr["K562_like"].loc["no change", "fraction"] == pytest.approx(-0.5)
    v = CLAIMS["COLE-1"].check(rows)
    assert v.status == HOLDS and v.effect == pytest.approx(0.3)
    assert CLAIMS["COLE-2"].check(rows).effect == pytest.approx(0.3)
    assert CLAIMS["COLE-2"].check(_progress([0.9, 0.8], ["K562_like", "Jurkat_like"])).status == FAILS
    assert CLAIMS["COLE-1"].check(_progress([0.5, 0.55], ["K562_like", "Jurkat_like"])).status == FAILS
    assert CLAIMS["COLE-3"].check(rows).status == HOLDS and CLAIMS["COLE-4"].check(rows).effect == pytest.approx(0.0)
    only = _progress([0.5], ["K562_like"])
    assert "needs a Jurkat line" in CLAIMS["COLE-2"].check(only).reason
    assert "≥ 2 cell lines" in CLAIMS["COLE-1"].check(only).reason


def _perturbench(values, seeds=(0, 1, 2)):
    rows = []
    for model, (rmse, rank) in values.items():
        for s in seeds:
            for line in ("A172", "T98G"):
                for metric, v in (("rmse", rmse + 0.001 * s), ("rank_rmse", rank)):
                    rows.append({"dataset": "mcfaline2023_subset", "seed": s, "model": model, "perturbation": f"P@{line}",
                                 "context": line, "split": "test", "metric": metric, "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_perturbench_claims_by_hand():
    base = {
        "line mean": (0.07, 0.5),
        "mean effect in other lines": (0.06, 0.3),
        "linear additive (cells, covariates)": (0.08, 0.2),
        "decoder-cov": (0.065, 0.5),
        "CPA": (0.09, 0.25),
        "CPA (no adversary)": (0.085, 0.28),
    }
    rows = _perturbench(base)
    v = CLAIMS["PB-2"].check(rows)  # best complex 0.085 − best simple 0.08
    assert v.status == HOLDS and v.effect == pytest.approx(0.005) and "rank_rmse 0.2 vs 0.25 ✓" in v.detail
    assert CLAIMS["PB-3"].check(rows).effect == pytest.approx(0.005)
    assert CLAIMS["PB-4"].check(rows).status == HOLDS
    assert CLAIMS["PB-5"].check(rows).effect == pytest.approx(0.01)
    worse = _perturbench(dict(base, **{"CPA (no adversary)": (0.07, 0.28), "decoder-cov": (0.2, 0.3)}))
    assert CLAIMS["PB-2"].check(worse).status == FAILS  # simple credibly worse: 0.08 vs 0.07 at every seed
    assert CLAIMS["PB-4"].check(worse).status == FAILS
    assert CLAIMS["PB-3"].check(rows.query("model != 'CPA'")).status == UNTESTABLE


def test_explain_names_the_reason():
    claim = CLAIMS["AE-S2"]
    uncertain = cl.Verdict(FAILS, 1.01, low=0.95, high=1.07, n=20)
    assert "too small to decide" in cl.explain(claim, uncertain, "adamson2016")
    clear = cl.Verdict(FAILS, 1.2, low=1.1, high=1.3, n=200)
    assert "simulated screen" in cl.explain(claim, clear, "adamson_like") and claim.depends_on in cl.explain(claim, clear, "adamson_like")
    assert "subset of the published screen" in cl.explain(claim, clear, "norman2019_subset")
    assert cl.explain(claim, cl.Verdict(HOLDS, 0.9), "x") == ""


def test_box_lists_claims_and_reasons():
    rows = _doubles([0.5, 0.5, 0.5])
    box = cl.claims_box(rows, "double_perturbations")
    assert box.markdown.startswith("```{admonition}") and box.markdown.endswith("```")
    for c in cl.claims_of("double_perturbations"):
        assert f"**{c.id}**" in box.markdown
    assert "**fails**" in box.markdown and "*Why it may differ*" in box.markdown and "simulated screen" in box.markdown
    assert set(box.table["status"]) <= {HOLDS, FAILS, UNTESTABLE}
    again = cl.claims_box(rows, "double_perturbations")
    assert again.markdown == box.markdown


def test_chapter_of_results_files():
    assert cl.chapter_of("systema") == "systema"
    assert cl.chapter_of("double_perturbations-norman2019_subset") == "double_perturbations"
    assert cl.chapter_of("progress_bars_mcfaline2023_subset") == "progress_bars"
    assert cl.chapter_of("simulation") == "simulation" and cl.chapter_of("data") is None and cl.chapter_of("systemax") is None


def test_ablation_findings_are_claims():
    from helpers.benchmarks import ablation

    assert set(ablation.CLAIM_OF) == set(ablation.FINDINGS)
    for finding, claim in ablation.CLAIM_OF.items():
        assert CLAIMS[claim].chapter == ablation.FINDINGS[finding].chapter
    assert list(ablation.findings_table(list(ablation.FINDINGS))["claim"]) == list(ablation.CLAIM_OF.values())


def test_systema_states_the_pds_chance_level():
    from types import SimpleNamespace

    from helpers.benchmarks import systema

    genes = [f"G{i}" for i in range(4)]
    truth = pd.DataFrame(3.0 - 2.0 * np.eye(4), index=genes, columns=genes)
    collapsed = pd.DataFrame(3.0, index=genes, columns=genes)  # no change for all: without its own column, the own truth is exact
    controls = SimpleNamespace(truth=truth, control=pd.Series(3.0, index=genes), predictions={systema.MEAN: collapsed})
    table = systema.pds_chance({1: controls}, n_permutations=5)
    assert table["chance_other_profile"].iloc[0] == pytest.approx(0.75) and table["targets_measured"].iloc[0] == 4
    assert table["chance_collapsed"].iloc[0] == pytest.approx(1.0)
    line = systema.pds_chance_line(table)
    assert "scores 0.750, above the 0.625 (= 0.5 + 1/(2N))" in line and "scores 1.000, above it" in line


def test_no_gap_is_not_testable():
    rows = _progress([0.5, 0.8], ["K562_like", "Jurkat_like"])
    rows.loc[rows["kind"] == "cheater", "value"] = 3.0  # BAP worse than WAP: no gap
    for claim in ("COLE-1", "COLE-2", "COLE-3", "COLE-4"):
        v = CLAIMS[claim].check(rows)
        assert v.status == UNTESTABLE and "no gap to close" in v.reason


def test_across_simulated_presets():
    def rows(scores, pearsons):
        out = []
        for k, (x, y) in enumerate(zip(scores, pearsons)):
            out.append(
                {"dataset": f"p{k}_like", "seed": 1, "model": "(data)", "perturbation": "all", "metric": "systematic_variation", "value": x}
            )
            out += [{"dataset": f"p{k}_like", "seed": 1, "model": "mean", "perturbation": f"G{i}", "metric": "pearson_delta_vs_control",
                     "value": y + d} for i, d in enumerate((-0.01, 0.01))]  # fmt: skip
        return pd.DataFrame(out)

    v = CLAIMS["SYS-1s"].check(rows([0.4, 0.6, 0.8], [0.45, 0.55, 0.75]))
    assert v.status == HOLDS and v.effect == pytest.approx(np.corrcoef([0.4, 0.6, 0.8], [0.45, 0.55, 0.75])[0, 1])
    assert CLAIMS["SYS-1s"].check(rows([0.4, 0.6, 0.8], [0.75, 0.55, 0.45])).status == FAILS
    assert CLAIMS["SYS-1s"].check(rows([0.4, 0.6], [0.45, 0.55])).status == UNTESTABLE
