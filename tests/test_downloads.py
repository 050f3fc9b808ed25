"""Faulty downloads against a loopback server (127.0.0.1 only, every wait bounded by a short timeout).

The server serves wrong bytes, a body shorter than its declared Content-Length, a stall and a
disconnect; after each, the cache must hold no unverified file and no record, and the
documented recovery (`python -m helpers download NAME --force`) must work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from helpers.book.cli import main
from helpers.data import download, fetch, load_dataset, registry
from helpers.errors import DataError

PLAIN = "norman2019_scperturb"  # a plain .h5ad download (scPerturb layout)
ARCHIVE = "adamson2016"  # a zip holding adamson/perturb_processed.h5ad (GEARS layout)


class FaultServer:
    """Serves ``files[name]`` with the fault ``faults[name]``: None, "truncated", "stall", "disconnect"."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, str | None] = {}
        self.requests = 0
        self.release = threading.Event()  # ends a stall when the test is over
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests += 1
                name = self.path.lstrip("/")
                fault = server.faults.get(name)
                if fault == "disconnect":  # close the connection without an answer
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "truncated":  # declared complete, half sent, connection closed
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif fault == "stall":  # a quarter sent, then silence
                    self.wfile.write(body[: len(body) // 4])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.close_connection = True
                else:
                    self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, a 1-second timeout, and registry floors lowered to the size of the test files."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(download.CACHE_ENV, str(folder))
    monkeypatch.setenv(download.TIMEOUT_ENV, "1")
    for name, spec in registry.DOWNLOADS.items():
        monkeypatch.setitem(registry.DOWNLOADS, name, dataclasses.replace(spec, min_bytes=1000, min_cells=4, min_genes=4))
    return folder


@pytest.fixture
def server(monkeypatch):
    with FaultServer() as srv:
        monkeypatch.setenv(download.MIRROR_ENV, srv.base)
        yield srv


@pytest.fixture
def files(write_format):
    """The good bytes of the plain download and of the archive, and a second, different valid h5ad."""
    import anndata as ad

    plain_path = write_format("scperturb")
    plain = plain_path.read_bytes()
    changed = ad.read_h5ad(plain_path)
    changed.X = changed.X * 2  # the same layout, other values: a valid file that is not the recorded one
    changed.write_h5ad(plain_path.with_name("changed.h5ad"))
    other = write_format("replogle", "other.h5ad")  # a valid h5ad of another layout
    gears = write_format("gears")
    member = registry.DOWNLOADS[ARCHIVE].member
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(gears, member)
    return {
        "plain": plain,
        "changed": plain_path.with_name("changed.h5ad").read_bytes(),
        "archive": buf.getvalue(),
        "gears": gears.read_bytes(),
        "other": other.read_bytes(),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _left(cache: Path) -> list[str]:
    """Every file left in the cache (relative paths), the record included (its lock file, which holds nothing, left out)."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.name != "hashes.json.lock")


def _records(cache: Path) -> dict:
    path = cache / "hashes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _serve(server, name, data, fault=None):
    spec = registry.DOWNLOADS[name]
    server.files[spec.filename] = data
    server.faults[spec.filename] = fault
    return spec


# --------------------------------------------------------------------------- faults of a first download


@pytest.mark.parametrize(
    "fault, message",
    [
        ("wrong bytes", "does not open as an AnnData .h5ad file"),
        ("truncated", "could not download .*(IncompleteRead|cut short|Connection broken)"),
        ("half served as complete", "does not open as an AnnData .h5ad file"),
        ("stall", "could not download .*(timed out|Read timed out).*The server sent nothing for 1 s"),
        ("disconnect", "could not download .*(RemoteDisconnected|Connection aborted|closed connection)"),
        ("too small", "has 200 bytes, fewer than the 1,000"),
    ],
)
def test_a_faulty_first_download_leaves_nothing_and_the_fixed_server_is_then_trusted(server, cache, files, fault, message):
    good = files["plain"]
    data = {
        "wrong bytes": os.urandom(len(good)),
        "half served as complete": good[: len(good) // 2],
        "too small": b"<html>not found</html>".ljust(200),
    }.get(fault, good)
    _serve(server, PLAIN, data, fault if fault in ("truncated", "stall", "disconnect") else None)
    start = time.perf_counter()
    with pytest.raises(DataError, match=message):
        fetch(PLAIN, progress=False)
    assert time.perf_counter() - start < 8  # bounded: a stall ends after the 1 s timeout
    assert _left(cache) == []  # no file, no partial file, no record

    _serve(server, PLAIN, good)  # the server is fixed: the next download is checked and recorded
    path = fetch(PLAIN, progress=False)
    assert path.read_bytes() == good
    assert _records(cache)[path.name]["sha256"] == _sha(good)
    assert _records(cache)[path.name]["bytes"] == len(good)


def test_the_wrong_layout_is_refused(server, cache, files):
    # a valid h5ad, but the replogle layout where the registry says scperturb
    _serve(server, PLAIN, files["other"])
    with pytest.raises(DataError, match="lacks the obs column.*'perturbation'.*scperturb layout"):
        fetch(PLAIN, progress=False)
    assert _left(cache) == []


def test_too_few_cells_are_refused(server, cache, files, monkeypatch):
    spec = registry.DOWNLOADS[PLAIN]
    monkeypatch.setitem(registry.DOWNLOADS, PLAIN, dataclasses.replace(spec, min_cells=1000))
    _serve(server, PLAIN, files["plain"])
    with pytest.raises(DataError, match=r"holds 24 rows x 12 genes, fewer than the 1,000 x 4 expected"):
        fetch(PLAIN, progress=False)
    assert _left(cache) == []


def test_a_stale_partial_file_of_a_killed_process_is_cleaned(server, cache, files):
    cache.mkdir()
    stale = cache / ".NormanWeissman2019_filtered.h5ad.abc.part"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    _serve(server, PLAIN, files["plain"])
    fetch(PLAIN, progress=False)
    assert not stale.exists()


# --------------------------------------------------------------------------- recorded files


def test_a_changed_server_file_is_refused_and_force_records_the_new_one(server, cache, files, capsys):
    spec = _serve(server, PLAIN, files["plain"])
    fetch(PLAIN, progress=False)
    (cache / spec.filename).unlink()  # the user deletes the cached file ...
    _serve(server, PLAIN, files["plain"] + b"")  # same bytes: accepted again against the record
    fetch(PLAIN, progress=False)

    (cache / spec.filename).unlink()
    _serve(server, PLAIN, files["changed"])  # another valid file under the same name
    with pytest.raises(
        DataError, match=f"does not match the SHA-256 recorded at its first download.*python -m helpers download {PLAIN} --force"
    ):
        fetch(PLAIN, progress=False)
    assert _left(cache) == ["hashes.json"]  # the refused file is not kept; the record is

    # the documented recovery: forget the record, download, check and record the new file
    assert main(["download", PLAIN, "--force"]) == 0
    assert _records(cache)[spec.filename]["sha256"] == _sha(files["changed"])
    assert str(cache / spec.filename) in capsys.readouterr().out


def test_a_corrupted_cached_file_names_the_force_command(server, cache, files):
    spec = _serve(server, PLAIN, files["plain"])
    fetch(PLAIN, progress=False)
    with open(cache / spec.filename, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(DataError, match=f"does not match the SHA-256 recorded.*`python -m helpers download {PLAIN} --force`"):
        fetch(PLAIN, progress=False)
    assert main(["download", PLAIN, "--force"]) == 0
    assert (cache / spec.filename).read_bytes() == files["plain"]


def test_the_unpacked_member_is_recorded_and_verified_on_every_use(server, cache, files):
    spec = _serve(server, ARCHIVE, files["archive"])
    member = fetch(ARCHIVE, progress=False)
    assert member == cache / ARCHIVE / spec.member
    assert _records(cache)[spec.filename]["members"] == {spec.member: _sha(files["gears"])}

    # deleted: unpacked again from the verified archive
    member.unlink()
    assert fetch(ARCHIVE, progress=False).read_bytes() == files["gears"]

    # replaced by another valid h5ad: refused, naming the command; the command recovers
    member.write_bytes(files["other"])
    with pytest.raises(DataError, match=f"unpacked file .* does not match the SHA-256 recorded.*download {ARCHIVE} --force"):
        load_dataset(ARCHIVE)
    assert main(["download", ARCHIVE, "--force"]) == 0
    assert member.read_bytes() == files["gears"]
    assert "A+B" in set(load_dataset(ARCHIVE).obs["perturbation"])


def test_a_file_copied_into_the_cache_by_hand_is_checked_then_recorded(cache, files, monkeypatch):
    spec = registry.DOWNLOADS[PLAIN]
    monkeypatch.setenv(download.MIRROR_ENV, "http://127.0.0.1:9")  # never contacted
    cache.mkdir()
    (cache / spec.filename).write_bytes(files["plain"])
    fetch(PLAIN, progress=False)
    assert _records(cache)[spec.filename]["sha256"] == _sha(files["plain"])

    registry.forget(PLAIN)
    (cache / spec.filename).write_bytes(b"garbage" * 500)  # a bad copy: deleted, with the reason
    with pytest.raises(DataError, match="found in the cache without a record.*does not open.*It was deleted"):
        fetch(PLAIN, progress=False)
    assert _left(cache) == ["hashes.json"] and _records(cache) == {}


# --------------------------------------------------------------------------- archives


def _tar_with(member: str, data: bytes, extra: tarfile.TarInfo | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        if extra is not None:
            tf.addfile(extra)
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_with(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777) << 16  # a symbolic link
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(
    "case, message",
    [
        ("tar symlink", "holds 1 link"),
        ("tar hardlink", "holds 1 link"),
        ("tar member is a link", "holds 1 link"),
        ("tar path outside", "path leads outside"),
        ("tar absolute path", "path leads outside"),
        ("zip path outside", "path leads outside"),
        ("zip symlink", "holds 1 link"),
        ("member missing", "has no member 'adamson/perturb_processed.h5ad'"),
        ("not an archive", "neither a zip nor a readable tar archive"),
    ],
)
def test_unsafe_or_wrong_archives_are_refused(server, cache, files, case, message, tmp_path):
    member = registry.DOWNLOADS[ARCHIVE].member
    good = files["gears"]
    data = {
        "tar symlink": lambda: _tar_with(member, good, _link("adamson/evil", "/etc/passwd")),
        "tar hardlink": lambda: _tar_with(member, good, _link("adamson/evil", "../../outside", tarfile.LNKTYPE)),
        "tar member is a link": lambda: _tar_with("adamson/other", good, _link(member, "/etc/passwd")),
        "tar path outside": lambda: _tar_with(member, good, _link("../../evil", "x", tarfile.DIRTYPE)),
        "tar absolute path": lambda: _tar_with(member, good, tarfile.TarInfo("/tmp/evil")),
        "zip path outside": lambda: _zip_with({member: good, "../evil.txt": b"x"}),
        "zip symlink": lambda: _zip_with({member: good}, symlink="adamson/link"),
        "member missing": lambda: _zip_with({"adamson/other.h5ad": good}),
        "not an archive": lambda: os.urandom(5000),
    }[case]()
    _serve(server, ARCHIVE, data)
    with pytest.raises(DataError, match=message):
        fetch(ARCHIVE, progress=False)
    assert _left(cache) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.txt").exists()


def test_an_archive_whose_member_is_not_the_dataset_is_refused(server, cache, files):
    member = registry.DOWNLOADS[ARCHIVE].member
    _serve(server, ARCHIVE, _zip_with({member: files["plain"]}))  # scperturb layout where gears is registered
    with pytest.raises(DataError, match="its member adamson/perturb_processed.h5ad.*lacks the obs column.*'condition'"):
        fetch(ARCHIVE, progress=False)
    assert _left(cache) == []


# --------------------------------------------------------------------------- the hash record


@pytest.mark.parametrize(
    "content, why",
    [("{not json", "not valid JSON"), ("[1, 2]", "not a mapping"), (b"\xff\xfe\x00", "UnicodeDecodeError")],
)
def test_an_unreadable_record_is_reported_and_never_overwritten(server, cache, files, content, why):
    _serve(server, PLAIN, files["plain"])
    cache.mkdir()
    record = cache / "hashes.json"
    record.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = record.read_bytes()
    with pytest.raises(DataError, match=f"hash record .*hashes.json cannot be used .*{why}.*move it aside"):
        fetch(PLAIN, progress=False)
    assert record.read_bytes() == before  # the other datasets' records are not lost
    assert server.requests == 0  # refused before any download
    assert main(["download", PLAIN, "--forget"]) == 1  # the commands say the same, in one line


def test_a_damaged_entry_names_the_force_command(server, cache, files):
    spec = _serve(server, PLAIN, files["plain"])
    fetch(PLAIN, progress=False)
    records = _records(cache)
    records[spec.filename]["sha256"] = "not a hash"
    records["other.zip"] = {"sha256": "a" * 64}
    (cache / "hashes.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=f"record of {spec.filename} .* is damaged.*download {PLAIN} --force"):
        fetch(PLAIN, progress=False)
    assert main(["download", PLAIN, "--force"]) == 0
    after = _records(cache)
    assert after[spec.filename]["sha256"] == _sha(files["plain"]) and after["other.zip"] == {"sha256": "a" * 64}


def test_the_record_is_written_atomically(server, cache, files, monkeypatch):
    _serve(server, PLAIN, files["plain"])
    cache.mkdir()
    (cache / "hashes.json").write_text(json.dumps({"other.zip": {"sha256": "b" * 64}}))

    real_replace = os.replace

    def fail(src, dst):  # the rename over hashes.json fails (e.g. the disk is full)
        if Path(dst).name == "hashes.json":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(download.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        fetch(PLAIN, progress=False)
    assert json.loads((cache / "hashes.json").read_text()) == {"other.zip": {"sha256": "b" * 64}}
    assert not [p for p in cache.iterdir() if p.name.endswith((".tmp", ".part"))]  # no temporary file left
    monkeypatch.setattr(download.os, "replace", real_replace)  # the disk has room again: the checked file is recorded
    fetch(PLAIN, progress=False)
    assert sorted(_records(cache)) == sorted(["other.zip", registry.DOWNLOADS[PLAIN].filename])


def test_concurrent_updates_keep_every_record(cache):
    # two processes recording different datasets at once (make book runs notebooks in parallel)
    import multiprocessing

    names = ["norman2019", "adamson2016", "replogle2022_k562_essential", "replogle2022_rpe1_essential"]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(name,)) for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * len(names)
    assert sorted(_records(cache)) == sorted(registry.DOWNLOADS[n].filename for n in names)


def _record_many(name):
    spec = registry.DOWNLOADS[name]
    for i in range(20):
        download._update_record(spec, {"sha256": f"{i:064x}", "dataset": name})


def test_a_record_written_without_a_content_check_is_checked_once(server, cache, files):
    # records of earlier versions (no "bytes") trusted the first download as it was: checked at the next use
    spec = _serve(server, PLAIN, b"<html>an error page</html>".ljust(2000))
    cache.mkdir()
    (cache / spec.filename).write_bytes(server.files[spec.filename])
    legacy = {"sha256": _sha(server.files[spec.filename]), "url": "x", "dataset": PLAIN, "recorded": "2025-01-01"}
    (cache / "hashes.json").write_text(json.dumps({spec.filename: legacy, "other.zip": {"sha256": "c" * 64}}))
    with pytest.raises(DataError, match="recorded without a check.*does not open as an AnnData.*deleted \\(with its record\\)"):
        fetch(PLAIN, progress=False)
    assert _records(cache) == {"other.zip": {"sha256": "c" * 64}} and _left(cache) == ["hashes.json"]

    (cache / spec.filename).write_bytes(files["plain"])  # a good legacy entry gains its size and stays
    legacy["sha256"] = _sha(files["plain"])
    (cache / "hashes.json").write_text(json.dumps({spec.filename: legacy}))
    fetch(PLAIN, progress=False)
    assert _records(cache)[spec.filename]["bytes"] == len(files["plain"]) and _records(cache)[spec.filename]["url"] == "x"


def test_forget_and_the_command_line(server, cache, files, capsys):
    spec = _serve(server, ARCHIVE, files["archive"])
    assert main(["download", ARCHIVE]) == 0
    assert main(["download", ARCHIVE, "--forget"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert _left(cache) == ["hashes.json"] and spec.filename not in _records(cache)
    assert main(["download", ARCHIVE, "--forget"]) == 0
    assert "nothing cached" in capsys.readouterr().out
    assert main(["download", ARCHIVE, "--force", "--forget"]) == 1
    assert main(["download", "norman2019_subset"]) == 1
    err = capsys.readouterr().err
    assert "exclude each other" in err and "shipped with the suite" in err


def test_a_bad_timeout_setting_is_named(monkeypatch):
    monkeypatch.setenv(download.TIMEOUT_ENV, "soon")
    with pytest.raises(DataError, match="PERTURB_DATA_TIMEOUT='soon' is not a number of seconds"):
        download.timeout()
