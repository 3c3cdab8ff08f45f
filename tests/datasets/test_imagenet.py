"""ImageNet val boxes: XML (§2.2 schema, written from real box values) and Kaggle CSV -> the same index."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrp.datasets.catalog import load_synsets, wnid_index
from lrp.datasets.imagenet import index_imagenet, parse_imagenet_xml, parse_loc_val_csv
from lrp.datasets.index import AnnotationError

DATA = Path(__file__).parents[1] / "data" / "imagenet"
META = DATA / "metadata"


def _lines(name):
    return [line.split(",") for line in (META / name).read_text().splitlines() if line]


def stem(p):  # "val/ILSVRC2012_val_00000001.JPEG" -> "ILSVRC2012_val_00000001"
    return Path(p).stem


SIZES = {stem(p): (int(w), int(h)) for p, w, h in _lines("wsolevaluation_test_image_sizes.excerpt.txt")}
WSOL_LABELS = {stem(p): int(c) for p, c in _lines("wsolevaluation_test_class_labels.excerpt.txt")}
_INNV = (META / "innvestigate_ground_truth_val2012.excerpt.txt").read_text().splitlines()
INNV_LABELS = {stem(f): int(c) for f, c in (line.split() for line in _INNV)}
WSOL_BOXES: dict[str, list] = {}
for p, *xyxy in _lines("wsolevaluation_test_localization.excerpt.txt"):
    WSOL_BOXES.setdefault(stem(p), []).append(tuple(map(int, xyxy)))
KAGGLE = parse_loc_val_csv(META / "LOC_val_solution.excerpt.csv")


def imagenet_xml(image_id, width, height, objects) -> str:
    """An ILSVRC2012 bbox XML in the data_protocol.md §2.2 schema; objects = [(wnid, (x0, y0, x1, y1))]."""
    objs = "".join(
        f"  <object>\n    <name>{wnid}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
        f"    <difficult>0</difficult>\n    <bndbox>\n      <xmin>{x0}</xmin>\n      <ymin>{y0}</ymin>\n"
        f"      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n    </bndbox>\n  </object>\n"
        for wnid, (x0, y0, x1, y1) in objects
    )
    return (f"<annotation>\n  <folder>val</folder>\n  <filename>{image_id}</filename>\n"
            f"  <source>\n    <database>ILSVRC_2012</database>\n  </source>\n"
            f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{objs}</annotation>\n")


@pytest.fixture
def xml_dir(tmp_path):
    """XMLs for the 23 excerpt images with boxes: WNID from the Kaggle CSV, boxes from wsolevaluation.
    Half lie in val/, half flat (both layouts exist in mirrors)."""
    root = tmp_path / "bbox"
    for k, (image_id, boxes) in enumerate(sorted(WSOL_BOXES.items())):
        wnid = KAGGLE[image_id][0].name
        folder = root / "val" if k % 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.xml").write_text(imagenet_xml(image_id, *SIZES[image_id], [(wnid, b) for b in boxes]))
    return root


def test_synsets_sorted_and_label_of_val_1():
    syn = load_synsets()
    wnids = [w for w, _ in syn]
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    assert wnid_index()["n01751748"] == 65 == wnids.index("n01751748")
    assert syn[65][1].startswith("sea snake") and syn[0] == ("n01440764", "tench, Tinca tinca")


def test_parse_xml_zero_based_inclusive(xml_dir):
    a = parse_imagenet_xml(xml_dir / "ILSVRC2012_val_00000001.xml")
    assert (a.image_id, a.filename, a.width, a.height) == (
        "ILSVRC2012_val_00000001", "ILSVRC2012_val_00000001.JPEG", 500, 375)
    assert [(o.name, o.box) for o in a.objects] == [("n01751748", (111.0, 108.0, 442.0, 194.0))]


def test_xml_index_matches_wsolevaluation_and_innvestigate(xml_dir):
    df, report = index_imagenet(xml_dir)
    assert len(df) == 23 and report["n_skipped"] == 0 and report["n_boxes"] == 27
    assert report["n_multi_box_images"] == 2  # val_00000002 (2 boxes) and val_00000008 (4 boxes)
    assert df["image_id"].is_monotonic_increasing and (df["sample_id"] == df["image_id"]).all()
    for row in df.itertuples():
        assert row.class_index == WSOL_LABELS[row.image_id] == INNV_LABELS[row.image_id]
        assert row.class_name == load_synsets()[row.class_index][0]
        assert (row.width, row.height) == SIZES[row.image_id] and row.n_boxes == len(WSOL_BOXES[row.image_id])
        assert row.image_file == row.image_id + ".JPEG" and row.split == "val"
    first = df.iloc[0]
    assert first.box_fraction == pytest.approx(195 * 52 / 224**2)  # hand-computed in test_boxes
    # val_00000010 box 0,0,495,374 of 500x375: the centre crop keeps only box pixels
    assert df.set_index("image_id").loc["ILSVRC2012_val_00000010"].box_fraction == 1.0


def test_csv_boxes_equal_xml_boxes(xml_dir, tmp_path):
    for image_id, boxes in WSOL_BOXES.items():  # Kaggle == wsolevaluation (data_protocol §2.3)
        assert [o.box for o in KAGGLE[image_id]] == [(x0, y0, x1 + 1.0, y1 + 1.0) for x0, y0, x1, y1 in boxes]
    from_xml, _ = index_imagenet(xml_dir)
    from_csv, report = index_imagenet(META / "LOC_val_solution.excerpt.csv", image_sizes=SIZES, on_error="skip")
    # 47 CSV rows; 20 have no size in the excerpt and are skipped with a message naming the CSV line
    assert report["n_annotations"] == 47 and report["n_skipped"] == 20 and len(from_csv) == 27
    assert "LOC_val_solution.excerpt.csv:2: no image size given for 'ILSVRC2012_val_00048981'" in report["skipped"][0]
    assert (from_csv["class_index"] == from_csv["image_id"].map(WSOL_LABELS)).all()
    common = from_csv[from_csv["image_id"].isin(from_xml["image_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(common, from_xml)
    with pytest.raises(AnnotationError, match="no image size"):
        index_imagenet(META / "LOC_val_solution.excerpt.csv", image_sizes=SIZES)
    with pytest.raises(ValueError, match="pass image_dir or image_sizes"):
        index_imagenet(META / "LOC_val_solution.excerpt.csv")


def test_csv_sizes_from_jpeg_headers(tmp_path):
    lines = (META / "LOC_val_solution.excerpt.csv").read_text().splitlines()
    ids = sorted(p.stem for p in (DATA / "val").glob("*.JPEG"))
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("\n".join([lines[0]] + [line for line in lines if line.split(",")[0] in ids]) + "\n")
    df, _ = index_imagenet(csv, image_dir=DATA / "val")
    assert df["image_id"].tolist() == ids
    assert [(r.width, r.height) for r in df.itertuples()] == [SIZES[i] for i in ids]
    # val_00033712: 768x1024, box 471,483,760,714 -> s = 224/768, crop 37 rows off the top
    row = df.set_index("image_id").loc["ILSVRC2012_val_00033712"]
    s = 224 / 768
    np.testing.assert_allclose(json.loads(row.boxes),
                               [[471 * s, 483 * (299 / 1024) - 37, 761 * s, 715 * (299 / 1024) - 37]], atol=1e-6)


def test_mixed_and_unknown_wnids(tmp_path):
    mixed = tmp_path / "mixed" / "ILSVRC2012_val_00000001.xml"
    mixed.parent.mkdir()
    mixed.write_text(imagenet_xml("ILSVRC2012_val_00000001", 500, 375,
                                  [("n01751748", (1, 1, 5, 5)), ("n01440764", (2, 2, 6, 6))]))
    with pytest.raises(AnnotationError, match=r"00000001\.xml:26: .*mixes WNIDs 'n01751748' and 'n01440764'"):
        index_imagenet(mixed.parent)
    unknown = tmp_path / "unknown" / "x.xml"
    unknown.parent.mkdir()
    unknown.write_text(imagenet_xml("x", 10, 10, [("n99999999", (1, 1, 5, 5))]))
    with pytest.raises(AnnotationError, match=r"x\.xml:14: unknown WNID 'n99999999'"):
        index_imagenet(unknown.parent)
    df, report = index_imagenet(unknown.parent, on_error="skip")
    assert len(df) == 0 and report["n_skipped"] == 1 and list(df.columns)[0] == "sample_id"


def test_xml_errors_and_duplicates(tmp_path):
    outside = tmp_path / "a" / "ILSVRC2012_val_00000001.xml"
    outside.parent.mkdir()
    outside.write_text(imagenet_xml("ILSVRC2012_val_00000001", 500, 375, [("n01751748", (0, 0, 500, 374))]))
    with pytest.raises(AnnotationError, match=r"00000001\.xml:18: box \(0, 0, 500, 374\) lies outside"):
        parse_imagenet_xml(outside)  # 0-based inclusive: x = 500 is one past the last column
    dup = tmp_path / "dup"
    (dup / "val").mkdir(parents=True)
    text = imagenet_xml("ILSVRC2012_val_00000001", 500, 375, [("n01751748", (0, 0, 499, 374))])
    (dup / "ILSVRC2012_val_00000001.xml").write_text(text)
    (dup / "val" / "ILSVRC2012_val_00000001.xml").write_text(text)
    with pytest.raises(AnnotationError, match="annotated twice"):
        index_imagenet(dup)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no \*\.xml"):
        index_imagenet(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        index_imagenet(tmp_path / "missing")


@pytest.mark.parametrize("body, line, message", [
    ("ILSVRC2012_val_00000001,n01751748 111 108 441\n", 2, "groups of"),
    ("ILSVRC2012_val_00000001,n01751748 111 108 441 19x\n", 2, "non-integer"),
    ("ILSVRC2012_val_00000001,n01751748 111 108 441 193\nILSVRC2012_val_00000001,n01751748 1 1 2 2\n", 3,
     "duplicate ImageId"),
    ("ILSVRC2012_val_00000001,n01751748 441 108 111 193\n", 2, "impossible box"),
    ("ILSVRC2012_val_00000001,n01751748 111 108 " + "9" * 400 + " 193\n", 2,
     "box coordinate of n01751748 is out of range"),  # was an OverflowError in float()
])
def test_malformed_csv_names_line(tmp_path, body, line, message):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n" + body)
    with pytest.raises(AnnotationError) as err:
        parse_loc_val_csv(csv)
    assert err.value.line == line and f"LOC_val_solution.csv:{line}: " in str(err.value) and message in str(err.value)


def test_csv_box_outside_image_and_bad_header(tmp_path):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 111 108 500 193 \n")
    with pytest.raises(AnnotationError, match=r"LOC_val_solution\.csv:2: box .* outside the 500x375 image"):
        index_imagenet(csv, image_sizes={"ILSVRC2012_val_00000001": (500, 375)})
    csv.write_text("id,boxes\n")
    with pytest.raises(AnnotationError, match=r"csv:1: expected header"):
        parse_loc_val_csv(csv)


def test_catalog_holds_the_class_lists_and_stays_light():
    """The class lists live in the catalog, which imports only the standard library: the parsers, the index and
    the model loaders read them from there, none through another (no lazy import to dodge a cycle)."""
    code = ("import sys; from lrp.datasets import catalog; print(','.join(sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('pandas', 'PIL', 'lxml') or m.startswith('lrp.datasets.') and m != "
            "'lrp.datasets.catalog')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"lrp.datasets.catalog also imports {out}"
    from lrp.datasets import catalog
    assert catalog.class_list("imagenet") == [w for w, _ in load_synsets()]
    assert catalog.class_list("voc")[14] == "person" and catalog.class_list("demo")[0] == "disc"
    with pytest.raises(ValueError, match="unknown class list 'coco'"):
        catalog.class_list("coco")
    for name in ("catalog", "index", "imagenet", "voc", "demo", "boxes"):
        tree = ast.parse((Path(catalog.__file__).parent / f"{name}.py").read_text())
        lazy = [n.module for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("lrp.datasets")]
        assert not lazy, f"lrp.datasets.{name} imports {lazy} inside a function"
