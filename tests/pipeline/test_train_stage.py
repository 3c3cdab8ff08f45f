"""The train_model stage (workflow rule train_model) for the demo recipes, in-process on a tiny demo set: the file
it writes is a checkpoint the `arch: checkpoint` path loads, and every analyzer explains the trained ResNet from
one forward pass exactly as one at a time (its BatchNorms merged, its residual sums split)."""

from __future__ import annotations

import json

import pytest
import torch

import lrp
from lrp.datasets.demo import DEMO_CLASSES, generate_demo
from lrp.models.architectures import DemoResNet, DemoVGG
from lrp.models.zoo import load_model
from lrp.pipeline.model import train_model

SPEC = dict(classes="demo", epochs=2, batch_size=16, lr=0.003, seed=0, threads=1, input_size=32,
            onednn_max_cpu_isa="ALL", dataset="demo")


@pytest.fixture(scope="module")
def data_json(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage")
    root = tmp / "VOCdevkit" / "DEMO"
    generate_demo(root, n_train=48, n_test=24, image_size=32, seed=3, progress=False)
    path = tmp / "data.json"
    path.write_text(json.dumps({"root": str(root)}))
    return path


@pytest.mark.parametrize("recipe, cls", [("demo_vgg", DemoVGG), ("demo_resnet", DemoResNet)])
def test_the_stage_trains_the_recipes_architecture(data_json, tmp_path, recipe, cls):
    out, card = tmp_path / "model.pt", tmp_path / "training.json"
    train_model(data_json, {**SPEC, "recipe": recipe, "name": f"m_{recipe}"}, out, card)
    bundle = load_model({"arch": "checkpoint", "weights": str(out), "name": "m"})
    assert type(bundle.module) is cls and bundle.class_names == list(DEMO_CLASSES)
    written = json.loads(card.read_text())
    assert written["name"] == recipe and written["checksum"] == bundle.checksum  # named by the architecture
    assert 0 <= written["metrics"]["test"]["mAP"] <= 1 and len(written["history"]) == 2
    if recipe == "demo_resnet":
        x = bundle.preprocessing(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
        targets = torch.tensor([0, 1, 2, 5])
        names = ["lrp_cmp_alpha2_flat", "lrp_cmp_alpha1", "lrp_z", "guided_backprop", "gradient"]
        together = lrp.attribute_many(bundle.module, x, targets, names, bias="toolbox")  # as config/demo.yaml
        for name in names:
            own = lrp.composites.option_names(lrp.composites.get(name))
            one = lrp.attribute(bundle.module, x, targets, name, **({"bias": "toolbox"} if "bias" in own else {}))
            assert torch.allclose(together[name], one, atol=1e-6, rtol=0)
        xg = x.clone().requires_grad_(True)
        bundle.module(xg).gather(1, targets[:, None]).sum().backward()
        assert torch.allclose(together["lrp_z"], xg.grad * x, atol=1e-5 * float(together["lrp_z"].abs().max()))


def test_an_unknown_recipe_is_refused_naming_the_key(data_json, tmp_path):
    with pytest.raises(ValueError, match=r"models.m.train.recipe: unknown recipe 'demo_vit' \(demo_vgg, demo_resnet"):
        train_model(data_json, {**SPEC, "recipe": "demo_vit", "name": "m"}, tmp_path / "m.pt", tmp_path / "c.json")
