"""VOC XML parsing, the (image, class) index, index CSV round trip and the uniform baseline."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrp.datasets.catalog import VOC_CLASSES
from lrp.datasets.index import (
    INDEX_COLUMNS,
    AnnotationError,
    baseline_stats,
    read_index,
    write_baseline,
    write_index,
)
from lrp.datasets.voc import index_voc, parse_voc_xml, read_image_set

DATA = Path(__file__).parents[1] / "data" / "voc2007"


def voc_tree(tmp_path, xmls: dict[str, str], splits: dict[str, list[str]]) -> Path:
    """A VOC2007 folder with the given annotation texts and ImageSets/Main/<split>.txt files."""
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, text in xmls.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    return root


def fixture_xml(name="1") -> str:
    return (DATA / "Annotations" / f"{name}.xml").read_text()


def test_parse_real_voc_xml():
    a = parse_voc_xml(DATA / "Annotations" / "1.xml")
    assert (a.image_id, a.filename, a.width, a.height) == ("1", "1.jpg", 500, 375)
    assert [(o.name, o.difficult, o.box) for o in a.objects] == [
        ("person", False, (134.0, 24.0, 236.0, 188.0)),  # 1-based 135,25,236,188 -> half-open
        ("bicycle", False, (94.0, 84.0, 232.0, 253.0)),
    ]
    b = parse_voc_xml(DATA / "Annotations" / "000001.xml")  # real VOC2007 000002.xml content
    assert (b.image_id, b.filename, b.width, b.height) == ("000001", "000002.jpg", 335, 500)
    assert [(o.name, o.box) for o in b.objects] == [("train", (138.0, 199.0, 207.0, 301.0))]


def test_index_voc_on_real_fixtures():
    df, report = index_voc(DATA, ["trainval", "test"])
    assert list(df.columns) == INDEX_COLUMNS
    assert df["sample_id"].tolist() == ["000001_train", "1_bicycle", "1_person", "2_horse", "2_person"]
    assert df["class_index"].tolist() == [18, 1, 14, 12, 14]
    assert df["split"].tolist() == ["test", "trainval", "trainval", "trainval", "trainval"]
    assert df["image_file"].tolist() == ["000002.jpg", "1.jpg", "1.jpg", "2.jpg", "2.jpg"]
    assert df["image_id"].tolist() == ["000001", "1", "1", "2", "2"]
    row = df.set_index("sample_id").loc["1_person"]
    assert (row.width, row.height, row.n_boxes) == (500, 375, 1)
    assert row.box_fraction == pytest.approx(46 * 99 / 224**2)  # see test_boxes
    # nearest (VOC's default): first/last pixel 134, 235 (x) and 24, 187 (y) scaled by 224/500, 224/375, rounded
    assert json.loads(row.boxes) == [[60.0, 14.0, 106.0, 113.0]]
    assert json.loads(row.source_boxes) == [[134.0, 24.0, 236.0, 188.0]] and json.loads(row.difficult) == [0]
    outward = index_voc(DATA, ["trainval", "test"], rounding="outward")[0].set_index("sample_id").loc["1_person"]
    np.testing.assert_allclose(json.loads(outward.boxes), [[60.032, 14.336, 105.728, 112.298667]], atol=1e-6)
    assert outward.box_fraction == row.box_fraction  # this box rounds to the same pixels either way
    assert report["n_samples"] == 5 and report["n_images"] == 3 and report["n_objects"] == 5
    assert report["split_images"] == {"trainval": 2, "test": 1}
    assert report["n_skipped_files"] == 0 and report["n_unknown_objects"] == 0


def test_index_csv_round_trip_keeps_string_ids(tmp_path):
    df, _ = index_voc(DATA, ["trainval", "test"], size=227)
    write_index(df, tmp_path / "index.csv")
    back = read_index(tmp_path / "index.csv")
    pd.testing.assert_frame_equal(back, df)
    assert back.loc[0, "image_id"] == "000001"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other.csv.*missing columns"):
        read_index(tmp_path / "other.csv")


def test_difficult_boxes_join_the_union_and_duplicates_across_splits(tmp_path):
    extra = ("<object><name>person</name><pose>Left</pose><truncated>0</truncated><difficult>1</difficult>"
             "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>50</ymax></bndbox></object>")
    xml = fixture_xml("1").replace("</annotation>", extra + "</annotation>")
    root = voc_tree(tmp_path, {"a": xml, "b": fixture_xml("2")}, {"train": ["a"], "trainval": ["a", "b", "a"]})
    df, report = index_voc(root, ["train", "trainval"])
    person = df.set_index("sample_id").loc["a_person"]
    assert person.n_boxes == 2 and person.split == "train"
    assert report["n_difficult"] == 1 and report["n_image_ids"] == 2
    assert df["split"].tolist() == ["train", "train", "trainval", "trainval"]
    # difficult box [0, 0, 50, 50) -> [0, 0, 22.4, 29.87) at 224: 23 x 30 px, disjoint from the 46 x 99 person
    assert person.box_fraction == pytest.approx((46 * 99 + 23 * 30) / 224**2)


def test_classes_subset_order_defines_index(tmp_path):
    root = voc_tree(tmp_path, {"a": fixture_xml("1")}, {"test": ["a"]})
    df, _ = index_voc(root, "test", classes=("person", "bicycle"))
    assert dict(zip(df["class_name"], df["class_index"])) == {"person": 0, "bicycle": 1}


def test_unknown_class_raises_or_is_skipped_and_counted(tmp_path):
    xml = fixture_xml("2").replace("<name>horse</name>", "<name>unicorn</name>")
    root = voc_tree(tmp_path, {"u": xml, "ok": fixture_xml("1")}, {"test": ["u", "ok"]})
    with pytest.raises(AnnotationError, match=r"u\.xml:33: unknown class 'unicorn'"):
        index_voc(root, "test")
    df, report = index_voc(root, "test", on_error="skip")
    assert report["unknown_objects"] == {"unicorn": 1} and report["n_unknown_objects"] == 1
    assert df["sample_id"].tolist() == ["ok_bicycle", "ok_person", "u_person"]
    df, report = index_voc(root, "test", classes=("bicycle",), on_error="skip")
    assert df["sample_id"].tolist() == ["ok_bicycle"]
    assert report["unknown_objects"] == {"person": 2, "unicorn": 1}
    assert report["n_images_without_units"] == 1


MALFORMED = "<annotation>\n<filename>x.jpg</filename>\n<size>\n<width>5</wid>\n</size>\n</annotation>\n"


def test_malformed_xml_names_file_and_line(tmp_path):
    root = voc_tree(tmp_path, {"bad": MALFORMED, "ok": fixture_xml("1")}, {"test": ["bad", "ok"]})
    with pytest.raises(AnnotationError) as err:
        index_voc(root, "test")
    assert err.value.line == 4 and err.value.path.endswith("bad.xml")
    assert "bad.xml:4: malformed XML" in str(err.value)
    df, report = index_voc(root, "test", on_error="skip")
    assert report["n_skipped_files"] == 1 and "bad.xml:4" in report["skipped_files"][0]
    assert set(df["image_id"]) == {"ok"}


@pytest.mark.parametrize("old, new, line, message", [
    ("<xmax>236</xmax>", "<xmax>236.5</xmax>", 28, "<xmax> must be an integer, got '236.5'"),
    ("<xmin>135</xmin>", "<xmin>240</xmin>", 25, "impossible box: xmin=240 xmax=236"),
    ("<ymax>253</ymax>", "<ymax>376</ymax>", 37, "outside the 500x375 image"),
    ("<xmin>95</xmin>", "<xmin>0</xmin>", 37, "outside the 500x375 image"),
    ("<width>500</width>", "", 14, "<size> has no <width>"),
    ("<height>375</height>", "<height></height>", 16, "<height> is empty"),
    ("<difficult>0</difficult>", "", 20, "<object> has no <difficult>"),
    ("<filename>1.jpg</filename>", "", 1, "<annotation> has no <filename>"),
    # numbers beyond int64 overflowed in numpy (OverflowError), or wrapped to a negative width without an error
    ("<width>500</width>", "<width>12345678901234567890</width>", 15,
     "<width> is out of range, got 12345678901234567890 (at most 2,147,483,647 in magnitude"),
    ("<height>375</height>", "<height>99999999999999999999</height>", 16, "<height> is out of range"),
    ("<xmin>135</xmin>", "<xmin>-99999999999999999999</xmin>", 26, "<xmin> is out of range, got -9999"),
    ("<xmax>236</xmax>", "<xmax>" + "9" * 400 + "</xmax>", 28, "got 99999999999999999999...(400 digits)"),
])
def test_invalid_annotations_name_file_and_line(tmp_path, old, new, line, message):
    path = tmp_path / "000123.xml"
    path.write_text(fixture_xml("1").replace(old, new, 1))
    with pytest.raises(AnnotationError) as err:
        parse_voc_xml(path)
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: ") and message in str(err.value)


def test_missing_image_set_and_annotation(tmp_path):
    root = voc_tree(tmp_path, {}, {"test": ["000001"], "empty": []})
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val\.txt"):
        read_image_set(root, "val")
    with pytest.raises(AnnotationError, match="empty"):
        read_image_set(root, "empty")
    with pytest.raises(AnnotationError, match=r"000001\.xml: annotation of image '000001'"):
        index_voc(root, "test")
    with pytest.raises(ValueError, match="on_error"):
        index_voc(root, "test", on_error="ignore")
    assert read_image_set(DATA, "trainval") == ["1", "2"]
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[14] == "person"


def test_baseline_stats_hand_computed(tmp_path):
    df = pd.DataFrame({"box_fraction": [0.0, 0.1, 0.25, 0.5, 0.6, 1.0]})
    s = baseline_stats(df)
    assert s["mu"] == pytest.approx(2.45 / 5)  # the empty mask is excluded
    assert s["mu_le_0.25"] == pytest.approx(0.35 / 2) and s["n_le_0.25"] == 2  # boundary included
    assert s["mu_le_0.5"] == pytest.approx(0.85 / 3) and s["n_le_0.5"] == 3
    assert (s["mu_w"], s["n_units"], s["n_valid"], s["n_empty_mask"]) == (1.0, 6, 5, 1)
    write_baseline(s, tmp_path / "baseline.csv")
    back = pd.read_csv(tmp_path / "baseline.csv")
    assert back.loc[0, "mu"] == pytest.approx(0.49) and back.loc[0, "n_empty_mask"] == 1
    empty = baseline_stats(pd.DataFrame({"box_fraction": [0.0]}))
    assert np.isnan(empty["mu"]) and np.isnan(empty["mu_w"]) and empty["n_empty_mask"] == 1


def test_fixture_tree_is_self_contained(tmp_path):
    # the index needs annotations only: no JPEGImages folder at all
    root = tmp_path / "copy"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("JPEGImages"))
    df, _ = index_voc(root, ["trainval", "test"])
    assert len(df) == 5
