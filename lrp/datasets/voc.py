"""PASCAL VOC 2007: annotation XML, ImageSets, and the (image, class) evaluation-unit index.

`root` is the `VOCdevkit/VOC2007` folder (Annotations/, ImageSets/Main/, JPEGImages/). Indexing reads the
XML only, so it runs before (or without) the JPEGs. Every class present in an image is one unit; its mask
is the union of ALL boxes of that class, difficult ones included (data_protocol.md §3.5): leaving a real
instance out of the mask would count relevance on it as "outside".
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lrp.datasets.catalog import VOC_CLASSES
from lrp.datasets.index import (
    Annotation,
    AnnotationError,
    check_on_error,
    check_relative_path,
    finish_index,
    parse_annotation_xml,
    unit_row,
)

__all__ = ["VOC_TRANSFORM", "VOC_ROUNDING", "parse_voc_xml", "read_image_set", "index_voc"]

VOC_TRANSFORM = "warp"  # VOC inputs are rescaled to size x size, not cropped (paper; CaffeNet demonstrator)
VOC_ROUNDING = "nearest"  # reproduces the paper's VOC 2007 Baseline row (lrp.datasets.boxes.ROUNDINGS)


def parse_voc_xml(path) -> Annotation:
    """Parse one VOC XML (1-based inclusive boxes) -> Annotation with half-open original-image boxes.

    image_id is the file stem (the id ImageSets use); filename is the <filename> element, refused
    (AnnotationError at its line) unless it is a relative path inside JPEGImages (index.unsafe_path_reason).
    """
    path = Path(path)
    filename, width, height, objects = parse_annotation_xml(path, one_based=True, require_difficult=True)
    return Annotation(path.stem, filename, width, height, objects, str(path))


def read_image_set(root, split: str) -> list[str]:
    """Image ids listed in ImageSets/Main/{split}.txt, in file order.

    An id becomes a path (Annotations/<id>.xml, JPEGImages/<id>.jpg), so one that could lead out of its
    folder ('..', absolute, ...) raises AnnotationError naming the line, like any other malformed line.
    """
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image set {split!r} not found (expected VOC layout under {root})")
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 1:
            raise AnnotationError(path, lineno, f"expected one image id per line, got {line!r}")
        ids.append(check_relative_path(tokens[0], path, lineno, "image id"))
    if not ids:
        raise AnnotationError(path, None, f"image set {split!r} is empty")
    return ids


def index_voc(root, splits: str | Sequence[str], classes: Sequence[str] = VOC_CLASSES, size: int = 224,
              on_error: str = "raise", rounding: str = VOC_ROUNDING) -> tuple[pd.DataFrame, dict]:
    """One row per unique (image, class) pair over `splits` -> (index DataFrame, report).

    An image listed in several splits is indexed once, under the first split (in `splits` order) that
    lists it. Objects whose name is not in `classes` are an error; with on_error="skip" they are dropped
    and counted, and unreadable/invalid annotation files are skipped and listed in the report. `rounding`:
    how box edges become input pixels (lrp.datasets.boxes.ROUNDINGS; the default reproduces the paper).
    """
    check_on_error(on_error)
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits:
        raise ValueError("index_voc needs at least one split")
    class_index = {c: i for i, c in enumerate(classes)}
    root = Path(root)

    image_split: dict[str, str] = {}
    for split in splits:
        for image_id in read_image_set(root, split):
            image_split.setdefault(image_id, split)

    rows, skipped, unknown = [], [], Counter()
    n_objects = n_difficult = n_no_units = 0
    for image_id, split in tqdm(image_split.items(), desc="index VOC", unit="xml", file=sys.stderr,
                                mininterval=5):
        xml = root / "Annotations" / f"{image_id}.xml"
        try:
            if not xml.is_file():
                raise AnnotationError(xml, None, f"annotation of image {image_id!r} (split {split!r}) not found")
            ann = parse_voc_xml(xml)
        except AnnotationError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        per_class: dict[str, list] = {}
        for obj in ann.objects:
            if obj.name not in class_index:
                if on_error == "raise":
                    raise AnnotationError(xml, obj.line, f"unknown class {obj.name!r} (not in classes)")
                unknown[obj.name] += 1
                continue
            per_class.setdefault(obj.name, []).append(obj)
            n_objects += 1
            n_difficult += obj.difficult
        if not per_class:
            n_no_units += 1
        for name, objs in per_class.items():
            rows.append(unit_row(ann, split, f"{image_id}_{name}", class_index[name], name, [o.box for o in objs],
                                 VOC_TRANSFORM, size, difficult=[o.difficult for o in objs], rounding=rounding))

    df = finish_index(rows)
    report = {
        "n_image_ids": len(image_split),
        "n_images": int(df["image_id"].nunique()),
        "n_samples": len(df),
        "n_objects": n_objects,
        "n_difficult": n_difficult,
        "n_unknown_objects": sum(unknown.values()),
        "unknown_objects": dict(sorted(unknown.items())),
        "n_skipped_files": len(skipped),
        "skipped_files": skipped,
        "n_images_without_units": n_no_units,
        "n_empty_mask": int((df["box_fraction"] == 0).sum()),
        "split_images": {s: int(df.loc[df["split"] == s, "image_id"].nunique()) for s in splits},
    }
    return df, report
