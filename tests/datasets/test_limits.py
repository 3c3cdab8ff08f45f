"""The config's `datasets.<name>.limits` reach the checks they set: archive extraction in the data stage, image
decoding in the image-shard stage (docs/threat_model.md). Unset, the library's defaults apply."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lrp.datasets import acquire
from lrp.io import md5_file
from lrp.pipeline import data as data_stages
from lrp.pipeline.config import ConfigError, check_schema

from configs import dataset_entry

ROOT = Path(__file__).resolve().parents[2]
VOC = ROOT / "tests" / "data" / "voc2007"
TRAINVAL = ROOT / "tests" / "data" / "acquire" / "voc2007_trainval"


def _voc_cfg(**extra) -> dict:
    keys = dict(format="voc", source="local", splits=["trainval", "test"], classes="voc", input_size=64, model="m",
                n_shards=1)
    return dataset_entry(**{**keys, **extra})


def test_limits_keys_are_validated(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    cfg["datasets"]["demo"]["limits"] = {"archive_bytes": 10**9, "archive_members": 100, "image_pixels": 10**6}
    check_schema(cfg, ROOT / "config" / "schema.yaml")
    cfg["datasets"]["demo"]["limits"] = {"image_pixels": 0}
    with pytest.raises(ConfigError, match=r"datasets\.demo\.limits\.image_pixels"):
        check_schema(cfg, ROOT / "config" / "schema.yaml")
    cfg["datasets"]["demo"]["limits"] = {"pixels": 5}
    with pytest.raises(ConfigError, match=r"datasets\.demo\.limits"):
        check_schema(cfg, ROOT / "config" / "schema.yaml")


def test_archive_limit_reaches_the_data_stage(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()
    tar = root / "VOCtrainval_06-Nov-2007.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(TRAINVAL / "VOCdevkit", arcname="VOCdevkit")
    registry = acquire.load_registry()
    spec = registry["voc2007_trainval"]
    assert spec.filename == tar.name
    # the registry's MD5 belongs to the real archive: a test tar is checked against its own
    registry = {"voc2007_trainval": acquire.ArchiveSpec.from_mapping(
        "voc2007_trainval", {"filename": tar.name, "md5": md5_file(tar)}, "test")}
    out = tmp_path / "results" / "voc" / "data.json"
    out.parent.mkdir(parents=True)
    real = acquire.load_registry
    try:
        acquire.load_registry = lambda *a, **k: registry
        with pytest.raises(acquire.AcquisitionError, match=r"beyond the limit max_bytes=100; nothing was extracted"
                                                           r".*datasets\.<name>\.limits\.archive_bytes"):
            data_stages.data("voc", _voc_cfg(root=str(root), limits={"archive_bytes": 100}), out)
        assert not out.exists() and not (root / "VOCdevkit").exists()
        data_stages.data("voc", _voc_cfg(root=str(root)), out)  # the default limit lets it through
    finally:
        acquire.load_registry = real
    assert (root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "2.jpg").is_file()
    assert json.loads(out.read_text())["images"].endswith("VOC2007/JPEGImages")


def test_pixel_limit_reaches_the_image_shard_stage(tmp_path):
    voc = tmp_path / "VOC2007"
    shutil.copytree(VOC, voc)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"root": str(voc), "annotations": str(voc), "images": str(voc / "JPEGImages")}))
    cfg = _voc_cfg(splits=["trainval"])
    data_stages.index(data, cfg, tmp_path / "samples.csv", tmp_path / "report.json")
    out = tmp_path / "images.h5"
    with pytest.raises(ValueError, match=r"JPEGImages/.*above the limit of 100 \(max_pixels\).*"
                                         r"datasets\.<name>\.limits\.image_pixels"):
        data_stages.image_shard(data, tmp_path / "samples.csv",
                                {**cfg, "limits": {**cfg["limits"], "image_pixels": 100}}, 0, 1, out, 1)
    assert not out.exists() and not list(tmp_path.glob(".images.h5*"))
    data_stages.image_shard(data, tmp_path / "samples.csv", cfg, 0, 1, out, 1)
    assert out.stat().st_size > 0
