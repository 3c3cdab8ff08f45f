"""Get data sets and weight files onto disk: download (resume, retry, MD5), verify, extract safely.

Why this module is strict: the archives are large (ImageNet val 6.3 GB), hosts are flaky, and a
truncated or wrong file that *looks* finished silently corrupts every number downstream. So a file only
appears under its final name after its size is complete and its MD5 matches (without a known MD5: it is
no web page and, for an archive, a readable one), an archive only appears extracted after every member
was written, and anything that does not fit is an `AcquisitionError` saying which file, what is wrong and
what to do; `TransientAcquisitionError`, its subclass, marks the network failures worth retrying later.

Archives are untrusted input: extraction refuses links (the real archives have none), absolute paths,
`..`, special files, writing through a symlink already in the destination, and more than
`MAX_EXTRACT_BYTES` / `MAX_EXTRACT_MEMBERS` (bombs).

Entry points: `download`, `safe_extract`, `fetch` (registry name -> verified file), `resolve_dataset_source`
/ `prepare_dataset` (config value -> usable data folder), and `python -m lrp.datasets.acquire ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
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
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import yaml
from tqdm import tqdm

from lrp.io import atomic_path, md5_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
USER_AGENT = "lrp-bench-acquire/1 (+urllib)"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
REGISTRY_FILE = "data/archives.yaml"
# Extraction limits (keywords `max_bytes` / `max_members` of `safe_extract` and the prepare_* functions; None
# means these module values, so a caller may also raise them here). The largest real archive, ImageNet val,
# unpacks to 6.3 GB in 50,000 files; VOC2012 trainval to 2 GB in about 33,000.
MAX_EXTRACT_BYTES = 64 << 30
MAX_EXTRACT_MEMBERS = 2_000_000
MAX_LINK_HOPS = 40  # as Linux's own limit on symlinks followed in one path
RETRIED_HTTP_CODES = (408, 429)  # besides 5xx: the server asks to come back later
HTML_MARKERS = (b"<!doctype html", b"<html")


class AcquisitionError(RuntimeError):
    """A download, checksum, extraction or layout problem the user has to act on."""


class TransientAcquisitionError(AcquisitionError):
    """A download that failed for network reasons after all retries (connection errors, timeouts, 5xx,
    truncated bodies): running again later may succeed. Everything else (bad archive, checksum mismatch,
    web page instead of the file, disk full) is a plain `AcquisitionError`: running again cannot help."""


class _Transient(Exception):
    """A failure worth retrying (dropped connection, truncated body, 5xx)."""


# --------------------------------------------------------------------------------------------------
# checksums


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
    actual = md5_file(path)
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


def _kept(part: Path) -> str:
    """What a failed download leaves on disk, said truthfully in its error message; an empty `.part` is removed."""
    if part.is_file() and not part.is_symlink():
        size = part.stat().st_size
        if size:
            return f"The partial file {part} ({size} bytes) is kept: re-run to resume."
        part.unlink()
    return "Nothing was kept (no partial file): re-run to try again."


def _write_failed(part: Path, err: OSError) -> AcquisitionError:
    """A local write error (disk full, permissions): a plain error, since retrying the network cannot help."""
    return AcquisitionError(f"{part}: writing the download failed ({err}). {_kept(part)} Free disk space "
                            "(or give a folder on another disk) and re-run.")


def _copy_stream(fin, part: Path, mode: str, bar: tqdm) -> None:
    """Copy `fin` into `part` (`mode` 'wb' or 'ab'). Raises `AcquisitionError` for write errors; read errors
    (the network's) propagate unchanged, so that the caller can retry them."""
    try:
        f = open(part, mode)
    except OSError as e:
        raise _write_failed(part, e) from None
    try:
        while chunk := fin.read(CHUNK):
            try:
                f.write(chunk)
            except OSError as e:
                raise _write_failed(part, e) from None
            bar.update(len(chunk))
    finally:
        try:
            f.close()  # flushes: a full disk may only show here
        except OSError as e:
            raise _write_failed(part, e) from None


def _copy_local(src: Path, part: Path, progress: bool) -> None:
    if not src.is_file():
        what = "is a directory, not a file" if src.is_dir() else "does not exist"
        raise AcquisitionError(f"{src}: source {what}; check the path given in the configuration")
    with open(src, "rb") as fin, _progress_bar(src.stat().st_size, 0, src.name, progress) as bar:
        _copy_stream(fin, part, "wb", bar)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes a-b/total` or `bytes */total`; None where absent or '*'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _receive(resp, part: Path, offset: int, url: str, progress: bool) -> str:
    """Write one response body into `part` (append for 206) and return its Content-Type.

    Raises `_Transient` if the body is incomplete, `AcquisitionError` if it cannot be written.
    """
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
    with _progress_bar(expected, offset, part.name[:-5], progress) as bar:
        _copy_stream(resp, part, mode, bar)
    size = part.stat().st_size
    if expected is None or size == expected:
        # complete (without a length, EOF is all we have: the MD5 or the archive check is the test)
        return resp.headers.get("Content-Type") or ""
    if size > expected:
        part.unlink()
        raise _Transient(f"received {size} bytes but the server announced {expected}; restarting")
    raise _Transient(f"connection closed after {size} of {expected} bytes")


def _http_download(url: str, part: Path, retries: int, backoff: float, timeout: float,
                   progress: bool) -> str:
    """Fetch `url` into `part` with resume and bounded retries; return the last answer's Content-Type.

    Raises `TransientAcquisitionError` when the retries are spent on network failures (connection errors,
    timeouts, 5xx/408/429, truncated bodies), `AcquisitionError` for answers that retrying cannot change.
    """
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
                return _receive(resp, part, offset, url, progress)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:
                _, total = _content_range(e.headers.get("Content-Range"))
                if total is None or total == offset:
                    log.info("%s: partial file already complete (HTTP 416); verifying", part)
                    return ""
                part.unlink()
                error: Exception = _Transient(f"partial file has {offset} bytes but the file has {total}; "
                                              "discarded it, restarting from zero")
            elif 500 <= e.code < 600 or e.code in RETRIED_HTTP_CODES:
                error = e
            else:
                hint = (" (the file is not at this URL: check the URL, or download it yourself and give "
                        "a local path)" if e.code == 404 else "")
                raise AcquisitionError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise AcquisitionError(f"{url}: TLS certificate verification failed: {e.reason}") from None
            error = e
        except (_Transient, http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as e:
            error = e
        failures += 1
        if failures > retries:
            raise TransientAcquisitionError(
                f"{url}: download failed after {failures} attempts (a network or server problem: worth "
                f"retrying later); last error: {error}. {_kept(part)}"
            )
        delay = min(backoff * 2 ** (failures - 1), MAX_BACKOFF_S)
        log.warning("%s: %s; retry %d/%d in %.1f s", url, error, failures, retries, delay)
        time.sleep(delay)


def _web_page(path: Path, content_type: str) -> str | None:
    """Why the download is a web page (a login or error page served instead of the file), or None."""
    if content_type.split(";")[0].strip().lower() == "text/html":
        return "Content-Type: text/html"
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.lower().startswith(HTML_MARKERS):
        return f"it starts with {head[:14].decode('ascii', 'replace')!r}"
    return None


def _refuse_part(part: Path, message: str) -> AcquisitionError:
    """Delete a complete but wrong download (resuming cannot repair it) and return the error to raise."""
    part.unlink()
    return AcquisitionError(message)


def _verify_part(part: Path, dest: Path, url: str, md5: str | None, content_type: str) -> None:
    """Let only the real file reach its final name: raise `AcquisitionError` (deleting `part`) on an MD5
    mismatch, and without an MD5 for a web page or, under an archive name, anything but a readable archive."""
    page = _web_page(part, content_type)
    if md5 is not None:
        actual = md5_file(part)
        if actual != md5:
            what = f" It is a web page ({page}), probably a login or error page." if page else ""
            raise _refuse_part(part, (
                f"{dest}: MD5 mismatch for the file from {url}: expected {md5}, actual {actual}.{what} "
                f"The download was deleted. Re-run to download it again; if it fails again, the source "
                "serves a different file: check the URL/path and lrp/data/archives.yaml."))
        return
    if page:
        who = "the server returned" if _local_path(url) is None else "the source is"
        raise _refuse_part(part, (
            f"{dest}: {who} a web page ({page}), not the file: probably a login or error page. Nothing was "
            f"kept. Download the file yourself (in a browser, logged in if needed) and give its local path, "
            f"or check the URL {url}."))
    fmt = _format_by_name(dest)
    problem = _unreadable_archive(part, fmt) if fmt else None
    if problem:
        raise _refuse_part(part, (
            f"{dest}: the file from {url} is not a readable {fmt} archive ({problem}); nothing was kept. "
            "Check the URL/path; if it is right, pin the archive's MD5 in lrp/data/archives.yaml."))
    log.warning("%s: no MD5 known, NOT verified (actual MD5 %s; pin it in lrp/data/archives.yaml)",
                dest, md5_file(part))


def download(url: str, dest: str | os.PathLike, md5: str | None = None, retries: int = 5,
             backoff: float = 1.0, timeout: float = 30, progress: bool = True) -> Path:
    """Download (http/https) or copy (file:// or a path) `url` to `dest`; return `dest`.

    Bytes go to `dest.part` first; an existing `.part` is resumed with an HTTP Range request. Only a
    complete, verified file is renamed to `dest`: its MD5 must match, or without an MD5 it must not be a
    web page and, under an archive name (.tar, .tgz, .zip, ...), must be a readable archive of that kind.
    A file failing that check is DELETED (its length was complete, so resuming cannot repair it) and
    nothing exists under `dest`. After `retries` failed retries a non-empty `.part` is kept so that the next
    run resumes (`TransientAcquisitionError`). An existing `dest` is checked against `md5` and returned
    without any network access.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    md5 = _normalise_md5(md5)
    if dest.exists():
        if not dest.is_file():
            raise AcquisitionError(f"{dest}: exists and is not a file; remove it and re-run")
        if md5:
            verify_md5(dest, md5)
        elif (page := _web_page(dest, "")) is not None:  # left by an earlier, unchecked download
            raise AcquisitionError(f"{dest}: exists but is a web page ({page}), not the file: probably a "
                                   "login or error page saved by an earlier download; delete it and re-run")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = _local_path(url)
    if local is not None:
        _copy_local(local, part, progress)
        content_type = ""
    else:
        content_type = _http_download(url, part, retries, backoff, timeout, progress)
    _verify_part(part, dest, url, md5, content_type)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# extraction


def _format_by_name(path: Path) -> str | None:
    """'tar' or 'zip' by the file name's ending, else None."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def _archive_format(path: Path) -> str | None:
    """'tar' or 'zip' by file name, else by content; None if neither."""
    fmt = _format_by_name(path)
    if fmt is not None:
        return fmt
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, EOFError):
        return None


def _unreadable_archive(path: Path, fmt: str) -> str | None:
    """Why `path` is not a complete, readable archive of format `fmt` ('tar' or 'zip'); None if it is one."""
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        else:
            with tarfile.open(path, "r:*") as tf:
                tf.getmembers()
                _check_tar_end(tf, path)
    except _ARCHIVE_ERRORS as e:
        return _describe(e)
    return None


class _Limits(NamedTuple):
    """What one archive may create (see `safe_extract`)."""

    max_bytes: int
    max_members: int
    allow_links: bool


def _limits(max_bytes: int | None, max_members: int | None, allow_links: bool) -> _Limits:
    """Limits with None meaning the module defaults (read now, so that callers may change them)."""
    max_bytes = MAX_EXTRACT_BYTES if max_bytes is None else max_bytes
    max_members = MAX_EXTRACT_MEMBERS if max_members is None else max_members
    for name, value in (("max_bytes", max_bytes), ("max_members", max_members)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AcquisitionError(f"safe_extract: {name} must be a non-negative whole number, got {value!r}")
    return _Limits(max_bytes, max_members, bool(allow_links))


_CONFIG_LIMIT = {"max_bytes": "archive_bytes", "max_members": "archive_members"}


def _over_limit(archive: Path, what: str, keyword: str, limit: int, constant: str) -> AcquisitionError:
    return AcquisitionError(
        f"{archive}: refusing to extract: {what}, beyond the limit {keyword}={limit:,}; nothing was extracted. "
        f"The real VOC/ImageNet archives stay far below the default: if you trust this archive, raise the "
        f"limit: in the pipeline, the config key datasets.<name>.limits.{_CONFIG_LIMIT[keyword]}; in Python, "
        f"safe_extract(..., {keyword}=N), the same keyword of the prepare_* functions, or lrp.datasets.acquire.{constant}."
    )


def _too_big(archive: Path, limit: int) -> AcquisitionError:
    return _over_limit(archive, f"it unpacks to more than {limit:,} bytes", "max_bytes", limit,
                       "MAX_EXTRACT_BYTES")


def _too_many(archive: Path, limit: int) -> AcquisitionError:
    return _over_limit(archive, f"it has more than {limit:,} members", "max_members", limit,
                       "MAX_EXTRACT_MEMBERS")


class _ByteBudget:
    """Bytes actually written so far, against the limit: zip headers may lie about sizes."""

    def __init__(self, archive: Path, limit: int):
        self.archive, self.limit, self.used = archive, limit, 0

    def take(self, n: int) -> None:
        """Count `n` more bytes; raises `AcquisitionError` beyond the limit."""
        self.used += n
        if self.used > self.limit:
            raise _too_big(self.archive, self.limit)


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """Normalised relative path of a member; refuse absolute paths and `..`."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise AcquisitionError(f"{archive}: refusing member {name!r}: absolute path")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p != "."]
    if ".." in parts:
        raise AcquisitionError(f"{archive}: refusing member {name!r}: '..' would escape the folder")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _tar_path(name: str, archive: Path) -> PurePosixPath:
    """A tar member's path as the file system will see it (a backslash is a plain character there), after
    the checks of `_safe_member_path`."""
    _safe_member_path(name, archive)
    return PurePosixPath(name)  # drops '.' parts and repeated or trailing slashes, as the file system does


def _no_links(archive: Path, kind: str, name: str, target: str) -> AcquisitionError:
    return AcquisitionError(
        f"{archive}: refusing {kind} {name!r} -> {target!r}: archives of this data set contain no links, so "
        "this is not the official archive (or a hostile one); nothing was extracted. Use the official "
        "archive; for a tar you trust, safe_extract(..., allow_links=True) accepts links that stay inside."
    )


class _MemberTree:
    """The tree a tar archive will create, to judge its links before anything is written.

    Why: a link that looks inside on paper can resolve outside through other links of the same archive,
    in whatever order they are stored (`d/s0 -> .`, `d/s1 -> s0/..`, ... climbs one level per hop), and
    the file system resolves links only after extraction. So every link is resolved here, virtually,
    against the complete tree, and must end at a file or folder of the archive.
    """

    def __init__(self, archive: Path):
        self.archive = archive
        self.nodes: dict[PurePosixPath, str] = {PurePosixPath("."): "dir"}  # 'file' or 'dir' (parents too)
        self.links: dict[PurePosixPath, tuple[str, str]] = {}  # symlink path -> (member name, target)

    def refuse(self, name: str, why: str) -> AcquisitionError:
        return AcquisitionError(f"{self.archive}: refusing member {name!r}: {why}")

    def add(self, m: tarfile.TarInfo, path: PurePosixPath) -> None:
        """Record member `m` at `path`; raises `AcquisitionError` for a name clash with a symlink."""
        if path in self.links or (m.issym() and path in self.nodes):
            raise self.refuse(m.name, "another member of that name exists, and a symlink must not replace "
                                      "(or be written through by) another member")
        for parent in path.parents:
            self.nodes.setdefault(parent, "dir")
        if m.issym():
            self.links[path] = (m.name, m.linkname)
            return
        if m.islnk():
            target = _tar_path(m.linkname, self.archive)
            if self.nodes.get(target) != "file":
                raise AcquisitionError(f"{self.archive}: refusing hard link {m.name!r} -> {m.linkname!r}: "
                                       "target is not a file earlier in the archive")
        self.nodes[path] = "dir" if m.isdir() else "file"

    def check(self) -> None:
        """After all members: nothing goes through a symlink; every symlink ends at a member, inside."""
        if not self.links:
            return
        for path in [*self.nodes, *self.links]:
            if any(parent in self.links for parent in path.parents):
                name = self.links[path][0] if path in self.links else str(path)
                raise self.refuse(name, "path goes through a symlink")
        for path, (name, target) in self.links.items():
            end = self.resolve(path, name, target)
            if end is None:
                raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: it resolves "
                                       "outside the folder (following the archive's own links)")
            if end not in self.nodes:
                raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: it resolves "
                                       f"to {str(end)!r}, which the archive does not contain")

    def resolve(self, path: PurePosixPath, name: str, target: str) -> PurePosixPath | None:
        """Where symlink `path` -> `target` ends after extraction (relative to the root); None if outside."""
        if target.startswith("/"):
            return None
        todo = list(reversed(target.split("/")))
        here = list(path.parent.parts)
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not here:
                    return None
                here.pop()
                continue
            here.append(part)
            link = self.links.get(PurePosixPath(*here))
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise AcquisitionError(f"{self.archive}: refusing symlink {name!r} -> {target!r}: more "
                                           f"than {MAX_LINK_HOPS} links to follow (a loop?)")
                here.pop()
                if link[1].startswith("/"):
                    return None
                todo.extend(reversed(link[1].split("/")))
        return PurePosixPath(*here) if here else PurePosixPath(".")


def _check_tar_members(members: list[tarfile.TarInfo], archive: Path, allow_links: bool = False) -> None:
    """Refuse anything that could write outside the destination or is not plain data; links unless
    `allow_links`, and then any link not ending at a member of the archive."""
    tree = _MemberTree(archive)
    for m in members:
        path = _tar_path(m.name, archive)
        if m.isdev():
            raise AcquisitionError(f"{archive}: refusing member {m.name!r}: device file or FIFO")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise AcquisitionError(f"{archive}: refusing member {m.name!r}: unsupported type {m.type!r}")
        if (m.issym() or m.islnk()) and not allow_links:
            raise _no_links(archive, "symlink" if m.issym() else "hard link", m.name, m.linkname)
        tree.add(m, path)
    tree.check()


def _read_tar_members(tf: tarfile.TarFile, archive: Path, limits: _Limits) -> list[tarfile.TarInfo]:
    """All member headers, stopping at the first one beyond the member or byte limit.

    A tar member's header size is exactly what tarfile writes for it, so the sum of the sizes bounds the
    bytes extracted; reading stops before the data of a member that would cross the limit.
    """
    members: list[tarfile.TarInfo] = []
    total = 0
    for m in tf:
        members.append(m)
        if len(members) > limits.max_members:
            raise _too_many(archive, limits.max_members)
        total += m.size if m.isreg() else 0
        if total > limits.max_bytes:
            raise _too_big(archive, limits.max_bytes)
    return members


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


def _describe(err: BaseException) -> str:
    """`Type: message` on one line (tarfile lists each compression it tried on a line of its own)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _corrupt(archive: Path, err: BaseException) -> AcquisitionError:
    if isinstance(err, OSError) and err.errno is not None:  # disk full, permissions: not the archive
        return AcquisitionError(f"{archive}: extraction failed while writing: {err}")
    return AcquisitionError(
        f"{archive}: truncated or corrupt archive ({_describe(err)}); nothing was extracted. "
        "Delete it and download it again (check its MD5 with lrp.datasets.acquire.verify_md5)."
    )


# RuntimeError: zipfile's "encrypted, password required"; NotImplementedError: its unknown compressions
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError,
                   NotImplementedError, RuntimeError)


def _extract_tar(archive: Path, into: Path, progress: bool, limits: _Limits) -> int:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = _read_tar_members(tf, archive, limits)
            _check_tar_end(tf, archive)
            _check_tar_members(members, archive, limits.allow_links)
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


def _check_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    """Normalised path of a zip member; refuse unsafe names, symlinks (zip links live in external_attr,
    with the target as content) and special files."""
    path = _safe_member_path(info.filename, archive)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        with zf.open(info) as f:
            target = f.read(4096).decode("utf-8", "replace")
        raise _no_links(archive, "symlink", info.filename, target)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise AcquisitionError(f"{archive}: refusing member {info.filename!r}: device file, FIFO or socket")
    return path


def _write_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: _ByteBudget) -> None:
    """Write one member as zipfile's own extract would (same bytes and modes), counting the bytes."""
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            budget.take(len(chunk))
            dst.write(chunk)


def _extract_zip(archive: Path, into: Path, progress: bool, limits: _Limits) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise _too_many(archive, limits.max_members)
            paths = [_check_zip_member(zf, info, archive) for info in infos]
            if sum(info.file_size for info in infos) > limits.max_bytes:  # as declared: fail fast
                raise _too_big(archive, limits.max_bytes)
            budget = _ByteBudget(archive, limits.max_bytes)  # as written: the headers may lie
            for info, path in tqdm(list(zip(infos, paths)), desc=f"extract {archive.name}", unit="file",
                                   file=sys.stderr, disable=not progress, mininterval=1.0, leave=False):
                _write_zip_member(zf, info, into.joinpath(*path.parts), budget)
            return len(infos)
    except AcquisitionError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None


def _check_real(folder: Path, expected: str, archive: Path) -> None:
    """Refuse to write into `folder` unless it really is where it seems (no symlink below the destination)."""
    if os.path.realpath(folder) != expected:
        raise AcquisitionError(f"{archive}: refusing to write into {folder}: it resolves to "
                               f"{os.path.realpath(folder)} through a symlink; remove the link and re-run")


def _merge_into(src: Path, dest: Path, archive: Path, real: str | None = None) -> None:
    """Move the tree `src` into the existing folder `dest`; identical files are fine, different ones not.

    Why: VOC trainval and test archives both unpack into VOCdevkit/VOC2007/. Nothing is written through a
    symlink already in `dest` (e.g. `dest/VOCdevkit -> /etc`): every folder written into must resolve to
    its own place below the real `dest` (`real`, its realpath).
    """
    real = os.path.realpath(dest) if real is None else real
    _check_real(dest, real, archive)
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if target.is_symlink():
            raise AcquisitionError(f"{archive}: refusing to extract onto {target}: a symlink (to "
                                   f"{os.readlink(target)!r}) is in the way, and extraction never writes "
                                   f"through links; remove it (or delete {dest}) and re-run")
        if entry.is_dir() and not entry.is_symlink():
            if target.is_dir():
                _merge_into(entry, target, archive, os.path.join(real, entry.name))
                continue
            if target.exists():
                raise AcquisitionError(f"{archive}: cannot extract folder {target}: a file is in the way; "
                                       f"delete {dest} and re-run")
        elif target.exists():
            same = (entry.is_file() and target.is_file() and not entry.is_symlink()
                    and filecmp.cmp(entry, target, shallow=False))
            if not same:
                raise AcquisitionError(f"{archive}: would overwrite {target} with different content; "
                                       f"the folder holds other data: delete {dest} and re-run")
            continue
        os.replace(entry, target)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = True, *,
                 max_bytes: int | None = None, max_members: int | None = None,
                 allow_links: bool = False) -> Path:
    """Extract a tar(.gz/.tgz/.bz2/.xz) or zip archive into folder `dest`; return `dest`.

    Everything is checked first (absolute paths, `..`, device files, truncation, links, size), then
    extracted into a temporary folder next to `dest` and moved into place; the marker
    `dest/.extracted-<archive name>` is written last, so its presence means "complete" and a re-run
    skips the work. If `dest` exists already (a second archive into the same tree) the trees are merged,
    never through a symlink inside `dest`.

    Limits: at most `max_bytes` bytes (default `MAX_EXTRACT_BYTES`, 64 GiB; counted as written for zips)
    in at most `max_members` members (default `MAX_EXTRACT_MEMBERS`). Links: the real VOC/ImageNet
    archives have none, so symlinks and hard links are refused unless `allow_links` (tar only), and then
    each must end, following the archive's other links, at a member inside. Raises `AcquisitionError`
    (naming the archive and member) for any of these; nothing is left extracted then.
    """
    archive, dest = Path(archive), Path(dest)
    limits = _limits(max_bytes, max_members, allow_links)
    marker = dest / f".extracted-{archive.name}"
    if marker.is_file():
        log.info("%s: already extracted into %s (marker %s)", archive, dest, marker.name)
        return dest
    if not archive.is_file():
        raise AcquisitionError(f"{archive}: archive not found; download it first (lrp.datasets.acquire.fetch)")
    if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
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
        n = (_extract_zip if fmt == "zip" else _extract_tar)(archive, tmp, progress, limits)
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
    errors: list[AcquisitionError] = []
    for url in urls:
        try:
            return download(url, dest, md5=spec.md5, retries=retries, backoff=backoff, timeout=timeout,
                            progress=progress)
        except AcquisitionError as e:
            if dest.exists() or len(urls) == 1:
                raise
            errors.append(e)
            log.warning("%s: %s; trying the next mirror", spec.name, e)
    transient = all(isinstance(e, TransientAcquisitionError) for e in errors)
    cls = TransientAcquisitionError if transient else AcquisitionError
    raise cls(f"{spec.name}: every source failed:\n  " + "\n  ".join(map(str, errors)))


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
                    progress: bool = True, max_bytes: int | None = None,
                    max_members: int | None = None) -> Path:
    """Carry out `resolve_dataset_source`: download/extract as needed, check the layout, return the root.

    Archives extract into `extract_to` (several may share it, e.g. VOC trainval + test); downloads go to
    `download_dir` (default: the parent of `extract_to`). `md5`, if given, is checked on the archive.
    `max_bytes` / `max_members` bound the extraction (see `safe_extract`).
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
    safe_extract(archive, extract_to, progress=progress, max_bytes=max_bytes, max_members=max_members)
    return check_layout(extract_to, kind)


def _keyed(err: AcquisitionError, where: str) -> AcquisitionError:
    """`err` prefixed with the config key it came from, of the same class (transient stays transient)."""
    return type(err)(f"{where}: {err}")


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
        raise _keyed(e, f"`{key}` = {source!s}") from None


def prepare_voc(root: str | os.PathLike | None, download: bool = False, key: str = "datasets.voc2007.root",
                *, year: str = "2007", registry: dict[str, ArchiveSpec] | None = None,
                max_bytes: int | None = None, max_members: int | None = None, **kw) -> Path:
    """The `VOCdevkit/VOC<year>` folder for config value `root` (what `lrp.pipeline.data.data` needs).

    `root` is either an extracted tree (the VOC<year> folder, VOCdevkit, or the folder holding VOCdevkit)
    or the folder holding the official tars (trainval + test for 2007). With `download`, missing tars are
    fetched into `root` first. Tars are MD5-checked and extracted into `root` (once: markers), within
    `max_bytes` / `max_members` (see `safe_extract`). `kw` goes to `fetch`/`download` (retries, backoff,
    timeout, progress).
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
                safe_extract(archive, root, progress=kw.get("progress", True), max_bytes=max_bytes,
                             max_members=max_members)
            except AcquisitionError as e:
                raise _keyed(e, f"`{key}` = {root}") from None
    try:
        base = check_layout(root, kind)
    except AcquisitionError as e:
        raise _keyed(e, f"`{key}`") from None
    return base / "VOCdevkit" / f"VOC{year}"


def _require(value, key: str, name: str, entry: str, registry: dict[str, ArchiveSpec]) -> None:
    if value is None:
        raise AcquisitionError(
            f"`{key}.{name}` is not set: ImageNet needs a login at https://image-net.org; download "
            f"{registry[entry].filename} yourself and set the key to it (or to its extracted folder)")


def is_box_csv(boxes) -> bool:
    """Whether the configured ImageNet boxes are Kaggle's LOC_val_solution.csv, which has no image sizes (so
    indexing it needs the images), rather than the official XML files (which the index reads alone)."""
    local = _local_path(str(boxes)) if boxes is not None else None
    return local is not None and local.suffix.lower() == ".csv"


def prepare_imagenet_boxes(boxes: str | os.PathLike | None, key: str = "datasets.imagenet",
                           work_dir: str | os.PathLike = "data/imagenet", *,
                           registry: dict[str, ArchiveSpec] | None = None, **kw) -> Path:
    """The boxes folder (XML) or LOC_val_solution.csv for the config value `boxes`: all the index needs
    (with XML boxes), so the index and the Baseline row can be built before the 6.3 GB of images exist."""
    registry = load_registry() if registry is None else registry
    _require(boxes, key, "boxes", "imagenet_bbox_val", registry)
    if is_box_csv(boxes):
        local = _local_path(str(boxes))
        if not local.is_file():
            raise AcquisitionError(f"`{key}.boxes` = {boxes}: file not found")
        return local
    return _prepare_keyed(boxes, "imagenet_boxes", Path(work_dir) / "boxes", f"{key}.boxes", registry, **kw)


def prepare_imagenet_images(images: str | os.PathLike | None, key: str = "datasets.imagenet",
                            work_dir: str | os.PathLike = "data/imagenet", *,
                            registry: dict[str, ArchiveSpec] | None = None, **kw) -> Path:
    """The val images folder for the config value `images` (extracted under `work_dir`/images if an archive)."""
    registry = load_registry() if registry is None else registry
    _require(images, key, "images", "imagenet_val_images", registry)
    return _prepare_keyed(images, "imagenet_images", Path(work_dir) / "images", f"{key}.images", registry, **kw)


def prepare_imagenet(images: str | os.PathLike | None, boxes: str | os.PathLike | None,
                     key: str = "datasets.imagenet", work_dir: str | os.PathLike = "data/imagenet", *,
                     registry: dict[str, ArchiveSpec] | None = None, **kw) -> tuple[Path, Path]:
    """(images folder, boxes folder or LOC_val_solution.csv) for the config values `images`/`boxes`.

    Each may be an extracted folder, an archive (extracted under `work_dir`/images or /boxes, MD5-checked
    when its name is in the registry) or a URL. `kw` goes to `prepare_dataset` (retries, ..., max_bytes).
    """
    registry = load_registry() if registry is None else registry
    _require(images, key, "images", "imagenet_val_images", registry)
    _require(boxes, key, "boxes", "imagenet_bbox_val", registry)
    image_dir = prepare_imagenet_images(images, key, work_dir, registry=registry, **kw)
    return image_dir, prepare_imagenet_boxes(boxes, key, work_dir, registry=registry, **kw)


# --------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """`python -m lrp.datasets.acquire {list,fetch,extract,prepare} ...`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lrp.datasets.acquire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registry entries")
    p = sub.add_parser("fetch", help="download/copy a registry entry into DEST and verify it")
    p.add_argument("name")
    p.add_argument("dest", help="folder to put the file in")
    p.add_argument("--source", help="local path or URL (required for ImageNet entries)")
    p = sub.add_parser("extract", help="safely extract ARCHIVE into DEST")
    p.add_argument("archive")
    p.add_argument("dest")
    p.add_argument("--allow-links", action="store_true", help="accept tar links that stay inside DEST")
    p.add_argument("--max-bytes", type=int, help=f"extraction limit in bytes (default {MAX_EXTRACT_BYTES})")
    p = sub.add_parser("prepare", help="folder/archive/URL -> checked data folder")
    p.add_argument("source")
    p.add_argument("kind", choices=sorted(LAYOUT_CHECKS))
    p.add_argument("dest", help="folder to extract into")
    p.add_argument("--md5")
    p.add_argument("--max-bytes", type=int, help=f"extraction limit in bytes (default {MAX_EXTRACT_BYTES})")
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
            print(safe_extract(args.archive, args.dest, progress=progress, max_bytes=args.max_bytes,
                               allow_links=args.allow_links))
        else:
            print(prepare_dataset(args.source, args.kind, args.dest, md5=args.md5, progress=progress,
                                  max_bytes=args.max_bytes))
    except AcquisitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
