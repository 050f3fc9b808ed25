"""Genetic interactions: deviations, classes, the TPR/FDP curve and AUCs against hand values."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers.errors import DataError
from helpers.stats.interactions import (
    CLASSES,
    InteractionNull,
    additive_expectation,
    auc_scores,
    class_counts,
    compare_with_truth,
    detection_pairs,
    deviation_from_additive,
    doubles_with_singles,
    fit_interaction_null,
    interaction_classes,
    tpr_at_fdp,
    tpr_fdp_curve,
    undetected_pairs,
)

GENES = ["syn", "buf", "opp", "oth", "add", "none"]


@pytest.fixture
def profiles():
    """Control, singles A and B, double A+B; one gene per interaction class (thresholds ±0.3)."""
    rows = {
        #            syn   buf   opp   oth   add   none
        "control": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "A": [1.5, 1.5, 1.5, 1.5, 1.2, 1.0],
        "B": [1.5, 1.5, 1.5, 0.5, 1.2, 1.0],
        # additive expectation: 2.0, 2.0, 2.0, 1.0, 1.4, 1.0
        "A+B": [2.6, 1.5, 0.6, 1.5, 1.5, 1.0],
    }
    return pd.DataFrame(rows, index=GENES).T


def test_additive_and_deviation_by_hand(profiles):
    add = additive_expectation(profiles, ["A+B"])
    np.testing.assert_allclose(add.loc["A+B"].to_numpy(), [2.0, 2.0, 2.0, 1.0, 1.4, 1.0])
    dev = deviation_from_additive(profiles, ["A+B"])
    np.testing.assert_allclose(dev.loc["A+B"].to_numpy(), [0.6, -0.5, -1.4, 0.5, 0.1, 0.0], atol=1e-12)
    with pytest.raises(DataError, match="single perturbation C"):
        additive_expectation(profiles, ["A+C"])
    ok, excluded = doubles_with_singles(["A+B", "A+C", "A"], ["A", "B"])
    assert ok == ["A+B"] and excluded == {"A+C": "single perturbation C not measured"}


def test_classes_both_rules(profiles):
    suite = interaction_classes(profiles, ["A+B"], lower=-0.3, upper=0.3, rule="suite").set_index("gene")["class"]
    assert suite.astype(str).to_dict() == {
        "syn": "synergy",
        "buf": "buffering",
        "opp": "opposite",
        "oth": "other",
        "add": "additive",
        "none": "additive",
    }
    published = interaction_classes(profiles, ["A+B"], lower=-0.3, upper=0.3, rule="published").set_index("gene")["class"]
    # the published same-direction rule also asks the double to keep the singles' sign: a double that
    # crosses control can never be "cryptic"/"opposite" and ends up in "other"
    assert published["opp"] == "other"
    assert (published.drop("opp") == suite.drop("opp")).all()
    # a NaN threshold calls nothing on its side
    no_upper = interaction_classes(profiles, ["A+B"], lower=-0.3, upper=np.nan, rule="suite").set_index("gene")["class"]
    assert no_upper["syn"] == "additive" and no_upper["oth"] == "additive" and no_upper["buf"] == "buffering"
    counts = class_counts(interaction_classes(profiles, ["A+B"], -0.3, 0.3, rule="suite"))
    assert list(counts.index) == list(CLASSES)
    assert counts["pairs"].tolist() == [1, 1, 1, 1, 2]
    assert counts["percent"].sum() == pytest.approx(100)


def test_negative_direction_is_mirrored():
    # both singles down: further down is synergy, less down is buffering, up past control is opposite
    prof = pd.DataFrame(
        {"control": [2.0, 2.0, 2.0], "A": [1.5, 1.5, 1.5], "B": [1.5, 1.5, 1.5], "A+B": [0.4, 1.6, 2.5]},
        index=["syn", "buf", "opp"],
    ).T
    got = interaction_classes(prof, ["A+B"], -0.3, 0.3, rule="suite").set_index("gene")["class"].astype(str)
    assert got.to_dict() == {"syn": "synergy", "buf": "buffering", "opp": "opposite"}


def test_compare_with_truth(profiles):
    classes = interaction_classes(profiles, ["A+B"], -0.3, 0.3, rule="suite")
    truth = pd.DataFrame(
        {"perturbation": ["A+B", "A+B", "A+B"], "gene": ["syn", "buf", "add"], "label": ["synergy", "buffering", "synergy"]}
    )
    stats, table = compare_with_truth(classes, truth)
    # detected: syn, buf, opp, oth (4); truly interacting: syn, buf, add (3); both: syn, buf
    assert stats["detected"] == 4 and stats["true_interactions"] == 3 and stats["detected_and_true"] == 2
    assert stats["precision"] == pytest.approx(0.5) and stats["recall"] == pytest.approx(2 / 3)
    assert table.loc["synergy", "synergy"] == 1 and table.loc["synergy", "additive"] == 1
    assert table.loc["none", "opposite"] == 1


def test_tpr_fdp_curve_by_hand():
    # ranking: truth 1 0 1 0 0 -> TP 1 1 2 2 2, FP 0 1 1 2 3, FDP 0 .5 1/3 .5 .6
    # sorted by FDP and cummax: (0, .5) (1/3, 1) (.5, 1) (.5, 1) (.6, 1)
    curve = tpr_fdp_curve([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0])
    assert len(curve) == 101
    assert curve[0.0] == pytest.approx(0.5)
    assert curve[0.1] == pytest.approx(0.5 + 0.1 / (1 / 3) * 0.5)
    assert curve[0.2] == pytest.approx(0.5 + 0.2 / (1 / 3) * 0.5)
    assert curve[0.5] == pytest.approx(1.0) and curve[1.0] == 1.0
    # first FDP above 0: TPR is 0 to its left (yleft = 0)
    late = tpr_fdp_curve([0.9, 0.8], [0, 1])
    assert late[0.2] == 0.0 and late[0.5] == 1.0
    # tied FDP values are averaged: FDP .5 holds TPR 2/3, 2/3, 1 -> 7/9
    tied = tpr_fdp_curve([6, 5, 4, 3, 2, 1], [1, 0, 1, 0, 0, 1])
    assert tied[0.5] == pytest.approx(7 / 9)
    assert tied[0.55] == pytest.approx((7 / 9 + 1) / 2)
    assert tpr_at_fdp(tied, 0.5) == pytest.approx(7 / 9)
    # ties in the score keep input order (stable), and no true pair gives NaN
    assert tpr_fdp_curve([1, 1], [0, 1])[0.5] == 1.0
    assert tpr_fdp_curve([1, 2], [0, 0]).isna().all()


def test_auc_scores_by_hand_and_against_sklearn():
    got = auc_scores([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert got["auroc"] == pytest.approx(0.75)
    # precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1; start (0, 1): 0.5 + (1/2 + 2/3)/2 * 1/2
    assert got["auprc"] == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.2
    score = np.round(rng.normal(truth.astype(float), 1.0), 1)  # rounding makes ties
    assert auc_scores(score, truth)["auroc"] == pytest.approx(roc_auc_score(truth, score))
    perfect = auc_scores(truth.astype(float), truth)
    assert perfect["auroc"] == pytest.approx(1.0) and perfect["auprc"] == pytest.approx(1.0)
    random = auc_scores(rng.random(20_000), rng.random(20_000) < 0.1)
    assert random["auroc"] == pytest.approx(0.5, abs=0.02) and random["auprc"] == pytest.approx(0.1, abs=0.02)
    assert np.isnan(auc_scores([1, 2], [1, 1])["auroc"])


def test_detection_pairs_no_change_scores_the_additive_change(profiles):
    doubles = ["A+B"]
    add = additive_expectation(profiles, doubles)
    observed = profiles.loc[doubles]
    no_change = pd.DataFrame([profiles.loc["control"].to_numpy()], index=doubles, columns=profiles.columns)
    null = InteractionNull(-0.3, 0.3, 0.05, 6, 1)
    pairs = detection_pairs(no_change, add, observed, null)
    # |ctrl - add| = |ΔA + ΔB|
    np.testing.assert_allclose(pairs["score"], [1.0, 1.0, 1.0, 0.0, 0.4, 0.0])
    assert pairs["nonadditive"].tolist() == [True, True, True, True, False, False]
    with pytest.raises(DataError):
        detection_pairs(no_change.iloc[:, :3], add, observed, null)


def test_fit_interaction_null_is_graceful():
    small = fit_interaction_null(np.zeros((2, 10)))
    assert not small.ok and "no empirical null" in small.message and np.isnan(small.upper)
    rng = np.random.default_rng(2)
    dev = np.concatenate([rng.normal(0, 0.05, 9000), rng.normal(0.4, 0.1, 500), rng.normal(-0.4, 0.1, 500)])
    null = fit_interaction_null(dev.reshape(100, 100))
    assert null.ok and null.n_doubles == 100 and null.n_values == 10_000
    assert 0.1 < null.upper < 0.3 and -0.3 < null.lower < -0.1
    assert null.fit.fdr_at([null.upper])[0] == pytest.approx(0.05, abs=0.02)
    assert null.summary()["null_sigma"] == pytest.approx(0.05, rel=0.15)
    assert null.is_nonadditive([0.0, 0.5, -0.5]).tolist() == [False, True, True]


def test_undetected_pairs_are_excluded_from_the_null():
    prof = pd.DataFrame(
        {"control": [1.0, 0.0, 0.0], "A": [1.2, 0.0, 0.3], "B": [0.8, 0.0, 0.0], "A+B": [1.1, 0.0, 0.0]},
        index=["expressed", "silent", "partly"],
    ).T
    mask = undetected_pairs(prof, ["A+B"])
    assert mask.loc["A+B"].tolist() == [False, True, False]
    rng = np.random.default_rng(4)
    dev = rng.normal(0, 0.05, (60, 100))
    silent = np.zeros_like(dev, dtype=bool)
    silent[:, :60] = True  # 60 % of the pairs would be exact zeros
    dev[silent] = 0.0
    assert not fit_interaction_null(dev).ok  # a spike of exact zeros defeats both nulls
    null = fit_interaction_null(dev, exclude=silent)
    assert null.fit is not None and null.n_values == 60 * 40  # pure noise: a null, but no threshold
    assert "left out" in null.notes[0]
    assert null.fit.sigma == pytest.approx(0.05, rel=0.15)


def test_central_matching_fallback(monkeypatch):
    import helpers.stats.locfdr as lf

    rng = np.random.default_rng(8)
    dev = np.concatenate([rng.normal(0, 0.05, 9000), rng.normal(0.4, 0.1, 1000)])
    monkeypatch.setattr(lf, "truncated_normal_mle", lambda *a, **k: None)
    null = fit_interaction_null(dev)
    assert null.ok and null.fit.nulltype == 2
    assert any("central-matching" in n for n in null.notes)
    no_fallback = fit_interaction_null(dev, fallback=False)
    assert not no_fallback.ok and "maximum-likelihood" in no_fallback.message
