"""Small file helpers shared by every writer: outputs appear complete or not at all (atomic files and
folders), JSON, checksums (sha256, md5: written once, here), progress lines on stderr."""

from __future__ import annotations

import contextlib
import errno
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
