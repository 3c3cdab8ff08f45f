"""The paper's ImageNet layout through every rule on a CPU in seconds, and its index from the box XMLs alone."""

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from snakemake_run import ROOT, dry_run_jobs, snakemake


def imagenet_study(tmp_path: Path) -> Path:
    """A tiny ImageNet-format study laid out as users set up the paper's VGG-16 run: the real val JPEGs of
    tests/data/imagenet in a folder, their boxes in Kaggle's LOC_val_solution.csv, a train/<wnid>/ folder the
    PatternAttribution patterns are learned from, and torchvision AlexNet weights (seeded random: the real
    file cannot be downloaded here) at 64² so that it runs on a CPU in seconds."""
    import torch
    import torchvision

    data = tmp_path / "data" / "imagenet"
    shutil.copytree(ROOT / "tests" / "data" / "imagenet" / "val", data / "val")
    ids = sorted(p.stem for p in (data / "val").glob("*.JPEG"))
    rows = [line for line in (ROOT / "tests" / "data" / "imagenet" / "metadata" / "LOC_val_solution.excerpt.csv")
            .read_text().splitlines()[1:] if line.split(",")[0] in ids]
    assert len(rows) == len(ids)
    (data / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    for i, src in enumerate(sorted((data / "val").glob("*.JPEG")) * 2):  # 6 training images of 2 classes
        wnid = ("n01440764", "n01443537")[i % 2]
        (data / "train" / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, data / "train" / wnid / f"{wnid}_{i}.JPEG")
    torch.manual_seed(0)
    raw = tmp_path / "data" / "models" / "alexnet_random.pth"
    raw.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), raw)
    weights = raw.with_name(f"alexnet_random-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth")  # torch.hub
    raw.rename(weights)  # names carry their sha256 prefix, which the zoo checks
    cfg = {
        "results": "results",
        "datasets": {"imagenet": {
            "format": "imagenet", "source": "local", "images": "data/imagenet/val",
            "boxes": "data/imagenet/LOC_val_solution.csv", "classes": "imagenet", "input_size": 64,
            "model": "alexnet", "n_shards": 2, "paper": "imagenet", "task": "single_label",
            "patterns": {"images": "data/imagenet/train", "max_images": 4}, "panel_samples": ids[:2]}},
        "models": {"alexnet": {"arch": "torchvision_alexnet", "weights": str(weights), "bias": "innvestigate"}},
        "analyzers": {"lrp_cmp_alpha1_flat": {}, "lrp_z": {}, "pattern_attribution": {}, "gradient": {},
                      "baseline": {}},
        "attribution": {"batch_size": 2, "device": "cpu", "precision": "float32", "threads": 1},
        "evaluation": {"n_boot": 20, "seed": 0},
        "preprocess": {"workers": 1},
        "report": {"panel": {"n_images": 2}},
    }
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
def test_imagenet_study_end_to_end(tmp_path):
    """The paper's ImageNet path through every rule that reads the format: local val folder + LOC csv boxes,
    patterns learned from a train/<wnid>/ folder (not from the val images), single-label units, Table 1 beside
    the paper's block."""
    cfg = imagenet_study(tmp_path)
    # what depends on the data format; the format-free rules after Tables 1 and 2 (Figs. 2 and 3, faithfulness,
    # summary, provenance) are the demo run's (test_workflow.py): a job costs a Python start of CI's minutes
    targets = [f"results/imagenet/{f}" for f in ("table1.csv", "table2.csv", "fig1_analyzers.png")]
    snakemake(*targets, "--cores", "2", "--configfile", cfg, cwd=tmp_path)
    res = tmp_path / "results" / "imagenet"
    samples = pd.read_csv(res / "samples.csv")
    assert len(samples) == 3 and (samples["n_boxes"] == 1).all()
    with h5py.File(res / "pattern_images.h5") as h:  # the 4 training images (reading them from val/ failed)
        ids = [s.decode() if isinstance(s, bytes) else s for s in h["sample_id"][:]]
    assert len(ids) == 4 and not any(i.startswith("ILSVRC2012_val") for i in ids), ids
    table = pd.read_csv(res / "table1.csv").set_index("analyzer")
    assert set(table.index) == {"lrp_cmp_alpha1_flat", "lrp_z", "pattern_attribution", "gradient", "baseline"}
    assert table.loc["baseline", "mu_w"] == pytest.approx(1.0)
    assert table["paper_mu"].notna().any()  # compared with the paper's ImageNet block
    maps = []
    for shard in (0, 1):
        with h5py.File(res / "attributions" / "pattern_attribution" / f"{shard}.h5") as h:
            maps.append(h["relevance"][:])
    assert [len(m) for m in maps] == [2, 1] and all(np.isfinite(m).all() for m in maps)
    assert max(np.abs(m).max() for m in maps) > 0  # (4 training images leave some output patterns at 0)
    assert dry_run_jobs(tmp_path, "--configfile", cfg, "--cores", "1", *targets) == {}


def test_imagenet_index_and_baseline_need_only_the_box_xmls(tmp_path):
    """The index and the Baseline row build from the box XMLs alone (no val images on the machine); the image
    shards then stop with one line naming the missing images."""
    from PIL import Image

    cfg_path = imagenet_study(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    val, xmls = tmp_path / "data" / "imagenet" / "val", tmp_path / "data" / "imagenet" / "boxes"
    xmls.mkdir()
    for line in (val.parent / "LOC_val_solution.csv").read_text().splitlines()[1:]:
        image_id, boxes = line.split(",")
        wnid, *xyxy = boxes.split()
        with Image.open(val / f"{image_id}.JPEG") as im:
            width, height = im.size
        x0, y0, x1, y1 = xyxy[:4]
        (xmls / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size><object><name>{wnid}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>\n")
    shutil.rmtree(val)
    cfg["datasets"]["imagenet"].update(boxes="data/imagenet/boxes", images="data/imagenet/ILSVRC2012_img_val.tar")
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake("results/imagenet/baseline.csv", "--cores", "1", "--configfile", cfg_path, cwd=tmp_path)
    res = tmp_path / "results" / "imagenet"
    assert len(pd.read_csv(res / "samples.csv")) == 3
    assert pd.read_csv(res / "baseline.csv").notna().all().all()
    p = snakemake("results/imagenet/images/0.h5", "--cores", "1", "--configfile", cfg_path, cwd=tmp_path,
                  check=False)
    assert p.returncode != 0
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("ERROR in rule images:")]
    assert len(errors) == 1 and "`datasets.imagenet.images` = data/imagenet/ILSVRC2012_img_val.tar" in errors[0]
    assert "Traceback" not in (tmp_path / "results" / "logs" / "images" / "imagenet.log").read_text()
    assert not (res / "images.json").exists() and not (res / "images").exists()


