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
from lrp.io import atomic_path, sha256_file

LRP = Path(__file__).resolve().parents[1]
"""The lrp package folder: the root of the source specs ("pipeline.data:data" is lrp/pipeline/data.py)."""
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pandas", "h5py", "isal", "matplotlib", "pillow", "lxml",
            "snakemake", "protobuf")


def versions() -> dict:
    """Versions of lrp, Python and the packages that shape the numbers (absent ones are left out)."""
    out = {"lrp": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    commit = git_commit(LRP.parent)
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


def stamp(config: dict) -> dict:
    """The attributes an HDF5 output carries: versions and the configuration, as JSON strings."""
    return {"versions": json.dumps(versions(), sort_keys=True),
            "config": json.dumps(config, sort_keys=True, default=str)}


def write_manifest(files: list, config: dict, out_json, root=None, plugins=None) -> dict:
    """provenance.json: versions, the full configuration, {path: {sha256, bytes}} of `files`, and the
    plugin files that defined the analyzers ({spec: {path, sha256}}; `plugins`, default the config's)."""
    root = Path(root) if root else None
    listing = {}
    for f in sorted(map(str, files)):
        key = os.path.relpath(f, root) if root else f
        listing[key] = {"sha256": sha256_file(f), "bytes": os.path.getsize(f)}
    doc = {"versions": versions(), "config": config, "files": listing}
    plugins = config.get("plugins") if plugins is None else plugins
    if plugins:
        from lrp.plugins import manifest

        doc["plugins"] = manifest(plugins)
    with atomic_path(out_json) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    return doc


def source_hash(*specs: str, root=None, plugins=()) -> str:
    """Content hash of the lrp code a pipeline stage runs, for a rule's `params.code` (Snakemake re-runs a job
    whose params changed; by default it only watches the thin script's mtime). See `source_specs`.

    `plugins` (the config's): for a stage that uses the analyzer registry (`lrp.composites`), their files'
    content counts too, so editing your analyzer re-runs its attributions, panels and tables."""
    root = Path(root) if root else LRP
    h = hashlib.sha256()
    used = source_specs(*specs, root=root)
    if plugins and "composites" in {spec.partition(":")[0] for spec in used}:
        from lrp.plugins import digest

        h.update(f"plugins {digest(plugins)}\n".encode())
    for spec in sorted(used):
        module, _, fn = spec.partition(":")
        text, tree, lines = _parsed(_module_path(root, module))
        h.update(f"{spec}\n".encode())
        if not fn:
            h.update(text.encode())
            continue
        defs, used = _closure(tree, fn, module)
        for name in sorted(used):
            node = defs[name]
            h.update(f"{name}\n".encode() + "".join(lines[node.lineno - 1: node.end_lineno]).encode())
    return h.hexdigest()[:16]


def source_specs(*specs: str, root=None) -> set[str]:
    """The code a stage runs, as specs: "module" (a whole file) or "module:function".

    "module:function" is that function plus every top-level function, class or constant of its module it
    refers to, transitively. Every lrp module they import (also lazily, inside a function) is included as a
    whole file, and so are that module's own lrp imports, transitively; the package's `__init__` counts as a
    file but is not followed (it re-exports the engine, which most stages never run). Why functions:
    `lrp.pipeline.stages` holds every stage; editing the report stage must not re-run hours of model training.
    """

    root = Path(root) if root else LRP
    done: set[str] = set()
    todo = list(specs)
    while todo:
        spec = todo.pop()
        if spec in done:
            continue
        done.add(spec)
        module, _, fn = spec.partition(":")
        path = _module_path(root, module)
        tree = _parsed(path)[1]
        is_package = path.name == "__init__.py"
        if not fn:
            if path != root / "__init__.py":
                todo += _module_imports(path, module, root)
            continue
        defs, used = _closure(tree, fn, module)
        for name in used:
            todo += _lrp_imports(defs[name], module, root, is_package)
    return done


def _closure(tree, fn: str, module: str) -> tuple[dict, set[str]]:
    """Top-level definitions of a module, and the names `fn` uses among them, transitively."""
    import ast

    defs = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    defs[target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):  # a module-level import a function uses
            for alias in node.names:
                defs.setdefault((alias.asname or alias.name).split(".")[0], node)
    if fn not in defs or isinstance(defs[fn], (ast.Import, ast.ImportFrom)):
        raise ValueError(f"source_hash: {module} has no top-level {fn!r}")
    todo, used = [fn], set()
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        todo += [g for g in _global_names(defs[name]) if g in defs]
    return defs, used


def _global_names(node) -> set[str]:
    """Names a definition reads that it does not bind itself (its arguments and local variables are not
    references to the module's top-level names of the same spelling)."""
    import ast

    local = set()
    for n in ast.walk(node):
        if isinstance(n, ast.arg):
            local.add(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)) and n is not node:
            local.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            local.update((a.asname or a.name).split(".")[0] for a in n.names)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):  # a constant's own target is not a local
        local = set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local


_PARSED: dict = {}


def _parsed(path: Path):
    """(text, AST, lines) of a source file, the parse cached by content: every rule of a workflow asks for the
    same modules, and Snakemake parses the workflow again in every cluster job."""
    import ast

    text = path.read_text(encoding="utf-8")  # cheap; parsing is what is cached, by content
    key = (str(path), text)
    if key not in _PARSED:
        _PARSED[key] = (text, ast.parse(text), text.splitlines(keepends=True))
    return _PARSED[key]


_IMPORTS: dict = {}


def _module_imports(path: Path, module: str, root: Path) -> list[str]:
    """`_lrp_imports` of a whole module file, cached like `_parsed`."""
    key = (str(path), _parsed(path)[0], module, str(root))
    if key not in _IMPORTS:
        _IMPORTS[key] = _lrp_imports(_parsed(path)[1], module, root, path.name == "__init__.py")
    return _IMPORTS[key]


def _module_path(root: Path, module: str) -> Path:
    if module == "":
        return root / "__init__.py"
    parts = module.split(".")
    path = root.joinpath(*parts[:-1], parts[-1] + ".py")
    if not path.exists():
        path = root.joinpath(*parts, "__init__.py")
    if not path.exists():
        raise ValueError(f"source_hash: no lrp module {module!r} ({path})")
    return path


def _lrp_imports(node, module: str, root: Path, is_package: bool) -> list[str]:
    """lrp modules imported anywhere inside `node` (relative or `lrp.`-absolute), as module specs."""
    import ast

    package = module.split(".") if is_package else module.split(".")[:-1]
    package = [p for p in package if p]
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = package[: len(package) - (n.level - 1)] if n.level > 1 else list(package)
                target = base + (n.module.split(".") if n.module else [])
            elif n.module and (n.module == "lrp" or n.module.startswith("lrp.")):
                target = n.module.split(".")[1:]
            else:
                continue
            mod = ".".join(target)
            out.append(mod)
            for alias in n.names:  # `from . import patterns`: a submodule, if there is one
                sub = ".".join([*target, alias.name])
                if (root.joinpath(*sub.split(".")).with_suffix(".py").exists()
                        or root.joinpath(*sub.split("."), "__init__.py").exists()):
                    out.append(sub)
        elif isinstance(n, ast.Import):
            out += [a.name.split(".", 1)[1] for a in n.names if a.name.startswith("lrp.")]
    return out
