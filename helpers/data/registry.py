"""Every dataset the suite knows, and how to get it.

Three kinds:

* ``embedded`` — shipped in ``data/`` (the real Norman 2019 subset);
* ``simulated`` — generated on demand by :mod:`helpers.data.simulate` with known truth;
* ``download`` — the published datasets, fetched with :mod:`pooch` into a cache folder.

Downloads: the cache folder is ``$PERTURB_DATA_CACHE`` (default: the user cache folder,
e.g. ``~/.cache/perturbation-benchmarks``). Checksums of the published files are not
known in advance, so the SHA-256 of the first successful download is recorded in
``hashes.json`` in the cache and every later use verifies it. A download that fails
(unreachable server, checksum mismatch) leaves nothing in the cache. Set
``$PERTURB_DATA_MIRROR`` to a base URL to fetch every file from a mirror instead
(``<mirror>/<file name>``), e.g. an institute's copy.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .canonical import DataError
from .readers import read_h5ad, read_perturbench

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
CACHE_ENV = "PERTURB_DATA_CACHE"
MIRROR_ENV = "PERTURB_DATA_MIRROR"


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the registry."""

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
    reader_kwargs: dict = field(default_factory=dict)


def _load_norman_subset(**kwargs):
    """The embedded real cells, with the 10x GEM group (barcode suffix ``-N``) as ``batch``."""
    if kwargs:
        raise DataError(f"norman2019_subset takes no options, got {sorted(kwargs)}")
    adata = read_perturbench(DATA_DIR / "norman2019_subset.h5ad")
    suffix = adata.obs_names.str.rsplit("-", n=1).str[-1]
    adata.obs["batch"] = pd.Categorical(suffix)
    return adata


EMBEDDED = {
    "norman2019_subset": DatasetSpec(
        "norman2019_subset",
        "embedded",
        "Norman 2019 K562 CRISPRa, real subset: 3,375 cells x 500 genes, 18 singles + 15 doubles (5 with both singles)",
        source="Norman et al. 2019 (Science 365:786, GEO GSE133344), cut by PerturBench (devel.h5ad)",
        licence="public GEO data; PerturBench repository BSD-3-Clause",
        filename="norman2019_subset.h5ad",
    ),
}

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
        ),
    ]
}


def _presets() -> dict:
    from .simulate import PRESETS

    return PRESETS


def cache_dir() -> Path:
    """Folder where downloads are kept (``$PERTURB_DATA_CACHE`` or the user cache)."""
    import pooch

    return Path(os.environ.get(CACHE_ENV) or pooch.os_cache("perturbation-benchmarks"))


def _hash_file(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _hash_record_path() -> Path:
    return cache_dir() / "hashes.json"


def _recorded_hashes() -> dict:
    path = _hash_record_path()
    return json.loads(path.read_text()) if path.exists() else {}


def _record_hash(spec: DatasetSpec, digest: str, url: str) -> None:
    records = _recorded_hashes()
    records[spec.filename] = {"sha256": digest, "url": url, "dataset": spec.name, "recorded": _dt.date.today().isoformat()}
    path = _hash_record_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True))
    tmp.replace(path)


def _url(spec: DatasetSpec) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def is_cached(name: str) -> bool:
    """Whether a downloadable dataset's file is in the cache."""
    spec = DOWNLOADS[name]
    return (cache_dir() / spec.filename).exists()


def _extract(archive: Path, member: str, target: Path) -> Path:
    """Extract ``member`` of a zip or tar archive to ``target`` atomically."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                if member not in zf.namelist():
                    raise DataError(f"{archive.name} has no member {member!r}; it holds {zf.namelist()[:10]}")
                zf.extract(member, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                if member not in tf.getnames():
                    raise DataError(f"{archive.name} has no member {member!r}; it holds {tf.getnames()[:10]}")
                tf.extract(member, tmp, filter="data")
        else:
            raise DataError(f"{archive} is neither a zip nor a tar archive; delete it and download again.")
        shutil.move(str(Path(tmp) / member), target)
    return target


def fetch(name: str, progress: bool = True) -> Path:
    """Download a dataset into the cache if needed, verify it, and return the path of its h5ad.

    The first successful download records the file's SHA-256 in ``hashes.json``; later
    calls verify the cached file against it (and a re-download against it too).

    Raises
    ------
    DataError
        If the server is unreachable, the checksum does not match, or the cached file
        changed since it was recorded. Nothing partial is left in the cache.
    """
    import pooch
    import requests

    if name not in DOWNLOADS:
        raise DataError(f"{name!r} is not a downloadable dataset; choose one of {sorted(DOWNLOADS)}")
    spec = DOWNLOADS[name]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.filename
    recorded = _recorded_hashes().get(spec.filename, {}).get("sha256")
    expected = spec.sha256 or recorded
    url = _url(spec)
    if path.exists():
        digest = _hash_file(path)
        if expected and digest != expected:
            raise DataError(
                f"the cached file {path} does not match the SHA-256 recorded at its first download "
                f"({expected[:12]}…, now {digest[:12]}…): it was modified or corrupted. Delete it and run "
                f"`python -m helpers download {name}` again."
            )
    else:
        pooch.get_logger().setLevel("WARNING")  # we record the hash ourselves; pooch's advice to pin it is noise
        try:
            pooch.retrieve(
                url,
                known_hash=f"sha256:{expected}" if expected else None,
                fname=spec.filename,
                path=folder,
                progressbar=progress,
                downloader=pooch.HTTPDownloader(progressbar=progress, timeout=60),
            )
        except requests.exceptions.RequestException as err:
            raise DataError(
                f"could not download {name} from {url} ({type(err).__name__}: {err}). This machine may have no "
                f"internet access: download the file elsewhere and copy it to {path}, or set {MIRROR_ENV} to a "
                "mirror that serves it."
            ) from err
        except ValueError as err:  # pooch's checksum mismatch
            raise DataError(
                f"the download of {name} from {url} does not match its expected SHA-256 ({expected}); it was "
                f"discarded and nothing was kept in {folder}. The server may serve a changed or truncated file. "
                f"Details: {err}"
            ) from err
        digest = _hash_file(path)
        if not expected:
            _record_hash(spec, digest, url)
    if spec.member:
        return _extract(path, spec.member, folder / spec.name / spec.member)
    return path


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


def load_dataset(name_or_path: str | os.PathLike, **kwargs):
    """Load a dataset by registry name or from an h5ad path, in canonical form.

    Parameters
    ----------
    name_or_path
        A name from :func:`list_datasets` (``norman2019_subset``, a simulated preset such
        as ``norman_like``, or a downloadable dataset such as ``adamson2016``), or a path to
        an ``.h5ad`` file in any supported format (see :mod:`helpers.data.readers`).
    **kwargs
        For simulated presets: ``scale``, ``seed`` and parameter overrides. For files and
        downloads: reader options such as ``format=`` or ``batch_key=``.
    """
    key = str(name_or_path)
    if key in EMBEDDED:
        return _load_norman_subset(**kwargs)
    presets = _presets()
    if key in presets:
        return presets[key].generate(**kwargs)
    if key in DOWNLOADS:
        spec = DOWNLOADS[key]
        path = fetch(key)
        return read_h5ad(path, format=spec.format, **{**spec.reader_kwargs, **kwargs})
    path = Path(key).expanduser()
    if path.suffix == ".h5ad" or path.exists():
        return read_h5ad(path, **kwargs)
    names = [spec for spec in list(EMBEDDED) + list(presets) + list(DOWNLOADS)]
    raise DataError(f"unknown dataset {key!r}: not a registry name ({', '.join(names)}) and not an existing .h5ad file.")
