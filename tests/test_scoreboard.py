import numpy as np
import pandas as pd
import pytest

from helpers.book.scoreboard import beside_published, headline_rows, ranking_agreement, summarise_run


def _results():
    rows = []
    # seed 1: A has l2 1 and 3 (mean 2), seed 2: l2 4 (mean 4) -> mean over seeds 3, not the pooled mean 8/3
    for seed, values in ((1, [1.0, 3.0]), (2, [4.0])):
        for i, v in enumerate(values):
            rows.append(
                {
                    "notebook": "unseen_perturbations",
                    "dataset": "adamson_like",
                    "seed": seed,
                    "model": "mean",
                    "perturbation": f"P{i}",
                    "common": True,
                    "metric": "l2",
                    "value": v,
                }
            )
    rows.append(
        {
            "notebook": "unseen_perturbations",
            "dataset": "adamson_like",
            "seed": 1,
            "model": "mean",
            "perturbation": "P9",
            "common": False,
            "metric": "l2",
            "value": 100.0,
        }
    )
    for model, v in (("linear", 2.5), ("no change", 5.0)):
        rows.append(
            {
                "notebook": "unseen_perturbations",
                "dataset": "adamson_like",
                "seed": 1,
                "model": model,
                "perturbation": "P0",
                "common": True,
                "metric": "l2",
                "value": v,
            }
        )
    rows.append(
        {
            "notebook": "progress_bars",
            "dataset": "essential_like",
            "seed": 42,
            "model": "mean",
            "perturbation": "all",
            "context": "HepG2_like",
            "fold": "all",
            "metric": "l2_median_over_folds",
            "value": 3.0,
        }
    )
    rows.append(
        {
            "notebook": "progress_bars",
            "dataset": "essential_like",
            "seed": 42,
            "model": "mean",
            "perturbation": "ABC",
            "context": "HepG2_like",
            "fold": "2",
            "metric": "l2",
            "value": 9.0,
        }
    )
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
            {
                "dataset": "adamson2016",
                "context": "",
                "model": "mean",
                "metric": "l2",
                "statistic": "mean over perturbations",
                "value": 3.9,
                "source": "x",
            },
            {"dataset": "adamson2016", "context": "", "model": "linear", "metric": "l2", "statistic": "mean", "value": 4.1, "source": "x"},
            {
                "dataset": "adamson2016",
                "context": "",
                "model": "no change",
                "metric": "l2",
                "statistic": "mean",
                "value": 6.0,
                "source": "x",
            },
            {
                "dataset": "adamson2016",
                "context": "",
                "model": "mean",
                "metric": "l2",
                "statistic": "se over seeds",
                "value": 0.1,
                "source": "x",
            },
            {
                "dataset": "essential_pseudobulk",
                "context": "HepG2",
                "model": "mean",
                "metric": "l2",
                "statistic": "median over 5 folds",
                "value": 7.1,
                "source": "y",
            },
            {
                "dataset": "essential_pseudobulk",
                "context": "K562",
                "model": "mean",
                "metric": "l2",
                "statistic": "median over 5 folds",
                "value": 5.0,
                "source": "y",
            },
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
    reference = pd.DataFrame(
        [{"dataset": "adamson2016", "context": "", "model": "mean", "metric": "l2", "statistic": "mean", "value": 3.0, "source": "x"}]
    )
    cmp = beside_published(summary, reference)
    assert cmp["match"].tolist() == ["same data"]
    assert np.isclose(cmp["difference"].item(), 0.0)


# --- claims on every data source ---------------------------------------------------------


def _task_rows(notebook, dataset, values, **labels):
    """Rows of one results file: {model: l2} for the perturbations of ``labels['perts']``, seeds 1-3."""
    perts = labels.pop("perts")
    return pd.DataFrame(
        [
            {"notebook": notebook, "dataset": dataset, "seed": s, "model": m, "perturbation": p, **labels, "metric": "l2", "value": v}
            for s in (1, 2, 3)
            for m, v in values.items()
            for p in perts
        ]
    )


def _two_tasks():
    doubles = _task_rows(
        "double_perturbations", "shared", {"additive": 1.0, "decoder only (torch)": 2.0, "no change": 3.0},
        perts=["A+B", "C+D"], split="test", common_set=True,
    )  # fmt: skip
    # the same dataset, model and metric names in a single-gene task, with the opposite ordering
    singles = _task_rows(
        "unseen_perturbations", "shared", {"additive": 9.0, "decoder only (torch)": 0.1, "mean": 2.0, "linear (P from other screen)": 1.0},
        perts=["A", "C"], split="test", common_set=True,
    )  # fmt: skip
    return pd.concat([doubles, singles], ignore_index=True)


def test_claims_never_pair_results_of_different_tasks():
    from helpers.book.scoreboard import claim_verdicts

    verdicts = claim_verdicts(_two_tasks()).set_index(["claim", "source"])
    d1 = verdicts.loc[("AE-D1", "shared")]
    assert d1["status"] == "holds" and d1["effect"] == pytest.approx(1.0) and d1["notebook"] == "double_perturbations"
    s2 = verdicts.loc[("AE-S2", "shared")]
    assert s2["notebook"] == "unseen_perturbations" and s2["effect"] == pytest.approx(0.5)
    # every verdict comes from the file of its own chapter
    from helpers.benchmarks.claims import CLAIMS

    for (claim, _), row in verdicts.iterrows():
        assert row["notebook"] == CLAIMS[claim].chapter


def test_beside_published_matches_only_the_same_task():
    summary = summarise_run(headline_rows(_two_tasks().assign(dataset="adamson_like")))
    reference = pd.DataFrame(
        [{"paper": "ahlmann_eltze_singles", "table": "t", "dataset": "adamson2016", "context": "", "model": "additive", "metric": "l2",
          "statistic": "mean", "value": 4.0, "source": "x"},
         {"paper": "ahlmann_eltze_doubles", "table": "u", "dataset": "adamson2016", "context": "", "model": "additive", "metric": "l2",
          "statistic": "mean", "value": 3.0, "source": "y"}]
    )  # fmt: skip
    cmp = beside_published(summary, reference)
    pairs = set(zip(cmp["notebook"], cmp["published"]))
    assert pairs == {("unseen_perturbations", 4.0), ("double_perturbations", 3.0)}


def test_screen_to_screen_transfer_is_compared():
    """Panel C's 'P from K562' is an embedding, not a cell-line context: the unseen chapter's run matches it."""
    from helpers.published import published

    summary = pd.DataFrame(
        [{"notebook": "unseen_perturbations", "dataset": "adamson_like", "context": "", "model": "linear (P from other screen)",
          "metric": "l2", "mean": 2.0, "median": 2.0, "n_seeds": 2, "n_perturbations": 40, "n_undefined": 0}]
    )  # fmt: skip
    cmp = beside_published(summary, published())
    transfer = cmp[cmp["table"] == "embedding_transfer"]
    assert transfer["published"].tolist() == [3.473]


def test_variant_files_belong_to_their_chapter():
    from helpers.book.scoreboard import chapter_of, claim_verdicts

    assert chapter_of("double_perturbations-norman2019_subset") == "double_perturbations"
    assert chapter_of("evaluate-my model") == "evaluate" and chapter_of("data") == "data"
    rows = _two_tasks()
    variant = rows[rows["notebook"] == "double_perturbations"].assign(notebook="double_perturbations-real")
    verdicts = claim_verdicts(pd.concat([rows, variant]))
    sources = set(verdicts.loc[verdicts["claim"] == "AE-D1", "source"])
    assert sources == {"shared (double_perturbations)", "shared (double_perturbations-real)"}  # same dataset twice: named by file
    heads = headline_rows(pd.concat([rows, variant]))
    assert "double_perturbations-real" in set(heads["notebook"])


def test_paper_summary_and_trust_are_computed():
    from helpers.book.scoreboard import claim_verdicts, claims_table, paper_summary, trust_summary

    results = _two_tasks()
    verdicts = claim_verdicts(results)
    table = claims_table(verdicts)
    assert "shared" in table.columns and table.loc["AE-D1", "shared"].startswith("holds")
    summary = paper_summary(verdicts)
    row = summary.loc["Ahlmann-Eltze 2025"]
    assert row["claims"] == 9 and row["holds on real"] >= 1 and row["holds on simulated"] == 0
    assert summary.loc["Cole 2026", "untestable here"] == 4  # no progress-bar results in this run
    lines = trust_summary(results, verdicts)
    doubles = next(line for line in lines if line.startswith("- **double perturbations**"))
    assert "No model beats additive: trust **additive**" in doubles and "AE-D1 holds" in doubles
    singles = next(line for line in lines if line.startswith("- **unseen single perturbations**"))
    # linear (P from other screen) 1.0 vs mean 2.0 at every seed and perturbation: a clear win
    assert "lowest mean l2 decoder only (torch)" in singles and "trust **decoder only (torch)**" in singles
    assert claim_verdicts(results).equals(verdicts)  # deterministic


@pytest.mark.slow
def test_scoreboard_notebook_shows_the_claims_twice_the_same(tmp_path):
    """The scoreboard page on a folder of hand-made results files: the claims table, the per-paper counts and the advice."""
    import json

    from helpers.book.runner import run_notebook
    from helpers.results import write_results

    results = tmp_path / "results"
    for notebook, part in _two_tasks().groupby("notebook"):
        write_results(part.drop(columns="notebook"), results, notebook)
    texts = []
    for run in ("a", "b"):
        run_notebook("scoreboard", {"results_dir": str(results)}, tmp_path / run)
        cells = json.loads((tmp_path / run / "scoreboard.ipynb").read_text())["cells"]
        out = []
        for cell in cells:
            for o in cell.get("outputs", []):
                out.append(
                    "".join(o.get("text", ""))
                    + "".join(o.get("data", {}).get("text/markdown", ""))
                    + "".join(o.get("data", {}).get("text/plain", ""))
                )
        texts.append("\n".join(out))
    assert texts[0] == texts[1]
    assert "AE-D1" in texts[0] and "holds (+1" in texts[0]
    assert "No model beats additive: trust **additive**" in texts[0]
    assert "Ahlmann-Eltze, Huber & Anders 2025" in texts[0]
