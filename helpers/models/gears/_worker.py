"""Run GEARS 0.1.2 inside its own Python environment (called by :mod:`helpers.models.gears`).

Usage: ``python _gears_worker.py fit|predict WORKDIR`` with WORKDIR as the current folder.

The wrapper writes everything GEARS would otherwise download into WORKDIR beforehand
(``gears_data/gene2go_all.pkl``, ``data/go_essential_suite.csv``), and this script turns
every network connection into an error, so a missing file fails loudly instead of hanging
on an unreachable server. Only the standard library is imported at module level, so the
suite can import this file (and test the network guard) without GEARS installed.

Events for the wrapper are printed as ``@@gears {json}`` lines; everything else (GEARS'
own log) is passed through for the error report.
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import sys
import time
import traceback
import zlib
from pathlib import Path

DATASET = "suite"  # GEARS dataset folder name; also names make_GO's cache ./data/go_essential_suite.csv
EVENT = "@@gears "


class NetworkDisabled(ConnectionRefusedError):
    """Raised when code inside the worker tries to reach the network."""


def block_network() -> None:
    """Make every internet connection from this process fail at once, with a clear message."""

    def refuse(what):
        raise NetworkDisabled(
            f"the GEARS worker tried to reach the network ({what}); all its inputs are written locally "
            "beforehand, so this means GEARS wanted a file the suite did not provide."
        )

    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect to {address!r}")
        return original_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect to {address!r}")
        return original_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        refuse(f"look up {host!r}")

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = lambda address, *a, **k: refuse(f"connect to {address!r}")


def stub_dcor() -> None:
    """Skip importing ``dcor``: GEARS imports it only for its genetic-interaction analysis.

    ``import dcor`` loads dozens of numba-compiled functions (5-10 s per process start);
    the suite never calls ``GEARS.GI_predict``, the one user of ``distance_correlation``.
    """
    import types

    module = types.ModuleType("dcor")

    def distance_correlation(*args, **kwargs):
        raise NotImplementedError("dcor is not loaded in the suite's GEARS worker (GI analysis is not used)")

    module.distance_correlation = distance_correlation
    sys.modules.setdefault("dcor", module)


def emit(event: str, **fields) -> None:
    print(EVENT + json.dumps({"event": event, **fields}), flush=True)


def forbid_downloads() -> None:
    """Replace GEARS' download helper: a missing file is an explicit error, never a download."""
    import gears.pertdata
    import gears.utils

    def no_download(url, save_path):
        if os.path.exists(save_path):
            return
        raise FileNotFoundError(
            f"GEARS wanted to download {url} to {save_path}. The suite writes every file GEARS needs "
            "before it runs; this one is missing, which is a bug in helpers.models.gears."
        )

    gears.utils.dataverse_download = no_download
    gears.pertdata.dataverse_download = no_download


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def pert_seed(seed: int, name: str) -> int:
    """Seed for predicting one perturbation: independent of which others are predicted."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def configure_threads(n_threads) -> None:
    import torch

    if n_threads:
        torch.set_num_threads(int(n_threads))


def hook_gears_log(history: list, epochs: int) -> None:
    """Forward GEARS' log lines and turn its per-epoch summary into progress events."""
    import re

    import gears.gears

    original = gears.gears.print_sys
    epoch_re = re.compile(r"Epoch (\d+): Train Overall MSE: (\S+) Validation Overall MSE: (\S+?)\.?\s*$")
    de_re = re.compile(r"Train Top 20 DE MSE: (\S+) Validation Top 20 DE MSE: (\S+?)\.?\s*$")
    start = [time.perf_counter()]

    def print_sys(message):
        text = str(message)
        match = epoch_re.search(text)
        if match:
            now = time.perf_counter()
            history.append(
                {
                    "epoch": int(match.group(1)),
                    "train_mse": float(match.group(2)),
                    "val_mse": float(match.group(3)),
                    "seconds": now - start[0],
                }
            )
            start[0] = now
        match = de_re.search(text)
        if match and history:
            history[-1]["train_mse_top20_de"] = float(match.group(1))
            history[-1]["val_mse_top20_de"] = float(match.group(2))
            emit("epoch", epochs=epochs, **history[-1])
        if text.startswith("Start Training"):
            start[0] = time.perf_counter()
        original(message)

    gears.gears.print_sys = print_sys


def evaluate_into_arrays(loader, model, uncertainty, device):
    """GEARS' ``inference.evaluate`` with the same results, written into arrays allocated once.

    GEARS' own version keeps four small tensors per cell (its rows of ``pred`` and
    ``truth`` and its top-20 genes) and stacks them at the end. Left between the 8 MB
    activations that every batch allocates and frees, those tens of thousands of small
    blocks fragment glibc's heap: on the 35,008 training cells of a Norman-like split
    the training evaluation grew the process from 1.3 GB to 10.6 GB, for results of
    290 MB (two splits at once ran the machine out of memory). Here each batch is copied
    into preallocated float32 arrays, so nothing small outlives its batch. The values
    are the same floats as GEARS' (a copy, no arithmetic), so the epoch chosen as best,
    and therefore the trained model, do not change. ``uncertainty`` runs GEARS' own.
    """
    import numpy as np
    import torch
    from gears.inference import evaluate

    if uncertainty:
        return evaluate(loader, model, uncertainty, device)
    model.eval()
    model.to(device)
    n_cells = len(loader.dataset) if not getattr(loader, "drop_last", False) else len(loader) * loader.batch_size
    pert_cat: list = []
    pred = truth = pred_de = truth_de = None
    row = 0
    for batch in loader:
        batch.to(device)
        pert_cat.extend(batch.pert)
        with torch.no_grad():
            p = model(batch).cpu().numpy()
            t = batch.y.cpu().numpy()
            de = np.stack([np.asarray(i) for i in batch.de_idx])
            if pred is None:
                pred, truth = np.empty((n_cells, p.shape[1]), p.dtype), np.empty((n_cells, t.shape[1]), t.dtype)
                pred_de, truth_de = np.empty((n_cells, de.shape[1]), p.dtype), np.empty((n_cells, de.shape[1]), t.dtype)
            end = row + p.shape[0]
            pred[row:end], truth[row:end] = p, t
            pred_de[row:end] = np.take_along_axis(p, de, axis=1)
            truth_de[row:end] = np.take_along_axis(t, de, axis=1)
            row = end
    return {"pert_cat": np.array(pert_cat), "pred": pred[:row], "truth": truth[:row], "pred_de": pred_de[:row], "truth_de": truth_de[:row]}


def lean_evaluation() -> None:
    """Make GEARS' ``train`` evaluate with :func:`evaluate_into_arrays`."""
    import gears.gears

    gears.gears.evaluate = evaluate_into_arrays


def reuse_training_evaluation(model) -> None:
    """When GEARS' validation set is its training set, evaluate the training cells once per epoch.

    GEARS' ``train`` evaluates the training loader and then the validation loader after
    every epoch. With identical perturbations the second pass repeats the first (up to the
    last incomplete batch, which the training loader drops), so its result is reused.
    """
    import gears.gears

    original = gears.gears.evaluate
    train_loader, val_loader = model.dataloader["train_loader"], model.dataloader["val_loader"]
    cache = {}

    def evaluate(loader, net, uncertainty, device):
        if loader is val_loader and "train" in cache:
            return cache.pop("train")
        result = original(loader, net, uncertainty, device)
        if loader is train_loader:
            cache["train"] = result
        return result

    gears.gears.evaluate = evaluate


def numerics() -> dict:
    """Which numerical kernels ran: torch's CPU capability and the pinning variables set."""
    import torch

    keys = (
        "ATEN_CPU_CAPABILITY",
        "MKL_CBWR",
        "MKL_ENABLE_INSTRUCTIONS",
        "DNNL_MAX_CPU_ISA",
        "OPENBLAS_CORETYPE",
        "NPY_DISABLE_CPU_FEATURES",
        "NUMBA_CPU_NAME",
        "OMP_NUM_THREADS",
    )
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), **{k: os.environ.get(k) for k in keys}}


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit(workdir: Path, cfg: dict) -> dict:
    import anndata as ad
    from gears import GEARS, PertData

    timings = {}
    t0 = time.perf_counter()
    emit("stage", stage="preparing data")
    adata = ad.read_h5ad(workdir / "train.h5ad")
    pert_data = PertData(str(workdir / "gears_data"), gene_set_path=str(workdir / "graph_genes.pkl"), default_pert_graph=False)
    pert_data.new_data_process(dataset_name=DATASET, adata=adata)
    pert_data.prepare_split(split="custom", seed=cfg["seed"], split_dict_path=str(workdir / "split.pkl"))
    pert_data.get_dataloader(batch_size=cfg["batch_size"], test_batch_size=cfg["batch_size"])
    timings["prepare_seconds"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    emit("stage", stage="building the model")
    model = GEARS(pert_data, device="cpu")
    model.model_initialize(hidden_size=cfg["hidden_size"], **cfg["model_kwargs"])
    # The suite evaluates the predictions itself; GEARS' own test pass is skipped.
    model.dataloader.pop("test_loader", None)
    lean_evaluation()
    if cfg["val_is_train"]:
        reuse_training_evaluation(model)
    history: list = []
    hook_gears_log(history, cfg["epochs"])
    emit("stage", stage="training")
    model.train(epochs=cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    model.save_model(str(workdir / "model"))
    timings["train_seconds"] = time.perf_counter() - t1
    return {
        "history": history,
        "timings": timings,
        "pert_list": list(model.pert_list),
        "gene_list": list(model.gene_list),
    }


def predict(workdir: Path, cfg: dict) -> dict:
    import numpy as np
    from gears import GEARS, PertData

    request = json.loads((workdir / "predict_request.json").read_text())
    t0 = time.perf_counter()
    emit("stage", stage="loading the model")
    pert_data = PertData(str(workdir / "gears_data"), gene_set_path=str(workdir / "graph_genes.pkl"), default_pert_graph=False)
    pert_data.load(data_path=str(workdir / "gears_data" / DATASET))
    pert_data.prepare_split(split="custom", seed=cfg["seed"], split_dict_path=str(workdir / "split.pkl"))
    pert_data.get_dataloader(batch_size=cfg["batch_size"], test_batch_size=cfg["batch_size"])
    model = GEARS(pert_data, device="cpu")
    model.load_pretrained(str(workdir / "model"))
    emit("stage", stage="predicting")
    rows = []
    for i, genes in enumerate(request["perturbations"]):
        name = "+".join(genes)
        np.random.seed(pert_seed(cfg["seed"], name))  # which control cells GEARS samples
        out = model.predict([genes])
        rows.append(np.asarray(out["_".join(genes)], dtype=np.float64))
        emit("predicted", done=i + 1, total=len(request["perturbations"]))
    np.save(workdir / "predictions.npy", np.vstack(rows) if rows else np.zeros((0, len(model.gene_list))))
    return {"gene_list": list(model.gene_list), "timings": {"predict_seconds": time.perf_counter() - t0}}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("fit", "predict"):
        print("usage: _gears_worker.py fit|predict WORKDIR", file=sys.stderr)
        return 2
    mode, workdir = argv[1], Path(argv[2]).resolve()
    # This file sits beside helpers/models/gears.py: never let `import gears` find that one.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    os.chdir(workdir)  # GEARS' make_GO reads and writes ./data relative to the current folder
    block_network()
    cfg = json.loads((workdir / "config.json").read_text())
    try:
        import warnings

        warnings.filterwarnings("ignore")  # GEARS and PyG deprecation noise; errors still raise
        stub_dcor()
        import gears  # noqa: F401

        forbid_downloads()
        configure_threads(cfg.get("n_threads"))
        seed_everything(cfg["seed"])
        result = fit(workdir, cfg) if mode == "fit" else predict(workdir, cfg)
        result["peak_memory_mb"] = peak_memory_mb()
        result["numerics"] = numerics()
        (workdir / f"{mode}_result.json").write_text(json.dumps(result))
        emit("done", mode=mode)
        return 0
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
