"""The package's layering, as docs/architecture.md draws it: each layer imports only the layers beneath it.

    engine (lrp/*.py) <- {datasets, models, storage, evaluation} <- {training, report} <- pipeline <- workflow

Why a test: a model module reaching into the data code, or the report into the pipeline, is how a flat package
grew into a hub before; and `import lrp` must stay light (torch and numpy only)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LRP = Path(__file__).resolve().parents[2] / "lrp"
LAYER = {"": 0, "datasets": 1, "models": 1, "storage": 1, "evaluation": 1, "training": 2, "report": 2, "pipeline": 3}


def _package(module: str) -> str:
    """'' for the engine (lrp/*.py), else the subpackage: 'datasets', 'models', ..."""
    parts = module.split(".")
    if len(parts) == 2 and (LRP / parts[1]).is_dir():  # a subpackage's own __init__ belongs to it
        return parts[1]
    return parts[1] if len(parts) > 2 else ""


def _imports(path: Path) -> set[str]:
    """lrp modules imported anywhere in a file (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lrp":
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lrp")
    return {m for m in out if (LRP.parent / (m.replace(".", "/") + ".py")).exists()
            or (LRP.parent / m.replace(".", "/") / "__init__.py").exists()}


MODULES = sorted(p for p in LRP.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(LRP)) for p in MODULES])
def test_imports_go_down_the_layers(path):
    module = ".".join(("lrp", *path.relative_to(LRP).with_suffix("").parts)).removesuffix(".__init__")
    if module == "lrp":
        return  # the package's face re-exports the engine
    own = _package(module)
    up = {m for m in _imports(path) if m != "lrp" and LAYER[_package(m)] > LAYER[own]}
    assert not up, f"{module} (layer {LAYER[own]}) imports {sorted(up)} from a higher layer"
    if LAYER[own] == 1:  # datasets, models, storage, evaluation: beside each other, not on top of each other...
        across = {_package(m) for m in _imports(path)} - {"", own}
        # models read class lists (VOC classes, ImageNet WNIDs) from datasets; they do not acquire or index data
        allowed = {"storage": {"datasets"}, "evaluation": {"storage"}, "models": {"datasets"}, "datasets": set()}[own]
        assert across <= allowed, f"{module} imports from {sorted(across - allowed)}"


def test_import_lrp_needs_only_torch_and_numpy():
    code = ("import sys, lrp; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'h5py', 'pandas', 'scipy', 'matplotlib', 'PIL', 'lxml', 'yaml', 'snakemake', 'torchvision'}); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import lrp also imports {out}"
