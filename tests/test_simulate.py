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
from helpers.data.canonical import DataError, log_normalise, validate
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
    systematic_variation_score,
    true_changes,
)
from helpers.data.simulation.truth import DISPERSION_GRID, ExpectedLogTable, snap_dispersion


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
        p = small(cells=cells, controls=4 * cells, n_genes=200, n_programs=4, n_singles=10, cells_cv=0.0, n_batches=2,
                  systematic_strength=0.3)
        adata = simulate_screen(p, seed=11)
        truth = true_changes(adata)
        est = changes(adata).loc[truth.index, truth.columns]
        err = (est - truth).to_numpy()
        errors.append(float(np.sqrt((err**2).mean())))
        # standard error of each estimated change from the cells' own variances
        X = adata.X
        perts = adata.obs["perturbation"].astype(str).to_numpy()

        def moments(name):
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
    adata = simulate_screen(small(cells=2000, controls=8000, n_genes=200, n_programs=4, n_singles=6, cells_cv=0.0,
                                  systematic_strength=0.5), seed=2)
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
        scores.append(systematic_variation_score(changes(adata)))
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
    prog = info.loc[truth.index, "program"].to_numpy()
    same = (prog[:, None] == prog[None, :]) & (prog[:, None] != "")
    np.fill_diagonal(same, False)
    other = (prog[:, None] != prog[None, :]) & (prog[:, None] != "") & (prog[None, :] != "")
    assert np.median(corr[same]) > 0.5
    assert np.median(corr[same]) > np.median(np.abs(corr[other])) + 0.3


# ----------------------------------------------------------------------------- doubles


def test_doubles_differ_from_additivity_on_labelled_genes_only():
    p = small(cells=1500, controls=3000, n_genes=200, n_programs=4, n_singles=8, n_doubles=10, cells_cv=0.0,
              interaction_pair_share=1.0, interaction_gene_share=0.3, modality="CRISPRa")
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
    adata = simulate_screen(small(contexts=contexts, n_singles=40, systematic_strength=0.0), seed=0)
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


def test_replogle_presets_share_one_biology():
    k562 = PRESETS["replogle_k562_like"].generate(scale=0.1, seed=0)
    rpe1 = PRESETS["replogle_rpe1_like"].generate(scale=0.1, seed=0)
    adamson = PRESETS["adamson_like"].generate(scale=0.2, seed=0, cells_per_perturbation=20)
    assert list(k562.var_names) == list(rpe1.var_names) == list(adamson.var_names)
    tk, tr = true_changes(k562), true_changes(rpe1)
    assert list(tk.index) == list(tr.index)  # the same targets
    r = [np.corrcoef(tk.loc[p], tr.loc[p])[0, 1] for p in tk.index]
    assert np.nanmedian(r) > 0.4  # related but context-specific effects


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
    from helpers.data.simulation.compare import expected_zero_fraction
    from helpers.data.simulation.sampling import sample_block

    rng = np.random.default_rng(0)
    n = 100_000
    ell = np.exp(rng.normal(-0.5 * 0.41**2, 0.41, n))
    means = np.array([0.05, 0.5, 2.0, 10.0])
    phi = np.array([0.3, 0.3, 1.0, 0.1])
    counts = sample_block(rng, ell, means, phi).toarray()
    observed = (counts == 0).mean(axis=0)
    np.testing.assert_allclose(expected_zero_fraction(means, phi, 0.41), observed, atol=0.005)


def test_count_statistics_and_chapter_tables():
    from helpers.data.simulation.compare import additivity_table, count_statistics, error_by_cells

    adata = simulate_screen(small(cells=200, controls=2000, n_genes=200, n_programs=4, n_singles=6, n_doubles=4,
                                  cells_cv=0.0, interaction_pair_share=1.0), seed=0)
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
