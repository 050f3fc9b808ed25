"""Tests of the screen simulator (helpers.data.simulate): shapes, determinism, and that the
ground truth it reports is what the data converge to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data import changes
from helpers.data.canonical import log_normalise, validate
from helpers.data.simulate import (
    DEFAULT_CALIBRATION,
    INTERACTION_LABELS,
    PRESETS,
    ContextParams,
    SimulationParams,
    interaction_labels,
    perturbation_truth,
    simulate_screen,
    simulation_params,
    systematic_component,
    true_changes,
)
from helpers.data.simulation.truth import DISPERSION_GRID, ExpectedLogTable, snap_dispersion
from helpers.errors import DataError
from helpers.metrics import systematic_variation


def small(cells=30, controls=200, **kw) -> SimulationParams:
    """A tiny screen (300 genes, 20 singles) that generates in a fraction of a second."""
    ctx = kw.pop("contexts", (ContextParams("K562_like", cells_per_perturbation=cells, n_control_cells=controls),))
    base = SimulationParams(n_genes=300, n_programs=5, program_size=20, n_singles=20, n_batches=2, biology_seed=7, contexts=ctx)
    return base.with_overrides(**kw)


# ----------------------------------------------------------------------------- shapes and format


def test_screen_is_canonical_with_counts_and_truth():
    adata = simulate_screen(small(), seed=1)
    validate(adata)
    assert adata.n_vars == 300
    perts = adata.obs["perturbation"].astype(str)
    assert (perts == "control").sum() == 200
    assert perts.nunique() == 21
    assert set(adata.obs.columns) >= {"perturbation", "n_targets", "batch"}
    assert "context" not in adata.obs  # one context only
    assert adata.X.dtype == np.float32 and sp.isspmatrix_csr(adata.X)
    counts = adata.layers["counts"]
    assert np.all(counts.data == np.round(counts.data)) and counts.data.min() >= 1
    # X is log1p of counts normalised to 1e4 per cell's transcriptome library (obs['ncounts'])
    ncounts = adata.obs["ncounts"].to_numpy()
    assert np.all(ncounts >= np.asarray(counts.sum(axis=1)).ravel())
    expected = np.log1p(counts.toarray() * 1e4 / ncounts[:, None])
    np.testing.assert_allclose(adata.X.toarray(), expected, rtol=1e-5, atol=1e-6)
    # with panel normalisation it is exactly log_normalise of the counts, computed by an independent route
    panel = simulate_screen(small(normalisation="panel"), seed=1)
    np.testing.assert_allclose(panel.X.toarray(), log_normalise(panel.layers["counts"]).toarray(), rtol=1e-5, atol=1e-6)
    truth = true_changes(adata)
    assert truth.shape == (20, 300)
    assert list(truth.columns) == list(adata.var_names)
    assert set(truth.index) == set(perts) - {"control"}
    # gene names are real symbols from the shipped GO annotations
    from helpers.knowledge import load_gene_go

    assert set(adata.var_names) <= set(load_gene_go())


def test_same_seed_same_data_whatever_the_threads():
    p = small(n_doubles=5)
    a = simulate_screen(p, seed=3, n_jobs=1)
    b = simulate_screen(p, seed=3, n_jobs=2)
    c = simulate_screen(p, seed=4, n_jobs=2)
    assert (a.layers["counts"] != b.layers["counts"]).nnz == 0
    assert a.obs.equals(b.obs)
    pd.testing.assert_frame_equal(true_changes(a), true_changes(b))
    pd.testing.assert_frame_equal(interaction_labels(a), interaction_labels(b))
    assert a.n_obs != c.n_obs or (a.layers["counts"] != c.layers["counts"]).nnz > 0  # another seed, other cells


def test_biology_seed_fixes_effects_while_seed_redraws_cells():
    a = simulate_screen(small(), seed=1)
    b = simulate_screen(small(), seed=2)
    # same biology (biology_seed=7): same genes, perturbations and nearly the same truth (batch effects differ)
    assert list(a.var_names) == list(b.var_names)
    ta, tb = true_changes(a), true_changes(b)
    assert list(ta.index) == list(tb.index)
    assert np.corrcoef(ta.to_numpy().ravel(), tb.to_numpy().ravel())[0, 1] > 0.98


def test_h5ad_round_trip_keeps_the_truth(tmp_path):
    import anndata as ad

    adata = simulate_screen(small(n_doubles=6, interaction_pair_share=1.0), seed=0)
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(true_changes(back), true_changes(adata))
    pd.testing.assert_series_equal(systematic_component(back), systematic_component(adata))
    pd.testing.assert_frame_equal(interaction_labels(back), interaction_labels(adata), check_dtype=False)
    pd.testing.assert_frame_equal(perturbation_truth(back), perturbation_truth(adata), check_dtype=False)
    assert simulation_params(back) == simulation_params(adata)


# ----------------------------------------------------------------------------- the truth machinery


@pytest.mark.parametrize("phi,mu", [(0.05, 0.2), (0.33, 3.0), (0.33, 40.0), (2.0, 1.0), (8.0, 30.0)])
def test_expected_log_table_matches_monte_carlo(phi, mu):
    """F(μ, κ) = E log1p(κ c / ℓ) from the table against direct sampling of NB counts."""
    idx = snap_dispersion([phi])
    phi = DISPERSION_GRID[idx[0]]
    table = ExpectedLogTable(idx, (1.0, 2.0), 0.41, mu_max=100.0)
    kappa = 1.3
    value = table.values(table.gene_tables(idx), np.array([[mu]]), np.array([kappa]))[0, 0]
    rng = np.random.default_rng(0)
    n = 400_000
    ell = np.exp(0.41 * rng.standard_normal(n) - 0.5 * 0.41**2)
    c = rng.poisson(ell * mu * rng.gamma(1 / phi, phi, n))
    x = np.log1p(kappa * c / ell)
    assert abs(value - x.mean()) < 4 * x.std() / np.sqrt(n) + 1e-4
    # and the inverse recovers the mean
    rows = table.at_kappa(table.gene_tables(idx), kappa)
    assert table.invert(rows, np.array([value]))[0] == pytest.approx(mu, rel=1e-3)


def test_estimated_changes_converge_to_the_true_changes():
    """Δ̂ − Δ shrinks like 1/sqrt(cells) and is pure sampling noise: the truth is the limit of changes()."""
    errors, z2 = [], []
    for cells in (50, 400, 3200):
        p = small(
            cells=cells, controls=4 * cells, n_genes=200, n_programs=4, n_singles=10, cells_cv=0.0, n_batches=2, systematic_strength=0.3
        )
        adata = simulate_screen(p, seed=11)
        truth = true_changes(adata)
        est = changes(adata).loc[truth.index, truth.columns]
        err = (est - truth).to_numpy()
        errors.append(float(np.sqrt((err**2).mean())))
        # standard error of each estimated change from the cells' own variances
        X = adata.X
        perts = adata.obs["perturbation"].astype(str).to_numpy()

        def moments(name, X=X, perts=perts):
            rows = X[perts == name]
            m = np.asarray(rows.mean(axis=0)).ravel()
            return m, np.asarray(rows.multiply(rows).mean(axis=0)).ravel() - m**2, rows.shape[0]

        _, v_c, n_c = moments("control")
        se = np.array([np.sqrt(moments(q)[1] / cells + v_c / n_c) for q in truth.index])
        ok = se > 0
        z2.append(float(np.mean((err[ok] / se[ok]) ** 2)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] / errors[1] > 2.0 and errors[1] / errors[2] > 2.0  # ideal ratio sqrt(8) = 2.83
    # with an exact truth, (Δ̂ − Δ)/SE has mean square 1 at every depth; a bias b adds (b/SE)²
    assert all(0.7 < v < 1.25 for v in z2), z2


def test_truth_is_not_the_log_mean_shift():
    """For lowly expressed genes the change of log-normalised means is far below the log-mean shift."""
    adata = simulate_screen(
        small(
            cells=2000,
            controls=8000,
            n_genes=200,
            n_programs=4,
            n_singles=6,
            cells_cv=0.0,
            systematic_strength=0.5,
            low_expression_share=0.0,
        ),
        seed=2,
    )
    sim = adata.uns["simulation"]
    shift = np.asarray(sim["systematic_log_mean"]["K562_like"], dtype=float)
    truth = systematic_component(adata).to_numpy()
    ctrl = np.asarray(sim["control_mean_umis"]["K562_like"], dtype=float)
    low = (ctrl < 0.1) & (np.abs(shift) > 0.05)
    assert low.sum() > 10
    assert np.median(np.abs(truth[low]) / np.abs(shift[low])) < 0.5
    high = (ctrl > 5) & (np.abs(shift) > 0.05)
    assert high.sum() > 5
    assert np.median(np.abs(truth[high]) / np.abs(shift[high])) > 0.7


# ----------------------------------------------------------------------------- biology


def test_systematic_variation_rises_with_its_parameter():
    scores = []
    for strength in (0.0, 0.1, 0.4):
        adata = simulate_screen(small(cells=40, controls=1000, n_singles=40, systematic_strength=strength), seed=5)
        scores.append(systematic_variation(changes(adata)).score)
    assert scores[0] < scores[1] < scores[2]
    assert scores[0] < 0.4 and scores[2] > 0.7


def test_self_effects_knock_down_or_overexpress_the_target():
    for modality, sign in (("CRISPRi", -1), ("CRISPRa", 1)):
        adata = simulate_screen(small(modality=modality), seed=0)
        truth = true_changes(adata)
        info = perturbation_truth(adata)
        measured = [p for p in truth.index if info.loc[p, "target_measured"]]
        own = np.array([truth.loc[p, p] for p in measured])
        assert np.all(sign * own > 0), modality


def test_unmeasured_targets_and_go_programs():
    p = small(n_singles=60, target_unmeasured_share=0.2, target_program_share=0.7, knowledge_agreement=1.0)
    adata = simulate_screen(p, seed=0)
    info = perturbation_truth(adata)
    unmeasured = info.index[~info["target_measured"].astype(bool)]
    assert len(unmeasured) > 0
    assert not set(unmeasured) & set(adata.var_names)
    # knowledge_agreement = 1: every program member carries the program's GO term
    from helpers.knowledge import load_gene_go

    go = load_gene_go()
    programs = adata.uns["simulation"]["programs"]
    for _, row in programs.iterrows():
        assert all(row["go_term"] in go[g] for g in row["members"].split(";"))
    # knowledge_agreement = 0: members are random genes
    random_programs = simulate_screen(replace(p, knowledge_agreement=0.0), seed=0).uns["simulation"]["programs"]
    share = np.mean([np.mean([row["go_term"] in go[g] for g in row["members"].split(";")]) for _, row in random_programs.iterrows()])
    assert share < 0.2


def test_programs_make_responses_similar():
    adata = simulate_screen(small(n_singles=60, systematic_strength=0.0, no_phenotype_share=0.0), seed=0)
    truth = true_changes(adata)
    info = perturbation_truth(adata)
    corr = np.corrcoef(truth.to_numpy())
    prog = info.loc[truth.index, "driven_program"].to_numpy()  # the program each perturbation drives
    same = (prog[:, None] == prog[None, :]) & (prog[:, None] != "")
    np.fill_diagonal(same, False)
    other = (prog[:, None] != prog[None, :]) & (prog[:, None] != "") & (prog[None, :] != "")
    assert np.median(corr[same]) > 0.5
    assert np.median(corr[same]) > np.median(np.abs(corr[other])) + 0.3


# ----------------------------------------------------------------------------- doubles


def test_doubles_differ_from_additivity_on_labelled_genes_only():
    p = small(
        cells=1500,
        controls=3000,
        n_genes=200,
        n_programs=4,
        n_singles=8,
        n_doubles=10,
        cells_cv=0.0,
        interaction_pair_share=1.0,
        interaction_gene_share=0.3,
        modality="CRISPRa",
    )
    adata = simulate_screen(p, seed=0)
    truth = true_changes(adata)
    labels = interaction_labels(adata)
    assert set(labels["label"]) <= set(INTERACTION_LABELS)
    assert (labels["source"] == "designed").sum() > 20
    doubles = [x for x in truth.index if "+" in x]
    # the stored deviations are the truth's deviations from additivity, and unlisted genes are additive
    listed = set(zip(labels["perturbation"], labels["gene"]))
    for d in doubles:
        a, b = d.split("+")
        dev = truth.loc[d] - truth.loc[a] - truth.loc[b]
        mine = labels[labels["perturbation"] == d].set_index("gene")["deviation"]
        np.testing.assert_allclose(dev[mine.index].to_numpy(), mine.to_numpy(), atol=1e-5)
        unlisted = [g for g in truth.columns if (d, g) not in listed]
        assert np.abs(dev[unlisted]).max() <= 0.05
    # labels follow their definitions
    add, obs = labels["additive_change"], labels["true_change"]
    lab = labels["label"]
    assert np.all(np.sign(obs[lab == "opposite"]) * np.sign(add[lab == "opposite"]) < 0)
    assert np.all(np.abs(obs[lab == "synergy"]) > np.abs(add[lab == "synergy"]))
    assert np.all(np.abs(obs[lab == "buffering"]) <= np.abs(add[lab == "buffering"]))
    # in the data: the estimated deviation is large where labelled and noise elsewhere
    X = adata.X
    perts = adata.obs["perturbation"].astype(str).to_numpy()
    mean, var, n = {}, {}, {}
    for q in ["control"] + list(truth.index):
        rows = X[perts == q]
        m = np.asarray(rows.mean(axis=0)).ravel()
        mean[q] = m
        var[q] = np.asarray(rows.multiply(rows).mean(axis=0)).ravel() - m**2
        n[q] = rows.shape[0]
    z_lab, z_rest = [], []
    for d in doubles:
        a, b = d.split("+")
        est = mean[d] - mean[a] - mean[b] + mean["control"]
        se = np.sqrt(sum(var[q] / n[q] for q in (d, a, b, "control"))) + 1e-9
        z = est / se
        lab_genes = set(labels.loc[(labels["perturbation"] == d) & (np.abs(labels["deviation"]) > 0.15), "gene"])
        mask = np.array([g in lab_genes for g in truth.columns])
        listed_mask = np.array([(d, g) in listed for g in truth.columns])
        expressed = var["control"] > 0
        z_lab.extend(z[mask & expressed])
        z_rest.extend(z[~listed_mask & expressed])
    z_lab, z_rest = np.array(z_lab), np.array(z_rest)
    assert np.mean(z_rest**2) < 1.5  # unlisted genes: deviations are noise (chi-square with 1 df has mean 1)
    assert np.mean(z_lab**2) > 10


# ----------------------------------------------------------------------------- contexts


def test_context_parameters_change_signal_to_noise():
    contexts = (
        ContextParams("strong", effect_scale=1.5, cells_per_perturbation=40, n_control_cells=500),
        ContextParams("weak", effect_scale=0.4, cells_per_perturbation=40, n_control_cells=500),
        ContextParams("few_cells", effect_scale=1.5, cells_per_perturbation=10, n_control_cells=500),
        ContextParams("noisy", effect_scale=1.5, cells_per_perturbation=40, n_control_cells=500, dispersion_scale=4.0, library_scale=0.5),
    )
    # (the first simulator's dense responses: this test is about the count model of each context)
    dense = dict(low_expression_share=0.0, response_log_sd=0.5, response_max=3.0)
    adata = simulate_screen(small(contexts=contexts, n_singles=40, systematic_strength=0.0, **dense), seed=0)
    validate(adata)
    assert list(adata.obs["context"].cat.categories) == ["strong", "weak", "few_cells", "noisy"]
    with pytest.raises(DataError, match="several contexts"):
        true_changes(adata)
    snr, noise = {}, {}
    for name in ("strong", "weak", "few_cells", "noisy"):
        cells = adata[adata.obs["context"] == name]
        truth = true_changes(cells, context=name)
        est = changes(cells).loc[truth.index]
        err = est.to_numpy() - truth.to_numpy()
        noise[name] = float(np.sqrt((err**2).mean()))
        snr[name] = float(np.sqrt((truth.to_numpy() ** 2).mean()) / noise[name])
    assert snr["strong"] > 2 * snr["weak"]  # larger effects, same noise
    assert noise["few_cells"] > 1.6 * noise["strong"]  # 4x fewer cells: about 2x the noise
    assert snr["noisy"] < 0.9 * snr["strong"]  # overdispersed, shallow cells (a modest effect on means)
    # contexts share the biology: the same perturbation responds alike across contexts
    ts, tw = true_changes(adata, "strong"), true_changes(adata, "weak")
    assert np.corrcoef(ts.to_numpy().ravel(), tw.to_numpy().ravel())[0, 1] > 0.6


# ----------------------------------------------------------------------------- presets and parameters


def test_presets_are_named_and_described():
    small_names = {"norman_like", "adamson_like", "replogle_k562_like", "replogle_rpe1_like", "essential_like"}
    assert set(PRESETS) == small_names | {n + "_full" for n in small_names}
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert "cells x" in preset.description and "genes" in preset.description
    assert PRESETS["norman_like"].params.modality == "CRISPRa"
    assert PRESETS["replogle_k562_like"].params.modality == "CRISPRi"
    assert PRESETS["replogle_k562_like_full"].params.n_singles == 1087
    assert len(PRESETS["essential_like"].params.contexts) == 4


def test_replogle_presets_share_panel_and_targets_but_not_all_wiring():
    k562 = PRESETS["replogle_k562_like"].generate(scale=0.1, seed=0)
    rpe1 = PRESETS["replogle_rpe1_like"].generate(scale=0.1, seed=0)
    adamson = PRESETS["adamson_like"].generate(scale=0.2, seed=0, cells_per_perturbation=20)
    assert list(k562.var_names) == list(rpe1.var_names) == list(adamson.var_names)
    tk, tr = true_changes(k562), true_changes(rpe1)
    assert list(tk.index) == list(tr.index)  # the same targets
    ik, ir = perturbation_truth(k562), perturbation_truth(rpe1)
    kept = (ik["driven_program"] == ir.loc[ik.index, "driven_program"]).mean()
    assert 0.55 < kept < 0.95  # RPE1 keeps 70 % of the K562 wiring (plus chance)
    same = ik.index[ik["driven_program"] == ir.loc[ik.index, "driven_program"]]
    r_same = [np.corrcoef(tk.loc[p], tr.loc[p])[0, 1] for p in same]
    r_all = [np.corrcoef(tk.loc[p], tr.loc[p])[0, 1] for p in tk.index]
    assert np.nanmedian(r_same) > 0.3  # related but context-specific effects where the wiring is kept
    assert np.nanmedian(r_all) < np.nanmedian(r_same)


def test_scale_gives_a_subset_with_the_same_effects():
    preset = PRESETS["replogle_k562_like"]
    a = preset.generate(scale=0.05, seed=0)
    b = preset.generate(scale=0.1, seed=0)
    ta, tb = true_changes(a), true_changes(b)
    assert len(ta) == 15 and len(tb) == 30
    assert set(ta.index) <= set(tb.index)
    np.testing.assert_allclose(ta.to_numpy(), tb.loc[ta.index].to_numpy(), atol=2e-3)
    n_ctrl = (a.obs["perturbation"] == "control").sum()
    assert n_ctrl == round(preset.params.contexts[0].n_control_cells * 0.05)


def test_overrides_and_bad_parameters():
    p = PRESETS["essential_like"].scaled_params(0.1, systematic_strength=0.0)
    assert all(c.systematic_strength == 0.0 for c in p.contexts)
    p = PRESETS["essential_like"].scaled_params(0.1, contexts={"Jurkat_like": {"effect_scale": 2.0}})
    assert [c.effect_scale for c in p.contexts if c.name == "Jurkat_like"] == [2.0]
    with pytest.raises(ValueError, match="unknown simulation parameter"):
        PRESETS["norman_like"].scaled_params(1.0, cells_per_pert=3)
    with pytest.raises(ValueError, match="modality"):
        simulate_screen(small(modality="CRISPRx"), seed=0)
    with pytest.raises(ValueError, match="eligible targets"):
        simulate_screen(small(n_singles=5000), seed=0)
    with pytest.raises(DataError, match="no simulation ground truth"):
        import anndata as ad

        true_changes(ad.AnnData(np.zeros((2, 2), dtype=np.float32)))


# ----------------------------------------------------------------------------- calibration


def _real_subset_path() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for path in (here / "data" / "norman2019_subset.h5ad", here.parent / "shared" / "data" / "norman2019_subset.h5ad"):
        if path.exists():
            return path
    return None


@pytest.mark.skipif(_real_subset_path() is None, reason="the real Norman subset is not available")
def test_stored_calibration_matches_a_fresh_fit():
    import anndata as ad

    from helpers.data.simulate import calibrate

    real = ad.read_h5ad(_real_subset_path())
    real.obs["perturbation"] = real.obs["condition"].astype(str)
    fit = calibrate(real)
    stored = DEFAULT_CALIBRATION
    assert fit.library_log_mean == pytest.approx(stored.library_log_mean, abs=1e-3)
    assert fit.library_log_sd == pytest.approx(stored.library_log_sd, abs=1e-3)
    assert fit.dispersion_a0 == pytest.approx(stored.dispersion_a0, rel=0.02)
    assert fit.abundance_log_sd == pytest.approx(stored.abundance_log_sd, abs=0.05)
    assert fit.n_transcriptome == pytest.approx(stored.n_transcriptome, rel=0.05)


# ----------------------------------------------------------------------------- comparison helpers of the chapter


def test_expected_zero_fraction_matches_sampling():
    from helpers.data.simulation.sampling import sample_block
    from helpers.data.simulation.truth import expected_zero_fraction

    rng = np.random.default_rng(0)
    n = 100_000
    ell = np.exp(rng.normal(-0.5 * 0.41**2, 0.41, n))
    means = np.array([0.05, 0.5, 2.0, 10.0])
    phi = np.array([0.3, 0.3, 1.0, 0.1])
    counts = sample_block(rng, ell, means, phi).toarray()
    observed = (counts == 0).mean(axis=0)
    np.testing.assert_allclose(expected_zero_fraction(means, phi, 0.41), observed, atol=0.005)


def test_count_statistics_and_chapter_tables():
    from helpers.benchmarks.simulation import additivity_table, count_statistics, error_by_cells

    adata = simulate_screen(
        small(cells=200, controls=2000, n_genes=200, n_programs=4, n_singles=6, n_doubles=4, cells_cv=0.0, interaction_pair_share=1.0),
        seed=0,
    )
    stats = count_statistics(adata)
    counts = adata.layers["counts"][np.flatnonzero(adata.obs["perturbation"].astype(str) == "control")].toarray()
    np.testing.assert_allclose(stats["mean"], counts.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["fraction_zero"], (counts == 0).mean(axis=0), rtol=1e-6)
    errors = error_by_cells(adata, cells=[25, 100], control_ratio=10)
    assert errors["rms_error"].iloc[0] > 1.5 * errors["rms_error"].iloc[1]
    table = additivity_table(adata)
    labels = interaction_labels(adata)
    assert len(table) == 4 * 200
    assert (table["label"] != "additive").sum() == len(labels)


# ----------------------------------------------------------------------------- mechanisms (each does what its docstring says)


def test_capacity_deviation_closed_form():
    from helpers.data.simulation.doubles import capacity_deviation

    u = np.array([0.5, 0.5, -1.0, 0.5, 0.0, 2.0])
    v = np.array([0.5, -0.5, -0.2, 0.5, 1.0, 2.0])
    c = np.array([0.5, 0.5, 1.0, 1.0, 1.0, 0.5])
    dev = capacity_deviation(u, v, c, 1.0)
    # same sign: −sign · min · M² / (C² + M²); opposite signs or a zero: additive
    expected = [-0.5 * 0.25 / 0.5, 0.0, +0.2 * 1.0 / 2.0, -0.5 * 0.25 / 1.25, 0.0, -2.0 * 4 / 4.25]
    np.testing.assert_allclose(dev, expected)
    np.testing.assert_allclose(capacity_deviation(u, v, c, 0.5), 0.5 * dev)
    # never more than the smaller single: where both act the same way, the double is at least as strong as the stronger single
    same = np.sign(u) * np.sign(v) > 0
    assert np.all(np.abs(u + v + dev)[same] >= np.maximum(np.abs(u), np.abs(v))[same] - 1e-12)


def _deviations(adata):
    truth = true_changes(adata)
    doubles = [d for d in truth.index if "+" in d]
    rows = []
    for d in doubles:
        a, b = d.split("+")
        own = [g for g in (a, b) if g in truth.columns]
        u, v = truth.loc[a].drop(own), truth.loc[b].drop(own)
        dev = truth.loc[d].drop(own) - u - v
        rows.append(pd.DataFrame({"u": u.to_numpy(), "v": v.to_numpy(), "dev": dev.to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def test_saturation_puts_the_deviations_on_strongly_responding_genes():
    """With the capacity on, the deviation of a double from additivity grows with the single effects; off, doubles are additive."""
    from scipy.stats import spearmanr

    kw = dict(n_genes=200, n_programs=4, n_singles=10, n_doubles=15, interaction_pair_share=0.0, neomorphic_pair_share=0.0)
    kw.update(modality="CRISPRa", low_expression_share=0.0, systematic_strength=0.0)
    on = _deviations(simulate_screen(small(saturation_strength=1.0, gene_capacity=0.5, **kw), seed=0))
    off = _deviations(simulate_screen(small(saturation_strength=0.0, **kw), seed=0))
    same = np.sign(on["u"]) * np.sign(on["v"]) > 0
    strength = np.minimum(on["u"].abs(), on["v"].abs()) * np.maximum(on["u"].abs(), on["v"].abs())
    rho = spearmanr(strength[same], on.loc[same, "dev"].abs()).statistic
    assert rho > 0.4
    # the deviation sits on the strongest quarter of the pairs of single effects
    quarter = pd.qcut(strength[same], 4, labels=False)
    by_quarter = on.loc[same, "dev"].abs().groupby(quarter.to_numpy()).mean().to_numpy()
    assert by_quarter[-1] > 10 * by_quarter[:-1].max()
    # buffering: where both singles move a gene the same way, the double moves it less than their sum
    big = same & (strength > 0.02)
    assert big.sum() > 20 and (np.sign(on.loc[big, "dev"]) == -np.sign(on.loc[big, "u"])).mean() > 0.95
    # genes that only one single moves stay additive
    lone = (on["u"].abs() < 1e-3) | (on["v"].abs() < 1e-3)
    assert on.loc[lone, "dev"].abs().max() < 0.05
    # switched off: no deviation beyond the floor and normalisation (all within the label tolerance almost everywhere)
    assert (off["dev"].abs() > 0.05).mean() < 0.01 and (on["dev"].abs() > 0.05).sum() > 3 * (off["dev"].abs() > 0.05).sum()


def test_neomorphic_pairs_move_genes_the_singles_do_not():
    p = small(n_genes=200, n_programs=4, n_singles=10, n_doubles=10, interaction_pair_share=0.0, saturation_strength=0.0)
    labels = interaction_labels(simulate_screen(p.with_overrides(neomorphic_pair_share=1.0, neomorphic_size=1.0), seed=0))
    neo = labels[labels["source"] == "neomorphic"]
    assert neo["perturbation"].nunique() >= 8
    assert (neo["deviation"].abs() > 0.05).sum() > 30
    none = interaction_labels(simulate_screen(p.with_overrides(neomorphic_pair_share=0.0), seed=0))
    assert not (none["source"] == "neomorphic").any()


def _readout_vs_action(adata):
    """Across pairs of measured targets: correlation of their read-out profiles vs correlation of their perturbation effects."""
    truth = true_changes(adata)
    measured = [t for t in truth.index if t in truth.columns]
    targets, probes = measured[::2], measured[1::2]
    others = [g for g in truth.columns if g not in set(measured)]
    action = np.corrcoef(truth.loc[targets, others].to_numpy())  # rows: what each target does when perturbed
    readout = np.corrcoef(truth.loc[probes, targets].T.to_numpy())  # columns: how each responds to the other half's perturbations
    iu = np.triu_indices(len(targets), 1)
    return np.corrcoef(action[iu], readout[iu])[0, 1]


def test_readout_coupling_links_a_genes_response_to_its_effect():
    """With coupling 1 genes that respond alike act alike; with coupling 0 a gene's read-out says nothing about its effect."""
    kw = dict(
        n_genes=300, n_singles=150, no_phenotype_share=0.0, systematic_strength=0.0, low_expression_share=0.0, target_unmeasured_share=0.0
    )
    coupled = _readout_vs_action(simulate_screen(small(readout_coupling=1.0, **kw), seed=0))
    free = simulate_screen(small(readout_coupling=0.0, **kw), seed=0)
    uncoupled = _readout_vs_action(free)
    assert coupled > 0.15  # (heavy-tailed responses, program mixing and gene-specific effects blur it)
    assert abs(uncoupled) < 0.07
    # the driven program is recorded with the truth
    info = perturbation_truth(free)
    members = info[info["program"] != ""]
    assert 0.05 < (members["program"] == members["driven_program"]).mean() < 0.5


def test_heavy_tailed_responses_concentrate_each_effect_on_few_genes():
    def top_share(sd):
        adata = simulate_screen(small(n_singles=40, response_log_sd=sd, no_phenotype_share=0.0, systematic_strength=0.0), seed=0)
        t = true_changes(adata).to_numpy() ** 2
        t = np.sort(t, axis=1)[:, ::-1]
        return np.median(t[:, 0] / t.sum(axis=1))  # share of the squared change on the most changed gene

    dense, sparse = top_share(0.5), top_share(2.0)
    assert sparse > dense + 0.15


def test_barely_expressed_genes_and_dispersion_heterogeneity():
    for share in (0.0, 0.5):
        adata = simulate_screen(small(low_expression_share=share, low_expression_floor=1e-4), seed=0)
        low = (adata.var["mean_umis"] < 0.05).mean()
        assert abs(low - share) < 0.05, (share, low)
        assert adata.var["mean_umis"].min() >= 1e-4 * 0.99
    flat = simulate_screen(small(dispersion_heterogeneity=0.0), seed=0).var["dispersion"]
    spread = simulate_screen(small(dispersion_heterogeneity=1.0), seed=0).var["dispersion"]
    # the calibrated trend is flat (a1 = 0): without heterogeneity every gene sits on it (one grid value)
    assert flat.nunique() == 1 and spread.nunique() > 10
    assert np.log(spread).std() > 0.7


def test_relatedness_rewires_a_share_of_the_targets_per_cell_line():
    contexts = tuple(ContextParams(n, cells_per_perturbation=5, n_control_cells=50, relatedness=r) for n, r in (("A", 1.0), ("B", 0.3)))
    adata = simulate_screen(small(contexts=contexts, n_singles=150, readout_coupling=1.0, n_genes=300), seed=0)
    a, b = perturbation_truth(adata, "A"), perturbation_truth(adata, "B")
    assert (a["driven_program"] == a["program"]).all()  # relatedness 1 and full coupling: the shared wiring
    kept = (b["driven_program"] == a.loc[b.index, "driven_program"]).mean()
    assert 0.3 < kept < 0.6  # 0.3 kept plus the chance that a rewired target lands on its own program


def test_every_gene_the_simulator_can_target_is_a_valid_perturbation_label():
    # the genome-wide preset targets half of the shipped GO universe; a symbol with a '_2' suffix
    # (GTF2H2C_2) once made the full-size file fail its own label check, and the gene CTRL reads as a control
    from helpers.data.canonical import canonical_perturbation
    from helpers.data.simulate import GENOME_WIDE
    from helpers.data.simulation.biology import _go_index
    from helpers.data.simulation.design import biology_of, select_singles

    genes, _ = _go_index()
    assert "GTF2H2C_2" in genes
    assert [g for g in genes if canonical_perturbation(g) != g] == ["CTRL"]
    bio = biology_of(GENOME_WIDE.params)
    assert "CTRL" in bio.pool  # the pool holds it; the screen must not target it
    targets = [bio.pool[i] for i in select_singles(bio, GENOME_WIDE.params)]
    assert len(targets) == GENOME_WIDE.params.n_singles
    assert "CTRL" not in targets
    assert all(canonical_perturbation(t) == t for t in targets)
