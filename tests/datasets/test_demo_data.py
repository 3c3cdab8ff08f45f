"""The procedural demo set: deterministic, valid real-VOC layout/XML, box sizes spanning 0–100 %."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image

from lrp.datasets.catalog import DEMO_CLASSES
from lrp.datasets.demo import generate_demo


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _parse(xml: Path) -> dict:
    ann = etree.parse(str(xml)).getroot()
    assert ann.tag == "annotation"
    size = ann.find("size")
    w, h, d = (int(size.findtext(k)) for k in ("width", "height", "depth"))
    objs = []
    for ob in ann.findall("object"):
        bb = ob.find("bndbox")
        objs.append(dict(name=ob.findtext("name"), pose=ob.findtext("pose"),
                         truncated=int(ob.findtext("truncated")), difficult=int(ob.findtext("difficult")),
                         box=tuple(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return dict(filename=ann.findtext("filename"), folder=ann.findtext("folder"), w=w, h=h, d=d, objects=objs)


@pytest.fixture(scope="module")
def demo300(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "VOC2007"
    summary = generate_demo(root, n_train=200, n_test=100, seed=0, progress=False)
    return root, summary


def test_generator_is_byte_identical_across_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo(a, n_train=12, n_test=6, seed=3, progress=False)
    generate_demo(b, n_train=12, n_test=6, seed=3, progress=False)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db and len(da) > 36
    generate_demo(b, n_train=12, n_test=6, seed=4, progress=False)
    assert _tree_digest(b) != da, "a different seed must give different data"
    assert not [p for p in b.rglob(".*tmp-*")], "temporary files left behind"


def test_voc_layout_and_image_sets(demo300):
    root, summary = demo300
    main = root / "ImageSets" / "Main"
    train = (main / "train.txt").read_text().split()
    test = (main / "test.txt").read_text().split()
    assert len(train) == 200 and len(test) == 100 and not set(train) & set(test)
    assert (main / "trainval.txt").read_text().split() == train
    assert all(len(i) == 6 and i.isdigit() for i in train + test)
    for i in train[:5] + test[-5:]:
        assert (root / "Annotations" / f"{i}.xml").is_file()
        with Image.open(root / "JPEGImages" / f"{i}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
    for c in DEMO_CLASSES:
        for split, ids in (("train", train), ("test", test)):
            rows = [ln.split() for ln in (main / f"{c}_{split}.txt").read_text().splitlines()]
            assert [r[0] for r in rows] == ids
            assert {r[1] for r in rows} <= {"1", "0", "-1"}
    assert summary["n_images"] == 300 and summary["splits"]["test"] == 100


def test_xml_is_valid_voc_and_labels_agree(demo300):
    root, _ = demo300
    main = root / "ImageSets" / "Main"
    label = {c: dict(ln.split() for ln in (main / f"{c}_train.txt").read_text().splitlines())
             for c in DEMO_CLASSES}
    n_difficult = n_truncated = 0
    for xml in sorted((root / "Annotations").glob("*.xml")):
        a = _parse(xml)
        assert a["filename"] == xml.stem + ".jpg" and a["folder"] == "VOC2007"
        assert (a["w"], a["h"], a["d"]) == (64, 64, 3)
        assert a["objects"], f"{xml}: VOC images have at least one object"
        for o in a["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 1 <= x0 <= x1 <= a["w"] and 1 <= y0 <= y1 <= a["h"], f"{xml}: box {o['box']} (1-based)"
            assert o["name"] in DEMO_CLASSES and o["pose"] == "Unspecified"
            assert o["difficult"] in (0, 1) and o["truncated"] in (0, 1)
            n_difficult += o["difficult"]
            n_truncated += o["truncated"]
        if xml.stem in label["disc"]:  # a train image: per-class files must match the XML (VOC rule)
            for c in DEMO_CLASSES:
                flags = [o["difficult"] for o in a["objects"] if o["name"] == c]
                want = "-1" if not flags else ("0" if all(flags) else "1")
                assert label[c][xml.stem] == want, (xml, c)
    assert n_difficult > 0 and n_truncated > 0


def test_box_fractions_span_the_whole_range_and_all_classes_appear(demo300):
    root, summary = demo300
    fractions, per_class = [], dict.fromkeys(DEMO_CLASSES, 0)
    for xml in sorted((root / "Annotations").glob("*.xml")):
        a = _parse(xml)
        masks: dict[str, np.ndarray] = {}
        for o in a["objects"]:
            x0, y0, x1, y1 = o["box"]
            m = masks.setdefault(o["name"], np.zeros((a["h"], a["w"]), bool))
            m[y0 - 1:y1, x0 - 1:x1] = True
            per_class[o["name"]] += 1
        fractions += [m.mean() for m in masks.values()]
    f = np.array(fractions)
    assert len(f) > 450, "a few hundred images should give several hundred (image, class) pairs"
    assert f.min() < 0.05 and f.max() > 0.95
    assert (f <= 0.01).sum() >= 10 and (f >= 0.99).sum() >= 5
    hist = np.histogram(f, bins=10, range=(0, 1))[0]
    assert hist.min() >= 10, f"every tenth of the size range needs samples, got {hist}"
    assert min(per_class.values()) >= 50, per_class
    assert summary["objects_per_class"] == per_class


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown demo classes"):
        generate_demo(tmp_path, n_train=1, n_test=0, classes=("disc", "dog"), progress=False)
    with pytest.raises(ValueError, match="positive number"):
        generate_demo(tmp_path, n_train=0, n_test=0, progress=False)
