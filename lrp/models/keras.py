"""Import a Keras VGG-style HDF5 weight file (the paper's Keras model-zoo VGG-16) as a PyTorch module.

Why: the paper explains Keras' `applications.VGG16` (the converted Caffe VGG, BGR "caffe" preprocessing) with
iNNvestigate; torchvision's VGG-16 is a different network. No TensorFlow is needed: the network is rebuilt from the
layer names and weight shapes in the file, read with h5py only (nothing is unpickled).

Rules (a weights-only file carries no layer configuration, so these are assumptions, checked where possible):
- Layers are taken in the file's `layer_names` order. A layer with two weights is Conv2D (4-D kernel) or Dense
  (2-D kernel); its weights are used in stored ORDER, kernel then bias, because their names differ between Keras
  versions (`block1_conv1_W_1:0` vs `block1_conv1/kernel:0`).
- A weightless layer whose name contains "pool" is a 2×2/stride-2 max-pool (VGG's `blockN_pool`); other weightless
  layers (input, flatten, dropout) are skipped.
- Every Conv2D is 3×3-style VGG: stride 1, 'same' padding (= k//2 for odd square k), ReLU. Every Dense but the last
  has ReLU; the last one's softmax is stripped (LRP starts from the logit).
- A full-model file's `model_config`, when present, is checked against these assumptions (padding, strides,
  activations, pool size, channels_last); a mismatch is an error, never a silent wrong network.
- Only floating-point weights stored in the file itself are read: links (external or soft), external or virtual
  storage, weights declared but not written, and files declaring over MAX_WEIGHT_BYTES are refused, by file and
  dataset, before anything is read or allocated. Weights holding NaN or ±Inf are refused as they are read.
The first Dense after the conv stack gets its input axis permuted from Keras' (H, W, C) flatten order to torch's
(C, H, W); H = W is taken from `input_size` (tracking the pools) or, without it, from in_features / channels
assuming square maps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
import torchvision
from torch import nn

from lrp.io import md5_file, sha256_file
from lrp.models.base import ModelBundle, Preprocessing, non_finite_problem

#: MD5 of keras-applications' `vgg16_weights_tf_dim_ordering_tf_kernels.h5` (its `file_hash`).
VGG16_MD5 = "64373286793e3c8b2b4e3219cbf3544b"
#: Caffe VGG mean in BGR order, 0–255 units (keras `preprocess_input(mode="caffe")`).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_WEIGHTLESS_CLASSES = {"InputLayer", "MaxPooling2D", "Flatten", "Dropout"}
#: Most bytes of weights a file may declare, at their stored dtypes (VGG-16 in float32: 0.55 GB, VGG-19: 0.57 GB).
#: Checked before the network is allocated or any weight read, so that a small file declaring a huge (compressed)
#: layer fails at once.
MAX_WEIGHT_BYTES = 2 << 30


class KerasFormatError(ValueError):
    """The file is not a Keras VGG-style weight file this importer can convert exactly."""


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the rebuilt network: what it is and the Keras shapes it came from."""

    kind: str  # "conv" | "pool" | "dense"
    name: str  # Keras layer name
    shapes: tuple[tuple[int, ...], ...] = ()
    hwc: tuple[int, int, int] | None = None  # first Dense only: the (H, W, C) its input was flattened from


class KerasVGG(torchvision.models.VGG):
    """torchvision-VGG-shaped module (`features`, `avgpool`, `classifier`; same child indices as torchvision).

    Subclasses torchvision's VGG (without its __init__, which would allocate the fixed 7×7×512 head) so that code
    recognising torchvision VGGs treats the imported Keras network identically.
    """

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential):
        nn.Module.__init__(self)
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------------------------- reading


def _str_list(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _attr_list(group: h5py.Group, name: str) -> list[str] | None:
    """A string-list attribute, also in Keras' chunked form (`name0`, `name1`, ... for lists over 64 KiB)."""
    if name in group.attrs:
        return _str_list(group.attrs[name])
    chunks, i = [], 0
    while f"{name}{i}" in group.attrs:
        chunks += _str_list(group.attrs[f"{name}{i}"])
        i += 1
    return chunks if i else None


def _member(group: h5py.Group, name: str, source: str) -> h5py.Group | h5py.Dataset | None:
    """`group[name]` (a relative path) through hard links only; None if it does not exist.

    Why: h5py follows an HDF5 external link into another file (and a soft link to wherever its path leads), whose
    bytes would then load as weights. Keras writes neither. Raises KerasFormatError naming the link and its target.
    """
    obj = group
    for part in (p for p in name.split("/") if p):
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            target = (f"{link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink)
                      else getattr(link, "path", "?"))
            raise KerasFormatError(f"{source}: {obj.name.rstrip('/')}/{part} is an HDF5 {type(link).__name__} to "
                                   f"{target}; only objects stored in this file are read (Keras writes no links)")
        obj = obj[part]
    return obj


def _check_dataset(ds: h5py.Dataset, where: str) -> None:
    """Refuse, before reading it, a weight dataset whose values are not floats stored in this very file.

    Why: h5py reads a virtual dataset's and an external-storage dataset's bytes from other files, and returns the
    fill value for a declared but never written dataset (a 10 KB file can declare 40 GB). Raises KerasFormatError.
    """
    if ds.is_virtual:
        raise KerasFormatError(f"{where}: a virtual dataset (its values are in other files); only data stored in "
                               "this file is read")
    if ds.external:
        raise KerasFormatError(f"{where}: stored in external file(s) {[e[0] for e in ds.external]}; only data "
                               "stored in this file is read")
    if ds.shape is None or ds.dtype.kind != "f":
        raise KerasFormatError(f"{where}: dtype {ds.dtype}, shape {ds.shape}; weights are floating-point arrays")
    stored, filters = ds.id.get_storage_size(), ds.id.get_create_plist().get_nfilters()
    if ds.size and (stored == 0 or (not filters and stored < ds.nbytes)):
        raise KerasFormatError(f"{where}: declares {ds.nbytes} bytes of shape {ds.shape} but the file stores "
                               f"{stored}: truncated, or written without its values; re-download or re-save it")


def _check_budget(layers: Sequence[tuple[str, Sequence[h5py.Dataset]]], source: str) -> None:
    """Refuse a file declaring more than MAX_WEIGHT_BYTES of weights, each counted at its stored dtype's size
    (a float64 layer is read as 8 bytes per value before the cast to float32). Raises KerasFormatError naming
    the largest weight."""
    total = sum(ds.size * ds.dtype.itemsize for _, weights in layers for ds in weights)
    if total > MAX_WEIGHT_BYTES:
        name, ds = max(((n, ds) for n, weights in layers for ds in weights),
                       key=lambda item: item[1].size * item[1].dtype.itemsize)
        raise KerasFormatError(f"{source}: the weights declare {total / 2**30:.1f} GiB of parameters as stored "
                               f"(layer {name!r}: {ds.name} of shape {ds.shape}, {ds.dtype}), more than the "
                               f"{MAX_WEIGHT_BYTES / 2**30:g} GiB this importer accepts (VGG-16: 0.5 GiB); a corrupt "
                               "or hostile file?")


def _read_float32(ds: h5py.Dataset, where: str) -> np.ndarray:
    """The values of a checked weight dataset as float32; NaN or ±Inf (also from a float64 value beyond float32's
    range) is a KerasFormatError naming `where` (file, layer, dataset) and how many values are non-finite."""
    values = np.asarray(ds[()], dtype=np.float32)
    if problem := non_finite_problem(torch.from_numpy(values)):
        raise KerasFormatError(f"{where}: {problem} as float32; such weights give NaN attribution maps")
    return values


def _weights_root(f: h5py.File, source: str) -> h5py.Group:
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    weights = _member(f, "model_weights", source)
    if isinstance(weights, h5py.Group) and _attr_list(weights, "layer_names") is not None:
        return weights
    hint = (" (a Keras 3 '.weights.h5' file? Only the Keras 1/2 HDF5 layout is supported)"
            if f.get("layers", getlink=True) is not None else "")
    raise KerasFormatError(f"{source}: no 'layer_names' attribute at the root or in 'model_weights'{hint}")


def _config_layers(f: h5py.File, source: str) -> dict[str, tuple[str, dict]] | None:
    """Layer name -> (class_name, config) from a full-model file's `model_config`; None for weights-only files."""
    raw = f.attrs.get("model_config")
    if raw is None:
        return None
    try:
        cfg = json.loads(raw.decode("utf8") if isinstance(raw, bytes) else str(raw))
        layers = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
        return {la["config"]["name"]: (la["class_name"], la["config"]) for la in layers}
    except (ValueError, KeyError, TypeError) as e:
        raise KerasFormatError(f"{source}: unreadable 'model_config' attribute ({e!r})") from e


def read_layers(f: h5py.File, source: str) -> list[tuple[str, list[h5py.Dataset]]]:
    """(layer name, weight datasets in stored order) for every layer in `layer_names`, weightless ones included.

    Nothing is read from the datasets; each is checked (`_member`, `_check_dataset`) to hold floats stored in
    this file. Raises KerasFormatError naming the file and the layer or dataset.
    """
    root = _weights_root(f, source)
    out = []
    for name in _attr_list(root, "layer_names"):
        group = _member(root, name, source)
        if not isinstance(group, h5py.Group):
            raise KerasFormatError(f"{source}: layer {name!r} is listed in 'layer_names' but has no group")
        names = _attr_list(group, "weight_names") or []
        weights = {w: _member(group, w, source) for w in names}
        missing = [w for w, ds in weights.items() if not isinstance(ds, h5py.Dataset)]
        if missing:
            raise KerasFormatError(f"{source}: layer {name!r} lists weights {missing} that are not stored datasets")
        for w, ds in weights.items():
            _check_dataset(ds, f"{source}: layer {name!r} weight {ds.name}")
        out.append((name, [weights[w] for w in names]))
    return out


# ----------------------------------------------------------------------------------------------- planning


def plan_vgg(
    layers: Sequence[tuple[str, Sequence[tuple[int, ...]]]],
    input_size: int | None = None,
    source: str = "<shapes>",
    config: dict[str, tuple[str, dict]] | None = None,
) -> list[LayerPlan]:
    """Decide the network from (layer name, weight shapes) alone; raise KerasFormatError naming layer and source.

    Separate from reading so that the full VGG-16 layer list can be checked without a 550 MB file.
    """
    plan: list[LayerPlan] = []
    channels, size, hwc = 3, input_size, None
    for name, shapes in layers:
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        where = f"{source}: layer {name!r}"
        if config is not None:
            _check_config(name, config, where)
        if not shapes:
            if "pool" in name.lower():
                if any(p.kind == "dense" for p in plan):
                    raise KerasFormatError(f"{where}: pooling after a Dense layer is not supported")
                plan.append(LayerPlan("pool", name))
                size = None if size is None else size // 2
            continue
        if len(shapes) != 2:
            raise KerasFormatError(
                f"{where}: expected 2 weights (kernel, bias), found {len(shapes)} with shapes {list(shapes)}; "
                "only Conv2D and Dense layers with bias are supported")
        kernel, bias = shapes
        if len(kernel) == 1 and len(bias) in (2, 4):
            raise KerasFormatError(f"{where}: bias stored before kernel (shapes {list(shapes)}); "
                                   "weights must be in Keras order kernel, bias")
        if len(kernel) not in (2, 4) or len(bias) != 1:
            raise KerasFormatError(
                f"{where}: unsupported weight shapes {list(shapes)}; expected a 4-D (Conv2D, HWIO) or 2-D "
                "(Dense, in×out) kernel followed by a 1-D bias")
        if bias[0] != kernel[-1]:
            raise KerasFormatError(f"{where}: bias length {bias[0]} != kernel output size {kernel[-1]}")
        if len(kernel) == 4:
            kh, kw, cin, _ = kernel
            if any(p.kind == "dense" for p in plan):
                raise KerasFormatError(f"{where}: Conv2D after a Dense layer is not supported")
            if kh != kw or kh % 2 == 0:
                raise KerasFormatError(
                    f"{where}: kernel {kernel} is not square with odd size as HWIO; 'same' padding = k//2 needs "
                    "odd square kernels (a Theano/channels_first 'th' kernel file?)")
            if cin != channels:
                raise KerasFormatError(f"{where}: kernel expects {cin} input channels, previous layer gives {channels}")
            channels = kernel[3]
            plan.append(LayerPlan("conv", name, shapes))
        else:
            n_in = kernel[0]
            if not any(p.kind == "dense" for p in plan):
                if not any(p.kind == "conv" for p in plan):
                    raise KerasFormatError(f"{where}: Dense layer before any Conv2D layer; not a VGG-style file")
                hwc = _flatten_hwc(n_in, channels, size, input_size, where)
                plan.append(LayerPlan("dense", name, shapes, hwc))
            else:
                if n_in != channels:
                    raise KerasFormatError(f"{where}: kernel expects {n_in} inputs, previous Dense gives {channels}")
                plan.append(LayerPlan("dense", name, shapes))
            channels = kernel[1]
    if not any(p.kind == "dense" for p in plan):
        raise KerasFormatError(f"{source}: no Dense layers (include_top=False files are not supported)")
    return plan


def _flatten_hwc(n_in: int, channels: int, size: int | None, input_size: int | None, where: str):
    if size is not None:
        if n_in != size * size * channels:
            raise KerasFormatError(
                f"{where}: first Dense expects {n_in} inputs but input_size {input_size} gives a "
                f"{size}×{size}×{channels} map ({size * size * channels})")
        return size, size, channels
    side = math.isqrt(n_in // channels) if n_in % channels == 0 else 0
    if side == 0 or side * side * channels != n_in:
        raise KerasFormatError(
            f"{where}: first Dense has {n_in} inputs, not a square map of {channels} channels; pass input_size")
    return side, side, channels


def _check_config(name: str, config: dict, where: str) -> None:
    """Reject full-model configurations the weight-only rules would convert into a different network."""
    if name not in config:
        raise KerasFormatError(f"{where}: not found in the file's model_config")
    cls, c = config[name]

    def pair(v, default=None):
        return default if v is None else tuple(v) if isinstance(v, (list, tuple)) else (v, v)

    problems = []
    if c.get("data_format", "channels_last") != "channels_last":
        problems.append(f"data_format {c['data_format']!r}")
    if cls == "Conv2D":
        if c.get("padding", c.get("border_mode")) != "same":
            problems.append(f"padding {c.get('padding', c.get('border_mode'))!r} (need 'same')")
        if pair(c.get("strides", c.get("subsample")), (1, 1)) != (1, 1):
            problems.append(f"strides {c.get('strides')} (need 1)")
        if pair(c.get("dilation_rate"), (1, 1)) != (1, 1):
            problems.append(f"dilation_rate {c.get('dilation_rate')} (need 1)")
        if c.get("activation") != "relu":
            problems.append(f"activation {c.get('activation')!r} (need 'relu')")
    elif cls == "Dense":
        dense = [n for n, (k, _) in config.items() if k == "Dense"]
        allowed = ("softmax", "linear") if name == dense[-1] else ("relu",)
        if c.get("activation") not in allowed:
            problems.append(f"activation {c.get('activation')!r} (need one of {allowed})")
    elif cls == "MaxPooling2D":
        pool = pair(c.get("pool_size"), (2, 2))
        if pool != (2, 2) or pair(c.get("strides"), pool) != (2, 2) or c.get("padding", "valid") != "valid":
            problems.append(f"pool_size {c.get('pool_size')}, strides {c.get('strides')}, padding "
                            f"{c.get('padding')!r} (need 2×2, stride 2, 'valid')")
        if "pool" not in name.lower():
            problems.append("MaxPooling2D whose name lacks 'pool'")
    elif cls not in _WEIGHTLESS_CLASSES:
        problems.append(f"unsupported layer class {cls!r}")
    if cls != "MaxPooling2D" and "pool" in name.lower():
        problems.append(f"{cls} named like a pool")
    if problems:
        raise KerasFormatError(f"{where} ({cls}): " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------- building


def build_vgg(plan: Sequence[LayerPlan], device: torch.device | str | None = None) -> KerasVGG:
    """The module for a plan, parameters UNINITIALISED (filled by the importer; device="meta" for shape checks)."""
    with torch.device("meta"):
        features, classifier = [], []
        dense = [p for p in plan if p.kind == "dense"]
        for p in plan:
            if p.kind == "conv":
                kh, _, cin, cout = p.shapes[0]
                features += [nn.Conv2d(cin, cout, kh, padding=kh // 2), nn.ReLU()]
            elif p.kind == "pool":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                classifier.append(nn.Linear(*p.shapes[0]))
                if p is not dense[-1]:
                    classifier += [nn.ReLU(), nn.Dropout(p=0.5)]
        h, w, _ = dense[0].hwc
        module = KerasVGG(nn.Sequential(*features), nn.AdaptiveAvgPool2d((h, w)), nn.Sequential(*classifier))
    return module if str(device) == "meta" else module.to_empty(device=device or "cpu")


def _torch_layout(p: LayerPlan, kernel: np.ndarray) -> np.ndarray:
    if p.kind == "conv":
        return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if p.hwc is not None:  # rows in Keras' (H, W, C) flatten order -> torch's (C, H, W)
        h, w, c = p.hwc
        kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return kernel.T  # (in, out) -> (out, in)


def from_keras_h5(path: str | Path, input_size: int | None = None, n_outputs: int | None = None) -> KerasVGG:
    """Rebuild a Keras VGG-style network from its HDF5 weight file; returns an eval-mode module without softmax.

    Input: NCHW float in Keras' own preprocessed space (for the model-zoo VGG-16: BGR, Caffe mean subtracted,
    0–255). `input_size` (square side) checks the first Dense against the pooled map size; `n_outputs`, the last
    Dense's outputs. Every weight's shape, dtype, storage and total size is checked before any is read or the
    network allocated; each weight's values, for NaN/±Inf as it is read. Raises FileNotFoundError, or
    KerasFormatError naming the file and the layer.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: Keras weight file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise KerasFormatError(f"{source}: cannot open as HDF5 ({e})") from e
    with f:
        layers = read_layers(f, source)
        plan = plan_vgg([(n, [w.shape for w in ws]) for n, ws in layers], input_size, source,
                        _config_layers(f, source))
        if n_outputs is not None and plan[-1].shapes[0][1] != n_outputs:
            raise KerasFormatError(f"{source}: last Dense has {plan[-1].shapes[0][1]} outputs, expected {n_outputs}")
        _check_budget(layers, source)
        module = build_vgg(plan)
        weights = dict(layers)
        params = [m for m in list(module.features) + list(module.classifier) if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            for p, m in zip((p for p in plan if p.kind != "pool"), params, strict=True):
                kernel, bias = (_read_float32(ds, f"{source}: layer {p.name!r} weight {ds.name}")
                                for ds in weights[p.name])
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(_torch_layout(p, kernel))))
                m.bias.copy_(torch.from_numpy(bias))
    return module.eval()


# ----------------------------------------------------------------------------------------------- bundle


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet WNIDs in class-index (sorted-WNID) order, the same list the ImageNet index uses.

    WNIDs, not human names, so that `bundle.class_names` compares directly with `lrp.datasets.imagenet.wnid_index`.
    """
    from lrp.datasets.catalog import load_synsets

    return [wnid for wnid, _ in load_synsets()]


def keras_vgg16_bundle(path: str | Path, verify: bool = False) -> ModelBundle:
    """The paper's Keras model-zoo VGG-16 (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`) as a ModelBundle.

    verify=True checks the file's MD5 against keras-applications' published hash before anything is read.
    Classes are the sorted WNIDs; preprocessing is Keras' "caffe" mode (RGB->BGR, minus the Caffe mean, no scaling).
    """
    path = Path(path)
    info = {"source": str(path), "format": "keras_h5"}
    if verify:
        got = md5_file(path)
        if got != VGG16_MD5:
            raise ValueError(f"{path}: MD5 mismatch for the Keras VGG-16 weights: expected {VGG16_MD5}, got {got}")
        info["md5"] = got
    classes = imagenet_class_names()
    module = from_keras_h5(path, input_size=224, n_outputs=len(classes))  # 1000 ImageNet classes
    for param in module.parameters():
        param.requires_grad_(False)
    return ModelBundle(
        module=module,
        preprocessing=Preprocessing(mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0), channel_order="BGR"),
        input_size=224,
        class_names=classes,
        name="keras_vgg16",
        checksum=sha256_file(path),
        info=info,
    )
