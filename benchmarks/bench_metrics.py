"""Speed of helpers.metrics: every metric on 1,000 perturbations x 5,000 genes.

Target (issue 6): the full ``evaluate`` (all metrics of ``METRICS``) in under 10 s on 2
cores. Run through the suite's runner (``make bench`` or ``python benchmarks/run.py
metrics``), which times each step's ``run`` in a fresh process (the data set-up is not
timed), or alone with ``python benchmarks/bench_metrics.py``.

The data are random but shaped like the real task: log-normalised-looking profiles,
perturbation names that are measured genes (a third of them doubles ``A+B``), so the
target-gene exclusion of the discrimination score is exercised, 20 DE genes per
perturbation and DEG weights from random t statistics.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd
from harness import Step

from helpers.metrics import METRICS, deg_weights, evaluate

N_PERTURBATIONS = 1_000
N_GENES = 5_000
SEED = 0


def data():
    """Random pred/truth/control/perturbed mean/DE genes/DEG weights (the untimed set-up)."""
    rng = np.random.default_rng(SEED)
    genes = np.array([f"GENE{j}" for j in range(N_GENES)])
    perts = [genes[i] if i % 3 else f"{genes[i]}+{genes[i + 1]}" for i in range(N_PERTURBATIONS)]
    control = pd.Series(np.log1p(rng.gamma(0.5, 2.0, N_GENES)), index=genes)
    effects = rng.normal(0, 0.2, (N_PERTURBATIONS, N_GENES)) * (rng.random((N_PERTURBATIONS, N_GENES)) < 0.1)
    truth = pd.DataFrame(control.to_numpy() + effects, index=perts, columns=genes)
    pred = truth + rng.normal(0, 0.1, truth.shape)
    t_scores = pd.DataFrame(effects / 0.05 + rng.normal(0, 1, truth.shape), index=perts, columns=genes)
    weights = deg_weights(t_scores)
    order = np.argsort(-np.abs(t_scores.to_numpy()), axis=1)[:, :20]
    de_genes = {p: genes[order[i]].tolist() for i, p in enumerate(perts)}
    return {
        "pred": pred,
        "truth": truth,
        "control": control,
        "perturbed_mean": truth.mean(),
        "de_genes": de_genes,
        "deg_weights": weights,
    }


def evaluate_all(d):
    result = evaluate(d["pred"], d["truth"], d["control"], d["perturbed_mean"], d["de_genes"], d["deg_weights"])
    assert list(result.columns) == list(METRICS), "evaluate skipped a metric"
    return result


def _one(name):
    def step(d):
        info = METRICS[name]
        return info.function(d["pred"], d["truth"], *[d[k] for k in info.needs])

    return step


TARGET = "all metrics < 10 s on 2 cores"

STEPS = [
    Step(f"evaluate, all {len(METRICS)} metrics, {N_PERTURBATIONS:,} x {N_GENES:,}", evaluate_all, data, TARGET),
    Step("discrimination_score_l1_vs_control alone", _one("discrimination_score_l1_vs_control"), data),
    Step("centroid_accuracy alone", _one("centroid_accuracy"), data),
    Step("rank_rmse alone", _one("rank_rmse"), data),
    Step("weighted_r2_delta_vs_perturbed_mean alone", _one("weighted_r2_delta_vs_perturbed_mean"), data),
]


def main():
    print(f"{'step':60s} {'wall s':>8s} {'peak traced MB':>15s}")
    for step in STEPS:
        value = step.setup()
        tracemalloc.start()
        start = time.perf_counter()
        step.run(value)
        wall = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{step.name:60s} {wall:8.2f} {peak:15.0f}  {step.target}")


if __name__ == "__main__":
    main()
