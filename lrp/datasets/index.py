"""Shared annotation model and the evaluation-unit index both datasets produce.

An index row is one evaluation unit (image, class) with its union box mask summarised in model-input
coordinates. Why a table: every later step (image shards, attribution, metrics, the uniform baseline) is
keyed by `sample_id`, and the CSV can be inspected and diffed by hand.

Also holds the XML helpers shared by the VOC and ImageNet parsers (same <annotation> schema, different
coordinate base), so both report errors the same way: file name and line, and the path checks that keep
every image path taken from a data file inside the dataset's image folder.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from lxml import etree
from PIL import Image

from lrp.datasets.boxes import make_transform, union_mask
from lrp.datasets.catalog import wnid_index
from lrp.io import atomic_path

__all__ = [
    "AnnotationError", "Obj", "Annotation", "INDEX_COLUMNS", "parse_annotation_xml", "unit_row",
    "finish_index", "index_image_folder", "write_index", "read_index", "baseline_stats", "write_baseline",
    "check_on_error", "UnsafePathError", "unsafe_path_reason", "check_relative_path", "resolve_inside",
    "MAX_COORDINATE", "check_coordinate",
]

INDEX_COLUMNS = [
    "sample_id", "image_id", "split", "image_file", "class_index", "class_name",
    "width", "height", "n_boxes", "box_fraction", "boxes", "source_boxes", "difficult",
]
_DTYPES = {
    "sample_id": str, "image_id": str, "split": str, "image_file": str, "class_index": np.int64,
    "class_name": str, "width": np.int64, "height": np.int64, "n_boxes": np.int64,
    "box_fraction": np.float64, "boxes": str, "source_boxes": str, "difficult": str,
}


class AnnotationError(ValueError):
    """Bad annotation input; the message starts with `path:line:` so editors and humans can jump there."""

    def __init__(self, path, line: int | None, message: str):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Obj:
    """One annotated object; `box` is half-open [x0, y0, x1, y1) in original-image pixels."""

    name: str
    difficult: bool
    box: tuple[float, float, float, float]
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Annotation:
    """One image's annotation. `filename` is relative to the dataset's image folder."""

    image_id: str
    filename: str
    width: int
    height: int
    objects: list[Obj]
    path: str = field(default="", compare=False)


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


# ---------------------------------------------------------------- paths from data files
_DRIVE = re.compile(r"[A-Za-z]:")
_PATH_RULE = ("paths from data files (annotation <filename>, CSV ImageId, image-set ids, the index's image_file) "
              "must be relative to the dataset's folder and stay inside it")


class UnsafePathError(ValueError):
    """A path from a data file that would lead outside the dataset's image folder (see resolve_inside)."""


def unsafe_path_reason(value: str) -> str | None:
    """Why `value` is not a plain relative POSIX path that stays below its folder, or None if it is one.

    Lexical only (no file system access), so the index can check annotations before the images exist.
    Refused: NUL bytes, backslashes and drive letters (Windows paths), absolute paths, '..' components,
    and paths that name no file ('', '.', './').
    """
    if "\x00" in value:
        return "contains a NUL byte"
    if "\\" in value:
        return "contains a backslash (a Windows path separator)"
    if _DRIVE.match(value):
        return "starts with a drive letter"
    if value.startswith("/"):
        return "is an absolute path"
    parts = value.split("/")
    if ".." in parts:
        return "has a '..' component"
    if all(p in ("", ".") for p in parts):
        return "names no file"
    return None


def check_relative_path(value: str, source, line: int | None, what: str) -> str:
    """Return `value` if unsafe_path_reason accepts it; else raise AnnotationError naming source:line."""
    reason = unsafe_path_reason(value)
    if reason is not None:
        raise AnnotationError(source, line, f"{what} {value!r} {reason}; {_PATH_RULE}: fix or remove this entry")
    return value


def resolve_inside(folder, relative: str) -> Path:
    """`folder/relative` with every symlink resolved (os.path.realpath), or UnsafePathError if it is not inside
    the resolved `folder`.

    Why at read time too: the index CSV may have been edited by hand, and a symlink inside the image folder
    can point anywhere. Opening the returned path reads the file that was checked.
    """
    reason = unsafe_path_reason(relative)
    if reason is not None:
        raise UnsafePathError(f"{folder}: image path {relative!r} {reason}; {_PATH_RULE}")
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, relative))
    if real == root or os.path.commonpath([root, real]) != root:
        raise UnsafePathError(f"{Path(folder) / relative}: resolves to {real}, which is not inside the image folder "
                              f"{root}; replace the symlink by the file, or point the config at the folder that "
                              "holds the images")
    return Path(real)


# ---------------------------------------------------------------- XML helpers
def _child(path, el, tag: str):
    found = el.find(tag)
    if found is None:
        raise AnnotationError(path, el.sourceline, f"<{el.tag}> has no <{tag}>")
    return found


def _text(path, el, tag: str) -> tuple[str, int]:
    child = _child(path, el, tag)
    text = (child.text or "").strip()
    if not text:
        raise AnnotationError(path, child.sourceline, f"<{tag}> is empty")
    return text, child.sourceline


MAX_COORDINATE = 2**31 - 1
"""Largest magnitude of an image size or box coordinate in an annotation (the largest width a PNG may declare).
Why a bound: larger values wrap around or overflow in the index's int64 columns and the boxes' float64
arithmetic, and no real image comes near it."""


def check_coordinate(value: int, source, line: int | None, what: str) -> int:
    """Return `value` if |value| <= MAX_COORDINATE; else raise AnnotationError naming source:line, `what` and the
    value (rather than an OverflowError, or a silently wrapped size, from numpy or pandas later)."""
    if abs(value) > MAX_COORDINATE:
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}...({len(str(value))} digits)"
        raise AnnotationError(source, line, f"{what} is out of range, got {shown} (at most {MAX_COORDINATE:,} in "
                                            "magnitude: no image is that large)")
    return value


def _int(path, el, tag: str) -> int:
    text, line = _text(path, el, tag)
    try:
        value = int(text)
    except ValueError:
        raise AnnotationError(path, line, f"<{tag}> must be an integer, got {text!r}") from None
    return check_coordinate(value, path, line, f"<{tag}>")


def parse_annotation_xml(path, one_based: bool,
                         require_difficult: bool) -> tuple[str, int, int, list[Obj]]:
    """Parse a VOC-schema <annotation> file -> (filename text, width, height, objects).

    `one_based`: VOC (1-based inclusive, valid range 1..w) vs ImageNet (0-based inclusive, 0..w-1). Both
    become half-open [xmin - base, ymin - base, xmax - base + 1, ymax - base + 1). Boxes outside the image
    or with min > max raise, because a silently clipped box would change the mask without anyone noticing.
    """
    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except etree.XMLSyntaxError as e:
        raise AnnotationError(path, e.lineno, f"malformed XML: {e.msg}") from None
    except OSError as e:
        raise AnnotationError(path, None, f"cannot read annotation: {e}") from None
    if root.tag != "annotation":
        raise AnnotationError(path, root.sourceline, f"root element is <{root.tag}>, expected <annotation>")
    filename, filename_line = _text(path, root, "filename")
    check_relative_path(filename, path, filename_line, "<filename>")
    size = _child(path, root, "size")
    width, height = _int(path, size, "width"), _int(path, size, "height")
    if width < 1 or height < 1:
        raise AnnotationError(path, size.sourceline, f"image size must be positive, got {width}x{height}")
    base = 1 if one_based else 0
    objects = []
    for obj in root.iterfind("object"):
        name, name_line = _text(path, obj, "name")
        difficult = False
        if require_difficult or obj.find("difficult") is not None:
            d = _int(path, obj, "difficult")
            if d not in (0, 1):
                raise AnnotationError(path, obj.find("difficult").sourceline, f"<difficult> must be 0 or 1, got {d}")
            difficult = bool(d)
        bb = _child(path, obj, "bndbox")
        x0, y0, x1, y1 = (_int(path, bb, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x0 > x1 or y0 > y1:
            raise AnnotationError(path, bb.sourceline, f"impossible box: xmin={x0} xmax={x1} ymin={y0} ymax={y1}")
        lo, hi_x, hi_y = base, width - 1 + base, height - 1 + base
        if x0 < lo or y0 < lo or x1 > hi_x or y1 > hi_y:
            raise AnnotationError(
                path, bb.sourceline,
                f"box ({x0}, {y0}, {x1}, {y1}) lies outside the {width}x{height} image "
                f"(valid {'1-based' if one_based else '0-based'} range x {lo}..{hi_x}, y {lo}..{hi_y})",
            )
        box = (float(x0 - base), float(y0 - base), float(x1 - base + 1), float(y1 - base + 1))
        objects.append(Obj(name, difficult, box, name_line))
    return filename, width, height, objects


# ---------------------------------------------------------------- index rows
def unit_row(ann: Annotation, split: str, sample_id: str, class_index: int, class_name: str,
             boxes, transform: str, size: int, difficult=None, rounding: str = "outward") -> dict:
    """One index row: transform the class's original boxes to input coords and summarise their union.

    `boxes` (input coordinates, rounded as `rounding` says: lrp.datasets.boxes.ROUNDINGS) make the mask of μ;
    `source_boxes` (original-image pixels, half-open) and `difficult` (one 0/1 flag per box, default all 0)
    are what the pointing game tests its point against, at the original resolution.
    """
    t = make_transform(transform, ann.width, ann.height, size)
    src = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inp = t.apply(src, rounding)
    flags = [0] * len(src) if difficult is None else [int(bool(d)) for d in difficult]
    if len(flags) != len(src):
        raise ValueError(f"sample {sample_id}: {len(flags)} difficult flags for {len(src)} boxes")
    return {
        "sample_id": sample_id, "image_id": ann.image_id, "split": split, "image_file": ann.filename,
        "class_index": int(class_index), "class_name": class_name, "width": ann.width, "height": ann.height,
        "n_boxes": len(inp), "box_fraction": float(union_mask(inp, size).mean()),
        "boxes": json.dumps(inp.tolist()), "source_boxes": json.dumps(src.tolist()), "difficult": json.dumps(flags),
    }


def finish_index(rows: list[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with the contract's columns and order, sorted by (image_id, class_index)."""
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS).astype(_DTYPES)
    df = df.sort_values(["image_id", "class_index"], kind="stable").reset_index(drop=True)
    dup = df["sample_id"].duplicated()
    if dup.any():
        raise ValueError(f"duplicate sample_id(s) in index: {df.loc[dup, 'sample_id'].head(5).tolist()}")
    return df


_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def index_image_folder(folder, size: int = 224, limit: int | None = None,
                       seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Index a folder of unannotated images (searched recursively), e.g. ImageNet train for patterns.

    Rows have no boxes (n_boxes 0, box_fraction 0): these images feed PatternAttribution, not the
    metrics. class_index is the parent folder's WNID position when the folder is a WNID (train/<wnid>/),
    else -1. `limit` keeps a seeded random subset so a few thousand images still span all classes (the
    first N sorted files would cover only the first few classes). `size` is accepted for symmetry with
    the other index builders; without boxes it changes nothing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images (*.JPEG, *.jpg, *.png) found (searched recursively)")
    chosen = files
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(seed).permutation(len(files))[: int(limit)])
        chosen = [files[i] for i in keep]
    classes = wnid_index()
    rows = []
    for p in chosen:
        try:
            with Image.open(p) as im:  # header only
                width, height = im.size
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{p}: cannot read image header: {e}") from None
        rel = p.relative_to(folder).as_posix()
        sid = rel.rsplit(".", 1)[0]
        parent = p.parent.name if p.parent != folder else ""
        rows.append({"sample_id": sid, "image_id": sid, "split": "folder", "image_file": rel,
                     "class_index": classes.get(parent, -1), "class_name": parent if parent in classes else "",
                     "width": width, "height": height, "n_boxes": 0, "box_fraction": 0.0, "boxes": "[]",
                     "source_boxes": "[]", "difficult": "[]"})
    df = finish_index(rows)
    report = {"source": str(folder), "n_files": len(files), "n_samples": len(df), "limit": limit, "seed": seed,
              "n_classes": int(df.loc[df["class_index"] >= 0, "class_index"].nunique())}
    return df, report


def write_index(df: pd.DataFrame, path) -> None:
    """Write the index as CSV, atomically."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"index is missing columns {missing}")
    with atomic_path(path) as tmp:
        df[INDEX_COLUMNS].to_csv(tmp, index=False)


def read_index(path) -> pd.DataFrame:
    """Read an index CSV with the contract's dtypes (ids stay strings: '000005' is not 5)."""
    path = Path(path)
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (OSError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read index: {e}") from None
    missing = [c for c in INDEX_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: not an index file, missing columns {missing}")
    df = pd.read_csv(path, dtype=_DTYPES, keep_default_na=False)
    return df[INDEX_COLUMNS]


# ---------------------------------------------------------------- uniform baseline
def baseline_stats(df: pd.DataFrame) -> dict:
    """Uniform attribution (r_p = const > 0): mu = S_in/S_tot per sample, mu_w = 1 (data_protocol §1.1).

    Samples with an empty mask (box cropped away) have undefined mu and are excluded from every mean,
    as in the metrics; they are counted in `n_empty_mask`.
    """
    frac = df["box_fraction"].to_numpy(dtype=np.float64)
    valid = frac > 0
    le25, le50 = valid & (frac <= 0.25), valid & (frac <= 0.5)

    def mean(mask):
        return float(frac[mask].mean()) if mask.any() else math.nan

    return {
        "mu": mean(valid), "mu_w": 1.0 if valid.any() else math.nan,
        "mu_le_0.25": mean(le25), "mu_le_0.5": mean(le50),
        "n_units": int(len(frac)), "n_valid": int(valid.sum()),
        "n_le_0.25": int(le25.sum()), "n_le_0.5": int(le50.sum()), "n_empty_mask": int((~valid).sum()),
    }


def write_baseline(stats: dict, path) -> None:
    """Write baseline stats as a one-row CSV (keys as columns, in the dict's order), atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame([stats]).to_csv(tmp, index=False)
