"""GEARS (Roohani et al., Nature Biotechnology 2024) trained and run for real, on the CPU.

GEARS 0.1.2 (``cell-gears`` on PyPI) cannot share the suite's environment: it needs
``scipy<1.15`` (newer scipy breaks ``GEARS.__init__``), and scipy 1.14 in turn needs
``numpy<2.3``, while the suite pins scipy 1.17.1 and numpy 2.4.6. So GEARS lives in its
own virtual environment (``GEARS_ENV_DIR``: ``.venv-gears`` in a checkout, the user cache
folder for an installed package), built on first use by :func:`ensure_gears_environment`
with exact pins (:data:`GEARS_REQUIREMENTS`; torch is the same CPU build 2.13.0 as the
suite's). :class:`GEARSModel` is an ordinary model of the
suite (``fit``/``predict``) that runs GEARS in a subprocess of that environment
(:mod:`helpers.models.gears._worker`) and exchanges data with it through files in a private folder.

What the wrapper does for GEARS:

* converts the canonical cells to GEARS' layout (:func:`to_gears_anndata`: ``A+ctrl``,
  ``A+B``, ``ctrl``; ``obs['cell_type']``; ``var['gene_name']``);
* writes the suite's GO annotations as GEARS' ``gene2go_all.pkl`` and the GO graph GEARS
  would build with ``make_GO`` (:func:`gears_go_edges`, the same Jaccard edges computed
  with sparse algebra instead of a process pool), so GEARS downloads nothing; the worker
  also refuses every network connection, so a missing file is an error, not a hang;
* trains on exactly the training perturbations it is given (GEARS' ``split='custom'``),
  with GEARS' own loop, loss and learning-rate schedule;
* predicts each perturbation as GEARS does (the mean over 300 control cells of the
  predicted expression) and returns a labelled perturbations x genes DataFrame.

Only genes with GO terms can be perturbed in GEARS (they are the nodes of its GO graph),
and GEARS fixes that graph before training: measured genes and training targets are
always in it; other genes to be predicted later go in ``perturbable_genes``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from ...data.annotations import load_gene_go
from ...data.canonical import CONTROL, target_genes
from ...errors import DataError
from ..base import ModelTags, PerturbationModel
from .environment import GEARSEnvironmentError, ensure_gears_environment
from .layout import gears_condition, gears_go_edges, to_gears_anndata

if TYPE_CHECKING:
    from anndata import AnnData

WORKER = Path(__file__).with_name("_worker.py")
_DATASET = "suite"  # must match _worker.DATASET


#: Numerical kernels the worker is pinned to, so that GEARS computes the same numbers on every
#: x86-64 CPU with AVX2 (nearly all since 2013): torch's own vectorised kernels, MKL (with its
#: conditional numerical reproducibility), oneDNN, numpy's OpenBLAS and its own SIMD dispatch,
#: and numba's code generation (scanpy's statistics). Without the pins each library picks the
#: widest instructions of the CPU, and GEARS' training amplifies the last-bit differences: on
#: one machine, torch, MKL and oneDNN on AVX-512 or on AVX2 gave predictions up to 0.13 apart
#: (log-expression) after 2 epochs. A value already in the environment is kept.
NUMERICS_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
    "NUMBA_CPU_NAME": "haswell",
}


class GEARSWorkerError(RuntimeError):
    """GEARS failed inside its worker process; the message holds its last output lines."""


def _event(line: str) -> dict | None:
    if line.startswith("@@gears "):
        try:
            return json.loads(line[len("@@gears ") :])
        except ValueError:
            return None
    return None


class GEARSModel(PerturbationModel):
    """GEARS as a model of the suite, trained on the CPU in its own environment.

    ``fit(train_cells)`` trains GEARS on the training cells (control plus the training
    perturbations), ``predict(perturbations)`` returns GEARS' predicted mean
    log-normalised expression for each, perturbations x genes.

    Parameters
    ----------
    epochs
        Training epochs (GEARS halves the learning rate after every epoch). The published
        benchmarks used 20 (Systema) or GEARS' default; the default here is short so a
        notebook stays fast. Measured on the Norman subset (3,375 cells x 500 genes,
        2 cores): see ``benchmarks/bench_gears.py``.
    hidden_size, batch_size, lr, weight_decay
        GEARS' hidden dimension, mini-batch size, Adam learning rate and weight decay
        (defaults as in Systema's runs: 64, 32, 1e-3; GEARS' 5e-4).
    seed
        Seeds Python, numpy and torch in the worker (control-cell pairing, batch order,
        initial weights, the control cells sampled at prediction). With the same seed and
        thread count, results are identical; see ``determinism`` below.
    val_fraction
        GEARS keeps the epoch with the lowest validation error on the top-20 DE genes. With
        0 (default), its validation set is the training perturbations themselves, so GEARS
        sees exactly the data the other models see; with a fraction > 0, that (seeded)
        share of the training perturbations is held out of the gradient steps for this
        model selection.
    perturbable_genes
        Extra genes that GEARS should be able to perturb (nodes of its GO graph), beside
        the measured genes and the training targets. GEARS fixes its graph before
        training, so pass the target genes of the perturbations you will predict (their GO
        terms are prior knowledge, not test data).
    model_kwargs
        Other arguments of GEARS' ``model_initialize`` (e.g. ``decoder_hidden_size``,
        ``num_go_gnn_layers``, ``num_similar_genes_go_graph``, ``direction_lambda``).
    n_threads
        Torch (OpenMP) threads in the worker; ``None`` lets torch choose. The default 1 is
        deliberate: GEARS runs many small tensor operations, and on a busy 2-core machine
        two threads made an epoch about ten times slower than one (threads waiting for
        each other). Results can differ in the last digits between thread counts.
    python
        Interpreter with GEARS installed; default: ``$GEARS_PYTHON`` or :data:`GEARS_ENV_DIR`,
        built on first use by :func:`ensure_gears_environment`.
    verbose
        Echo GEARS' own log lines.

    Attributes
    ----------
    genes_ : pandas.Index
        Measured genes, the columns of every prediction.
    train_perturbations_, val_perturbations_ : pandas.Index
        Perturbations GEARS took gradient steps on, and those it selected its best epoch on.
    excluded_ : dict
        Training perturbations GEARS could not use, with the reason (target gene without
        GO terms, fewer than 2 cells).
    graph_genes_ : pandas.Index
        Nodes of GEARS' GO perturbation graph: the genes it can perturb.
    perturbable_genes_without_go_ : list
        Genes asked for in ``perturbable_genes`` that have no GO terms (not perturbable).
    history_ : pandas.DataFrame
        Per epoch: GEARS' training and validation MSE (all genes and top-20 DE genes) and
        the seconds the epoch took (training steps plus GEARS' evaluation).
    resources_ : dict
        Seconds spent preparing data, training and predicting, and the worker's peak
        resident memory for fitting and predicting (MB).
    workdir_ : pathlib.Path
        Private folder with GEARS' data and the trained weights (removed with the model).
    numerics_ : dict
        The kernels the worker ran with: torch's CPU capability and the pins of :data:`NUMERICS_ENV`.

    Notes
    -----
    Determinism: the worker seeds every generator, runs with ``PYTHONHASHSEED=0`` (GEARS
    iterates over Python sets in its loss) and ``torch.use_deterministic_algorithms``;
    predictions sample their control cells with a seed derived from the perturbation's
    name, so a prediction does not depend on which others are requested. Its numerical
    kernels are pinned to AVX2 (:data:`NUMERICS_ENV`), so that another x86-64 CPU computes
    the same numbers; they may still differ with other thread counts or library builds.
    """

    name = "GEARS"

    _tags = ModelTags(training_data="cells", environment="gears", slow=True)

    def __init__(
        self,
        epochs: int = 2,
        hidden_size: int = 64,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        seed: int = 1,
        val_fraction: float = 0.0,
        perturbable_genes: Sequence[str] | None = None,
        model_kwargs: dict | None = None,
        n_threads: int | None = 1,
        python: str | None = None,
        verbose: bool = False,
    ):
        self.epochs = epochs
        self.hidden_size = hidden_size
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.val_fraction = val_fraction
        self.perturbable_genes = perturbable_genes
        self.model_kwargs = model_kwargs
        self.n_threads = n_threads
        self.python = python
        self.verbose = verbose

    # -- helpers ------------------------------------------------------------------------------
    def _python(self) -> Path:
        if self.python is not None:
            return Path(self.python)
        return ensure_gears_environment()

    def _config(self) -> dict:
        kwargs = dict(self.model_kwargs or {})
        for reserved in ("hidden_size", "G_go", "G_go_weight", "G_coexpress", "G_coexpress_weight"):
            if reserved in kwargs:
                raise ValueError(f"model_kwargs may not set {reserved!r}")
        return {
            "epochs": int(self.epochs),
            "hidden_size": int(self.hidden_size),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "weight_decay": float(self.weight_decay),
            "seed": int(self.seed),
            "n_threads": self.n_threads,
            "model_kwargs": kwargs,
        }

    def _run_worker(self, mode: str, workdir: Path, description: str, total: int | None) -> dict:
        from ...console import progress_bar as tqdm

        python = self._python()
        env = dict(os.environ)
        # MPLBACKEND: a Jupyter kernel exports its inline backend, which the worker's matplotlib does not have
        env.update({"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"})
        for key, value in NUMERICS_ENV.items():
            env.setdefault(key, value)
        env.pop("PYTHONPATH", None)
        if self.n_threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.n_threads)
        last = deque(maxlen=25)
        stage = "starting"
        cmd = [str(python), "-P", str(WORKER), mode, str(workdir)]  # -P: no script folder on sys.path
        bar = tqdm(total=total, desc=f"{description}: starting", unit="epoch" if mode == "fit" else "perturbation", leave=False)
        try:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace"
            )
        except OSError as err:
            bar.close()
            raise GEARSEnvironmentError(f"cannot start the GEARS worker with {python}: {err}") from err
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n").split("\r")[-1]
                event = _event(line)
                if event is None:
                    if line.strip():
                        last.append(line)
                        if self.verbose:
                            print(line, file=sys.stderr, flush=True)
                    continue
                if event["event"] == "stage":
                    stage = event["stage"]
                    bar.set_description(f"{description}: {stage}")
                elif event["event"] == "epoch":
                    bar.update(1)
                    bar.set_postfix(train_mse=f"{event['train_mse']:.4f}", val_mse=f"{event['val_mse']:.4f}")
                elif event["event"] == "predicted":
                    bar.update(1)
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            bar.close()
        result_file = workdir / f"{mode}_result.json"
        if returncode != 0 or not result_file.exists():
            tail = "\n".join(last) or "(no output)"
            raise GEARSWorkerError(
                f"GEARS failed while {stage} (worker exit code {returncode}; command: {' '.join(cmd)}). Last lines of its output:\n{tail}"
            )
        return json.loads(result_file.read_text())

    def _cleanup(self) -> None:
        finalizer = getattr(self, "_workdir_finalizer", None)
        if finalizer is not None:
            finalizer()
        self._workdir_finalizer = None

    # -- fit / predict --------------------------------------------------------------------------
    def fit(self, train: AnnData) -> Self:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        gears_data = to_gears_anndata(train)
        config = self._config()
        gene_go = load_gene_go()
        has_go = lambda g: bool(gene_go.get(g))  # noqa: E731

        perts = train.obs["perturbation"].astype(str)
        if CONTROL not in set(perts):
            raise DataError("the training data have no control cells; GEARS predicts from control cells.")
        counts = perts.value_counts()
        excluded = {}
        for p in sorted(counts.index):
            if p == CONTROL:
                continue
            missing = [g for g in target_genes(p) if not has_go(g)]
            if missing:
                excluded[p] = f"target gene {', '.join(missing)} has no GO terms, so GEARS cannot perturb it"
            elif counts[p] < 2:
                excluded[p] = "fewer than 2 cells (GEARS' differential-expression step needs 2)"
        if counts[CONTROL] < 2:
            raise DataError("GEARS needs at least 2 control cells.")
        used = [p for p in sorted(counts.index) if p != CONTROL and p not in excluded]
        if not used:
            raise DataError(f"no training perturbation is usable by GEARS (excluded: {dict(list(excluded.items())[:5])}).")
        keep = perts.isin(used + [CONTROL]).to_numpy()
        gears_data = gears_data[keep].copy()
        if gears_data.n_obs < self.batch_size:
            raise DataError(
                f"only {gears_data.n_obs} training cells but batch_size={self.batch_size}; GEARS drops incomplete "
                "batches, so it would not train. Lower batch_size."
            )

        measured = [str(g) for g in train.var_names]
        wanted = set(measured) | {g for p in used for g in target_genes(p)} | set(self.perturbable_genes or ())
        graph_genes = sorted(g for g in wanted if has_go(g))
        no_go_requested = sorted(g for g in set(self.perturbable_genes or ()) if not has_go(g))

        # GEARS' validation set: the training perturbations, or a seeded held-out share of them.
        val = list(used)
        fit_perts = list(used)
        if self.val_fraction > 0:
            n_val = max(1, int(round(self.val_fraction * len(used))))
            if n_val >= len(used):
                raise DataError(f"val_fraction={self.val_fraction} leaves no training perturbation for GEARS")
            val = sorted(np.random.RandomState(self.seed).choice(np.array(used), n_val, replace=False).tolist())
            fit_perts = [p for p in used if p not in set(val)]

        self._cleanup()
        workdir = Path(tempfile.mkdtemp(prefix="gears-"))
        self._workdir_finalizer = weakref.finalize(self, shutil.rmtree, str(workdir), True)
        (workdir / "gears_data").mkdir()
        (workdir / "data").mkdir()
        gears_data.write_h5ad(workdir / "train.h5ad")
        with open(workdir / "gears_data" / "gene2go_all.pkl", "wb") as f:
            pickle.dump({g: set(gene_go[g]) for g in graph_genes}, f, protocol=4)
        with open(workdir / "graph_genes.pkl", "wb") as f:
            pickle.dump(graph_genes, f, protocol=4)
        split = {
            "train": ["ctrl"] + [gears_condition(p) for p in fit_perts],
            "val": [gears_condition(p) for p in val],
            "test": [],
        }
        with open(workdir / "split.pkl", "wb") as f:
            pickle.dump(split, f, protocol=4)
        gears_go_edges(graph_genes, gene_go).to_csv(workdir / "data" / f"go_essential_{_DATASET}.csv", index=False)
        config["val_is_train"] = val == fit_perts
        (workdir / "config.json").write_text(json.dumps(config, indent=1))

        result = self._run_worker("fit", workdir, "GEARS", total=config["epochs"])
        if result["gene_list"] != measured:
            raise GEARSWorkerError("GEARS returned genes in another order than the training data; this is a bug.")
        self.genes_ = pd.Index(measured)
        self.workdir_ = workdir
        self.graph_genes_ = pd.Index(result["pert_list"])
        self.train_perturbations_ = pd.Index(fit_perts)
        self.val_perturbations_ = pd.Index(val)
        self.excluded_ = excluded
        self.perturbable_genes_without_go_ = no_go_requested
        self.history_ = pd.DataFrame(result["history"]).set_index("epoch") if result["history"] else pd.DataFrame()
        self.resources_ = {**result["timings"], "fit_peak_memory_mb": float(result["peak_memory_mb"])}
        self.numerics_ = dict(result.get("numerics", {}))
        return self

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        gene_go = load_gene_go()
        graph = set(self.graph_genes_)
        out = {}
        for p in perturbations:
            if p == CONTROL:
                out[p] = "GEARS predicts perturbations; control is its input, not an output"
                continue
            genes = target_genes(p)
            if len(genes) > 2:
                out[p] = "GEARS models one or two target genes"
                continue
            no_go = [g for g in genes if not gene_go.get(g)]
            if no_go:
                out[p] = f"target gene {', '.join(no_go)} has no GO terms, so GEARS cannot perturb it"
                continue
            absent = [g for g in genes if g not in graph]
            if absent:
                out[p] = (
                    f"target gene {', '.join(absent)} is not in GEARS' perturbation graph; GEARS fixes the graph "
                    "before training, so pass it in perturbable_genes= when creating the model"
                )
        return out

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        if not perturbations:
            return pd.DataFrame(np.zeros((0, len(self.genes_))), index=pd.Index([], dtype=object), columns=self.genes_.copy())
        workdir = Path(self.workdir_)
        if not workdir.exists():
            raise GEARSWorkerError(f"the fitted GEARS model's folder {workdir} is gone; fit the model again.")
        request = {"perturbations": [list(target_genes(p)) for p in perturbations]}
        (workdir / "predict_request.json").write_text(json.dumps(request))
        for stale in ("predictions.npy", "predict_result.json"):
            (workdir / stale).unlink(missing_ok=True)
        result = self._run_worker("predict", workdir, "GEARS prediction", total=len(perturbations))
        values = np.load(workdir / "predictions.npy")
        if result["gene_list"] != list(self.genes_) or values.shape != (len(perturbations), len(self.genes_)):
            raise GEARSWorkerError("GEARS returned predictions of an unexpected shape or gene order; this is a bug.")
        self.resources_.update(result["timings"])
        self.resources_["predict_peak_memory_mb"] = float(result["peak_memory_mb"])
        return pd.DataFrame(values, index=pd.Index(perturbations), columns=self.genes_.copy())
