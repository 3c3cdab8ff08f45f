"""Keras HDF5 -> torch import: layouts, exact logits against an independent NHWC numpy forward, clear errors.

tests/data/innvestigate_toy/{weights_keras,weights_torch,inputs}.npz are copied from
/work/shared/oracles/innvestigate_toy/ (iNNvestigate 2.1.2 / TensorFlow 2.14.1 toy model, see its README).
No TensorFlow here: Keras-layout files are written with h5py exactly as Keras 1/2 `save_weights` lays them out.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision

from lrp.models.keras import (
    KerasFormatError,
    KerasVGG,
    build_vgg,
    from_keras_h5,
    keras_vgg16_bundle,
    plan_vgg,
)

TOY = Path(__file__).parents[1] / "data" / "innvestigate_toy"


# ----------------------------------------------------------------------------------------------- helpers


def write_keras_h5(path, layers, style="keras2", full_model=False, config=None):
    """Write [(layer name, [arrays])] in Keras' HDF5 weight layout.

    style "keras1": weights named `<layer>_W_1:0`, `<layer>_b_1:0` (the 2016 model-zoo VGG-16 file);
    style "keras2": `<layer>/kernel:0`, `<layer>/bias:0` (stored in a nested group, as Keras 2 does).
    full_model: weights under group `model_weights` (+ optional `model_config` JSON), as `model.save` does.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if config is not None:
            f.attrs["model_config"] = json.dumps(config).encode()
        root.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"1.2.2" if style == "keras1" else b"2.14.0"
        for name, arrays in layers:
            g = root.create_group(name)
            suffixes = ["W_1:0", "b_1:0"] if style == "keras1" else ["kernel:0", "bias:0"]
            sep = "_" if style == "keras1" else "/"
            wnames = [f"{name}{sep}{s}" for s in suffixes[: len(arrays)]]
            g.attrs["weight_names"] = np.array([w.encode() for w in wnames], dtype="S")
            for w, a in zip(wnames, arrays):
                g.create_dataset(w, data=a)
    return path


def small_vgg(rng, size=12, n_out=7, c=(4, 6), hidden=10):
    """2 conv blocks + fc1/fc2/predictions, VGG layer names, non-zero biases."""

    def conv(cin, cout):
        return [rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32),
                rng.normal(0, 0.1, cout).astype(np.float32)]

    def dense(n_in, n_out_):
        return [rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out_)).astype(np.float32),
                rng.normal(0, 0.1, n_out_).astype(np.float32)]

    side = size // 4
    return [
        ("input_1", []),
        ("block1_conv1", conv(3, c[0])), ("block1_conv2", conv(c[0], c[0])), ("block1_pool", []),
        ("block2_conv1", conv(c[0], c[1])), ("block2_conv2", conv(c[1], c[1])), ("block2_pool", []),
        ("flatten", []),
        ("fc1", dense(side * side * c[1], hidden)), ("fc2", dense(hidden, hidden)),
        ("predictions", dense(hidden, n_out)),
    ]


def numpy_forward(layers, x_nhwc):
    """Independent Keras-semantics forward in NHWC float64: 'same' conv by summing kernel offsets, 2x2 max-pool,
    flatten in (H, W, C) order, ReLU everywhere but the last Dense (softmax stripped)."""
    x = x_nhwc.astype(np.float64)
    dense = [n for n, a in layers if a and a[0].ndim == 2]
    for name, arrays in layers:
        if not arrays:
            if "pool" in name:
                n, h, w, ch = x.shape
                x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, ch).max(axis=(2, 4))
            continue
        k, b = (a.astype(np.float64) for a in arrays)
        if k.ndim == 4:
            kh, kw = k.shape[:2]
            n, h, w, _ = x.shape
            xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
            out = np.zeros((n, h, w, k.shape[3]))
            for dy in range(kh):
                for dx in range(kw):
                    out += np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + w], k[dy, dx])
            x = np.maximum(out + b, 0)
        else:
            x = x.reshape(len(x), -1) @ k + b
            if name != dense[-1]:
                x = np.maximum(x, 0)
    return x


def run(module, x_nhwc):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def sequential_config(layers, **overrides):
    """A Keras 2 Sequential model_config for small_vgg's layers; overrides: {layer: {key: value}}."""
    out = []
    for name, arrays in layers:
        if name.startswith("input"):
            cls, cfg = "InputLayer", {}
        elif "pool" in name:
            cls, cfg = "MaxPooling2D", {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}
        elif name == "flatten":
            cls, cfg = "Flatten", {}
        elif arrays[0].ndim == 4:
            cls, cfg = "Conv2D", {"padding": "same", "strides": [1, 1], "dilation_rate": [1, 1],
                                  "activation": "relu", "data_format": "channels_last"}
        else:
            cls, cfg = "Dense", {"activation": "softmax" if name == "predictions" else "relu"}
        cfg.update(name=name, **overrides.get(name, {}))
        out.append({"class_name": cls, "config": cfg})
    return {"class_name": "Sequential", "config": {"name": "vgg", "layers": out}}


# ----------------------------------------------------------------------------------------------- import


@pytest.mark.parametrize("style,full_model", [("keras1", False), ("keras2", False), ("keras2", True)])
def test_small_vgg_logits_match_numpy_keras_forward(tmp_path, style, full_model):
    rng = np.random.default_rng(0)
    layers = small_vgg(rng)
    config = sequential_config(layers) if full_model else None
    path = write_keras_h5(tmp_path / "m.h5", layers, style, full_model, config)
    x = rng.normal(0, 50, (3, 12, 12, 3)).astype(np.float32)  # caffe-like range, negative values included

    module = from_keras_h5(path)
    ref = numpy_forward(layers, x)
    got = run(module, x)
    assert got.shape == (3, 7)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # a wrong flatten order (no H,W,C -> C,H,W permutation) must be detectable with these shapes
    assert np.abs(ref).max() > 0 and not module.training


def test_module_has_torchvision_vgg_structure(tmp_path):
    layers = small_vgg(np.random.default_rng(1))
    module = from_keras_h5(write_keras_h5(tmp_path / "m.h5", layers), input_size=12)
    assert isinstance(module, torchvision.models.VGG)
    convs = [i for i, m in enumerate(module.features) if isinstance(m, torch.nn.Conv2d)]
    pools = [i for i, m in enumerate(module.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert convs == [0, 2, 5, 7] and pools == [4, 9]
    assert all(module.features[i].padding == (1, 1) for i in convs)
    assert [i for i, m in enumerate(module.classifier) if isinstance(m, torch.nn.Linear)] == [0, 3, 6]
    assert len(module.classifier) == 7  # no activation after the logits
    assert module.avgpool.output_size == (3, 3)


def test_first_dense_permutation_is_needed(tmp_path):
    """Guard against a test that cannot fail: a plain (in,out)->(out,in) transpose of fc1 gives other logits."""
    rng = np.random.default_rng(2)
    layers = small_vgg(rng)
    module = from_keras_h5(write_keras_h5(tmp_path / "m.h5", layers))
    x = rng.normal(0, 50, (2, 12, 12, 3)).astype(np.float32)
    good = run(module, x)
    with torch.no_grad():
        module.classifier[0].weight.copy_(torch.from_numpy(layers[8][1][0].T.copy()))
    assert np.abs(run(module, x) - good).max() > 1e-2 * np.abs(good).max()


def test_input_size_checks_first_dense(tmp_path):
    path = write_keras_h5(tmp_path / "m.h5", small_vgg(np.random.default_rng(3)))
    from_keras_h5(path, input_size=12)
    with pytest.raises(KerasFormatError, match=r"m\.h5.*'fc1'.*input_size 16"):
        from_keras_h5(path, input_size=16)


def test_innvestigate_toy_end_to_end(tmp_path):
    k = np.load(TOY / "weights_keras.npz")
    t = np.load(TOY / "weights_torch.npz")
    inputs = np.load(TOY / "inputs.npz")
    layers = [("conv1", [k["conv1_k"], k["conv1_b"]]), ("pool1", []), ("conv2", [k["conv2_k"], k["conv2_b"]]),
              ("pool2", []), ("flatten", []), ("fc1", [k["fc1_w"], k["fc1_b"]]), ("fc2", [k["fc2_w"], k["fc2_b"]])]
    module = from_keras_h5(write_keras_h5(tmp_path / "toy.h5", layers), input_size=16)

    ours = module.state_dict()
    mapping = {"features.0": "0", "features.3": "3", "classifier.0": "7", "classifier.3": "9"}
    assert {k_.rsplit(".", 1)[0] for k_ in ours} == set(mapping)
    for mine, theirs in mapping.items():
        for p in ("weight", "bias"):
            np.testing.assert_array_equal(ours[f"{mine}.{p}"].numpy(), t[f"{theirs}.{p}"])
    with torch.no_grad():
        logits = module(torch.from_numpy(inputs["x_nchw"])).numpy()
    np.testing.assert_allclose(logits, inputs["logits"], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- errors


def test_missing_layer_names(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_group("block1_conv1")
    with pytest.raises(KerasFormatError, match=r"bad\.h5.*layer_names"):
        from_keras_h5(path)


def test_keras3_file_is_named(tmp_path):
    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=np.zeros((3, 3, 3, 4)))
    with pytest.raises(KerasFormatError, match="Keras 3"):
        from_keras_h5(path)


def test_listed_weight_not_stored(tmp_path):
    path = write_keras_h5(tmp_path / "m.h5", small_vgg(np.random.default_rng(8)))
    with h5py.File(path, "a") as f:
        del f["fc2"]["fc2/bias:0"]
    with pytest.raises(KerasFormatError, match=r"m\.h5.*'fc2'.*\['fc2/bias:0'\]"):
        from_keras_h5(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(KerasFormatError, match=r"x\.h5.*HDF5"):
        from_keras_h5(path)


def _mutate(layers, name, arrays):
    return [(n, arrays if n == name else a) for n, a in layers]


@pytest.mark.parametrize("mutation,message", [
    (lambda L: _mutate(L, "block1_conv2", L[2][1][::-1]), r"'block1_conv2'.*bias stored before kernel"),
    (lambda L: _mutate(L, "fc2", [np.zeros((10, 10, 2), np.float32), np.zeros(2, np.float32)]),
     r"'fc2'.*unsupported weight shapes.*\(10, 10, 2\)"),
    (lambda L: _mutate(L, "fc1", L[8][1][:1]), r"'fc1'.*expected 2 weights.*found 1"),
    (lambda L: _mutate(L, "block1_conv1", [np.zeros((3, 3, 3, 4), np.float32), np.zeros(5, np.float32)]),
     r"'block1_conv1'.*bias length 5"),
    (lambda L: _mutate(L, "block2_conv1", [np.zeros((2, 2, 4, 6), np.float32), np.zeros(6, np.float32)]),
     r"'block2_conv1'.*odd"),
    (lambda L: _mutate(L, "block2_conv1", [np.zeros((3, 3, 5, 6), np.float32), np.zeros(6, np.float32)]),
     r"'block2_conv1'.*5 input channels"),
    (lambda L: L[:-3] + [L[-1]], r"'predictions'.*not a square map"),
    (lambda L: L[:8], r"no Dense layers"),
    (lambda L: L[8:] + L[:8], r"'fc1'.*before any Conv2D"),
])
def test_malformed_files_raise_clear_errors(tmp_path, mutation, message):
    layers = mutation(small_vgg(np.random.default_rng(4)))
    path = write_keras_h5(tmp_path / "broken.h5", layers)
    with pytest.raises(KerasFormatError, match=r"broken\.h5.*" + message):
        from_keras_h5(path)


@pytest.mark.parametrize("layer,override,message", [
    ("block1_conv1", {"padding": "valid"}, "padding 'valid'"),
    ("block2_conv2", {"strides": [2, 2]}, "strides"),
    ("fc1", {"activation": "tanh"}, "activation 'tanh'"),
    ("block1_pool", {"pool_size": [3, 3]}, "pool_size"),
    ("block2_conv1", {"data_format": "channels_first"}, "channels_first"),
])
def test_full_model_config_mismatch_raises(tmp_path, layer, override, message):
    layers = small_vgg(np.random.default_rng(5))
    config = sequential_config(layers, **{layer: override})
    path = write_keras_h5(tmp_path / "full.h5", layers, full_model=True, config=config)
    with pytest.raises(KerasFormatError, match=rf"full\.h5.*'{layer}'.*{message}"):
        from_keras_h5(path)


# ----------------------------------------------------------------------------------------------- VGG-16


VGG16_CONVS = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]


def vgg16_shapes():
    """The Keras model-zoo VGG-16 layer list (names as in vgg16_weights_tf_dim_ordering_tf_kernels.h5)."""
    layers, cin = [("input_1", [])], 3
    for block, n, cout in VGG16_CONVS:
        for i in range(1, n + 1):
            layers.append((f"block{block}_conv{i}", [(3, 3, cin, cout), (cout,)]))
            cin = cout
        layers.append((f"block{block}_pool", []))
    return layers + [("flatten", []), ("fc1", [(25088, 4096), (4096,)]), ("fc2", [(4096, 4096), (4096,)]),
                     ("predictions", [(4096, 1000), (1000,)])]


def test_vgg16_layer_list_gives_torchvision_vgg16_shapes():
    plan = plan_vgg(vgg16_shapes(), input_size=224)
    assert plan[-3].hwc == (7, 7, 512)
    ours = build_vgg(plan, device="meta")
    with torch.device("meta"):
        ref = torchvision.models.vgg16(weights=None)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert [type(m) for m in ours.features] == [type(m) for m in ref.features]
    assert [type(m) for m in ours.classifier] == [type(m) for m in ref.classifier]
    assert ours.avgpool.output_size == (7, 7)


# ----------------------------------------------------------------------------------------------- bundle


def test_keras_vgg16_bundle(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    layers = small_vgg(rng, size=224, n_out=1000, c=(2, 2), hidden=8)  # tiny, but the real input and class count
    path = write_keras_h5(tmp_path / "vgg16.h5", layers, style="keras1")

    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"vgg16\.h5.*expected 64373286793e3c8b2b4e3219cbf3544b, got {md5}"):
        keras_vgg16_bundle(path, verify=True)
    monkeypatch.setattr("lrp.models.keras.VGG16_MD5", md5)
    bundle = keras_vgg16_bundle(path, verify=True)

    assert isinstance(bundle.module, KerasVGG) and not bundle.module.training
    assert not any(p.requires_grad for p in bundle.module.parameters())
    assert bundle.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert bundle.input_size == 224 and bundle.n_classes == 1000
    assert bundle.class_names[:2] == ["n01440764", "n01443537"]
    pre = bundle.preprocessing
    assert pre.channel_order == "BGR" and pre.mean == (103.939, 116.779, 123.68) and pre.std == (1.0, 1.0, 1.0)

    # uint8 RGB images through the bundle's preprocessing == Keras caffe preprocessing + numpy forward
    img = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    caffe = img[..., ::-1].astype(np.float64) - np.array([103.939, 116.779, 123.68])
    with torch.no_grad():
        got = bundle.module(pre(img)).numpy()
    ref = numpy_forward(layers, caffe)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_keras_vgg16_bundle_rejects_wrong_class_count(tmp_path):
    path = write_keras_h5(tmp_path / "v.h5", small_vgg(np.random.default_rng(7), size=224, c=(2, 2), hidden=8))
    with pytest.raises(KerasFormatError, match=r"v\.h5.*7 outputs.*1000"):
        keras_vgg16_bundle(path)


# ----------------------------------------------------------------------------------------------- hostile files


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


H = 200_000_000  # fc1 outputs: fc1 (54, H) + fc2 (H, 10) declare 48.4 GiB of float32


def _huge_dense_file(path, hidden=H, dtype="f4", **dataset_kw):
    """small_vgg with consistent but huge fc1/fc2 (`hidden` fc1 outputs) that are declared, not written (only a
    sliver when chunked)."""
    layers = small_vgg(np.random.default_rng(9))
    write_keras_h5(path, layers)
    with h5py.File(path, "a") as f:
        for name, shape in (("fc1/kernel:0", (54, hidden)), ("fc1/bias:0", (hidden,)), ("fc2/kernel:0", (hidden, 10))):
            group = f[name.split("/")[0]]
            del group[name]
            ds = group.create_dataset(name, shape=shape, dtype=dtype, **dataset_kw)
            if "compression" in dataset_kw:  # one chunk stored: the file holds data, the rest is its fill value
                ds[(slice(0, 1),) * len(shape)] = 1.0
    assert path.stat().st_size < 200_000
    return path


def test_declared_but_unwritten_huge_layer_is_refused_unread(tmp_path):
    rss = _peak_rss_mb()
    path = _huge_dense_file(tmp_path / "huge.h5")
    with pytest.raises(KerasFormatError, match=r"huge\.h5: layer 'fc1' weight /fc1/fc1/kernel:0: declares "
                                               r"43200000000 bytes of shape \(54, 200000000\) but the file stores 0"):
        from_keras_h5(path)
    assert _peak_rss_mb() - rss < 500


def test_compressed_huge_layer_is_refused_by_its_declared_size(tmp_path):
    rss = _peak_rss_mb()
    path = _huge_dense_file(tmp_path / "packed.h5", chunks=True, compression="gzip")
    with pytest.raises(KerasFormatError, match=r"packed\.h5: the weights declare 48\.4 GiB of parameters as stored "
                                               r"\(layer 'fc1': /fc1/fc1/kernel:0 of shape \(54, 200000000\), "
                                               r"float32\), more than the 2 GiB"):
        from_keras_h5(path)
    assert _peak_rss_mb() - rss < 500


def test_size_limit_counts_float64_weights_at_8_bytes(tmp_path):
    """fc1/fc2 declared as float64 with 65 · 6M values: 1.45 GiB at 4 bytes each (under the 2 GiB limit), but the
    file stores, and the importer would read, 2.9 GiB."""
    from lrp.models.keras import MAX_WEIGHT_BYTES

    hidden = 6_000_000
    path = _huge_dense_file(tmp_path / "wide.h5", hidden=hidden, dtype="f8", chunks=True, compression="gzip")
    n = (54 + 1 + 10) * hidden
    assert 4 * n < MAX_WEIGHT_BYTES < 8 * n
    with pytest.raises(KerasFormatError, match=r"wide\.h5: the weights declare 2\.9 GiB of parameters as stored "
                                               r"\(layer 'fc1': /fc1/fc1/kernel:0 of shape \(54, 6000000\), float64\)"):
        from_keras_h5(path)


def test_float64_weights_load_as_float32(tmp_path):
    rng = np.random.default_rng(14)
    layers = small_vgg(rng)
    wide = [(name, [a.astype(np.float64) for a in arrays]) for name, arrays in layers]
    module = from_keras_h5(write_keras_h5(tmp_path / "f8.h5", wide))
    x = rng.uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(run(module, x), numpy_forward(layers, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer, index, values, message", [
    ("block2_conv1", 0, {(0, 0, 0, 0): np.nan, (1, 2, 3, 4): np.nan},
     r"2 of 216 values are non-finite \(2 NaN, 0 ±Inf\)"),
    ("fc2", 1, {(3,): np.inf, (4,): -np.inf, (5,): np.nan}, r"3 of 10 values are non-finite \(1 NaN, 2 ±Inf\)"),
], ids=["conv-kernel-nan", "dense-bias-inf"])
def test_non_finite_weight_names_file_layer_and_count(tmp_path, layer, index, values, message):
    """NaN/±Inf weights would load and give NaN maps later: refused, naming the dataset and the count."""
    layers = small_vgg(np.random.default_rng(15))
    arrays = dict(layers)[layer]
    for where, value in values.items():
        arrays[index][where] = value
    path = write_keras_h5(tmp_path / "m.h5", layers)
    suffix = ("kernel:0", "bias:0")[index]
    with pytest.raises(KerasFormatError, match=rf"m\.h5: layer '{layer}' weight /{layer}/{layer}/{suffix}: "
                                               + message):
        from_keras_h5(path)


def test_paper_vgg16_fits_the_size_limit():
    from lrp.models.keras import MAX_WEIGHT_BYTES

    n = sum(int(np.prod(s)) for _, shapes in vgg16_shapes() for s in shapes)
    assert n == 138_357_544 and 4 * n < MAX_WEIGHT_BYTES / 3


@pytest.mark.parametrize("data, dtype", [(np.zeros(10, np.int32), "int32"), (np.array([b"x"] * 10), "|S1")])
def test_non_float_weight_is_refused(tmp_path, data, dtype):
    path = write_keras_h5(tmp_path / "m.h5", small_vgg(np.random.default_rng(10)))
    with h5py.File(path, "a") as f:
        del f["fc2"]["fc2/bias:0"]
        f["fc2"].create_dataset("fc2/bias:0", data=data)
    with pytest.raises(KerasFormatError, match=rf"m\.h5: layer 'fc2' weight /fc2/fc2/bias:0: dtype {re.escape(dtype)}"
                                               r", shape \(10,\); weights are floating-point arrays"):
        from_keras_h5(path)


MARKER = np.full(10, 1234.5, np.float32)  # the outside file's values: must never become a weight


def _outside(tmp_path):
    """An HDF5 file and a raw file outside the weight file, both holding MARKER (fc2's bias shape)."""
    raw = tmp_path / "outside" / "secret.bin"
    raw.parent.mkdir()
    raw.write_bytes(MARKER.tobytes())
    other = tmp_path / "outside" / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("fc2/fc2/bias:0", data=MARKER)
    return raw, other


def _replace_fc2_bias(path, make):
    with h5py.File(path, "a") as f:
        del f["fc2"]["fc2/bias:0"]
        make(f["fc2"], "fc2/bias:0")
    with h5py.File(path, "r") as f:  # the hostile file works: plain h5py reads the outside values through it
        np.testing.assert_array_equal(f["fc2"]["fc2/bias:0"][()], MARKER)


def test_external_storage_dataset_is_refused(tmp_path):
    raw, _ = _outside(tmp_path)
    path = write_keras_h5(tmp_path / "m.h5", small_vgg(np.random.default_rng(11)))
    _replace_fc2_bias(path, lambda g, n: g.create_dataset(n, shape=(10,), dtype="f4", external=[(str(raw), 0, 40)]))
    with pytest.raises(KerasFormatError, match=rf"m\.h5: layer 'fc2' weight /fc2/fc2/bias:0: stored in external "
                                               rf"file\(s\) \[.*{re.escape(raw.name)}.*\]"):
        from_keras_h5(path)


def test_virtual_dataset_is_refused(tmp_path):
    _, other = _outside(tmp_path)
    path = write_keras_h5(tmp_path / "m.h5", small_vgg(np.random.default_rng(12)))

    def virtual(group, name):
        layout = h5py.VirtualLayout(shape=(10,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "fc2/fc2/bias:0", shape=(10,))
        group.create_virtual_dataset(name, layout)

    _replace_fc2_bias(path, virtual)
    with pytest.raises(KerasFormatError, match=r"m\.h5: layer 'fc2' weight /fc2/fc2/bias:0: a virtual dataset"):
        from_keras_h5(path)


@pytest.mark.parametrize("where, link, message", [
    ("fc2/fc2/bias:0", lambda other: h5py.ExternalLink(str(other), "fc2/fc2/bias:0"),
     r"/fc2/fc2/bias:0 is an HDF5 ExternalLink to .*other\.h5:fc2/fc2/bias:0"),
    ("fc2", lambda other: h5py.ExternalLink(str(other), "fc2"), r"/fc2 is an HDF5 ExternalLink to .*other\.h5:fc2"),
    ("fc2", lambda other: h5py.SoftLink("/elsewhere"), r"/fc2 is an HDF5 SoftLink to /elsewhere"),
], ids=["dataset-external", "group-external", "group-soft"])
def test_links_out_of_the_file_are_refused(tmp_path, where, link, message):
    _, other = _outside(tmp_path)
    layers = small_vgg(np.random.default_rng(13))
    path = write_keras_h5(tmp_path / "m.h5", layers)
    with h5py.File(path, "a") as f:
        if where == "fc2":  # the whole layer group elsewhere: another file's, or through a soft link to one
            f.copy(f["fc2"], "moved")
            del f["fc2"]
            with h5py.File(other, "a") as o:
                o.copy(f["moved"], "fc2_group")
                del o["fc2"]
                o.move("fc2_group", "fc2")
                o["fc2/fc2/bias:0"][...] = MARKER
            f["elsewhere"] = h5py.ExternalLink(str(other), "fc2")
            del f["moved"]
            f["fc2"] = link(other)
        else:
            del f["fc2"]["fc2/bias:0"]
            f["fc2"]["fc2"]["bias:0"] = link(other)
    with h5py.File(path, "r") as f:  # plain h5py follows the link out of the file
        np.testing.assert_array_equal(f["fc2"]["fc2/bias:0"][()], MARKER)
    with pytest.raises(KerasFormatError, match=r"m\.h5: " + message + r"; only objects stored in this file are read"):
        from_keras_h5(path)
