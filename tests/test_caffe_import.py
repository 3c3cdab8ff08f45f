"""Caffe prototxt + caffemodel -> torch import: exact logits against an independent numpy forward, clear errors.

No Caffe here: the tests write a small CaffeNet-like net themselves, the prototxt as text (new-style `layer {}`
and V1 `layers {}`) and the caffemodel serialized with the importer's own message types (the field numbers are
Caffe's, so such a file is what Caffe writes, minus fields the importer skips). The reference forward is plain
numpy in float64, written after Caffe's C++ layers (explicit windows, Caffe's ceil pooling sizes and average
divisor, the LRN formula), so it shares no code path with torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lrp
from lrp.datasets.voc import VOC_CLASSES
from lrp.models.caffe import CAFFENET_BGR_MEAN, caffe_bundle, from_caffe, messages
from lrp.models.zoo import load_model

SIZE = 37
# LRN parameters of the net below, rounded to float32 as Caffe (and the `float` proto fields) store them
LRN1 = dict(local_size=5, alpha=float(np.float32(0.05)), beta=0.75, k=1.0)
LRN2 = dict(local_size=3, alpha=float(np.float32(0.2)), beta=float(np.float32(0.6)), k=2.0)

# (name, type, param block, weight shape, bias?) -- the chain of a small CaffeNet: grouped/strided/padded/dilated
# convs, max pools whose size needs ceil mode, an average pool with padding and a ceil overhang, two LRNs,
# inner products with dropout, and a softmax at the end (dropped).
LAYERS = [
    ("conv1", "Convolution", "convolution_param { num_output: 8 kernel_size: 5 stride: 2 pad: 1 "
     'weight_filler { type: "gaussian" std: 0.01 } engine: CAFFE }', (8, 3, 5, 5), True),  # 18×18
    ("relu1", "ReLU", "", None, False),
    ("pool1", "Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }", None, False),  # 9×9 (floor: 8)
    ("norm1", "LRN", "lrn_param { local_size: 5 alpha: 0.05 beta: 0.75 }", None, False),
    ("conv2", "Convolution", "convolution_param { num_output: 12 kernel_size: 3 pad: 1 group: 2 }",
     (12, 4, 3, 3), True),  # 9×9
    ("relu2", "ReLU", "", None, False),
    ("norm2", "LRN", "lrn_param { local_size: 3 alpha: 0.2 beta: 0.6 k: 2 norm_region: ACROSS_CHANNELS }",
     None, False),
    ("conv3", "Convolution", "convolution_param { num_output: 10 kernel_size: 2 pad: 1 group: 2 }",
     (10, 6, 2, 2), True),  # 10×10
    ("relu3", "ReLU", "", None, False),
    ("pool2", "Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", None, False),  # 6×6
    ("conv4", "Convolution", "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 3 pad_h: 2 pad_w: 2 "
     "stride_h: 1 stride_w: 1 dilation: 2 bias_term: false }", (6, 10, 3, 3), False),  # 6×6
    ("relu4", "ReLU", "", None, False),
    ("pool5", "Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }", None, False),  # 3×3 (floor: 2)
    ("fc6", "InnerProduct", "inner_product_param { num_output: 16 }", (16, 54), True),
    ("relu6", "ReLU", "", None, False),
    ("drop6", "Dropout", "dropout_param { dropout_ratio: 0.5 }", None, False),
    ("fc7", "InnerProduct", "inner_product_param { num_output: 16 }", (16, 16), True),
    ("relu7", "ReLU", "", None, False),
    ("drop7", "Dropout", "dropout_param { dropout_ratio: 0.5 }", None, False),
    ("fc8", "InnerProduct", "inner_product_param { num_output: 20 }", (20, 16), True),
    ("prob", "Softmax", "", None, False),
]
V1_NAMES = {"Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING", "LRN": "LRN",
            "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "Softmax": "SOFTMAX", "Sigmoid": "SIGMOID",
            "Data": "DATA", "SoftmaxWithLoss": "SOFTMAX_LOSS"}
IN_PLACE = {"ReLU", "Dropout"}


def prototxt(layers=LAYERS, style="new") -> str:
    """Deploy prototxt text. New style: an Input layer; V1: `input` + `input_dim`. Both carry fields the
    importer does not read (lr_mult, fillers, engines) and TRAIN-only layers, as real files do."""
    key = "layer" if style == "new" else "layers"
    out = ['name: "TinyCaffeNet"']
    if style == "new":
        out.append(f'layer {{ name: "data" type: "Input" top: "data" '
                   f'input_param {{ shape {{ dim: 1 dim: 3 dim: {SIZE} dim: {SIZE} }} }} }}')
    else:
        out.append(f'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: {SIZE}\ninput_dim: {SIZE}')
    typ = (lambda t: f'"{t}"') if style == "new" else (lambda t: V1_NAMES[t])
    out.append(f'{key} {{ name: "train_data" type: {typ("Data")} top: "data" top: "label" '
               'include { phase: TRAIN } }')
    prev = "data"
    for name, kind, params, _, _ in layers:
        top = prev if kind in IN_PLACE else name
        extra = " param { lr_mult: 1 decay_mult: 1 }" if kind in ("Convolution", "InnerProduct") else ""
        if style == "v1" and extra:
            extra = " blobs_lr: 1 weight_decay: 1"
        out.append(f'{key} {{\n  name: "{name}"\n  type: {typ(kind)}\n  bottom: "{prev}"\n  top: "{top}"{extra}\n'
                   f'  {params}\n}}')
        prev = top
    out.append(f'{key} {{ name: "loss" type: {typ("SoftmaxWithLoss")} bottom: "fc8" bottom: "label" '
               'top: "loss" include { phase: TRAIN } }')
    return "\n".join(out) + "\n"


def random_weights(layers=LAYERS, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, _, _, shape, bias in layers:
        if shape is None:
            continue
        fan_in = math.prod(shape[1:])
        w = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        weights[name] = [w] + ([(rng.standard_normal(shape[0]) * 0.1).astype(np.float32)] if bias else [])
    return weights


def caffemodel_bytes(weights: dict, style="new", legacy=False, extra_layers=True) -> bytes:
    """A binary NetParameter as Caffe saves it after training: every layer, blobs on the weighted ones.
    `legacy`: 4-D num/channels/height/width blob dims (old Caffe) instead of `shape`."""
    M = messages()
    net = M["NetParameter"](name="TinyCaffeNet")
    layer_list = net.layer if style == "new" else net.layers
    if extra_layers:
        layer_list.add(name="train_data")
    for name, arrays in weights.items():
        layer = layer_list.add(name=name)
        if style == "new":
            layer.type = "Convolution" if arrays[0].ndim == 4 else "InnerProduct"
        for a in arrays:
            blob = layer.blobs.add()
            if legacy:
                dims = (1,) * (4 - a.ndim) + a.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(a.ravel().tolist())
    if extra_layers:
        layer_list.add(name="loss")
    # an unknown top-level field (force_backward = 5, varint true): Caffe files carry fields we do not declare
    return net.SerializeToString() + b"\x28\x01"


def write_net(tmp_path, layers=LAYERS, weights=None, style="new", legacy=False, model_bytes=None, text=None):
    weights = random_weights(layers) if weights is None else weights
    proto, model = tmp_path / f"deploy_{style}.prototxt", tmp_path / f"net_{style}.caffemodel"
    proto.write_text(prototxt(layers, style) if text is None else text)
    model.write_bytes(caffemodel_bytes(weights, style, legacy) if model_bytes is None else model_bytes)
    return model, proto, weights


# ----------------------------------------------------------------------------------------------- numpy reference


def np_conv(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1):
    c, h, wd = x.shape
    n, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    oh, ow = (h + 2 * pad[0] - eh) // stride[0] + 1, (wd + 2 * pad[1] - ew) // stride[1] + 1
    out = np.zeros((n, oh, ow))
    ng = n // groups
    for g in range(groups):
        xg, wg = xp[g * cg:(g + 1) * cg], w[g * ng:(g + 1) * ng]
        for i in range(oh):
            for j in range(ow):
                patch = xg[:, i * stride[0]:i * stride[0] + eh:dilation[0], j * stride[1]:j * stride[1] + ew:dilation[1]]
                out[g * ng:(g + 1) * ng, i, j] = np.einsum("ocij,cij->o", wg, patch)
    return out + (0 if b is None else b[:, None, None])


def np_pool(x, k, s, pad, method):
    """pooling_layer.cpp Forward_cpu: ceil output size, last window must start inside the padded input;
    MAX over the real pixels of the window; AVE divides by the window clipped to the PADDED input."""
    c, h, w = x.shape

    def size(n):
        out = int(math.ceil((n + 2 * pad - k) / s)) + 1
        return out - 1 if pad and (out - 1) * s >= n + pad else out

    oh, ow = size(h), size(w)
    out = np.zeros((c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - pad, j * s - pad
            he, we = min(hs + k, h + pad), min(ws + k, w + pad)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, hs:he, ws:we]
            out[:, i, j] = win.max(axis=(1, 2)) if method == "MAX" else win.sum(axis=(1, 2)) / pool_size
    return out


def np_lrn(x, local_size, alpha, beta, k):
    """lrn_layer.cpp CrossChannelForward: scale_c = k + α/n Σ_{|c'-c| ≤ (n-1)/2} a_c'²; b = a · scale^-β."""
    c = x.shape[0]
    half = (local_size - 1) // 2
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        scale = k + alpha / local_size * (x[lo:hi] ** 2).sum(0)
        out[ch] = x[ch] * scale ** -beta
    return out


def np_forward(x, weights):
    """The LAYERS net on one C×H×W float64 image -> 20 logits (softmax not applied: it is dropped)."""
    W = {n: [a.astype(np.float64) for a in arrays] for n, arrays in weights.items()}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    a = relu(np_conv(x, *W["conv1"], stride=(2, 2), pad=(1, 1)))
    a = np_lrn(np_pool(a, 3, 2, 0, "MAX"), **LRN1)
    a = np_lrn(relu(np_conv(a, *W["conv2"], pad=(1, 1), groups=2)), **LRN2)
    a = relu(np_conv(a, *W["conv3"], pad=(1, 1), groups=2))
    a = np_pool(a, 3, 2, 1, "AVE")
    a = relu(np_conv(a, W["conv4"][0], None, pad=(2, 2), dilation=(2, 2)))
    a = np_pool(a, 3, 2, 0, "MAX").reshape(-1)
    a = relu(W["fc6"][0] @ a + W["fc6"][1])
    a = relu(W["fc7"][0] @ a + W["fc7"][1])
    return W["fc8"][0] @ a + W["fc8"][1]


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("style,legacy", [("new", False), ("v1", True)])
def test_logits_match_independent_numpy_forward(tmp_path, style, legacy):
    model_path, proto, weights = write_net(tmp_path, style=style, legacy=legacy)
    model = from_caffe(model_path, proto)
    assert isinstance(model, nn.Sequential) and not model.training
    names = [n for n, _ in model.named_children()]
    assert names == ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "norm2", "conv3", "relu3", "pool2",
                     "conv4", "relu4", "pool5", "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert model.conv2.groups == 2 and model.conv4.dilation == (2, 2) and model.conv4.bias is None
    assert model.pool1.ceil_mode and model.pool5.ceil_mode and isinstance(model.pool2, nn.AvgPool2d)
    assert (model.norm2.size, model.norm2.alpha, model.norm2.beta, model.norm2.k) == tuple(LRN2.values())

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, SIZE, SIZE))
    ref = np.stack([np_forward(xi, weights) for xi in x])
    with torch.no_grad():
        got32 = model(torch.from_numpy(x).float()).double().numpy()
        got64 = model.double()(torch.from_numpy(x)).numpy()
    scale = np.abs(ref).max()
    assert scale > 0.1
    assert np.abs(got64 - ref).max() <= 1e-10 * scale
    assert np.abs(got32 - ref).max() <= 1e-5 * scale


def test_bundle_zoo_and_engine_run_on_imported_net(tmp_path):
    model_path, proto, _ = write_net(tmp_path)
    bundle = load_model({"name": "pvoc_caffe", "arch": "caffe", "weights": str(model_path), "prototxt": str(proto)})
    assert bundle.name == "pvoc_caffe" and bundle.input_size == SIZE and bundle.class_names == list(VOC_CLASSES)
    pre = bundle.preprocessing
    assert pre.channel_order == "BGR" and pre.mean == CAFFENET_BGR_MEAN and pre.std == (1.0, 1.0, 1.0)
    assert bundle.info["dropped_layers"] == ["prob (Softmax)"]
    own = caffe_bundle(model_path, proto, mean=(1, 2, 3))
    assert own.preprocessing.mean == (1.0, 2.0, 3.0)

    img = np.full((1, SIZE, SIZE, 3), 7, dtype=np.uint8)
    img[..., 0] = 200  # red
    x = pre(img)
    assert x[0, 2, 0, 0].item() == pytest.approx(200 - CAFFENET_BGR_MEAN[2])  # R is the last channel (BGR)
    names = [n for n in lrp.analyzer_names() if n != "pattern_attribution"]  # needs patterns (none for groups)
    maps = lrp.attribute_many(bundle.module, x.repeat(2, 1, 1, 1), [3, 14], names, flat_layers=2)
    for name, r in maps.items():
        assert r.shape == (2, 3, SIZE, SIZE) and torch.isfinite(r).all(), name


def test_unknown_prototxt_fields_and_train_layers_are_skipped(tmp_path):
    model_path, proto, _ = write_net(tmp_path)
    text = proto.read_text().replace("kernel_size: 5", "kernel_size: 5 some_future_param { a: 1 b: SOMETHING }")
    proto.write_text(text)
    assert from_caffe(model_path, proto).conv1.kernel_size == (5, 5)


def _layers_with(name, **changes):
    return [(n, *(changes.get(k, v) for k, v in zip(("kind", "params", "shape", "bias"), rest))) if n == name
            else (n, *rest) for n, *rest in LAYERS]


def test_unsupported_layer_type_names_file_and_layer(tmp_path):
    layers = _layers_with("relu6", kind="Sigmoid")
    model_path, proto, _ = write_net(tmp_path, layers=layers, weights=random_weights())
    with pytest.raises(ValueError, match=rf"{proto.name}: layer 'relu6': unsupported layer type 'Sigmoid'"):
        from_caffe(model_path, proto)
    model_path, proto, _ = write_net(tmp_path, layers=layers, weights=random_weights(), style="v1")
    with pytest.raises(ValueError, match=rf"{proto.name}: layer 'relu6': unsupported layer type 'Sigmoid'"):
        from_caffe(model_path, proto)


@pytest.mark.parametrize("change,message", [
    (dict(kind="Softmax", params=""), "only allowed at the end"),
    (dict(kind="LRN", params="lrn_param { norm_region: WITHIN_CHANNEL }"), "WITHIN_CHANNEL is not supported"),
    (dict(kind="LRN", params="lrn_param { local_size: 4 }"), "local_size must be odd"),
    (dict(kind="Pooling", params="pooling_param { pool: STOCHASTIC kernel_size: 2 }"), "STOCHASTIC"),
])
def test_unsupported_configurations_name_the_layer(tmp_path, change, message):
    model_path, proto, _ = write_net(tmp_path, layers=_layers_with("norm1", **change), weights=random_weights())
    with pytest.raises(ValueError, match=rf"{proto.name}: layer 'norm1': .*{message}"):
        from_caffe(model_path, proto)


def test_blob_shape_mismatch_names_file_and_layer(tmp_path):
    weights = random_weights()
    weights["conv2"][0] = np.zeros((12, 8, 3, 3), np.float32)  # groups ignored: Caffe's would be 12×4×3×3
    model_path, proto, _ = write_net(tmp_path, weights=weights)
    with pytest.raises(ValueError, match=rf"{model_path.name}: layer 'conv2': weight blob has shape "
                                         r"\(12, 8, 3, 3\) but the prototxt .* implies \(12, 4, 3, 3\)"):
        from_caffe(model_path, proto)


def test_missing_blob_or_layer_names_file_and_layer(tmp_path):
    weights = random_weights()
    weights["fc7"] = weights["fc7"][:1]  # bias blob missing
    model_path, proto, _ = write_net(tmp_path, weights=weights)
    with pytest.raises(ValueError, match=rf"{model_path.name}: layer 'fc7': has 1 blob\(s\); the prototxt"):
        from_caffe(model_path, proto)
    weights = random_weights()
    del weights["conv3"]
    model_path, proto, _ = write_net(tmp_path, weights=weights)
    with pytest.raises(ValueError, match=rf"{model_path.name}: layer 'conv3': no weights in the caffemodel"):
        from_caffe(model_path, proto)


def test_truncated_or_corrupt_files_are_value_errors_naming_the_file(tmp_path):
    full = caffemodel_bytes(random_weights())
    model_path, proto, _ = write_net(tmp_path, model_bytes=full[: len(full) // 2])
    with pytest.raises(ValueError, match=rf"{model_path.name}: not a valid binary Caffe model"):
        from_caffe(model_path, proto)
    model_path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match=rf"{model_path.name}: HDF5 caffemodels are not supported"):
        from_caffe(model_path, proto)
    model_path.write_bytes(full)
    proto.write_text("layer { name: 'conv1' type: 'Convolution' ")  # unterminated
    with pytest.raises(ValueError, match=rf"{proto.name}: not a Caffe text-format net"):
        from_caffe(model_path, proto)
    proto.write_bytes(full)  # arguments swapped: binary where text is expected
    with pytest.raises(ValueError, match=rf"{proto.name}"):
        from_caffe(model_path, proto)


def test_zoo_requires_prototxt(tmp_path):
    model_path, proto, _ = write_net(tmp_path)
    with pytest.raises(ValueError, match=r"models\.m\.prototxt: required for arch 'caffe'"):
        load_model({"name": "m", "arch": "caffe", "weights": str(model_path)})
    with pytest.raises(FileNotFoundError, match=r"models\.m\.prototxt: file not found"):
        load_model({"name": "m", "arch": "caffe", "weights": str(model_path), "prototxt": str(tmp_path / "no")})
    with pytest.raises(ValueError, match=r"models\.m\.mean: expected 3 numbers"):
        load_model({"name": "m", "arch": "caffe", "weights": str(model_path), "prototxt": str(proto), "mean": [1]})
