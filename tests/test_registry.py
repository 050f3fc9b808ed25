"""Downloads, tested against files served from 127.0.0.1 (never the internet)."""

import dataclasses
import hashlib
import http.server
import json
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from helpers.data import download, fetch, list_datasets, load_dataset, registry
from helpers.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on a free loopback port; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; the registry's plausibility floors lowered to the size of the test files."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(download.CACHE_ENV, str(folder))
    for name, spec in registry.DOWNLOADS.items():
        monkeypatch.setitem(registry.DOWNLOADS, name, dataclasses.replace(spec, min_bytes=100, min_cells=4, min_genes=4))
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_h5ad_download_records_and_verifies_the_hash(server, cache, write_format, monkeypatch):
    base, www = server
    spec = registry.DOWNLOADS["norman2019_scperturb"]
    shutil.copy(write_format("scperturb"), www / spec.filename)
    monkeypatch.setenv(download.MIRROR_ENV, base)

    adata = load_dataset("norman2019_scperturb")
    assert {"control", "A", "B", "A+B"} <= set(adata.obs["perturbation"])
    records = json.loads((cache / "hashes.json").read_text())
    assert records[spec.filename]["sha256"] == _sha(www / spec.filename)
    assert records[spec.filename]["url"] == f"{base}/{spec.filename}"
    assert "cached" in list_datasets().set_index("name").loc["norman2019_scperturb", "available"]

    # second use: no download (server content changed, cached file still verified and used)
    (www / spec.filename).write_bytes(b"changed on the server")
    assert fetch("norman2019_scperturb") == cache / spec.filename

    # the cached file is corrupted afterwards: detected against the recorded hash
    with open(cache / spec.filename, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(DataError, match="does not match the SHA-256 recorded"):
        fetch("norman2019_scperturb")


@pytest.mark.parametrize("archive", ["zip", "tar"])
def test_archives_are_unpacked(server, cache, write_format, monkeypatch, archive):
    base, www = server
    spec = registry.DOWNLOADS["adamson2016"]
    member = write_format("gears")
    target = www / spec.filename
    if archive == "zip":
        with zipfile.ZipFile(target, "w") as zf:
            zf.write(member, spec.member)
    else:
        with tarfile.open(target, "w:gz") as tf:
            tf.add(member, arcname=spec.member)
    monkeypatch.setenv(download.MIRROR_ENV, base)
    path = fetch("adamson2016", progress=False)
    assert path == cache / "adamson2016" / spec.member
    adata = load_dataset("adamson2016")
    assert "A+B" in set(adata.obs["perturbation"])


def test_checksum_mismatch_leaves_nothing_in_the_cache(server, cache, monkeypatch):
    base, www = server
    spec = registry.DOWNLOADS["essential_pseudobulk"]
    (www / spec.filename).write_bytes(b"truncated download")
    monkeypatch.setitem(registry.DOWNLOADS, "essential_pseudobulk", dataclasses.replace(spec, sha256="0" * 64))
    monkeypatch.setenv(download.MIRROR_ENV, base)
    with pytest.raises(DataError, match="does not match its expected SHA-256"):
        fetch("essential_pseudobulk", progress=False)
    assert not (cache / spec.filename).exists()
    assert [p.name for p in cache.iterdir()] == []


def test_unreachable_server_gives_clear_error_and_leaves_nothing(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(DataError, match="could not download norman2019 .*copy it to"):
        fetch("norman2019", progress=False)
    assert not any(cache.iterdir()) if cache.exists() else True


def test_missing_file_on_server_is_an_error(server, cache, monkeypatch):
    base, _ = server
    monkeypatch.setenv(download.MIRROR_ENV, base)
    with pytest.raises(DataError, match="could not download"):
        fetch("norman2019", progress=False)
    assert not (cache / "norman.zip").exists()


def test_unknown_names_and_the_embedded_subset():
    with pytest.raises(DataError, match="unknown dataset 'no_such'"):
        load_dataset("no_such")
    with pytest.raises(DataError, match="not a downloadable dataset .it is shipped"):
        fetch("norman2019_subset")
    adata = load_dataset("norman2019_subset")
    assert adata.shape == (3375, 500)
    assert adata.obs["perturbation"].nunique() == 34
    assert set(adata.obs["batch"]) == {str(i) for i in range(1, 9)}


def test_the_mcfaline_subset_has_three_cell_lines_with_every_perturbation():
    adata = load_dataset("mcfaline2023_subset")
    assert adata.shape == (2586, 500)
    counts = adata.obs.groupby(["context", "perturbation"], observed=True).size().unstack()
    assert sorted(counts.index) == ["A172", "T98G", "U87MG"]
    assert counts.shape[1] == 10 and counts.notna().all().all()  # control + 9 knock-downs in every line
    assert (counts["control"] == 100).all() and counts.drop(columns="control").min().min() >= 46
