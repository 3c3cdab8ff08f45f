"""The documentation names only things that exist: every `lrp.…` name resolves, every project path exists.

Checked in README.md and docs/**/*.md (docs/reference/ is research notes about other tools, whose `lrp.z`,
`lrp.sequential_preset_a`, `python/modules/…` are iNNvestigate's and the LRP Toolbox's names, not ours):
- (a) dotted names starting with `lrp.` in inline code and code blocks, and the names a code block imports
  (`from lrp.x import a, b`): the longest importable module prefix is imported, the rest looked up with getattr.
  A name in quotes ("lrp.z") is a string, e.g. an iNNvestigate analyzer name, and is not checked;
- (b) repo-relative project paths in inline code and code blocks (lrp/, workflow/, config/, tests/, benchmarks/,
  docs/, envs/, profiles/, examples/, and the top-level files), with an optional `::test_name` (its `def` must
  be in the file; a trailing `*` makes it a prefix). Globs and `{placeholder}` / `<placeholder>` paths are
  skipped; results/ paths are outputs, not checked;
- (c) relative Markdown link targets, resolved against the file that links.

One test reports every broken reference at once, as `file:line: reference: why`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = ("docs/reference/",)
TOP_LEVEL_FILES = ("Snakefile", "Makefile", "README.md", "pyproject.toml")
PROJECT_DIRS = ("lrp", "workflow", "config", "tests", "benchmarks", "docs", "envs", "profiles", "examples")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(`+)(.+?)\1")
NAME = re.compile(r"(?<![\w.'\"/-])lrp(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^\s*from\s+(lrp(?:\.\w+)*)\s+import\s+(.+)$")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*{}<>@+-]*|(?:%s)(?![\w.]))(::[\w*\[\]-]+)?"
                  % ("|".join(PROJECT_DIRS), "|".join(re.escape(f) for f in TOP_LEVEL_FILES)))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".h5", ".csv", ".tsv", ".txt", ".smk", ".toml", ".png",
                 ".pt", ".html", ".sh")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if not f.relative_to(ROOT).as_posix().startswith(SKIP_DIRS)]


def code_pieces(text: str):
    """(line number, code text, in a code block?) for each line of a code block and each inline code span."""
    in_block = False
    pending: list[tuple[int, str]] = []  # a multi-line `from lrp.x import (` in a code block
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            if pending or re.match(r"^\s*from\s+lrp[\w.]*\s+import\s*\($", line):
                pending.append((n, line))
                if ")" in line:
                    yield pending[0][0], " ".join(s.strip() for _, s in pending).replace("( ", "("), True
                    pending = []
                continue
            yield n, line, True
        else:
            for m in INLINE.finditer(line):
                yield n, m.group(2), False


# ---------------------------------------------------------------------------------------------------
# (a) names


_IMPORTED: dict[str, object] = {}


def _import(name: str):
    if name not in _IMPORTED:
        try:
            _IMPORTED[name] = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 (a module that exists but cannot be imported is the finding)
            _IMPORTED[name] = e
    return _IMPORTED[name]


def resolve(dotted: str) -> str | None:
    """None if `dotted` names a module or an attribute of one; else why not."""
    parts = dotted.split(".")
    obj = _import(parts[0])
    done = parts[0]
    for part in parts[1:]:
        if isinstance(obj, Exception):
            return f"import of {done} failed: {type(obj).__name__}: {obj}"
        nxt = done + "." + part
        if isinstance(obj, types.ModuleType) and hasattr(obj, "__path__") and _is_submodule(nxt):
            obj = _import(nxt)
        else:
            try:
                obj = getattr(obj, part)
            except AttributeError:
                if inspect.isclass(obj) and (part in getattr(obj, "__dataclass_fields__", {})
                                             or part in getattr(obj, "__annotations__", {})):
                    return None  # a field of a dataclass / annotated class
                kind = "module" if isinstance(obj, types.ModuleType) else type(obj).__name__
                return f"{kind} {done} has no attribute or submodule {part!r}"
            except Exception as e:  # noqa: BLE001 (a lazy attribute whose import fails)
                return f"{done}.{part} failed: {type(e).__name__}: {e}"
        done = nxt
    if isinstance(obj, Exception):
        return f"import of {done} failed: {type(obj).__name__}: {obj}"
    return None


def _is_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def names_in(code: str, in_block: bool) -> list[str]:
    found = []
    m = FROM_IMPORT.match(code) if in_block else None
    if m:
        module, what = m.group(1), m.group(2).split("#")[0].strip().strip("()")
        for item in what.split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "*":
                found.append(f"{module}.{item}")
    for m in NAME.finditer(code):
        name = m.group(0)
        if name.endswith(FILE_SUFFIXES) or code[m.end():m.end() + 1] in ("/",):
            continue  # a file name (envs/lrp.yaml is caught by the path check)
        found.append(name)
    return found


# ---------------------------------------------------------------------------------------------------
# (b) paths, (c) links


def check_path(path: str, node: str | None) -> str | None:
    path = path.rstrip(".,;:)")
    if any(c in path for c in "*?[{<") or not path:
        return None  # a glob or a placeholder
    target = ROOT / path
    if not target.exists():
        return "no such file or folder"
    if node:
        if not target.is_file():
            return f"{path} is not a file, so it has no {node}"
        test = node[2:]
        prefix = test.endswith("*")
        test = test.rstrip("*").split("[")[0]
        end = "" if prefix else r"\b"
        pattern = r"^\s*(async\s+)?(def|class)\s+" + re.escape(test) + end
        if not re.search(pattern, target.read_text(encoding="utf-8"), re.M):
            return f"{path} has no def/class {test}{'*' if prefix else ''}"
    return None


def check_link(doc: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None  # a URL, mailto:, or an anchor in the same page
    target = target.split("#")[0]
    if not target or any(c in target for c in "*{<"):
        return None
    if target.startswith("results/"):
        return None
    return None if (doc.parent / target).exists() else "link target does not exist (relative to this file)"


# ---------------------------------------------------------------------------------------------------


def broken_references() -> list[str]:
    problems = []
    for doc in doc_files():
        rel = doc.relative_to(ROOT).as_posix()
        text = doc.read_text(encoding="utf-8")
        seen = set()
        for n, code, in_block in code_pieces(text):
            for name in names_in(code, in_block):
                if (n, name) in seen:
                    continue
                seen.add((n, name))
                why = resolve(name)
                if why:
                    problems.append(f"{rel}:{n}: `{name}`: {why}")
            for m in PATH.finditer(code):
                if (n, m.group(0)) in seen:
                    continue
                seen.add((n, m.group(0)))
                why = check_path(m.group(1), m.group(2))
                if why:
                    problems.append(f"{rel}:{n}: `{m.group(0)}`: {why}")
        in_block = False
        for n, line in enumerate(text.splitlines(), 1):
            if FENCE.match(line):
                in_block = not in_block
                continue
            if in_block:
                continue
            for m in LINK.finditer(INLINE.sub("", line)):
                why = check_link(doc, m.group(1))
                if why:
                    problems.append(f"{rel}:{n}: link ({m.group(1)}): {why}")
    return problems


def test_the_checker_finds_broken_references():
    """The checks can fail: a made-up name, path, test and link are each reported."""
    assert resolve("lrp.attribute") is None and resolve("lrp.models.load") is None
    assert resolve("lrp.no_such_name") and resolve("lrp.composites.no_such_name")
    assert check_path("lrp/rules.py", None) is None and check_path("lrp/no_such_file.py", None)
    assert check_path("tests/project/test_docs_references.py", "::test_the_checker_finds_broken_references") is None
    assert check_path("tests/project/test_docs_references.py", "::test_the_checker*") is None
    assert check_path("tests/project/test_docs_references.py", "::test_no_such_test")
    assert check_path("results/{dataset}/x.h5", None) is None and check_path("docs/*.md", None) is None
    assert check_link(ROOT / "docs" / "plugins.md", "../README.md") is None
    assert check_link(ROOT / "docs" / "plugins.md", "README.md")
    code = 'from lrp.composites import Analyzer, register  # x'
    assert names_in(code, True) == ["lrp.composites.Analyzer", "lrp.composites.register", "lrp.composites"]
    assert names_in('create_analyzer("lrp.sequential_preset_a")', False) == []
    assert names_in("envs/lrp.yaml", False) == []


def test_docs_references_resolve():
    problems = broken_references()
    assert not problems, f"{len(problems)} broken reference(s) in the docs:\n" + "\n".join(problems)
