"""Get one file onto disk, from http(s) or a local path, and let it reach its final name only when verified.

Why this module is strict: the archives are large (ImageNet val 6.3 GB), hosts are flaky, and a truncated or
wrong file that *looks* finished silently corrupts every number downstream. So bytes go to `<dest>.part`
(resumed with HTTP Range requests, bounded retries with backoff), and the file only appears under its final
name after its size is complete and its MD5 matches (without a known MD5: it is no web page and, under an
archive name, a readable archive). Raises `AcquisitionError` saying which file, what is wrong and what to do;
`TransientAcquisitionError` after the retries are spent on network failures (worth retrying later).

Entry points: `download`, `verify_md5`, `normalise_md5`, `local_path` (file:// and plain paths).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from lrp.datasets.acquire_errors import AcquisitionError, TransientAcquisitionError
from lrp.datasets.extract import format_by_name, unreadable_archive
from lrp.io import CHUNK, md5_file

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
USER_AGENT = "lrp-bench-acquire/1 (+urllib)"
RETRIED_HTTP_CODES = (408, 429)  # besides 5xx: the server asks to come back later
WEB_PAGE_HEAD = 4096  # bytes of a download read to tell a web page from the file
HTML_MARKERS = (b"<!doctype html", b"<html")


class _Transient(Exception):
    """A failure worth retrying (dropped connection, truncated body, 5xx)."""


# --------------------------------------------------------------------------------------------------
# checksums


def normalise_md5(md5: str | None, where: str = "md5") -> str | None:
    if md5 is None:
        return None
    value = str(md5).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise AcquisitionError(f"{where}: {md5!r} is not an MD5 checksum (expected 32 hex digits)")
    return value


def verify_md5(path: str | os.PathLike, expected: str) -> str:
    """Raise `AcquisitionError` unless `path` has MD5 `expected`; return the actual digest."""
    expected = normalise_md5(expected)
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


def local_path(url: str) -> Path | None:
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


def _html_start(head: bytes) -> tuple[str, bool] | None:
    """The HTML start tag that `head` (a file's first bytes) opens with, and whether a prologue (an XML
    declaration, processing instruction or comment) came before it; None if `head` is not HTML.

    Why so lenient: error and login pages start with a byte-order mark, blank lines, `<?xml ...?>` (XHTML)
    or an HTML comment as often as with `<!DOCTYPE html>`; the real files (tar, gzip, zip, HDF5) never do.
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte-order mark
        head = head.decode("utf-16", "replace").encode("utf-8", "replace")
    head = head.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    prologue = False
    while head.startswith((b"<?", b"<!--")):
        end = b"?>" if head.startswith(b"<?") else b"-->"
        cut = head.find(end)
        if cut < 0:
            return None  # a prologue longer than the head read: not worth reading on
        head, prologue = head[cut + len(end):].lstrip(), True
    if head.lower().startswith(HTML_MARKERS):
        return head[:14].decode("ascii", "replace"), prologue
    return None


def _web_page(path: Path, content_type: str) -> str | None:
    """Why the download is a web page (a login or error page served instead of the file), or None."""
    if content_type.split(";")[0].strip().lower() == "text/html":
        return "Content-Type: text/html"
    with open(path, "rb") as f:
        start = _html_start(f.read(WEB_PAGE_HEAD))
    if start is None:
        return None
    tag, prologue = start
    return f"it starts with {tag!r}" + (" after an XML declaration or comment" if prologue else "")


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
        who = "the server returned" if local_path(url) is None else "the source is"
        raise _refuse_part(part, (
            f"{dest}: {who} a web page ({page}), not the file: probably a login or error page. Nothing was "
            f"kept. Download the file yourself (in a browser, logged in if needed) and give its local path, "
            f"or check the URL {url}."))
    fmt = format_by_name(dest)
    problem = unreadable_archive(part, fmt) if fmt else None
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
    md5 = normalise_md5(md5)
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
    local = local_path(url)
    if local is not None:
        _copy_local(local, part, progress)
        content_type = ""
    else:
        content_type = _http_download(url, part, retries, backoff, timeout, progress)
    _verify_part(part, dest, url, md5, content_type)
    os.replace(part, dest)
    return dest

