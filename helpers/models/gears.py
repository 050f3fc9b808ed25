"""GEARS (Roohani et al., Nature Biotechnology 2024) trained and run for real, on the CPU.

GEARS 0.1.2 (``cell-gears`` on PyPI) cannot share the suite's environment: it needs
``scipy<1.15`` (newer scipy breaks ``GEARS.__init__``), and scipy 1.14 in turn needs
``numpy<2.3``, while the suite pins scipy 1.17.1 and numpy 2.4.6. So GEARS lives in its
own virtual environment, ``.venv-gears`` at the project root, built on first use by
:func:`ensure_gears_environment` with exact pins (:data:`GEARS_REQUIREMENTS`; torch is the
same CPU build 2.13.0 as the suite's). :class:`GEARSModel` is an ordinary model of the
suite (``fit``/``predict``) that runs GEARS in a subprocess of that environment
(``_gears_worker.py``) and exchanges data with it through files in a private folder.

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

import fcntl
import hashlib
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

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL, DataError, target_genes, validate
from ..data.pseudobulk import is_pseudobulk
from ..knowledge.go import load_gene_go
from ..knowledge.go_features import go_similarity
from .base import PerturbationModel

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where the GEARS environment is built (relative to the project root; gitignored).
GEARS_ENV_DIR = PROJECT_ROOT / ".venv-gears"
#: Set to a Python interpreter that has GEARS installed to use it instead of ``.venv-gears``.
PYTHON_ENV_VAR = "GEARS_PYTHON"
#: Set to 1 to let the tests build ``.venv-gears`` (about 1.8 GB, a minute with the local torch wheel).
BUILD_ENV_VAR = "GEARS_BUILD_ENV"
WORKER = Path(__file__).with_name("_gears_worker.py")
_MARKER = "helpers-gears-env.json"
_DATASET = "suite"  # must match _gears_worker.DATASET

#: Exact pins of the GEARS environment (``pip freeze`` of a working install, Python 3.11).
#: cell-gears declares neither torch_geometric (which it imports) nor an upper bound on
#: scipy (1.15+ breaks ``GEARS.__init__``); scipy 1.14.1 needs numpy < 2.3.
GEARS_REQUIREMENTS = (
    "cell-gears==0.1.2",
    "torch==2.13.0",
    "torch-geometric==2.8.1",
    "scipy==1.14.1",
    "numpy==2.2.6",
    "pandas==2.3.3",
    "anndata==0.12.19",
    "scanpy==1.11.5",
    "scikit-learn==1.9.1",
    "networkx==3.6.1",
    "dcor==0.7",
    "h5py==3.16.0",
    "tqdm==4.70.1",
    "numba==0.68.1",
    "llvmlite==0.50.0",
    "matplotlib==3.11.2",
    "seaborn==0.13.2",
    "statsmodels==0.15.0",
    "umap-learn==0.5.12",
    "pynndescent==0.7.0",
    "requests==2.34.2",
    "aiohttp==3.14.5",
    "zarr==3.1.6",
    "numcodecs==0.16.6",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "sympy==1.14.0",
    "filelock==4.2.11",
    "fsspec==2026.9.0",
    "jinja2==3.1.6",
    "psutil==7.2.2",
    "pyparsing==3.3.3",
    "packaging==26.3",
    "natsort==8.4.0",
    "legacy-api-wrap==1.5",
    "session-info2==0.4.1",
    "patsy==1.0.3",
    "formulaic==1.2.2",
    "xxhash==4.1.0",
    "typing-extensions==4.16.0",
)


class GEARSEnvironmentError(RuntimeError):
    """The GEARS environment is missing, or could not be built."""


class GEARSWorkerError(RuntimeError):
    """GEARS failed inside its worker process; the message holds its last output lines."""


# -- the separate environment -------------------------------------------------------------------


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def find_gears_python(env_dir: Path | str | None = None) -> Path | None:
    """The Python interpreter with GEARS, if one is ready; ``None`` otherwise.

    ``$GEARS_PYTHON`` wins if set; otherwise ``.venv-gears`` counts as ready when it was
    completely built with the current :data:`GEARS_REQUIREMENTS`.
    """
    override = os.environ.get(PYTHON_ENV_VAR)
    if override:
        return Path(override)
    env_dir = Path(env_dir) if env_dir is not None else GEARS_ENV_DIR
    marker = env_dir / _MARKER
    try:
        recorded = json.loads(marker.read_text())["requirements"]
    except (OSError, ValueError, KeyError):
        return None
    if recorded != list(GEARS_REQUIREMENTS) or not _env_python(env_dir).exists():
        return None
    return _env_python(env_dir)


def gears_environment_status(env_dir: Path | str | None = None) -> str:
    """One line saying whether GEARS can run here, and how to make it so."""
    python = find_gears_python(env_dir)
    if python is not None:
        return f"GEARS environment ready: {python}"
    return (
        f"the GEARS environment is not built ({Path(env_dir or GEARS_ENV_DIR)}); build it once with "
        "`python -m helpers.models.gears build` (about 1.8 GB; needs the package registry), or point "
        f"${PYTHON_ENV_VAR} at a Python with cell-gears 0.1.2"
    )


def ensure_gears_environment(env_dir: Path | str | None = None, python: str | None = None, quiet: bool = False) -> Path:
    """Return the Python interpreter of the GEARS environment, building it if needed.

    The environment is a virtual environment at ``env_dir`` (default ``.venv-gears`` in
    the project root) with exactly :data:`GEARS_REQUIREMENTS`. A marker file written last
    records the pins; an environment without it (interrupted build) or with other pins is
    rebuilt from scratch. A lock file serialises concurrent builds. If ``$GEARS_PYTHON``
    is set, that interpreter is used and nothing is built.

    Parameters
    ----------
    env_dir
        Where to build; default :data:`GEARS_ENV_DIR`.
    python
        Interpreter that creates the environment (Python 3.11); default: this one.
    quiet
        Do not print the one-line build notice.
    """
    ready = find_gears_python(env_dir)
    if ready is not None:
        if os.environ.get(PYTHON_ENV_VAR) and not ready.exists():
            raise GEARSEnvironmentError(f"${PYTHON_ENV_VAR}={ready} does not exist.")
        return ready
    env_dir = (Path(env_dir) if env_dir is not None else GEARS_ENV_DIR).resolve()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    # Lock and log live in the temp folder, keyed by the environment's path, not in the project.
    key = hashlib.sha1(str(env_dir).encode()).hexdigest()[:12]
    scratch = Path(tempfile.gettempdir())
    with open(scratch / f"gears-env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = find_gears_python(env_dir)  # another process may have built it meanwhile
        if ready is not None:
            return ready
        if env_dir.exists():
            shutil.rmtree(env_dir)
        if not quiet:
            print(f"Building the GEARS environment in {env_dir} (once; about a minute and 1.8 GB) ...", file=sys.stderr, flush=True)
        log = scratch / f"gears-env-{key}-build.log"
        steps = [
            [python or sys.executable, "-m", "venv", str(env_dir)],
            [str(_env_python(env_dir)), "-m", "pip", "install", "--no-input", *GEARS_REQUIREMENTS],
            [str(_env_python(env_dir)), "-c", "import gears, torch_geometric, scipy; print(scipy.__version__)"],
        ]
        with open(log, "w") as out:
            for cmd in steps:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    out.close()
                    tail = "".join(deque(open(log, errors="replace"), maxlen=15))
                    raise GEARSEnvironmentError(
                        f"building the GEARS environment failed at `{' '.join(cmd[:4])} ...` (exit {result.returncode}). "
                        f"Full log: {log}. Last lines:\n{tail}"
                    )
        (env_dir / _MARKER).write_text(json.dumps({"requirements": list(GEARS_REQUIREMENTS)}, indent=1))
        log.unlink(missing_ok=True)
    return _env_python(env_dir)


# -- data in GEARS' layout ----------------------------------------------------------------------


def gears_condition(perturbation: str) -> str:
    """GEARS' name of a canonical perturbation: ``ctrl``, ``A+ctrl`` or ``A+B``."""
    genes = target_genes(perturbation)
    if not genes:
        return "ctrl"
    if len(genes) == 1:
        return f"{genes[0]}+ctrl"
    if len(genes) == 2:
        return f"{genes[0]}+{genes[1]}"
    raise DataError(f"GEARS models one or two target genes, not {len(genes)} ({perturbation!r})")


def to_gears_anndata(adata, cell_type: str | None = None):
    """Canonical cells in the layout GEARS' ``PertData.new_data_process`` expects.

    ``obs['condition']`` (:func:`gears_condition`), ``obs['cell_type']`` (the single
    ``obs['context']`` value if present, else ``cell_type`` or ``"cells"``),
    ``var['gene_name']`` = ``var_names`` = gene symbols, ``X`` = the log-normalised
    expression as float32 CSR (GEARS calls ``.toarray()`` on rows). Counts are not passed.
    """
    import anndata as ad

    if is_pseudobulk(adata):
        raise DataError("GEARS trains on single cells; pass the cells, not a pseudobulk.")
    validate(adata)
    if "context" in adata.obs and adata.obs["context"].nunique() > 1:
        raise DataError(
            f"GEARS models one cell type, but the data hold {adata.obs['context'].nunique()} contexts; "
            "fit one model per context (subset obs['context'])."
        )
    if cell_type is None:
        cell_type = str(adata.obs["context"].iloc[0]) if "context" in adata.obs else "cells"
    perts = adata.obs["perturbation"].astype(str)
    names = {p: gears_condition(p) for p in perts.unique()}
    obs = pd.DataFrame(
        {"condition": perts.map(names).to_numpy(), "cell_type": cell_type},
        index=pd.Index([f"cell{i}" for i in range(adata.n_obs)]),
    )
    var = pd.DataFrame({"gene_name": adata.var_names.astype(str).to_numpy()}, index=adata.var_names.astype(str).copy())
    return ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=obs, var=var)


def gears_go_edges(genes: Sequence[str], gene_go=None) -> pd.DataFrame:
    """The GO graph GEARS' ``make_GO`` builds for ``genes``, computed without a process pool.

    Edges ``(source, target, importance)`` for every ordered pair (self pairs included)
    whose Jaccard similarity of GO terms is above 0.1, in ``make_GO``'s order (sources,
    then targets, both in the order of ``genes``, which GEARS keeps sorted). GEARS then
    keeps, for each target, the ``num_similar_genes_go_graph + 1`` largest edges.
    """
    genes = list(genes)
    S = sp.coo_matrix(go_similarity(genes, min_similarity=0.1, gene_go=gene_go))
    order = np.lexsort((S.col, S.row))
    names = np.asarray(genes, dtype=object)
    return pd.DataFrame({"source": names[S.row[order]], "target": names[S.col[order]], "importance": S.data[order]})


# -- the model -------------------------------------------------------------------------------------


def _event(line: str) -> dict | None:
    if line.startswith("@@gears "):
        try:
            return json.loads(line[len("@@gears "):])
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
        Interpreter with GEARS installed; default: ``$GEARS_PYTHON`` or ``.venv-gears``,
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

    Notes
    -----
    Determinism: the worker seeds every generator, runs with ``PYTHONHASHSEED=0`` (GEARS
    iterates over Python sets in its loss) and ``torch.use_deterministic_algorithms``;
    predictions sample their control cells with a seed derived from the perturbation's
    name, so a prediction does not depend on which others are requested. Floating-point
    results may still differ across machines, BLAS builds or thread counts.
    """

    name = "GEARS"

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
        from ..progress import progress as tqdm

        python = self._python()
        env = dict(os.environ)
        # MPLBACKEND: a Jupyter kernel exports its inline backend, which the worker's matplotlib does not have
        env.update({"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"})
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
                f"GEARS failed while {stage} (worker exit code {returncode}; command: {' '.join(cmd)}). "
                f"Last lines of its output:\n{tail}"
            )
        return json.loads(result_file.read_text())

    def _cleanup(self) -> None:
        finalizer = getattr(self, "_workdir_finalizer", None)
        if finalizer is not None:
            finalizer()
        self._workdir_finalizer = None

    # -- fit / predict --------------------------------------------------------------------------
    def fit(self, train):
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

    def _predict(self, perturbations):
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


def _main(argv: list[str]) -> int:
    if argv[1:] == ["build"]:
        print(ensure_gears_environment())
        return 0
    if argv[1:] == ["status"]:
        print(gears_environment_status())
        return 0
    print("usage: python -m helpers.models.gears build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
