"""Hostile data files (issue #17): paths from annotations, 16-bit images, image bombs, ImageNet index without
images. Every hostile input is built here, in tmp_path."""

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lrp.datasets.imagenet import index_imagenet, parse_imagenet_xml
from lrp.datasets.index import (
    Annotation,
    AnnotationError,
    UnsafePathError,
    finish_index,
    read_index,
    unit_row,
    unsafe_path_reason,
)
from lrp.datasets.voc import index_voc, read_image_set
from lrp.pipeline import data as data_stages
from lrp.storage import images
from lrp.storage.images import MAX_IMAGE_PIXELS, ImageDecodeError, load_rgb, read_image_shard, write_image_shard

from configs import dataset_entry

VOC = Path(__file__).parents[1] / "data" / "voc2007"
WNID = "n01751748"


def voc_tree(tmp_path, xmls: dict[str, str], ids: list[str]) -> Path:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, text in xmls.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(i + "\n" for i in ids))
    return root


def voc_xml(filename: str) -> str:
    """The real fixture 1.xml (<filename> on line 3) with another <filename>."""
    return (VOC / "Annotations" / "1.xml").read_text().replace("<filename>1.jpg</filename>",
                                                               f"<filename>{filename}</filename>")


def imagenet_xml(filename: str, width=40, height=30) -> str:
    return (f"<annotation>\n<filename>{filename}</filename>\n<size><width>{width}</width><height>{height}</height>"
            f"</size>\n<object><name>{WNID}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>9</xmax>"
            f"<ymax>9</ymax></bndbox></object>\n</annotation>\n")


def one_image_index(image_file: str, width=40, height=30) -> pd.DataFrame:
    ann = Annotation("x", image_file, width, height, [])
    return finish_index([unit_row(ann, "test", "x", 0, "c", [[0, 0, width // 2, height]], "warp", 16)])


def png_bytes(width: int, height: int, idat: bytes, depth=1, colour=0) -> bytes:
    """A PNG from its chunks: lets a test declare any size in the header at no cost."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def no_leftovers(folder: Path, name: str) -> bool:
    return not (folder / name).exists() and not list(folder.glob(f".{name}*"))


# ---------------------------------------------------------------- 2. paths from annotation files
@pytest.mark.parametrize("value, reason", [
    ("../../x.jpg", "has a '..' component"), ("sub/../../x.jpg", "has a '..' component"),
    ("/etc/passwd", "is an absolute path"), ("C:x.jpg", "starts with a drive letter"),
    ("C:\\x.jpg", "contains a backslash"), ("..\\x.jpg", "contains a backslash"),
    ("x\x00.jpg", "contains a NUL byte"), (".", "names no file"), ("./", "names no file"), ("", "names no file"),
])
def test_unsafe_path_reasons(value, reason):
    assert unsafe_path_reason(value).startswith(reason)


@pytest.mark.parametrize("value", ["000005.jpg", "sub/x.jpg", "./x.jpg", "..x.jpg", "a..b.JPEG"])
def test_plain_relative_paths_pass(value):
    assert unsafe_path_reason(value) is None


@pytest.mark.parametrize("filename, reason", [("../../x.jpg", "has a '..' component"),
                                              ("/etc/x.jpg", "is an absolute path")])
def test_voc_filename_outside_jpegimages_raises_or_is_a_counted_skip(tmp_path, filename, reason):
    root = voc_tree(tmp_path, {"bad": voc_xml(filename), "ok": voc_xml("1.jpg")}, ["bad", "ok"])
    with pytest.raises(AnnotationError) as err:
        index_voc(root, "test")
    assert str(err.value).startswith(f"{root / 'Annotations' / 'bad.xml'}:3: <filename> {filename!r} {reason}")
    df, report = index_voc(root, "test", on_error="skip")
    assert set(df["image_id"]) == {"ok"} and set(df["image_file"]) == {"1.jpg"}
    assert report["n_skipped_files"] == 1 and f"bad.xml:3: <filename> {filename!r}" in report["skipped_files"][0]


def test_voc_image_set_id_with_dotdot_names_the_line(tmp_path):
    root = voc_tree(tmp_path, {"ok": voc_xml("1.jpg")}, ["ok", "../../../outside"])
    with pytest.raises(AnnotationError, match=r"Main/test\.txt:2: image id '\.\./\.\./\.\./outside' has a '\.\.'"):
        read_image_set(root, "test")
    with pytest.raises(AnnotationError, match=r"test\.txt:2: "):
        index_voc(root, "test", on_error="skip")  # a malformed image set as a whole always raises


def test_imagenet_xml_filename_outside(tmp_path):
    boxes = tmp_path / "bbox"
    boxes.mkdir()
    (boxes / "a.xml").write_text(imagenet_xml("../../ILSVRC2012_val_00000001"))
    (boxes / "b.xml").write_text(imagenet_xml("ILSVRC2012_val_00000002"))
    with pytest.raises(AnnotationError, match=r"a\.xml:2: <filename> '\.\./\.\./ILSVRC2012_val_00000001' has a"):
        parse_imagenet_xml(boxes / "a.xml")
    df, report = index_imagenet(boxes, on_error="skip")
    assert df["image_file"].tolist() == ["ILSVRC2012_val_00000002.JPEG"]
    assert report["n_skipped"] == 1 and "a.xml:2: <filename>" in report["skipped"][0]


@pytest.fixture
def csv_with_escape(tmp_path):
    """val/ with one image; outside/ a valid image that only a '../' ImageId reaches."""
    val, outside = tmp_path / "val", tmp_path / "outside"
    val.mkdir()
    outside.mkdir()
    Image.new("RGB", (40, 30)).save(val / "ILSVRC2012_val_00000001.JPEG")
    Image.new("RGB", (40, 30)).save(outside / "ILSVRC2012_val_00000009.JPEG")
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNID} 0 0 9 9\n"
                   f"../outside/ILSVRC2012_val_00000009,{WNID} 0 0 9 9\n")
    return csv, val


def test_imagenet_csv_image_id_with_dotdot(csv_with_escape):
    csv, val = csv_with_escape
    with pytest.raises(AnnotationError) as err:
        index_imagenet(csv, image_dir=val)
    assert str(err.value).startswith(f"{csv}:3: ImageId '../outside/ILSVRC2012_val_00000009' has a '..' component")
    df, report = index_imagenet(csv, image_dir=val, on_error="skip")
    assert df["image_id"].tolist() == ["ILSVRC2012_val_00000001"]  # the outside image's size was never read
    assert report["n_skipped"] == 1 and report["skipped"][0].startswith(f"{csv}:3: ImageId")


def test_imagenet_csv_symlink_out_of_the_image_folder(csv_with_escape, tmp_path):
    csv, val = csv_with_escape
    (val / "ILSVRC2012_val_00000009.JPEG").symlink_to(tmp_path / "outside" / "ILSVRC2012_val_00000009.JPEG")
    csv.write_text(csv.read_text().replace("../outside/", ""))
    with pytest.raises(AnnotationError) as err:
        index_imagenet(csv, image_dir=val)
    assert str(err.value).startswith(f"{csv}:3: {val / 'ILSVRC2012_val_00000009.JPEG'}: resolves to "
                                     f"{tmp_path.resolve() / 'outside'}")
    assert "not inside the image folder" in str(err.value)


@pytest.mark.parametrize("image_file", ["../secret.jpg", "/abs/secret.jpg", "sub\\secret.jpg", "a\x00.jpg"])
def test_shard_refuses_hand_edited_image_file(tmp_path, image_file):
    images = tmp_path / "JPEGImages"
    images.mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "secret.jpg")
    index_csv = tmp_path / "samples.csv"
    one_image_index(image_file).to_csv(index_csv, index=False)  # the index stage would refuse this row
    with pytest.raises(UnsafePathError, match=f"{images}: image path .* must be relative"):
        write_image_shard(read_index(index_csv), 0, 1, images, "warp", 16, tmp_path / "s.h5")
    assert no_leftovers(tmp_path, "s.h5")


def test_shard_refuses_symlink_out_of_jpegimages_but_not_inside(tmp_path):
    images = tmp_path / "JPEGImages"
    images.mkdir()
    Image.new("RGB", (40, 30), (0, 0, 255)).save(images / "real.jpg")
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "secret.jpg")
    (images / "inside.jpg").symlink_to(images / "real.jpg")
    (images / "x.jpg").symlink_to(tmp_path / "secret.jpg")
    (images / "root.jpg").symlink_to(images)
    write_image_shard(one_image_index("inside.jpg"), 0, 1, images, "warp", 16, tmp_path / "ok.h5")
    assert (read_image_shard(tmp_path / "ok.h5")["images"][0][..., 2] > 200).all()
    for name in ("x.jpg", "root.jpg"):
        with pytest.raises(UnsafePathError, match=f"{images / name}: resolves to .*not inside the image folder"):
            write_image_shard(one_image_index(name), 0, 1, images, "warp", 16, tmp_path / "s.h5")
        assert no_leftovers(tmp_path, "s.h5")


# ---------------------------------------------------------------- 3. 16-bit images
GRADIENT = (np.arange(256, dtype=np.int64).reshape(8, 32) * 254).astype(np.uint16)  # 0..64770


@pytest.mark.parametrize("mode, dtype, fmt", [("I;16", np.uint16, "PNG"), ("I;16B", ">u2", "TIFF"),
                                              ("I", np.uint16, "PPM")])  # a 16-bit PGM opens as "I", 0..65535
def test_wide_grey_images_are_scaled_not_clipped(tmp_path, mode, dtype, fmt):
    path = tmp_path / f"g.{fmt.lower()}"
    Image.fromarray(GRADIENT.astype(dtype)).save(path, format=fmt)
    img, original = load_rgb(path)
    assert original == Image.open(path).mode and original.startswith("I")
    a = np.asarray(img)
    assert a.dtype == np.uint8 and a.shape == (8, 32, 3)
    np.testing.assert_array_equal(a[..., 0], GRADIENT >> 8)  # high byte: 254 grey levels, not clipped to 255
    assert len(np.unique(a)) == 254 and (a[..., 0] == a[..., 2]).all()


def test_sixteen_bit_grey_agrees_with_pil_sixteen_bit_rgb(tmp_path):
    v = np.array([[0, 255, 256, 32895, 32896, 65535]], dtype=">u2")
    raw = b"\x00" + np.repeat(v[..., None], 3, -1).tobytes()
    (tmp_path / "rgb16.png").write_bytes(png_bytes(6, 1, zlib.compress(raw), depth=16, colour=2))
    Image.fromarray(v.astype(np.uint16)).save(tmp_path / "grey16.png")
    grey, rgb = (np.asarray(load_rgb(tmp_path / n)[0]) for n in ("grey16.png", "rgb16.png"))
    assert grey[0, :, 0].tolist() == [0, 0, 1, 128, 128, 255]
    np.testing.assert_array_equal(grey, rgb)


I_TIFF = "32-bit integer image (mode I, format TIFF): its value range is undefined"


@pytest.mark.parametrize("image, message", [
    (Image.fromarray(np.full((4, 4), 0.5, np.float32)), "32-bit floating-point image (mode F)"),
    (Image.fromarray(np.arange(256, dtype=np.int32).reshape(8, 32)), I_TIFF),  # 0..255: >> 8 made it black
    (Image.fromarray(np.array([[-1, 70000]], np.int32)), I_TIFF),
    (Image.new("LAB", (4, 3), (50, 10, 200)), "CIELAB image (mode LAB): PIL's RGB conversion would copy L, a, b"),
])
def test_images_without_an_8_bit_mapping_are_refused(tmp_path, image, message):
    path = tmp_path / "odd.tif"
    image.save(path)
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(path)
    assert str(err.value).startswith(f"{path}: {message}")
    with pytest.raises(ImageDecodeError, match=r"image mode La: no meaningful conversion to 8-bit RGB"):
        images._to_rgb(path, Image.new("La", (2, 2)))  # no decoder yields La; any mode not known is refused


def test_eight_bit_modes_decode_as_before(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cases = {"rgb.jpg": Image.fromarray(rgb), "l.png": Image.fromarray(rgb[..., 0]),
             "p.png": Image.fromarray(rgb).quantize(16), "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
             "rgba.png": Image.fromarray(rgb).convert("RGBA"), "one.png": Image.fromarray(rgb[..., 0]).convert("1"),
             "la.png": Image.fromarray(rgb).convert("LA")}
    for name, im in cases.items():
        im.save(tmp_path / name)
        img, mode = load_rgb(tmp_path / name)
        with Image.open(tmp_path / name) as ref:
            assert mode == ref.mode == im.mode
            assert img.tobytes() == ref.convert("RGB").tobytes(), name


def test_sixteen_bit_image_in_a_shard(tmp_path):
    Image.fromarray(np.full((30, 40), 51400, np.uint16)).save(tmp_path / "d.png")
    summary = write_image_shard(one_image_index("d.png"), 0, 1, tmp_path, "warp", 16, tmp_path / "s.h5")
    assert summary["source_modes"] == {"I;16": 1}
    assert (read_image_shard(tmp_path / "s.h5")["images"] == 51400 >> 8).all()


# ---------------------------------------------------------------- 8. image bombs
def test_bomb_refused_from_the_header_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"  # 144 MP declared; the pixel data is garbage, so decoding it would fail otherwise
    bomb.write_bytes(png_bytes(12000, 12000, b"not zlib"))
    before = Image.MAX_IMAGE_PIXELS
    for action in ("ignore", "error"):  # PIL warns at open (its own limit); under -W error that warning raises
        with warnings.catch_warnings():
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            with pytest.raises(ImageDecodeError) as err:
                load_rgb(bomb)
        assert str(err.value).startswith(f"{bomb}: ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError) as err:
            load_rgb(bomb)
    assert str(err.value).startswith(f"{bomb}: image is 12000x12000 = 144,000,000 pixels, above the limit of "
                                     "89,478,485 (max_pixels); refused before decoding")
    huge = tmp_path / "huge.png"  # above twice PIL's limit: PIL refuses at open, also with max_pixels=None
    huge.write_bytes(png_bytes(15000, 15000, b"not zlib"))
    with pytest.raises(ImageDecodeError, match=r"huge\.png: cannot decode image: Image size \(225000000 pixels\)"):
        load_rgb(huge, max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == before == MAX_IMAGE_PIXELS  # PIL's global state untouched


def test_max_pixels_is_configurable_and_reaches_the_shard(tmp_path):
    Image.new("RGB", (40, 30), (0, 255, 0)).save(tmp_path / "g.png")
    assert load_rgb(tmp_path / "g.png", max_pixels=1200)[0].size == (40, 30)  # the bound is inclusive
    assert load_rgb(tmp_path / "g.png", max_pixels=None)[0].size == (40, 30)
    with pytest.raises(ImageDecodeError, match=r"g\.png: image is 40x30 = 1,200 pixels, above the limit of 1,199"):
        load_rgb(tmp_path / "g.png", max_pixels=1199)
    with pytest.raises(ImageDecodeError, match="above the limit of 1,000"):
        write_image_shard(one_image_index("g.png"), 0, 1, tmp_path, "warp", 16, tmp_path / "s.h5", max_pixels=1000)
    assert no_leftovers(tmp_path, "s.h5")


def imagenet_index(image_file: str, width: int, height: int, size: int) -> pd.DataFrame:
    ann = Annotation("x", image_file, width, height, [])
    return finish_index([unit_row(ann, "val", "x", 0, "c", [[0, 0, width, height]], "imagenet", size)])


def test_extreme_aspect_ratio_refused_from_the_header_before_resizing(tmp_path):
    """A 1 x 20000 image passes the input bound (20,000 pixels), but the ImageNet transform scales its short side
    to 224: the resized copy would be 224 x 4,480,000 pixels (3 GB of RGB) from a file of a few hundred bytes."""
    Image.new("L", (1, 20000), 128).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 1000
    with pytest.raises(ImageDecodeError) as err:
        write_image_shard(imagenet_index("thin.png", 1, 20000, 224), 0, 1, tmp_path, "imagenet", 224,
                          tmp_path / "s.h5")
    assert str(err.value).startswith(
        f"{tmp_path / 'thin.png'}: image is 1x20000, which the 'imagenet' transform to 224 would resize to "
        "224x4480000 = 1,003,520,000 pixels, above the limit of 89,478,485 (max_pixels); refused before decoding")
    assert "datasets.<name>.limits.image_pixels" in str(err.value) and no_leftovers(tmp_path, "s.h5")
    (tmp_path / "garbage.png").write_bytes(png_bytes(1, 20000, b"not zlib"))  # the header alone decides
    with pytest.raises(ImageDecodeError, match="would resize to 224x4480000"):
        write_image_shard(imagenet_index("garbage.png", 1, 20000, 224), 0, 1, tmp_path, "imagenet", 224,
                          tmp_path / "s.h5")
    # the bound is the configured one, inclusive; the warp transform (size x size) never grows an image
    Image.new("L", (1, 2000), 128).save(tmp_path / "small.png")  # imagenet to 16: 16 x 32000 = 512,000 pixels
    with pytest.raises(ImageDecodeError, match="16x32000 = 512,000 pixels, above the limit of 511,999"):
        write_image_shard(imagenet_index("small.png", 1, 2000, 16), 0, 1, tmp_path, "imagenet", 16,
                          tmp_path / "s.h5", max_pixels=511_999)
    write_image_shard(imagenet_index("small.png", 1, 2000, 16), 0, 1, tmp_path, "imagenet", 16, tmp_path / "s.h5",
                      max_pixels=512_000)
    assert (read_image_shard(tmp_path / "s.h5")["images"] == 128).all()
    write_image_shard(one_image_index("thin.png", 1, 20000), 0, 1, tmp_path, "warp", 16, tmp_path / "w.h5")
    assert read_image_shard(tmp_path / "w.h5")["images"].shape == (1, 16, 16, 3)


def test_csv_index_reports_a_bomb_header_as_a_skip(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    (val / "ILSVRC2012_val_00000001.JPEG").write_bytes(png_bytes(15000, 15000, b"not zlib"))
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNID} 0 0 9 9\n")
    df, report = index_imagenet(csv, image_dir=val, on_error="skip")
    assert len(df) == 0 and report["skipped"][0].startswith(f"{csv}:2: cannot read the size of ")
    assert "exceeds limit" in report["skipped"][0]


# ---------------------------------------------------------------- 11. ImageNet index from annotations alone
def test_imagenet_xml_index_needs_no_images_csv_says_it_does(tmp_path):
    boxes = tmp_path / "bbox"
    boxes.mkdir()
    (boxes / "v1.xml").write_text(imagenet_xml("ILSVRC2012_val_00000001"))
    absent = tmp_path / "no_images"
    expected, _ = index_imagenet(boxes)
    pd.testing.assert_frame_equal(index_imagenet(boxes, image_dir=absent)[0], expected)
    assert not absent.exists()
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNID} 0 0 9 9\n")
    with pytest.raises(FileNotFoundError) as err:
        index_imagenet(csv, image_dir=absent, on_error="skip")  # not 50,000 skips: one clear error
    assert str(err.value).startswith(f"{csv}: a Kaggle LOC_val_solution.csv has no image sizes, so indexing it "
                                     f"reads them from the val images, but the image folder {absent} does not exist")
    assert "official XML boxes" in str(err.value)
    with pytest.raises(ValueError, match=r"csv: a Kaggle .* needs the val images or their sizes"):
        index_imagenet(csv)


@pytest.mark.parametrize("images", [None, "absent", "missing key"])
def test_index_and_baseline_stages_without_images(tmp_path, images):
    boxes = tmp_path / "bbox"
    boxes.mkdir()
    (boxes / "v1.xml").write_text(imagenet_xml("ILSVRC2012_val_00000001"))
    info = {"annotations": str(boxes)}
    if images != "missing key":
        info["images"] = None if images is None else str(tmp_path / images)
    (tmp_path / "data.json").write_text(json.dumps(info))
    cfg = dataset_entry(format="imagenet", input_size=16, model="m", n_shards=1)
    data_stages.index(tmp_path / "data.json", cfg, tmp_path / "samples.csv", tmp_path / "index.json")
    data_stages.baseline(tmp_path / "samples.csv", tmp_path / "baseline.csv")
    assert read_index(tmp_path / "samples.csv")["image_file"].tolist() == ["ILSVRC2012_val_00000001.JPEG"]
    assert pd.read_csv(tmp_path / "baseline.csv").loc[0, "n_units"] == 1
    with pytest.raises(FileNotFoundError, match="image folder not found; the image shards need the images"):
        write_image_shard(read_index(tmp_path / "samples.csv"), 0, 1, info.get("images"), "imagenet", 16,
                          tmp_path / "s.h5")
    assert no_leftovers(tmp_path, "s.h5")
