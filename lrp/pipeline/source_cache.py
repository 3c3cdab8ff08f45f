"""The source hashes of the workflow's stages, cached by the state of the code (`workflow/rules/common.smk`).

Why: every Snakemake start (each dry run, each cluster job) computes `params.code` for every rule, which parses
the lrp package (about 1 s). The cache keys the hashes by the content of every lrp source file, the specs and the
plugins' digest, so any edit of any lrp file misses it; a hash computed while a file was edited is returned but not
stored. Its own module, not `lrp.pipeline.provenance`: the attribution stage imports that one, and every change to
a module a stage imports re-runs the stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lrp.io import atomic_path
from lrp.pipeline import provenance


def content_key(root: Path) -> str:
    """sha256 of every .py file under `root` (relative path, length and bytes) and of the hashing code itself
    (lrp.pipeline.provenance, this module and lrp.plugins' digest, which an explicit `root` need not contain)."""
    files = [(f"root/{p.relative_to(root)}", p) for p in sorted(root.rglob("*.py"))]
    files += [(f"hasher/{p.name}", p) for p in (Path(provenance.__file__), Path(__file__),
                                                 provenance.LRP / "plugins.py")]
    h = hashlib.sha256()
    for name, path in files:
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def cached_source_hash(*specs: str, cache, root=None, plugins=()) -> str:
    """`lrp.pipeline.provenance.source_hash(*specs, root=root, plugins=plugins)` through the JSON file `cache`:
    {"code": content key, "hashes": {specs + plugins: hash}}; a cache of another code state, or not of this form,
    is replaced. A write that fails (a read-only folder, a concurrent writer) only loses the cache."""
    from lrp.plugins import digest

    root, cache = Path(root) if root else provenance.LRP, Path(cache)
    code = content_key(root)
    key = json.dumps([sorted(specs), str(root), digest(plugins) if plugins else ""])
    try:
        table = json.loads(cache.read_text())
        hashes = table["hashes"] if table["code"] == code else {}
        if not (isinstance(hashes, dict) and all(isinstance(v, str) for v in hashes.values())):
            hashes = {}
    except (OSError, ValueError, KeyError, TypeError):
        hashes = {}  # none yet, unreadable or another form: recompute (it is only a cache)
    if key in hashes:
        return hashes[key]
    value = provenance.source_hash(*specs, root=root, plugins=plugins)
    if content_key(root) != code or (plugins and digest(plugins) != json.loads(key)[2]):
        return value  # edited while it was being hashed: right for now, but not stored under either state
    hashes[key] = value
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps({"code": code, "hashes": hashes}))
    except OSError:
        pass
    return value
