"""Your own analyzers in the pipeline: import the files or modules listed under `plugins:` in the config.

Why a loader: every Snakemake job is its own process, so an analyzer registered in your own script would
not exist in the jobs. The workflow's config check and every job (`lrp.pipeline.runner`) import the plugins first;
importing a plugin registers its analyzers (`lrp.composites.register` / `register_function`).

A plugin is a Python file (a path ending in .py, relative to the working directory) or the name of an
importable module (e.g. `examples.my_analyzers`: the folder of the Snakefile is on the import path). Every
analyzer it registers records the file (`Analyzer.source`); attribution shards and provenance.json carry
the file's sha256, and editing the file re-runs the stages that use analyzers (`lrp.pipeline.provenance`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from lrp import composites
from lrp.io import sha256_file


class PluginError(ValueError):
    """A plugin that cannot be found, fails to import, or registers nothing usable; names the plugin."""


_LOADED: dict[Path, list[str]] = {}  # plugin file -> the analyzers it registered (a process imports it once)
_LRP = Path(__file__).resolve().parent


def load(plugins, key: str = "plugins") -> list[str]:
    """Import every plugin once per process; returns the names of the analyzers they registered."""
    if isinstance(plugins, str):
        raise PluginError(f"{key}: expected a list of plugins, got the string {plugins!r}")
    names: list[str] = []
    for i, spec in enumerate(plugins or []):
        names += [n for n in _load_one(spec, f"{key}[{i}]") if n not in names]
    return names


def origin(spec: str, key: str = "plugins") -> Path:
    """The file a plugin spec names, found without running it."""
    if not isinstance(spec, str) or not spec:
        raise PluginError(f"{key}: expected a file path or module name, got {spec!r}")
    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PluginError(f"{key}: plugin file {spec!r} does not exist (relative paths start at the "
                              f"working directory, {os.getcwd()})")
        return path.resolve()
    try:
        found = importlib.util.find_spec(spec)
    except Exception as e:  # e.g. a parent package that fails to import
        raise PluginError(f"{key}: cannot locate plugin module {spec!r}: {type(e).__name__}: {e}") from e
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise PluginError(f"{key}: no module named {spec!r} (give a path ending in .py, or a module importable "
                          f"from the Snakefile's folder or PYTHONPATH)")
    return Path(found.origin).resolve()


def sha256(spec: str, key: str = "plugins") -> str:
    return sha256_file(origin(spec, key))


def digest(plugins) -> str:
    """One hash of the plugin files' content, in config order (for rules' `params.code`); where a file
    lies does not count, so moving it re-runs nothing."""
    h = hashlib.sha256()
    for i, spec in enumerate(plugins or []):
        h.update(f"{sha256(spec, f'plugins[{i}]')}\n".encode())
    return h.hexdigest()[:16]


def manifest(plugins) -> dict:
    """{spec: {path, sha256}} for provenance.json."""
    return {spec: {"path": str(origin(spec)), "sha256": sha256(spec)} for spec in plugins or []}


def source_attrs(name: str) -> dict:
    """HDF5 attributes naming the plugin file an analyzer came from (none for built-ins)."""
    source = composites.get(name).source
    if not source:
        return {}
    return {"analyzer_source": source,
            "analyzer_source_sha256": sha256_file(source)}


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _load_one(spec: str, key: str) -> list[str]:
    path = origin(spec, key)
    if path in _LOADED:
        return _LOADED[path]
    if path.is_relative_to(_LRP):
        raise PluginError(f"{key}: {path} is part of lrp itself, not a plugin")
    if _module_of(path) is not None:  # imported by the caller already: its analyzers are registered
        names = _registered_by(path)
        if not names:
            raise PluginError(f"{key}: plugin {path} was imported before lrp.plugins.load and registered no "
                              f"analyzer (call lrp.composites.register or register_function in the file itself)")
        _LOADED[path] = names
        return names
    before = dict(composites.REGISTRY)
    module_name = None
    try:
        if _is_path(spec) and str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))  # so that it can import the modules beside it
        module_name = _module_name(path) if _is_path(spec) else spec
        if module_name is None:  # not importable by name: a private module name
            module_name = f"lrp_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
            module_spec.loader.exec_module(module)
        else:  # by name, so that a later `import <name>` finds this module instead of running the file again
            importlib.import_module(module_name)
    except Exception as e:
        _undo(before, module_name)  # a half-imported plugin leaves nothing behind
        raise PluginError(f"{key}: importing plugin {path} failed: {type(e).__name__}: {e}") from e
    new = [n for n, a in composites.REGISTRY.items() if before.get(n) is not a and a.source == str(path)]
    problem = _problem(new, before, path)
    if problem:
        _undo(before, module_name)
        raise PluginError(f"{key}: plugin {path} {problem}")
    _LOADED[path] = new
    return new


def _problem(new: list[str], before: dict, path: Path) -> str:
    """Why the analyzers a plugin registered cannot be used ('' if they can)."""
    if not new:
        return ("registers no analyzer (call lrp.composites.register or register_function in the file "
                "itself, at import)")
    replaced = [n for n in new if n in before and before[n].source != str(path)]
    if replaced:
        return f"replaces existing analyzer(s) {replaced}; give yours another name"
    bad = [n for n in new if not composites.NAME_PATTERN.match(n)]
    if bad:
        return (f"registers analyzer name(s) {bad} that cannot be config keys (lower case letters, digits, '_', "
                f"starting with a letter)")
    others = {lab: n for n, lab in composites.analyzers().items() if n not in new}
    labels = [composites.label(n) for n in new]
    others.update({lab: n for n, lab in zip(new, labels) if labels.count(lab) > 1})  # clashes among the new
    clashes = [f"{n} -> {lab!r} (also {others[lab]})" for n, lab in zip(new, labels) if others.get(lab, n) != n]
    if clashes:
        return f"gives labels that other analyzers have ({'; '.join(clashes)}); tables and figures need distinct ones"
    return ""


def _undo(before: dict, module_name: str | None) -> None:
    composites.REGISTRY.clear()
    composites.REGISTRY.update(before)
    if module_name:
        sys.modules.pop(module_name, None)


def _module_name(path: Path) -> str | None:
    """The dotted name under which `path` is importable from sys.path, if it is (None otherwise). Of several
    (the file lies under two sys.path entries), the longest: the package a user imports it from."""
    names = []
    for entry in sys.path:
        try:
            root = Path(entry or os.getcwd()).resolve()
            parts = path.relative_to(root).with_suffix("").parts
        except (ValueError, OSError):
            continue
        if all(p.isidentifier() for p in parts) and all(
                (root.joinpath(*parts[:k]) / "__init__.py").is_file() for k in range(1, len(parts))):
            name = ".".join(parts)
            found = importlib.util.find_spec(name)
            if found is not None and found.origin and Path(found.origin).resolve() == path:
                names.append(name)
    return max(names, key=lambda n: n.count("."), default=None)


def _module_of(path: Path):
    """The module already imported from `path`, if any."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.endswith(path.name) and Path(file).resolve() == path:
            return module
    return None


def _registered_by(path: Path) -> list[str]:
    """Analyzers whose registration the file at `path` called."""
    return [n for n, a in composites.REGISTRY.items() if a.source == str(path)]
