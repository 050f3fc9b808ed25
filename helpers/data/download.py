"""Downloads of the published datasets: a verified cache.

The cache folder is ``$PERTURB_DATA_CACHE`` (default: the user cache folder, e.g.
``~/.cache/perturbation-benchmarks``). Set ``$PERTURB_DATA_MIRROR`` to a base URL to fetch
every file from a mirror instead (``<mirror>/<file name>``), e.g. an institute's copy, and
``$PERTURB_DATA_TIMEOUT`` to the seconds a connection may stay silent before the download
is abandoned (default :data:`DEFAULT_TIMEOUT`).

What is trusted, and when
-------------------------
The publishers give no checksums, so nothing can be compared with a published hash; instead

1. a new download is written under a temporary name and kept only if it is complete (as many
   bytes as the server declared, at least the registry's plausible size) and its content is what
   the registry says: an archive that opens and holds the registered member as a regular file
   (no links, no path outside its folder), an ``.h5ad`` that opens as AnnData with the registered
   layout (the label column and control label of its format, a plausible number of cells and
   genes, readable to its last row). A file that fails is deleted and the error says why;
2. only then is its SHA-256 recorded in ``hashes.json`` in the cache, with the SHA-256 of the
   archive member it was unpacked to;
3. every later use verifies the file, and the unpacked member, against the record.

``python -m helpers download NAME --force`` deletes a dataset's files and its record and
downloads it again; ``--forget`` only deletes them (e.g. before copying a file in by hand: a
file found in the cache without a record is checked like a new download, then recorded). Every
message that blames the cache names these commands. ``hashes.json`` is written atomically (a
temporary file renamed over it); a record that cannot be read is reported, never overwritten,
so the other datasets' records are not lost.

The functions take a dataset's registry entry (:class:`helpers.data.registry.DatasetSpec`:
``name``, ``url``, ``filename``, optional ``member`` of an archive, ``format``, ``sha256`` and
the plausibility bounds ``min_bytes``, ``min_cells``, ``min_genes``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    from .registry import DatasetSpec

CACHE_ENV = "PERTURB_DATA_CACHE"
MIRROR_ENV = "PERTURB_DATA_MIRROR"
TIMEOUT_ENV = "PERTURB_DATA_TIMEOUT"

#: Seconds a connection may stay silent (connecting, or between two pieces of the body).
DEFAULT_TIMEOUT = 60.0

RECORD_FILE = "hashes.json"

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Folder where downloads are kept (``$PERTURB_DATA_CACHE`` or the user cache)."""
    import pooch

    return Path(os.environ.get(CACHE_ENV) or pooch.os_cache("perturbation-benchmarks"))


def timeout() -> float:
    """Seconds a connection may stay silent (``$PERTURB_DATA_TIMEOUT``, default :data:`DEFAULT_TIMEOUT`)."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise DataError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0; unset it or give e.g. {TIMEOUT_ENV}=60.")
    return value


def force_command(spec: DatasetSpec) -> str:
    """The command that deletes a dataset's cached files and record and downloads it again."""
    return f"python -m helpers download {spec.name} --force"


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- the hash record


def record_path() -> Path:
    """The hash record, ``hashes.json`` in the cache folder."""
    return cache_dir() / RECORD_FILE


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _unreadable(path: Path, why: str) -> DataError:
    return DataError(
        f"the hash record {path} cannot be used ({why}). It holds the checksums of every downloaded dataset, so it "
        "was left as it is and nothing was downloaded. Repair it, or move it aside (e.g. `mv hashes.json "
        "hashes.json.bad` in that folder): each cached dataset is then checked again like a new download at its next "
        "use and recorded anew; `python -m helpers download NAME --force` downloads one dataset afresh."
    )


def recorded_hashes() -> dict:
    """Every record of ``hashes.json`` (empty if there is none); :class:`DataError` if it cannot be read."""
    path = record_path()
    if not path.exists():
        return {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(path, f"{type(err).__name__}: {err}") from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise _unreadable(path, f"not valid JSON: {err}") from None
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise _unreadable(path, "not a mapping of file names to records")
    return records


def _record(spec: DatasetSpec) -> dict | None:
    """The record of one dataset's file, checked for shape."""
    entry = recorded_hashes().get(spec.filename)
    if entry is None:
        return None
    members = entry.get("members", {})
    if not _is_sha256(entry.get("sha256")) or not isinstance(members, dict) or not all(map(_is_sha256, members.values())):
        raise DataError(
            f"the record of {spec.filename} in {record_path()} is damaged (its SHA-256 is not 64 hexadecimal digits). "
            f"Run `{force_command(spec)}` to delete the file and its record and download it again."
        )
    return entry


def _write_records(records: dict) -> None:
    """Write ``hashes.json`` atomically: a temporary file in the same folder, flushed, renamed over it."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{RECORD_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(records, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _record_lock():
    """Hold an exclusive lock on ``hashes.json.lock`` (POSIX), so that two processes updating the record do not lose an entry."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the file whole
        yield
        return
    path = record_path().with_name(RECORD_FILE + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _update_record(spec: DatasetSpec, entry: dict | None) -> None:
    """Set (or, with ``None``, delete) one file's record; the others are read afresh (under a lock) and kept."""
    with _record_lock():
        records = recorded_hashes()  # refuses a damaged record instead of replacing it
        if entry is None:
            if records.pop(spec.filename, None) is None:
                return
        else:
            records[spec.filename] = entry
        _write_records(records)


def _url(spec: DatasetSpec) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def _member_path(spec: DatasetSpec) -> Path:
    return cache_dir() / spec.name / spec.member


def is_cached(spec: DatasetSpec) -> bool:
    """Whether a downloadable dataset's file is in the cache."""
    return (cache_dir() / spec.filename).exists()


def forget(spec: DatasetSpec) -> list[Path]:
    """Delete a dataset's cached file, its unpacked member and its record; returns what was deleted."""
    folder = cache_dir()
    removed = []
    for path in (folder / spec.filename, folder / spec.name):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path)
    if record_path().exists():
        had = spec.filename in recorded_hashes()
        _update_record(spec, None)
        if had:
            removed.append(record_path())
    return removed


# --------------------------------------------------------------------------- content checks


def _check_h5ad(spec: DatasetSpec, path: Path, what: str) -> None:
    """Refuse an h5ad that is not what the registry says: it must open, have the format's layout, be plausible."""
    import anndata as ad

    from .readers import FORMATS, REQUIRED_OBS, detect_format

    try:
        backed = ad.read_h5ad(path, backed="r")
    except Exception as err:  # h5py raises several types for truncated or foreign files
        raise DataError(f"{what} does not open as an AnnData .h5ad file ({type(err).__name__}: {err})") from None
    try:
        n_obs, n_vars = backed.shape
        if n_obs < spec.min_cells or n_vars < spec.min_genes:
            raise DataError(
                f"{what} holds {n_obs:,} rows x {n_vars:,} genes, fewer than the {spec.min_cells:,} x {spec.min_genes:,} "
                f"expected of {spec.name} ({spec.description})"
            )
        missing = [c for c in REQUIRED_OBS.get(spec.format, ()) if c not in backed.obs]
        if missing:
            raise DataError(
                f"{what} lacks the obs column(s) {missing} of the {spec.format} layout registered for {spec.name} "
                f"(it has {list(backed.obs.columns)[:12]})"
            )
        if spec.format in FORMATS and spec.format != "essential_deltas":
            try:
                found = detect_format(backed)
            except DataError as err:
                raise DataError(f"{what} does not have the {spec.format} layout registered for {spec.name}: {err}") from None
            if found != spec.format:
                raise DataError(f"{what} has the {found} layout, not the {spec.format} layout registered for {spec.name}")
        try:
            backed.X[n_obs - 1 : n_obs]  # the last row: a file cut short fails here
        except Exception as err:
            raise DataError(f"{what} cannot be read to its last row ({type(err).__name__}: {err})") from None
    finally:
        backed.file.close()


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not name.startswith(("/", "\\")) and ".." not in parts and ":" not in parts[0]


def _archive_members(archive: Path) -> tuple[str, list[tuple[str, str]]]:
    """The archive's kind and its entries as (name, type), type one of file, dir, link, other."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            entries = []
            for info in zf.infolist():
                mode = info.external_attr >> 16
                kind = "dir" if info.is_dir() else "link" if stat.S_ISLNK(mode) else "file"
                entries.append((info.filename.rstrip("/"), kind))
            return "zip", entries
    try:
        with tarfile.open(archive) as tf:
            entries = [
                (m.name, "file" if m.isfile() else "dir" if m.isdir() else "link" if (m.issym() or m.islnk()) else "other")
                for m in tf.getmembers()
            ]
            return "tar", entries
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"it is neither a zip nor a readable tar archive ({type(err).__name__}: {err})") from None


def _check_archive(spec: DatasetSpec, archive: Path) -> str:
    """Refuse an archive that does not hold the member as a regular file, or holds links or paths outside its folder."""
    kind, entries = _archive_members(archive)
    unsafe = [n for n, _ in entries if not _safe_name(n)]
    if unsafe:
        raise DataError(f"it holds entries whose path leads outside the folder it is unpacked to (e.g. {unsafe[0]!r}); it is not unpacked")
    links = [n for n, k in entries if k in ("link", "other")]
    if links:
        raise DataError(f"it holds {len(links)} link(s) or special file(s) (e.g. {links[0]!r}); the suite unpacks only regular files")
    names = {n: k for n, k in entries}
    if names.get(spec.member) != "file":
        raise DataError(f"it has no member {spec.member!r}; it holds {[n for n, k in entries if k == 'file'][:10]}")
    return kind


def _unpack(spec: DatasetSpec, archive: Path, kind: str, folder: Path) -> Path:
    """Unpack the registered member into ``folder``; returns its path there."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extract(spec.member, folder)
        else:
            with tarfile.open(archive) as tf:
                tf.extract(spec.member, folder, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{spec.member!r} could not be unpacked from it ({type(err).__name__}: {err})") from None
    return folder / spec.member


# --------------------------------------------------------------------------- the download


def _clean_stale_parts(folder: Path, spec: DatasetSpec) -> None:
    """Delete partial downloads of this file left by a process that was killed (silent for longer than a timeout)."""
    cutoff = time.time() - 2 * timeout()
    for part in folder.glob(f".{spec.filename}.*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError:
            pass


def _download(url: str, target: Path, name: str, progress: bool) -> None:
    """Stream ``url`` into ``target``; refuse a body shorter than the server declared."""
    import requests

    from ..console import progress_bar

    seconds = timeout()
    # identity encoding: the declared length is then the length of the file itself
    with requests.get(url, stream=True, timeout=(seconds, seconds), headers={"Accept-Encoding": "identity"}) as response:
        response.raise_for_status()
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared and declared.isdigit() else None
        received = 0
        with open(target, "wb") as fh, progress_bar(total=declared, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
            for chunk in response.iter_content(_CHUNK):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if declared is not None and received != declared:
        raise DataError(f"the server declared {declared:,} bytes but sent {received:,}: the download was cut short")


def _why(err: Exception) -> str:
    """The likely cause of a failed request, in words."""
    import requests

    if isinstance(err, requests.exceptions.Timeout) or "timed out" in str(err).lower():
        return f"The server sent nothing for {timeout():g} s (${TIMEOUT_ENV} sets how long to wait)"
    if isinstance(err, requests.exceptions.HTTPError) and err.response is not None:
        return f"The server answered {err.response.status_code} {err.response.reason}"
    if isinstance(err, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in str(err):
        return "The connection broke before the whole file arrived; try again later"
    return "This machine may have no internet access, or the server is down"


def _new_entry(spec: DatasetSpec, path: Path, digest: str, url: str, members: dict | None = None) -> dict:
    entry = {
        "sha256": digest,
        "bytes": path.stat().st_size,
        "url": url,
        "dataset": spec.name,
        "recorded": _dt.date.today().isoformat(),
    }
    if members:
        entry["members"] = members
    return entry


def _verify_new(spec: DatasetSpec, path: Path, what: str, staging: Path) -> tuple[str, dict]:
    """Check a file that has no record yet (a new download, or one copied in); returns its hash and its member hashes.

    With an archive, the member is unpacked into ``staging`` and checked too.
    """
    size = path.stat().st_size
    digest = _hash_file(path)
    if spec.sha256 and digest != spec.sha256:
        raise DataError(f"{what} does not match its expected SHA-256 ({spec.sha256}; got {digest})")
    if spec.size is not None and size != spec.size:
        raise DataError(f"{what} has {size:,} bytes, not the {spec.size:,} published for {spec.name}")
    if size < spec.min_bytes:
        raise DataError(
            f"{what} has {size:,} bytes, fewer than the {spec.min_bytes:,} any published version of {spec.name} has "
            "(an error page or a cut download?)"
        )
    if not spec.member:
        _check_h5ad(spec, path, what)
        return digest, {}
    try:
        kind = _check_archive(spec, path)
    except DataError as err:
        raise DataError(f"{what} is not the archive registered for {spec.name}: {err}") from None
    unpacked = _unpack(spec, path, kind, staging)
    _check_h5ad(spec, unpacked, f"{what} (its member {spec.member})")
    return digest, {spec.member: _hash_file(unpacked)}


def _install_member(spec: DatasetSpec, staging: Path) -> Path:
    target = _member_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / spec.member, target)
    return target


def fetch(spec: DatasetSpec, progress: bool = True, force: bool = False) -> Path:
    """Download a dataset into the cache if needed, verify it, and return the path of its h5ad.

    A new download is checked (complete, plausible, the registered format and layout; see the
    module's description) before its SHA-256 and its member's are recorded in ``hashes.json``;
    later calls verify the cached file and the unpacked member against the record.

    Parameters
    ----------
    spec
        The dataset's registry entry.
    progress
        Show a progress bar while downloading.
    force
        Delete the cached files and the record first (:func:`forget`) and download again.

    Raises
    ------
    DataError
        If the server is unreachable or stalls, the file is cut short or is not what the registry
        says, or a cached file changed since it was recorded. Nothing unverified is left in the
        cache: a failed download is deleted, and its record is not written.
    """
    import requests

    name = spec.name
    folder = cache_dir()
    if force:
        forget(spec)
    entry = _record(spec)  # also refuses a damaged hashes.json before any work
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.filename
    url = _url(spec)
    again = force_command(spec)
    if path.exists():
        digest = _hash_file(path)
        expected = entry["sha256"] if entry else spec.sha256
        if expected and digest != expected:
            when = f" at its first download ({entry['recorded']})" if entry else " for it"
            raise DataError(
                f"the cached file {path} does not match the SHA-256 recorded{when} ({expected[:12]}…, now {digest[:12]}…): "
                f"it was modified or corrupted. Run `{again}` to delete it and download it again."
            )
        # copied in by hand, or recorded by a version of the suite that did not check content ("bytes" is
        # written since it does): checked like a new download, once
        if entry is None or "bytes" not in entry:
            what = f"the file {path} (found in the cache {'without a record' if entry is None else 'recorded without a check'})"
            with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}.") as staging:
                try:
                    digest, members = _verify_new(spec, path, what, Path(staging))
                except DataError as err:
                    forget(spec)
                    raise DataError(
                        f"{err}. It was deleted (with its record); run `python -m helpers download {name}` to download it."
                    ) from None
                if spec.member:
                    _install_member(spec, Path(staging))
            source = entry["url"] if entry and "url" in entry else "(found in the cache)"
            _update_record(spec, _new_entry(spec, path, digest, source, members))
            entry = _record(spec)
    else:
        _clean_stale_parts(folder, spec)
        fd, part_name = tempfile.mkstemp(dir=folder, prefix=f".{spec.filename}.", suffix=".part")
        os.close(fd)
        part = Path(part_name)
        try:
            with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}.") as staging:
                try:
                    _download(url, part, name, progress)
                except requests.exceptions.RequestException as err:
                    raise DataError(
                        f"could not download {name} from {url} ({type(err).__name__}: {err}). {_why(err)}: download the "
                        f"file elsewhere and copy it to {path} (it is checked at its first use), or set {MIRROR_ENV} to a "
                        "mirror that serves it. Nothing was kept."
                    ) from None
                except DataError as err:
                    raise DataError(f"the download of {name} from {url} is incomplete: {err}. Nothing was kept; try again.") from None
                if entry is not None:  # recorded before: the same bytes are trusted, others refused
                    digest = _hash_file(part)
                    if digest != entry["sha256"]:
                        raise DataError(
                            f"the download of {name} from {url} does not match the SHA-256 recorded at its first download "
                            f"({entry['recorded']}: {entry['sha256'][:12]}…, now {digest[:12]}…). It was deleted. The server "
                            f"now serves another file; if you trust it, run `{again}` to forget the record (in "
                            f"{record_path()}) and check and record the new file."
                        )
                    os.replace(part, path)
                else:
                    try:
                        digest, members = _verify_new(spec, part, f"the download of {name} from {url}", Path(staging))
                    except DataError as err:
                        raise DataError(
                            f"{err}. It was deleted and nothing was recorded; the server may serve a changed or broken file."
                        ) from None
                    if spec.member:
                        _install_member(spec, Path(staging))
                    os.replace(part, path)
                    _update_record(spec, _new_entry(spec, path, digest, url, members))
                    entry = _record(spec)
        finally:
            part.unlink(missing_ok=True)
    if spec.member:
        return _verified_member(spec, path, entry)
    return path


def _verified_member(spec: DatasetSpec, archive: Path, entry: dict) -> Path:
    """The unpacked member, verified against its record (unpacked again from the verified archive if missing)."""
    target = _member_path(spec)
    expected = entry.get("members", {}).get(spec.member)
    again = force_command(spec)
    if target.exists():
        digest = _hash_file(target)
        if expected and digest != expected:
            raise DataError(
                f"the unpacked file {target} does not match the SHA-256 recorded when it was unpacked ({expected[:12]}…, "
                f"now {digest[:12]}…): it was modified or replaced. Delete it to have it unpacked again from the verified "
                f"archive {archive.name} at the next use, or run `{again}` to download everything again."
            )
        if expected:
            return target
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f".{spec.name}.") as staging:
        try:
            kind = _check_archive(spec, archive)
            unpacked = _unpack(spec, archive, kind, Path(staging))
            digest = _hash_file(unpacked)
            if expected and digest != expected:
                raise DataError(f"its member {spec.member} does not match the SHA-256 recorded for it ({expected[:12]}…)")
            if not expected:
                _check_h5ad(spec, unpacked, f"its member {spec.member}")
        except DataError as err:
            raise DataError(f"the cached archive {archive} cannot be used: {err}. Run `{again}` to download it again.") from None
        target.unlink(missing_ok=True)
        _install_member(spec, Path(staging))
    if not expected:
        _update_record(spec, {**entry, "members": {**entry.get("members", {}), spec.member: digest}})
    return target
