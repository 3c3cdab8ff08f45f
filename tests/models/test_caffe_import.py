"""Caffe prototxt + caffemodel -> torch import: exact logits against an independent numpy forward, clear errors.

No Caffe here: the tests write a small CaffeNet-like net themselves, the prototxt as text (new-style `layer {}`
and V1 `layers {}`) and the caffemodel serialized with the importer's own message types. Those types cannot vouch
for their own field numbers, so one test hand-encodes protobuf wire bytes with the numbers of BVLC caffe's
src/caffe/proto/caffe.proto and parses them with the importer. The reference forward is plain numpy in float64,
written after Caffe's C++ layers (explicit windows, Caffe's ceil pooling sizes and average divisor, the LRN
formula), so it shares no code path with torch.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

import lrp
from lrp.datasets.voc import VOC_CLASSES
from lrp.models.caffe import caffe_bundle, from_caffe
from lrp.models.caffe.bundle import CAFFENET_BGR_MEAN
from lrp.models.caffe.files import read_caffemodel
from lrp.models.caffe.schema import messages
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
            "TanH": "TANH", "Data": "DATA", "SoftmaxWithLoss": "SOFTMAX_LOSS"}
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
                hs, ws = i * stride[0], j * stride[1]
                patch = xg[:, hs:hs + eh:dilation[0], ws:ws + ew:dilation[1]]
                out[g * ng:(g + 1) * ng, i, j] = np.einsum("ocij,cij->o", wg, patch)
    return out + (0 if b is None else b[:, None, None])


def np_pool(x, k, s, pad, method):
    """pooling_layer.cpp Forward_cpu: ceil output size; if the layer pads in either dim, the last window of
    each dim must start inside the padded input; MAX over the real pixels of the window; AVE divides by the
    window clipped to the PADDED input. k, s, pad: int or (h, w)."""
    c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = ((v, v) if isinstance(v, int) else v for v in (k, s, pad))

    def size(n, k, s, p):
        out = int(math.ceil((n + 2 * p - k) / s)) + 1
        return out - 1 if (ph or pw) and (out - 1) * s >= n + p else out

    oh, ow = size(h, kh, sh, ph), size(w, kw, sw, pw)
    out = np.zeros((c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
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
    layers = _layers_with("relu6", kind="TanH")
    for style in ("new", "v1"):
        model_path, proto, _ = write_net(tmp_path, layers=layers, weights=random_weights(), style=style)
        with pytest.raises(ValueError, match=rf"{proto.name}: layer 'relu6': unsupported layer type 'TanH'"):
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


@pytest.mark.parametrize("style", ["new", "v1"])
def test_non_finite_blob_names_file_layer_and_count(tmp_path, style):
    """NaN/±Inf weights would load and give NaN maps later: refused, with the layer, the blob and the count."""
    weights = random_weights()
    weights["conv2"][0][0, 0, 0, :3] = [np.nan, np.inf, np.nan]
    model_path, proto, _ = write_net(tmp_path, weights=weights, style=style)
    with pytest.raises(ValueError, match=rf"{model_path.name}: layer 'conv2': weight blob: 3 of 432 values are "
                                         r"non-finite \(2 NaN, 1 ±Inf\)"):
        from_caffe(model_path, proto)
    weights = random_weights()
    weights["fc7"][1][5] = -np.inf
    model_path, proto, _ = write_net(tmp_path, weights=weights, style=style)
    with pytest.raises(ValueError, match=rf"{model_path.name}: layer 'fc7': bias blob: 1 of 16 values are "
                                         r"non-finite \(0 NaN, 1 ±Inf\)"):
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


# ----------------------------------------------------------------------------------------------- wire format
# Field numbers of BVLC caffe src/caffe/proto/caffe.proto, written down here independently of the importer's
# caffe.proto subset, so that a wrong number there fails these tests.
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100                             # NetParameter
L_NAME, L_TYPE, L_BOTTOM, L_TOP, L_BLOBS = 1, 2, 3, 4, 7                   # LayerParameter
L_CONV, L_IP, L_LRN, L_POOL = 106, 117, 118, 121                           # LayerParameter *_param
V1_BOTTOM, V1_TOP, V1_NAME, V1_TYPE, V1_BLOBS, V1_INCLUDE = 2, 3, 4, 5, 6, 32  # V1LayerParameter
V1_CONV, V1_IP, V1_LRN, V1_POOL = 10, 17, 18, 19                           # V1LayerParameter *_param
V1_DATA, V1_CONVOLUTION, V1_INNER_PRODUCT, V1_LRN_TYPE, V1_POOLING = 5, 4, 14, 15, 17  # V1 LayerType values
B_NUM, B_CHANNELS, B_HEIGHT, B_WIDTH, B_DATA, B_SHAPE, SHAPE_DIM = 1, 2, 3, 4, 5, 7, 1  # BlobProto, BlobShape
CONV_NUM_OUTPUT, CONV_KERNEL_SIZE = 1, 4                                   # ConvolutionParameter
POOL_POOL, POOL_KERNEL_SIZE, POOL_STRIDE, POOL_AVE = 1, 2, 3, 1            # PoolingParameter
LRN_LOCAL_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 1, 2, 3, 5                    # LRNParameter
IP_NUM_OUTPUT = 1                                                          # InnerProductParameter
RULE_PHASE, TRAIN = 1, 0                                                   # NetStateRule, Phase


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative values as 10-byte two's complement, as protobuf writes int32/int64
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int(field: int, n: int) -> bytes:  # wire type 0 (varint): int32/int64/uint32/bool/enum
    return _key(field, 0) + _varint(n)


def _f32(field: int, x: float) -> bytes:  # wire type 5 (32-bit): float
    return _key(field, 5) + struct.pack("<f", x)


def _len(field: int, payload: bytes | str) -> bytes:  # wire type 2: string, sub-message, packed repeated
    payload = payload.encode() if isinstance(payload, str) else payload
    return _key(field, 2) + _varint(len(payload)) + payload


def _blob_shape(a: np.ndarray) -> bytes:
    """BlobProto with `shape` (BlobShape, packed int64 dims) and packed float `data`."""
    dims = b"".join(_varint(d) for d in a.shape)
    return _len(B_SHAPE, _len(SHAPE_DIM, dims)) + _len(B_DATA, struct.pack(f"<{a.size}f", *a.ravel()))


def _blob_legacy(a: np.ndarray) -> bytes:
    """BlobProto with the legacy 4-D num/channels/height/width dims (leading 1s) and packed float `data`."""
    n, c, h, w = (1,) * (4 - a.ndim) + a.shape
    return (_int(B_NUM, n) + _int(B_CHANNELS, c) + _int(B_HEIGHT, h) + _int(B_WIDTH, w)
            + _len(B_DATA, struct.pack(f"<{a.size}f", *a.ravel())))


def _wire_weights():
    rng = np.random.default_rng(5)
    shapes = {"conv1": [(2, 1, 2, 2), (2,)], "fc": [(3, 8), (3,)]}
    return {n: [rng.standard_normal(s).astype(np.float32) for s in ss] for n, ss in shapes.items()}


def _wire_prototxt(style: str) -> str:
    """conv 2×2 (1 -> 2 channels) on 5×5, AVE pool 2/2, LRN, InnerProduct 8 -> 3."""
    key, q = ("layer", lambda t, v1: f'"{t}"') if style == "new" else ("layers", lambda t, v1: v1)
    head = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }'
            if style == "new" else 'input: "data" input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5')
    return "\n".join([
        'name: "Wire"', head,
        f'{key} {{ name: "conv1" type: {q("Convolution", "CONVOLUTION")} bottom: "data" top: "conv1" '
        'convolution_param { num_output: 2 kernel_size: 2 } }',
        f'{key} {{ name: "pool1" type: {q("Pooling", "POOLING")} bottom: "conv1" top: "pool1" '
        'pooling_param { pool: AVE kernel_size: 2 stride: 2 } }',
        f'{key} {{ name: "norm1" type: {q("LRN", "LRN")} bottom: "pool1" top: "norm1" '
        'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }',
        f'{key} {{ name: "fc" type: {q("InnerProduct", "INNER_PRODUCT")} bottom: "norm1" top: "fc" '
        'inner_product_param { num_output: 3 } }',
    ]) + "\n"


def _wire_np_forward(x, w):
    a = np_pool(np_conv(x, *[v.astype(np.float64) for v in w["conv1"]]), 2, 2, 0, "AVE")
    a = np_lrn(a, 3, 0.5, 0.75, 2.0).reshape(-1)
    return w["fc"][0].astype(np.float64) @ a + w["fc"][1]


def _check_wire_import(tmp_path, style, raw: bytes, weights):
    model_path, proto = tmp_path / f"wire_{style}.caffemodel", tmp_path / f"wire_{style}.prototxt"
    model_path.write_bytes(raw)
    proto.write_text(_wire_prototxt(style))
    model = from_caffe(model_path, proto)
    assert [n for n, _ in model.named_children()] == ["conv1", "pool1", "norm1", "flatten", "fc"]
    for name, module in (("conv1", model.conv1), ("fc", model.fc)):
        assert np.array_equal(module.weight.numpy(), weights[name][0])
        assert np.array_equal(module.bias.numpy(), weights[name][1])
    x = np.random.default_rng(6).uniform(-1, 1, (1, 5, 5))
    with torch.no_grad():
        got = model.double()(torch.from_numpy(x)[None]).numpy()[0]
    assert np.allclose(got, _wire_np_forward(x, weights), rtol=0, atol=1e-10)


def test_hand_encoded_new_style_caffemodel_parses_with_caffe_field_numbers(tmp_path):
    w = _wire_weights()
    layers = [
        _len(L_NAME, "data") + _len(L_TYPE, "Input") + _len(L_TOP, "data"),
        _len(L_NAME, "conv1") + _len(L_TYPE, "Convolution") + _len(L_BOTTOM, "data") + _len(L_TOP, "conv1")
        + _len(L_BLOBS, _blob_shape(w["conv1"][0])) + _len(L_BLOBS, _blob_shape(w["conv1"][1]))
        + _len(L_CONV, _int(CONV_NUM_OUTPUT, 2) + _int(CONV_KERNEL_SIZE, 2)),
        _len(L_NAME, "pool1") + _len(L_TYPE, "Pooling")
        + _len(L_POOL, _int(POOL_POOL, POOL_AVE) + _int(POOL_KERNEL_SIZE, 2) + _int(POOL_STRIDE, 2)),
        _len(L_NAME, "norm1") + _len(L_TYPE, "LRN")
        + _len(L_LRN, _int(LRN_LOCAL_SIZE, 3) + _f32(LRN_ALPHA, 0.5) + _f32(LRN_BETA, 0.75) + _f32(LRN_K, 2.0)),
        _len(L_NAME, "fc") + _len(L_TYPE, "InnerProduct")
        + _len(L_BLOBS, _blob_shape(w["fc"][0])) + _len(L_BLOBS, _blob_shape(w["fc"][1]))
        + _len(L_IP, _int(IP_NUM_OUTPUT, 3)),
    ]
    raw = _len(NET_NAME, "Wire") + b"".join(_len(NET_LAYER, lay) for lay in layers)
    path = tmp_path / "parse.caffemodel"
    path.write_bytes(raw)
    net = read_caffemodel(path)
    assert net.name == "Wire" and not len(net.layers)
    assert [(lay.name, lay.type) for lay in net.layer] == [
        ("data", "Input"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("norm1", "LRN"), ("fc", "InnerProduct")]
    data, conv, pool, norm, fc = net.layer
    assert list(data.top) == ["data"] and list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    for layer, arrays in ((conv, w["conv1"]), (fc, w["fc"])):
        assert len(layer.blobs) == 2
        for blob, a in zip(layer.blobs, arrays):
            assert tuple(blob.shape.dim) == a.shape and np.array_equal(np.array(blob.data, np.float32), a.ravel())
    assert conv.convolution_param.num_output == 2 and list(conv.convolution_param.kernel_size) == [2]
    pp = pool.pooling_param
    assert (pp.pool, pp.kernel_size, pp.stride) == (POOL_AVE, 2, 2)
    lp = norm.lrn_param
    assert (lp.local_size, lp.alpha, lp.beta, lp.k) == (3, 0.5, 0.75, 2.0)
    assert fc.inner_product_param.num_output == 3
    _check_wire_import(tmp_path, "new", raw, w)


def test_hand_encoded_v1_caffemodel_with_legacy_blob_dims_parses(tmp_path):
    w = _wire_weights()
    layers = [
        _len(V1_NAME, "train_data") + _int(V1_TYPE, V1_DATA) + _len(V1_TOP, "data")
        + _len(V1_INCLUDE, _int(RULE_PHASE, TRAIN)),
        _len(V1_BOTTOM, "data") + _len(V1_TOP, "conv1") + _len(V1_NAME, "conv1") + _int(V1_TYPE, V1_CONVOLUTION)
        + _len(V1_BLOBS, _blob_legacy(w["conv1"][0])) + _len(V1_BLOBS, _blob_legacy(w["conv1"][1]))
        + _len(V1_CONV, _int(CONV_NUM_OUTPUT, 2) + _int(CONV_KERNEL_SIZE, 2)),
        _len(V1_NAME, "pool1") + _int(V1_TYPE, V1_POOLING)
        + _len(V1_POOL, _int(POOL_POOL, POOL_AVE) + _int(POOL_KERNEL_SIZE, 2) + _int(POOL_STRIDE, 2)),
        _len(V1_NAME, "norm1") + _int(V1_TYPE, V1_LRN_TYPE) + _len(V1_LRN, _int(LRN_LOCAL_SIZE, 3)),
        _len(V1_NAME, "fc") + _int(V1_TYPE, V1_INNER_PRODUCT)
        + _len(V1_BLOBS, _blob_legacy(w["fc"][0])) + _len(V1_BLOBS, _blob_legacy(w["fc"][1]))
        + _len(V1_IP, _int(IP_NUM_OUTPUT, 3)),
    ]
    raw = _len(NET_NAME, "WireV1") + b"".join(_len(NET_LAYERS_V1, lay) for lay in layers)
    path = tmp_path / "parse.caffemodel"
    path.write_bytes(raw)
    net = read_caffemodel(path)
    assert net.name == "WireV1" and not len(net.layer)
    assert [(lay.name, lay.type) for lay in net.layers] == [
        ("train_data", V1_DATA), ("conv1", V1_CONVOLUTION), ("pool1", V1_POOLING), ("norm1", V1_LRN_TYPE),
        ("fc", V1_INNER_PRODUCT)]
    enum = net.layers[0].DESCRIPTOR.fields_by_name["type"].enum_type
    assert [enum.values_by_number[lay.type].name for lay in net.layers] == [
        "DATA", "CONVOLUTION", "POOLING", "LRN", "INNER_PRODUCT"]
    data, conv, pool, norm, fc = net.layers
    assert [r.phase for r in data.include] == [TRAIN] and list(data.top) == ["data"]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    for layer, arrays in ((conv, w["conv1"]), (fc, w["fc"])):
        assert len(layer.blobs) == 2
        for blob, a in zip(layer.blobs, arrays):
            assert not blob.HasField("shape")
            assert (blob.num, blob.channels, blob.height, blob.width) == (1,) * (4 - a.ndim) + a.shape
            assert np.array_equal(np.array(blob.data, np.float32), a.ravel())
    assert conv.convolution_param.num_output == 2 and list(conv.convolution_param.kernel_size) == [2]
    assert (pool.pooling_param.pool, pool.pooling_param.kernel_size, pool.pooling_param.stride) == (POOL_AVE, 2, 2)
    assert norm.lrn_param.local_size == 3 and fc.inner_product_param.num_output == 3
    _check_wire_import(tmp_path, "v1", raw, w)


# ----------------------------------------------------------------------------------------------- terminal Sigmoid


@pytest.mark.parametrize("style", ["new", "v1"])
@pytest.mark.parametrize("in_place", [False, True])
def test_terminal_sigmoid_is_dropped_like_softmax(tmp_path, style, in_place):
    layers = _layers_with("prob", kind="Sigmoid")
    text = prototxt(layers, style)
    if in_place:  # multi-label deploy nets often write the sigmoid over the logits
        text = text.replace('name: "prob"', 'name: "sig"').replace('top: "prob"', 'top: "fc8"')
    model_path, proto, weights = write_net(tmp_path, layers=layers, style=style, text=text)
    bundle = caffe_bundle(model_path, proto)
    assert bundle.info["dropped_layers"] == [f"{'sig' if in_place else 'prob'} (Sigmoid)"]
    assert [n for n, _ in bundle.module.named_children()][-1] == "fc8"
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, SIZE, SIZE))
    with torch.no_grad():
        got = bundle.module.double()(torch.from_numpy(x)).numpy()[0]
    ref = np_forward(x[0], weights)
    assert (ref < 0).any() and np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max()  # logits, not sigmoid


def test_sigmoid_inside_the_net_is_rejected(tmp_path):
    for style in ("new", "v1"):
        model_path, proto, _ = write_net(tmp_path, layers=_layers_with("relu6", kind="Sigmoid"), style=style)
        with pytest.raises(ValueError, match=rf"{proto.name}: layer 'relu6': Sigmoid before layer 'drop6'; .*only "
                                             "allowed at the end"):
            from_caffe(model_path, proto)


# ----------------------------------------------------------------------------------------------- include/exclude


@pytest.mark.parametrize("rules,state,kept", [
    ("", "", True),
    ("include { phase: TEST }", "", True),
    ("include { phase: TRAIN }", "", False),
    ("include { phase: TRAIN } include { phase: TEST }", "", True),  # any met include rule keeps it
    ("include { }", "", True),
    ("exclude { phase: TEST }", "", False),
    ("exclude { phase: TRAIN }", "", True),
    ("exclude { }", "", False),  # an empty rule is always met
    ("exclude { phase: TEST min_level: 0 }", "", False),
    ("include { min_level: 1 }", "", False),  # deploy nets load at level 0
    ("include { max_level: 0 }", "", True),
    ("include { stage: 'deploy' }", "", False),  # no stages unless the prototxt's state names them
    ("include { stage: 'deploy' }", "state { stage: 'deploy' }", True),
    ("include { stage: 'deploy' stage: 'x' }", "state { stage: 'deploy' }", False),  # needs ALL stages
    ("exclude { not_stage: 'train' }", "", False),  # none of the not_stages present: rule met
    ("exclude { not_stage: 'train' }", "state { stage: 'train' phase: TRAIN }", True),  # state phase: ignored
])
@pytest.mark.parametrize("style", ["new", "v1"])
def test_include_exclude_rules_follow_caffe_for_phase_test(tmp_path, style, rules, state, kept):
    layers = _layers_with("drop6", params="dropout_param { dropout_ratio: 0.5 } " + rules)
    text = prototxt(layers, style).replace('name: "TinyCaffeNet"', f'name: "TinyCaffeNet" {state}')
    model_path, proto, _ = write_net(tmp_path, layers=layers, style=style, text=text)
    names = [n for n, _ in from_caffe(model_path, proto).named_children()]
    assert ("drop6" in names) == kept and "relu6" in names and "fc7" in names


def test_include_exclude_rule_errors_name_the_layer(tmp_path):
    layers = _layers_with("drop6", params="include { phase: TEST } exclude { phase: TRAIN }")
    model_path, proto, _ = write_net(tmp_path, layers=layers)
    with pytest.raises(ValueError, match=rf"{proto.name}: layer 'drop6': has both include and exclude rules"):
        from_caffe(model_path, proto)
    layers = _layers_with("drop6", params="include { min_level: 1 }")
    text = prototxt(layers).replace('name: "TinyCaffeNet"', 'name: "TinyCaffeNet" state { level: 2 }')
    model_path, proto, _ = write_net(tmp_path, layers=layers, text=text)
    with pytest.raises(ValueError, match=rf"{proto.name}: layer 'drop6': level rules with `state {{ level: 2 }}`"):
        from_caffe(model_path, proto)


# ----------------------------------------------------------------------------------------------- padding


PAD_SIZE = (7, 8)
PAD_LAYERS = [  # asymmetric pads; both pools need Caffe's last-window clip in the dim that does NOT pad
    ("conv1", "Convolution", "convolution_param { num_output: 3 kernel_h: 3 kernel_w: 1 pad_h: 1 }",
     (3, 2, 3, 1), True),  # pad_w unset: 0 (Caffe) -> 3×7×8
    ("pool1", "Pooling", "pooling_param { pool: AVE kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 2 pad_h: 1 "
     "pad_w: 0 }", None, False),  # 4×4 (width: ceil(7/2)+1 = 5, clipped to 4 because pad_h is set)
    ("pool2", "Pooling", "pooling_param { pool: MAX kernel_h: 1 kernel_w: 3 stride_h: 2 stride_w: 2 pad_h: 0 "
     "pad_w: 1 }", None, False),  # 2×3 (height: ceil(3/2)+1 = 3, clipped to 2 because pad_w is set)
    ("fc", "InnerProduct", "inner_product_param { num_output: 4 }", (4, 18), True),
]


def _pad_prototxt(layers) -> str:
    out = ['name: "Pads"', 'layer { name: "data" type: "Input" top: "data" '
           f'input_param {{ shape {{ dim: 1 dim: 2 dim: {PAD_SIZE[0]} dim: {PAD_SIZE[1]} }} }} }}']
    prev = "data"
    for name, kind, params, _, _ in layers:
        out.append(f'layer {{ name: "{name}" type: "{kind}" bottom: "{prev}" top: "{name}" {params} }}')
        prev = name
    return "\n".join(out) + "\n"


def test_asymmetric_pads_match_caffe(tmp_path):
    model_path, proto, w = write_net(tmp_path, layers=PAD_LAYERS, weights=random_weights(PAD_LAYERS),
                                     text=_pad_prototxt(PAD_LAYERS))
    model = from_caffe(model_path, proto)
    assert model.conv1.padding == (1, 0) and model.pool1.padding == (1, 0) and model.pool2.padding == (0, 1)
    x = np.random.default_rng(3).uniform(-1, 1, (2, *PAD_SIZE))
    a = np_conv(x, *[v.astype(np.float64) for v in w["conv1"]], pad=(1, 0))
    a = np_pool(np_pool(a, (3, 1), (2, 2), (1, 0), "AVE"), (1, 3), (2, 2), (0, 1), "MAX")
    assert a.shape == (3, 2, 3)
    ref = w["fc"][0].astype(np.float64) @ a.reshape(-1) + w["fc"][1]
    with torch.no_grad():
        got = model.double()(torch.from_numpy(x)[None]).numpy()[0]
    assert np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("name,params,message", [
    ("conv1", "convolution_param { num_output: 8 kernel_size: 5 pad: 1 pad_h: 1 }", "either pad or pad_h/pad_w"),
    ("conv1", "convolution_param { num_output: 8 kernel_size: 5 kernel_h: 5 }", "either kernel_size or kernel_h"),
    ("conv1", "convolution_param { num_output: 8 kernel_h: 5 }", r"kernel 5×0, .* must be nonzero"),
    ("conv1", "convolution_param { num_output: 8 kernel_size: 5 pad: 1 pad: 1 pad: 1 }", "pad given 3 times"),
    ("pool1", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad_h: 1 }", "pad is pad OR both pad_h and pad_w"),
    ("pool1", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 pad_h: 1 pad_w: 1 }", "pad is pad OR"),
    ("pool1", "pooling_param { pool: MAX kernel_h: 3 stride: 2 }", "kernel_size OR both kernel_h and kernel_w"),
    ("pool1", "pooling_param { pool: MAX kernel_size: 3 stride_w: 2 }", "stride is stride OR both"),
    ("pool1", "pooling_param { pool: MAX global_pooling: true stride_h: 2 stride_w: 2 }", "only pad 0 and stride 1"),
    # no pad: Caffe keeps a last window that starts past the 18×18 input (10 outputs), torch drops it (9)
    ("pool1", "pooling_param { pool: MAX kernel_size: 1 stride: 2 }", "has no torch equivalent"),
])
def test_pad_kernel_stride_rules_follow_caffe(tmp_path, name, params, message):
    model_path, proto, _ = write_net(tmp_path, layers=_layers_with(name, params=params), weights=random_weights())
    with pytest.raises(ValueError, match=rf"{proto.name}: layer '{name}': .*{message}"):
        from_caffe(model_path, proto)
