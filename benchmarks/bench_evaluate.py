"""Speed and memory of ``python -m helpers evaluate`` on cells the size of the Virtual Cell Challenge validation set.

The data: 50 perturbations x 18,000 genes, 1,000 predicted and 1,000 observed cells per
perturbation and 1,000 control cells on each side, sparse (about 12 % non-zero), log-normalised
counts, in the cell-eval layout (``target_gene``, ``non-targeting``). They are simulated
(Poisson counts; each perturbation scales 200 genes and knocks down its target; the
"prediction" has the same structure with weaker, partly wrong effects) and written once to
``.cache/bench_evaluate/`` (not timed).

Target (issue 16): the whole evaluation, calibration controls included, in under 2 minutes and
6 GB on 2 cores. Steps (``make bench`` / ``python benchmarks/run.py evaluate``):

* ``evaluate: everything`` — reading both files, every profile and cell-level metric, both
  references of the predicted change, the four calibration controls;
* ``evaluate: without calibration`` — the same without the controls (the metrics cell-eval also
  computes, and the suite's other metrics).

``python benchmarks/bench_evaluate.py`` runs both steps and cell-eval (``cell-eval run
--profile minimal``: pearson_delta, mse, mae, discrimination_score_l1, overlap_at_N,
precision_at_N, de_nsig_counts, all of which the suite computes too) in its own environment
(``CELL_EVAL_PYTHON``, default ``/work/venvs/celleval/bin/python``), each in a fresh process
with ``/usr/bin/time -v`` for wall time, CPU time (user + system; less sensitive to other jobs on
a shared machine) and peak memory, and writes
``benchmarks/evaluate_vs_celleval.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import Step  # noqa: E402

N_PERTURBATIONS = 50
N_GENES = 18_000
N_CELLS = 1_000
N_CONTROL = 1_000
SEED = 0
CACHE = HERE.parent / ".cache" / "bench_evaluate"
CELL_EVAL_PYTHON = os.environ.get("CELL_EVAL_PYTHON", "/work/venvs/celleval/bin/python")


def _write(path: Path, rates: np.ndarray, labels: list[str], genes: list[str], seed: int) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from helpers.data.canonical import log_normalise

    rng = np.random.default_rng(seed)
    blocks = []
    for i, rate in enumerate(rates):
        counts = rng.poisson(rate, size=(N_CONTROL if i == 0 else N_CELLS, N_GENES)).astype(np.float32)
        blocks.append(log_normalise(sp.csr_matrix(counts)))
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame({"target_gene": labels}, index=[f"{path.stem}_{i}" for i in range(len(labels))])
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def data() -> tuple[Path, Path]:
    """Write (once) and return the paths of the predicted and the observed cells."""
    pred, real = CACHE / "pred.h5ad", CACHE / "real.h5ad"
    if pred.exists() and real.exists():
        return pred, real
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    genes = [f"GENE{i}" for i in range(N_GENES)]
    base = rng.gamma(0.25, 0.8, N_GENES)
    targets = genes[:N_PERTURBATIONS]
    real_rates, pred_rates = [base], [base * rng.lognormal(0, 0.05, N_GENES)]
    for j in range(N_PERTURBATIONS):
        hit = rng.choice(N_GENES, 200, replace=False)
        effect = rng.lognormal(0, 0.7, 200)
        r = base.copy()
        r[hit] *= effect
        r[j] *= 0.1  # the target's knock-down
        p = base.copy()
        p[hit] *= effect**0.6  # weaker effects ...
        wrong = rng.choice(N_GENES, 50, replace=False)
        p[wrong] *= rng.lognormal(0, 0.5, 50)  # ... and some wrong ones
        real_rates.append(r)
        pred_rates.append(p)
    labels = ["non-targeting"] * N_CONTROL + [t for t in targets for _ in range(N_CELLS)]
    _write(real, np.array(real_rates), labels, genes, SEED + 1)
    _write(pred, np.array(pred_rates), labels, genes, SEED + 2)
    return pred, real


def evaluate_files(paths: tuple[Path, Path], calibration: bool = True):
    from helpers.benchmarks.evaluate import load_inputs, run_evaluation

    pred, real = paths
    inputs = load_inputs(pred, real, model_name="bench")
    return run_evaluation(inputs, calibration=calibration, progress=False)


TARGET = "< 2 min, < 6 GB on 2 cores"
SIZE = f"{N_PERTURBATIONS} perturbations x {N_GENES:,} genes, {N_CELLS:,} + {N_CELLS:,} cells each"
STEPS = [
    Step(f"everything (calibration controls included), {SIZE}", lambda p: evaluate_files(p, True), data, TARGET),
    Step(f"without calibration controls, {SIZE}", lambda p: evaluate_files(p, False), data, ""),
]


def _timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall seconds, CPU seconds and peak resident MB."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}")
    lines = proc.stderr.splitlines()
    steps = {}
    if proc.stdout.strip().startswith("{"):  # the suite's own step times
        steps = {k: round(v, 1) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}

    def field(name: str) -> float:
        return next(float(line.split()[-1]) for line in lines if name in line)

    cpu = field("User time (seconds)") + field("System time (seconds)")
    out = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "peak_mb": round(field("Maximum resident set size") / 1024)}
    return {**out, "steps_seconds": steps} if steps else out


def main() -> int:
    pred, real = data()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    rows = {}
    for calibration in (True, False):
        code = (
            "import sys; sys.path.insert(0, 'benchmarks'); from bench_evaluate import evaluate_files; "
            f"import json, time; t = time.perf_counter(); r = evaluate_files(({str(pred)!r}, {str(real)!r}), {calibration}); "
            "print(json.dumps({'reading': time.perf_counter() - t - sum(r.seconds.values()), **r.seconds}))"
        )
        label = "this suite, everything" if calibration else "this suite, without calibration controls"
        rows[label] = _timed([sys.executable, "-c", code], env)
        print(label, rows[label], flush=True)
    if Path(CELL_EVAL_PYTHON).exists():
        out = CACHE / "cell-eval-outdir"
        version = subprocess.run(
            [CELL_EVAL_PYTHON, "-c", "import importlib.metadata as m; print(m.version('cell-eval'))"], capture_output=True, text=True
        )
        cmd = [CELL_EVAL_PYTHON, "-m", "cell_eval", "run", "-ap", str(pred), "-ar", str(real), "--profile", "minimal"]
        cmd += ["--num-threads", "2", "-o", str(out)]
        label = f"cell-eval {version.stdout.strip()} run --profile minimal --num-threads 2"
        rows[label] = _timed(cmd, {**os.environ, "OMP_NUM_THREADS": "2"})
        print(label, rows[label], flush=True)
    load = os.getloadavg()[0]
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_average": round(load, 1),
        "data": SIZE,
        "target": TARGET,
        "runs": rows,
    }
    (HERE / "evaluate_vs_celleval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
