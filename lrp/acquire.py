"""Get data sets and weight files onto disk: download (resume, retry, MD5), verify, extract safely.

Why this module is strict: the archives are large (ImageNet val 6.3 GB), hosts are flaky, and a
truncated or wrong file that *looks* finished silently corrupts every number downstream. So a file only
appears under its final name after its size is complete and its MD5 matches, an archive only appears
extracted after every member was written, and anything that does not fit is an `AcquisitionError` saying
which file, what is wrong and what to do.

Entry points: `download`, `safe_extract`, `fetch` (registry name -> verified file), `resolve_dataset_source`
/ `prepare_dataset` (config value -> usable data folder), and `python -m lrp.acquire ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import hashlib
import http.client
import importlib.resources
import json
import logging
import os
import posixpath
import re
import shutil
import ssl
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import yaml
from tqdm import tqdm

from lrp.io import atomic_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
USER_AGENT = "lrp-bench-acquire/1 (+urllib)"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
REGISTRY_FILE = "data/archives.yaml"


class AcquisitionError(RuntimeError):
    """A download, checksum, extraction or layout problem the user has to act on."""


class _Transient(Exception):
    """A failure worth retrying (dropped connection, truncated body, 5xx)."""


# --------------------------------------------------------------------------------------------------
# checksums


def md5sum(path: str | os.PathLike, chunk_size: int = CHUNK) -> str:
    """MD5 hex digest of a file, read in chunks (archives are far larger than memory allows)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _normalise_md5(md5: str | None, where: str = "md5") -> str | None:
    if md5 is None:
        return None
    value = str(md5).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise AcquisitionError(f"{where}: {md5!r} is not an MD5 checksum (expected 32 hex digits)")
    return value


def verify_md5(path: str | os.PathLike, expected: str) -> str:
    """Raise `AcquisitionError` unless `path` has MD5 `expected`; return the actual digest."""
    expected = _normalise_md5(expected)
    actual = md5sum(path)
    if actual != expected:
        raise AcquisitionError(
            f"{path}: MD5 mismatch: expected {expected}, actual {actual}. The file is corrupt, truncated "
            "or a different release: delete it and download it again; if the mismatch persists, check "
            "that the source serves the file listed in lrp/data/archives.yaml."
        )
    return actual


# --------------------------------------------------------------------------------------------------
# download


def _local_path(url: str) -> Path | None:
    """Path for `file://` URLs and plain paths; None for http(s); error for anything else."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise AcquisitionError(f"{url}: file:// URLs on another host are not supported; copy the file")
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # plain path (or a Windows drive letter)
        return Path(url)
    raise AcquisitionError(f"{url}: unsupported URL scheme {scheme!r}; use http(s)://, file:// or a path")


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not enabled, mininterval=1.0, leave=False)


def _copy_local(src: Path, part: Path, progress: bool) -> None:
    if not src.is_file():
        what = "is a directory, not a file" if src.is_dir() else "does not exist"
        raise AcquisitionError(f"{src}: source {what}; check the path given in the configuration")
    with open(src, "rb") as fin, open(part, "wb") as fout, \
            _progress_bar(src.stat().st_size, 0, src.name, progress) as bar:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes a-b/total` or `bytes */total`; None where absent or '*'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _receive(resp, part: Path, offset: int, url: str, progress: bool) -> None:
    """Write one response body into `part` (append for 206); raise `_Transient` if it is incomplete."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != offset:
            part.unlink(missing_ok=True)
            raise _Transient(f"server answered the range request for byte {offset} with "
                             f"{resp.headers.get('Content-Range')!r}; restarting from zero")
        expected = total if total is not None else (offset + length if length is not None else None)
        mode = "ab"
    elif resp.status == 200:
        if offset:
            log.warning("%s: server ignored the Range request; restarting the download from zero", url)
        offset, expected, mode = 0, length, "wb"
    else:
        raise AcquisitionError(f"{url}: unexpected HTTP status {resp.status} {resp.reason}")
    with open(part, mode) as f, _progress_bar(expected, offset, part.name[:-5], progress) as bar:
        while chunk := resp.read(CHUNK):
            f.write(chunk)
            bar.update(len(chunk))
    size = part.stat().st_size
    if expected is None or size == expected:
        return  # complete (without a length, EOF is all we have: the MD5 is the check)
    if size > expected:
        part.unlink()
        raise _Transient(f"received {size} bytes but the server announced {expected}; restarting")
    raise _Transient(f"connection closed after {size} of {expected} bytes")


def _http_download(url: str, part: Path, retries: int, backoff: float, timeout: float,
                   progress: bool) -> None:
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            log.info("%s: resuming at byte %d", url, offset)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=timeout) as resp:
                _receive(resp, part, offset, url, progress)
            return
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:
                _, total = _content_range(e.headers.get("Content-Range"))
                if total is None or total == offset:
                    log.info("%s: partial file already complete (HTTP 416); verifying", part)
                    return
                part.unlink()
                error: Exception = _Transient(f"partial file has {offset} bytes but the file has {total}; "
                                              "discarded it, restarting from zero")
            elif 500 <= e.code < 600:
                error = e
            else:
                hint = (" (the file is not at this URL: check the URL, or download it yourself and give "
                        "a local path)" if e.code == 404 else "")
                raise AcquisitionError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise AcquisitionError(f"{url}: TLS certificate verification failed: {e.reason}") from None
            error = e
        except (_Transient, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            error = e
        failures += 1
        if failures > retries:
            have = part.stat().st_size if part.exists() else 0
            raise AcquisitionError(
                f"{url}: download failed after {failures} attempts; last error: {error}. "
                f"The partial file {part} ({have} bytes) is kept: re-run to resume."
            )
        delay = min(backoff * 2 ** (failures - 1), MAX_BACKOFF_S)
        log.warning("%s: %s; retry %d/%d in %.1f s", url, error, failures, retries, delay)
        time.sleep(delay)


def download(url: str, dest: str | os.PathLike, md5: str | None = None, retries: int = 5,
             backoff: float = 1.0, timeout: float = 30, progress: bool = True) -> Path:
    """Download (http/https) or copy (file:// or a path) `url` to `dest`; return `dest`.

    Bytes go to `dest.part` first; an existing `.part` is resumed with an HTTP Range request. Only a
    complete file whose MD5 matches is renamed to `dest`. On an MD5 mismatch the `.part` is DELETED
    (its length was complete, so resuming cannot repair it) and nothing exists under `dest`. After
    `retries` failed retries the `.part` is kept so that the next run resumes. An existing `dest` is
    checked against `md5` and returned without any network access.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    md5 = _normalise_md5(md5)
    if dest.exists():
        if not dest.is_file():
            raise AcquisitionError(f"{dest}: exists and is not a file; remove it and re-run")
        if md5:
            verify_md5(dest, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = _local_path(url)
    if local is not None:
        _copy_local(local, part, progress)
    else:
        _http_download(url, part, retries, backoff, timeout, progress)
    if md5 is None:
        log.warning("%s: no MD5 known, NOT verified (actual MD5 %s; pin it in lrp/data/archives.yaml)",
                    dest, md5sum(part))
    else:
        actual = md5sum(part)
        if actual != md5:
            part.unlink()
            raise AcquisitionError(
                f"{dest}: MD5 mismatch for the file from {url}: expected {md5}, actual {actual}. "
                f"The download was deleted. Re-run to download it again; if it fails again, the source "
                "serves a different file: check the URL/path and lrp/data/archives.yaml."
            )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# extraction


def _archive_format(path: Path) -> str | None:
    """'tar' or 'zip' by file name, else by content; None if neither."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, EOFError):
        return None


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """Normalised relative path of a member; refuse absolute paths and `..`."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise AcquisitionError(f"{archive}: refusing member {name!r}: absolute path")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p != "."]
    if ".." in parts:
        raise AcquisitionError(f"{archive}: refusing member {name!r}: '..' would escape the folder")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_tar_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuse anything that could write outside the destination or is not plain data."""
    files: set[PurePosixPath] = set()
    symlinks: set[PurePosixPath] = set()
    for m in members:
        path = _safe_member_path(m.name, archive)
        if any(parent in symlinks for parent in path.parents):
            raise AcquisitionError(f"{archive}: refusing member {m.name!r}: path goes through a symlink")
        if m.isdev():
            raise AcquisitionError(f"{archive}: refusing member {m.name!r}: device file or FIFO")
        if m.issym():
            target = m.linkname
            resolved = posixpath.normpath(posixpath.join(str(path.parent), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise AcquisitionError(
                    f"{archive}: refusing symlink {m.name!r} -> {target!r}: points outside the folder")
            symlinks.add(path)
        elif m.islnk():
            target = _safe_member_path(m.linkname, archive)
            if target not in files:
                raise AcquisitionError(f"{archive}: refusing hard link {m.name!r} -> {m.linkname!r}: "
                                       "target is not a file earlier in the archive")
            files.add(path)
        elif m.isreg():
            files.add(path)
        elif not m.isdir():
            raise AcquisitionError(f"{archive}: refusing member {m.name!r}: unsupported type {m.type!r}")


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """Require the end-of-archive zero block and a readable tail.

    Why: tarfile treats a file cut at a header boundary as a normal end, so a truncated download would
    otherwise extract "successfully" with members missing.
    """
    f = tf.fileobj
    f.seek(tf.offset)
    block = f.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise EOFError(f"no end-of-archive marker after the last member (byte {tf.offset})")
    while f.read(CHUNK):  # a truncated/corrupt compressed stream fails here
        pass


def _corrupt(archive: Path, err: BaseException) -> AcquisitionError:
    if isinstance(err, OSError) and err.errno is not None:  # disk full, permissions: not the archive
        return AcquisitionError(f"{archive}: extraction failed while writing: {err}")
    return AcquisitionError(
        f"{archive}: truncated or corrupt archive ({type(err).__name__}: {err}); nothing was extracted. "
        "Delete it and download it again (check its MD5 with lrp.acquire.verify_md5)."
    )


_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError)


def _extract_tar(archive: Path, into: Path, progress: bool) -> int:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_tar_end(tf, archive)
            _check_tar_members(members, archive)
            bar = tqdm(members, desc=f"extract {archive.name}", unit="file", file=sys.stderr,
                       disable=not progress, mininterval=1.0, leave=False)
            # Our checks above are the contract; the stdlib 'data' filter re-checks at write time
            # against the real file system (symlinks already extracted) and drops setuid bits.
            tf.extractall(into, members=bar, filter="data")
            return len(members)
    except AcquisitionError:
        raise
    except tarfile.FilterError as e:
        raise AcquisitionError(f"{archive}: refusing unsafe member: {e}") from None
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None


def _extract_zip(archive: Path, into: Path, progress: bool) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _safe_member_path(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    raise AcquisitionError(f"{archive}: refusing member {info.filename!r}: "
                                           "symlink or special file")
            bad = zf.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"CRC mismatch in member {bad!r}")
            bar = tqdm(infos, desc=f"extract {archive.name}", unit="file", file=sys.stderr,
                       disable=not progress, mininterval=1.0, leave=False)
            zf.extractall(into, members=bar)
            return len(infos)
    except AcquisitionError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None


def _merge_into(src: Path, dest: Path, archive: Path) -> None:
    """Move the tree `src` into the existing folder `dest`; identical files are fine, different ones not.

    Why: VOC trainval and test archives both unpack into VOCdevkit/VOC2007/.
    """
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_dir() and not target.is_symlink():
                _merge_into(entry, target, archive)
                continue
            if target.exists() or target.is_symlink():
                raise AcquisitionError(f"{archive}: cannot extract folder {target}: a file is in the way; "
                                       f"delete {dest} and re-run")
        elif target.exists() or target.is_symlink():
            same = (entry.is_file() and target.is_file() and not entry.is_symlink()
                    and not target.is_symlink() and filecmp.cmp(entry, target, shallow=False))
            if not same:
                raise AcquisitionError(f"{archive}: would overwrite {target} with different content; "
                                       f"the folder holds other data: delete {dest} and re-run")
            continue
        os.replace(entry, target)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Extract a tar(.gz/.tgz/.bz2/.xz) or zip archive into folder `dest`; return `dest`.

    Everything is checked first (absolute paths, `..`, links leaving `dest`, device files, truncation),
    then extracted into a temporary folder next to `dest` and moved into place; the marker
    `dest/.extracted-<archive name>` is written last, so its presence means "complete" and a re-run
    skips the work. If `dest` exists already (a second archive into the same tree) the trees are merged.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / f".extracted-{archive.name}"
    if marker.is_file():
        log.info("%s: already extracted into %s (marker %s)", archive, dest, marker.name)
        return dest
    if not archive.is_file():
        raise AcquisitionError(f"{archive}: archive not found; download it first (lrp.acquire.fetch)")
    if dest.exists() and not dest.is_dir():
        raise AcquisitionError(f"{dest}: extraction target exists and is not a folder; remove it")
    fmt = _archive_format(archive)
    if fmt is None:
        raise AcquisitionError(f"{archive}: neither a tar nor a zip archive (or unreadable); "
                               "check that the configured path names the right file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the final folder should not be
        n = (_extract_zip if fmt == "zip" else _extract_tar)(archive, tmp, progress)
        info = {"archive": archive.name, "size": archive.stat().st_size, "members": n,
                "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if not dest.exists():
            with atomic_path(tmp / marker.name) as t:
                t.write_text(json.dumps(info) + "\n")
            os.replace(tmp, dest)
        else:
            _merge_into(tmp, dest, archive)
            with atomic_path(marker) as t:
                t.write_text(json.dumps(info) + "\n")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------------
# registry


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    """One entry of lrp/data/archives.yaml (see the comments there for the fields)."""

    name: str
    filename: str
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    md5: str | None = None
    size: int | None = None
    extracts_to: str | None = None
    kind: str | None = None
    config_key: str | None = None
    source_note: str | None = None

    @classmethod
    def from_mapping(cls, name: str, data: dict, where: str) -> "ArchiveSpec":
        if not isinstance(data, dict):
            raise AcquisitionError(f"{where}: entry {name!r} must be a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = set(data) - fields
        if unknown:
            raise AcquisitionError(f"{where}: entry {name!r} has unknown field(s) {sorted(unknown)}; "
                                   f"known: {sorted(fields)}")
        filename = data.get("filename")
        if not isinstance(filename, str) or not filename or "/" in filename:
            raise AcquisitionError(f"{where}: entry {name!r} needs 'filename', a plain file name")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise AcquisitionError(f"{where}: entry {name!r}: 'size' must be a byte count or null")
        kind = data.get("kind")
        if kind is not None and kind not in LAYOUT_CHECKS:
            raise AcquisitionError(f"{where}: entry {name!r}: unknown kind {kind!r}; "
                                   f"known: {sorted(LAYOUT_CHECKS)}")
        return cls(name=name, filename=filename, url=data.get("url"),
                   mirrors=tuple(data.get("mirrors") or ()),
                   md5=_normalise_md5(data.get("md5"), f"{where}: entry {name!r} md5"), size=size,
                   extracts_to=data.get("extracts_to"), kind=kind, config_key=data.get("config_key"),
                   source_note=data.get("source_note"))


def load_registry(path: str | os.PathLike | None = None) -> dict[str, ArchiveSpec]:
    """Parse the archive registry (default: the packaged lrp/data/archives.yaml)."""
    if path is None:
        resource = importlib.resources.files("lrp").joinpath(REGISTRY_FILE)
        where, text = f"lrp/{REGISTRY_FILE}", resource.read_text(encoding="utf-8")
    else:
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AcquisitionError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise AcquisitionError(f"{where}: expected a mapping of archive names to entries")
    return {name: ArchiveSpec.from_mapping(name, entry, where) for name, entry in data.items()}


def _as_spec(name_or_spec, registry: dict[str, ArchiveSpec] | None) -> ArchiveSpec:
    if isinstance(name_or_spec, ArchiveSpec):
        return name_or_spec
    if isinstance(name_or_spec, dict):
        data = dict(name_or_spec)
        return ArchiveSpec.from_mapping(str(data.pop("name", data.get("filename"))), data, "archive spec")
    registry = load_registry() if registry is None else registry
    if name_or_spec not in registry:
        raise AcquisitionError(f"unknown archive {name_or_spec!r}; known: {', '.join(sorted(registry))} "
                               "(lrp/data/archives.yaml)")
    return registry[name_or_spec]


def fetch(name_or_spec: str | dict | ArchiveSpec, dest_dir: str | os.PathLike,
          source: str | os.PathLike | None = None, *, registry: dict[str, ArchiveSpec] | None = None,
          retries: int = 5, backoff: float = 1.0, timeout: float = 30, progress: bool = True) -> Path:
    """Put the registry entry's file into `dest_dir` (verified) and return its path.

    `source` (a local path or URL the user configured) overrides the registry URL; entries without a
    public URL (ImageNet) require it. Without `source`, the registry URL and then its mirrors are tried.
    """
    spec = _as_spec(name_or_spec, registry)
    dest = Path(dest_dir) / spec.filename
    if source is not None:
        urls = [str(source)]
    elif spec.url:
        urls = [spec.url, *spec.mirrors]
    else:
        key = spec.config_key or "the data source"
        raise AcquisitionError(
            f"{spec.name} ({spec.filename}) has no public download URL (ImageNet needs a login at "
            f"https://image-net.org). Download it yourself and set the config key `{key}` to the local "
            "path of the file (or a URL you can reach)."
        )
    errors = []
    for url in urls:
        try:
            return download(url, dest, md5=spec.md5, retries=retries, backoff=backoff, timeout=timeout,
                            progress=progress)
        except AcquisitionError as e:
            if dest.exists() or len(urls) == 1:
                raise
            errors.append(str(e))
            log.warning("%s: %s; trying the next mirror", spec.name, e)
    raise AcquisitionError(f"{spec.name}: every source failed:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------------------------------
# data-set sources and layouts


def _voc_root(path: Path, year: str) -> Path:
    """Folder holding VOCdevkit/VOC<year>/Annotations/*.xml (accepts that folder, VOCdevkit or VOC<year>)."""
    candidates = [path]
    if path.name == "VOCdevkit":
        candidates.append(path.parent)
    if path.name == f"VOC{year}" and path.parent.name == "VOCdevkit":
        candidates.append(path.parent.parent)
    for root in candidates:
        ann = root / "VOCdevkit" / f"VOC{year}" / "Annotations"
        if ann.is_dir() and next(ann.glob("*.xml"), None) is not None:
            return root
    raise AcquisitionError(
        f"{path}: not an extracted PASCAL VOC {year}: expected VOCdevkit/VOC{year}/Annotations/*.xml "
        "below it. Give the folder that contains VOCdevkit/, the .tar archive, or its URL."
    )


def _glob_root(pattern: str, what: str):
    def check(path: Path) -> Path:
        if next(path.rglob(pattern), None) is None:
            raise AcquisitionError(f"{path}: no {what} ({pattern}) found below it; give the extracted "
                                   "folder, the archive, or its URL")
        return path
    return check


LAYOUT_CHECKS = {
    "voc2007": lambda p: _voc_root(p, "2007"),
    "voc2012": lambda p: _voc_root(p, "2012"),
    "imagenet_boxes": _glob_root("*.xml", "ImageNet box XML files"),
    "imagenet_images": _glob_root("*.JPEG", "ImageNet val images"),
    "imagenet_devkit": _glob_root("ILSVRC2012_validation_ground_truth.txt", "ImageNet devkit"),
}


def check_layout(path: str | os.PathLike, kind: str) -> Path:
    """Return the data root below `path` for `kind` (VOC: the folder holding VOCdevkit/), or raise."""
    if kind not in LAYOUT_CHECKS:
        raise AcquisitionError(f"unknown data-set kind {kind!r}; known: {', '.join(sorted(LAYOUT_CHECKS))}")
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise AcquisitionError(f"{path}: {what}; expected the extracted {kind} data")
    return LAYOUT_CHECKS[kind](path)


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What it takes to turn a configured data source into a usable folder.

    action: 'use' (an extracted folder; `root` is the checked data root), 'extract' (a local archive at
    `location`) or 'download' (a URL; `filename` is the archive name to save it under, then extract).
    """

    action: str
    location: str
    kind: str
    root: Path | None = None
    filename: str | None = None


def resolve_dataset_source(path_or_url: str | os.PathLike, kind: str) -> SourcePlan:
    """Classify a configured data source (folder / archive / URL) for data-set `kind`; nothing is written."""
    if kind not in LAYOUT_CHECKS:
        raise AcquisitionError(f"unknown data-set kind {kind!r}; known: {', '.join(sorted(LAYOUT_CHECKS))}")
    text = str(path_or_url)
    local = _local_path(text)
    if local is None:
        filename = posixpath.basename(unquote(urlsplit(text).path))
        if not filename.lower().endswith(TAR_SUFFIXES + ZIP_SUFFIXES):
            raise AcquisitionError(f"{text}: a URL source must name an archive "
                                   f"({', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)})")
        return SourcePlan("download", text, kind, filename=filename)
    if local.is_dir():
        return SourcePlan("use", str(local), kind, root=check_layout(local, kind))
    if local.is_file():
        if _archive_format(local) is None:
            raise AcquisitionError(f"{local}: neither a folder nor a tar/zip archive; for {kind} give the "
                                   "extracted folder, the archive, or its URL")
        return SourcePlan("extract", str(local), kind)
    raise AcquisitionError(f"{local}: data source for {kind} does not exist; set the config key to an "
                           "extracted folder, an archive file, or a URL")


def prepare_dataset(path_or_url: str | os.PathLike, kind: str, extract_to: str | os.PathLike, *,
                    download_dir: str | os.PathLike | None = None, md5: str | None = None,
                    retries: int = 5, backoff: float = 1.0, timeout: float = 30,
                    progress: bool = True) -> Path:
    """Carry out `resolve_dataset_source`: download/extract as needed, check the layout, return the root.

    Archives extract into `extract_to` (several may share it, e.g. VOC trainval + test); downloads go to
    `download_dir` (default: the parent of `extract_to`). `md5`, if given, is checked on the archive.
    """
    plan = resolve_dataset_source(path_or_url, kind)
    if plan.action == "use":
        return plan.root
    if plan.action == "download":
        folder = Path(download_dir) if download_dir is not None else Path(extract_to).parent
        archive = download(plan.location, folder / plan.filename, md5=md5, retries=retries,
                           backoff=backoff, timeout=timeout, progress=progress)
    else:
        archive = Path(plan.location)
        if md5 is not None and not (Path(extract_to) / f".extracted-{archive.name}").is_file():
            verify_md5(archive, md5)
    safe_extract(archive, extract_to, progress=progress)
    return check_layout(extract_to, kind)


def _registry_md5(filename: str, registry: dict[str, ArchiveSpec]) -> str | None:
    md5 = next((s.md5 for s in registry.values() if s.filename == filename), None)
    if md5 is None:
        log.warning("%s: not a file name listed in lrp/data/archives.yaml, so its MD5 is NOT checked",
                    filename)
    return md5


def _prepare_keyed(source, kind: str, extract_to: Path, key: str, registry, **kw) -> Path:
    """`prepare_dataset` with the registry MD5 of known archive names; errors name the config key."""
    try:
        plan = resolve_dataset_source(source, kind)
        md5 = None
        if plan.action != "use":
            md5 = _registry_md5(plan.filename or Path(plan.location).name, registry)
        return prepare_dataset(source, kind, extract_to, md5=md5, **kw)
    except AcquisitionError as e:
        raise AcquisitionError(f"`{key}` = {source!s}: {e}") from None


def prepare_voc(root: str | os.PathLike | None, download: bool = False, key: str = "datasets.voc2007.root",
                *, year: str = "2007", registry: dict[str, ArchiveSpec] | None = None,
                **kw) -> Path:
    """The `VOCdevkit/VOC<year>` folder for config value `root` (what `lrp.stages.data` needs).

    `root` is either an extracted tree (the VOC<year> folder, VOCdevkit, or the folder holding VOCdevkit)
    or the folder holding the official tars (trainval + test for 2007). With `download`, missing tars are
    fetched into `root` first. Tars are MD5-checked and extracted into `root` (once: markers).
    `kw` goes to `fetch`/`download` (retries, backoff, timeout, progress).
    """
    if root is None:
        raise AcquisitionError(f"`{key}` is not set: give the extracted VOCdevkit/VOC{year} folder, or the "
                               "folder for the VOC tars (with source: download they are fetched into it)")
    registry = load_registry() if registry is None else registry
    root, kind = Path(root), f"voc{year}"
    specs = [registry[n] for n in (f"voc{year}_trainval", f"voc{year}_test") if n in registry]
    todo = [s for s in specs if not (root / f".extracted-{s.filename}").is_file()]  # markers: done before
    if todo and (download or any((root / s.filename).is_file() for s in specs)):
        missing = [s.filename for s in todo if not (root / s.filename).is_file()]
        if missing and not download:
            raise AcquisitionError(f"`{key}` = {root}: {', '.join(missing)} missing beside the other VOC "
                                   "tar; add it, or set source: download to fetch it")
        for spec in todo:
            archive = root / spec.filename
            try:
                if download:
                    fetch(spec, root, **kw)  # verifies the MD5 (also of a tar already there)
                else:
                    verify_md5(archive, spec.md5)
                safe_extract(archive, root, progress=kw.get("progress", True))
            except AcquisitionError as e:
                raise AcquisitionError(f"`{key}` = {root}: {e}") from None
    try:
        base = check_layout(root, kind)
    except AcquisitionError as e:
        raise AcquisitionError(f"`{key}`: {e}") from None
    return base / "VOCdevkit" / f"VOC{year}"


def prepare_imagenet(images: str | os.PathLike | None, boxes: str | os.PathLike | None,
                     key: str = "datasets.imagenet", work_dir: str | os.PathLike = "data/imagenet", *,
                     registry: dict[str, ArchiveSpec] | None = None, **kw) -> tuple[Path, Path]:
    """(images folder, boxes folder or LOC_val_solution.csv) for the config values `images`/`boxes`.

    Each may be an extracted folder, an archive (extracted under `work_dir`/images or /boxes, MD5-checked
    when its name is in the registry) or a URL. `kw` goes to `prepare_dataset`.
    """
    registry = load_registry() if registry is None else registry
    for value, name, entry in ((images, "images", "imagenet_val_images"),
                               (boxes, "boxes", "imagenet_bbox_val")):
        if value is None:
            raise AcquisitionError(
                f"`{key}.{name}` is not set: ImageNet needs a login at https://image-net.org; download "
                f"{registry[entry].filename} yourself and set the key to it (or to its extracted folder)")
    work_dir = Path(work_dir)
    image_dir = _prepare_keyed(images, "imagenet_images", work_dir / "images", f"{key}.images", registry,
                               **kw)
    local = _local_path(str(boxes))
    if local is not None and local.suffix.lower() == ".csv":  # Kaggle LOC_val_solution.csv
        if not local.is_file():
            raise AcquisitionError(f"`{key}.boxes` = {boxes}: file not found")
        return image_dir, local
    box_dir = _prepare_keyed(boxes, "imagenet_boxes", work_dir / "boxes", f"{key}.boxes", registry, **kw)
    return image_dir, box_dir


# --------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """`python -m lrp.acquire {list,fetch,extract,prepare} ...`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lrp.acquire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registry entries")
    p = sub.add_parser("fetch", help="download/copy a registry entry into DEST and verify it")
    p.add_argument("name")
    p.add_argument("dest", help="folder to put the file in")
    p.add_argument("--source", help="local path or URL (required for ImageNet entries)")
    p = sub.add_parser("extract", help="safely extract ARCHIVE into DEST")
    p.add_argument("archive")
    p.add_argument("dest")
    p = sub.add_parser("prepare", help="folder/archive/URL -> checked data folder")
    p.add_argument("source")
    p.add_argument("kind", choices=sorted(LAYOUT_CHECKS))
    p.add_argument("dest", help="folder to extract into")
    p.add_argument("--md5")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    progress = not args.no_progress
    try:
        if args.cmd == "list":
            for spec in load_registry().values():
                where = spec.url or f"(no public URL: set {spec.config_key})"
                print(f"{spec.name:26s} {spec.filename:52s} {where}")
        elif args.cmd == "fetch":
            print(fetch(args.name, args.dest, source=args.source, progress=progress))
        elif args.cmd == "extract":
            print(safe_extract(args.archive, args.dest, progress=progress))
        else:
            print(prepare_dataset(args.source, args.kind, args.dest, md5=args.md5, progress=progress))
    except AcquisitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
