"""Data stages (workflow/rules/data.smk): get a dataset's annotations and images onto disk, index its
evaluation units, the uniform Baseline row, image shards."""

from __future__ import annotations

import json
from pathlib import Path

from lrp.datasets.catalog import RESIZE, class_list
from lrp.io import log, write_json


def _archive_limits(cfg: dict) -> dict:
    """`datasets.<name>.limits` (defaults in config/schema.yaml) as keywords of the archive extraction."""
    return {"max_bytes": cfg["limits"]["archive_bytes"], "max_members": cfg["limits"]["archive_members"]}


def data(name: str, cfg: dict, out_json):
    """Make a dataset's annotations available and record where they are (data.json). VOC and the demo keep
    their images beside the annotations; ImageNet's images are the `images` stage's business, except for
    Kaggle's box CSV, which has no image sizes, so that indexing it needs the images here already."""
    source = cfg["source"]
    if source == "demo":
        from lrp.datasets.demo import generate_demo

        root = Path(out_json).parent / "VOCdevkit" / "DEMO"
        d = cfg["demo"]
        log(f"generating the demo data set in {root}")
        summary = generate_demo(root, n_train=d["n_train"], n_test=d["n_test"], image_size=cfg["input_size"],
                                seed=d["seed"], max_objects=d["max_objects"])
        info = {"root": str(root), "annotations": str(root), "images": str(root / "JPEGImages"), "demo": summary}
    elif cfg["format"] == "voc":
        from lrp.datasets.acquire import prepare_voc

        root = prepare_voc(cfg.get("root"), download=source == "download", key=f"datasets.{name}.root",
                           **_archive_limits(cfg))
        info = {"root": str(root), "annotations": str(root), "images": str(Path(root) / "JPEGImages")}
    else:
        from lrp.datasets.acquire import is_box_csv, prepare_imagenet_boxes

        boxes = prepare_imagenet_boxes(cfg.get("boxes"), key=f"datasets.{name}",
                                       work_dir=Path(out_json).parent / "raw", **_archive_limits(cfg))
        info = {"annotations": str(boxes)}
        if is_box_csv(boxes):
            info["images"] = str(_imagenet_images(name, cfg, out_json))
    write_json(info, out_json)
    log(f"data {name}: {info}")


def _imagenet_images(name: str, cfg: dict, out_json) -> Path:
    from lrp.datasets.acquire import prepare_imagenet_images

    return prepare_imagenet_images(cfg.get("images"), key=f"datasets.{name}",
                                   work_dir=Path(out_json).parent / "raw", **_archive_limits(cfg))


def images(name: str, cfg: dict, data_json, out_json):
    """Make a dataset's images available and record where they are (images.json): what the image shards
    read. Kept apart from `data` so that the index and the Baseline row need only the annotation files."""
    info = json.loads(Path(data_json).read_text())
    folder = info.get("images") or _imagenet_images(name, cfg, out_json)
    write_json({"images": str(folder)}, out_json)
    log(f"images {name}: {folder}")


def index(data_json, cfg: dict, out_csv, report_json, key: str = "datasets.<name>"):
    """The evaluation units of a dataset, from annotation files alone. With `cfg["pattern_images"]` (the
    patterns' index, ImageNet format): the training JPEGs of that folder; `key` names it in errors."""
    from lrp.datasets.index import write_index

    info = json.loads(Path(data_json).read_text())
    size, on_error = cfg["input_size"], cfg["on_error"]
    if cfg.get("pattern_images"):  # ImageNet patterns: a plain folder of training JPEGs, no annotations
        from lrp.datasets.index import index_image_folder

        if not Path(cfg["pattern_images"]).is_dir():
            raise FileNotFoundError(f"{key}.patterns.images: {cfg['pattern_images']!r} is not a folder of "
                                    f"training JPEGs")
        df, report = index_image_folder(cfg["pattern_images"], size=size, limit=cfg.get("max_samples"))
    elif cfg["format"] == "voc":
        from lrp.datasets.voc import index_voc
        df, report = index_voc(info["annotations"], cfg["splits"], classes=class_list(cfg["classes"]),
                               size=size, on_error=on_error, rounding=cfg["box_rounding"])
    else:
        from lrp.datasets.imagenet import index_imagenet
        df, report = index_imagenet(info["annotations"], size=size, on_error=on_error, image_dir=info.get("images"),
                                    rounding=cfg["box_rounding"])
    if cfg.get("max_samples"):
        df = df.iloc[: cfg["max_samples"]]
        report = {**report, "truncated_to": cfg["max_samples"]}
    write_index(df, out_csv)
    write_json({**report, "n_samples": len(df)}, report_json)
    log(f"index: {len(df)} evaluation units -> {out_csv}")


def baseline(index_csv, out_csv, tolerance: float = 15):
    """The paper's Baseline row (uniform attribution) and the pointing game's centre baseline (TorchRay's
    `center`: the image centre as the point), from the index alone -> baseline.csv."""
    from lrp.datasets.index import baseline_stats, read_index, write_baseline
    from lrp.evaluation.pointing import all_difficult, centre_points, parse_boxes, point_hits, pointing_game

    df = read_index(index_csv)
    boxes = parse_boxes(df["source_boxes"], str(index_csv))
    hits = point_hits(centre_points(df["width"], df["height"]), boxes, tolerance)
    pg = pointing_game(hits, df["class_index"], skip=all_difficult(df["difficult"], str(index_csv),
                                                                   n_boxes=[len(b) for b in boxes]))
    stats = {**baseline_stats(df), "pointing": pg["pointing"], "pointing_pairs": pg["pointing_pairs"],
             "n_pointing_pairs": pg["n_pairs"], "n_pointing_skipped": pg["n_skipped"]}
    write_baseline(stats, out_csv)


def image_shard(data_json, index_csv, cfg: dict, shard: int, n_shards: int, out_h5, workers: int):
    from lrp.datasets.index import read_index
    from lrp.storage.images import write_image_shard

    info = json.loads(Path(data_json).read_text())
    image_dir = cfg.get("pattern_images") or info.get("images")  # the patterns' training JPEGs, or the data's
    if image_dir is None:
        raise ValueError(f"{data_json}: records no image folder; the image shards need the images")
    write_image_shard(read_index(index_csv), shard, n_shards, image_dir, transform=RESIZE[cfg["format"]],
                      size=cfg["input_size"], out_path=out_h5, workers=workers,
                      max_pixels=cfg["limits"]["image_pixels"])
