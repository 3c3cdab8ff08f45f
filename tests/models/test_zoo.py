"""Model zoo: torchvision state dicts behind torch.hub's hash-prefix check, Keras and checkpoint dispatch, errors."""

from __future__ import annotations

import hashlib
import re
import sys
import types
import zipfile
from pathlib import Path

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


# ----------------------------------------------------------------------------------------------- hostile weight files


def _tiny_checkpoint(folder):
    """A DemoVGG bundle saved by save_bundle (a few KB) and its module."""
    from lrp.models.checkpoint import save_bundle
    from lrp.training.demo import DemoVGG

    torch.manual_seed(0)
    module = DemoVGG(n_classes=3, width=2, image_size=16, blocks=(1,), hidden=4).eval()
    bundle = ModelBundle(module, Preprocessing(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0)), 16, ["a", "b", "c"], "tiny")
    path = folder / "model.pt"
    save_bundle(bundle, path)
    return path, module


def _resaved(path, edit, name="bad.pt"):
    """The checkpoint at `path` loaded as plain data, edited in place by `edit`, saved under `name`."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    out = path.with_name(name)
    torch.save(payload, out)
    return out


def test_checkpoint_round_trip_through_the_zoo(tmp_path):
    path, module = _tiny_checkpoint(tmp_path)
    bundle = load_model({"name": "tiny", "arch": "checkpoint", "weights": str(path)})
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(bundle.module(x), module(x))
    assert bundle.preprocessing == Preprocessing(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert bundle.class_names == ["a", "b", "c"] and bundle.input_size == 16


def _set_state(key, value):
    return lambda p: p["state_dict"].update({key: value})


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(arch_kwargs="n_classes=3"), r"'arch_kwargs' is a str, expected dict"),
    (lambda p: p.pop("preprocessing"), r"missing key\(s\) \['preprocessing'\] and unexpected key\(s\) \[\]"),
    (lambda p: p.update(extra=1), r"missing key\(s\) \[\] and unexpected key\(s\) \['extra'\]"),
    (lambda p: p.update(input_size="16"), r"'input_size' is a str, expected int"),
    (lambda p: p.update(input_size=True), r"'input_size' is a bool, expected int"),
    (lambda p: p.update(input_size=0), r"input_size 0 must be at least 1"),
    (lambda p: p.update(class_names=["a", 2, "c"]), r"class_names\[1\] is a int, expected a str"),
    (lambda p: p.update(state_dict=[1, 2]), r"'state_dict' is a list, expected dict"),
    (lambda p: p["arch_kwargs"].update(depth=9), r"arch_kwargs \{.*'depth': 9\} do not fit architecture 'demo_vgg'"),
    (lambda p: p["arch_kwargs"].update(blocks="xy"), r"arch_kwargs .* do not fit architecture 'demo_vgg'"),
    (lambda p: p["arch_kwargs"].update(n_classes=list(range(5000))), r"'arch_kwargs' is implausibly large"),
    (lambda p: p["info"].update(t=torch.zeros(2)), r"info\.t: Tensor is not a plain type"),
    (lambda p: p["preprocessing"].update(mean="abc"), r"preprocessing\.mean is 'abc', expected 3 finite numbers"),
    (lambda p: p["preprocessing"].update(std=[1.0, float("nan"), 1.0]), r"preprocessing\.std is \[1\.0, nan"),
    (lambda p: p["preprocessing"].update(std=[1.0, 0.0, 1.0]), r"preprocessing: std must be positive"),
    (lambda p: p["preprocessing"].pop("channel_order"), r"'preprocessing' has keys \['mean', 'std'\]"),
    (lambda p: p["state_dict"].pop("classifier.6.bias"), r"does not fit demo_vgg\(.*\): missing key\(s\) "
                                                         r"\['classifier\.6\.bias'\]"),
    (lambda p: p["state_dict"].update(extra=torch.zeros(1)), r"unexpected key\(s\) \['extra'\]"),
    (_set_state("features.0.weight", torch.zeros(2, 3, 5, 5)),
     r"'features\.0\.weight' has shape \(2, 3, 5, 5\), expected \(2, 3, 3, 3\)"),
    (_set_state("features.0.weight", torch.zeros(2, 3, 3, 3, dtype=torch.float64)),
     r"'features\.0\.weight' has dtype torch\.float64, expected torch\.float32"),
    (_set_state("features.0.bias", [0.0, 0.0]), r"'features\.0\.bias' is a list, expected a dense torch\.float32"),
    (_set_state("features.0.bias", torch.zeros(2).to_sparse()), r"'features\.0\.bias' is a torch\.sparse_coo tensor"),
    (_set_state("features.0.weight", torch.zeros(2, 3, 3, 3).index_fill_(1, torch.tensor([1]), float("nan"))),
     r"'features\.0\.weight': 18 of 54 values are non-finite \(18 NaN, 0 ±Inf\); such weights give NaN"),
    (_set_state("classifier.6.bias", torch.tensor([0.0, float("inf"), -float("inf")])),
     r"'classifier\.6\.bias': 2 of 3 values are non-finite \(0 NaN, 2 ±Inf\)"),
], ids=["kwargs-str", "missing-key", "extra-key", "size-str", "size-bool", "size-0", "class-int", "state-list",
        "kwargs-unknown", "kwargs-bad", "kwargs-huge", "info-tensor", "mean-str", "std-nan", "std-0", "pre-keys",
        "state-missing", "state-extra", "shape", "dtype", "not-tensor", "sparse", "state-nan", "state-inf"])
def test_bad_checkpoint_payload_names_file_and_key(tmp_path, edit, message):
    from lrp.models.base import WeightFileError

    bad = _resaved(_tiny_checkpoint(tmp_path)[0], edit)
    with pytest.raises(WeightFileError, match=rf"^{re.escape(str(bad))}: .*{message}"):
        load_model({"name": "tiny", "arch": "checkpoint", "weights": str(bad)})


def test_checkpoint_sizing_a_huge_network_is_refused_unallocated(tmp_path):
    """arch_kwargs that make a 38 GB DemoVGG (the largest the builder accepts), with matching stride-0 tensors of a
    few bytes each: refused from the meta-device shapes and the file's size; building it for real would fail
    allocating (or be OOM-killed). Beyond the builder's bounds, the kwargs themselves are refused."""
    from lrp.models.base import WeightFileError
    from lrp.training.demo import DemoVGG

    path, _ = _tiny_checkpoint(tmp_path)
    huge = _resaved(path, lambda p: p.update(arch_kwargs=dict(n_classes=3, width=2**30, image_size=16, blocks=[1],
                                                                hidden=4)), name="huge.pt")
    with pytest.raises(WeightFileError, match=r"huge\.pt: arch_kwargs .* do not fit architecture 'demo_vgg': "
                                              r"DemoVGG config beyond the sizes a demo model has"):
        load_model({"name": "tiny", "arch": "checkpoint", "weights": str(huge)})
    kwargs = dict(n_classes=3, width=4096, image_size=16, blocks=[16, 16, 16, 16], hidden=4096)
    with torch.device("meta"):
        expected = DemoVGG(**kwargs).state_dict()
    assert sum(v.numel() for v in expected.values()) * 4 > 2**35
    broadcast = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in expected.items()}
    bad = _resaved(path, lambda p: p.update(arch_kwargs=kwargs, state_dict=broadcast))
    assert bad.stat().st_size < 100_000  # 40 KB of headers for 38 GB of weights
    with pytest.raises(WeightFileError, match=rf"{re.escape(str(bad))}: state_dict tensors hold \d+ bytes, more "
                                              r"than the file's \d+ \(broadcast or shared storages\)"):
        load_model({"name": "tiny", "arch": "checkpoint", "weights": str(bad)})
    small = _resaved(path, lambda p: p.update(arch_kwargs=kwargs), name="small.pt")  # the real, small tensors
    with pytest.raises(WeightFileError, match=r"small\.pt: state_dict does not fit demo_vgg.*missing key\(s\) "
                                              r"\['features\.2\.weight'.*\(126 in all\)"):
        load_model({"name": "tiny", "arch": "checkpoint", "weights": str(small)})


def _deflated(path, out):
    """The torch.save zip archive `path` re-packed with deflate-compressed members (torch.load still reads it)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out


def test_compressed_checkpoint_is_refused_before_loading(tmp_path, monkeypatch):
    from lrp.models.base import WeightFileError

    path, _ = _tiny_checkpoint(tmp_path)
    packed = _deflated(path, tmp_path / "packed.pt")
    assert torch.load(packed, weights_only=True)["name"] == "tiny"  # torch.load would inflate it
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(WeightFileError, match=r"packed\.pt: compressed archive member\(s\) \['.*data\.pkl'"):
        load_model({"name": "tiny", "arch": "checkpoint", "weights": str(packed)})


def _alexnet_state(**edits):
    """A torchvision AlexNet state dict of stride-0 zeros (a few KB on disk), with `edits` (key -> tensor)."""
    with torch.device("meta"):
        expected = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in expected.items()}
    return {**state, **edits}


def test_torchvision_state_dict_loads_with_every_tensor_checked(tmp_path):
    path = save_with_hash_name(_alexnet_state(), tmp_path, "alexnet-owt")
    bundle = load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(path)})
    assert bundle.n_classes == 1000 and not bundle.module.classifier[6].bias.any()


@pytest.mark.parametrize("edits, message", [
    ({"classifier.6.bias": torch.zeros(1000, dtype=torch.float64)},
     r"'classifier\.6\.bias' has dtype torch\.float64, expected torch\.float32"),
    ({"classifier.6.bias": torch.zeros(1000, dtype=torch.int64)}, r"'classifier\.6\.bias' has dtype torch\.int64"),
    ({"classifier.6.bias": torch.zeros(10)}, r"'classifier\.6\.bias' has shape \(10,\), expected \(1000,\)"),
    ({"classifier.6.bias": [0.0] * 1000}, r"'classifier\.6\.bias' is a list, expected a dense torch\.float32 tensor"),
    ({"extra": torch.zeros(1)}, r"unexpected key\(s\) \['extra'\]"),
], ids=["float64", "int64", "shape", "list", "extra"])
def test_torchvision_state_dict_of_wrong_type_names_file_and_key(tmp_path, edits, message):
    from lrp.models.base import WeightFileError

    path = save_with_hash_name(_alexnet_state(**edits), tmp_path, "alexnet-owt")
    with pytest.raises(WeightFileError, match=rf"{re.escape(str(path))}: not a torchvision_alexnet state dict: "
                                              rf"{message}"):
        load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(path)})


def test_torchvision_state_dict_with_non_finite_values_names_file_key_and_count(tmp_path):
    """NaN/±Inf weights would load and give NaN maps later: refused before the network is allocated."""
    from lrp.models.base import WeightFileError

    bias = torch.zeros(1000)
    bias[[1, 7]], bias[9] = float("nan"), -float("inf")
    path = save_with_hash_name(_alexnet_state(**{"classifier.6.bias": bias}), tmp_path, "alexnet-owt")
    with pytest.raises(WeightFileError, match=rf"^{re.escape(str(path))}: 'classifier\.6\.bias': 3 of 1000 values "
                                              r"are non-finite \(2 NaN, 1 ±Inf\)"):
        load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(path)})


def test_compressed_torchvision_file_is_refused_before_loading(tmp_path, monkeypatch):
    from lrp.models.base import WeightFileError

    plain = save_with_hash_name(_alexnet_state(), tmp_path, "plain")
    packed = _deflated(plain, tmp_path / "packed.pth")
    packed = packed.rename(tmp_path / f"alexnet-owt-{hashlib.sha256(packed.read_bytes()).hexdigest()[:8]}.pth")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(WeightFileError, match=rf"{re.escape(str(packed))}: compressed archive member"):
        load_model({"name": "anet", "arch": "torchvision_alexnet", "weights": str(packed)})


def test_every_torch_load_in_lrp_is_weights_only():
    """A torch.load without weights_only=True would unpickle code from a weight file."""
    root = Path(__file__).resolve().parents[2] / "lrp"
    calls = [(p.name, line.strip()) for p in root.rglob("*.py") for line in p.read_text().splitlines()
             if "torch.load(" in line and not line.lstrip().startswith(("#", '"', "`"))]
    assert calls and all("weights_only=True" in line for _, line in calls), calls


def _randomised_norms(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


@pytest.mark.parametrize(
    "arch,build,stem",
    [
        ("torchvision_resnet50", torchvision.models.resnet50, "resnet50"),
        ("torchvision_densenet121", torchvision.models.densenet121, "densenet121"),
        ("torchvision_vgg16_bn", torchvision.models.vgg16_bn, "vgg16_bn"),
    ],
)
def test_batchnorm_nets_load_verified_and_explain(tmp_path, arch, build, stem):
    """The BatchNorm nets of issue #20 from their hash-named state-dict files: the forward pass is the
    reference's, and the graph engine explains the loaded bundle (LRP-z = gradient × input)."""
    import lrp

    torch.manual_seed(0)
    ref = _randomised_norms(build(weights=None)).eval()
    path = save_with_hash_name(ref.state_dict(), tmp_path, stem)
    bundle = load_model({"name": "m", "arch": arch, "weights": str(path)})
    assert bundle.checksum == hashlib.sha256(path.read_bytes()).hexdigest() and bundle.n_classes == 1000
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bundle.module(x), ref(x), rtol=0, atol=0)
    xd, model = x.double(), bundle.module.double()
    xg = xd.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[0, 3], xg)
    torch.testing.assert_close(lrp.attribute(model, xd, [3], "lrp_z"), g * xd, rtol=0, atol=1e-10 * float(
        (g * xd).abs().max()))


def test_densenet_file_with_torchvisions_old_key_names_loads(tmp_path):
    """torchvision's published densenet121 file names its keys `norm.1.weight` (before torchvision 0.4) and has
    no `num_batches_tracked`: the zoo renames and fills them as torchvision's own loader does."""
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None).eval()
    old = {}
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        old[re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k)] = v
    assert any(".norm.1." in k for k in old)
    path = save_with_hash_name(old, tmp_path, "densenet121")
    bundle = load_model({"name": "d", "arch": "torchvision_densenet121", "weights": str(path)})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bundle.module(x), ref(x), rtol=0, atol=0)


def test_densenet_file_with_old_and_new_names_for_one_tensor_is_refused(tmp_path):
    state = torchvision.models.densenet121(weights=None).state_dict()
    state["features.denseblock1.denselayer1.norm.1.weight"] = state["features.denseblock1.denselayer1.norm1.weight"]
    path = save_with_hash_name(state, tmp_path, "densenet121")
    with pytest.raises(ValueError, match=r"densenet121-[0-9a-f]{8}\.pth: keys '\S+norm\.1\.weight' and "
                                         r"'\S+norm1\.weight' name the same tensor"):
        load_model({"name": "d", "arch": "torchvision_densenet121", "weights": str(path)})


def test_resnet50_file_missing_a_weight_is_refused(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()
    del state["layer1.0.bn1.running_var"]
    path = save_with_hash_name(state, tmp_path, "resnet50")
    with pytest.raises(ValueError, match=r"resnet50-[0-9a-f]{8}\.pth: not a torchvision_resnet50 state dict: "
                                         r"missing key\(s\) \['layer1\.0\.bn1\.running_var'\]"):
        load_model({"name": "r", "arch": "torchvision_resnet50", "weights": str(path)})
