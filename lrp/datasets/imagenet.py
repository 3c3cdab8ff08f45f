"""ILSVRC2012 validation: box annotations (official XML or Kaggle CSV) -> one evaluation unit per image.

Class index = position of the image's WNID in sorted-WNID order (`lrp.datasets.catalog.wnid_index`;
torchvision ImageFolder == Keras imagenet_class_index.json == Kaggle LOC_synset_mapping.txt;
data_protocol.md §2.3). Every val box carries
the image's own WNID, so an image with two different WNIDs means corrupted input and is an error.
Boxes are 0-based inclusive in both sources (§2.2) and become half-open [x0, y0, x1 + 1, y1 + 1).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from lrp.datasets.catalog import wnid_index
from lrp.datasets.index import (
    Annotation,
    AnnotationError,
    Obj,
    UnsafePathError,
    check_coordinate,
    check_on_error,
    check_relative_path,
    finish_index,
    parse_annotation_xml,
    resolve_inside,
    unit_row,
)

__all__ = ["IMAGENET_TRANSFORM", "IMAGENET_ROUNDING", "parse_imagenet_xml", "parse_loc_val_csv", "index_imagenet"]

IMAGENET_TRANSFORM = "imagenet"  # shorter side -> size, centre crop (paper / Keras preprocessing)
IMAGENET_ROUNDING = "outward"  # the closer of the two to the paper's Baseline row (lrp.datasets.boxes.ROUNDINGS)
_EXT = ".JPEG"


def parse_imagenet_xml(path) -> Annotation:
    """Parse one ILSVRC2012 bbox XML (0-based inclusive) -> Annotation with half-open boxes.

    `<filename>` has no extension in the official files (`ILSVRC2012_val_00000001`); a trailing `.JPEG`
    is tolerated. The image file is `<image_id>.JPEG`.
    """
    path = Path(path)
    filename, width, height, objects = parse_annotation_xml(path, one_based=False, require_difficult=False)
    image_id = filename[: -len(_EXT)] if filename.endswith(_EXT) else filename
    return Annotation(image_id, image_id + _EXT, width, height, objects, str(path))


def parse_loc_val_csv(path) -> dict[str, list[Obj]]:
    """Parse Kaggle LOC_val_solution.csv -> {image_id: [Obj]} (Obj.line = CSV line number).

    Format: header `ImageId,PredictionString`, then `id,(wnid xmin ymin xmax ymax )+`. The CSV carries no
    image sizes; `index_imagenet` gets them elsewhere and checks the boxes against them. The ImageIds are
    returned as written: `index_imagenet` refuses (or, with on_error="skip", skips) those that are not a
    plain file name inside the image folder.
    """
    path = Path(path)
    out: dict[str, list[Obj]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(path, None, f"cannot read CSV: {e}") from None
    if not rows or rows[0] != ["ImageId", "PredictionString"]:
        raise AnnotationError(path, 1, f"expected header 'ImageId,PredictionString', got {rows[:1]}")
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 2:
            raise AnnotationError(path, lineno, f"expected 2 fields, got {len(row)}")
        image_id, tokens = row[0].strip(), row[1].split()
        if not image_id or not tokens or len(tokens) % 5:
            raise AnnotationError(path, lineno, "PredictionString must be groups of 'wnid xmin ymin xmax ymax'")
        if image_id in out:
            raise AnnotationError(path, lineno, f"duplicate ImageId {image_id!r}")
        objs = []
        for k in range(0, len(tokens), 5):
            wnid, coords = tokens[k], tokens[k + 1: k + 5]
            try:
                x0, y0, x1, y1 = map(int, coords)
            except ValueError:
                raise AnnotationError(path, lineno, f"non-integer coordinates {coords} for {wnid}") from None
            for v in (x0, y0, x1, y1):
                check_coordinate(v, path, lineno, f"box coordinate of {wnid}")
            if x0 > x1 or y0 > y1 or x0 < 0 or y0 < 0:
                raise AnnotationError(path, lineno, f"impossible box {coords} for {wnid}")
            objs.append(Obj(wnid, False, (float(x0), float(y0), float(x1 + 1), float(y1 + 1)), lineno))
        out[image_id] = objs
    return out


def _check_unit(ann: Annotation, source, classes: Mapping[str, int]) -> int:
    """Validate one image's objects (known, single WNID, inside the image); return its index in `classes`."""
    if not ann.objects:
        raise AnnotationError(source, None, f"image {ann.image_id!r} has no boxes")
    first = ann.objects[0]
    for obj in ann.objects:
        if obj.name != first.name:
            raise AnnotationError(source, obj.line, f"image {ann.image_id!r} mixes WNIDs {first.name!r} and "
                                                    f"{obj.name!r}; val boxes must carry the image's label")
        x0, y0, x1, y1 = obj.box
        if x0 < 0 or y0 < 0 or x1 > ann.width or y1 > ann.height:
            raise AnnotationError(source, obj.line, f"box of {ann.image_id!r} lies outside the "
                                                    f"{ann.width}x{ann.height} image")
    if first.name not in classes:
        raise AnnotationError(source, first.line, f"unknown WNID {first.name!r}")
    return classes[first.name]


def _image_size(image_id: str, image_dir, image_sizes, source, line) -> tuple[int, int]:
    """(width, height) of a CSV image: from `image_sizes`, else from its JPEG header (never outside image_dir)."""
    if image_sizes is not None:
        if image_id not in image_sizes:
            raise AnnotationError(source, line, f"no image size given for {image_id!r}")
        w, h = image_sizes[image_id]
        return int(w), int(h)
    path = Path(image_dir) / (image_id + _EXT)
    try:
        with Image.open(resolve_inside(image_dir, image_id + _EXT)) as im:  # reads the header only
            return im.size
    except UnsafePathError as e:
        raise AnnotationError(source, line, str(e)) from None
    except (OSError, Image.DecompressionBombError) as e:
        raise AnnotationError(source, line, f"cannot read the size of {path}: {e}") from None


def _check_size_source(csv_path: Path, image_dir, image_sizes) -> None:
    """The CSV has no sizes: raise up front, naming the CSV, when neither sizes nor the image folder exist
    (rather than skipping every row)."""
    if image_sizes is not None:
        return
    xml = "or use the official XML boxes (ILSVRC2012_bbox_val_v3.tgz), which carry the sizes and need no images"
    if image_dir is None:
        raise ValueError(f"{csv_path}: a Kaggle LOC_val_solution.csv has no image sizes, so indexing it needs the "
                         f"val images or their sizes (pass image_dir or image_sizes); {xml}")
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"{csv_path}: a Kaggle LOC_val_solution.csv has no image sizes, so indexing it "
                                f"reads them from the val images, but the image folder {image_dir} does not "
                                f"exist; extract the images there, {xml}")


def _annotations(boxes: Path, image_dir, image_sizes):
    """Yield (source path, Annotation or the AnnotationError raised while building it)."""
    if boxes.is_dir():
        files = sorted(boxes.rglob("*.xml"))
        if not files:
            raise FileNotFoundError(f"{boxes}: no *.xml box annotations found (searched recursively)")
        for f in files:
            try:
                yield f, parse_imagenet_xml(f)
            except AnnotationError as e:
                yield f, e
    elif boxes.is_file():
        _check_size_source(boxes, image_dir, image_sizes)
        for image_id, objs in parse_loc_val_csv(boxes).items():
            try:
                check_relative_path(image_id, boxes, objs[0].line, "ImageId")
                w, h = _image_size(image_id, image_dir, image_sizes, boxes, objs[0].line)
                yield boxes, Annotation(image_id, image_id + _EXT, w, h, objs, str(boxes))
            except AnnotationError as e:
                yield boxes, e
    else:
        raise FileNotFoundError(f"{boxes}: box annotations not found (expected an XML folder or a CSV file)")


def index_imagenet(boxes, size: int = 224, on_error: str = "raise", image_dir=None,
                   image_sizes: Mapping[str, tuple[int, int]] | None = None,
                   rounding: str = IMAGENET_ROUNDING) -> tuple[pd.DataFrame, dict]:
    """One row per val image -> (index DataFrame, report).

    `boxes`: a folder of ILSVRC2012 bbox XMLs (searched recursively, `val/` or flat) or a Kaggle
    LOC_val_solution.csv. The XMLs carry the image sizes, so they need no images (`image_dir` is ignored).
    The CSV needs image sizes: `image_sizes` {image_id: (w, h)} or `image_dir` (JPEG headers are read);
    without either, or with an image_dir that does not exist, it raises naming the CSV. on_error="skip"
    skips invalid images (also an XML <filename> or CSV ImageId that is not a plain relative path) and
    lists them in the report; a malformed CSV as a whole always raises. `rounding`: how box edges become
    input pixels (lrp.datasets.boxes.ROUNDINGS).
    """
    check_on_error(on_error)
    boxes = Path(boxes)
    rows, skipped, seen, classes = [], [], {}, wnid_index()
    n_sources = n_boxes = n_multi = 0
    for source, ann in tqdm(_annotations(boxes, image_dir, image_sizes), desc="index ImageNet", unit="img",
                            file=sys.stderr, mininterval=5):
        n_sources += 1
        try:
            if isinstance(ann, AnnotationError):
                raise ann
            if ann.image_id in seen:
                raise AnnotationError(source, None, f"image {ann.image_id!r} is annotated twice "
                                                    f"(also in {seen[ann.image_id]})")
            cls = _check_unit(ann, source, classes)
        except AnnotationError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        seen[ann.image_id] = source
        n_boxes += len(ann.objects)
        n_multi += len(ann.objects) > 1
        rows.append(unit_row(ann, "val", ann.image_id, cls, ann.objects[0].name, [o.box for o in ann.objects],
                             IMAGENET_TRANSFORM, size, difficult=[o.difficult for o in ann.objects],
                             rounding=rounding))
    df = finish_index(rows)
    report = {
        "source": str(boxes),
        "n_annotations": n_sources,
        "n_images": len(df),
        "n_samples": len(df),
        "n_boxes": n_boxes,
        "n_multi_box_images": n_multi,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_empty_mask": int((df["box_fraction"] == 0).sum()),
        "n_full_mask": int((df["box_fraction"] == 1).sum()),
    }
    return df, report
