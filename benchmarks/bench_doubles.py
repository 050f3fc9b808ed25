"""Speed of the double-perturbation benchmark (notebook ``double_perturbations``).

Setup (not timed): the ``norman_like`` simulated screen (100 singles + 124 doubles) and
its 1,000 most expressed genes. Timed: the empirical-null fit of the genetic-interaction
analysis on all 124,000 (double, gene) deviations; the same estimator on a million values;
each PerturBench-style torch model on the seed-1 training pseudobulk; and one whole seed
of the benchmark (all seven models fitted and predicting). Target: the default notebook
(5 seeds and everything else) under 2 minutes on 2 cores, i.e. one seed well under 15 s.

Run with ``python benchmarks/run.py doubles`` (each step in a fresh process) or alone with
``python benchmarks/bench_doubles.py``.
"""

from __future__ import annotations

import numpy as np
from harness import Step, run_steps

TARGET_SEED = "one seed (7 models) < 15 s on 2 cores"


def _screen():
    from helpers.data import load_dataset, top_expressed_genes

    adata = load_dataset("norman_like")
    return adata, top_expressed_genes(adata, 1000)


def _deviations():
    from helpers.data import profiles, target_genes
    from helpers.stats.interactions import deviation_from_additive

    adata, genes = _screen()
    prof = profiles(adata)
    doubles = [p for p in prof.index if len(target_genes(p)) == 2]
    return deviation_from_additive(prof[genes], doubles, prof.loc["control", genes])


def _null(deviation):
    from helpers.stats.interactions import fit_interaction_null

    null = fit_interaction_null(deviation)
    assert null.ok and null.n_values == deviation.size


def _million():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 1, 900_000), rng.normal(3, 1, 100_000)])


def _locfdr(values):
    from helpers.stats.locfdr import locfdr

    fit = locfdr(values)
    assert abs(fit.p0 - 0.9) < 0.05


def _train_pseudobulk():
    from helpers.data import double_perturbation_split, pseudobulk

    adata, genes = _screen()
    split = double_perturbation_split(adata, 1)
    return pseudobulk(split.subset(adata, "train"))[:, genes].copy()


def _torch_fit(name):
    def run(train):
        from helpers.benchmarks.double_perturbations import make_model

        model = make_model(name, seed=1).fit(train)
        assert model.stopped_because_ != "time"

    return run


def _seed(data):
    from helpers.benchmarks.double_perturbations import MODELS, run_seed

    adata, genes = data
    models = [m for m in MODELS if m != "GEARS"]  # the notebook's default set; GEARS is opt-in (benchmarks/gears_cpu.py)
    result = run_seed(adata, genes, 1, models)
    assert len(result.predictions) == len(models)


STEPS = [
    Step("GI null: locfdr + thresholds, 124 doubles x 1,000 genes", _null, _deviations, "< 2 s"),
    Step("locfdr on 1,000,000 values (90 % N(0,1) + 10 % N(3,1))", _locfdr, _million, "< 5 s"),
    Step("linear additive (torch) fit, seed-1 training pseudobulk", _torch_fit("linear additive (torch)"), _train_pseudobulk),
    Step("latent additive (torch) fit, seed-1 training pseudobulk", _torch_fit("latent additive (torch)"), _train_pseudobulk),
    Step("decoder only (torch) fit, seed-1 training pseudobulk", _torch_fit("decoder only (torch)"), _train_pseudobulk),
    Step("one seed of the benchmark: 7 models fitted + predicted (norman_like)", _seed, _screen, TARGET_SEED),
]


if __name__ == "__main__":
    run_steps(STEPS, width=75)
