"""Every dataset the suite knows, and how to get it.

Three kinds:

* ``embedded`` — shipped in ``data/`` (the real Norman 2019 and McFaline-Figueroa 2023 subsets);
* ``simulated`` — generated on demand by :mod:`helpers.data.simulate` with known truth;
* ``download`` — the published datasets, fetched with :mod:`pooch` into a cache folder.

How downloads are fetched, verified and cached: :mod:`helpers.data.download`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import DataError
from ..resources import data_dir
from . import download
from .download import cache_dir
from .readers import read_h5ad, read_perturbench

if TYPE_CHECKING:
    from anndata import AnnData

DATA_DIR = data_dir()


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the registry.

    A download's content is checked against ``format`` (the reader and the layout its file must
    have), ``member`` (the file of an archive to use), ``sha256`` and ``size`` (where the publisher
    gives them; none do today) and the plausibility floors ``min_bytes``, ``min_cells`` and
    ``min_genes``, set well below the published versions so that a new release passes while an error
    page, a cut file or another dataset does not (:mod:`helpers.data.download`).
    """

    name: str
    kind: str
    description: str
    source: str = ""
    licence: str = ""
    url: str | None = None
    filename: str | None = None
    member: str | None = None
    format: str = "auto"
    sha256: str | None = None
    size: int | None = None
    min_bytes: int = 0
    min_cells: int = 1
    min_genes: int = 1
    reader_kwargs: dict = field(default_factory=dict)


def _load_norman_subset(**kwargs) -> AnnData:
    """The embedded real cells, with the 10x GEM group (barcode suffix ``-N``) as ``batch``."""
    if kwargs:
        raise DataError(f"norman2019_subset takes no options, got {sorted(kwargs)}")
    adata = read_perturbench(DATA_DIR / "norman2019_subset.h5ad")
    suffix = adata.obs_names.str.rsplit("-", n=1).str[-1]
    adata.obs["batch"] = pd.Categorical(suffix)
    return adata


def _load_mcfaline_subset(**kwargs):
    """The embedded real cells of three glioblastoma lines, the cell line (``obs['cell_type']``) as ``context``."""
    if kwargs:
        raise DataError(f"mcfaline2023_subset takes no options, got {sorted(kwargs)}")
    return read_perturbench(DATA_DIR / "mcfaline2023_subset.h5ad", context_key="cell_type")


EMBEDDED = {
    "norman2019_subset": DatasetSpec(
        "norman2019_subset",
        "embedded",
        "Norman 2019 K562 CRISPRa, real subset: 3,375 cells x 500 genes, 18 singles + 15 doubles (5 with both singles)",
        source="Norman et al. 2019 (Science 365:786, GEO GSE133344), cut by PerturBench (devel.h5ad)",
        licence="public GEO data; PerturBench repository BSD-3-Clause",
        filename="norman2019_subset.h5ad",
    ),
    "mcfaline2023_subset": DatasetSpec(
        "mcfaline2023_subset",
        "embedded",
        "McFaline-Figueroa 2023 CRISPRi in 3 glioblastoma lines (A172, T98G, U87MG), real subset: 2,586 cells x 500 genes, "
        "9 kinase knock-downs in every line",
        source="McFaline-Figueroa et al. 2023 (gene-by-environment CRISPRi screen, sci-Plex), cut by PerturBench (devel.h5ad)",
        licence="public data; PerturBench repository BSD-3-Clause",
        filename="mcfaline2023_subset.h5ad",
    ),
}

#: How each embedded dataset is read.
_EMBEDDED_LOADERS = {"norman2019_subset": _load_norman_subset, "mcfaline2023_subset": _load_mcfaline_subset}

_DATAVERSE = "https://dataverse.harvard.edu/api/access/datafile/"

DOWNLOADS = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "norman2019",
            "download",
            "Norman 2019 K562 CRISPRa, GEARS version: ~91k cells x 5,045 genes, 105 singles + 131 doubles",
            source="Norman et al. 2019; GEARS preprocessing (Roohani et al. 2024), Harvard Dataverse datafile 6154020",
            licence="CC0 (Dataverse)",
            url=_DATAVERSE + "6154020",
            filename="norman.zip",
            member="norman/perturb_processed.h5ad",
            format="gears",
            min_bytes=10_000_000,
            min_cells=50_000,
            min_genes=4_000,
        ),
        DatasetSpec(
            "norman2019_scfoundation",
            "download",
            "Norman 2019, scFoundation version used by Ahlmann-Eltze et al.: 84,986 cells x 19,264 genes",
            source="Norman et al. 2019; scFoundation (Hao et al. 2024), figshare file 44477939",
            licence="CC BY 4.0 (figshare)",
            url="https://figshare.com/ndownloader/files/44477939",
            filename="gse133344_k562gi_oe_pert227_84986_19264_withtotalcount.h5ad",
            format="gears",
            min_bytes=10_000_000,
            min_cells=50_000,
            min_genes=15_000,
        ),
        DatasetSpec(
            "adamson2016",
            "download",
            "Adamson 2016 K562 CRISPRi (UPR), GEARS version: ~68k cells x 5,060 genes, 87 singles",
            source="Adamson et al. 2016 (Cell 167:1867); GEARS preprocessing, Harvard Dataverse datafile 6154417",
            licence="CC0 (Dataverse)",
            url=_DATAVERSE + "6154417",
            filename="adamson.zip",
            member="adamson/perturb_processed.h5ad",
            format="gears",
            min_bytes=10_000_000,
            min_cells=40_000,
            min_genes=4_000,
        ),
        DatasetSpec(
            "replogle2022_k562_essential",
            "download",
            "Replogle 2022 K562 essential CRISPRi, GEARS version: ~162k cells x 5,000 genes, 1,087 singles",
            source="Replogle et al. 2022 (Cell 185:2559); GEARS preprocessing, Harvard Dataverse datafile 7458695",
            licence="CC0 (Dataverse)",
            url=_DATAVERSE + "7458695",
            filename="replogle_k562_essential.zip",
            member="replogle_k562_essential/perturb_processed.h5ad",
            format="gears",
            min_bytes=10_000_000,
            min_cells=100_000,
            min_genes=4_000,
        ),
        DatasetSpec(
            "replogle2022_rpe1_essential",
            "download",
            "Replogle 2022 RPE1 essential CRISPRi, GEARS version: ~161k cells x 5,000 genes, 1,534 singles",
            source="Replogle et al. 2022; GEARS preprocessing, Harvard Dataverse datafile 7458694",
            licence="CC0 (Dataverse)",
            url=_DATAVERSE + "7458694",
            filename="replogle_rpe1_essential.zip",
            member="replogle_rpe1_essential/perturb_processed.h5ad",
            format="gears",
            min_bytes=10_000_000,
            min_cells=100_000,
            min_genes=4_000,
        ),
        DatasetSpec(
            "norman2019_scperturb",
            "download",
            "Norman 2019, scPerturb version: raw counts, 111k cells x 33,694 genes",
            source="Norman et al. 2019; scPerturb (Peidli et al. 2024), Zenodo record 7041849",
            licence="CC BY 4.0 (Zenodo)",
            url="https://zenodo.org/records/7041849/files/NormanWeissman2019_filtered.h5ad",
            filename="NormanWeissman2019_filtered.h5ad",
            format="scperturb",
            min_bytes=10_000_000,
            min_cells=80_000,
            min_genes=20_000,
        ),
        DatasetSpec(
            "essential_pseudobulk",
            "download",
            "Essential-gene CRISPRi screens in K562, HepG2, Jurkat, RPE1: pseudobulk changes, 6,640 genes, 5 folds",
            source="Cole et al. 2026 (GenBio AI), Hugging Face dataset genbio-ai/foundation-models-perturbation",
            licence="see the Hugging Face dataset card",
            url="https://huggingface.co/datasets/genbio-ai/foundation-models-perturbation/resolve/main/essential_pseudobulk_deltas_all_perts.h5ad",
            filename="essential_pseudobulk_deltas_all_perts.h5ad",
            format="essential_deltas",
            min_bytes=1_000_000,
            min_cells=1_000,
            min_genes=5_000,
        ),
    ]
}


def _download_spec(name: str) -> DatasetSpec:
    if name not in DOWNLOADS:
        detail = ""
        if name in EMBEDDED:
            detail = " (it is shipped with the suite: load it by name, nothing to download)"
        elif name in _presets():
            detail = " (it is a simulated preset, generated on use: nothing to download)"
        raise DataError(f"{name!r} is not a downloadable dataset{detail}; the downloadable ones are {', '.join(sorted(DOWNLOADS))}")
    return DOWNLOADS[name]


def fetch(name: str, progress: bool = True, force: bool = False) -> Path:
    """Download a published dataset into the cache if needed, verify it, return its h5ad (:func:`helpers.data.download.fetch`).

    ``force=True`` deletes the cached files and the recorded hashes first and downloads again
    (``python -m helpers download NAME --force``).
    """
    return download.fetch(_download_spec(name), progress=progress, force=force)


def forget(name: str) -> list[Path]:
    """Delete a downloaded dataset's cached files and recorded hashes (``python -m helpers download NAME --forget``)."""
    return download.forget(_download_spec(name))


def is_cached(name: str) -> bool:
    """Whether a downloadable dataset's file is in the cache."""
    return download.is_cached(DOWNLOADS[name])


def _presets() -> dict:
    from .simulate import PRESETS

    return PRESETS


def list_datasets() -> pd.DataFrame:
    """Every dataset the suite knows, with its kind, shape and (for downloads) cache state."""
    rows = []
    for spec in EMBEDDED.values():
        rows.append({"name": spec.name, "kind": "embedded", "description": spec.description, "available": "yes (shipped)"})
    for name, preset in _presets().items():
        rows.append({"name": name, "kind": "simulated", "description": preset.description, "available": "yes (generated)"})
    for spec in DOWNLOADS.values():
        state = f"cached in {cache_dir()}" if is_cached(spec.name) else "not downloaded"
        rows.append({"name": spec.name, "kind": "download", "description": spec.description, "available": state})
    return pd.DataFrame(rows)


def dataset_info(name: str) -> DatasetSpec | None:
    """Registry entry of a named embedded or downloadable dataset (None for simulations)."""
    return EMBEDDED.get(name) or DOWNLOADS.get(name)


def load_dataset(name_or_path: str | os.PathLike, backed: bool = False, **kwargs) -> AnnData:
    """Load a dataset by registry name or from an h5ad path, in canonical form.

    Parameters
    ----------
    name_or_path
        A name from :func:`list_datasets` (``norman2019_subset``, a simulated preset such
        as ``norman_like``, or a downloadable dataset such as ``adamson2016``), or a path to
        an ``.h5ad`` file in any supported format (see :mod:`helpers.data.readers`).
    backed
        For a path to a canonical ``.h5ad``: open it from disk (:func:`helpers.data.streaming.open_screen`)
        instead of reading the cell matrix; profiles are then computed by streaming blocks of cells.
    **kwargs
        For simulated presets: ``scale``, ``seed`` and parameter overrides. For files and
        downloads: reader options such as ``format=`` or ``batch_key=``.
    """
    key = str(name_or_path)
    if key in EMBEDDED:
        return _EMBEDDED_LOADERS[key](**kwargs)
    presets = _presets()
    if key in presets:
        return presets[key].generate(**kwargs)
    if key in DOWNLOADS:
        spec = DOWNLOADS[key]
        path = fetch(key)
        return read_h5ad(path, format=spec.format, **{**spec.reader_kwargs, **kwargs})
    path = Path(key).expanduser()
    if backed:
        from .streaming import open_screen

        if kwargs:
            raise DataError(f"backed=True opens a canonical file as it is; reader options {sorted(kwargs)} do not apply.")
        return open_screen(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an .h5ad file; give the path of a screen's .h5ad file or a registry name.")
    if path.suffix == ".h5ad" or path.exists():
        return read_h5ad(path, **kwargs)
    import difflib

    names = list(EMBEDDED) + list(presets) + list(DOWNLOADS)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(
        f"unknown dataset {key!r}{hint}: not a registry name ({', '.join(names)}; `python -m helpers datasets` lists them) "
        "and not an existing .h5ad file."
    )
