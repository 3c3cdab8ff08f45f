"""Small file helpers shared by every writer: outputs appear complete or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Why: Snakemake (and users) treat an existing file as finished work, so a killed or failed writer must
    never leave a half-written file under the final name. Temporaries a killed writer of the same output
    left behind are removed first (one job per output, as Snakemake guarantees).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer of the same output
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
