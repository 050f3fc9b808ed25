import numpy as np
import pandas as pd
import pytest

from helpers.scoreboard import beside_published, headline_rows, ranking_agreement, summarise_run


def _results():
    rows = []
    # seed 1: A has l2 1 and 3 (mean 2), seed 2: l2 4 (mean 4) -> mean over seeds 3, not the pooled mean 8/3
    for seed, values in ((1, [1.0, 3.0]), (2, [4.0])):
        for i, v in enumerate(values):
            rows.append({"notebook": "unseen_perturbations", "dataset": "adamson_like", "seed": seed, "model": "mean",
                         "perturbation": f"P{i}", "common": True, "metric": "l2", "value": v})
    rows.append({"notebook": "unseen_perturbations", "dataset": "adamson_like", "seed": 1, "model": "mean",
                 "perturbation": "P9", "common": False, "metric": "l2", "value": 100.0})
    for model, v in (("linear", 2.5), ("no change", 5.0)):
        rows.append({"notebook": "unseen_perturbations", "dataset": "adamson_like", "seed": 1, "model": model,
                     "perturbation": "P0", "common": True, "metric": "l2", "value": v})
    rows.append({"notebook": "progress_bars", "dataset": "essential_like", "seed": 42, "model": "mean", "perturbation": "all",
                 "context": "HepG2_like", "fold": "all", "metric": "l2_median_over_folds", "value": 3.0})
    rows.append({"notebook": "progress_bars", "dataset": "essential_like", "seed": 42, "model": "mean", "perturbation": "ABC",
                 "context": "HepG2_like", "fold": "2", "metric": "l2", "value": 9.0})
    return pd.DataFrame(rows)


def test_headline_rows_keep_the_common_set_and_rename_metrics():
    rows = headline_rows(_results())
    assert 100.0 not in rows["value"].tolist()  # not in the common set
    assert 9.0 not in rows["value"].tolist()  # a per-fold diagnostic
    assert set(rows.loc[rows["notebook"] == "progress_bars", "metric"]) == {"l2"}


def test_summary_weighs_every_seed_equally():
    summary = summarise_run(headline_rows(_results())).set_index(["notebook", "model", "metric"])
    row = summary.loc[("unseen_perturbations", "mean", "l2")]
    assert row["mean"] == pytest.approx(3.0)
    assert row["n_seeds"] == 2 and row["n_perturbations"] == 3


def test_beside_published_matches_analogues_and_contexts():
    summary = summarise_run(headline_rows(_results()))
    reference = pd.DataFrame(
        [
            {"dataset": "adamson2016", "context": "", "model": "mean", "metric": "l2", "statistic": "mean over perturbations", "value": 3.9, "source": "x"},
            {"dataset": "adamson2016", "context": "", "model": "linear", "metric": "l2", "statistic": "mean", "value": 4.1, "source": "x"},
            {"dataset": "adamson2016", "context": "", "model": "no change", "metric": "l2", "statistic": "mean", "value": 6.0, "source": "x"},
            {"dataset": "adamson2016", "context": "", "model": "mean", "metric": "l2", "statistic": "se over seeds", "value": 0.1, "source": "x"},
            {"dataset": "essential_pseudobulk", "context": "HepG2", "model": "mean", "metric": "l2", "statistic": "median over 5 folds", "value": 7.1, "source": "y"},
            {"dataset": "essential_pseudobulk", "context": "K562", "model": "mean", "metric": "l2", "statistic": "median over 5 folds", "value": 5.0, "source": "y"},
        ]
    )
    cmp = beside_published(summary, reference)
    assert len(cmp) == 4  # the se row and the K562 row have no counterpart
    hep = cmp[cmp["context"] == "HepG2_like"].iloc[0]
    assert hep["published"] == 7.1 and hep["this run"] == 3.0 and hep["match"] == "simulated analogue"
    mean = cmp[(cmp["model"] == "mean") & (cmp["dataset"] == "adamson_like")].iloc[0]
    assert mean["difference"] == pytest.approx(3.0 - 3.9)

    agreement = ranking_agreement(cmp, {"l2": True})
    row = agreement[agreement["dataset"] == "adamson_like"].iloc[0]
    # this run: linear 2.5 < mean 3.0 < no change 5.0; published: mean 3.9 < linear 4.1 < no change 6.0
    assert row["best here"] == "linear" and row["best published"] == "mean" and not row["same winner"]
    assert row["kendall tau"] == pytest.approx(1 / 3)
    assert row["published margin"] == pytest.approx((4.1 - 3.9) / 3.9)


def test_same_data_is_labelled():
    summary = summarise_run(headline_rows(_results().assign(dataset="adamson2016")))
    reference = pd.DataFrame([{"dataset": "adamson2016", "context": "", "model": "mean", "metric": "l2", "statistic": "mean", "value": 3.0, "source": "x"}])
    cmp = beside_published(summary, reference)
    assert cmp["match"].tolist() == ["same data"]
    assert np.isclose(cmp["difference"].item(), 0.0)
