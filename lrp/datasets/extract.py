"""Extract a tar or zip archive safely and completely, or not at all.

Why: the archives are untrusted input, and an archive that *looks* extracted but is not (a truncated
download, a crash half-way) silently corrupts every number downstream. So everything is checked first
(members by `lrp.datasets.archive_members`; truncation; sizes against `MAX_EXTRACT_BYTES` and
`MAX_EXTRACT_MEMBERS`, bombs, including tar headers that declare huge long names or pax records and data
after the end-of-archive marker), then extracted into a temporary folder and moved into place; the marker
`<dest>/.extracted-<archive name>` is written last. Raises `AcquisitionError` naming the archive (and the
member) for anything that does not fit.

Entry points: `safe_extract`, `marker_path`, `archive_format` / `format_by_name` / `unreadable_archive`
(what kind of archive a file is, and whether it is complete).
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from lrp.datasets.acquire_errors import AcquisitionError
from lrp.datasets.archive_members import MARKER_PREFIX, check_tar_members, check_zip_members
from lrp.io import CHUNK, atomic_path

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
# Extraction limits (keywords `max_bytes` / `max_members` of `safe_extract` and the prepare_* functions; None
# means these module values, so a caller may also raise them here). The largest real archive, ImageNet val,
# unpacks to 6.3 GB in 50,000 files; VOC2012 trainval to 2 GB in about 33,000.
MAX_EXTRACT_BYTES = 64 << 30
MAX_EXTRACT_MEMBERS = 2_000_000
# A GNU long-name/long-link or pax header's payload, which tarfile reads into memory whole: the real archives
# have none, and a long name is at most 4 KiB (archive_members.MAX_MEMBER_NAME_BYTES).
MAX_TAR_HEADER_BYTES = 1 << 20
# Zero padding that tar writers add after the end-of-archive marker (to a whole record: 10 KiB by default, up
# to 1 MiB with GNU tar's largest blocking factor): not counted against `max_bytes`; anything beyond it is.
TAR_PADDING_BYTES = 1 << 20


def marker_path(dest: str | os.PathLike, archive_name: str) -> Path:
    """Where `safe_extract` records that archive `archive_name` was extracted completely into `dest`."""
    return Path(dest) / f"{MARKER_PREFIX}{archive_name}"


class _OversizedTarHeader(tarfile.TarError):
    """A GNU long-name/long-link or pax header declaring a payload above `MAX_TAR_HEADER_BYTES`."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header reader, refusing header payloads above `MAX_TAR_HEADER_BYTES` before reading them.

    Why: tarfile reads a long-name or pax payload into memory whole, at the size its header declares: a
    300-byte bz2 file makes it allocate gigabytes before any member is seen, let alone counted.
    """

    def _check_payload(self, kind: str) -> None:
        if self.size > MAX_TAR_HEADER_BYTES:
            raise _OversizedTarHeader(
                f"refusing member {self.name!r} (a {kind} header at byte {self.offset:,}): it declares "
                f"{self.size:,} bytes of header data, beyond the limit of {MAX_TAR_HEADER_BYTES:,} "
                "(lrp.datasets.extract.MAX_TAR_HEADER_BYTES); real archives have none this large")

    def _proc_gnulong(self, tarfile_):
        self._check_payload("GNU long-name" if self.type == tarfile.GNUTYPE_LONGNAME else "GNU long-link")
        return super()._proc_gnulong(tarfile_)

    def _proc_pax(self, tarfile_):
        self._check_payload("pax global" if self.type == tarfile.XGLTYPE else "pax extended")
        return super()._proc_pax(tarfile_)


def _open_tar(path: Path) -> tarfile.TarFile:
    """`tarfile.open(path, "r:*")` with header payloads bounded (`_BoundedTarInfo`)."""
    return tarfile.open(path, "r:*", tarinfo=_BoundedTarInfo)


def format_by_name(path: Path) -> str | None:
    """'tar' or 'zip' by the file name's ending, else None."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def archive_format(path: Path) -> str | None:
    """'tar' or 'zip' by file name, else by content; None if neither."""
    fmt = format_by_name(path)
    if fmt is not None:
        return fmt
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with _open_tar(path):
            return "tar"
    except _OversizedTarHeader:
        return "tar"  # a hostile one: extracting it says why it is refused
    except (tarfile.TarError, OSError, EOFError):
        return None


def unreadable_archive(path: Path, fmt: str) -> str | None:
    """Why `path` is not a complete, readable archive of format `fmt` ('tar' or 'zip'); None if it is one."""
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        else:
            with _open_tar(path) as tf:
                budget = _ByteBudget(path, MAX_EXTRACT_BYTES)
                budget.take(sum(m.size for m in tf.getmembers() if m.isreg()))
                _check_tar_end(tf, path, budget)
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
        f"safe_extract(..., {keyword}=N), the same keyword of the prepare_* functions, or "
        f"lrp.datasets.extract.{constant}."
    )


def _too_big(archive: Path, limit: int) -> AcquisitionError:
    return _over_limit(archive, f"it unpacks to more than {limit:,} bytes", "max_bytes", limit,
                       "MAX_EXTRACT_BYTES")


def _too_many(archive: Path, limit: int) -> AcquisitionError:
    return _over_limit(archive, f"it has more than {limit:,} members", "max_members", limit,
                       "MAX_EXTRACT_MEMBERS")


class _ByteBudget:
    """Bytes actually written (or read, for a tar's tail) so far, against the limit: zip headers may lie
    about sizes, and a tar's data after its end-of-archive marker belongs to no member."""

    def __init__(self, archive: Path, limit: int):
        self.archive, self.limit, self.used = archive, limit, 0

    def take(self, n: int) -> None:
        """Count `n` more bytes; raises `AcquisitionError` beyond the limit."""
        self.used += n
        if self.used > self.limit:
            raise _too_big(self.archive, self.limit)


def _read_tar_members(tf: tarfile.TarFile, archive: Path, limits: _Limits) -> tuple[list[tarfile.TarInfo],
                                                                                     _ByteBudget]:
    """All member headers, stopping at the first one beyond the member or byte limit; also the byte budget
    they used (the data after the end-of-archive marker is counted against the rest).

    A tar member's header size is exactly what tarfile writes for it, so the sum of the sizes bounds the
    bytes extracted; reading stops before the data of a member that would cross the limit.
    """
    members: list[tarfile.TarInfo] = []
    budget = _ByteBudget(archive, limits.max_bytes)
    for m in tf:
        members.append(m)
        if len(members) > limits.max_members:
            raise _too_many(archive, limits.max_members)
        budget.take(m.size if m.isreg() else 0)
    return members, budget


def _check_tar_end(tf: tarfile.TarFile, archive: Path, budget: _ByteBudget) -> None:
    """Require the end-of-archive zero block and a readable tail, counting the tail beyond
    `TAR_PADDING_BYTES` against `budget`.

    Why: tarfile treats a file cut at a header boundary as a normal end, so a truncated download would
    otherwise extract "successfully" with members missing. And the tail must be read to the end (a corrupt
    compressed stream only fails there), so gigabytes of compressed zeros after the marker would cost as
    much as members do, without being counted as members.
    """
    f = tf.fileobj
    f.seek(tf.offset)
    block = f.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise EOFError(f"no end-of-archive marker after the last member (byte {tf.offset})")
    tail = len(block)
    while chunk := f.read(CHUNK):  # a truncated/corrupt compressed stream fails here
        counted = max(0, tail + len(chunk) - TAR_PADDING_BYTES) - max(0, tail - TAR_PADDING_BYTES)
        tail += len(chunk)
        try:
            budget.take(counted)
        except AcquisitionError:
            last = tf.members[-1].name if tf.members else None
            what = (f"{tail - TAR_PADDING_BYTES:,}+ bytes of data follow the end-of-archive marker (after the "
                    f"last member {last!r}): with the members it unpacks to more than {budget.limit:,} bytes")
            raise _over_limit(archive, what, "max_bytes", budget.limit, "MAX_EXTRACT_BYTES") from None


def _describe(err: BaseException) -> str:
    """`Type: message` on one line (tarfile lists each compression it tried on a line of its own)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _corrupt(archive: Path, err: BaseException) -> AcquisitionError:
    if isinstance(err, OSError) and err.errno is not None:  # disk full, permissions: not the archive
        return AcquisitionError(f"{archive}: extraction failed while writing: {err}")
    return AcquisitionError(
        f"{archive}: truncated or corrupt archive ({_describe(err)}); nothing was extracted. "
        "Delete it and download it again (check its MD5 with lrp.datasets.download.verify_md5)."
    )


# RuntimeError: zipfile's "encrypted, password required"; NotImplementedError: its unknown compressions
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError,
                   NotImplementedError, RuntimeError)


def _extract_tar(archive: Path, into: Path, progress: bool, limits: _Limits) -> int:
    try:
        with _open_tar(archive) as tf:
            members, budget = _read_tar_members(tf, archive, limits)
            _check_tar_end(tf, archive, budget)
            check_tar_members(members, archive, limits.allow_links)
            bar = tqdm(members, desc=f"extract {archive.name}", unit="file", file=sys.stderr,
                       disable=not progress, mininterval=1.0, leave=False)
            # Our checks above are the contract; the stdlib 'data' filter re-checks at write time
            # against the real file system (symlinks already extracted) and drops setuid bits.
            tf.extractall(into, members=bar, filter="data")
            return len(members)
    except AcquisitionError:
        raise
    except _OversizedTarHeader as e:
        raise AcquisitionError(f"{archive}: {e}; nothing was extracted") from None
    except tarfile.FilterError as e:
        raise AcquisitionError(f"{archive}: refusing unsafe member: {e}") from None
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None


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
            paths = check_zip_members(zf, infos, archive)
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
    marker = marker_path(dest, archive.name)
    if marker.is_file():
        log.info("%s: already extracted into %s (marker %s)", archive, dest, marker.name)
        return dest
    if not archive.is_file():
        raise AcquisitionError(f"{archive}: archive not found; download it first (lrp.datasets.acquire.fetch)")
    if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
        raise AcquisitionError(f"{dest}: extraction target exists and is not a folder; remove it")
    fmt = archive_format(archive)
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
