"""Demo VGG: VGG module layout, training reduces the loss, weights-only checkpoints, VOC AP."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from lrp.datasets.demo import DEMO_CLASSES, generate_demo
from lrp.io import sha256_file
from lrp.models.architectures import DemoResNet
from lrp.models.checkpoint import ARCHS, load_bundle, register_arch, save_bundle, write_model_card
from lrp.training.demo import DemoVGG, average_precision, evaluate_multilabel, train_demo_model

ALLOWED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Linear, nn.Sequential)
TINY = dict(image_size=32, width=4, hidden=16, batch_size=16, lr=3e-3, threads=1)


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "VOC2007"
    generate_demo(root, n_train=64, n_test=32, image_size=32, seed=5, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tiny_voc):
    return train_demo_model(tiny_voc, DEMO_CLASSES, epochs=4, seed=0, log=lambda _: None, **TINY)


def test_structure_matches_torchvision_vgg():
    m = DemoVGG(6)
    assert [n for n, _ in m.named_children()] == ["features", "avgpool", "classifier"]
    inner = list(m.modules())[1:]
    assert all(isinstance(mod, ALLOWED) for mod in inner), {type(x).__name__ for x in inner}
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    assert len(convs) == 6 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.features) == 3
    assert [type(x) for x in m.classifier] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    f = m.features(x)
    assert f.shape[-2:] == (8, 8) and torch.equal(m.avgpool(f), f), "avgpool must be the identity"
    assert torch.equal(m(x), m.classifier(torch.flatten(f, 1)))
    assert m(x).shape == (2, 6)
    with pytest.raises(ValueError, match="divisible"):
        DemoVGG(6, image_size=60)


def test_training_reduces_loss_and_sets_preprocessing(trained, tiny_voc):
    bundle, history = trained
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"] - 0.02, history
    assert not bundle.module.training
    assert bundle.input_size == 32 and bundle.class_names == list(DEMO_CLASSES)
    p = bundle.preprocessing
    assert p.std == (64.0, 64.0, 64.0) and p.channel_order == "RGB"
    assert all(60 < m < 200 for m in p.mean)
    # the training mean maps to exactly zero input (the occlusion check relies on it)
    img = torch.tensor(p.mean).round().to(torch.uint8).view(1, 1, 1, 3).expand(1, 32, 32, 3)
    assert p(img).abs().max() < 0.5 / 64 + 1e-6


def test_training_is_deterministic(trained, tiny_voc, tmp_path):
    again, history = train_demo_model(tiny_voc, DEMO_CLASSES, epochs=4, seed=0, log=lambda _: None, **TINY)
    assert [h["loss"] for h in history] == [h["loss"] for h in trained[1]]
    a, b = trained[0].module.state_dict(), again.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # same training -> byte-identical checkpoint (no timings or paths inside)
    assert save_bundle(trained[0], tmp_path / "a.pt") == save_bundle(again, tmp_path / "b.pt")


def test_checkpoint_round_trip(trained, tmp_path):
    bundle, history = trained
    path = tmp_path / "models" / "demo.pt"
    checksum = save_bundle(bundle, path)
    assert checksum == sha256_file(path) == bundle.checksum
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["arch"] == "demo_vgg" and raw["arch_kwargs"]["width"] == 4
    loaded = load_bundle(path)
    assert loaded.checksum == checksum and not loaded.module.training
    assert loaded.class_names == bundle.class_names and loaded.input_size == 32
    assert loaded.preprocessing == bundle.preprocessing and loaded.name == bundle.name
    x = bundle.preprocessing(torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), bundle.module(x))

    raw["arch"] = "nope"
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        load_bundle(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing.pt")
    raw["arch"], raw["info"] = "demo_vgg", {"obj": pytest.approx(1.0)}  # arbitrary object: refused
    torch.save(raw, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_bundle(tmp_path / "evil.pt")

    card = write_model_card({"name": bundle.name, "checksum": checksum, "metrics": {"mAP": float("nan")},
                             "thresholds": {"logit": 0.0}, "history": history}, tmp_path / "card.json")
    on_disk = json.loads((tmp_path / "card.json").read_text())
    assert on_disk == card and on_disk["metrics"]["mAP"] is None and "torch" in on_disk["versions"]
    with pytest.raises(ValueError, match="checksum"):
        write_model_card({"name": "x"}, tmp_path / "card2.json")


def test_checkpoint_bytes_do_not_depend_on_where_the_name_string_came_from(trained, tmp_path):
    """pickle writes a string once and refers back to it when the same object recurs: a name equal to the arch
    but read from a config file (another object) once gave the demo VGG another sha256 with the same weights."""
    bundle = trained[0]
    bundle.name = "demo_vgg"
    literal = save_bundle(bundle, tmp_path / "a.pt")
    bundle.name = "".join(["demo", "_vgg"])  # equal, not identical
    assert bundle.name is not "demo_vgg"  # noqa: F632
    assert save_bundle(bundle, tmp_path / "b.pt") == literal


def test_arch_registry_is_extensible():
    assert ARCHS["demo_vgg"] is DemoVGG
    register_arch("demo_vgg", DemoVGG)  # same builder again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_arch("demo_vgg", nn.Linear)


def test_average_precision_hand_case():
    # ranks: +, -, +, -  -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    ap11, ap_area = average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert ap11 == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)  # recall 0..0.5 -> 1, 0.6..1 -> 2/3
    assert ap_area == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # an ignored (difficult-only) top-scoring negative does not count
    assert average_precision([0.9, 0.8, 0.7], [0, 1, 1], ignore=[1, 0, 0]) == (1.0, 1.0)
    assert average_precision([0.9, 0.8], [0, 1]) == pytest.approx((6 / 11 * 0.5 + 5 / 11 * 0.5, 0.5))
    assert all(math.isnan(v) for v in average_precision([0.1, 0.2], [0, 0]))
    # recall hits exactly 0.6 (3 of 5): ranks + + + - - + +; the devkit's thresholds 0:0.1:1 count it at 0.6
    ap11, _ = average_precision([7, 6, 5, 4, 3, 2, 1], [1, 1, 1, 0, 0, 1, 1])
    assert ap11 == pytest.approx((7 * 1.0 + 4 * 5 / 7) / 11)  # t = 0..0.6 -> 1; t = 0.7..1 -> 5/7 (= 69/77)


def test_evaluate_multilabel(trained, tiny_voc):
    r = evaluate_multilabel(trained[0], tiny_voc, DEMO_CLASSES, "test")
    assert r["n_images"] == 32 and set(r["per_class_ap"]) == set(DEMO_CLASSES)
    assert 0 <= r["mAP"] <= 1 and 0 <= r["mAP_area"] <= 1 and 0 <= r["accuracy_at_0"] <= 1
    assert r["mAP"] == pytest.approx(np.nanmean(list(r["per_class_ap"].values())))
    with pytest.raises(ValueError, match="not outputs"):
        evaluate_multilabel(trained[0], tiny_voc, ["dog"], "test")


# ----------------------------------------------------------------------------- the demo's second model
def test_demo_resnet_has_torchvision_resnets_layout():
    """torchvision's BasicBlock in ResNet's module layout: what zennit's ResNetCanonizer (SequentialMergeBatchNorm
    walks the leaves in registration order) and our tracer know; each stage halves the side after the first."""
    from torchvision.models.resnet import BasicBlock

    m = DemoResNet(6, width=8, image_size=64, blocks=(1, 2, 1)).eval()
    assert [n for n, _ in m.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                   "avgpool", "fc"]
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [1, 2, 1]
    assert all(isinstance(b, BasicBlock) for s in (m.layer1, m.layer2, m.layer3) for b in s)
    assert m.layer1[0].downsample is None and m.layer2[1].downsample is None  # identity shortcuts
    assert m.layer2[0].downsample is not None and m.layer3[0].stride == 2
    x = torch.randn(2, 3, 64, 64)
    f = m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))))
    assert f.shape == (2, 32, 8, 8) and m(x).shape == (2, 6)
    assert m.arch_spec == {"name": "demo_resnet", "kwargs": {"n_classes": 6, "width": 8, "image_size": 64,
                                                             "blocks": [1, 2, 1]}}
    assert ARCHS["demo_resnet"] is DemoResNet
    with pytest.raises(ValueError, match="divisible"):
        DemoResNet(6, image_size=60)
    with pytest.raises(ValueError, match="beyond the sizes"):  # a hostile checkpoint's kwargs build no giant
        DemoResNet(6, width=4096, blocks=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="invalid"):
        DemoResNet(6, blocks=())


@pytest.fixture(scope="module")
def trained_resnet(tiny_voc):
    return train_demo_model(tiny_voc, DEMO_CLASSES, epochs=3, seed=0, log=lambda _: None, arch="demo_resnet",
                            name="demo_resnet", **TINY)


def test_demo_resnet_trains_learns_batchnorm_statistics_and_round_trips(trained_resnet, tiny_voc, tmp_path):
    bundle, history = trained_resnet
    assert history[-1]["loss"] < history[0]["loss"], history
    module = bundle.module
    assert isinstance(module, DemoResNet) and not module.training
    bn = module.layer2[0].bn1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))  # statistics were learned
    assert int(bn.num_batches_tracked) == 3 * 4  # 64 images / 16 per batch x 3 epochs
    again, _ = train_demo_model(tiny_voc, DEMO_CLASSES, epochs=3, seed=0, log=lambda _: None, arch="demo_resnet",
                                name="demo_resnet", **TINY)
    assert save_bundle(bundle, tmp_path / "a.pt") == save_bundle(again, tmp_path / "b.pt")  # deterministic
    loaded = load_bundle(tmp_path / "a.pt")
    assert type(loaded.module) is DemoResNet and loaded.name == "demo_resnet"
    assert torch.equal(loaded.module.layer2[0].bn1.running_var, bn.running_var)
    x = bundle.preprocessing(torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), module(x))
    r = evaluate_multilabel(loaded, tiny_voc, DEMO_CLASSES, "test")
    assert 0 <= r["mAP"] <= 1


def test_an_unknown_demo_architecture_is_refused(tiny_voc):
    with pytest.raises(ValueError, match="unknown demo architecture 'demo_vit'.*demo_vgg, demo_resnet"):
        train_demo_model(tiny_voc, DEMO_CLASSES, epochs=1, arch="demo_vit", log=lambda _: None, **TINY)
