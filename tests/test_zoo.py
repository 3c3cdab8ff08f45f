"""Model zoo: torchvision state dicts behind torch.hub's hash-prefix check, Keras and checkpoint dispatch, errors."""

from __future__ import annotations

import hashlib
import sys
import types

import numpy as np
import pytest
import torch
import torchvision

from lrp.models.base import ModelBundle, Preprocessing
from lrp.models.zoo import load_model

try:  # tests/ is on sys.path under pytest's default (rootdir-less) import mode ...
    from test_keras_import import small_vgg, write_keras_h5
except ImportError:  # ... or a package, if tests/__init__.py is ever added
    from tests.test_keras_import import small_vgg, write_keras_h5


def save_with_hash_name(state, folder, stem):
    """torch.save, then rename to `<stem>-<sha256[:8]>.pth` as torch.hub names its files."""
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(folder / f"{stem}-{digest[:8]}.pth")


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A random-weight torchvision VGG-16 state dict (528 MB; built once for the module)."""
    torch.manual_seed(0)
    ref = torchvision.models.vgg16(weights=None).eval()
    return ref, save_with_hash_name(ref.state_dict(), tmp_path_factory.mktemp("vgg"), "vgg16")


def test_torchvision_vgg16_loads_and_matches_forward(vgg16_file):
    ref, path = vgg16_file
    bundle = load_model({"name": "tv", "arch": "torchvision_vgg16", "weights": str(path)})
    assert bundle.name == "tv" and bundle.input_size == 224 and bundle.n_classes == 1000
    assert bundle.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert bundle.info["official_weights"] is False
    assert not bundle.module.training and not any(p.requires_grad for p in bundle.module.parameters())
    assert not any(getattr(m, "inplace", False) for m in bundle.module.modules())
    pre = bundle.preprocessing
    assert pre.channel_order == "RGB"
    np.testing.assert_allclose(pre.mean, (123.675, 116.28, 103.53))
    np.testing.assert_allclose(pre.std, (58.395, 57.12, 57.375))

    x = torch.randn(1, 3, 64, 64)  # any size runs (adaptive avgpool); small keeps the test fast on 2 cores
    with torch.no_grad():
        torch.testing.assert_close(bundle.module(x), ref(x), rtol=0, atol=0)


def test_wrong_hash_prefix_is_rejected(tmp_path):
    wrong = save_with_hash_name({"features.0.weight": torch.zeros(2, 3, 3, 3)}, tmp_path, "vgg16")
    wrong = wrong.rename(tmp_path / "vgg16-397923af.pth")  # the official name, but not the official file
    with pytest.raises(ValueError, match=r"vgg16-397923af\.pth: sha256 [0-9a-f]{64} does not start with.*397923af"):
        load_model({"name": "tv", "arch": "torchvision_vgg16", "weights": str(wrong)})


def test_file_name_without_hash_is_rejected(tmp_path):
    path = tmp_path / "vgg16.pth"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"vgg16\.pth.*no sha256 prefix.*vgg16-397923af\.pth"):
        load_model({"name": "tv", "arch": "torchvision_vgg16", "weights": str(path)})


def test_wrong_architecture_state_dict_is_rejected(tmp_path):
    path = save_with_hash_name({"features.0.weight": torch.zeros(2, 3, 3, 3)}, tmp_path, "alexnet-owt")
    with pytest.raises(ValueError, match=r"alexnet-owt-[0-9a-f]{8}\.pth: not a torchvision_alexnet state dict"):
        load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(path)})


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    path = save_with_hash_name({"x": Evil()}, tmp_path, "alexnet-owt")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(path)})


def test_missing_weights_name_the_config_key(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=rf"models\.paper_vgg\.weights: file not found: {missing}"):
        load_model({"name": "paper_vgg", "arch": "keras_vgg16", "weights": str(missing)})
    with pytest.raises(ValueError, match=r"models\.paper_vgg\.weights: required"):
        load_model({"name": "paper_vgg", "arch": "keras_vgg16"})
    with pytest.raises(ValueError, match=r"models\.paper_vgg\.arch: unknown architecture 'resnet'"):
        load_model({"name": "paper_vgg", "arch": "resnet", "weights": str(missing)})


def test_keras_vgg16_through_the_zoo(tmp_path):
    layers = small_vgg(np.random.default_rng(0), size=224, n_out=1000, c=(2, 2), hidden=8)
    path = write_keras_h5(tmp_path / "vgg16.h5", layers)
    bundle = load_model({"name": "paper_vgg", "arch": "keras_vgg16", "weights": str(path)})
    assert bundle.name == "paper_vgg" and bundle.preprocessing.channel_order == "BGR"
    assert not bundle.module.training and not any(p.requires_grad for p in bundle.module.parameters())
    with pytest.raises(ValueError, match="MD5 mismatch"):
        load_model({"name": "paper_vgg", "arch": "keras_vgg16", "weights": str(path), "verify": True})


def test_checkpoint_branch_freezes_the_loaded_bundle(tmp_path, monkeypatch):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"stub")
    seen = []

    def load_bundle(p):
        seen.append(p)
        module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(inplace=True)).train()
        return ModelBundle(module, Preprocessing(mean=(0.0, 0.0, 0.0)), 8, ["a", "b"], "ckpt")

    monkeypatch.setitem(sys.modules, "lrp.models.checkpoint", types.SimpleNamespace(load_bundle=load_bundle))
    bundle = load_model({"name": "voc", "arch": "checkpoint", "weights": str(path)})
    assert [str(p) for p in seen] == [str(path)]
    assert bundle.name == "voc" and not bundle.module.training
    assert not any(p.requires_grad for p in bundle.module.parameters())
    assert bundle.module[1].inplace is False
