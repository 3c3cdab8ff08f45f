"""What made a result: software versions, the configuration, and a checksum of every output file.

Why: a Table 1 handed to a colleague must say which code, which settings and which inputs produced it;
file modification times and a README do not survive copying. HDF5 outputs carry these as attributes;
every output of a dataset is listed with its sha256 in `results/{dataset}/provenance.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from lrp import __version__
from lrp.io import atomic_path

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pandas", "h5py", "matplotlib", "pillow", "lxml",
            "snakemake", "protobuf")


def versions() -> dict:
    """Versions of lrp, Python and the packages that shape the numbers (absent ones are left out)."""
    out = {"lrp": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    commit = git_commit(Path(__file__).resolve().parents[1])
    if commit:
        out["lrp_bench_commit"] = commit
    return out


def git_commit(repo: Path) -> str | None:
    """HEAD of the checkout the code runs from (+ '-dirty' with local edits), or None outside git."""
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamp(config: dict) -> dict:
    """The attributes an HDF5 output carries: versions and the configuration, as JSON strings."""
    return {"versions": json.dumps(versions(), sort_keys=True),
            "config": json.dumps(config, sort_keys=True, default=str)}


def write_manifest(files: list, config: dict, out_json, root=None) -> dict:
    """provenance.json: versions, the full configuration, and {path: {sha256, bytes}} of `files`."""
    root = Path(root) if root else None
    listing = {}
    for f in sorted(map(str, files)):
        key = os.path.relpath(f, root) if root else f
        listing[key] = {"sha256": sha256(f), "bytes": os.path.getsize(f)}
    doc = {"versions": versions(), "config": config, "files": listing}
    with atomic_path(out_json) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    return doc
