"""Image shards: decoding odd images, transform agreement with the index, dedup, round trip, batches."""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lrp.datasets.boxes import make_transform, union_mask
from lrp.datasets.imagenet import index_imagenet
from lrp.datasets.index import Annotation, finish_index, index_image_folder, unit_row
from lrp.datasets.voc import index_voc
from lrp.storage.images import (
    ImageDecodeError,
    iter_shard_batches,
    load_rgb,
    read_image_shard,
    read_shard_attrs,
    shard_ranges,
    shard_size,
    write_image_shard,
)

TESTS = Path(__file__).parents[1] / "data"
VOC = TESTS / "voc2007"
IMAGENET = TESTS / "imagenet"


@pytest.fixture(scope="module")
def voc_index():
    df, _ = index_voc(VOC, "trainval")  # images 1.jpg, 2.jpg; 4 (image, class) samples
    return df


def test_shard_ranges():
    assert shard_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_ranges(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert shard_ranges(0, 2) == [(0, 0), (0, 0)]
    for n, k in [(1, 1), (17, 5), (50000, 64)]:
        r = shard_ranges(n, k)
        assert r[0][0] == 0 and r[-1][1] == n and all(a[1] == b[0] for a, b in zip(r, r[1:]))
        sizes = [b - a for a, b in r]
        assert max(sizes) - min(sizes) <= 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_shards"):
            shard_ranges(10, bad)


def test_load_rgb_converts_odd_modes(tmp_path):
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.jpg"
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L").save(gray)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    png = tmp_path / "png_in_jpeg.JPEG"  # PNG content under a JPEG name (as n02105855_2933 in ILSVRC train)
    Image.new("RGBA", (30, 20), (10, 20, 30, 128)).save(png, format="PNG")
    for path, mode in [(gray, "L"), (cmyk, "CMYK"), (png, "RGBA")]:
        img, original = load_rgb(path)
        assert original == mode and img.mode == "RGB" and img.size == (30, 20)
    g = np.asarray(load_rgb(gray)[0])
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    r = np.asarray(load_rgb(cmyk)[0]).astype(int)
    assert (r[..., 0] > 200).all() and (r[..., 1:] < 60).all()
    assert np.asarray(load_rgb(png)[0])[0, 0].tolist() == [10, 20, 30]


def test_truncated_and_garbage_images_name_the_file(tmp_path):
    data = (VOC / "JPEGImages" / "1.jpg").read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"trunc\.jpg: cannot decode image: image file is truncated"):
        load_rgb(trunc)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match=r"junk\.jpg"):
        load_rgb(junk)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg: image not found"):
        load_rgb(tmp_path / "missing.jpg")


def test_voc_shard_round_trip_and_dedup(tmp_path, voc_index):
    out = tmp_path / "shard0.h5"
    summary = write_image_shard(voc_index, 0, 1, VOC / "JPEGImages", "warp", 224, out, workers=2)
    assert summary == {"n_samples": 4, "n_images": 2, "source_modes": {"RGB": 2}}
    s = read_image_shard(out)
    assert s["images"].shape == (2, 224, 224, 3) and s["images"].dtype == np.uint8
    assert s["image_row"].tolist() == [0, 0, 1, 1] and s["image_file"].tolist() == ["1.jpg", "2.jpg"]
    assert s["sample_id"].tolist() == voc_index["sample_id"].tolist()
    assert s["class_index"].tolist() == voc_index["class_index"].tolist()
    np.testing.assert_array_equal(s["box_fraction"], voc_index["box_fraction"])
    assert s["masks"].dtype == bool and s["masks"].shape == (4, 224, 224)
    for mask, boxes, frac in zip(s["masks"], voc_index["boxes"], voc_index["box_fraction"]):
        np.testing.assert_array_equal(mask, union_mask(json.loads(boxes), 224))
        assert mask.mean() == frac
    # the image went through the same transform object the index used
    img, _ = load_rgb(VOC / "JPEGImages" / "2.jpg")
    expect = np.asarray(make_transform("warp", 500, 332, 224).apply_image(img))
    np.testing.assert_array_equal(s["images"][1], expect)
    attrs = read_shard_attrs(out)
    assert {k: attrs[k] for k in ("shard", "n_shards", "transform", "size", "row_start", "row_stop")} == {
        "shard": 0, "n_shards": 1, "transform": "warp", "size": 224, "row_start": 0, "row_stop": 4}
    with h5py.File(out) as h5:  # one chunk per image / per sample, compressed
        assert h5["images"].chunks == (1, 224, 224, 3) and h5["images"].compression == "lzf"
        assert h5["masks"].chunks == (1, 224, 224)
    assert not list(tmp_path.glob(".*tmp*"))


def test_shards_split_contiguously_and_batches(tmp_path, voc_index):
    counts = []
    for k in range(3):  # 4 samples -> 2, 1, 1; image 2.jpg lands in shards 1 and 2
        write_image_shard(voc_index, k, 3, VOC / "JPEGImages", "warp", 224, tmp_path / f"s{k}.h5", workers=1)
        s = read_image_shard(tmp_path / f"s{k}.h5")
        counts.append((len(s["sample_id"]), len(s["images"])))
    assert counts == [(2, 1), (1, 1), (1, 1)]
    whole = tmp_path / "all.h5"
    write_image_shard(voc_index, 0, 1, VOC / "JPEGImages", "warp", 224, whole)
    s = read_image_shard(whole)
    batches = list(iter_shard_batches(whole, 3))
    assert [len(b.sample_id) for b in batches] == [3, 1]
    images, masks, cls, sid, source = (np.concatenate(x) for x in zip(*batches))
    np.testing.assert_array_equal(images, s["images"][s["image_row"]])
    assert source.tolist() == voc_index[["width", "height"]].to_numpy().tolist()  # the original sizes, per sample
    np.testing.assert_array_equal(masks, s["masks"])
    assert cls.tolist() == s["class_index"].tolist() and sid.tolist() == s["sample_id"].tolist()
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_shard_batches(whole, 0))
    no_images = list(iter_shard_batches(whole, 3, load_images=False))
    assert all(b.images is None for b in no_images)
    np.testing.assert_array_equal(np.concatenate([b.masks for b in no_images]), s["masks"])
    unique = list(iter_shard_batches(whole, 1, unique_images=True))
    assert len(unique) == 2 and unique[0].sample_id is None
    np.testing.assert_array_equal(np.concatenate([b.images for b in unique]), s["images"])
    n, ids, size = shard_size(whole)
    assert (n, ids.tolist(), size) == (4, s["sample_id"].tolist(), 224)
    empty = tmp_path / "empty.h5"  # more shards than samples: valid, empty shard
    write_image_shard(voc_index.iloc[:1], 1, 2, VOC / "JPEGImages", "warp", 224, empty)
    assert read_image_shard(empty)["images"].shape == (0, 224, 224, 3)
    assert list(iter_shard_batches(empty, 4)) == []


def test_imagenet_shard_centre_crop(tmp_path):
    sizes = {"ILSVRC2012_val_00011670": (500, 402), "ILSVRC2012_val_00033712": (768, 1024),
             "ILSVRC2012_val_00042581": (480, 640)}
    csv = tmp_path / "LOC_val_solution.csv"
    lines = (IMAGENET / "metadata" / "LOC_val_solution.excerpt.csv").read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [line for line in lines if line.split(",")[0] in sizes]) + "\n")
    df, _ = index_imagenet(csv, image_sizes=sizes)
    out = tmp_path / "imagenet.h5"
    write_image_shard(df, 0, 1, IMAGENET / "val", "imagenet", 224, out, workers=2)
    s = read_image_shard(out)
    assert s["images"].shape == (3, 224, 224, 3) and s["image_row"].tolist() == [0, 1, 2]
    for i, (image_file, (w, h)) in enumerate(zip(df["image_file"], zip(df["width"], df["height"]))):
        img, _ = load_rgb(IMAGENET / "val" / image_file)
        expect = np.asarray(make_transform("imagenet", w, h, 224).apply_image(img))
        np.testing.assert_array_equal(s["images"][i], expect)
    np.testing.assert_allclose(s["masks"].mean((1, 2)), df["box_fraction"])


def _one_image_index(name, width, height):
    ann = Annotation(Path(name).stem, name, width, height, [])
    return finish_index([unit_row(ann, "test", ann.image_id, 0, "c", [[0, 0, width // 2, height]], "warp", 16)])


def test_odd_images_in_a_shard_and_errors(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    Image.new("L", (40, 30), 77).save(images / "g.jpg")
    Image.new("CMYK", (40, 30), (0, 0, 0, 0)).save(images / "c.jpg")
    df = pd.concat([_one_image_index(n, 40, 30) for n in ("c.jpg", "g.jpg")], ignore_index=True)
    summary = write_image_shard(df, 0, 1, images, "warp", 16, tmp_path / "odd.h5", workers=2)
    assert summary["source_modes"] == {"CMYK": 1, "L": 1}
    assert json.loads(read_shard_attrs(tmp_path / "odd.h5")["source_modes"]) == {"CMYK": 1, "L": 1}
    s = read_image_shard(tmp_path / "odd.h5")
    assert s["images"].shape == (2, 16, 16, 3) and (np.abs(s["images"][1].astype(int) - 77) <= 2).all()
    assert s["masks"][0].sum() == 8 * 16

    # a truncated image stops the shard, names the file and leaves no output file behind
    data = (VOC / "JPEGImages" / "1.jpg").read_bytes()
    (images / "t.jpg").write_bytes(data[: len(data) // 3])
    bad = _one_image_index("t.jpg", 500, 375)
    with pytest.raises(ImageDecodeError, match=r"t\.jpg: cannot decode image"):
        write_image_shard(bad, 0, 1, images, "warp", 16, tmp_path / "bad.h5", workers=2)
    assert not (tmp_path / "bad.h5").exists() and not list(tmp_path.glob(".bad.h5*"))

    # an image whose size disagrees with the index (wrong folder, stale index)
    wrong = _one_image_index("g.jpg", 41, 30)
    with pytest.raises(ImageDecodeError, match=r"g\.jpg: image is 40x30 but the index says 41x30"):
        write_image_shard(wrong, 0, 1, images, "warp", 16, tmp_path / "w.h5")
    # an index built for another input size
    with pytest.raises(ValueError, match="built for size 8"):
        write_image_shard(df, 0, 1, images, "warp", 8, tmp_path / "w.h5")
    with pytest.raises(ValueError, match="unknown transform"):
        write_image_shard(df, 0, 1, images, "crop", 16, tmp_path / "w.h5")
    with pytest.raises(ValueError, match="not an image shard"):
        with h5py.File(tmp_path / "x.h5", "w") as h5:
            h5["images"] = np.zeros(1)
        read_image_shard(tmp_path / "x.h5")


def test_unannotated_image_folder_for_patterns(tmp_path):
    train = tmp_path / "train"
    for wnid in ("n01440764", "n01443537", "nonclass"):
        (train / wnid).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40 + k, 30), (k * 50, 0, 0)).save(train / wnid / f"{wnid}_{k}.JPEG")
    (train / "notes.txt").write_text("not an image")
    df, report = index_image_folder(train, size=16)
    assert len(df) == 9 and report["n_files"] == 9 and report["n_classes"] == 2
    row = df.set_index("sample_id").loc["n01443537/n01443537_2"]
    assert (row.image_file, row.class_index, row.width, row.n_boxes, row.box_fraction) == (
        "n01443537/n01443537_2.JPEG", 1, 42, 0, 0.0)
    assert (df.loc[df["image_file"].str.startswith("nonclass"), "class_index"] == -1).all()
    sub, _ = index_image_folder(train, limit=4, seed=1)
    assert len(sub) == 4 and sub.equals(index_image_folder(train, limit=4, seed=1)[0])
    write_image_shard(sub, 0, 1, train, "imagenet", 16, tmp_path / "p.h5", workers=2)
    images = np.concatenate([b.images for b in iter_shard_batches(tmp_path / "p.h5", 3, unique_images=True)])
    assert images.shape == (4, 16, 16, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no images"):
        index_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        index_image_folder(tmp_path / "missing")
