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


def source_hash(*specs: str, root=None) -> str:
    """Content hash of the lrp code a pipeline stage runs, for a rule's `params.code` (Snakemake re-runs a job
    whose params changed; by default it only watches the thin script's mtime).

    A spec is a module ("models.demo": the whole file) or "module:function" — that function plus every
    top-level function, class or constant of the same module it refers to, transitively. Why functions:
    `lrp.stages` holds every stage; editing the report stage must not re-run hours of model training.
    """
    import ast

    root = Path(root) if root else Path(__file__).parent
    h = hashlib.sha256()
    for spec in sorted(specs):
        module, _, fn = spec.partition(":")
        parts = module.split(".")
        path = root.joinpath(*parts[:-1], parts[-1] + ".py")
        if not path.exists():
            path = root.joinpath(*parts, "__init__.py")
        if not path.exists():
            raise ValueError(f"source_hash: no lrp module {module!r} ({path})")
        text = path.read_text(encoding="utf-8")
        if not fn:
            h.update(text.encode())
            continue
        tree = ast.parse(text)
        defs = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(target, ast.Name):
                        defs[target.id] = node
        if fn not in defs:
            raise ValueError(f"source_hash: {module} has no top-level {fn!r}")
        todo, seen = [fn], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
        for name in sorted(seen):
            h.update(f"{module}:{name}\n".encode() + ast.get_source_segment(text, defs[name]).encode())
    return h.hexdigest()[:16]
