"""Tests of the ablation chapter (helpers.benchmarks.ablation) and of the real-vs-simulated statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers.benchmarks import ablation as ab
from helpers.book.runner import NOTEBOOK_DIR
from helpers.data.simulate import LEGACY_MECHANISMS, MECHANISMS, PRESETS, ContextParams, SimulationParams, simulate_screen
from helpers.errors import ParameterError


def test_schema_matches_the_notebook():
    import ast

    cells = json.loads((NOTEBOOK_DIR / "ablation.ipynb").read_text())["cells"]
    source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    values = {t.id: ast.literal_eval(node.value) for node in ast.parse(source).body for t in node.targets}
    values.pop("output_dir")
    assert values == {p.name: p.default for p in ab.PARAMETERS.params}


def test_every_mechanism_switches_off_to_valid_parameters():
    for name, spec in MECHANISMS.items():
        p = PRESETS["essential_like"].scaled_params(0.1, **spec["off"])
        p.validate()
        assert set(spec["off"]) <= set(LEGACY_MECHANISMS) | {"systematic_strength"}, name
    with pytest.raises(ParameterError, match="unknown mechanisms"):
        ab.check_mechanisms(["no such mechanism"])
    assert ab.check_mechanisms(None) == list(MECHANISMS)


def test_a_mechanism_that_does_not_change_the_screens_is_not_rerun():
    # doubles mechanisms do nothing on screens of single perturbations
    assert not ab.changes_screen("replogle_k562_like", "capacity of doubles", 0.3)
    assert ab.changes_screen("norman_like", "capacity of doubles", 0.3)
    # K562 is the reference line (relatedness 1): switching rewiring off changes it not, RPE1 yes
    assert not ab.changes_screen("replogle_k562_like", "cell-line rewiring", 0.3)
    assert ab.changes_screen("replogle_rpe1_like", "cell-line rewiring", 0.3)
    assert ab.changes_screen("replogle_k562_like", None, 0.3)


def _frame():
    rows = []
    for mech, effect in ((ab.DEFAULTS, 0.3), ("capacity of doubles", -0.2), ("systematic variation", 0.1)):
        rows.append({"finding": "additive best on doubles", "mechanism": mech, "effect": effect, "holds": effect > 0, "detail": "d",
                     "same_screens": mech == "systematic variation", "seconds": 1.0, "note": ""})  # fmt: skip
    rows.append({"finding": "PearsonΔ tracks systematic variation", "mechanism": ab.DEFAULTS, "effect": 0.9, "holds": True, "detail": "",
                 "same_screens": False, "seconds": 1.0, "note": ""})  # fmt: skip
    rows.append({"finding": "PearsonΔ tracks systematic variation", "mechanism": "systematic variation", "effect": np.nan, "holds": None,
                 "detail": "", "same_screens": False, "seconds": 0.0, "note": "sweeps it"})  # fmt: skip
    return pd.DataFrame(rows)


def test_tables_and_sentences_follow_the_numbers():
    frame = _frame()
    table = ab.ablation_table(frame)
    assert list(table.columns) == [ab.DEFAULTS, "capacity of doubles", "systematic variation"]
    assert table.loc["additive best on doubles", ab.DEFAULTS] == "holds (+0.300)"
    assert table.loc["additive best on doubles", "capacity of doubles"] == "FAILS (-0.200)"
    assert table.loc["additive best on doubles", "systematic variation"] == "holds (+0.100) ="
    assert table.loc["PearsonΔ tracks systematic variation", "systematic variation"] == "n/a"
    lines = ab.conclusions(frame)
    assert "fails when switching off: capacity of doubles (-0.200)" in lines[0]
    assert "No single mechanism" in lines[1]
    res = ab.results_table(frame, seed=0)
    assert len(res) == 4 and set(res["metric"]) == {"effect"}
    assert (
        res.loc[res["model"] == "capacity of doubles", "holds"].item() is False
        or not res.loc[res["model"] == "capacity of doubles", "holds"].item()
    )
    from helpers.results import check_results

    check_results(res)


def test_finding_rules():
    f = ab.FINDINGS
    assert f["additive best on doubles"].holds(0.01) and not f["additive best on doubles"].holds(-0.01)
    assert f["linear about the mean"].holds(0.05) and not f["linear about the mean"].holds(0.06)
    assert f["P from other screen beats the mean"].holds(0.99) and not f["P from other screen beats the mean"].holds(1.0)


_SMALL = dict(findings=["PearsonΔ tracks systematic variation"], mechanisms=["capacity of doubles", "barely expressed genes"], scale=0.1)


@pytest.mark.slow
def test_run_ablation_reuses_unchanged_screens():
    a = ab.run_ablation(**_SMALL, progress=False)
    row = a.set_index("mechanism")
    assert row.loc["capacity of doubles", "same_screens"]
    assert row.loc["capacity of doubles", "effect"] == row.loc[ab.DEFAULTS, "effect"]
    assert not row.loc["barely expressed genes", "same_screens"]


# ----------------------------------------------------------------------------- real against simulated statistics


def _tiny(**kw):
    ctx = (ContextParams("K562_like", cells_per_perturbation=60, n_control_cells=200),)
    return SimulationParams(
        n_genes=200, n_programs=4, program_size=20, n_singles=6, n_doubles=3, n_batches=2, biology_seed=3, contexts=ctx
    ).with_overrides(**kw)


def test_screen_statistics_by_an_independent_route():
    from scipy.stats import ttest_ind

    from helpers.benchmarks.simulation import screen_statistics, statistic_distances

    adata = simulate_screen(_tiny(), seed=0)
    stats = screen_statistics(adata)
    perts = adata.obs["perturbation"].astype(str).to_numpy()
    counts = adata.layers["counts"].toarray()
    ctrl = counts[perts == "control"]
    np.testing.assert_allclose(np.sort(stats["control mean"]), np.sort(ctrl.mean(axis=0)), rtol=1e-6)
    np.testing.assert_allclose(np.sort(stats["zero fraction"]), np.sort((ctrl == 0).mean(axis=0)), rtol=1e-6)
    X = adata.X.toarray()
    singles = sorted(p for p in set(perts) if p != "control" and "+" not in p)
    l2 = [np.linalg.norm(X[perts == p].mean(axis=0) - X[perts == "control"].mean(axis=0)) for p in singles]
    np.testing.assert_allclose(np.sort(stats["effect size"]), np.sort(l2), rtol=1e-5)
    # DE genes: Welch t-tests with scipy, then Benjamini-Hochberg by hand
    de = []
    for p in singles:
        pv = ttest_ind(X[perts == p], X[perts == "control"], equal_var=False).pvalue
        pv = np.where(np.isnan(pv), 1.0, pv)
        order = np.argsort(pv)
        q = np.minimum.accumulate((pv[order] * len(pv) / np.arange(1, len(pv) + 1))[::-1])[::-1]
        de.append(int((q < 0.05).sum()))
    np.testing.assert_array_equal(np.sort(stats["DE genes"]), np.sort(de))
    same = statistic_distances(stats, stats)
    assert (same["ks_distance"].dropna() == 0).all()
    assert same.set_index("statistic").loc["double deviation", "n_real"] > 0


def test_twin_has_the_real_screens_design():
    from helpers.benchmarks.simulation import twin_params

    real = simulate_screen(_tiny(n_doubles=2), seed=1)
    p = twin_params(real, PRESETS["norman_like"].params, calibration=PRESETS["norman_like"].params.calibration)
    assert p.n_genes == 200 and p.n_singles == 6 and p.n_doubles == 2
    cells = real.obs["perturbation"].astype(str).value_counts()
    assert p.contexts[0].n_control_cells == 200 and p.contexts[0].cells_per_perturbation == int(cells.drop("control").median())
    assert p.modality == "CRISPRa" and p.saturation_strength == PRESETS["norman_like"].params.saturation_strength


@pytest.mark.slow
def test_ablation_notebook_twice_on_small_parameters(tmp_path):
    """The chapter twice on small parameters: identical results tables and outputs (tests/test_book.py does not rerun it)."""
    from conftest import assert_same_outputs

    from helpers.book.runner import run_notebook

    for run in ("a", "b"):
        run_notebook("ablation", _SMALL, tmp_path / run)
    first, second = (tmp_path / r / "ablation.results.csv" for r in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert_same_outputs(tmp_path / "a" / "ablation.ipynb", tmp_path / "b" / "ablation.ipynb")
