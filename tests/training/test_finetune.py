"""PVOC fine-tuning (lrp.training.finetune): loss, VOC labels, id exclusion, VOC07 AP, bit-identical resume,
weights-only checkpoints, ImageNet init, and the train_model rule run through Snakemake on CPU."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torch import nn

from lrp.datasets.demo import DEMO_CLASSES, generate_demo
from lrp.io import sha256_file
from lrp.models.base import ModelBundle
from lrp.models.checkpoint import save_bundle
from lrp.models.zoo import TORCHVISION_PREPROCESSING, load_model
from lrp.training.finetune import (
    ARCH_NAME,
    _init_model,
    evaluate_voc,
    finetune_alexnet,
    load_state,
    multilabel_loss,
    read_voc_labels,
    select_ids,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(epochs=2, batch_size=40, input_size=64, threads=2, device="cpu", log=lambda _: None)  # 1 step/epoch


@pytest.fixture(scope="module")
def demo_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft") / "VOC"
    generate_demo(root, n_train=40, n_test=20, image_size=64, seed=3, progress=False)
    return root


def _xml(image_id: str, objects) -> str:
    objs = "".join(
        f"<object><name>{name}</name>"
        + ("" if diff is None else f"<difficult>{diff}</difficult>")
        + "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object>"
        for name, diff in objects)
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>32</width><height>24</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture(scope="module")
def hand_voc(tmp_path_factory):
    """Four solid-colour images, classes a/b; red encodes the score of a, green that of b."""
    root = tmp_path_factory.mktemp("hand") / "VOC2012"
    items = [  # id, objects (name, difficult; None = no <difficult> tag), RGB
        ("2007_000001", [("a", 0)], (230, 51, 0)),
        ("2008_000002", [("a", 1)], (204, 128, 0)),            # a: difficult only -> ignored for a
        ("2008_000003", [("b", None)], (178, 102, 0)),         # missing <difficult> = not difficult
        ("2008_000004", [("a", 1), ("a", 0), ("b", 1)], (153, 25, 0)),  # a present; b difficult only
    ]
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    for image_id, objects, rgb in items:
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, objects))
        Image.new("RGB", (32, 24), rgb).save(root / "JPEGImages" / f"{image_id}.jpg", quality=100)
    ids = [i for i, _, _ in items]
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids) + "\n")
    (root / "ImageSets/Main/train.txt").write_text("2008_000002\n2008_000003\n")
    return root, ids


def test_hinge_and_bce_loss_by_hand():
    logits = torch.tensor([[2.0, -0.5, 0.3], [0.2, 1.0, -3.0]], requires_grad=True)
    labels = torch.tensor([[1, -1, 0], [-1, 0, 1]], dtype=torch.int8)  # 0 = difficult only: masked
    # hinge, y in {+1, -1}: image 1: max(0, 1-2) + max(0, 1-0.5) = 0.5; image 2: max(0, 1.2) + max(0, 1+(-3)*-1)=5.2
    hinge = multilabel_loss(logits, labels, "hinge")
    assert hinge.item() == pytest.approx((0.5 + 5.2) / 2)
    hinge.backward()
    assert logits.grad[0, 2] == 0 and logits.grad[1, 1] == 0  # masked terms get no gradient
    assert logits.grad[0, 0] == 0 and logits.grad[1, 0] == pytest.approx(0.5)  # margin met / d(1.2)/df / 2
    # BCE: mean of the 4 unmasked terms log(1 + e^-f) (present) and log(1 + e^f) (absent)
    bce = multilabel_loss(logits.detach(), labels, "bce")
    hand = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(0.2))
            + math.log1p(math.exp(3.0))) / 4
    assert bce.item() == pytest.approx(hand, rel=1e-6)
    moved = logits.detach().clone()
    moved[0, 2], moved[1, 1] = 50.0, -50.0  # changing masked logits changes nothing
    assert multilabel_loss(moved, labels, "bce").item() == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        multilabel_loss(logits, labels, "softmax")


def test_labels_difficult_and_exclude_prefix(hand_voc, demo_voc):
    root, ids = hand_voc
    labels = read_voc_labels(root, ids, ["a", "b"])
    assert labels.tolist() == [[1, -1], [0, -1], [-1, 1], [1, 0]]
    with pytest.raises(ValueError, match="'b' is not one of the model's classes"):
        read_voc_labels(root, ids, ["a"])
    # VOC 2012 re-uses VOC 2007 images as 2007_*: excluded by default; splits are merged without duplicates
    assert select_ids(root, ["test"]) == (ids[1:], 1)
    assert select_ids(root, ["train", "test"], exclude_prefix=None) == (
        ["2008_000002", "2008_000003", "2007_000001", "2008_000004"], 0)
    kept, n_out = select_ids(demo_voc, ["train"], exclude_prefix="00001")
    assert n_out == 10 and len(kept) == 30 and not any(i.startswith("00001") for i in kept)


def test_voc07_evaluation_hand_case(hand_voc):
    """Scores = per-channel means (red -> a, green -> b) of solid-colour images, so the ranking is known."""

    class ChannelMeans(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))[:, :2]

    root, _ = hand_voc
    bundle = ModelBundle(module=ChannelMeans(), preprocessing=TORCHVISION_PREPROCESSING, input_size=16,
                         class_names=["a", "b"], name="stub")
    r = evaluate_voc(bundle, root, "test")
    # a: ranking 1(+) 2(ignored: difficult only) 3(-) 4(+) -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    ap_a, area_a = (6 * 1 + 5 * 2 / 3) / 11, 0.5 * 1 + 0.5 * 2 / 3
    # b: positives {3}; 4 is ignored (difficult only); ranking 2(-) 3(+) 1(-) -> precision 1/2 at recall 1
    ap_b, area_b = 0.5, 0.5
    assert r["per_class_ap"] == pytest.approx({"a": ap_a, "b": ap_b})
    assert r["per_class_ap_area"] == pytest.approx({"a": area_a, "b": area_b})
    assert r["mAP"] == pytest.approx((ap_a + ap_b) / 2) and r["mAP_area"] == pytest.approx((area_a + area_b) / 2)
    assert r["mAP_kind"] == "VOC07 11-point" and r["n_images"] == 4 and r["split"] == "test"


def test_resume_after_kill_is_bit_identical(demo_voc, tmp_path):
    full, hist_full = finetune_alexnet(demo_voc, DEMO_CLASSES, state_path=tmp_path / "a.pt", num_workers=0, **FAST)

    class Killed(Exception):
        pass

    def killer(msg):
        if "epoch 1/2" in msg:
            raise Killed

    state_path = tmp_path / "b.pt"
    with pytest.raises(Killed):
        finetune_alexnet(demo_voc, DEMO_CLASSES, state_path=state_path, num_workers=0, **{**FAST, "log": killer})
    state = torch.load(state_path, weights_only=True)  # plain data only
    assert state["epoch"] == 1 and set(state["rng"]) >= {"torch", "numpy", "python", "loader"}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
    # resumed with DataLoader workers: augmentation is seeded per (seed, epoch, image), so workers don't matter
    resumed, hist = finetune_alexnet(demo_voc, DEMO_CLASSES, state_path=state_path, num_workers=2, **FAST)
    a, b = full.module.state_dict(), resumed.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in hist] == [h["loss"] for h in hist_full] and hist[1].get("resumed")
    assert save_bundle(full, tmp_path / "full.pt") == save_bundle(resumed, tmp_path / "resumed.pt")
    assert load_state(state_path)["epoch"] == 2

    # a checkpoint of a different training (other seed) is not resumed from
    logs = []
    other, _ = finetune_alexnet(demo_voc, DEMO_CLASSES, state_path=state_path, num_workers=0,
                                **{**FAST, "seed": 1, "log": logs.append})  # only the seed differs
    assert any("DIFFERENT training" in m for m in logs) and any("RANDOM initialisation" in m for m in logs)
    assert not all(torch.equal(a[k], other.module.state_dict()[k]) for k in a)
    assert load_state(state_path)["epoch"] == FAST["epochs"]


def test_imagenet_init_is_verified(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    raw = tmp_path / "alexnet.pth"
    torch.save(state, raw)
    path = tmp_path / f"alexnet-owt-{sha256_file(raw)[:8]}.pth"
    raw.rename(path)
    model, sha = _init_model(6, path, "models.m.train", lambda _: None)
    assert sha == sha256_file(path)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert torch.equal(model.classifier[4].weight, state["classifier.4.weight"])
    assert model.classifier[6].weight.shape == (6, 4096)
    bad = tmp_path / "alexnet-owt-00000000.pth"
    path.rename(bad)
    with pytest.raises(ValueError, match=r"models\.m\.train\.init_weights: .*does not start with the prefix"):
        _init_model(6, bad, "models.m.train", lambda _: None)
    with pytest.raises(FileNotFoundError, match=r"models\.m\.train\.init_weights: file not found"):
        _init_model(6, tmp_path / "nope.pth", "models.m.train", lambda _: None)


def _snakemake(*args, cwd, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory):
    """The train_model rule of config/ci_finetune.yaml, run once through Snakemake: its working folder."""
    cwd = tmp_path_factory.mktemp("rule")
    _snakemake("--cores", "2", "--configfile", ROOT / "config" / "ci_finetune.yaml", "--",
               "results/models/demo_alexnet/model.pt", cwd=cwd)
    return cwd


def test_finetune_rule_runs_on_cpu(rule_run):
    tmp_path = rule_run
    out = tmp_path / "results" / "models" / "demo_alexnet"
    bundle = load_model({"name": "demo_alexnet", "arch": "checkpoint", "weights": str(out / "model.pt")})
    assert bundle.info["arch"]["name"] == ARCH_NAME and bundle.module.classifier[6].out_features == 6
    assert bundle.class_names == list(DEMO_CLASSES) and bundle.input_size == 64
    assert bundle.preprocessing == TORCHVISION_PREPROCESSING
    with torch.no_grad():
        assert bundle.module(torch.zeros(1, 3, 64, 64)).shape == (1, 6)
    card = json.loads((out / "training.json").read_text())
    assert card["checksum"] == bundle.checksum and card["recipe"] == "finetune_alexnet"
    assert [h["epoch"] for h in card["history"]] == [1, 2] and all("val_mAP" in h for h in card["history"])
    assert 0 <= card["metrics"]["test"]["mAP"] <= 1 and card["train"]["init_sha256"] is None
    assert not (out / "finetune_state.pt").exists()  # dropped once the card is written
    assert (tmp_path / "results" / "benchmarks" / "train_model" / "demo_alexnet.tsv").is_file()
    log = (tmp_path / "results" / "logs" / "train_model" / "demo_alexnet.log").read_text()
    assert "RANDOM initialisation" in log and "epoch 2/2" in log


def test_finetuned_bundle_loads_in_a_fresh_process(rule_run):
    weights = rule_run / "results" / "models" / "demo_alexnet" / "model.pt"
    code = ("from lrp.models.zoo import load_model; "
            f"b = load_model({{'arch': 'checkpoint', 'weights': {str(weights)!r}}}); print(b.n_classes)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "6", p.stderr[-2000:]


def _edit_recipes(cfg):
    m = cfg["models"]
    m["demo_vgg"] = {**m["demo_alexnet"], "train": {"dataset": "demo", "loss": "hinge"}}  # demo recipe: no loss
    m["demo_alexnet"]["train"].pop("init_weights")  # finetune_alexnet: init_weights is required (null allowed)


@pytest.mark.parametrize("edit, messages", [
    (_edit_recipes, [r"models\.demo_vgg\.train: 'loss' is not one of \['recipe', 'dataset'",
                     r"models\.demo_alexnet\.train: 'init_weights' is a required property"]),
    (lambda c: c["models"]["demo_alexnet"]["train"].update(data="voc2012"),
     [r"models\.demo_alexnet\.train\.data: 'voc2012' is not a key of `training_data`"]),
])
def test_bad_train_config_is_a_clear_error(tmp_path, edit, messages):
    cfg = yaml.safe_load((ROOT / "config" / "ci_finetune.yaml").read_text())
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = _snakemake("-n", "--configfile", path, "--", "results/models/demo_alexnet/model.pt", cwd=tmp_path,
                   check=False)
    assert p.returncode != 0 and all(re.search(m, p.stdout + p.stderr) for m in messages), \
        (p.stdout + p.stderr)[-3000:]


def test_model_card_map_separates_11_point_and_area():
    """lrp.pipeline.model._multilabel_map: `mAP` is the 11-point (VOC07 interpolation) mean, `mAP_area` the area
    mean (not a mix)."""
    import pandas as pd

    from lrp.pipeline.model import _multilabel_map

    idx = pd.DataFrame({"image_id": ["i0", "i1", "i2", "i2"], "class_index": [0, 1, 0, 1]})
    # one logit row per unit; the first row of an image is its score vector
    logits = np.array([[0.9, 0.1], [0.8, 0.5], [0.7, 0.2], [0.7, 0.2]])
    r = _multilabel_map(idx, logits)
    # class 0: +, -, + -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; class 1: i1 (0.5) then i2 (0.2), both +
    ap11_0, area_0 = (6 * 1 + 5 * 2 / 3) / 11, 0.5 * 1 + 0.5 * 2 / 3
    assert r["mAP"] == pytest.approx((ap11_0 + 1.0) / 2) and r["mAP_area"] == pytest.approx((area_0 + 1.0) / 2)
    assert (r["mAP_kind"].startswith("11-point AP over the evaluated images")
            and r["n_images"] == 3 and r["n_classes_evaluated"] == 2)


def test_training_data_entry_is_located(hand_voc, tmp_path):
    from lrp.datasets.acquire_errors import AcquisitionError
    from lrp.training.finetune import prepare_training_data

    src, ids = hand_voc
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "Annotations"
    voc.mkdir(parents=True)
    (voc / f"{ids[0]}.xml").write_text((src / "Annotations" / f"{ids[0]}.xml").read_text())
    info = prepare_training_data("voc2012", {"format": "voc", "source": "local", "year": 2012,
                                             "root": str(tmp_path / "data")}, tmp_path / "out" / "data.json")
    assert info["root"] == str(voc.parent) and json.loads((tmp_path / "out" / "data.json").read_text()) == info
    with pytest.raises(AcquisitionError, match=r"training_data\.voc2012\.root"):
        prepare_training_data("voc2012", {"format": "voc", "source": "local", "year": 2012,
                                          "root": str(tmp_path / "nope")}, tmp_path / "x.json")
