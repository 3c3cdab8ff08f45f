"""Small file helpers shared by every writer: outputs appear complete or not at all (atomic files and
folders), JSON, checksums (sha256, md5: written once, here), progress lines on stderr."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# Write failures that say nothing about which file they hit (a `write()`/`close()` sets no filename):
# `atomic_path` and `atomic_dir` name their output in them, so that the runner's one-line error can.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def _name_output(e: OSError, path: Path) -> None:
    if e.errno in _WRITE_ERRNOS and e.filename is None:
        e.filename = str(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Why: Snakemake (and users) treat an existing file as finished work, so a killed or failed writer must
    never leave a half-written file under the final name. Temporaries a killed writer of the same output
    left behind are removed first (one job per output, as Snakemake guarantees). A disk-full (or other
    write) OSError that names no file gets `path` as its filename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer of the same output
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _name_output(e, path)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _swap_in(new: Path, path: Path, old: Path) -> None:
    """Rename `new` to `path`, moving an existing `path` to `old` first (and back if the rename fails)."""
    if path.exists() or path.is_symlink():
        os.rename(path, old)
    try:
        os.rename(new, path)
    except OSError:
        if old.exists() or old.is_symlink():
            os.rename(old, path)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary sibling folder; put it in place of the folder `path` only if the block succeeds.

    Why: a data set generated or extracted into its final folder and then interrupted looks like a smaller
    but complete data set. Here a failure removes the temporary folder and leaves `path` as it was (absent,
    or the previous complete version); success swaps the new folder in (the old one goes aside first, then
    is deleted). Leftovers of a killed writer of the same folder are removed first. Raises what the block
    raises (a write OSError that names no file gets `path`), or OSError if the swap itself fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.old-*")):
        _remove_tree(stale)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, path, old)
    except OSError as e:
        _name_output(e, path)
        raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists() or leftover.is_symlink():
                _remove_tree(leftover)


CHUNK = 1 << 20  # bytes read and written at a time (checksums, downloads, extraction)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = CHUNK) -> str:
    """Hex digest of a file read in chunks (archives and weight files are larger than memory allows).

    Why one function: every checksum the project records or checks (weights, manifests, archives,
    plugins) is computed the same way. Raises OSError if the file cannot be read.
    """
    h = hashlib.new(algorithm, usedforsecurity=False) if algorithm == "md5" else hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (weights, provenance manifests, plugins)."""
    return file_digest(path, "sha256")


def md5_file(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file: the checksum the VOC/ImageNet/Keras publishers give (not a security check)."""
    return file_digest(path, "md5")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
